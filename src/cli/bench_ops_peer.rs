//! `shoal bench ops --peer torch`: PyTorch's same op on the same shapes, in the
//! same call, and one table with the ratios (issue 11's per-op table).
//!
//! Every row that `bench ops` ran hands over its PyTorch counterpart (a [`Spec`]:
//! a kind and its sizes) to the embedded `scripts/gpu/ops_peer.py`, which makes
//! random inputs of those sizes in torch and times the op in each of its variants
//! (convolutions and GroupNorm in NCHW and channels-last, attention with
//! PyTorch's default backend choice and with cuDNN's, …) after a warm-up, the
//! device synchronized around the timed calls as `bench ops` does. The table
//! sets shoal's fast path against PyTorch's best variant. The spec file, the
//! parsing of the replies and the table are pure ([`parse`], [`table`]).

use std::ffi::OsString;

use anyhow::{Context, Result, bail};
use serde::Serialize;

const SCRIPT: &str = include_str!("../../scripts/gpu/ops_peer.py");

/// Which peer to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OpsPeer {
    /// PyTorch's eager ops, what diffusers runs.
    Torch,
}

/// PyTorch's counterpart of one row, as ops_peer.py reads it: `kind` and its
/// sizes (the script's `OPS` table says what each kind takes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub kind: &'static str,
    pub dims: Vec<usize>,
}

/// One row that `bench ops` ran: its name and shape as printed, and the fast
/// path's seconds per call.
#[derive(Debug, Clone, PartialEq)]
pub struct Ran {
    pub name: String,
    pub shape: String,
    pub fast_s: f64,
    /// `None` where the models run this variant; otherwise why they do not
    /// ([`NCHW`], [`NOT_IN_MODELS`]): such rows are summarized apart, and an
    /// NCHW row is set against PyTorch's NCHW op.
    pub unused: Option<&'static str>,
}

/// The reason of an NCHW row: the models' activations are channels-last on CUDA.
pub const NCHW: &str = "NCHW: not run by the models on CUDA";
/// The reason of a channels-last variant no layer of the models runs at that shape
/// (a convolution the models run with its bias alone, timed with the residual too).
pub const NOT_IN_MODELS: &str = "variant not run by the models at this shape";

/// What the peer printed.
#[derive(Debug, Clone, PartialEq)]
pub struct OpsPeerRun {
    /// Its first line: versions, dtype, device.
    pub header: String,
    /// Per spec, in order: (variant, seconds per call) of every variant that ran.
    pub times: Vec<Vec<(String, f64)>>,
}

#[derive(serde::Deserialize)]
struct Reply {
    i: usize,
    /// (variant, milliseconds or null where the variant could not run).
    ms: Vec<(String, Option<f64>)>,
}

/// The peer's output for `n` specs: an `ops_peer.py:` header and one JSON line
/// `{"i": k, "ms": [[variant, ms], …]}` per spec; anything else (library
/// warnings) is skipped. A spec without a reply is an error naming it.
pub fn parse(stdout: &str, n: usize) -> Result<OpsPeerRun> {
    let header = stdout
        .lines()
        .find(|l| l.starts_with("ops_peer.py:"))
        .context("the peer printed no `ops_peer.py:` header")?
        .to_string();
    let mut times: Vec<Option<Vec<(String, f64)>>> = vec![None; n];
    for line in stdout.lines().filter(|l| l.starts_with("{\"i\"")) {
        let r: Reply = serde_json::from_str(line).with_context(|| format!("the peer's reply {line:?}"))?;
        let Some(slot) = times.get_mut(r.i) else {
            bail!("the peer replied for op {} of {n}", r.i);
        };
        if slot.is_some() {
            bail!("the peer replied twice for op {}", r.i);
        }
        let ok =
            r.ms.into_iter()
                .filter_map(|(v, ms)| ms.filter(|m| m.is_finite() && *m > 0.0).map(|m| (v, m / 1e3)))
                .collect();
        *slot = Some(ok);
    }
    let times = times
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.with_context(|| format!("the peer sent no times for op {i} of {n}")))
        .collect::<Result<_>>()?;
    Ok(OpsPeerRun { header, times })
}

