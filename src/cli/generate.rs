//! `shoal generate`: text to image, one process or many.
//!
//! Under any launcher (or none) the work items (prompts × images) are cut into
//! blocks and split between the processes (`--schedule static`) or claimed
//! from a counter in the store (`--schedule dynamic`). Each process writes its
//! images atomically and reports a small record; rank 0 alone writes
//! `manifest.jsonl` and draws the one progress bar. `--resume` finishes a job.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use clap::{Args, ValueEnum};
use shoal_diffusion::{Item, LoadOptions, ModelInfo, Params, Pipeline};
use shoal_dist::{Backend, DistributedState, GroupOptions, ProcessGroup};
use shoal_jobs::manifest::{MANIFEST_FILE, append_records, sha256_hex};
use shoal_jobs::{Defaults, Entry, GenParams, JobSpec, OnDisk, Record, WorkItem, file_name};

use super::UsageError;

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
}

pub fn parse_dtype(s: &str) -> Result<DType> {
    match s.to_ascii_lowercase().as_str() {
        "f32" | "fp32" | "float32" => Ok(DType::F32),
        "f16" | "fp16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        _ => Err(UsageError(format!("invalid --dtype {s:?}: expected f32, f16 or bf16")).into()),
    }
}

/// Resolves `--device`.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "auto" => Ok(DistributedState::new()?.device()?),
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::new_cuda(0).map_err(|e| UsageError(format!("--device cuda: {e}")))?),
        _ => match s.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => Ok(Device::new_cuda(n).map_err(|e| UsageError(format!("--device {s}: {e}")))?),
            None => Err(UsageError(format!(
                "invalid --device {s:?}: expected auto, cpu, cuda or cuda:N"
            ))
            .into()),
        },
    }
}

