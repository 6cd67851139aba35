//! Gang supervision of worker processes, as torchrun's elastic agent.
//!
//! Source: `pytorch/pytorch torch/distributed/elastic/multiprocessing/api.py`
//! (`_close`: SIGTERM, a shared deadline, SIGKILL). Each worker runs in its own
//! process group with `PR_SET_PDEATHSIG`, so nothing survives the launcher; its
//! output lines are prefixed with its rank; the first worker that exits non-zero
//! or by a signal is the root cause, and every other worker is stopped
//! (SIGTERM, the grace period, then SIGKILL to the whole process group).
//! SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to the launcher are forwarded.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::bar::JobBar;

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::error::{Error, Exit, Result, signal_name};

/// One worker to start.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Global rank (for messages and prefixes).
    pub rank: usize,
    /// Local rank.
    pub local_rank: usize,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables added to the launcher's environment.
    pub env: Vec<(String, String)>,
}

/// Supervision options.
#[derive(Debug, Clone)]
pub struct SuperviseOptions {
    /// Between SIGTERM and SIGKILL when stopping workers.
    pub grace: Duration,
    /// Prefix each output line with `[rank r]`.
    pub prefix_output: bool,
    /// How often exits are polled.
    pub poll: Duration,
    /// How long the others may run once a worker has exited 0 (then they are hung).
    pub exit_wait: Duration,
    /// The job's bar: the workers are told to report ([`shoal_dist::SHOAL_PROGRESS`]),
    /// their report lines feed it, and every other line is written above it.
    pub bar: Option<Arc<JobBar>>,
}

impl Default for SuperviseOptions {
    fn default() -> Self {
        SuperviseOptions {
            grace: Duration::from_secs(10),
            prefix_output: true,
            poll: Duration::from_millis(20),
            exit_wait: Duration::from_secs(1800),
            bar: None,
        }
    }
}

/// How each worker ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exited 0.
    Success,
    /// Failed on its own (the root cause is the earliest of these).
    Failed(Exit),
    /// Stopped by the launcher after another worker failed.
    Stopped(Exit),
}

/// Launchers on other machines of the same job. A launcher whose worker fails
/// publishes it; the others poll and stop their own workers, so a failure on
/// one machine ends the whole job instead of leaving peers in a collective
/// until its timeout.
pub trait Peers {
    /// Tells the other launchers that this machine's job failed.
    fn publish_failure(&mut self, summary: &str);
    /// A failure another launcher published, if any.
    fn poll_failure(&mut self) -> Option<String>;
}

/// A launch on one machine: nobody to tell.
pub struct NoPeers;

impl Peers for NoPeers {
    fn publish_failure(&mut self, _: &str) {}
    fn poll_failure(&mut self) -> Option<String> {
        None
    }
}

/// How often other launchers are polled.
const PEER_POLL: Duration = Duration::from_millis(500);

struct Running {
    spec: WorkerSpec,
    child: Child,
    outcome: Option<Outcome>,
}

