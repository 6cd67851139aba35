//! `shoal pippy`: the seed's pipeline-parallel example (accelerate's
//! `prepare_pippy` on GPT-2), one stage per process under `shoal launch`.
//!
//! Each process loads only its stage's blocks, the batch is cut into
//! micro-batches (any batch size, any count; no padding), the last stage holds
//! the logits (or every rank, with `--gather-output`). Prints the seed's
//! table: the first call, then the average of `--reps` calls.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use rand::{Rng, SeedableRng};
use shoal::inference::{PippyOptions, prepare_pippy};
use shoal_lm::{Gpt2, Gpt2Config};
use shoal_pipe::SplitPoints;

use super::UsageError;
use super::args::{parse_device, parse_dtype};

#[derive(Debug, Args)]
pub struct PippyCmd {
    /// A GPT-2 folder as transformers saves it (`shoal make-model --preset gpt2-cls`).
    #[arg(long)]
    model: PathBuf,
    /// `auto` (balance the counted FLOPs) or the first block of each stage after
    /// the first, comma-separated (e.g. `transformer.h.6`).
    #[arg(long, default_value = "auto")]
    split_points: String,
    /// Micro-batches per call (above the batch size: one row each); a comma list
    /// runs each.
    #[arg(long, default_value = "1")]
    num_chunks: String,
    /// Sequences per call; a comma list runs each.
    #[arg(long, default_value = "2")]
    batch_size: String,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 1024)]
    seq_len: usize,
    /// Token ids (int64 .npy, batch × length) instead of random ones.
    #[arg(long)]
    input_ids: Option<PathBuf>,
    /// Seed of the random token ids (the same on every rank).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Every rank gets the logits (accelerate's `gather_output=True`).
    #[arg(long)]
    gather_output: bool,
    /// Write the logits (f32 .npy); with several batch sizes or chunk counts,
    /// `-b{B}-m{M}` goes before the extension; with --gather-output every rank
    /// writes its copy (`.rank{R}` before the extension).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Timed calls after the first.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Compute dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Fault injection for tests: this rank stops (SIGSTOP) inside its stage.
    #[arg(long, hide = true)]
    fault_stop_rank: Option<usize>,
    /// Fault injection for tests: this rank is killed (SIGKILL) inside its stage.
    #[arg(long, hide = true)]
    fault_kill_rank: Option<usize>,
}

fn list(flag: &str, s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|x| x.trim().parse::<usize>().ok().filter(|&v| v > 0))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            UsageError(format!(
                "--{flag} {s:?}: expected positive integers, comma-separated"
            ))
            .into()
        })
}

fn out_path(base: &Path, tag: Option<String>, rank: Option<usize>) -> PathBuf {
    let stem = base.file_stem().and_then(|s| s.to_str()).unwrap_or("logits");
    let ext = base.extension().and_then(|s| s.to_str()).unwrap_or("npy");
    let mut name = stem.to_string();
    if let Some(t) = tag {
        name.push_str(&t);
    }
    if let Some(r) = rank {
        name.push_str(&format!(".rank{r}"));
    }
    base.with_file_name(format!("{name}.{ext}"))
}

fn lm_err(e: shoal_lm::Error) -> anyhow::Error {
    match e {
        shoal_lm::Error::Candle(c) => c.into(),
        other => UsageError(other.to_string()).into(),
    }
}

fn pipe_err(e: shoal_pipe::Error) -> anyhow::Error {
    match e {
        shoal_pipe::Error::Plan(m) => UsageError(m).into(),
        other => other.into(),
    }
}