fn load_latents(path: &Path, n: usize) -> Result<Vec<Tensor>> {
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
        let bytes =
            std::fs::read(f).map_err(|e| UsageError(format!("--prompts-file {}: {e}", f.display())))?;
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

/// What one process needs to run its share.
struct Job<'a> {
    rank: usize,
    world: usize,
    items: &'a [WorkItem],
    out: &'a Path,
    pg: Option<&'a ProcessGroup>,
}

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
                eprintln!("generate: no --model given; using shoal's embedded tiny model (random weights)");
            }
            (_default.path().join("tiny"), "embedded:tiny-v1".to_string())
        }
    };
    let opts = LoadOptions {
        scheduler: c.scheduler.clone(),
        variant: None,
        batch_invariant: None,
    };
    // Everything the user gave is checked before any weight is read.
    let info = ModelInfo::read(&model, &opts)?;
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
    let items = shoal_jobs::expand(&entries, &defaults).map_err(|e| UsageError(e.to_string()))?;
    for it in &items {
        info.check(&params_of(&it.params))
            .map_err(|e| UsageError(format!("item {}: {e}", it.index)))?;
    }
    let latents = match &c.latents {
        Some(p) => Some(load_latents(p, items.len())?),
        None => None,
    };

    let placement = placement(&c, &model, &device, dtype, world, &defaults.params)?;
    let pg = if world > 1 {
        Some(state.process_group(Backend::Cpu, GroupOptions::from_env(&std::env::vars().collect())?)?)
    } else {
        None
    };
    let job = Job {
        rank,
        world,
        items: &items,
        out: &c.out,
        pg: pg.as_ref(),
    };
    // The model loads before the job folder is touched: a bad weight file
    // must not leave a job behind.
    let start = Instant::now();
    let pipe = Pipeline::load_placed(&model, placement, dtype, &opts)?;
    if rank == 0
        && let Some(m) = pipe.device_map()
    {
        eprintln!("generate: device map {m:?}");
    }
    // Rank 0 opens (or resumes) the job and tells everyone what is left.
    let spec = JobSpec::new(&model_id, &info.scheduler_class, &format!("{dtype:?}"), &items);
    let todo = agree_on_todo(&job, &spec, c.resume)?;
    let pending: Vec<&WorkItem> = todo.iter().map(|&i| &items[i]).collect();
    let blocks = shoal_jobs::schedule::blocks(&pending, c.batch_size);
    let bar = rank == 0 && !c.quiet && std::io::stderr().is_terminal();
    let mut monitor = Monitor::new(&job, &todo, bar);
    let mut made = 0usize;
    let mut next_static = shoal_jobs::schedule::static_share(&blocks, rank, world).into_iter();
    loop {
        let block = match (c.schedule, job.pg) {
            (Schedule::Dynamic, Some(pg)) => {
                let k = pg.kv_add("shoal/job/next_block", 1)? - 1;
                blocks.get(k as usize).cloned()
            }
            _ => next_static.next(),
        };
        let Some(block) = block else { break };
        let chunk = &pending[block];
        let gen_items: Vec<Item> = chunk
            .iter()
            .map(|it| Item {
                prompt: it.prompt.clone(),
                negative_prompt: it.negative_prompt.clone(),
                seed: it.seed,
                latents: latents.as_ref().map(|l| l[it.index].clone()),
                step_noise: None,
            })
            .collect();
        let t = Instant::now();
        let out = pipe.generate(&gen_items, &params_of(&chunk[0].params), &mut |_, _| {
            monitor.tick()
        })?;
        let per_image = t.elapsed().as_secs_f64() / chunk.len() as f64;
        let mut records = Vec::with_capacity(chunk.len());
        for (k, img) in shoal_diffusion::image::to_rgb8(&out.images)?.iter().enumerate() {
            let it = chunk[k];
            let name = file_name(it);
            let bytes = shoal_diffusion::image::png_bytes(img)?;
            shoal_diffusion::image::write_atomic(&c.out.join(&name), &bytes)?;
            records.push(Record::new(
                it,
                &bytes,
                rank,
                per_image,
                out.prompt_tokens.get(k).copied().unwrap_or(0),
            ));
        }
        made += records.len();
        monitor.report(records)?;
        if c.fail_rank == Some(rank) && made >= c.fail_after {
            eprintln!("rank {rank}/{world}: injecting a crash after {made} image(s)");
            // SAFETY: raising a signal on our own process.
            unsafe { libc::raise(libc::SIGKILL) };
        }
    }
    monitor.finish(made, start)?;
    Ok(())
}