/// The side-by-side table (markdown): each row's fast time against PyTorch's
/// best variant, ratio = PyTorch's seconds ÷ shoal's (above 1: shoal is
/// faster); then the geometric mean of the ratios and the rows under 0.8×.
pub fn table(ran: &[(Spec, Ran)], peer: &OpsPeerRun) -> Result<Vec<String>> {
    if ran.len() != peer.times.len() {
        bail!("the peer timed {} ops where {} ran", peer.times.len(), ran.len());
    }
    let mut out = vec![
        "| op | shape | shoal ms | torch ms | torch's best | shoal / torch speed |".to_string(),
        "| --- | --- | --- | --- | --- | --- |".to_string(),
    ];
    let mut logs = Vec::new();
    let mut under = Vec::new();
    // The rows the issue holds to PyTorch's speed or better: convolutions and attention.
    let mut held = Vec::new();
    let mut held_under = Vec::new();
    let mut apart: Vec<(&'static str, Vec<f64>)> = Vec::new();
    for ((spec, r), t) in ran.iter().zip(&peer.times) {
        // Like for like: an NCHW row against PyTorch's NCHW variant where it ran.
        let same_layout: Vec<&(String, f64)> = t.iter().filter(|v| v.0 == "nchw").collect();
        let best = if r.unused == Some(NCHW) && !same_layout.is_empty() {
            same_layout.into_iter().min_by(|a, b| a.1.total_cmp(&b.1))
        } else {
            t.iter().min_by(|a, b| a.1.total_cmp(&b.1))
        };
        let Some((variant, s)) = best else {
            out.push(format!(
                "| {} | {} | {:.3} | no variant ran | | |",
                r.name,
                r.shape,
                r.fast_s * 1e3
            ));
            continue;
        };
        let ratio = s / r.fast_s;
        match r.unused {
            None => {
                logs.push(ratio.ln());
                if ratio < 0.8 {
                    under.push(format!("{} ({}, {ratio:.2}×)", r.name, r.shape));
                }
                if spec.kind.starts_with("conv") || spec.kind == "attn" {
                    held.push(ratio.ln());
                    if ratio < 1.0 {
                        held_under.push(format!("{} ({}, {ratio:.2}×)", r.name, r.shape));
                    }
                }
            }
            Some(why) => match apart.iter_mut().find(|(w, _)| *w == why) {
                Some((_, l)) => l.push(ratio.ln()),
                None => apart.push((why, vec![ratio.ln()])),
            },
        }
        let note = r.unused.map_or(String::new(), |why| format!(" ({why})"));
        out.push(format!(
            "| {} | {} | {:.3} | {:.3} | {variant}{note} | {ratio:.2}× |",
            r.name,
            r.shape,
            r.fast_s * 1e3,
            s * 1e3
        ));
    }
    if !logs.is_empty() {
        let geo = (logs.iter().sum::<f64>() / logs.len() as f64).exp();
        out.push(String::new());
        out.push(format!(
            "{} ops against PyTorch: geometric mean {geo:.2}×; {} under 0.8×{}",
            logs.len(),
            under.len(),
            if under.is_empty() {
                String::new()
            } else {
                format!(": {}", under.join(", "))
            }
        ));
    }
    if !held.is_empty() {
        let geo = (held.iter().sum::<f64>() / held.len() as f64).exp();
        out.push(format!(
            "{} convolution and attention rows against PyTorch: geometric mean {geo:.2}×; {} under 1.0×{}",
            held.len(),
            held_under.len(),
            if held_under.is_empty() {
                String::new()
            } else {
                format!(": {}", held_under.join(", "))
            }
        ));
    }
    for (why, l) in apart {
        let geo = (l.iter().sum::<f64>() / l.len() as f64).exp();
        let against = if why == NCHW {
            "PyTorch's NCHW op"
        } else {
            "PyTorch"
        };
        out.push(format!(
            "{} rows apart ({why}) against {against}: geometric mean {geo:.2}×",
            l.len()
        ));
    }
    Ok(out)
}

/// How shoal's rows were timed, and so the peer's: `iters` calls (with `graphs`,
/// recorded as one CUDA graph), `reps` such timings, the median kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub iters: usize,
    pub graphs: bool,
    pub reps: usize,
}

/// The median of `runs` (the mean of the middle two for an even count; 0 for none).
pub fn median(runs: &mut [f64]) -> f64 {
    runs.sort_by(f64::total_cmp);
    let n = runs.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => runs[n / 2],
        _ => (runs[n / 2 - 1] + runs[n / 2]) / 2.0,
    }
}

