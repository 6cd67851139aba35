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

#[allow(clippy::too_many_arguments)]
fn row(
    name: &str,
    shape: &str,
    plain_s: f64,
    fast_s: f64,
    flops: f64,
    plain_rel: f64,
    fast: (f64, f64),
    ok: bool,
) {
    println!(
        "| {name} | {shape} | {:.3} | {:.3} | {:.0} | {:.2}× | {plain_rel:.1e} | {:.1e} | {:.1e} | {} |",
        plain_s * 1e3,
        fast_s * 1e3,
        flops / fast_s / 1e12,
        plain_s / fast_s,
        fast.0,
        fast.1,
        if ok { "PASS" } else { "FAIL" }
    );
}

fn conv_case(ctx: &Ctx, n: usize, c: &Conv) -> Result<usize> {
    let (device, dtype) = (ctx.device, ctx.dtype);
    let &Conv(name, cin, side, cout, k, stride, adds) = c;
    let pad = k / 2;
    let x = Tensor::randn(0f32, 1., (n, cin, side, side), device)?;
    let w = (Tensor::randn(0f32, 1., (cout, cin, k, k), device)? / ((cin * k * k) as f64).sqrt())?;
    let bias = Tensor::randn(0f32, 1., cout, device)?;
    let plain = |x: &Tensor, w: &Tensor, b: &Tensor| -> Result<Tensor> {
        Ok(x.conv2d(w, pad, stride, 1, 1)?
            .broadcast_add(&b.reshape((1, cout, 1, 1))?)?)
    };
    let reference = plain(&x, &w, &bias)?;
    let (xl, wl, bl) = (x.to_dtype(dtype)?, w.to_dtype(dtype)?, bias.to_dtype(dtype)?);
    let shape = format!("{n}×{cin}×{side}² → {cout}, {k}×{k}/{stride}");
    let flops = shoal_kernels_flops(n, cin, side, cout, k, stride);
    #[cfg(feature = "cudnn")]
    {
        use shoal_kernels::cudnn::{conv2d, conv2d_ex};
        let mut fails = compare(
            ctx,
            Peer::nchw("conv", &[n, cin, side, cout, k, stride]),
            name,
            &shape,
            flops,
            false,
            &reference,
            &mut || plain(&xl, &wl, &bl),
            &mut || Ok(conv2d(&xl, &wl, &bl, pad, stride)?),
        )?;
        // Channels-last with a residual (the ResNet's conv2 + skip), as the models add it.
        let r = Tensor::randn(0f32, 1., reference.dims(), device)?;
        let reference_r = (&reference + &r)?;
        let rl = r.to_dtype(dtype)?;
        let last = |t: &Tensor| -> Result<Tensor> { Ok(t.permute((0, 2, 3, 1))?.contiguous()?) };
        let (xn, wn, rn) = (last(&xl)?, last(&wl)?, last(&rl)?);
        let (_, oh, ow, _) = rn.dims4()?;
        let fused = shoal_diffusion::nn::fuses_residual(k, oh * ow, rn.elem_count());
        // The residual in cuDNN's kernel, or added after it.
        let with_residual = |in_kernel: bool| -> Result<Tensor> {
            let y = if in_kernel {
                conv2d_ex(&xn, &wn, Some(&bl), Some(&rn), pad, stride, true)?
            } else {
                (conv2d_ex(&xn, &wn, Some(&bl), None, pad, stride, true)? + &rn)?
            };
            Ok(y.permute((0, 3, 1, 2))?)
        };
        fails += compare(
            ctx,
            match adds {
                Adds::ZeroResidual => Peer::new("conv_cl", &[n, cin, side, cout, k, stride]),
                _ => Peer::run_if("conv_res", &[n, cin, side, cout, k, stride], adds == Adds::Either),
            },
            &format!("{name} nhwc+res"),
            &shape,
            flops,
            false,
            &reference_r,
            &mut || Ok((plain(&xl, &wl, &bl)? + &rl)?),
            // As the models run it: in the kernel, or added after it at small 3×3 outputs.
            &mut || with_residual(fused || adds == Adds::ZeroResidual),
        )?;
        // The other way of a 3×3 window's residual, which the models do not take at this
        // shape (`nn::fuses_residual`): the rule's evidence, against the same PyTorch op.
        if k == 3 && adds != Adds::ZeroResidual {
            fails += compare(
                ctx,
                Peer::run_if("conv_res", &[n, cin, side, cout, k, stride], false),
                &format!("{name} nhwc+res {}", if fused { "added after" } else { "fused" }),
                &shape,
                flops,
                false,
                &reference_r,
                &mut || Ok((plain(&xl, &wl, &bl)? + &rl)?),
                &mut || with_residual(!fused),
            )?;
        }
        // Channels-last with the bias alone (the ResNet's conv1), and with no bias at all
        // (a convolution graph cuDNN can serve with engines that fuse nothing).
        fails += compare(
            ctx,
            Peer::run_if(
                "conv_cl",
                &[n, cin, side, cout, k, stride],
                adds != Adds::ZeroResidual,
            ),
            &format!("{name} nhwc"),
            &shape,
            flops,
            false,
            &reference,
            &mut || plain(&xl, &wl, &bl),
            &mut || Ok(conv2d_ex(&xn, &wn, Some(&bl), None, pad, stride, true)?.permute((0, 3, 1, 2))?),
        )?;
        let zero = bias.zeros_like()?;
        let reference_0 = plain(&x, &w, &zero)?;
        let zl = zero.to_dtype(dtype)?;
        fails += compare(
            ctx,
            Peer::run_if("conv_cl_nobias", &[n, cin, side, cout, k, stride], false),
            &format!("{name} nhwc no bias"),
            &shape,
            flops,
            false,
            &reference_0,
            &mut || plain(&xl, &wl, &zl),
            &mut || Ok(conv2d_ex(&xn, &wn, None, None, pad, stride, true)?.permute((0, 3, 1, 2))?),
        )?;
        Ok(fails)
    }
    #[cfg(not(feature = "cudnn"))]
    {
        let _ = adds;
        compare(
            ctx,
            Peer::new("conv", &[n, cin, side, cout, k, stride]),
            name,
            &shape,
            flops,
            false,
            &reference,
            &mut || plain(&xl, &wl, &bl),
            &mut || plain(&xl, &wl, &bl),
        )
    }
}

