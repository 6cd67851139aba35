//! accelerate's `inference.prepare_pippy`, for GPT-2: cut the model into one
//! stage per process, then call it with any batch; the output comes back on
//! the last process, or on every process with `gather_output`.
//!
//! ```no_run
//! use shoal::inference::{PippyOptions, prepare_pippy};
//! let state = shoal::DistributedState::new()?;
//! let model = prepare_pippy(&state, "gpt2-cls".as_ref(), &PippyOptions::default())?;
//! let ids = candle_core::Tensor::zeros((2, 1024), candle_core::DType::I64, &model.device())?;
//! if let Some(logits) = model.call(&ids)? {
//!     println!("{logits}");
//! }
//! # Ok::<(), shoal::pipe::Error>(())
//! ```

use std::ops::Range;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use shoal_dist::{Backend, DistributedState, GroupOptions, ProcessGroup};
use shoal_lm::{Carry, Gpt2, Gpt2Config};
use shoal_pipe::{BlockCost, Error, Named, PipeOutput, Result, SplitPoints};

/// How to cut and call the model.
#[derive(Debug, Clone)]
pub struct PippyOptions {
    /// `SplitPoints::Auto` or the first block of every stage after the first.
    pub split_points: SplitPoints,
    /// Micro-batches per call (clamped to the batch).
    pub num_chunks: usize,
    /// Every process gets the output.
    pub gather_output: bool,
    /// The batch and length the automatic split counts FLOPs for.
    pub example_shape: (usize, usize),
    /// Compute dtype.
    pub dtype: DType,
    /// The device (`None`: this process's, as `DistributedState::device` picks).
    pub device: Option<Device>,
    /// Test hook: this process stops itself (SIGSTOP) before its stage first runs.
    #[doc(hidden)]
    pub stop_in_stage: bool,
    /// Test hook: this process kills itself (SIGKILL) before its stage first runs.
    #[doc(hidden)]
    pub kill_in_stage: bool,
}

impl Default for PippyOptions {
    fn default() -> Self {
        PippyOptions {
            split_points: SplitPoints::Auto,
            num_chunks: 1,
            gather_output: false,
            example_shape: (2, 1024),
            dtype: DType::F32,
            device: None,
            stop_in_stage: false,
            kill_in_stage: false,
        }
    }
}

/// A GPT-2 stage on this process, ready to be called.
#[derive(Debug)]
pub struct PippyModel {
    model: Gpt2,
    stages: Vec<Range<usize>>,
    names: Vec<String>,
    rank: usize,
    pg: Option<ProcessGroup>,
    device: Device,
    opts: PippyOptions,
}

fn lm(e: shoal_lm::Error) -> Error {
    match e {
        shoal_lm::Error::Candle(c) => Error::Candle(c),
        other => Error::Plan(other.to_string()),
    }
}

/// Plans the stages of the GPT-2 in `dir` over `state`'s processes (one stage
/// each), joins the group and loads this process's blocks only.
pub fn prepare_pippy(state: &DistributedState, dir: &Path, opts: &PippyOptions) -> Result<PippyModel> {
    let config = Gpt2Config::read(&dir.join("config.json")).map_err(lm)?;
    let (rank, world) = (state.process_index(), state.num_processes());
    let names = Gpt2::block_names(&config);
    let params = Gpt2::block_params(&config);
    let flops = Gpt2::block_flops(&config, opts.example_shape.0, opts.example_shape.1);
    let blocks: Vec<BlockCost> = names
        .iter()
        .zip(params.iter().zip(&flops))
        .map(|(n, (&p, &f))| BlockCost {
            name: n.clone(),
            params: p,
            flops: f,
        })
        .collect();
    let stages = shoal_pipe::plan_stages(&blocks, &opts.split_points, world)?;
    if opts.num_chunks == 0 {
        return Err(Error::Plan("--num-chunks must be at least 1".into()));
    }
    let device = match &opts.device {
        Some(d) => d.clone(),
        None => state.device()?,
    };
    let pg = if world > 1 {
        Some(state.process_group(Backend::Cpu, GroupOptions::from_env(&std::env::vars().collect())?)?)
    } else {
        None
    };
    let model = Gpt2::load(dir, &device, opts.dtype, stages[rank].clone()).map_err(lm)?;
    Ok(PippyModel {
        model,
        stages,
        names,
        rank,
        pg,
        device,
        opts: opts.clone(),
    })
}