pub fn run(c: PippyCmd) -> Result<()> {
    let dtype = parse_dtype(&c.dtype)?;
    let chunk_list = list("num-chunks", &c.num_chunks)?;
    let mut batch_list = list("batch-size", &c.batch_size)?;
    if c.reps == 0 {
        bail!(UsageError("--reps must be at least 1".into()));
    }
    let config = Gpt2Config::read(&c.model.join("config.json")).map_err(lm_err)?;
    // The input ids, or their shape.
    let given = match &c.input_ids {
        Some(p) => {
            super::generate::check_npy(p)?;
            let t =
                Tensor::read_npy(p).map_err(|e| UsageError(format!("--input-ids {}: {e}", p.display())))?;
            if t.rank() != 2 || t.dtype() != DType::I64 {
                bail!(UsageError(format!(
                    "--input-ids {}: {:?} {:?}; expected int64 batch × length",
                    p.display(),
                    t.dims(),
                    t.dtype()
                )));
            }
            batch_list = vec![t.dim(0)?];
            Some(t)
        }
        None => None,
    };
    let seq_len = match &given {
        Some(t) => t.dim(1)?,
        None => c.seq_len,
    };
    if seq_len == 0 || seq_len > config.n_positions {
        bail!(UsageError(format!(
            "--seq-len {seq_len}: this GPT-2 reads 1 to {} tokens",
            config.n_positions
        )));
    }
    let state = shoal_dist::DistributedState::new()?;
    let (rank, world) = (state.process_index(), state.num_processes());
    let device = match c.device.as_str() {
        "auto" => None,
        d => Some(parse_device(d)?),
    };
    let opts = PippyOptions {
        device,
        stop_in_stage: c.fault_stop_rank == Some(rank),
        kill_in_stage: c.fault_kill_rank == Some(rank),
        split_points: SplitPoints::parse(&c.split_points),
        num_chunks: chunk_list[0],
        gather_output: c.gather_output,
        example_shape: (batch_list[0], seq_len),
        dtype,
    };
    let t_load = Instant::now();
    let model = prepare_pippy(&state, &c.model, &opts).map_err(pipe_err)?;
    let load_s = t_load.elapsed().as_secs_f64();
    let device = model.device();
    let last = model.last_rank();
    if rank == last {
        let names = model.block_names();
        let params = Gpt2::block_params(model.config());
        let flops = Gpt2::block_flops(model.config(), batch_list[0], seq_len);
        println!("shoal pippy: {world} processes, {dtype:?} on {device:?}, sequence length {seq_len}");
        for (s, r) in model.stages().iter().enumerate() {
            let p: u64 = params[r.clone()].iter().sum();
            let f: f64 = flops[r.clone()].iter().sum();
            println!(
                "  stage {s} (rank {s}): {} … {} ({} blocks, {:.1} M parameters, {:.2} GFLOP at batch {})",
                names[r.start],
                names[r.end - 1],
                r.len(),
                p as f64 / 1e6,
                f / 1e9,
                batch_list[0]
            );
        }
        println!("  stage {rank} joined and loaded its blocks in {load_s:.2} s");
        println!("| batch | chunks | first call s | average of {} s |", c.reps);
        println!("| --- | --- | --- | --- |");
    }
    let several = batch_list.len() * chunk_list.len() > 1;
    for &b in &batch_list {
        let ids = match &given {
            Some(t) => t.to_device(&device)?,
            None => {
                let mut rng =
                    rand_chacha::ChaCha8Rng::seed_from_u64(c.seed ^ (b as u64).wrapping_mul(0x9E37_79B9));
                let v: Vec<i64> = (0..b * seq_len)
                    .map(|_| rng.random_range(0..model.config().vocab_size as i64))
                    .collect();
                Tensor::from_vec(v, (b, seq_len), &device)?
            }
        };
        for &m in &chunk_list {
            let used = m.min(b);
            let t0 = Instant::now();
            let mut out = model.call_chunks(&ids, m).map_err(pipe_err)?;
            let first_s = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            for _ in 0..c.reps {
                out = model.call_chunks(&ids, m).map_err(pipe_err)?;
            }
            let avg_s = t1.elapsed().as_secs_f64() / c.reps as f64;
            match out {
                Some(logits) => {
                    let logits = logits.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
                    if rank == last {
                        let shown = if used == m {
                            m.to_string()
                        } else {
                            format!("{m} (clamped to {used})")
                        };
                        println!("| {b} | {shown} | {first_s:.4} | {avg_s:.4} |");
                    }
                    if let Some(base) = &c.out {
                        let tag = several.then(|| format!("-b{b}-m{m}"));
                        let r = (c.gather_output && world > 1).then_some(rank);
                        if rank == last || r.is_some() {
                            logits.write_npy(out_path(base, tag, r))?;
                        }
                    }
                }
                None => {
                    if rank == 0 && b == batch_list[0] && m == chunk_list[0] {
                        tracing::info!(
                            "pippy: the output is on rank {last} only (pass --gather-output for every rank)"
                        );
                    }
                }
            }
        }
    }
    if rank == last {
        println!(
            "output: {}",
            if c.gather_output || world == 1 {
                "on every rank".to_string()
            } else {
                format!("on rank {last} (the last stage)")
            }
        );
    }
    Ok(())
}