fn shoal_kernels_flops(n: usize, c: usize, side: usize, k: usize, r: usize, stride: usize) -> f64 {
    let out = (side + 2 * (r / 2) - r) / stride + 1;
    2.0 * (n * k * out * out) as f64 * (c * r * r) as f64
}

/// One attention row; `plain_expected`: the fast path runs the plain one at this
/// shape by design (cuDNN does not take the head width), so its fallback is not
/// a failure.
fn attn_case(ctx: &Ctx, n: usize, a: &Attn, plain_expected: bool) -> Result<usize> {
    let (device, dtype, iters) = (ctx.device, ctx.dtype, ctx.iters);
    use shoal_diffusion::nn::{AttentionOpts, Kernels, attention};
    let &Attn(name, sq, skv, dim, heads) = a;
    let q = Tensor::randn(0f32, 1., (n, sq, dim), device)?;
    let k = Tensor::randn(0f32, 1., (n, skv, dim), device)?;
    let v = Tensor::randn(0f32, 1., (n, skv, dim), device)?;
    let opts = |kernels| AttentionOpts {
        heads,
        mask: None,
        causal: false,
        upcast: false,
        kernels,
    };
    // The plain path forms its scores in blocks of query rows (at most 2^27 at
    // once), so the largest shapes (16 × 8 heads × 4096², over 2^31 scores) have
    // their reference too.
    let reference = attention(&q, &k, &v, &opts(Kernels::Plain))?;
    let (ql, kl, vl) = (q.to_dtype(dtype)?, k.to_dtype(dtype)?, v.to_dtype(dtype)?);
    let plain_out = attention(&ql, &kl, &vl, &opts(Kernels::Plain))?;
    let plain_s = time(device, iters, &mut || {
        Ok(attention(&ql, &kl, &vl, &opts(Kernels::Plain))?)
    })?;
    let (plain_rel, _) = errors(&plain_out, &reference)?;
    let d = dim / heads;
    let shape = format!("{n}×{heads} heads, q {sq}, k {skv}, d {d}");
    let flops = 4.0 * (n * heads * sq * skv * d) as f64;
    #[cfg(feature = "cudnn")]
    {
        let before = shoal_kernels::fallbacks().iter().map(|f| f.calls).sum::<u64>();
        let out = attention(&ql, &kl, &vl, &opts(Kernels::Fast))?;
        let fell = shoal_kernels::fallbacks().iter().map(|f| f.calls).sum::<u64>() > before;
        let fast_s = time_fast(ctx, name, &mut || {
            Ok(attention(&ql, &kl, &vl, &opts(Kernels::Fast))?)
        })?;
        let errs = errors(&out, &reference)?;
        let ok = (!fell || plain_expected) && errs.0 <= bound(dtype, plain_rel);
        row(name, &shape, plain_s, fast_s, flops, plain_rel, errs, ok);
        ctx.ran(Peer::new("attn", &[n, sq, skv, dim, heads]), name, &shape, fast_s);
        let mut failed = usize::from(!ok);
        // Where shoal's own kernel took the row, cuDNN's SDPA on the same inputs beside it; over
        // many keys, the copy-engine kernel where it is built for the width and not taken.
        #[cfg(feature = "fused")]
        if dtype != DType::F32 {
            let scale = (d as f64).powf(-0.5) as f32;
            let rows = n * heads * sq;
            let own = shoal_diffusion::nn::few_keys_kernel(d, skv, rows);
            let many =
                skv > shoal_kernels::fused::FEW_KEYS_MAX && shoal_kernels::fused::TMA_DIMS.contains(&d);
            let own_many = many && shoal_diffusion::nn::many_keys_kernel(d, skv, dtype);
            type Alt<'a> = Box<dyn FnMut() -> Result<Tensor> + 'a>;
            let mut alts: Vec<(String, Alt)> = Vec::new();
            if own || own_many {
                alts.push((
                    format!("{name} cudnn"),
                    Box::new(|| Ok(shoal_kernels::cudnn::sdpa(&ql, &kl, &vl, heads, scale, false)?)),
                ));
            }
            if many && !own_many {
                alts.push((
                    format!("{name} tma"),
                    Box::new(|| Ok(shoal_kernels::fused::attention_tma(&ql, &kl, &vl, heads, scale)?)),
                ));
            }
            for (label, mut alt) in alts {
                let out = alt()?;
                let alt_s = time_fast(ctx, &label, &mut *alt)?;
                let errs = errors(&out, &reference)?;
                let ok = errs.0 <= bound(dtype, plain_rel);
                row(&label, &shape, plain_s, alt_s, flops, plain_rel, errs, ok);
                failed += usize::from(!ok);
            }
        }
        Ok(failed)
    }
    #[cfg(not(feature = "cudnn"))]
    {
        let _ = plain_expected;
        row(
            name,
            &shape,
            plain_s,
            plain_s,
            flops,
            plain_rel,
            (plain_rel, 0.0),
            true,
        );
        ctx.ran(
            Peer::new("attn", &[n, sq, skv, dim, heads]),
            name,
            &shape,
            plain_s,
        );
        Ok(0)
    }
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

fn var_builder(
    tensors: Vec<(&str, Tensor)>,
    dtype: DType,
    device: &Device,
) -> candle_nn::VarBuilder<'static> {
    let map = tensors.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    candle_nn::VarBuilder::from_tensors(map, dtype, device)
}

