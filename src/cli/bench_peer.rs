//! `shoal bench sd --peer diffusers`: the same benchmark in diffusers, in the same
//! call, and one table with the ratios.
//!
//! The peer is `scripts/gpu/peer_sd.py`, embedded in the binary and run with
//! `python3` (or `SHOAL_PEER_PYTHON`), which needs torch with CUDA and diffusers. It
//! times the same way as `bench sd` (a 2-step warm-up per batch size, then the mean of
//! `--reps` calls) on the same folder, size, steps, guidance and dtype, and reports its
//! peak of total − free device memory over its start, the measure `bench sd` prints.
//! Parsing its table and forming the ratios are pure ([`parse`], [`table`]).

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

const SCRIPT: &str = include_str!("../../scripts/gpu/peer_sd.py");

/// Which peer to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// Eager diffusers.
    Diffusers,
    /// diffusers with `torch.compile` on the UNet (channels-last); its first call per
    /// batch size holds the compilation.
    DiffusersCompiled,
}

/// One batch size of the peer's table.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRow {
    pub batch: usize,
    pub s_per_batch: f64,
    /// The 2-step warm-up call (the compile time, compiled).
    pub first_call_s: f64,
}

/// What the peer printed.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRun {
    /// Its first line: pipeline, versions, load time.
    pub header: String,
    pub rows: Vec<PeerRow>,
    /// Peak GiB of total − free over its start.
    pub peak_gib: Option<f64>,
}

/// The peer's output: a `peer_sd.py:` header, `| batch | s/batch | img/s | first call s |`
/// rows and a peak-memory line. Anything else (library warnings) is skipped.
pub fn parse(stdout: &str) -> Result<PeerRun> {
    let header = stdout
        .lines()
        .find(|l| l.starts_with("peer_sd.py:"))
        .context("the peer printed no `peer_sd.py:` header")?
        .to_string();
    let mut rows = Vec::new();
    for line in stdout.lines() {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
        if !line.starts_with("| ") || cells.len() != 4 {
            continue;
        }
        let Ok(batch) = cells[0].parse::<usize>() else {
            continue;
        };
        let num = |i: usize| -> Result<f64> {
            cells[i]
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .with_context(|| {
                    format!(
                        "the peer's row for batch {batch} has {:?} in column {}",
                        cells[i],
                        i + 1
                    )
                })
        };
        rows.push(PeerRow {
            batch,
            s_per_batch: num(1)?,
            first_call_s: num(3)?,
        });
    }
    if rows.is_empty() {
        bail!("the peer printed no timing rows");
    }
    let peak_gib = stdout
        .lines()
        .find_map(|l| l.strip_prefix("peak GPU memory over the start (total - free, polled): "))
        .and_then(|v| v.trim_end_matches(" GiB").trim().parse::<f64>().ok());
    Ok(PeerRun {
        header,
        rows,
        peak_gib,
    })
}

/// The side-by-side table: shoal's `(batch, s/batch)` against the peer's rows, one line
/// each (markdown), ratio = shoal img/s ÷ peer img/s. A batch the peer lacks is an error.
pub fn table(shoal: &[(usize, f64)], peer: &PeerRun, peer_name: &str) -> Result<Vec<String>> {
    let mut out = vec![
        format!(
            "| batch | shoal s/batch | {peer_name} s/batch | shoal img/s | {peer_name} img/s | shoal / {peer_name} | {peer_name} first call s |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- |".to_string(),
    ];
    for &(batch, s) in shoal {
        let p = peer
            .rows
            .iter()
            .find(|r| r.batch == batch)
            .with_context(|| format!("the peer has no row for batch {batch}"))?;
        let (a, b) = (batch as f64 / s, batch as f64 / p.s_per_batch);
        out.push(format!(
            "| {batch} | {s:.3} | {:.3} | {a:.3} | {b:.3} | {:.2}× | {:.2} |",
            p.s_per_batch,
            a / b,
            p.first_call_s
        ));
    }
    Ok(out)
}

/// What `bench sd` times, for the peer's command line.
pub struct Same<'a> {
    pub model: &'a Path,
    pub steps: usize,
    pub batches: &'a [usize],
    pub height: usize,
    pub width: usize,
    pub guidance: f64,
    pub dtype: &'a str,
    pub reps: usize,
    pub offload: Option<&'a str>,
}

