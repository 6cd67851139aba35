//! The progress protocol between rank 0 and `shoal launch`: under a launcher
//! that draws the job's bar (its stderr a terminal), the workers get
//! [`SHOAL_PROGRESS`]` = 1`, and rank 0 writes one [`Report`] line to stderr
//! whenever the job moves; the launcher takes those lines out of the output
//! and draws them. Pure formatting and parsing here; the I/O is the callers'.

/// Set by `shoal launch` in its workers' environment when it draws the bar.
pub const SHOAL_PROGRESS: &str = "SHOAL_PROGRESS";

/// The start of a progress line (anything else is ordinary output).
pub const PROGRESS_PREFIX: &str = "shoal-progress: ";

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Report {
    /// Items done (every rank's, as rank 0 records them).
    pub done: u64,
    /// Items in the job (this run's).
    pub total: u64,
    /// Rank 0's model call within its current batch, and the calls per batch
    /// (0 and 0 when not denoising).
    pub step: u64,
    /// Model calls per batch.
    pub steps: u64,
}

impl Report {
    /// The line, with its newline.
    pub fn line(&self) -> String {
        format!(
            "{PROGRESS_PREFIX}{} {} {} {}\n",
            self.done, self.total, self.step, self.steps
        )
    }

    /// A line (with or without its newline) as written by [`Report::line`];
    /// `None` for any other line, a malformed one included.
    pub fn parse(line: &[u8]) -> Option<Report> {
        let s = std::str::from_utf8(line).ok()?;
        let s = s.trim_end_matches(['\n', '\r']);
        let rest = s.strip_prefix(PROGRESS_PREFIX)?;
        let v: Vec<u64> = rest.split(' ').map(str::parse).collect::<Result<_, _>>().ok()?;
        let [done, total, step, steps] = v[..] else {
            return None;
        };
        (done <= total && step <= steps).then_some(Report {
            done,
            total,
            step,
            steps,
        })
    }
}

/// Whether this process was asked to report to its launcher (`SHOAL_PROGRESS=1`).
pub fn reporting_to_launcher(value: Option<&str>) -> bool {
    value == Some("1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_round_trips_and_anything_else_is_output() {
        let r = Report {
            done: 3,
            total: 16,
            step: 7,
            steps: 30,
        };
        assert_eq!(r.line(), "shoal-progress: 3 16 7 30\n");
        assert_eq!(Report::parse(r.line().as_bytes()), Some(r));
        assert_eq!(Report::parse(b"shoal-progress: 3 16 7 30"), Some(r));
        for bad in [
            &b"generate: 8 image(s)"[..],
            b"shoal-progress: 3 16 7",
            b"shoal-progress: 3 16 7 30 1",
            b"shoal-progress: 17 16 0 0",
            b"shoal-progress: 1 2 31 30",
            b"shoal-progress: -1 2 0 0",
            b"shoal-progress: a b c d",
            b"\xff\xfe",
            b"[rank 0] shoal-progress: 1 2 0 0",
        ] {
            assert_eq!(Report::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(reporting_to_launcher(Some("1")));
        assert!(!reporting_to_launcher(Some("0")) && !reporting_to_launcher(None));
    }
}