/// Starts every worker and waits for all of them; see the module docs.
/// `Ok` only when every worker exited 0.
pub fn supervise(
    workers: Vec<WorkerSpec>,
    opts: &SuperviseOptions,
    peers: &mut dyn Peers,
) -> Result<Vec<Outcome>> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])
        .map_err(|e| Error::io("installing signal handlers", e))?;
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let errors = Arc::new(SameErrors::default());
    let mut pipes = 0usize;
    let mut running: Vec<Running> = Vec::with_capacity(workers.len());
    for spec in workers {
        match start(&spec, opts, &done_tx, &mut pipes, &errors) {
            Ok(child) => running.push(Running {
                spec,
                child,
                outcome: None,
            }),
            Err(e) => {
                stop_all(&mut running, opts.grace, opts.poll);
                signals.handle().close();
                return Err(e);
            }
        }
    }
    drop(done_tx);

    let mut root: Option<(usize, Exit)> = None;
    let mut interrupted: Option<i32> = None;
    let mut deadline: Option<Instant> = None;
    let mut remote: Option<String> = None;
    let mut first_success: Option<Instant> = None;
    let mut hung: Option<Vec<usize>> = None;
    let mut next_poll = Instant::now() + PEER_POLL;
    loop {
        if let Some(t) = first_success
            && hung.is_none()
            && root.is_none()
            && interrupted.is_none()
            && remote.is_none()
            && t.elapsed() > opts.exit_wait
        {
            let left: Vec<usize> = running
                .iter()
                .filter(|r| r.outcome.is_none())
                .map(|r| r.spec.rank)
                .collect();
            for r in running.iter().filter(|r| r.outcome.is_none()) {
                kill_group(&r.child, libc::SIGTERM);
            }
            deadline = Some(Instant::now() + opts.grace);
            peers.publish_failure(&format!(
                "ranks {left:?} on {} still ran {:?} after another worker finished",
                hostname(),
                opts.exit_wait
            ));
            hung = Some(left);
        }
        if root.is_none() && interrupted.is_none() && remote.is_none() && Instant::now() >= next_poll {
            next_poll = Instant::now() + PEER_POLL;
            if let Some(what) = peers.poll_failure() {
                for r in running.iter().filter(|r| r.outcome.is_none()) {
                    kill_group(&r.child, libc::SIGTERM);
                }
                deadline = Some(Instant::now() + opts.grace);
                remote = Some(what);
            }
        }
        if let Some(sig) = signals.pending().next() {
            // Forward to every worker group and stop the job.
            for r in running.iter().filter(|r| r.outcome.is_none()) {
                kill_group(&r.child, sig);
            }
            if interrupted.is_none() {
                interrupted = Some(sig);
                deadline.get_or_insert(Instant::now() + opts.grace);
            }
        }
        for i in 0..running.len() {
            if running[i].outcome.is_some() {
                continue;
            }
            let Ok(Some(status)) = running[i].child.try_wait() else {
                continue;
            };
            let exit = exit_of(status);
            let outcome = match exit {
                None => {
                    first_success.get_or_insert_with(Instant::now);
                    Outcome::Success
                }
                Some(e) if root.is_some() || interrupted.is_some() || remote.is_some() || hung.is_some() => {
                    Outcome::Stopped(e)
                }
                Some(e) => {
                    root = Some((i, e));
                    peers.publish_failure(&format!(
                        "rank {} (pid {}) on {} failed with {e}",
                        running[i].spec.rank,
                        running[i].child.id(),
                        hostname()
                    ));
                    Outcome::Failed(e)
                }
            };
            // Whatever the worker left behind in its group goes with it.
            kill_group(&running[i].child, libc::SIGKILL);
            running[i].outcome = Some(outcome);
            if root.is_some() && deadline.is_none() {
                for r in running.iter().filter(|r| r.outcome.is_none()) {
                    kill_group(&r.child, libc::SIGTERM);
                }
                deadline = Some(Instant::now() + opts.grace);
            }
        }
        if running.iter().all(|r| r.outcome.is_some()) {
            break;
        }
        if let Some(d) = deadline
            && Instant::now() >= d
        {
            for r in running.iter().filter(|r| r.outcome.is_none()) {
                kill_group(&r.child, libc::SIGKILL);
            }
        }
        std::thread::sleep(opts.poll);
    }
    signals.handle().close();
    // Output threads end at EOF; a grandchild that escaped its group could hold
    // a pipe open, so wait a bounded time only.
    let until = Instant::now() + Duration::from_secs(2);
    for _ in 0..pipes {
        let left = until.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    if let Some(b) = &opts.bar {
        b.finish();
    }
    let outcomes: Vec<Outcome> = running.iter().filter_map(|r| r.outcome.clone()).collect();
    if let Some((i, exit)) = root {
        let r = &running[i];
        summarize(&running, Some(i), &errors);
        return Err(Error::WorkerFailed {
            rank: r.spec.rank,
            local_rank: r.spec.local_rank,
            pid: r.child.id(),
            exit,
        });
    }
    if let Some(what) = remote {
        summarize(&running, None, &errors);
        return Err(Error::PeerFailed { what });
    }
    if let Some(ranks) = hung {
        summarize(&running, None, &errors);
        return Err(Error::Hung {
            ranks,
            waited: opts.exit_wait,
        });
    }
    if let Some(sig) = interrupted {
        summarize(&running, None, &errors);
        return Err(Error::Interrupted {
            signal: sig,
            name: signal_name(sig),
        });
    }
    Ok(outcomes)
}