/// Runs the peer on the same workload and parses what it printed.
pub fn run(peer: Peer, same: &Same<'_>) -> Result<PeerRun> {
    let batches: Vec<String> = same.batches.iter().map(ToString::to_string).collect();
    let mut args: Vec<OsString> = vec![same.model.into()];
    for (flag, v) in [
        ("--steps", same.steps.to_string()),
        ("--batches", batches.join(",")),
        ("--height", same.height.to_string()),
        ("--width", same.width.to_string()),
        ("--guidance", same.guidance.to_string()),
        ("--dtype", same.dtype.to_string()),
        ("--reps", same.reps.to_string()),
    ] {
        args.extend([flag.into(), v.into()]);
    }
    if let Some(o) = same.offload {
        args.extend(["--offload".into(), o.into()]);
    }
    if peer == Peer::DiffusersCompiled {
        args.push("--compile".into());
    }
    parse(&run_script("peer_sd.py", SCRIPT, &args, "torch and diffusers")?)
}

/// Runs an embedded peer script (written to a private folder as `name`) with
/// `python3` or `SHOAL_PEER_PYTHON`, and returns what it printed; a failure
/// names the python and ends with the last lines of its error output. `needs`
/// says what that python must hold.
pub fn run_script(name: &str, script: &str, args: &[OsString], needs: &str) -> Result<String> {
    let dir = tempfile::tempdir().context("creating a folder for the peer script")?;
    let path = dir.path().join(name);
    std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    let python = std::env::var("SHOAL_PEER_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg(&path)
        .args(args)
        .output()
        .with_context(|| {
            format!("running the peer with {python} (set SHOAL_PEER_PYTHON to a python with {needs})")
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "the peer ({python} {name}) failed ({}): {}",
            out.status,
            if tail.is_empty() {
                "no output".to_string()
            } else {
                tail.join(" / ")
            }
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    const OUT: &str = "Loading pipeline components...\n\
peer_sd.py: StableDiffusionPipeline /tmp/sd15, 512×512, 30 steps, guidance 7.5, f16, diffusers 0.42.1, torch 2.11.0+cu130, offload None, compile False; load 0.86 s\n\
| batch | s/batch | img/s | first call s |\n\
| --- | --- | --- | --- |\n\
some warning | with | pipes |\n\
| 1 | 1.411 | 0.709 | 1.51 |\n\
| 8 | 1.953 | 4.095 | 1.11 |\n\
peak GPU memory over the start (total - free, polled): 20.94 GiB\n";

    #[test]
    fn parses_the_peer_table() {
        let r = parse(OUT).unwrap();
        assert!(r.header.contains("diffusers 0.42.1"));
        assert_eq!(r.rows.len(), 2);
        assert_eq!(
            r.rows[1],
            PeerRow {
                batch: 8,
                s_per_batch: 1.953,
                first_call_s: 1.11
            }
        );
        assert_eq!(r.peak_gib, Some(20.94));
    }

    #[test]
    fn ratios_are_shoal_over_peer_in_images_per_second() {
        let r = parse(OUT).unwrap();
        let t = table(&[(1, 0.25), (8, 1.0)], &r, "diffusers").unwrap();
        assert_eq!(t.len(), 4);
        // batch 8: 8 img/s against 8 / 1.953 = 4.096 → 1.95×.
        assert!(
            t[3].starts_with("| 8 | 1.000 | 1.953 | 8.000 | 4.096 | 1.95× |"),
            "{}",
            t[3]
        );
        assert!(
            table(&[(16, 2.0)], &r, "diffusers")
                .unwrap_err()
                .to_string()
                .contains("batch 16")
        );
    }

    #[test]
    fn bad_peer_output_is_an_error() {
        assert!(parse("nothing here").is_err());
        let no_rows = "peer_sd.py: x\n| batch | s/batch | img/s | first call s |\n";
        assert!(parse(no_rows).unwrap_err().to_string().contains("no timing rows"));
        let bad = "peer_sd.py: x\n| 4 | nan | 1 | 1 |\n";
        assert!(parse(bad).unwrap_err().to_string().contains("batch 4"));
    }
}