fn norm_case(ctx: &Ctx, n: usize, (c, side): (usize, usize)) -> Result<usize> {
    let (device, dtype) = (ctx.device, ctx.dtype);
    use candle_core::Module;
    let x = (Tensor::randn(0f32, 1., (n, c, side, side), device)? + 0.5)?;
    let w = (Tensor::randn(0f32, 0.2, c, device)? + 1.0)?;
    let bias = Tensor::randn(0f32, 0.2, c, device)?;
    let plain_of = |x: &Tensor, w: &Tensor, b: &Tensor| -> Result<Tensor> {
        let gn = candle_nn::GroupNorm::new(w.clone(), b.clone(), c, 32, 1e-5)?;
        Ok(gn.forward(x)?.silu()?)
    };
    let reference = plain_of(&x, &w, &bias)?;
    let (xl, wl, bl) = (x.to_dtype(dtype)?, w.to_dtype(dtype)?, bias.to_dtype(dtype)?);
    let vb = var_builder(vec![("weight", wl.clone()), ("bias", bl.clone())], dtype, device);
    let gn = shoal_diffusion::nn::group_norm(32, c, 1e-5, vb.clone())?;
    let bytes = 2.0 * x.elem_count() as f64 * dtype.size_in_bytes() as f64;
    let shape = format!("{n}×{c}×{side}²");
    let fails = compare(
        ctx,
        Peer::nchw("group_norm_silu", &[n, c, side]),
        "group_norm+silu",
        &shape,
        bytes,
        true,
        &reference,
        &mut || plain_of(&xl, &wl, &bl),
        &mut || Ok(gn.forward_silu(&xl)?),
    )?;
    let nhwc = shoal_diffusion::nn::Layout::Nhwc;
    let gn = shoal_diffusion::nn::group_norm_in(32, c, 1e-5, vb, nhwc)?;
    let xn = nhwc.from_nchw(&xl)?;
    let fails = fails + in_place_norm(&xn, &wl, &bl, &shape)?;
    let fails = fails
        + compare(
            ctx,
            Peer::new("group_norm_silu", &[n, c, side]),
            "group_norm+silu nhwc",
            &shape,
            bytes,
            true,
            &reference,
            &mut || plain_of(&xl, &wl, &bl),
            &mut || Ok(gn.forward_silu(&xn)?.permute((0, 3, 1, 2))?),
        )?;
    // The channels-last form the models do not take at this shape (one launch or three,
    // by `group_norm_one_pass`), set apart.
    #[cfg(feature = "fused")]
    let fails = {
        let one = shoal_diffusion::nn::group_norm_one_pass(c, side * side, 32);
        let name = if one {
            "group_norm+silu nhwc three launches"
        } else {
            "group_norm+silu nhwc one pass"
        };
        let other = if one {
            shoal_kernels::fused::group_norm_nhwc
        } else {
            shoal_kernels::fused::group_norm_nhwc_one_pass
        };
        fails
            + compare(
                ctx,
                Peer::run_if("group_norm_silu", &[n, c, side], false),
                name,
                &shape,
                bytes,
                true,
                &reference,
                &mut || plain_of(&xl, &wl, &bl),
                &mut || Ok(other(&xn, &wl, &bl, 32, 1e-5, true)?.permute((0, 3, 1, 2))?),
            )?
    };
    Ok(fails)
}

