//! `shoal generate`: text to image, one process or many.
//!
//! Flag parsing, then one call: the work items (prompts × images) and the
//! loaded pipeline go to `shoal_engine::run_job`, which splits the blocks
//! between the processes (`--schedule static`) or hands them out from a
//! counter in the store (`--schedule dynamic`), writes the images, and keeps
//! `manifest.jsonl` on rank 0. `--resume` finishes a job.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::{DType, Tensor};
use clap::{Args, ValueEnum};
use shoal_diffusion::{LoadOptions, ModelInfo, Params, Pipeline};
use shoal_dist::{Backend, DistributedState, GroupOptions};
use shoal_engine::placement::PlacementFlags;
use shoal_engine::{JobConfig, Ranks};
use shoal_jobs::{Defaults, Entry, GenParams, JobSpec};

use super::UsageError;
use super::args::{parse_device, parse_dtype};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Schedule {
    /// Blocks split up front, `split_between_processes` style.
    Static,
    /// Blocks claimed one at a time from a counter on rank 0's store.
    Dynamic,
}

#[derive(Debug, Args)]
pub struct GenerateCmd {
    /// Prompts (positional), in addition to any --prompt.
    #[arg(value_name = "PROMPT")]
    positional: Vec<String>,
    /// A prompt; repeat for several.
    #[arg(long = "prompt", short = 'p')]
    prompts: Vec<String>,
    /// A file of prompts: one per line, or JSONL with per-item fields
    /// (prompt, negative_prompt, seed, steps, guidance, height, width, images).
    #[arg(long)]
    prompts_file: Option<PathBuf>,
    /// A diffusers model folder; without it, shoal's embedded tiny model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The negative prompt, for items that do not give one.
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Denoising steps.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Classifier-free guidance scale (guidance runs when above 1).
    #[arg(long, default_value_t = 7.5)]
    guidance: f64,
    /// Image height (default: the model's).
    #[arg(long)]
    height: Option<usize>,
    /// Image width (default: the model's).
    #[arg(long)]
    width: Option<usize>,
    /// Base seed; item i's seed derives from (seed, i) unless the item gives one.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Scheduler: pndm, ddim, euler, euler-a, dpm++2m (default: the model's).
    #[arg(long)]
    scheduler: Option<String>,
    /// Compute dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Images per prompt.
    #[arg(long, default_value_t = 1)]
    images_per_prompt: usize,
    /// Items run together in one batch.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Initial latents (.npy, shape (c, h/8, w/8) or (n, c, h/8, w/8)), diffusers' `latents=`.
    #[arg(long)]
    latents: Option<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "outputs")]
    out: PathBuf,
    /// Finish the job in --out: skip verified images, make the rest.
    #[arg(long)]
    resume: bool,
    /// How items are shared between processes.
    #[arg(long, value_enum, default_value_t = Schedule::Static)]
    schedule: Schedule,
    /// One image on two processes: ranks pair up (0+1, 2+3, …), one computes
    /// the unconditional half of guidance, the other the conditional half, and
    /// they exchange predictions every step (needs an even process count and
    /// guidance above 1). Pairs share the items like processes do.
    #[arg(long)]
    cfg_parallel: bool,
    /// Ranks pair up (0+1, 2+3, …) and split the VAE decode into two bands of
    /// rows (GroupNorm statistics and edge rows exchanged), the image equal to
    /// one process's up to rounding. With --cfg-parallel the pair also splits
    /// the denoising; without it the even process denoises and its partner
    /// only decodes (for images whose decode does not fit one GPU).
    #[arg(long)]
    vae_parallel: bool,
    /// Pipeline parallelism: the UNet cut into stages, one per process (the
    /// first rank of a pipeline also encodes, schedules, decodes and writes).
    /// `--pipeline-parallel=S`: pipelines of S consecutive processes, each on
    /// its own share of the items (data parallelism across pipelines; S must
    /// divide the process count); bare: one pipeline of every process.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "0", value_name = "S")]
    pipeline_parallel: Option<usize>,
    /// With --pipeline-parallel: `auto` (balance the counted FLOPs) or the
    /// first stage of each process after the first, e.g. `down_blocks.2,up_blocks.1`.
    #[arg(long, default_value = "auto")]
    split_points: String,
    /// With --pipeline-parallel: micro-batches per block of --batch-size items
    /// (default: one per stage; on the CPU every item is its own).
    #[arg(long)]
    num_chunks: Option<usize>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// `auto` (this process's GPU when built with CUDA, else the CPU), `cpu`, or `cuda[:N]`.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Spread one process's pipeline over devices: balanced, sequential, or unet=1,vae=1,text_encoder=0.
    #[arg(long)]
    device_map: Option<String>,
    /// Limits for --device-map, e.g. 0=20GiB,1=20GiB,cpu=64GiB (default: each GPU's free memory).
    #[arg(long)]
    max_memory: Option<String>,
    /// CPU offload: `model` (a component is on the GPU only while it runs) or
    /// `sequential` (the UNet's weights streamed to the GPU one block at a time).
    #[arg(long)]
    offload: Option<String>,
    /// Fault injection for tests: this rank dies (SIGKILL) after --fail-after images.
    #[arg(long, hide = true)]
    fail_rank: Option<usize>,
    /// Fault injection: images the failing rank makes first.
    #[arg(long, hide = true, default_value_t = 0)]
    fail_after: usize,
    /// Fault injection: `kill` (SIGKILL) or `stop` (SIGSTOP) the failing rank, or
    /// `forge-sha` / `forge-item`: it sends dishonest records.
    #[arg(long, hide = true, default_value = "kill")]
    fail_mode: String,
}

