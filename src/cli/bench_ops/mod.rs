//! `shoal bench ops`: every convolution and attention shape of the SD 1.5 UNet
//! and VAE at 512² (and SDXL's attention), each run on the plain path (candle's
//! ops) and on the fast kernels (feature `cudnn`), on the same random inputs.
//!
//! For each op it prints the time of both paths, the fast path's TFLOP/s, and
//! the error of both against an f32 reference of the plain path
//! (‖out − ref‖ / ‖ref‖ and the largest |out − ref|). An op whose fast error is
//! over the bound, or that fell back, fails the command (exit 1): the same
//! run is the kernels' GPU test. `scripts/gpu/ops_peer.py` times the same
//! shapes in PyTorch, in the same call.

use std::time::Instant;

use anyhow::{Result, bail};
use candle_core::{DType, Device, Tensor};
use clap::Args;

use super::UsageError;
use super::args::{parse_device, parse_dtype};
use super::bench_ops_peer::{Ran, Spec};

mod cases;
use cases::{attn_case, conv_case, copy_case, layer_norm_case, linear_case, norm_case};

#[derive(Debug, Args)]
pub struct OpsBench {
    /// Data type of the ops (f16, bf16 or f32).
    #[arg(long, default_value = "f16")]
    dtype: String,
    /// The GPU (cuda or cuda:N).
    #[arg(long, default_value = "cuda")]
    device: String,
    /// Timed repetitions per op.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Only ops whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// UNet batch sizes (with CFG: 2 = one image).
    #[arg(long, default_value = "2,16")]
    batches: String,
    /// Also time PyTorch's same op on the same shapes, in this call, and print a
    /// table with the ratios: runs the embedded scripts/gpu/ops_peer.py with
    /// python3 (or SHOAL_PEER_PYTHON), which needs torch with CUDA.
    #[arg(long, value_enum)]
    peer: Option<super::bench_ops_peer::OpsPeer>,
    /// Time each fast op (and PyTorch's, with --peer) as a CUDA graph runs it,
    /// as the model's UNet call does: --iters calls recorded as one graph and
    /// replayed (GPU time without the host's launch cost; PyTorch's through
    /// torch.cuda.graph). The plain column stays timed call by call.
    #[arg(long)]
    graphs: bool,
    /// Time each fast op (and each of PyTorch's variants, with --peer) this many
    /// times, --iters calls each, and keep the median: rows whose kernels are the
    /// same on both sides then differ by less than one run's noise.
    #[arg(long, default_value_t = 1)]
    reps: usize,
}

/// What every case needs: where, in what dtype, how many timed calls, and the
/// ops that ran (PyTorch's counterpart, row name and shape, the fast path's
/// seconds per call) for `--peer`.
struct Ctx<'a> {
    device: &'a Device,
    dtype: DType,
    iters: usize,
    /// Fast ops timed as CUDA graph replays (`--graphs`).
    graphs: bool,
    /// Timings per fast op, of which the median is kept (`--reps`).
    reps: usize,
    ran: std::cell::RefCell<Vec<(Spec, Ran)>>,
}

impl Ctx<'_> {
    fn ran(&self, peer: Peer, name: &str, shape: &str, fast_s: f64) {
        self.ran.borrow_mut().push((
            peer.0,
            Ran {
                name: name.to_string(),
                shape: shape.to_string(),
                fast_s,
                unused: peer.1,
            },
        ));
    }
}