fn start(
    spec: &WorkerSpec,
    opts: &SuperviseOptions,
    done: &mpsc::Sender<()>,
    pipes: &mut usize,
    errors: &Arc<SameErrors>,
) -> Result<Child> {
    let mut cmd = Command::new(&spec.program);
    // Only a launcher that draws the bar asks for reports (not an outer one).
    cmd.env_remove(shoal_dist::SHOAL_PROGRESS);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(if spec.local_rank == 0 {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: the closure runs between fork and exec and only calls
    // async-signal-safe functions (prctl, getppid, _exit).
    unsafe {
        let parent = libc::getpid();
        cmd.pre_exec(move || {
            // The worker dies with the launcher, even on SIGKILL.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The launcher died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        Error::io(
            format!("starting rank {} ({})", spec.rank, spec.program.display()),
            e,
        )
    })?;
    let prefix = if opts.prefix_output {
        format!("[rank {}] ", spec.rank)
    } else {
        String::new()
    };
    if let Some(out) = child.stdout.take() {
        *pipes += 1;
        pump(
            out,
            prefix.clone(),
            false,
            false,
            opts.bar.clone(),
            None,
            done.clone(),
        );
    }
    if let Some(err) = child.stderr.take() {
        *pipes += 1;
        // Only rank 0 reports the job's progress.
        pump(
            err,
            prefix,
            true,
            spec.rank == 0,
            opts.bar.clone(),
            Some(errors.clone()),
            done.clone(),
        );
    }
    Ok(child)
}

/// Error lines (`shoal[rank r/w host] error: ...`) already printed by another
/// rank: a job where every rank fails the same way shows the error once, and
/// the summary says which ranks said the same.
#[derive(Default)]
pub struct SameErrors {
    seen: Mutex<Seen>,
}

/// How many distinct error messages, and repeats, the launcher remembers.
const MAX_SAME: usize = 256;

/// Message → the first rank that printed it; (rank, first rank) of each repeat.
type Seen = (std::collections::HashMap<String, usize>, Vec<(usize, usize)>);

impl SameErrors {
    /// The rank and the message of an error line, if it is one.
    fn parse(line: &[u8]) -> Option<(usize, String)> {
        let s = std::str::from_utf8(line).ok()?;
        let rest = s.strip_prefix("shoal[rank ")?;
        let (rank, _) = rest.split_once('/')?;
        let (_, msg) = rest.split_once("] error: ")?;
        Some((rank.parse().ok()?, msg.trim_end().to_string()))
    }

    /// Whether another rank printed this error already (then it is counted).
    fn seen_before(&self, line: &[u8]) -> bool {
        let Some((rank, msg)) = Self::parse(line) else {
            return false;
        };
        let mut g = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (first, same) = &mut *g;
        match first.get(&msg) {
            Some(&r) if r != rank => {
                // The summary names the first repeats; later ones are still shown once.
                if same.len() < MAX_SAME {
                    same.push((rank, r));
                }
                true
            }
            Some(_) => false,
            // A worker printing endless distinct errors is not remembered past the cap.
            None if first.len() >= MAX_SAME => false,
            None => {
                first.insert(msg, rank);
                false
            }
        }
    }

    fn same(&self) -> Vec<(usize, usize)> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .clone()
    }
}

/// The longest piece of a worker's line held at once: a longer line is passed
/// on in pieces of this size, each with the prefix (a worker writing
/// hundreds of MB without a newline must not grow the launcher).
pub const MAX_LINE: usize = 64 << 10;

/// Copies a worker's output line by line, with its prefix, to ours; with a
/// bar, progress reports (`reports`: rank 0's stderr) go to the bar instead.
fn pump(
    from: impl Read + Send + 'static,
    prefix: String,
    to_stderr: bool,
    reports: bool,
    bar: Option<Arc<JobBar>>,
    errors: Option<Arc<SameErrors>>,
    done: mpsc::Sender<()>,
) {
    let _ = std::thread::Builder::new()
        .name("shoal-output".into())
        .spawn(move || {
            let mut r = BufReader::new(from);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.by_ref().take(MAX_LINE as u64).read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if let Some(b) = &bar
                            && reports
                            && let Some(r) = shoal_dist::Report::parse(&line)
                        {
                            b.update(&r);
                            continue;
                        }
                        if let Some(e) = &errors
                            && e.seen_before(&line)
                        {
                            continue;
                        }
                        if !line.ends_with(b"\n") {
                            line.push(b'\n');
                        }
                        let mut buf = Vec::with_capacity(prefix.len() + line.len());
                        // shoal's own log lines already name their rank and host.
                        if !line.starts_with(b"shoal[rank ") {
                            buf.extend_from_slice(prefix.as_bytes());
                        }
                        buf.extend_from_slice(&line);
                        // A closed terminal is not the worker's failure; keep draining.
                        match (&bar, to_stderr) {
                            (Some(b), true) => b.write_stderr(&buf),
                            (Some(b), false) => b.write_stdout(&buf),
                            (None, true) => {
                                let _ = std::io::stderr().lock().write_all(&buf);
                            }
                            (None, false) => {
                                let _ = std::io::stdout().lock().write_all(&buf);
                            }
                        }
                    }
                }
            }
            let _ = done.send(());
        });
}