/// Checks a `.npy` header against the file's size before anything is allocated:
/// a header may claim any shape.
pub(crate) fn check_npy(path: &Path) -> Result<()> {
    use std::io::Read;
    let bad = |d: String| UsageError(format!("--latents {}: {d}", path.display()));
    let len = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?.len();
    let mut f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut pre = [0u8; 12];
    f.read_exact(&mut pre)
        .map_err(|_| bad("not a .npy file (too short)".into()))?;
    if &pre[..6] != b"\x93NUMPY" {
        bail!(bad("not a .npy file (no NUMPY magic)".into()));
    }
    let (hlen, start) = match pre[6] {
        1 => (u16::from_le_bytes([pre[8], pre[9]]) as u64, 10u64),
        _ => (
            u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]]) as u64,
            12u64,
        ),
    };
    if hlen > 1 << 16 || start + hlen > len {
        bail!(bad(format!("a header of {hlen} bytes in a file of {len}")));
    }
    let mut header = vec![0u8; hlen as usize];
    let mut f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut skip = vec![0u8; start as usize];
    f.read_exact(&mut skip).map_err(|e| bad(e.to_string()))?;
    f.read_exact(&mut header).map_err(|e| bad(e.to_string()))?;
    let h = String::from_utf8_lossy(&header);
    let field = |k: &str| -> Option<String> {
        let i = h.find(k)? + k.len();
        let rest = &h[i..];
        let rest = rest[rest.find(':')? + 1..].trim_start();
        Some(rest.to_string())
    };
    let item: u64 = field("'descr'")
        .or_else(|| field("\"descr\""))
        .and_then(|d| {
            d.trim_start_matches(['\'', '<', '>', '|', 'f', 'i', 'u'])
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .ok_or_else(|| bad(format!("no dtype in the header {h:?}")))?;
    let shape = field("'shape'")
        .or_else(|| field("\"shape\""))
        .ok_or_else(|| bad(format!("no shape in the header {h:?}")))?;
    let inner = shape.trim_start_matches('(');
    let inner = &inner[..inner.find(')').unwrap_or(inner.len())];
    let mut elems: u64 = 1;
    for d in inner.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let d: u64 = d
            .parse()
            .map_err(|_| bad(format!("shape {shape:?} is not a list of sizes")))?;
        elems = elems
            .checked_mul(d)
            .ok_or_else(|| bad(format!("shape ({inner}) overflows")))?;
    }
    let need = elems
        .checked_mul(item)
        .ok_or_else(|| bad(format!("shape ({inner}) overflows")))?;
    let have = len - start - hlen;
    if need != have {
        bail!(bad(format!(
            "its header claims shape ({inner}) = {need} bytes, but the file holds {have}"
        )));
    }
    Ok(())
}

fn load_latents(path: &Path, n: usize) -> Result<Vec<Tensor>> {
    check_npy(path)?;
    let t = Tensor::read_npy(path).map_err(|e| UsageError(format!("--latents {}: {e}", path.display())))?;
    let t = t.to_dtype(DType::F32)?;
    let all: Vec<Tensor> = match t.rank() {
        3 => vec![t],
        4 => (0..t.dim(0)?)
            .map(|i| t.get(i))
            .collect::<candle_core::Result<_>>()?,
        r => {
            return Err(
                UsageError(format!("--latents {}: rank {r}, expected 3 or 4", path.display())).into(),
            );
        }
    };
    if all.len() != n && all.len() != 1 {
        bail!(UsageError(format!(
            "--latents {}: holds {} latents for {n} images",
            path.display(),
            all.len()
        )));
    }
    Ok((0..n).map(|i| all[i.min(all.len() - 1)].clone()).collect())
}

