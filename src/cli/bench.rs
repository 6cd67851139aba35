//! `shoal bench`: benchmarks that print tables (never timed tests).
//!
//! - `bench sd`: the Stable Diffusion pipeline on one device: model load time,
//!   time to first image, then per batch size s/batch, img/s and it/s after a
//!   warm-up, as `../shared/gpu/peer/sd_bench.py` measures diffusers.
//! - `bench comm`: all-reduce and all-gather bus bandwidth over sizes, under a
//!   launcher (nccl-tests' definitions: busbw = algbw × 2(n−1)/n for
//!   all-reduce, × (n−1)/n for all-gather).
//! - `bench ops`: per-op table, plain against fast kernels (`bench_ops/`).
//! - `bench vae`: the split VAE decode against the whole decode (`bench_vae.rs`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, ensure};
use candle_core::{DType, Device, Tensor};
use clap::{Args, Subcommand};
use shoal_diffusion::{Item, LoadOptions, Params, Pipeline};

use super::UsageError;
use super::args::{parse_device, parse_dtype};

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// The text-to-image pipeline on one device.
    Sd(SdBench),
    /// Collective bandwidth (run it under `shoal launch`).
    Comm(CommBench),
    /// Every SD conv, attention, norm and linear shape on the plain and the fast kernels, checked
    /// against an f32 reference (GPU).
    Ops(super::bench_ops::OpsBench),
    /// The split VAE decode (one band of rows per process, run it under
    /// `shoal launch`) against the whole decode.
    Vae(super::bench_vae::VaeBench),
}

#[derive(Debug, Args)]
pub struct SdBench {
    /// A diffusers model folder (e.g. from `shoal make-model --preset sd15 --dtype f16`).
    #[arg(long)]
    model: PathBuf,
    /// Denoising steps per image.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Batch sizes to time, comma-separated.
    #[arg(long, default_value = "1,4,8")]
    batches: String,
    /// Image height in pixels.
    #[arg(long, default_value_t = 512)]
    height: usize,
    /// Image width in pixels.
    #[arg(long, default_value_t = 512)]
    width: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 7.5)]
    guidance: f64,
    /// Data type (f16, bf16 or f32).
    #[arg(long, default_value = "f16")]
    dtype: String,
    /// Timed repetitions per batch size.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Time a device map (balanced, sequential, or unet=1,...) instead of one device.
    #[arg(long)]
    device_map: Option<String>,
    /// Limits for --device-map.
    #[arg(long)]
    max_memory: Option<String>,
    /// Time CPU offload (`model` or `sequential`).
    #[arg(long)]
    offload: Option<String>,
    /// Also time diffusers on the same folder, size, steps, guidance, dtype and reps in
    /// this call, and print one table with the ratios: `diffusers` (eager) or
    /// `diffusers-compiled` (torch.compile on the UNet; its first call holds the
    /// compilation). Runs the embedded scripts/gpu/peer_sd.py with python3 (or
    /// SHOAL_PEER_PYTHON), which needs torch with CUDA and diffusers. GPU only.
    #[arg(long, value_enum)]
    peer: Option<super::bench_peer::Peer>,
}

#[derive(Debug, Args)]
pub struct CommBench {
    /// Smallest message in MiB.
    #[arg(long, default_value_t = 1)]
    min_mib: usize,
    /// Largest message in MiB.
    #[arg(long, default_value_t = 1024)]
    max_mib: usize,
    /// Timed iterations per size.
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Data type of the messages.
    #[arg(long, default_value = "bf16")]
    dtype: String,
}

pub fn run(c: BenchCmd) -> Result<()> {
    match c {
        BenchCmd::Sd(b) => sd(b),
        BenchCmd::Comm(b) => comm(b),
        BenchCmd::Ops(b) => super::bench_ops::run(b),
        BenchCmd::Vae(b) => super::bench_vae::run(b),
    }
}

fn sync(d: &Device) -> Result<()> {
    d.synchronize()?;
    Ok(())
}

