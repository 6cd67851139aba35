//! One rank's part of a job, start to end.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use candle_core::Tensor;
use shoal_diffusion::{CfgHalf, CfgPartner, Item, Params, Pipeline};
use shoal_dist::ProcessGroup;
use shoal_jobs::manifest::{MANIFEST_FILE, append_records};
use shoal_jobs::{GenParams, JobSpec, Record, WorkItem, file_name};

use crate::error::{Error, Result};
use crate::identity::ModelIdentity;
use crate::monitor::{self, FINISHED, Finished, Monitor, Msg, Progress, REC};
use crate::source::{Source, StaticSource, StoreCounter};

/// What to run.
#[derive(Debug)]
pub struct JobConfig<'a> {
    /// Every item of the job, in order.
    pub items: &'a [WorkItem],
    /// Initial latents per item (`--latents`), indexed like `items`.
    pub latents: Option<&'a [Tensor]>,
    /// The job folder.
    pub out: &'a Path,
    /// The job's fingerprint (its `model` replaced by the folder's content
    /// identity when `model` is given).
    pub spec: &'a JobSpec,
    /// The model folder's identity by content, for the fingerprint (rank 0's;
    /// started before the model loads, so that the hash runs beside the load;
    /// the per-file hashes cached in the job folder).
    pub model: Option<&'a ModelIdentity>,
    /// Finish an existing job.
    pub resume: bool,
    /// Items per pipeline call.
    pub batch_size: usize,
    /// Claim blocks from the store's counter instead of the static split.
    pub dynamic: bool,
    /// Where rank 0 shows the job's progress (a bar, or report lines for the
    /// launcher's bar); `None` shows nothing.
    pub progress: Option<&'a dyn Progress>,
    /// How long rank 0 waits for a rank that stopped beating.
    pub timeout: Duration,
    /// CFG parallelism: ranks work in pairs (2k, 2k + 1), each pair on its own
    /// items; rank 2k computes the unconditional half of guidance and writes
    /// the images, rank 2k + 1 the conditional half.
    pub cfg_parallel: bool,
    /// Ranks work in pairs (2k, 2k + 1) that split the VAE decode, the even rank
    /// the top half of the rows, the odd rank the bottom half
    /// ([`shoal_diffusion::vae::Decoder::decode_band`]). With `cfg_parallel` the
    /// pair also splits the denoising; without it the even rank denoises alone
    /// and hands the latents to its partner, which only decodes (for images
    /// whose decode is what does not fit one device).
    pub vae_parallel: bool,
    /// Pipeline parallelism: the UNet's stages spread over the ranks (stage =
    /// rank mod `pipeline_stages`, as the pipeline was loaded); the first rank
    /// of each pipeline runs its items with this many micro-batches per block,
    /// the other ranks serve their stages.
    pub pipeline_chunks: Option<usize>,
    /// With `pipeline_chunks`: ranks per pipeline. The ranks form
    /// `world / pipeline_stages` pipelines of consecutive ranks, each on its own
    /// items (data parallelism across pipelines).
    pub pipeline_stages: usize,
    /// Test hook: this rank kills itself after this many images.
    /// (After this many images this rank kills itself, or stops with SIGSTOP when the flag is set.)
    pub crash_after: Option<(usize, bool)>,
    /// Test hook: this (non-zero) rank sends dishonest records: `"sha"` a wrong
    /// hash, `"item"` its record under rank 0's first item.
    pub forge: Option<&'a str>,
}

/// This process in the job.
#[derive(Debug, Clone, Copy)]
pub struct Ranks<'a> {
    /// This rank.
    pub rank: usize,
    /// All ranks.
    pub world: usize,
    /// The group, when there is more than one rank.
    pub pg: Option<&'a ProcessGroup>,
}

/// Rank 0's account of the job.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Images recorded.
    pub done: usize,
    /// Seconds from the start of work to the last record.
    pub wall_s: f64,
    /// Images per rank.
    pub per_rank: Vec<usize>,
    /// Seconds each rank spent generating and writing.
    pub busy_s: Vec<f64>,
    /// The manifest.
    pub manifest: PathBuf,
}

fn params_of(g: &GenParams) -> Params {
    Params {
        steps: g.steps,
        guidance: g.guidance,
        height: g.height,
        width: g.width,
    }
}