impl PippyModel {
    /// The stages as block ranges, in rank order.
    pub fn stages(&self) -> &[Range<usize>] {
        &self.stages
    }

    /// The block names.
    pub fn block_names(&self) -> &[String] {
        &self.names
    }

    /// This process's device.
    pub fn device(&self) -> Device {
        self.device.clone()
    }

    /// The model's config.
    pub fn config(&self) -> &Gpt2Config {
        self.model.config()
    }

    /// The rank that holds the output (the last stage's).
    pub fn last_rank(&self) -> usize {
        self.stages.len() - 1
    }

    /// Runs token ids `(b, L)` (read on rank 0) through the pipeline in
    /// micro-batches; the logits on the last rank (every rank with
    /// `gather_output`), `None` elsewhere. Every rank must call it.
    pub fn call(&self, input_ids: &Tensor) -> Result<Option<Tensor>> {
        self.call_chunks(input_ids, self.opts.num_chunks)
    }

    /// [`PippyModel::call`] with `num_chunks` micro-batches instead of the prepared count.
    pub fn call_chunks(&self, input_ids: &Tensor, num_chunks: usize) -> Result<Option<Tensor>> {
        let b = input_ids.dim(0)?;
        let chunks = shoal_pipe::micro_batches(b, num_chunks)?;
        let mine = self.stages[self.rank].clone();
        if let Some(pg) = &self.pg {
            pg.barrier()?;
        }
        let mut input = |k: usize| -> Result<Named> {
            let r = &chunks[k];
            let ids = input_ids.narrow(0, r.start, r.len())?;
            self.model.start(&ids).map_err(lm)?;
            Ok(vec![("ids".into(), ids.to_dtype(DType::I64)?)])
        };
        let mut stage = |_k: usize, carry: Named| -> Result<Named> {
            let (mut ids, mut x) = (None, None);
            for (name, t) in carry {
                match name.as_str() {
                    "ids" => ids = Some(t),
                    "x" => x = Some(t),
                    other => return Err(Error::Peer(format!("a carry with an unexpected {other:?}"))),
                }
            }
            let ids = ids.ok_or_else(|| Error::Peer("a carry without token ids".into()))?;
            if self.opts.stop_in_stage || self.opts.kill_in_stage {
                let (what, sig) = if self.opts.kill_in_stage {
                    ("a kill", libc::SIGKILL)
                } else {
                    ("a stop", libc::SIGSTOP)
                };
                tracing::warn!("pippy: rank {}: injecting {what} in its stage", self.rank);
                // SAFETY: raising a signal on our own process.
                unsafe { libc::raise(sig) };
            }
            let out = self.model.run(mine.clone(), Carry { ids, x }).map_err(lm)?;
            let mut named = vec![("ids".to_string(), out.ids)];
            if let Some(x) = out.x {
                named.push(("x".into(), x));
            }
            Ok(named)
        };
        let out = shoal_pipe::run_stage_loop(
            self.pg.as_ref(),
            self.rank,
            self.stages.len(),
            chunks.len(),
            &mut input,
            &mut stage,
            self.opts.gather_output,
            &self.device,
        )?;
        self.device.synchronize()?;
        match out {
            PipeOutput::NotHere { .. } => Ok(None),
            PipeOutput::Here(per) => {
                let xs = per
                    .iter()
                    .map(|o| {
                        o.iter()
                            .find(|(n, _)| n == "x")
                            .map(|(_, t)| t.clone())
                            .ok_or_else(|| Error::Peer("the last stage's output has no logits".into()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Some(Tensor::cat(&xs, 0)?))
            }
        }
    }
}