/// The embedded default model: the tiny preset, written into a temporary folder.
pub fn default_model() -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("shoal-default-model-")
        .tempdir()?;
    let preset = shoal_diffusion::presets::preset("tiny").context("the tiny preset")?;
    shoal_diffusion::make_model(&preset, &dir.path().join("tiny"), 0, DType::F32, &mut |_, _| {})?;
    Ok(dir)
}

fn entries(c: &GenerateCmd) -> Result<Vec<Entry>> {
    let mut out: Vec<Entry> = c
        .positional
        .iter()
        .chain(&c.prompts)
        .map(|p| Entry {
            prompt: p.clone(),
            ..Default::default()
        })
        .collect();
    if let Some(f) = &c.prompts_file {
        let bytes = shoal_diffusion::config::read_limited(f, MAX_PROMPTS_FILE_BYTES)
            .map_err(|e| UsageError(format!("--prompts-file {}: {e}", f.display())))?;
        let more = shoal_jobs::parse_prompts_file(f, &bytes).map_err(|e| UsageError(e.to_string()))?;
        if more.is_empty() {
            bail!(UsageError(format!(
                "--prompts-file {}: holds no prompt",
                f.display()
            )));
        }
        out.extend(more);
    }
    if out.is_empty() {
        bail!(UsageError(
            "no prompt: give one, e.g. `shoal generate \"a red fox\"`, or --prompts-file".into()
        ));
    }
    Ok(out)
}

/// The largest prompts file read.
const MAX_PROMPTS_FILE_BYTES: u64 = 256 << 20;