/// Checks that `world` processes pair up, for `flag`.
pub fn check_pairs(world: usize, flag: &str) -> Result<()> {
    if world < 2 || !world.is_multiple_of(2) {
        return Err(Error::Usage(format!(
            "{flag} runs each image on a pair of processes: it needs an even number of processes, not {world}"
        )));
    }
    Ok(())
}

/// Checks a CFG-parallel job's shape: pairs of ranks, guidance above 1 on every item.
pub fn check_cfg_parallel(items: &[WorkItem], world: usize) -> Result<()> {
    check_pairs(world, "--cfg-parallel")?;
    if let Some(it) = items.iter().find(|it| it.params.guidance <= 1.0) {
        return Err(Error::Usage(format!(
            "--cfg-parallel: item {} has guidance {}; at guidance 1 or below there is no unconditional half to split off",
            it.index, it.params.guidance
        )));
    }
    Ok(())
}

/// This rank's partner in a pair: under CFG parallelism the predictions go
/// through the process group, the unconditional (even) side sending first;
/// `denoise` is false for the odd rank of a decode-only pair.
struct Pair<'a> {
    pg: &'a ProcessGroup,
    partner: usize,
    half: CfgHalf,
    cfg: bool,
}

impl Pair<'_> {
    /// The even rank: it claims the blocks and writes the images.
    fn leads(&self) -> bool {
        self.half == CfgHalf::Uncond
    }
}

impl CfgPartner for Pair<'_> {
    fn half(&self) -> CfgHalf {
        self.half
    }

    fn exchange(&self, mine: &Tensor) -> shoal_diffusion::Result<Tensor> {
        let err =
            |e: shoal_dist::Error| shoal_diffusion::Error::Partner(format!("rank {}: {e}", self.partner));
        match self.half {
            // Both halves have the same shape: only the data moves (NCCL).
            CfgHalf::Uncond => {
                self.pg.send_known(mine, self.partner).map_err(err)?;
                self.pg.recv_like(self.partner, mine).map_err(err)
            }
            CfgHalf::Cond => {
                let other = self.pg.recv_like(self.partner, mine).map_err(err)?;
                self.pg.send_known(mine, self.partner).map_err(err)?;
                Ok(other)
            }
        }
    }
}

/// A pair's blocks under the dynamic schedule: the unconditional rank claims
/// them and forwards each claim (or the end) to its partner.
struct PairedSource<'a> {
    inner: Option<Box<dyn Source + 'a>>,
    pg: &'a ProcessGroup,
    partner: usize,
}

impl Source for PairedSource<'_> {
    fn next_block(&mut self) -> Result<Option<std::ops::Range<usize>>> {
        match &mut self.inner {
            Some(src) => {
                let b = src.next_block()?;
                let body = serde_json::to_vec(&b.as_ref().map(|r| (r.start, r.end)))
                    .map_err(|e| Error::Peer(format!("encoding a block: {e}")))?;
                self.pg.send_bytes(&body, self.partner)?;
                Ok(b)
            }
            None => {
                let body = self.pg.recv_bytes(self.partner)?;
                let b: Option<(usize, usize)> = serde_json::from_slice(&body)
                    .map_err(|e| Error::Peer(format!("rank {}: a malformed block: {e}", self.partner)))?;
                Ok(b.map(|(a, e)| a..e))
            }
        }
    }
}

