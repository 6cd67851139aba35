//! The job's live bar on the terminal (indicatif): images done, img/s, ETA,
//! and rank 0's step within its batch. `shoal launch` feeds it from rank 0's
//! [`Report`] lines; a plain `generate` feeds it directly. [`LineReporter`] is
//! the worker's side: the same reports as lines on stderr, for the launcher.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use shoal_dist::Report;

/// A bar on stderr (hidden when stderr is not a terminal).
pub struct JobBar {
    bar: ProgressBar,
    started: std::sync::atomic::AtomicBool,
    finishing: Mutex<()>,
    shown: Mutex<Report>,
}

fn style() -> ProgressStyle {
    // The rate over the whole run so far (indicatif's own estimate trails a
    // job whose images come in batches), and the ETA from it.
    fn rate(s: &ProgressState) -> f64 {
        s.pos() as f64 / s.elapsed().as_secs_f64().max(1e-3)
    }
    ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} images  {rate}  ETA {left}  {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.2} img/s", rate(s));
        })
        .with_key("left", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let left = s.len().unwrap_or(0).saturating_sub(s.pos()) as f64;
            let _ = match rate(s) {
                _ if left == 0.0 => write!(w, "0 s"),
                r if r > 0.0 => write!(w, "{:.0} s", left / r),
                _ => write!(w, "-"),
            };
        })
        .progress_chars("█▉▊▋▌▍▎▏ ")
}

impl std::fmt::Debug for JobBar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobBar").field("shown", &self.shown).finish()
    }
}

impl Default for JobBar {
    fn default() -> Self {
        Self::new()
    }
}

impl JobBar {
    /// A bar that shows nothing until the first report (a program that never
    /// reports gets no bar).
    pub fn new() -> JobBar {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        bar.set_style(style());
        JobBar {
            bar,
            started: std::sync::atomic::AtomicBool::new(false),
            finishing: Mutex::new(()),
            shown: Mutex::new(Report::default()),
        }
    }

    /// Shows `r`.
    pub fn update(&self, r: &Report) {
        let mut shown = self
            .shown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !self.started.swap(true, std::sync::atomic::Ordering::Relaxed) {
            self.bar.reset_elapsed();
            self.bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            self.bar.enable_steady_tick(Duration::from_millis(500));
        }
        if r.total != shown.total {
            self.bar.set_length(r.total);
        }
        if r.done != shown.done {
            self.bar.set_position(r.done);
        }
        if (r.step, r.steps) != (shown.step, shown.steps) {
            self.bar.set_message(if r.steps > 0 {
                format!("step {}/{}", r.step, r.steps)
            } else {
                String::new()
            });
        }
        *shown = *r;
    }

    /// Once every item is done, output (a summary) goes below the final bar.
    fn finish_if_done(&self) {
        let shown = *self
            .shown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if shown.total > 0 && shown.done == shown.total {
            self.finish();
        }
    }

    /// Writes `bytes` to stderr above the bar.
    pub fn write_stderr(&self, bytes: &[u8]) {
        self.finish_if_done();
        let write = || {
            let _ = std::io::stderr().lock().write_all(bytes);
        };
        if self.bar.is_finished() {
            write();
        } else {
            self.bar.suspend(write);
        }
    }

    /// Writes `bytes` to stdout (the bar lives on stderr; it is redrawn after).
    pub fn write_stdout(&self, bytes: &[u8]) {
        self.finish_if_done();
        let write = || {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(bytes);
            let _ = o.flush();
        };
        if self.bar.is_finished() {
            write();
        } else {
            self.bar.suspend(write);
        }
    }

    /// Leaves the bar's last state on the terminal.
    pub fn finish(&self) {
        let _once = self
            .finishing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !self.started.load(std::sync::atomic::Ordering::Relaxed) || self.bar.is_finished() {
            return;
        }
        self.bar.set_message(String::new());
        self.bar.abandon();
        if !self.bar.is_hidden() {
            let _ = std::io::stderr().lock().write_all(b"\n");
        }
    }
}

/// Rank 0's reports as [`Report`] lines on stderr: one whenever the count of
/// items moves, step changes at most every 100 ms.
pub struct LineReporter {
    last: Mutex<(Report, Option<Instant>)>,
}

impl Default for LineReporter {
    fn default() -> Self {
        LineReporter {
            last: Mutex::new((Report::default(), None)),
        }
    }
}

impl LineReporter {
    /// Reports `r` (or drops it when only the step moved, too soon).
    pub fn update(&self, r: &Report) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (prev, at) = &mut *last;
        let moved = (r.done, r.total) != (prev.done, prev.total);
        let soon = at.is_some_and(|t| t.elapsed() < Duration::from_millis(100));
        if r == prev || (!moved && soon) {
            return;
        }
        *prev = *r;
        *at = Some(Instant::now());
        let _ = std::io::stderr().lock().write_all(r.line().as_bytes());
    }
}