fn sd(b: SdBench) -> Result<()> {
    let dtype = parse_dtype(&b.dtype)?;
    let device = parse_device(&b.device)?;
    let batches: Vec<usize> = b
        .batches
        .split(',')
        .map(|x| x.trim().parse().ok().filter(|n| *n > 0))
        .collect::<Option<_>>()
        .ok_or_else(|| UsageError(format!("invalid --batches {:?}: expected e.g. 1,4,8", b.batches)))?;
    ensure!(b.reps > 0, UsageError("--reps must be at least 1".into()));
    if b.peer.is_some() {
        ensure!(
            device.is_cuda(),
            UsageError("--peer times diffusers on the GPU: give --device cuda".into())
        );
        ensure!(
            b.device_map.is_none() && b.max_memory.is_none(),
            UsageError("--peer compares one device or an offload mode, not a device map".into())
        );
    }
    let flags = shoal_engine::placement::PlacementFlags {
        device_map: b.device_map.clone(),
        max_memory: b.max_memory.clone(),
        offload: b.offload.clone(),
    };
    let batch = batches.iter().copied().max().unwrap_or(1);
    let placement = super::plan::placement(&flags, 1, &b.model, &device, dtype, (b.height, b.width, batch))?;
    if let shoal_diffusion::pipeline::Placement::Map(m) = &placement {
        println!("device map: {m:?}");
    }
    let mem = shoal_dist::MemoryPeak::start(std::time::Duration::from_millis(20));
    let t = Instant::now();
    let opts = LoadOptions {
        plan_threads: super::args::plan_threads(|k| std::env::var(k).ok())?,
        cuda_graphs: Some(super::args::cuda_graphs(|k| std::env::var(k).ok())?),
        ..LoadOptions::default()
    };
    let pipe = Pipeline::load_placed(&b.model, placement, dtype, &opts)?;
    sync(&device)?;
    let load_s = t.elapsed().as_secs_f64();
    let params = |steps| Params {
        steps,
        guidance: b.guidance,
        height: b.height,
        width: b.width,
    };
    let items = |n: usize| -> Vec<Item> {
        (0..n)
            .map(|i| Item {
                prompt: "a dog".into(),
                negative_prompt: None,
                seed: i as u64,
                latents: None,
                step_noise: None,
            })
            .collect()
    };
    let t = Instant::now();
    pipe.generate(&items(1), &params(b.steps), &mut |_, _| {})?;
    sync(&device)?;
    let first_s = t.elapsed().as_secs_f64();
    shoal_diffusion::nn::profile::take();
    println!(
        "shoal bench sd: model {}, {:?} on {device:?}, {}×{}, {} steps, guidance {}, scheduler {}",
        b.model.display(),
        dtype,
        b.width,
        b.height,
        b.steps,
        b.guidance,
        pipe.scheduler_class()
    );
    println!("model load: {load_s:.2} s; time to first image (cold, batch 1): {first_s:.2} s");
    println!("| batch | s/batch | img/s | it/s |");
    println!("| --- | --- | --- | --- |");
    let mut timed = Vec::new();
    for &n in &batches {
        pipe.generate(&items(n), &params(2), &mut |_, _| {})?; // warm-up
        sync(&device)?;
        shoal_diffusion::nn::profile::take();
        let t = Instant::now();
        for _ in 0..b.reps {
            pipe.generate(&items(n), &params(b.steps), &mut |_, _| {})?;
        }
        sync(&device)?;
        let dt = t.elapsed().as_secs_f64() / b.reps as f64;
        timed.push((n, dt));
        println!(
            "| {n} | {dt:.3} | {:.3} | {:.2} |",
            n as f64 / dt,
            b.steps as f64 / dt
        );
        profile_table(n, b.reps);
    }
    drop(pipe);
    #[cfg(any(feature = "cudnn", feature = "fused"))]
    for f in shoal_kernels::fallbacks() {
        println!(
            "fell back to the plain path: {} ({} calls): {}",
            f.what, f.calls, f.why
        );
    }
    for line in super::env::kernel_load_report() {
        println!("{line}");
    }
    let peaks: Vec<String> = mem
        .finish()
        .into_iter()
        .filter(|(_, base, peak)| peak > base)
        .map(|(i, base, peak)| format!("gpu{i} {:.2} GiB", (peak - base) as f64 / (1u64 << 30) as f64))
        .collect();
    if !peaks.is_empty() {
        println!(
            "peak GPU memory over the start (driver view, contexts and caches included): {}",
            peaks.join(", ")
        );
    }
    if let Some(peer) = b.peer {
        let same = super::bench_peer::Same {
            model: &b.model,
            steps: b.steps,
            batches: &batches,
            height: b.height,
            width: b.width,
            guidance: b.guidance,
            dtype: match dtype {
                DType::BF16 => "bf16",
                DType::F32 => "f32",
                _ => "f16",
            },
            reps: b.reps,
            offload: b.offload.as_deref(),
        };
        let run = super::bench_peer::run(peer, &same)?;
        let name = match peer {
            super::bench_peer::Peer::Diffusers => "diffusers",
            super::bench_peer::Peer::DiffusersCompiled => "compiled",
        };
        println!("{}", run.header);
        println!("side by side, this call:");
        for line in super::bench_peer::table(&timed, &run, name)? {
            println!("{line}");
        }
        if let Some(p) = run.peak_gib {
            println!("{name} peak GPU memory over its start (total - free, polled): {p:.2} GiB");
        }
    }
    Ok(())
}