/// The channels-last GroupNorm + SiLU written over its input against the same
/// kernels writing a new tensor: the same bits, or a failure (a row of its own).
fn in_place_norm(xn: &Tensor, w: &Tensor, b: &Tensor, shape: &str) -> Result<usize> {
    #[cfg(feature = "fused")]
    {
        use shoal_kernels::fused::{group_norm_nhwc, group_norm_nhwc_};
        let (out, inplace) = match group_norm_nhwc(xn, w, b, 32, 1e-5, true) {
            Ok(out) => {
                let y = xn.copy()?;
                group_norm_nhwc_(&y, w, b, 32, 1e-5, true)?;
                (out, y)
            }
            // A shape the kernel does not take (its row above says it fell back).
            Err(shoal_kernels::Error::Unsupported { .. }) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let same = (out.to_dtype(DType::F32)? - inplace.to_dtype(DType::F32)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?
            == 0.0;
        println!(
            "| group_norm+silu nhwc in place | {shape} | same bits as writing a new tensor: {} | | | | | | | {} |",
            if same { "yes" } else { "no" },
            if same { "PASS" } else { "FAIL" }
        );
        return Ok(usize::from(!same));
    }
    #[allow(unreachable_code, reason = "the return above exists only with feature fused")]
    {
        let _ = (xn, w, b, shape);
        Ok(0)
    }
}

/// The channels-last 2× upsample and skip concatenation against candle's copies
/// (exact: both only move values).
fn copy_case(ctx: &Ctx, n: usize, (side, c, c2): (usize, usize, usize)) -> Result<usize> {
    let (device, dtype) = (ctx.device, ctx.dtype);
    use shoal_diffusion::nn::{Kernels, Layout, cat_channels, upsample_nearest};
    let x = Tensor::randn(0f32, 1., (n, side, side, c), device)?;
    let s = Tensor::randn(0f32, 1., (n, side, side, c2), device)?;
    let (xl, sl) = (x.to_dtype(dtype)?, s.to_dtype(dtype)?);
    let nhwc = Layout::Nhwc;
    let up =
        |x: &Tensor, k: Kernels| -> Result<Tensor> { Ok(upsample_nearest(x, 2 * side, 2 * side, nhwc, k)?) };
    let bytes = 5.0 * x.elem_count() as f64 * dtype.size_in_bytes() as f64;
    let fails = compare(
        ctx,
        Peer::new("upsample2x", &[n, side, c]),
        "upsample2x nhwc copies",
        &format!("{n}×{side}²×{c}"),
        bytes,
        true,
        &up(&x, Kernels::Plain)?,
        &mut || up(&xl, Kernels::Plain),
        &mut || up(&xl, Kernels::Fast),
    )?;
    let cat = |a: &Tensor, b: &Tensor, k: Kernels| -> Result<Tensor> { Ok(cat_channels(a, b, nhwc, k)?) };
    let bytes = 2.0 * (x.elem_count() + s.elem_count()) as f64 * dtype.size_in_bytes() as f64;
    Ok(fails
        + compare(
            ctx,
            Peer::new("cat_channels", &[n, side, c, c2]),
            "skip concat nhwc copies",
            &format!("{n}×{side}²×({c}+{c2})"),
            bytes,
            true,
            &cat(&x, &s, Kernels::Plain)?,
            &mut || cat(&xl, &sl, Kernels::Plain),
            &mut || cat(&xl, &sl, Kernels::Fast),
        )?)
}

/// LayerNorm alone, and with the residual add before it (both outputs checked).
fn layer_norm_case(ctx: &Ctx, n: usize, (tokens, dim): (usize, usize)) -> Result<usize> {
    let (device, dtype) = (ctx.device, ctx.dtype);
    use candle_core::Module;
    let a = (Tensor::randn(0f32, 1., (n, tokens, dim), device)? + 0.5)?;
    let r = Tensor::randn(0f32, 1., (n, tokens, dim), device)?;
    let w = (Tensor::randn(0f32, 0.2, dim, device)? + 1.0)?;
    let bias = Tensor::randn(0f32, 0.2, dim, device)?;
    let plain_of = |x: &Tensor, w: &Tensor, b: &Tensor| -> Result<Tensor> {
        Ok(candle_nn::LayerNorm::new(w.clone(), b.clone(), 1e-5).forward(x)?)
    };
    let (al, rl, wl, bl) = (
        a.to_dtype(dtype)?,
        r.to_dtype(dtype)?,
        w.to_dtype(dtype)?,
        bias.to_dtype(dtype)?,
    );
    let vb = var_builder(vec![("weight", wl.clone()), ("bias", bl.clone())], dtype, device);
    let ln = shoal_diffusion::nn::layer_norm(dim, 1e-5, vb)?;
    let shape = format!("{n}×{tokens}×{dim}");
    let el = (n * tokens * dim) as f64 * dtype.size_in_bytes() as f64;
    let reference = plain_of(&a, &w, &bias)?;
    let fails = compare(
        ctx,
        Peer::new("layer_norm", &[n, tokens, dim]),
        "layer_norm",
        &shape,
        2.0 * el,
        true,
        &reference,
        &mut || plain_of(&al, &wl, &bl),
        &mut || Ok(ln.forward(&al)?),
    )?;
    // The sum the fused kernel also returns is checked apart (it must round like a
    // separate add), so that the timed calls are the op alone, as in PyTorch's row.
    let sum = (&a + &r)?;
    let (s_fast, _) = ln.forward_add(&al, &rl)?;
    let (s_rel, _) = errors(&s_fast, &(&al + &rl)?)?;
    let sum_fail = s_rel > bound(dtype, 0.0);
    if sum_fail {
        println!("| add + layer_norm (its sum) | {shape} | | | | | | {s_rel:.1e} | | FAIL |");
    }
    let reference = plain_of(&sum, &w, &bias)?;
    Ok(fails
        + usize::from(sum_fail)
        + compare(
            ctx,
            Peer::new("add_layer_norm", &[n, tokens, dim]),
            "add + layer_norm",
            &shape,
            4.0 * el,
            true,
            &reference,
            &mut || plain_of(&(&al + &rl)?, &wl, &bl),
            &mut || Ok(ln.forward_add(&al, &rl)?.1),
        )?)
}

fn linear_case(ctx: &Ctx, n: usize, l: &Lin) -> Result<usize> {
    let (device, dtype) = (ctx.device, ctx.dtype);
    use candle_core::Module;
    let &Lin(name, tokens, cin, cout, after) = l;
    let geglu = after == After::Geglu;
    let x = Tensor::randn(0f32, 1., (n, tokens, cin), device)?;
    let w = (Tensor::randn(0f32, 1., (cout, cin), device)? / (cin as f64).sqrt())?;
    let bias = Tensor::randn(0f32, 1., cout, device)?;
    let plain_of = |x: &Tensor, w: &Tensor, b: &Tensor| -> Result<Tensor> {
        let h = candle_nn::Linear::new(w.clone(), Some(b.clone())).forward(x)?;
        if !geglu {
            return Ok(h);
        }
        let half = cout / 2;
        Ok((h.narrow(2, 0, half)? * h.narrow(2, half, half)?.gelu_erf()?)?)
    };
    let reference = plain_of(&x, &w, &bias)?;
    let (xl, wl, bl) = (x.to_dtype(dtype)?, w.to_dtype(dtype)?, bias.to_dtype(dtype)?);
    let vb = var_builder(vec![("weight", wl.clone()), ("bias", bl.clone())], dtype, device);
    let lin = shoal_diffusion::nn::linear(cin, cout, vb.clone())?;
    let ff_in = shoal_diffusion::nn::geglu(cin, cout / 2, vb)?;
    let flops = 2.0 * (n * tokens * cin * cout) as f64;
    let mut fails = 0;
    if !geglu {
        // With the residual add after it (the feed-forward output): both sides copy the
        // residual first, since the fast path accumulates into it.
        let r = Tensor::randn(0f32, 1., (n, tokens, cout), device)?;
        let rl = r.to_dtype(dtype)?;
        let reference = (plain_of(&x, &w, &bias)? + &r)?;
        fails += compare(
            ctx,
            Peer::new("linear_res", &[n, tokens, cin, cout]),
            &format!("{name} + residual"),
            &format!("{n}×{tokens} × {cin} → {cout}"),
            flops,
            false,
            &reference,
            &mut || Ok((plain_of(&xl, &wl, &bl)? + rl.copy()?)?),
            &mut || Ok(lin.forward_add(&xl, rl.copy()?)?),
        )?;
    }
    Ok(fails
        + compare(
            ctx,
            Peer::run_if(
                if geglu { "linear_geglu" } else { "linear" },
                &[n, tokens, cin, cout],
                after != After::Residual,
            ),
            name,
            &format!("{n}×{tokens} × {cin} → {cout}"),
            flops,
            false,
            &reference,
            &mut || plain_of(&xl, &wl, &bl),
            &mut || {
                Ok(if geglu {
                    ff_in.forward(&xl)?
                } else {
                    lin.forward(&xl)?
                })
            },
        )?)
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