/// Runs this rank's share of the job; rank 0 returns the summary.
pub fn run_job(pipe: &Pipeline, cfg: &JobConfig, r: Ranks) -> Result<Option<Summary>> {
    if cfg.cfg_parallel {
        check_cfg_parallel(cfg.items, r.world)?;
    }
    if cfg.vae_parallel {
        check_pairs(r.world, "--vae-parallel")?;
    }
    if (cfg.cfg_parallel || cfg.vae_parallel) && cfg.pipeline_chunks.is_some() {
        return Err(Error::Usage(
            "pairs of processes (--cfg-parallel, --vae-parallel) cannot be combined with pipeline parallelism".into(),
        ));
    }
    // Rank 0 holds the job folder (job.lock) until the job ends.
    let (todo, _lock) = agree_on_todo(cfg, r)?;
    let start = Instant::now();
    let pending: Vec<&WorkItem> = todo.iter().map(|&i| &cfg.items[i]).collect();
    let blocks = shoal_jobs::schedule::blocks(&pending, cfg.batch_size);
    tracing::debug!(
        "{} of {} item(s) to make, in {} block(s) of up to {}, {} schedule",
        pending.len(),
        cfg.items.len(),
        blocks.len(),
        cfg.batch_size,
        if cfg.dynamic { "dynamic" } else { "static" }
    );
    let blocks_all = blocks.clone();
    // Units of work: ranks, or pairs of ranks under CFG parallelism or a split decode.
    let paired = cfg.cfg_parallel || cfg.vae_parallel;
    let (unit, units) = if paired {
        (r.rank / 2, r.world / 2)
    } else if cfg.pipeline_chunks.is_some() {
        // Each pipeline's first rank drives its blocks through the pipeline.
        let s = cfg.pipeline_stages.max(1);
        (r.rank / s, (r.world / s).max(1))
    } else {
        (r.rank, r.world)
    };
    let mut source: Box<dyn Source + '_> = match (cfg.dynamic, r.pg) {
        (true, Some(pg)) => Box::new(StoreCounter::new(pg, blocks)),
        _ => Box::new(StaticSource::new(&blocks, unit, units)),
    };
    let pair = match (paired, r.pg) {
        (true, Some(pg)) => {
            let (partner, half) = if r.rank.is_multiple_of(2) {
                (r.rank + 1, CfgHalf::Uncond)
            } else {
                (r.rank - 1, CfgHalf::Cond)
            };
            if cfg.dynamic {
                let inner = (half == CfgHalf::Uncond).then_some(source);
                source = Box::new(PairedSource { inner, pg, partner });
            }
            Some(Pair {
                pg,
                partner,
                half,
                cfg: cfg.cfg_parallel,
            })
        }
        _ => None,
    };
    let pair = pair.as_ref();
    let manifest = cfg.out.join(MANIFEST_FILE);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| -> Result<Option<Summary>> {
        if r.rank == 0 {
            let (tx, rx) = mpsc::channel();
            // Under the static schedule rank 0 knows which rank writes each item.
            let owner = (!cfg.dynamic).then(|| {
                let mut m = std::collections::HashMap::new();
                for u in 0..units {
                    let writer = if paired {
                        2 * u
                    } else if cfg.pipeline_chunks.is_some() {
                        cfg.pipeline_stages.max(1) * u
                    } else {
                        u
                    };
                    for b in shoal_jobs::schedule::static_share(&blocks_all, u, units) {
                        for it in &pending[b] {
                            m.insert(it.index, writer);
                        }
                    }
                }
                m
            });
            let mon = Monitor {
                owner,
                pg: r.pg,
                world: r.world,
                manifest: manifest.clone(),
                outstanding: todo.iter().copied().collect(),
                total: todo.len(),
                progress: cfg.progress,
                timeout: cfg.timeout,
                done: 0,
                per_rank: vec![0; r.world],
                busy_s: vec![0.0; r.world],
            };
            let h = s.spawn(move || mon.run(rx));
            let mut sink = FilesSink {
                out: cfg.out,
                rank: 0,
                report: |recs| {
                    tx.send(Msg::Records(recs))
                        .map_err(|_| Error::Peer("rank 0's monitor stopped".into()))
                },
            };
            let work = work(pipe, cfg, r, &pending, &mut *source, &mut sink, pair);
            if let Ok(f) = &work {
                let _ = tx.send(Msg::Done(*f));
            }
            drop(tx);
            let outcome = h
                .join()
                .map_err(|_| Error::Peer("rank 0's monitor thread panicked".into()))?;
            // The monitor's own error is the cause when it stopped first (the
            // worker then only saw that it was gone).
            if let (Err(Error::Peer(m)), Err(_)) = (&work, &outcome)
                && m.contains("monitor stopped")
            {
                return Err(outcome.err().unwrap_or_else(|| Error::Peer(m.clone())));
            }
            work?;
            let o = outcome?;
            return Ok(Some(Summary {
                done: o.done,
                wall_s: start.elapsed().as_secs_f64(),
                per_rank: o.per_rank,
                busy_s: o.busy_s,
                manifest,
            }));
        }
        let Some(pg) = r.pg else {
            return Err(Error::Peer(format!(
                "rank {} of {} has no process group",
                r.rank, r.world
            )));
        };
        let stop_ref = &stop;
        s.spawn(move || monitor::heartbeat(pg, r.rank, stop_ref));
        let mut sink = FilesSink {
            out: cfg.out,
            rank: r.rank,
            report: |recs: Vec<Record>| -> Result<()> {
                for mut rec in recs {
                    match cfg.forge {
                        Some("sha") => rec.sha256 = "0".repeat(64),
                        Some("item") => rec.index = pending.first().map_or(0, |it| it.index),
                        _ => {}
                    }
                    let body = serde_json::to_vec(&rec)
                        .map_err(|e| Error::Peer(format!("encoding a record: {e}")))?;
                    pg.kv_set(&format!("{REC}{}", rec.index), &body)?;
                }
                Ok(())
            },
        };
        let serves = cfg.pipeline_chunks.is_some() && !r.rank.is_multiple_of(cfg.pipeline_stages.max(1));
        let work = match serves {
            true => {
                let t = Instant::now();
                let ring = crate::ring::Ring::new(pg, cfg.pipeline_stages, pipe.device());
                let served = pipe.serve_ring(&ring).map_err(Error::from);
                let (whole, carries) = ring.sent();
                tracing::debug!(
                    "stage {}: {carries} carries sent on, the text context whole {whole} times",
                    ring.stage()
                );
                served.map(|_| Finished {
                    made: 0,
                    busy_s: t.elapsed().as_secs_f64(),
                })
            }
            false => work(pipe, cfg, r, &pending, &mut *source, &mut sink, pair),
        };
        stop.store(true, Ordering::Relaxed);
        let f = work?;
        let body = serde_json::to_vec(&f).map_err(|e| Error::Peer(format!("encoding the end: {e}")))?;
        pg.kv_set(&format!("{FINISHED}{}", r.rank), &body)?;
        Ok(None)
    })
}