fn exit_of(status: ExitStatus) -> Option<Exit> {
    match (status.code(), status.signal()) {
        (Some(0), _) => None,
        (Some(c), _) => Some(Exit::Code(c)),
        (None, Some(s)) => Some(Exit::Signal(s)),
        (None, None) => Some(Exit::Code(-1)),
    }
}

fn kill_group(child: &Child, sig: i32) {
    // The worker leads its own group (process_group(0)), so its pid is the
    // group id; ESRCH (already gone) is fine. Only our own groups are signalled.
    if let Ok(pgid) = i32::try_from(child.id()) {
        // SAFETY: killpg has no memory-safety preconditions.
        unsafe {
            libc::killpg(pgid, sig);
        }
    }
}

fn stop_all(running: &mut [Running], grace: Duration, poll: Duration) {
    for r in running.iter() {
        kill_group(&r.child, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    for r in running.iter_mut() {
        while Instant::now() < deadline {
            if let Ok(Some(_)) = r.child.try_wait() {
                break;
            }
            std::thread::sleep(poll);
        }
        kill_group(&r.child, libc::SIGKILL);
        let _ = r.child.wait();
    }
}

/// The end-of-job summary on stderr, root cause first (torchrun's format).
fn summarize(running: &[Running], root: Option<usize>, errors: &SameErrors) {
    let host = hostname();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "shoal launch: job failed on {host}");
    if let Some(i) = root {
        let r = &running[i];
        if let Some(Outcome::Failed(e)) = &r.outcome {
            let _ = writeln!(
                err,
                "  root cause: rank {} (local rank {}, pid {}) {}",
                r.spec.rank,
                r.spec.local_rank,
                r.child.id(),
                e
            );
        }
    }
    for (i, r) in running.iter().enumerate() {
        if Some(i) == root {
            continue;
        }
        let what = match &r.outcome {
            Some(Outcome::Success) => "exited 0".to_string(),
            Some(Outcome::Stopped(e)) | Some(Outcome::Failed(e)) => format!("stopped: {e}"),
            None => "unknown".to_string(),
        };
        let _ = writeln!(err, "  rank {} (pid {}): {what}", r.spec.rank, r.child.id());
    }
    for (rank, first) in errors.same() {
        let _ = writeln!(
            err,
            "  rank {rank} printed the same error as rank {first} (shown once)"
        );
    }
}

/// This machine's name, for messages.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // on success (truncation is harmless for a message).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod same_errors_tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::SameErrors;

    #[test]
    fn an_error_is_shown_once_and_memory_stays_bounded() {
        let e = SameErrors::default();
        assert!(!e.seen_before(b"shoal[rank 0/2 h] error: disk full\n"));
        assert!(
            !e.seen_before(b"shoal[rank 0/2 h] error: disk full\n"),
            "the same rank again is shown"
        );
        assert!(e.seen_before(b"shoal[rank 1/2 h] error: disk full\n"));
        assert!(!e.seen_before(b"[rank 1] not an error line"));
        assert!(!e.seen_before(b"shoal[rank x/2 h] error: bad rank"));
        assert_eq!(e.same(), vec![(1, 0)]);
        for i in 0..10_000 {
            let line = format!("shoal[rank {}/2 h] error: distinct {}", i % 2, i / 2);
            e.seen_before(line.as_bytes());
        }
        let g = e.seen.lock().unwrap();
        assert!(g.0.len() <= super::MAX_SAME && g.1.len() <= super::MAX_SAME);
    }
}