/// Where the components go: one device, a device map, or model offload.
fn placement(
    c: &GenerateCmd,
    model: &Path,
    device: &Device,
    dtype: DType,
    world: usize,
    p: &GenParams,
) -> Result<shoal_diffusion::pipeline::Placement> {
    use shoal_diffusion::pipeline::Placement;
    match (&c.device_map, c.offload.as_deref()) {
        (Some(_), Some(_)) => Err(UsageError(
            "--device-map and --offload exclude each other (as diffusers' device_map and enable_*_cpu_offload)".into(),
        )
        .into()),
        (None, Some("model")) => Ok(Placement::OffloadModel(device.clone())),
        (None, Some("sequential")) => Ok(Placement::OffloadSequential(device.clone())),
        (None, Some(o)) => Err(UsageError(format!("invalid --offload {o:?}: expected model or sequential")).into()),
        (Some(map), None) => {
            if world > 1 {
                bail!(UsageError("--device-map spreads one process over GPUs; run it without a multi-process launcher".into()));
            }
            let plan = super::plan::make_plan(model, map, c.max_memory.as_deref(), dtype, (p.height, p.width, c.batch_size))?;
            Ok(Placement::Map(super::plan::devices_of(&plan)?))
        }
        (None, None) if c.max_memory.is_some() => Err(UsageError("--max-memory needs --device-map".into()).into()),
        (None, None) => Ok(Placement::Device(device.clone())),
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

/// Rank 0 decides what is left (reading the job folder), everyone learns it.
fn agree_on_todo(job: &Job, spec: &JobSpec, resume: bool) -> Result<Vec<usize>> {
    let decide = || -> std::result::Result<Vec<usize>, String> {
        let manifest_path = shoal_jobs::open_job(job.out, spec, resume).map_err(|e| e.to_string())?;
        let manifest = shoal_jobs::read_manifest(&manifest_path).map_err(|e| e.to_string())?;
        let plan = shoal_jobs::plan_resume(job.items, &manifest, |name| on_disk(&job.out.join(name)));
        for d in &plan.damaged {
            eprintln!("generate: {d} does not match the manifest; making it again");
        }
        if resume {
            eprintln!(
                "generate: resuming: {} of {} images done, {} to make",
                plan.done.len(),
                job.items.len(),
                plan.todo.len()
            );
        }
        // Files that were published but never recorded (a crash in between) are recorded now.
        let recovered: Vec<Record> = plan
            .recovered
            .iter()
            .filter_map(|&i| recover_record(&job.items[i], job.out))
            .collect();
        append_records(&manifest_path, &recovered).map_err(|e| e.to_string())?;
        Ok(plan.todo)
    };
    let decided = if job.rank == 0 { Some(decide()) } else { None };
    let decided = match job.pg {
        Some(pg) => pg.broadcast_object(decided.as_ref(), 0)?,
        None => decided.unwrap_or_else(|| Err("no decision".into())),
    };
    decided.map_err(|e| UsageError(e).into())
}

fn on_disk(path: &Path) -> OnDisk {
    match std::fs::read(path) {
        Err(_) => OnDisk::Missing,
        Ok(bytes) => OnDisk::File {
            sha256: sha256_hex(&bytes),
            valid_png: png::Decoder::new(std::io::Cursor::new(&bytes))
                .read_info()
                .and_then(|mut r| {
                    let mut buf = vec![0; r.output_buffer_size().unwrap_or(0)];
                    r.next_frame(&mut buf).map(|_| ())
                })
                .is_ok(),
        },
    }
}

fn recover_record(it: &WorkItem, out: &Path) -> Option<Record> {
    let bytes = std::fs::read(out.join(file_name(it))).ok()?;
    // Made before a crash by an unknown rank, in an unknown time.
    Some(Record::new(it, &bytes, usize::MAX, 0.0, 0))
}

/// Progress and records: every rank reports; rank 0 writes the manifest and
/// draws the bar. With several processes, reports travel through the store
/// (metadata only, never images).
struct Monitor<'a> {
    job: &'a Job<'a>,
    total: usize,
    bar: bool,
    manifest: PathBuf,
    outstanding: BTreeSet<usize>,
    done: usize,
    per_rank: Vec<usize>,
    started: Instant,
    last_draw: Instant,
}

const REC: &str = "shoal/job/rec/";
const FINISHED: &str = "shoal/job/finished/";

impl<'a> Monitor<'a> {
    fn new(job: &'a Job<'a>, todo: &[usize], bar: bool) -> Self {
        Monitor {
            job,
            total: todo.len(),
            bar,
            manifest: job.out.join(MANIFEST_FILE),
            // Rank 0 waits for a record of every item left to make.
            outstanding: todo.iter().copied().collect(),
            done: 0,
            per_rank: vec![0; job.world],
            started: Instant::now(),
            last_draw: Instant::now() - Duration::from_secs(1),
        }
    }

    /// Called between steps: rank 0 collects other ranks' reports.
    fn tick(&mut self) {
        if self.job.rank == 0 && self.last_draw.elapsed() > Duration::from_millis(300) {
            let _ = self.collect();
            self.draw();
        }
    }

    fn report(&mut self, records: Vec<Record>) -> Result<()> {
        if self.job.rank == 0 {
            self.record(records)?;
            self.collect()?;
            self.draw();
            return Ok(());
        }
        if let Some(pg) = self.job.pg {
            for r in records {
                pg.kv_set(&format!("{REC}{}", r.index), &serde_json::to_vec(&r)?)?;
            }
        }
        Ok(())
    }

    fn record(&mut self, records: Vec<Record>) -> Result<()> {
        for r in &records {
            self.outstanding.remove(&r.index);
            self.done += 1;
            if let Some(n) = self.per_rank.get_mut(r.rank) {
                *n += 1;
            }
        }
        append_records(&self.manifest, &records)?;
        Ok(())
    }

    /// Rank 0: moves other ranks' records from the store into the manifest.
    fn collect(&mut self) -> Result<()> {
        let Some(pg) = self.job.pg else { return Ok(()) };
        let keys: Vec<(usize, String)> = self
            .outstanding
            .iter()
            .map(|i| (*i, format!("{REC}{i}")))
            .collect();
        for chunk in keys.chunks(1024) {
            let names: Vec<String> = chunk.iter().map(|(_, k)| k.clone()).collect();
            let present = pg.kv_check(&names)?;
            let mut got = Vec::new();
            for ((i, k), p) in chunk.iter().zip(present) {
                if p {
                    let r: Record = serde_json::from_slice(&pg.kv_get(k)?)?;
                    got.push((*i, k.clone(), r));
                }
            }
            if !got.is_empty() {
                pg.kv_delete(&got.iter().map(|(_, k, _)| k.clone()).collect::<Vec<_>>())?;
                for (i, _, _) in &got {
                    self.outstanding.remove(i);
                }
                self.record(got.into_iter().map(|(_, _, r)| r).collect())?;
            }
        }
        Ok(())
    }

    fn draw(&mut self) {
        self.last_draw = Instant::now();
        if !self.bar {
            return;
        }
        let el = self.started.elapsed().as_secs_f64();
        let rate = self.done as f64 / el.max(1e-9);
        let eta = if rate > 0.0 {
            (self.total - self.done.min(self.total)) as f64 / rate
        } else {
            f64::NAN
        };
        let w = 30;
        let fill = self.done * w / self.total.max(1);
        eprint!(
            "\r[{}{}] {}/{} images, {:.2} img/s, ETA {:.0} s   ",
            "#".repeat(fill.min(w)),
            " ".repeat(w - fill.min(w)),
            self.done,
            self.total,
            rate,
            eta
        );
        let _ = std::io::stderr().flush();
    }

    /// Waits for every rank (rank 0) or announces this one's end (others), then
    /// prints the summary line.
    fn finish(mut self, made: usize, start: Instant) -> Result<()> {
        let job = self.job;
        match job.pg {
            Some(pg) if job.rank != 0 => {
                pg.kv_set(&format!("{FINISHED}{}", job.rank), made.to_string().as_bytes())?;
                return Ok(());
            }
            Some(pg) => {
                pg.kv_set(&format!("{FINISHED}0"), made.to_string().as_bytes())?;
                let keys: Vec<String> = (0..job.world).map(|r| format!("{FINISHED}{r}")).collect();
                // No timeout here: ranks work as long as their share takes, and
                // a dead rank ends the job through the launcher.
                while !pg.kv_check(&keys)?.iter().all(|p| *p) {
                    self.collect()?;
                    self.draw();
                    std::thread::sleep(Duration::from_millis(200));
                }
                self.collect()?;
            }
            None => {}
        }
        if self.bar {
            self.draw();
            eprintln!();
        }
        let wall = start.elapsed().as_secs_f64();
        println!(
            "generate: {} image(s) in {wall:.2} s ({:.3} img/s) on {} process(es); per rank: {:?}; {}",
            self.done,
            self.done as f64 / wall.max(1e-9),
            job.world,
            self.per_rank,
            job.out.join(MANIFEST_FILE).display()
        );
        Ok(())
    }
}
