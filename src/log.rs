//! Diagnostics through `tracing`: every line names who wrote it (`rank r/w`,
//! or `launcher`, and the host), as `shoal[rank 1/2 host] warning: ...`;
//! levels come from `SHOAL_LOG` (an `EnvFilter`: `debug`, `shoal_engine=debug`,
//! `off`) or from `-v` (debug) and `-vv` (trace); the default is `info`.
//! Results (tables, summaries) go to stdout and are not logs.

use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The variable that sets the log filter.
pub const SHOAL_LOG: &str = "SHOAL_LOG";

static WHO: OnceLock<String> = OnceLock::new();

/// `rank r/w host` (or `launcher host`) for this process.
pub fn who() -> &'static str {
    WHO.get().map(String::as_str).unwrap_or("shoal")
}

/// Who this process is: the launcher, or a rank of the job its environment describes.
fn describe(launcher: bool) -> String {
    let host = shoal_launch::hostname();
    if launcher {
        return format!("launcher {host}");
    }
    match shoal_dist::DistEnv::from_process_env() {
        Ok(d) => format!("rank {}/{} {host}", d.rank, d.world_size),
        Err(_) => format!("rank ?/? {host}"),
    }
}

/// One line per event: `shoal[who] level: message fields`.
struct Line;

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => " error:",
            Level::WARN => " warning:",
            Level::INFO => "",
            Level::DEBUG => " debug:",
            Level::TRACE => " trace:",
        };
        write!(w, "shoal[{}]{level} ", who())?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Installs the subscriber; a bad `SHOAL_LOG` is reported and the default used.
pub fn init(verbose: u8, launcher: bool) {
    let _ = WHO.set(describe(launcher));
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let mut bad = None;
    let filter = match std::env::var(SHOAL_LOG) {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            bad = Some(format!(
                "{SHOAL_LOG}={v:?} is not a log filter ({e}); using {default}"
            ));
            EnvFilter::new(default)
        }),
        _ => EnvFilter::new(default),
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .event_format(Line)
        .try_init();
    if let Some(b) = bad {
        tracing::warn!("{b}");
    }
}

/// An error and its causes in one line, each cause once: a cause whose text
/// the message already holds (`writing x: No space left (os error 28)` over
/// the `io::Error` itself) is not repeated.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("writing out/x.png: {source}")]
    struct Wrapped {
        source: std::io::Error,
    }

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = std::io::Error::from_raw_os_error(28);
        let e = anyhow::Error::new(Wrapped { source: io });
        let line = error_line(&e);
        assert_eq!(line.matches("os error 28").count(), 1, "{line}");
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(11)).context("claiming a block");
        assert_eq!(error_line(&e).matches("os error 11").count(), 1);
        assert!(error_line(&e).starts_with("claiming a block: "));
    }
}