/// The peer script's arguments: the op list, and the dtype, device and timing
/// shoal's own rows used.
fn peer_args(ops: &std::path::Path, dtype: &str, device: &str, timing: Timing) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        ops.into(),
        "--dtype".into(),
        dtype.into(),
        "--device".into(),
        device.into(),
        "--iters".into(),
        timing.iters.to_string().into(),
        "--reps".into(),
        timing.reps.to_string().into(),
    ];
    if timing.graphs {
        args.push("--graphs".into());
    }
    args
}

/// Runs the peer on the specs of the ops that ran, timed as shoal's were
/// ([`peer_args`]), and parses what it printed.
pub fn run(peer: OpsPeer, specs: &[&Spec], dtype: &str, device: &str, timing: Timing) -> Result<OpsPeerRun> {
    let OpsPeer::Torch = peer;
    let file = tempfile::NamedTempFile::new().context("creating the peer's op list")?;
    std::fs::write(file.path(), serde_json::to_vec(specs)?)
        .with_context(|| format!("writing {}", file.path().display()))?;
    let args = peer_args(file.path(), dtype, device, timing);
    let stdout = super::bench_peer::run_script("ops_peer.py", SCRIPT, &args, "torch with CUDA")?;
    parse(&stdout, specs.len())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn the_peer_is_timed_as_shoal_was() {
        let ops = std::path::Path::new("/tmp/ops.json");
        let words = |a: Vec<OsString>| {
            a.into_iter()
                .map(|w| w.into_string().unwrap())
                .collect::<Vec<_>>()
        };
        let timing = |iters, graphs, reps| Timing { iters, graphs, reps };
        assert_eq!(
            words(peer_args(ops, "bf16", "cuda:1", timing(50, false, 1))),
            [
                "/tmp/ops.json",
                "--dtype",
                "bf16",
                "--device",
                "cuda:1",
                "--iters",
                "50",
                "--reps",
                "1"
            ]
        );
        let graphs = words(peer_args(ops, "f16", "cuda", timing(7, true, 5)));
        assert_eq!(graphs[5..], ["--iters", "7", "--reps", "5", "--graphs"]);
        // The embedded script takes every flag given it.
        for flag in ["--dtype", "--device", "--iters", "--reps", "--graphs"] {
            assert!(SCRIPT.contains(&format!("ap.add_argument(\"{flag}\"")), "{flag}");
        }
    }

    #[test]
    fn the_median_of_the_timings_is_kept() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut [7.0]), 7.0);
        assert_eq!(median(&mut []), 0.0);
    }

    fn ran(name: &str, fast_ms: f64) -> (Spec, Ran) {
        (
            Spec {
                kind: "conv",
                dims: vec![2, 320, 64, 320, 3, 1],
            },
            Ran {
                name: name.into(),
                shape: "2×320×64² → 320, 3×3/1".into(),
                fast_s: fast_ms / 1e3,
                unused: if name.ends_with(" nchw") {
                    Some(NCHW)
                } else if name.ends_with(" unused") {
                    Some(NOT_IN_MODELS)
                } else {
                    None
                },
            },
        )
    }

    const OUT: &str = "ops_peer.py: torch 2.11.0+cu130, cuDNN 91900, float16, cuda\n\
a warning\n\
{\"i\": 1, \"ms\": [[\"nchw\", 0.5], [\"channels_last\", 0.25]]}\n\
{\"i\": 0, \"ms\": [[\"default\", 2.0], [\"cudnn\", null]]}\n";

    #[test]
    fn parses_replies_in_any_order_and_drops_variants_that_did_not_run() {
        let r = parse(OUT, 2).unwrap();
        assert!(r.header.contains("torch 2.11.0"));
        assert_eq!(r.times[0], vec![("default".to_string(), 0.002)]);
        assert_eq!(r.times[1].len(), 2);
        assert_eq!(r.times[1][1], ("channels_last".to_string(), 0.00025));
    }

    #[test]
    fn missing_extra_or_doubled_replies_are_errors() {
        assert!(parse(OUT, 3).unwrap_err().to_string().contains("op 2 of 3"));
        assert!(parse(OUT, 1).unwrap_err().to_string().contains("op 1 of 1"));
        let twice = format!("{OUT}{{\"i\": 0, \"ms\": []}}\n");
        assert!(parse(&twice, 2).unwrap_err().to_string().contains("twice"));
        assert!(
            parse("{\"i\": 0, \"ms\": []}", 1)
                .unwrap_err()
                .to_string()
                .contains("header")
        );
        let bad = "ops_peer.py: x\n{\"i\": \"zero\"}\n";
        assert!(parse(bad, 1).is_err());
    }

    #[test]
    fn ratios_are_torch_best_over_shoal() {
        let r = parse(OUT, 2).unwrap();
        // Op 0: torch 2.0 ms (its one variant) against shoal 1.0 ms → 2.00×;
        // op 1: torch's best 0.25 ms against shoal 0.5 ms → 0.50×, under 0.8×.
        let t = table(&[ran("a", 1.0), ran("b", 0.5)], &r).unwrap();
        assert_eq!(
            t[2],
            "| a | 2×320×64² → 320, 3×3/1 | 1.000 | 2.000 | default | 2.00× |"
        );
        assert_eq!(
            t[3],
            "| b | 2×320×64² → 320, 3×3/1 | 0.500 | 0.250 | channels_last | 0.50× |"
        );
        // Geometric mean of 2 and 0.5 is 1.
        assert!(
            t[5].starts_with("2 ops against PyTorch: geometric mean 1.00×; 1 under 0.8×: b ("),
            "{}",
            t[5]
        );
        // Both rows are convolutions, held to 1×: b is under it.
        assert!(
            t[6].starts_with(
                "2 convolution and attention rows against PyTorch: geometric mean 1.00×; 1 under 1.0×: b ("
            ),
            "{}",
            t[6]
        );
        assert!(table(&[ran("a", 1.0)], &r).is_err());
        let none = OpsPeerRun {
            header: String::new(),
            times: vec![vec![]],
        };
        assert!(table(&[ran("a", 1.0)], &none).unwrap()[2].contains("no variant ran"));
    }

    #[test]
    fn only_convolutions_and_attention_are_held_to_torch_speed() {
        let r = parse(OUT, 2).unwrap();
        let (mut norm, mut attn) = (ran("n", 2.5), ran("s", 1.0));
        norm.0.kind = "layer_norm";
        attn.0.kind = "attn";
        // The norm at 0.80× (2.0 / 2.5) is not held to 1×; the attention row at 0.25× is.
        let t = table(&[norm, attn], &r).unwrap();
        assert!(
            t[5].starts_with("2 ops against PyTorch: geometric mean 0.45×; 1 under 0.8×: s ("),
            "{}",
            t[5]
        );
        assert!(
            t[6].starts_with(
                "1 convolution and attention rows against PyTorch: geometric mean 0.25×; 1 under 1.0×: s ("
            ),
            "{}",
            t[6]
        );
    }

    #[test]
    fn an_nchw_row_is_set_against_torch_nchw_and_kept_out_of_the_summary() {
        let r = parse(OUT, 2).unwrap();
        // Op 1 as an NCHW row: against torch's nchw 0.5 ms, not its channels_last 0.25.
        let t = table(&[ran("a", 1.0), ran("b nchw", 0.5)], &r).unwrap();
        assert_eq!(
            t[3],
            "| b nchw | 2×320×64² → 320, 3×3/1 | 0.500 | 0.500 | nchw (NCHW: not run by the models on CUDA) | 1.00× |"
        );
        assert!(
            t[5].starts_with("1 ops against PyTorch: geometric mean 2.00×; 0 under 0.8×"),
            "{}",
            t[5]
        );
        assert!(
            t[6].starts_with(
                "1 convolution and attention rows against PyTorch: geometric mean 2.00×; 0 under 1.0×"
            ),
            "{}",
            t[6]
        );
        assert!(t[7].starts_with("1 rows apart (NCHW: "), "{}", t[7]);
    }

    #[test]
    fn a_variant_the_models_do_not_run_is_summarized_apart_against_torch_best() {
        let r = parse(OUT, 2).unwrap();
        // Op 1 as a variant the models do not run: against torch's best (0.25 ms), apart.
        let t = table(&[ran("a", 1.0), ran("b unused", 0.5)], &r).unwrap();
        assert!(
            t[3].contains("| 0.250 | channels_last (variant not run by the models"),
            "{}",
            t[3]
        );
        assert!(
            t[5].starts_with("1 ops against PyTorch: geometric mean 2.00×; 0 under 0.8×"),
            "{}",
            t[5]
        );
        assert!(t[7].starts_with("1 rows apart (variant not run"), "{}", t[7]);
        assert!(
            t[7].ends_with("against PyTorch: geometric mean 0.50×"),
            "{}",
            t[7]
        );
    }
}