/// One image made, before it is published.
pub struct Made<'a> {
    /// Its item.
    pub item: &'a WorkItem,
    /// The encoded image.
    pub png: Vec<u8>,
    /// Seconds per image of its block.
    pub secs: f64,
    /// Prompt tokens used.
    pub tokens: usize,
}

/// Where finished images go.
pub trait Sink {
    /// Publishes a block's images.
    fn put(&mut self, made: Vec<Made<'_>>) -> Result<()>;
}

/// The job folder: each image written atomically under its name, then its
/// record handed to `report` (rank 0's monitor, or the store).
struct FilesSink<'a, R: FnMut(Vec<Record>) -> Result<()>> {
    out: &'a Path,
    rank: usize,
    report: R,
}

impl<R: FnMut(Vec<Record>) -> Result<()>> Sink for FilesSink<'_, R> {
    fn put(&mut self, made: Vec<Made<'_>>) -> Result<()> {
        let mut records = Vec::with_capacity(made.len());
        for m in made {
            crate::files::write_atomic(&self.out.join(file_name(m.item)), &m.png)?;
            records.push(Record::new(m.item, &m.png, self.rank, m.secs, m.tokens));
        }
        (self.report)(records)
    }
}

/// The block loop: generate, then publish each block through the sink. In a
/// CFG pair both ranks denoise; the unconditional rank decodes and publishes.
fn work(
    pipe: &Pipeline,
    cfg: &JobConfig,
    r: Ranks,
    pending: &[&WorkItem],
    source: &mut dyn Source,
    sink: &mut dyn Sink,
    pair: Option<&Pair>,
) -> Result<Finished> {
    let mut made = 0usize;
    let mut busy = Duration::ZERO;
    // One ring for the job: its links remember the text contexts they carried.
    let ring = match (cfg.pipeline_chunks, r.pg) {
        (Some(_), Some(pg)) => Some(crate::ring::Ring::new(pg, cfg.pipeline_stages, pipe.device())),
        _ => None,
    };
    while let Some(block) = source.next_block()? {
        let t = Instant::now();
        let chunk = pending.get(block.clone()).ok_or_else(|| {
            Error::Peer(format!(
                "block {block:?} outside the {} pending items",
                pending.len()
            ))
        })?;
        let gen_items: Vec<Item> = chunk
            .iter()
            .map(|it| Item {
                prompt: it.prompt.clone(),
                negative_prompt: it.negative_prompt.clone(),
                seed: it.seed,
                latents: cfg.latents.and_then(|l| l.get(it.index).cloned()),
                step_noise: None,
            })
            .collect();
        // Between steps only rank 0's progress (no store, no device sync).
        let partner = pair.filter(|p| p.cfg).map(|p| p as &dyn CfgPartner);
        let params = params_of(&chunk[0].params);
        let progress = cfg.progress.filter(|_| r.rank == 0);
        let mut on_step = |i: usize, n: usize| {
            if let Some(p) = progress {
                p.step(i, n);
            }
        };
        let (latents, tokens) = match pair {
            // A decode-only pair: the even rank denoises, its partner takes the latents.
            Some(p) if !p.cfg && !p.leads() => {
                let l = p.pg.recv(p.partner, &pipe.device())?;
                if l.rank() != 4 || l.dim(0)? != chunk.len() {
                    return Err(Error::Peer(format!(
                        "rank {} sent latents {:?} for a block of {} item(s)",
                        p.partner,
                        l.dims(),
                        chunk.len()
                    )));
                }
                (l, Vec::new())
            }
            _ => {
                let out = match (cfg.pipeline_chunks, &ring) {
                    (Some(m), Some(ring)) => pipe.denoise_ring(&gen_items, &params, m, ring, &mut on_step)?,
                    _ => pipe.denoise(&gen_items, &params, &mut on_step, partner)?,
                };
                check_finite(&out.latents, chunk)?;
                if let Some(p) = pair.filter(|p| !p.cfg) {
                    p.pg.send(&out.latents, p.partner)?;
                }
                (out.latents, out.prompt_tokens)
            }
        };
        let images = match pair {
            Some(p) if cfg.vae_parallel => {
                let (top, bottom) = match p.half {
                    CfgHalf::Uncond => (r.rank, p.partner),
                    CfgHalf::Cond => (p.partner, r.rank),
                };
                let bands = crate::bands::Bands::new(p.pg, vec![top, bottom])
                    .ok_or_else(|| Error::Peer(format!("rank {} is not in its pair", r.rank)))?;
                let mine = pipe.decode_band(&latents, &bands)?;
                if p.half == CfgHalf::Cond {
                    p.pg.send(&mine, p.partner)?;
                    busy += t.elapsed();
                    continue;
                }
                let theirs = p.pg.recv(p.partner, mine.device())?;
                if theirs.dim(0)? != mine.dim(0)?
                    || theirs.dim(1)? != mine.dim(1)?
                    || theirs.dim(3)? != mine.dim(3)?
                {
                    return Err(Error::Peer(format!(
                        "rank {} sent image rows {:?} for {:?}",
                        p.partner,
                        theirs.dims(),
                        mine.dims()
                    )));
                }
                Tensor::cat(&[&mine, &theirs], 2)?
            }
            // The partner decodes and publishes.
            Some(p) if p.half == CfgHalf::Cond => {
                busy += t.elapsed();
                continue;
            }
            _ => pipe.decode_items(&latents)?,
        };
        let per_image = t.elapsed().as_secs_f64() / chunk.len() as f64;
        let mut made_now = Vec::with_capacity(chunk.len());
        for (k, img) in shoal_diffusion::image::to_rgb8(&images)?.iter().enumerate() {
            made_now.push(Made {
                item: chunk[k],
                png: shoal_diffusion::image::png_bytes(img)?,
                secs: per_image,
                tokens: tokens.get(k).copied().unwrap_or(0),
            });
        }
        made += made_now.len();
        sink.put(made_now)?;
        busy += t.elapsed();
        if let Some((n, stop)) = cfg.crash_after
            && made >= n
        {
            let (what, sig) = if stop {
                ("a stop", libc::SIGSTOP)
            } else {
                ("a crash", libc::SIGKILL)
            };
            tracing::warn!(
                "rank {}/{}: injecting {what} after {made} image(s)",
                r.rank,
                r.world
            );
            // SAFETY: raising a signal on our own process.
            unsafe { libc::raise(sig) };
        }
    }
    if let Some(ring) = &ring {
        use shoal_diffusion::StageRing;
        ring.send_next(None)?;
        let (whole, carries) = ring.sent();
        tracing::debug!("stage 0: {carries} carries sent on, the text context whole {whole} times");
    }
    Ok(Finished {
        made,
        busy_s: busy.as_secs_f64(),
    })
}

