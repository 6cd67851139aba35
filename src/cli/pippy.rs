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
use shoal_lm::{Carry, Gpt2, Gpt2Config};
use shoal_pipe::{BlockCost, Named, PipeOutput, SplitPoints};

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
        "auto" => state.device()?,
        d => parse_device(d)?,
    };
    // The plan: one stage per process, costs counted for the first batch size.
    let names = Gpt2::block_names(&config);
    let params = Gpt2::block_params(&config);
    let flops = Gpt2::block_flops(&config, batch_list[0], seq_len);
    let costs: Vec<BlockCost> = names
        .iter()
        .zip(params.iter().zip(&flops))
        .map(|(n, (&p, &f))| BlockCost {
            name: n.clone(),
            params: p,
            flops: f,
        })
        .collect();
    let stages =
        shoal_pipe::plan_stages(&costs, &SplitPoints::parse(&c.split_points), world).map_err(pipe_err)?;
    let mine = stages[rank].clone();
    let pg = if world > 1 {
        Some(state.process_group(
            shoal_dist::Backend::Cpu,
            shoal_dist::GroupOptions::from_env(&std::env::vars().collect())?,
        )?)
    } else {
        None
    };
    let t_load = Instant::now();
    let model = Gpt2::load(&c.model, &device, dtype, mine.clone()).map_err(lm_err)?;
    let load_s = t_load.elapsed().as_secs_f64();
    let last = world - 1;
    if rank == last {
        let desc: Vec<String> = stages
            .iter()
            .enumerate()
            .map(|(s, r)| {
                let p: u64 = params[r.clone()].iter().sum();
                let f: f64 = flops[r.clone()].iter().sum();
                format!(
                    "stage {s} (rank {s}): {} … {} ({} blocks, {:.1} M parameters, {:.2} GFLOP at batch {})",
                    names[r.start],
                    names[r.end - 1],
                    r.len(),
                    p as f64 / 1e6,
                    f / 1e9,
                    batch_list[0]
                )
            })
            .collect();
        println!(
            "shoal pippy: {} processes, {dtype:?} on {device:?}, sequence length {seq_len}",
            world
        );
        for d in desc {
            println!("  {d}");
        }
        println!("  stage {rank} loaded its blocks in {load_s:.2} s");
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
                    .map(|_| rng.random_range(0..config.vocab_size as i64))
                    .collect();
                Tensor::from_vec(v, (b, seq_len), &device)?
            }
        };
        for &m in &chunk_list {
            let chunks = shoal_pipe::micro_batches(b, m).map_err(pipe_err)?;
            let call = || -> Result<PipeOutput> {
                if let Some(pg) = &pg {
                    pg.barrier()?;
                }
                let mut input = |k: usize| -> shoal_pipe::Result<Named> {
                    let r = &chunks[k];
                    let ids = ids.narrow(0, r.start, r.len())?;
                    model
                        .start(&ids)
                        .map_err(|e| shoal_pipe::Error::Plan(e.to_string()))?;
                    Ok(vec![("ids".into(), ids)])
                };
                let mut stage = |_k: usize, carry: Named| -> shoal_pipe::Result<Named> {
                    let mut ids = None;
                    let mut x = None;
                    for (name, t) in carry {
                        match name.as_str() {
                            "ids" => ids = Some(t),
                            "x" => x = Some(t),
                            other => {
                                return Err(shoal_pipe::Error::Peer(format!(
                                    "an unexpected carry {other:?}"
                                )));
                            }
                        }
                    }
                    let ids = ids.ok_or_else(|| shoal_pipe::Error::Peer("a carry without ids".into()))?;
                    let out = model
                        .run(mine.clone(), Carry { ids, x })
                        .map_err(|e| shoal_pipe::Error::Peer(e.to_string()))?;
                    let mut named = vec![("ids".to_string(), out.ids)];
                    if let Some(x) = out.x {
                        named.push(("x".into(), x));
                    }
                    Ok(named)
                };
                let out = shoal_pipe::run_stage_loop(
                    pg.as_ref(),
                    rank,
                    world,
                    chunks.len(),
                    &mut input,
                    &mut stage,
                    c.gather_output,
                    &device,
                )
                .map_err(pipe_err)?;
                device.synchronize()?;
                Ok(out)
            };
            let t0 = Instant::now();
            let first = call()?;
            let first_s = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            let mut out = first;
            for _ in 0..c.reps {
                out = call()?;
            }
            let avg_s = t1.elapsed().as_secs_f64() / c.reps as f64;
            match out {
                PipeOutput::Here(per) => {
                    let xs: Vec<Tensor> = per
                        .iter()
                        .map(|o| {
                            o.iter()
                                .find(|(n, _)| n == "x")
                                .map(|(_, t)| t.clone())
                                .ok_or_else(|| anyhow::anyhow!("the last stage's output has no logits"))
                        })
                        .collect::<Result<_>>()?;
                    let logits = Tensor::cat(&xs, 0)?
                        .to_dtype(DType::F32)?
                        .to_device(&Device::Cpu)?;
                    if rank == last {
                        let used = if chunks.len() == m {
                            m.to_string()
                        } else {
                            format!("{m} (clamped to {})", chunks.len())
                        };
                        println!("| {b} | {used} | {first_s:.4} | {avg_s:.4} |");
                    }
                    if let Some(base) = &c.out {
                        let tag = several.then(|| format!("-b{b}-m{m}"));
                        let r = (c.gather_output && world > 1).then_some(rank);
                        if rank == last || r.is_some() {
                            logits.write_npy(out_path(base, tag, r))?;
                        }
                    }
                }
                PipeOutput::NotHere { last_rank } => {
                    if rank == 0 && b == batch_list[0] && m == chunk_list[0] {
                        eprintln!(
                            "pippy: rank {rank}: the output is on rank {last_rank} only (pass --gather-output for every rank)"
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