/// PyTorch's counterpart of a row (`Spec`: kind and sizes, as ops_peer.py reads them),
/// and why the models do not run the row's variant (`None`: they do); NCHW rows are
/// set against PyTorch's NCHW op alone.
struct Peer(Spec, Option<&'static str>);

impl Peer {
    fn new(kind: &'static str, dims: &[usize]) -> Peer {
        Peer(
            Spec {
                kind,
                dims: dims.to_vec(),
            },
            None,
        )
    }

    /// A row the models run where `run`, summarized apart otherwise.
    fn run_if(kind: &'static str, dims: &[usize], run: bool) -> Peer {
        let why = (!run).then_some(super::bench_ops_peer::NOT_IN_MODELS);
        Peer(Peer::new(kind, dims).0, why)
    }

    /// A row of the NCHW variant of a kernel, which the models do not run on
    /// CUDA (their activations are channels-last there).
    fn nchw(kind: &'static str, dims: &[usize]) -> Peer {
        Peer(Peer::new(kind, dims).0, Some(super::bench_ops_peer::NCHW))
    }
}

/// A convolution: name, input channels, side, output channels, kernel, stride, and
/// what the models add in it at this shape.
struct Conv(&'static str, usize, usize, usize, usize, usize, Adds);

/// What the models' convolutions of a shape add to their output in the kernel.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Adds {
    /// The bias alone (a ResNet's conv1, a shortcut, a resampler, `conv_in`).
    Bias,
    /// The bias alone at some layers, also the residual at others (a ResNet's
    /// conv2, the transformer's output projection).
    Either,
    /// The bias and a zero residual (fewer than 8 output channels: `conv_out`,
    /// where cuDNN's conv + bias engine is the slower one); PyTorch's counterpart
    /// is its convolution with the bias alone, what diffusers runs there.
    ZeroResidual,
}

/// The SD 1.5 UNet's distinct convolutions at 512² (64² latents).
const UNET_CONVS: &[Conv] = &[
    Conv("conv_in", 4, 64, 320, 3, 1, Adds::Bias),
    Conv("l0 resnet", 320, 64, 320, 3, 1, Adds::Either),
    Conv("l0 proj 1x1", 320, 64, 320, 1, 1, Adds::Either),
    Conv("l0 down", 320, 64, 320, 3, 2, Adds::Bias),
    Conv("l1 resnet in", 320, 32, 640, 3, 1, Adds::Bias),
    Conv("l1 resnet", 640, 32, 640, 3, 1, Adds::Either),
    Conv("l1 shortcut 1x1", 320, 32, 640, 1, 1, Adds::Bias),
    Conv("l1 down", 640, 32, 640, 3, 2, Adds::Bias),
    Conv("l2 resnet in", 640, 16, 1280, 3, 1, Adds::Bias),
    Conv("l2 resnet", 1280, 16, 1280, 3, 1, Adds::Either),
    Conv("l2 down", 1280, 16, 1280, 3, 2, Adds::Bias),
    Conv("l3/mid resnet", 1280, 8, 1280, 3, 1, Adds::Either),
    Conv("up0 resnet in", 2560, 8, 1280, 3, 1, Adds::Bias),
    Conv("up0 shortcut 1x1", 2560, 8, 1280, 1, 1, Adds::Bias),
    Conv("up1 upsample", 1280, 16, 1280, 3, 1, Adds::Bias),
    Conv("up1 resnet in", 1920, 16, 1280, 3, 1, Adds::Bias),
    Conv("up2 resnet in", 1920, 32, 640, 3, 1, Adds::Bias),
    Conv("up2 resnet in b", 960, 32, 640, 3, 1, Adds::Bias),
    Conv("up3 resnet in", 960, 64, 320, 3, 1, Adds::Bias),
    Conv("up3 resnet in b", 640, 64, 320, 3, 1, Adds::Bias),
    Conv("conv_out", 320, 64, 4, 3, 1, Adds::ZeroResidual),
];

/// The SD 1.5 VAE decoder's convolutions for one 512² image.
const VAE_CONVS: &[Conv] = &[
    Conv("vae conv_in", 4, 64, 512, 3, 1, Adds::Bias),
    Conv("vae 512@64", 512, 64, 512, 3, 1, Adds::Either),
    Conv("vae 512@128", 512, 128, 512, 3, 1, Adds::Either),
    Conv("vae 512@256", 512, 256, 512, 3, 1, Adds::Bias),
    Conv("vae 512→256@256", 512, 256, 256, 3, 1, Adds::Bias),
    Conv("vae 256@256", 256, 256, 256, 3, 1, Adds::Either),
    Conv("vae 256@512", 256, 512, 256, 3, 1, Adds::Bias),
    Conv("vae 256→128@512", 256, 512, 128, 3, 1, Adds::Bias),
    Conv("vae 128@512", 128, 512, 128, 3, 1, Adds::Either),
    Conv("vae conv_out", 128, 512, 3, 3, 1, Adds::ZeroResidual),
];

/// An attention: name, query tokens, key tokens, width, heads.
struct Attn(&'static str, usize, usize, usize, usize);

/// The VAE decoder's mid-block attention (one head over every latent pixel), for
/// one image at 512² and at 1024²: cuDNN does not take its head width (512), so
/// the rows time the plain path, in blocks of query rows at 1024².
const VAE_ATTNS: &[Attn] = &[
    Attn("vae mid d512", 4096, 4096, 512, 1),
    Attn("vae mid d512 @1024", 16384, 16384, 512, 1),
];

const ATTNS: &[Attn] = &[
    Attn("sd15 l0 self d40", 4096, 4096, 320, 8),
    Attn("sd15 l0 cross d40", 4096, 77, 320, 8),
    Attn("sd15 l1 self d80", 1024, 1024, 640, 8),
    Attn("sd15 l1 cross d80", 1024, 77, 640, 8),
    Attn("sd15 l2 self d160", 256, 256, 1280, 8),
    Attn("sd15 mid self d160", 64, 64, 1280, 8),
    Attn("sdxl l1 self d64", 4096, 4096, 640, 10),
    Attn("sdxl l2 self d64", 1024, 1024, 1280, 20),
    Attn("sd15 l2 cross d160", 256, 77, 1280, 8),
    Attn("sdxl l1 cross d64", 4096, 77, 640, 10),
    Attn("sdxl l2 cross d64", 1024, 77, 1280, 20),
];

/// GroupNorm(32)+SiLU inputs of the UNet (channels, side) at 512², and of the VAE decoder.
const UNET_NORMS: &[(usize, usize)] = &[
    (320, 64),
    (640, 64),
    (960, 64),
    (640, 32),
    (960, 32),
    (1920, 32),
    (1280, 16),
    (1920, 16),
    (2560, 16),
    (1280, 8),
    (2560, 8),
];
const VAE_NORMS: &[(usize, usize)] = &[
    (512, 64),
    (512, 128),
    (512, 256),
    (256, 256),
    (256, 512),
    (128, 512),
];

/// The UNet's up path, channels-last: side, channels, and the skip's channels
/// concatenated to them (the upsample doubles `side` × `channels`).
const COPIES: &[(usize, usize, usize)] = &[(8, 1280, 1280), (16, 1280, 640), (32, 640, 320), (64, 320, 320)];

/// The transformer blocks' LayerNorms: tokens, features (SD 1.5 levels 0–2).
const LAYER_NORMS: &[(usize, usize)] = &[(4096, 320), (1024, 640), (256, 1280)];

/// A transformer projection: name, tokens, in, out, and what the models do after it.
struct Lin(&'static str, usize, usize, usize, After);

/// What follows a projection in the models.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    /// GEGLU (the feed-forward input).
    Geglu,
    /// The residual add, in the GEMM (the feed-forward output): the bias-only
    /// variant is not run at this shape.
    Residual,
    /// Nothing (an attention output, whose add sits in the next LayerNorm), or the
    /// residual (SD 2.x's linear `proj_out` at this shape).
    Either,
}

const LINEARS: &[Lin] = &[
    Lin("ff l0 in+geglu", 4096, 320, 2560, After::Geglu),
    Lin("ff l0 out", 4096, 1280, 320, After::Residual),
    Lin("ff l1 in+geglu", 1024, 640, 5120, After::Geglu),
    Lin("ff l1 out", 1024, 2560, 640, After::Residual),
    Lin("ff l2 in+geglu", 256, 1280, 10240, After::Geglu),
    Lin("ff l2 out", 256, 5120, 1280, After::Residual),
    Lin("attn l0 out", 4096, 320, 320, After::Either),
];

pub fn run(b: OpsBench) -> Result<()> {
    let dtype = parse_dtype(&b.dtype)?;
    check_timing(b.iters, b.reps)?;
    let device = parse_device(&b.device)?;
    if !device.is_cuda() {
        return Err(UsageError("bench ops compares GPU kernels: give --device cuda".into()).into());
    }
    let batches: Vec<usize> = b
        .batches
        .split(',')
        .map(|x| x.trim().parse().ok().filter(|n| *n > 0))
        .collect::<Option<_>>()
        .ok_or_else(|| UsageError(format!("invalid --batches {:?}", b.batches)))?;
    let fast_built = cfg!(feature = "cudnn");
    println!(
        "shoal bench ops: {dtype:?} on {device:?}, {} iterations{}, fast kernels built: {fast_built}{}",
        b.iters,
        if b.reps > 1 {
            format!(", median of {} timings per fast op", b.reps)
        } else {
            String::new()
        },
        if b.graphs {
            "; fast ops timed as CUDA graph replays"
        } else {
            ""
        }
    );
    println!(
        "| op | shape | plain ms | fast ms | fast TFLOP/s (or GB/s) | speedup | plain rel err | fast rel err | fast max abs err | check |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let want = |name: &str| b.only.as_deref().is_none_or(|o| name.contains(o));
    let ctx = Ctx {
        device: &device,
        dtype,
        iters: b.iters,
        graphs: b.graphs,
        reps: b.reps,
        ran: std::cell::RefCell::new(Vec::new()),
    };
    let mut failures = 0;
    let mut cases: Vec<(usize, &Conv)> = Vec::new();
    for &n in &batches {
        cases.extend(UNET_CONVS.iter().map(|c| (n, c)));
    }
    cases.extend(VAE_CONVS.iter().map(|c| (1, c)));
    for (n, c) in cases {
        if want(c.0) {
            failures += conv_case(&ctx, n, c)?;
        }
    }
    for &n in &batches {
        for a in ATTNS {
            if want(a.0) {
                failures += attn_case(&ctx, n, a, false)?;
            }
        }
    }
    for a in VAE_ATTNS {
        if want(a.0) {
            failures += attn_case(&ctx, 1, a, true)?;
        }
    }
    let mut norms: Vec<(usize, &(usize, usize))> = Vec::new();
    for &n in &batches {
        norms.extend(UNET_NORMS.iter().map(|c| (n, c)));
    }
    norms.extend(VAE_NORMS.iter().map(|c| (1, c)));
    for (n, c) in norms {
        if want("group_norm") {
            failures += norm_case(&ctx, n, *c)?;
        }
    }
    for &n in &batches {
        for &copy in COPIES {
            if want("nhwc copies") {
                failures += copy_case(&ctx, n, copy)?;
            }
        }
    }
    for &n in &batches {
        for &ln in LAYER_NORMS {
            if want("layer_norm") {
                failures += layer_norm_case(&ctx, n, ln)?;
            }
        }
    }
    for &n in &batches {
        for l in LINEARS {
            if want(l.0) {
                failures += linear_case(&ctx, n, l)?;
            }
        }
    }
    #[cfg(feature = "cudnn")]
    {
        println!(
            "cuDNN {} ; plans built: {}",
            shoal_kernels::cudnn::version(),
            shoal_kernels::cudnn::plans_built()
        );
        for f in shoal_kernels::fallbacks() {
            println!("fell back: {} ({} calls): {}", f.what, f.calls, f.why);
        }
    }
    if let Some(peer) = b.peer {
        let ran = ctx.ran.into_inner();
        let specs: Vec<&Spec> = ran.iter().map(|(s, _)| s).collect();
        let run = super::bench_ops_peer::run(
            peer,
            &specs,
            &b.dtype,
            &b.device,
            super::bench_ops_peer::Timing {
                iters: b.iters,
                graphs: b.graphs,
                reps: b.reps,
            },
        )?;
        println!();
        println!("{}", run.header);
        for line in super::bench_ops_peer::table(&ran, &run)? {
            println!("{line}");
        }
    }
    if failures > 0 {
        bail!("{failures} ops failed their check");
    }
    println!("bench ops: every op passed its check");
    Ok(())
}

/// The most `--iters` (with `--graphs` every call's output stays allocated in the
/// recorded graph) and `--reps` (timings kept per op) a run takes.
const MAX_ITERS: usize = 10_000;
const MAX_REPS: usize = 1_000;

/// `--iters` and `--reps` within 1 and their bounds.
fn check_timing(iters: usize, reps: usize) -> Result<(), UsageError> {
    for (flag, v, max) in [("--iters", iters, MAX_ITERS), ("--reps", reps, MAX_REPS)] {
        if !(1..=max).contains(&v) {
            return Err(UsageError(format!("{flag} must be from 1 to {max} (got {v})")));
        }
    }
    Ok(())
}

/// Seconds per call of a fast op: the median of `--reps` timings by [`time_once`].
fn time_fast(ctx: &Ctx, name: &str, f: &mut dyn FnMut() -> Result<Tensor>) -> Result<f64> {
    let mut runs = Vec::with_capacity(ctx.reps);
    for rep in 0..ctx.reps {
        runs.push(time_once(ctx, name, rep == 0, f)?);
    }
    Ok(super::bench_ops_peer::median(&mut runs))
}

/// One timing of a fast op: as [`time`], or with `--graphs` as a CUDA graph
/// replays it. An op that cannot be recorded is timed call by call, and a line
/// under the table's row says so and why (on the `first` timing).
fn time_once(ctx: &Ctx, name: &str, first: bool, f: &mut dyn FnMut() -> Result<Tensor>) -> Result<f64> {
    if !ctx.graphs {
        return time(ctx.device, ctx.iters, f);
    }
    let mut call = || -> candle_core::Result<()> {
        f().map(drop)
            .map_err(|e| candle_core::Error::Msg(format!("{e:#}")))
    };
    match shoal_diffusion::nn::graph::seconds_per_call_in_graph(ctx.device, ctx.iters, &mut call) {
        Ok(s) => Ok(s),
        Err(e) => {
            if first {
                println!("| {name} | not timed as a CUDA graph ({e}): call by call |");
            }
            time(ctx.device, ctx.iters, f)
        }
    }
}

/// Seconds per call of `f`, after one warm-up call, with the device synchronized around.
fn time(device: &Device, iters: usize, f: &mut dyn FnMut() -> Result<Tensor>) -> Result<f64> {
    f()?;
    device.synchronize()?;
    let t = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    device.synchronize()?;
    Ok(t.elapsed().as_secs_f64() / iters as f64)
}

/// (‖a − r‖ / ‖r‖, max |a − r|), in f32.
fn errors(a: &Tensor, r: &Tensor) -> Result<(f64, f64)> {
    let a = a.to_dtype(DType::F32)?;
    let r = r.to_dtype(DType::F32)?;
    let d = (&a - &r)?;
    let num = d.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()? as f64;
    let den = r.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()? as f64;
    let max = d.abs()?.max_all()?.to_scalar::<f32>()? as f64;
    if !num.is_finite() || !max.is_finite() {
        return Ok((f64::INFINITY, f64::INFINITY));
    }
    Ok((num / den.max(f64::MIN_POSITIVE), max))
}

/// The bound on the fast path's relative error: that of the plain path in the
/// same dtype (both round their output to it), with room for another order of
/// summation, and never under the dtype's own rounding.
#[cfg_attr(not(feature = "cudnn"), allow(dead_code))]
fn bound(dtype: DType, plain_rel: f64) -> f64 {
    // f32 convolutions may run in TF32 (PyTorch's default for cuDNN too).
    let eps = match dtype {
        DType::BF16 => 8e-3,
        DType::F32 => 2e-3,
        _ => 1e-3,
    };
    (plain_rel * 3.0).max(eps)
}

/// Plain and fast outputs of one op on the same inputs, against `reference`, timed; one table row.
#[allow(clippy::too_many_arguments)]
fn compare(
    ctx: &Ctx,
    peer: Peer,
    name: &str,
    shape: &str,
    work: f64,
    bytes: bool,
    reference: &Tensor,
    plain: &mut dyn FnMut() -> Result<Tensor>,
    fast: &mut dyn FnMut() -> Result<Tensor>,
) -> Result<usize> {
    let (device, dtype, iters) = (ctx.device, ctx.dtype, ctx.iters);
    let plain_out = plain()?;
    let plain_s = time(device, iters, plain)?;
    let (plain_rel, _) = errors(&plain_out, reference)?;
    let out = match fast() {
        Ok(o) => o,
        Err(e) => {
            println!(
                "| {name} | {shape} | {:.3} | fell back: {e} | | | | | | FAIL |",
                plain_s * 1e3
            );
            return Ok(1);
        }
    };
    let fast_s = time_fast(ctx, name, fast)?;
    // The same inputs twice: a kernel whose bits change between calls (atomics,
    // a split reduction in another order) is named, not failed.
    let again = fast()?;
    let drift = (&out.to_dtype(DType::F32)? - &again.to_dtype(DType::F32)?)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    if drift != 0.0 {
        println!(
            "| {name} | {shape} | not bit-reproducible: two calls on the same inputs differ by up to {drift:.1e} |"
        );
    }
    let errs = errors(&out, reference)?;
    let ok = errs.0 <= bound(dtype, plain_rel);
    let rate = if bytes {
        format!("{:.0} GB/s", work / fast_s / 1e9)
    } else {
        format!("{:.0}", work / fast_s / 1e12)
    };
    println!(
        "| {name} | {shape} | {:.3} | {:.3} | {rate} | {:.2}× | {plain_rel:.1e} | {:.1e} | {:.1e} | {} |",
        plain_s * 1e3,
        fast_s * 1e3,
        plain_s / fast_s,
        errs.0,
        errs.1,
        if ok { "PASS" } else { "FAIL" }
    );
    ctx.ran(peer, name, shape, fast_s);
    Ok(usize::from(!ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iters_and_reps_are_bounded() {
        assert!(check_timing(1, 1).is_ok());
        assert!(check_timing(MAX_ITERS, MAX_REPS).is_ok());
        for (iters, reps, flag) in [
            (0, 1, "--iters"),
            (MAX_ITERS + 1, 1, "--iters"),
            (50, 0, "--reps"),
            (50, usize::MAX, "--reps"),
        ] {
            let e = check_timing(iters, reps).unwrap_err().0;
            assert!(e.starts_with(flag), "{e}");
        }
    }
}