pub fn run(c: GenerateCmd) -> Result<()> {
    if c.images_per_prompt == 0 || c.batch_size == 0 {
        bail!(UsageError(
            "--images-per-prompt and --batch-size must be at least 1".into()
        ));
    }
    let dtype = parse_dtype(&c.dtype)?;
    let entries = entries(&c)?;
    let state = DistributedState::new()?;
    let (rank, world) = (state.process_index(), state.num_processes());
    let device = match c.device.as_str() {
        "auto" => state.device()?,
        d => parse_device(d)?,
    };
    let _default;
    let (model, model_id) = match &c.model {
        Some(m) => (
            m.clone(),
            std::fs::canonicalize(m)
                .unwrap_or(m.clone())
                .display()
                .to_string(),
        ),
        None => {
            _default = default_model()?;
            if rank == 0 {
                tracing::info!("no --model given; using shoal's embedded tiny model (random weights)");
            }
            (_default.path().join("tiny"), "embedded:tiny-v1".to_string())
        }
    };
    let mut opts = LoadOptions {
        scheduler: c.scheduler.clone(),
        variant: None,
        batch_invariant: None,
        plan_threads: super::args::plan_threads(|k| std::env::var(k).ok())?,
        cuda_graphs: Some(super::args::cuda_graphs(|k| std::env::var(k).ok())?),
        ..Default::default()
    };
    // Everything the user gave is checked before any weight is read.
    let info = ModelInfo::read(&model, &opts)?;
    let pipelined = c.pipeline_parallel.is_some();
    let stages = match c.pipeline_parallel {
        None | Some(0) => world,
        Some(s) => s,
    };
    if pipelined && world < 2 {
        bail!(UsageError(
            "--pipeline-parallel needs at least 2 processes (one UNet stage each), e.g. `shoal launch -n 2 shoal generate --pipeline-parallel ...`".into()
        ));
    }
    if pipelined && (stages < 2 || !world.is_multiple_of(stages)) {
        bail!(UsageError(format!(
            "--pipeline-parallel={stages}: a pipeline has at least 2 stages, and the {world} process(es) must form \
             whole pipelines (a divisor of {world}, at least 2)"
        )));
    }
    if pipelined {
        let (h, w) = (
            c.height.unwrap_or(info.default_size),
            c.width.unwrap_or(info.default_size),
        );
        let costs = shoal_diffusion::sizes::unet_stage_costs(&model, h, w, c.batch_size)?;
        let blocks: Vec<shoal_pipe::BlockCost> = costs
            .iter()
            .map(|(name, params, flops)| shoal_pipe::BlockCost {
                name: name.clone(),
                params: *params,
                flops: *flops,
            })
            .collect();
        let split = shoal_pipe::SplitPoints::parse(&c.split_points);
        let plan = shoal_pipe::plan_stages(&blocks, &split, stages).map_err(|e| UsageError(e.to_string()))?;
        if rank == 0 {
            if world > stages {
                tracing::info!(
                    "{} pipelines of {stages} stages (ranks g·{stages} … g·{stages} + {}), each on its own items",
                    world / stages,
                    stages - 1
                );
            }
            for (s, r) in plan.iter().enumerate() {
                let p: u64 = blocks[r.clone()].iter().map(|b| b.params).sum();
                let f: f64 = blocks[r.clone()].iter().map(|b| b.flops).sum();
                tracing::info!(
                    "stage {s} (rank {s}): {} … {} ({:.1} M parameters, {:.3} GFLOP counted per UNet call at batch {})",
                    blocks[r.start].name,
                    blocks[r.end - 1].name,
                    p as f64 / 1e6,
                    f / 1e9,
                    c.batch_size
                );
            }
        }
        let mine = blocks[plan[rank % stages].clone()]
            .iter()
            .map(|b| shoal_diffusion::unet::Stage::parse(&b.name).context("a UNet stage name"))
            .collect::<Result<Vec<_>>>()?;
        opts.unet_stages = Some(mine);
        // Later stages never encode text or decode.
        opts.unet_only = rank % stages > 0;
    }
    let defaults = Defaults {
        params: GenParams {
            steps: c.steps,
            guidance: c.guidance,
            height: c.height.unwrap_or(info.default_size),
            width: c.width.unwrap_or(info.default_size),
        },
        negative_prompt: c.negative_prompt.clone(),
        images_per_prompt: c.images_per_prompt,
        seed: c.seed,
    };
    // Each entry's parameters, checked where the entry came from (file:line).
    for (k, e) in entries.iter().enumerate() {
        let g = GenParams {
            steps: e.steps.unwrap_or(defaults.params.steps),
            guidance: e.guidance.unwrap_or(defaults.params.guidance),
            height: e.height.unwrap_or(defaults.params.height),
            width: e.width.unwrap_or(defaults.params.width),
        };
        info.check(&params_of(&g)).map_err(|err| {
            let at = e.origin.clone().unwrap_or_else(|| format!("prompt {}", k + 1));
            UsageError(format!("{at}: {err}"))
        })?;
    }
    let items = shoal_jobs::expand(&entries, &defaults).map_err(|e| UsageError(e.to_string()))?;
    for it in &items {
        info.check(&params_of(&it.params))
            .map_err(|e| UsageError(format!("item {}: {e}", it.index)))?;
    }
    if c.cfg_parallel {
        shoal_engine::check_cfg_parallel(&items, world).map_err(|e| UsageError(e.to_string()))?;
    }
    if pipelined {
        let clash = [
            (c.cfg_parallel, "--cfg-parallel"),
            (c.vae_parallel, "--vae-parallel"),
            (c.device_map.is_some(), "--device-map"),
            (c.offload.is_some(), "--offload"),
        ];
        if let Some((_, flag)) = clash.iter().find(|(on, _)| *on) {
            bail!(UsageError(format!(
                "--pipeline-parallel cannot be combined with {flag} (yet): every process holds one UNet stage"
            )));
        }
        if c.num_chunks == Some(0) {
            bail!(UsageError("--num-chunks must be at least 1".into()));
        }
    }
    if c.vae_parallel {
        shoal_engine::check_pairs(world, "--vae-parallel").map_err(|e| UsageError(e.to_string()))?;
    }
    let latents = match &c.latents {
        Some(p) => Some(load_latents(p, items.len())?),
        None => None,
    };
    let flags = PlacementFlags {
        device_map: c.device_map.clone(),
        max_memory: c.max_memory.clone(),
        offload: c.offload.clone(),
    };
    let size = (defaults.params.height, defaults.params.width, c.batch_size);
    let placement = super::plan::placement(&flags, world, &model, &device, dtype, size)?;
    if matches!(placement, shoal_diffusion::pipeline::Placement::Device(_)) {
        let sides: Vec<(usize, usize)> = items
            .iter()
            .map(|it| (it.params.height, it.params.width))
            .collect();
        super::plan::check_activations(&model, &device, dtype, &sides, c.batch_size)?;
    }
    let group_opts = GroupOptions::from_env(&std::env::vars().collect())?;
    let pg = if world > 1 {
        Some(state.process_group(Backend::Cpu, group_opts.clone())?)
    } else {
        None
    };
    // Rank 0 hashes the model folder (the job's fingerprint) beside the load.
    let identity = c.model.as_deref().filter(|_| rank == 0).map(|d| {
        let user = shoal_jobs::identity::user_cache_path(|k| std::env::var(k).ok());
        shoal_engine::ModelIdentity::start(d, &c.out, user)
    });
    // The model loads before the job folder is touched: a bad weight file
    // must not leave a job behind.
    let loading = std::time::Instant::now();
    let pipe = Pipeline::load_placed(&model, placement, dtype, &opts)?;
    tracing::debug!(
        "loaded {} ({dtype:?}) in {:.2} s",
        model.display(),
        loading.elapsed().as_secs_f64()
    );
    if rank == 0
        && let Some(m) = pipe.device_map()
    {
        tracing::info!("device map {m:?}");
    }
    let spec = JobSpec::new(&model_id, &info.scheduler_class, &format!("{dtype:?}"), &items);
    let shown = (rank == 0 && !c.quiet)
        .then(|| {
            if shoal_dist::reporting_to_launcher(std::env::var(shoal_dist::SHOAL_PROGRESS).ok().as_deref()) {
                Some(Shown::Lines(shoal_launch::LineReporter::default()))
            } else if std::io::stderr().is_terminal() {
                Some(Shown::Bar(shoal_launch::JobBar::new()))
            } else {
                None
            }
        })
        .flatten()
        .map(|shown| CliProgress {
            shown,
            state: std::sync::Mutex::new(shoal_dist::Report::default()),
        });
    let cfg = JobConfig {
        items: &items,
        latents: latents.as_deref(),
        out: &c.out,
        spec: &spec,
        model: identity.as_ref(),
        resume: c.resume,
        batch_size: c.batch_size,
        dynamic: c.schedule == Schedule::Dynamic,
        cfg_parallel: c.cfg_parallel,
        vae_parallel: c.vae_parallel,
        pipeline_chunks: pipelined.then_some(c.num_chunks.unwrap_or(stages)),
        pipeline_stages: stages,
        progress: shown.as_ref().map(|p| p as &dyn shoal_engine::Progress),
        timeout: group_opts.timeout,
        crash_after: (c.fail_rank == Some(rank) && ["kill", "stop"].contains(&c.fail_mode.as_str()))
            .then_some((c.fail_after, c.fail_mode == "stop")),
        forge: (c.fail_rank == Some(rank))
            .then_some(c.fail_mode.as_str())
            .filter(|m| m.starts_with("forge-"))
            .map(|m| m.trim_start_matches("forge-")),
    };
    let ranks = Ranks {
        rank,
        world,
        pg: pg.as_ref(),
    };
    let result = shoal_engine::run_job(&pipe, &cfg, ranks);
    if let Some(CliProgress {
        shown: Shown::Bar(b), ..
    }) = &shown
    {
        b.finish();
    }
    if let Some(s) = result? {
        let busy: Vec<String> = s.busy_s.iter().map(|b| format!("{b:.2}")).collect();
        println!(
            "generate: {} image(s) in {:.2} s ({:.3} img/s) on {world} process(es); per rank: {:?}; busy s per rank: [{}]; {}",
            s.done,
            s.wall_s,
            s.done as f64 / s.wall_s.max(1e-9),
            s.per_rank,
            busy.join(", "),
            s.manifest.display()
        );
    }
    for line in super::env::kernel_load_report() {
        tracing::debug!("{line}");
    }
    Ok(())
}

/// Rank 0's progress: its own bar, or report lines for `shoal launch`'s bar.
enum Shown {
    Bar(shoal_launch::JobBar),
    Lines(shoal_launch::LineReporter),
}

struct CliProgress {
    shown: Shown,
    state: std::sync::Mutex<shoal_dist::Report>,
}

impl CliProgress {
    fn show(&self, f: impl FnOnce(&mut shoal_dist::Report)) {
        let mut r = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut r);
        match &self.shown {
            Shown::Bar(b) => b.update(&r),
            Shown::Lines(l) => l.update(&r),
        }
    }
}

impl shoal_engine::Progress for CliProgress {
    fn images(&self, done: usize, total: usize) {
        self.show(|r| {
            r.done = done as u64;
            r.total = total as u64;
        });
    }

    fn step(&self, step: usize, steps: usize) {
        self.show(|r| {
            r.step = step as u64;
            r.steps = steps as u64;
        });
    }
}

fn params_of(g: &GenParams) -> Params {
    Params {
        steps: g.steps,
        guidance: g.guidance,
        height: g.height,
        width: g.width,
    }
}