/// With `SHOAL_PROFILE=1`: where the timed batches went, per kind of op, each
/// scope's inner ones under it and what ran between them ("other").
fn profile_table(batch: usize, reps: usize) {
    let rows = shoal_diffusion::nn::profile::take();
    if rows.is_empty() {
        return;
    }
    println!("profile, batch {batch}, per batch (SHOAL_PROFILE: device time between events around each op):");
    println!("| op | ms per batch | calls per batch |");
    println!("| --- | --- | --- |");
    let per = |s: f64| s * 1e3 / reps as f64;
    print_profile_level(&rows, None, 0, &per, reps as u64);
}

fn print_profile_level(
    rows: &[shoal_diffusion::nn::profile::Row],
    outer: Option<&'static str>,
    depth: usize,
    per: &dyn Fn(f64) -> f64,
    reps: u64,
) {
    let indent = "· ".repeat(depth);
    for r in rows.iter().filter(|r| r.outer == outer) {
        println!(
            "| {indent}{} | {:.1} | {} |",
            r.name,
            per(r.seconds),
            r.calls / reps
        );
        let inner: Vec<_> = rows.iter().filter(|c| c.outer == Some(r.name)).collect();
        if !inner.is_empty() {
            print_profile_level(rows, Some(r.name), depth + 1, per, reps);
            let between = r.seconds - inner.iter().map(|c| c.seconds).sum::<f64>();
            println!(
                "| {indent}· other (in {}, between the ops above) | {:.1} | |",
                r.name,
                per(between)
            );
        }
    }
}

fn comm(b: CommBench) -> Result<()> {
    let dtype = parse_dtype(&b.dtype)?;
    let state = shoal_dist::DistributedState::new()?;
    let device = state.device()?;
    let backend = if device.is_cuda() {
        shoal_dist::Backend::Nccl
    } else {
        shoal_dist::Backend::Cpu
    };
    let pg = state.process_group(
        backend,
        shoal_dist::GroupOptions::from_env(&std::env::vars().collect())?,
    )?;
    let n = pg.world_size() as f64;
    let elem = dtype.size_in_bytes();
    if state.is_main_process() {
        println!(
            "shoal bench comm: {} ranks, {:?}, backend {:?}, {} iterations per size",
            pg.world_size(),
            dtype,
            backend,
            b.iters
        );
        println!(
            "| size | all-reduce time | all-reduce busbw GB/s | all-gather time | all-gather busbw GB/s |"
        );
        println!("| --- | --- | --- | --- | --- |");
    }
    let mut mib = b.min_mib.max(1);
    while mib <= b.max_mib {
        let bytes = mib << 20;
        let t = Tensor::ones(bytes / elem, dtype, &device)?;
        pg.all_reduce(&t, shoal_dist::ReduceOp::Sum)?; // warm-up
        pg.barrier()?;
        let start = Instant::now();
        for _ in 0..b.iters {
            pg.all_reduce(&t, shoal_dist::ReduceOp::Sum)?;
        }
        sync(&device)?;
        let ar = start.elapsed().as_secs_f64() / b.iters as f64;
        // All-gather moves `bytes` in total: each rank sends bytes / n.
        let part = Tensor::ones((bytes / elem) / pg.world_size(), dtype, &device)?;
        pg.all_gather(&part)?;
        pg.barrier()?;
        let start = Instant::now();
        for _ in 0..b.iters {
            pg.all_gather(&part)?;
        }
        sync(&device)?;
        let ag = start.elapsed().as_secs_f64() / b.iters as f64;
        if state.is_main_process() {
            let gb = bytes as f64 / 1e9;
            println!(
                "| {mib} MiB | {:.3} ms | {:.1} | {:.3} ms | {:.1} |",
                ar * 1e3,
                gb / ar * 2.0 * (n - 1.0) / n,
                ag * 1e3,
                gb / ag * (n - 1.0) / n
            );
        }
        mib *= 4;
    }
    let check = pg.all_reduce(&Tensor::ones(4, DType::F32, &device)?, shoal_dist::ReduceOp::Sum)?;
    let v: Vec<f32> = check.to_device(&Device::Cpu)?.to_vec1()?;
    ensure!(v == vec![n as f32; 4], "all-reduce check gave {v:?}");
    Ok(())
}