/// Latents holding NaN or ±inf would decode to a flat, silently wrong image:
/// an error naming the first such item, with what usually causes it.
fn check_finite(latents: &Tensor, chunk: &[&WorkItem]) -> Result<()> {
    // |x| <= f32::MAX holds for every finite x and fails for NaN and ±inf.
    let finite = latents
        .to_dtype(candle_core::DType::F32)?
        .abs()?
        .le(f64::from(f32::MAX))?
        .flatten_from(1)?
        .min(1)?
        .to_vec1::<u8>()?;
    if let Some(k) = finite.iter().position(|f| *f == 0) {
        let it = chunk[k];
        return Err(Error::NonFinite(format!(
            "item {} ({:?}, seed {}): the latents hold NaN or infinity after {} steps, so its image would be \
             meaningless; guidance {:?} is a usual cause (diffusers uses 1 to 20), or weights that overflow in this dtype",
            it.index, it.prompt, it.seed, it.params.steps, it.params.guidance
        )));
    }
    Ok(())
}

/// Rank 0 decides what is left (reading the job folder), everyone learns it.
fn agree_on_todo(cfg: &JobConfig, r: Ranks) -> Result<(Vec<usize>, Option<shoal_jobs::JobLock>)> {
    let decide = || -> Result<(Vec<usize>, shoal_jobs::JobLock)> {
        let lock = shoal_jobs::lock_job(cfg.out)?;
        let (spec, cache) = match cfg.model {
            Some(m) => {
                let h = m.wait()?;
                let spec = JobSpec {
                    model: h.id,
                    ..cfg.spec.clone()
                };
                (spec, Some((h.cache, h.cache_path)))
            }
            None => (cfg.spec.clone(), None),
        };
        let manifest_path = shoal_jobs::open_job(cfg.out, &spec, cfg.resume)?;
        if let Some((cache, path)) = cache
            && let Err(e) = cache.write(&path)
        {
            tracing::warn!("{e} (the model is hashed again next time)");
        }
        let manifest = shoal_jobs::read_manifest(&manifest_path)?;
        let plan = shoal_jobs::plan_resume(cfg.items, &manifest, |name| {
            crate::files::on_disk(&cfg.out.join(name))
        });
        for d in &plan.damaged {
            tracing::warn!("{d} does not match the manifest; making it again");
        }
        if cfg.resume {
            tracing::info!(
                "resuming: {} of {} images done, {} to make",
                plan.done.len(),
                cfg.items.len(),
                plan.todo.len()
            );
        }
        // Files that were published but never recorded (a crash in between) are recorded now.
        let recovered: Vec<Record> = plan
            .recovered
            .iter()
            .filter_map(|&i| {
                let it = &cfg.items[i];
                let bytes = std::fs::read(cfg.out.join(file_name(it))).ok()?;
                // Made before a crash by an unknown rank, in an unknown time.
                let mut rec = Record::new(it, &bytes, 0, 0.0, 0);
                rec.rank = None;
                Some(rec)
            })
            .collect();
        append_records(&manifest_path, &recovered)?;
        Ok((plan.todo, lock))
    };
    if r.rank != 0 {
        let Some(pg) = r.pg else {
            return Err(Error::Peer(format!(
                "rank {} of {} has no process group",
                r.rank, r.world
            )));
        };
        let d: std::result::Result<Vec<usize>, (bool, String)> = pg.broadcast_object(None, 0)?;
        return d.map(|t| (t, None)).map_err(|(usage, m)| {
            if usage {
                Error::Usage(m)
            } else {
                Error::Peer(format!("rank 0: {m}"))
            }
        });
    }
    let decided = decide();
    if let Some(pg) = r.pg {
        let shared: std::result::Result<Vec<usize>, (bool, String)> = match &decided {
            Ok((t, _)) => Ok(t.clone()),
            Err(e) => Err((e.is_usage(), e.to_string())),
        };
        let _: std::result::Result<Vec<usize>, (bool, String)> = pg.broadcast_object(Some(&shared), 0)?;
    }
    decided.map(|(t, l)| (t, Some(l)))
}
