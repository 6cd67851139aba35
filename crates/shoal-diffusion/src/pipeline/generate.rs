//! Text to image: encoding the prompts, the denoising loop, the decode, and the
//! per-item noise (diffusers' `__call__`).

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::{Encoders, Item, Output, Params, Pipeline};

/// Which half of classifier-free guidance a process computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CfgHalf {
    /// The negative (or empty) prompt's prediction.
    Uncond,
    /// The prompt's prediction.
    Cond,
}

/// The other process of a CFG-parallel pair, as the denoising loop sees it.
pub trait CfgPartner {
    /// The half this process computes.
    fn half(&self) -> CfgHalf;
    /// Sends this process's noise prediction (f32) and returns the partner's.
    fn exchange(&self, mine: &Tensor) -> Result<Tensor>;
}

/// The processes of a UNet pipeline (pipeline parallelism), as the denoising
/// loop sees them: this process runs its stages on each carry and hands it
/// on; the last stage's prediction goes back to the first process, which owns
/// the scheduler. `None` is the end of the job.
pub trait StageRing {
    /// Sends a carry to the next stage's process (`None`: the job is over).
    fn send_next(&self, c: Option<&Carry>) -> Result<()>;
    /// The next carry from the previous stage's process (`None`: the job is over).
    fn recv_prev(&self) -> Result<Option<Carry>>;
    /// The last stage sends a prediction back to the first process.
    fn send_first(&self, pred: &Tensor) -> Result<()>;
    /// The first process receives the next prediction from the last stage.
    fn recv_last(&self) -> Result<Tensor>;
    /// Whether this process holds the last stage.
    fn is_last(&self) -> bool;
}

/// The final latents `(b, c, h/f, w/f)` (f32, before VAE scaling) and, per
/// item, the prompt's token count (BOS and EOS included).
#[derive(Debug, Clone)]
pub struct Denoised {
    /// The latents.
    pub latents: Tensor,
    /// Token counts.
    pub prompt_tokens: Vec<usize>,
}

/// One half's conditioning, on the UNet's device in its dtype.
#[derive(Clone)]
struct HalfCond {
    ctx: Tensor,
    added: Option<AddedCond>,
}
use crate::clip::ClipTextModel;
use crate::error::{Error, Result};
use crate::scheduler::Scheduler;
use crate::tokenizer::ClipTokenizer;
use crate::unet::{AddedCond, Carry};

impl Pipeline {
    /// The seeded initial noise of one item, `(c, h/f, w/f)` f32 (host RNG).
    pub fn noise(&self, seed: u64, p: &Params) -> Result<Tensor> {
        let f = self.vae_scale_factor();
        let shape = (self.latent_channels, p.height / f, p.width / f);
        Ok(host_normal(
            seed,
            shape.0 * shape.1 * shape.2,
            shape,
            &self.devices().unet,
        )?)
    }

    fn encode_sd(
        &self,
        tok: &ClipTokenizer,
        te: &ClipTextModel,
        prompts: &[&str],
        what: &str,
    ) -> Result<(Tensor, Vec<usize>)> {
        let mut ids = Vec::new();
        let mut lens = Vec::new();
        for p in prompts {
            let t = tok.encode(p)?;
            warn_truncation(tok, p, &t, what);
            lens.push(t.untruncated_len);
            ids.push(t.ids);
        }
        Ok((te.forward(&ids, &self.devices().text_encoder)?.last_hidden, lens))
    }

    /// Text conditioning for prompts: `(context, pooled for SDXL, token counts)`.
    fn encode(
        &self,
        enc: &Encoders,
        prompts: &[&str],
        what: &str,
    ) -> Result<(Tensor, Option<Tensor>, Vec<usize>)> {
        let d = self.devices();
        match enc {
            Encoders::Sd { tok, te } => {
                let (c, l) = self.encode_sd(tok, te, prompts, what)?;
                Ok((c, None, l))
            }
            Encoders::Xl { tok, te, tok2, te2 } => {
                let mut ids1 = Vec::new();
                let mut ids2 = Vec::new();
                let mut lens = Vec::new();
                for p in prompts {
                    let t1 = tok.encode(p)?;
                    warn_truncation(tok, p, &t1, what);
                    lens.push(t1.untruncated_len);
                    ids1.push(t1.ids);
                    ids2.push(tok2.encode(p)?.ids);
                }
                let o1 = te.forward(&ids1, &d.text_encoder)?;
                let o2 = te2.forward(&ids2, &d.text_encoder_2)?;
                // Activations move to the UNet's device; the encoders may sit elsewhere.
                let ctx = Tensor::cat(
                    &[
                        o1.penultimate.to_device(&d.unet)?,
                        o2.penultimate.to_device(&d.unet)?,
                    ],
                    2,
                )?;
                Ok((ctx, Some(o2.pooled.to_device(&d.unet)?), lens))
            }
        }
    }

    /// Runs a batch: every item shares `p`; each item's noise is its own.
    pub fn generate(
        &self,
        items: &[Item],
        p: &Params,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Output> {
        let d = self.denoise(items, p, on_step, None)?;
        let images = self.decode_items(&d.latents)?;
        Ok(Output {
            latents: d.latents,
            images,
            prompt_tokens: d.prompt_tokens,
        })
    }

    /// The denoising loop of [`Pipeline::generate`], without the decode. With a
    /// `partner`, this process computes one half of classifier-free guidance
    /// (its text encoding and its UNet call each step) and the partner the
    /// other; the two predictions are exchanged every step and both processes
    /// apply the same guidance and scheduler step, so both end with the same
    /// latents (guidance must be above 1).
    pub fn denoise(
        &self,
        items: &[Item],
        p: &Params,
        on_step: &mut dyn FnMut(usize, usize),
        partner: Option<&dyn CfgPartner>,
    ) -> Result<Denoised> {
        self.check(p)?;
        if items.is_empty() {
            return Err(Error::invalid("items", 0, "a batch needs at least one item"));
        }
        if partner.is_some() && p.guidance <= 1.0 {
            return Err(Error::invalid(
                "guidance",
                p.guidance,
                "CFG parallelism splits the unconditional and conditional halves of guidance; \
                 at guidance 1 or below there is only one",
            ));
        }
        if !self.batch_invariant || items.len() == 1 {
            return self.denoise_batch(items, p, on_step, partner);
        }
        let outs = items
            .iter()
            .map(|it| self.denoise_batch(std::slice::from_ref(it), p, on_step, partner))
            .collect::<Result<Vec<_>>>()?;
        let latents: Vec<&Tensor> = outs.iter().map(|o| &o.latents).collect();
        Ok(Denoised {
            latents: Tensor::cat(&latents, 0)?,
            prompt_tokens: outs.iter().flat_map(|o| o.prompt_tokens.clone()).collect(),
        })
    }

    /// Decodes latents `(b, c, h/f, w/f)` to images in [0, 1]: one item at a time
    /// when the pipeline is batch-invariant (CPU), else as one batch.
    pub fn decode_items(&self, latents: &Tensor) -> Result<Tensor> {
        let b = latents.dim(0)?;
        if !self.batch_invariant || b == 1 {
            return self.decode(latents);
        }
        let imgs = (0..b)
            .map(|k| self.decode(&latents.narrow(0, k, 1)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&imgs, 0)?)
    }

    /// Token counts of prompts (BOS and EOS included), without the text encoder.
    fn token_counts(&self, enc: &Encoders, prompts: &[&str]) -> Result<Vec<usize>> {
        let tok = match enc {
            Encoders::Sd { tok, .. } | Encoders::Xl { tok, .. } => tok,
        };
        prompts
            .iter()
            .map(|p| Ok(tok.encode(p)?.untruncated_len))
            .collect()
    }

    /// The conditioning of each guidance half this process computes, in order
    /// (unconditional first), and the prompts' token counts.
    fn conditioning(
        &self,
        items: &[Item],
        p: &Params,
        half: Option<CfgHalf>,
    ) -> Result<(Vec<HalfCond>, Vec<usize>)> {
        let prompts: Vec<&str> = items.iter().map(|i| i.prompt.as_str()).collect();
        let negs: Vec<&str> = items
            .iter()
            .map(|i| i.negative_prompt.as_deref().unwrap_or(""))
            .collect();
        let enc = self.encoders()?;
        let zeros = self.xl && self.force_zeros && items.iter().all(|i| i.negative_prompt.is_none());
        let zeros_like = |(c, pl): &(Tensor, Option<Tensor>)| -> Result<(Tensor, Option<Tensor>)> {
            Ok((c.zeros_like()?, pl.as_ref().map(Tensor::zeros_like).transpose()?))
        };
        let strip = |(c, pl, _): (Tensor, Option<Tensor>, Vec<usize>)| (c, pl);
        let (raw, lens) = match (p.guidance > 1.0, half) {
            (false, _) => {
                let (c, pl, lens) = self.encode(&enc, &prompts, "prompt")?;
                (vec![(c, pl)], lens)
            }
            (true, Some(CfgHalf::Cond)) => {
                let (c, pl, lens) = self.encode(&enc, &prompts, "prompt")?;
                (vec![(c, pl)], lens)
            }
            (true, Some(CfgHalf::Uncond)) if zeros => {
                let (c, pl, lens) = self.encode(&enc, &prompts, "prompt")?;
                (vec![zeros_like(&(c, pl))?], lens)
            }
            (true, Some(CfgHalf::Uncond)) => {
                let lens = self.token_counts(&enc, &prompts)?;
                (vec![strip(self.encode(&enc, &negs, "negative prompt")?)], lens)
            }
            (true, None) => {
                let (c, pl, lens) = self.encode(&enc, &prompts, "prompt")?;
                let cond = (c, pl);
                let neg = if zeros {
                    zeros_like(&cond)?
                } else {
                    strip(self.encode(&enc, &negs, "negative prompt")?)
                };
                (vec![neg, cond], lens)
            }
        };
        // Under offload the encoders are freed before the UNet is loaded.
        drop(enc);
        let devs = self.devices();
        let halves = raw
            .into_iter()
            .map(|(ctx, pooled)| -> Result<HalfCond> {
                let ctx = ctx.to_device(&devs.unet)?.to_dtype(self.dtype)?;
                let added = match pooled {
                    Some(text_embeds) => {
                        let n = text_embeds.dim(0)?;
                        let (h, w) = (p.height as f32, p.width as f32);
                        let ids: Vec<f32> = (0..n).flat_map(|_| [h, w, 0.0, 0.0, h, w]).collect();
                        Some(AddedCond {
                            text_embeds: text_embeds.to_device(&devs.unet)?.to_dtype(self.dtype)?,
                            time_ids: Tensor::from_vec(ids, (n, 6), &devs.unet)?,
                        })
                    }
                    None => None,
                };
                Ok(HalfCond { ctx, added })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((halves, lens))
    }

    fn denoise_batch(
        &self,
        items: &[Item],
        p: &Params,
        on_step: &mut dyn FnMut(usize, usize),
        partner: Option<&dyn CfgPartner>,
    ) -> Result<Denoised> {
        let b = items.len();
        let f = self.vae_scale_factor();
        let mut sched = Scheduler::new(&self.sched, p.steps)?;
        let devs = self.devices();
        let cfg = p.guidance > 1.0;
        let half = partner.map(|pt| pt.half());
        let (halves, prompt_tokens) = self.conditioning(items, p, half)?;
        crate::nn::memory::phase_done("text encoders", &devs.unet);
        // One UNet call over both halves, except where the halves are split:
        // between two processes, or on a batch-invariant pipeline (the CPU), where
        // each half is its own call so that a split job computes the same bits.
        let joint = if cfg && partner.is_none() && !self.batch_invariant {
            let added = match (&halves[0].added, &halves[1].added) {
                (Some(u), Some(c)) => Some(AddedCond {
                    text_embeds: Tensor::cat(&[&u.text_embeds, &c.text_embeds], 0)?,
                    time_ids: Tensor::cat(&[&u.time_ids, &c.time_ids], 0)?,
                }),
                _ => None,
            };
            Some(HalfCond {
                ctx: Tensor::cat(&[&halves[0].ctx, &halves[1].ctx], 0)?,
                added,
            })
        } else {
            None
        };

        let shape = (self.latent_channels, p.height / f, p.width / f);
        let mut init = Vec::with_capacity(b);
        for it in items {
            let t = match &it.latents {
                Some(l) => {
                    if l.dims() != [shape.0, shape.1, shape.2] {
                        return Err(Error::invalid(
                            "latents",
                            format!("{:?}", l.dims()),
                            format!(
                                "expected {:?} for {}×{}",
                                [shape.0, shape.1, shape.2],
                                p.height,
                                p.width
                            ),
                        ));
                    }
                    (l.to_device(&devs.unet)?.to_dtype(DType::F32)? * sched.init_noise_sigma())?
                }
                None => (self.noise(it.seed, p)? * sched.init_noise_sigma())?,
            };
            init.push(t);
        }
        let mut x = Tensor::stack(&init, 0)?;
        let unet = self.unet()?;
        let n = sched.timesteps().len();
        let eval = |sched: &Scheduler, i: usize, xin: &Tensor, h: &HalfCond| -> Result<Tensor> {
            let t = sched.timesteps()[i];
            let xin = sched.scale_model_input(xin, i)?.to_dtype(self.dtype)?;
            Ok(crate::nn::profile::scope(
                "UNet (whole call)",
                xin.device(),
                || {
                    unet.forward(&xin, t, &h.ctx, h.added.as_ref())
                        .map_err(|e| candle_core::Error::Msg(e.to_string()))?
                        .to_dtype(DType::F32)
                },
            )?)
        };
        // A new batch shape: its cuDNN plans built ahead, side by side (the
        // first step's UNet call and one item's decode, run to collect them).
        let shape_key = (b, p.height, p.width, joint.is_some());
        // Not under sequential offload, whose point is memory: the threads' cuDNN
        // handles cost 0.12 GiB there (0.78 against 0.66 GiB, docs/PERFORMANCE.md).
        let fresh = self.plan_threads > 0
            && !self.offloads_sequentially()
            && n > 0
            && self
                .planned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(shape_key);
        if fresh {
            crate::nn::prebuild_plans(&devs.unet, self.plan_threads, || {
                let first = match &joint {
                    Some(j) => eval(&sched, 0, &Tensor::cat(&[&x, &x], 0)?, j),
                    None => eval(&sched, 0, &x, &halves[0]),
                };
                first.map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                // The decode's plans too where the VAE shares the UNet's GPU (the
                // keys name no device: a device map builds the VAE's on first use).
                if !self.unet_only && devs.vae.same_device(&devs.unet) {
                    self.decode(&x.narrow(0, 0, 1)?)
                        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                }
                Ok(())
            })?;
        }
        for i in 0..n {
            let eval = |xin: &Tensor, h: &HalfCond| eval(&sched, i, xin, h);
            let guide = |u: &Tensor, c: &Tensor| -> Result<Tensor> { Ok((u + ((c - u)? * p.guidance)?)?) };
            let out = match (&joint, partner) {
                _ if !cfg => eval(&x, &halves[0])?,
                (Some(j), _) => {
                    let out = eval(&Tensor::cat(&[&x, &x], 0)?, j)?;
                    guide(&out.narrow(0, 0, b)?, &out.narrow(0, b, b)?)?
                }
                (None, Some(pt)) => {
                    let mine = eval(&x, &halves[0])?;
                    let other = pt.exchange(&mine)?;
                    if other.dims() != mine.dims() || other.dtype() != mine.dtype() {
                        return Err(Error::Partner(format!(
                            "step {i}: sent a prediction {:?} {:?} for {:?} {:?}",
                            other.dims(),
                            other.dtype(),
                            mine.dims(),
                            mine.dtype()
                        )));
                    }
                    match pt.half() {
                        CfgHalf::Uncond => guide(&mine, &other)?,
                        CfgHalf::Cond => guide(&other, &mine)?,
                    }
                }
                (None, None) => guide(&eval(&x, &halves[0])?, &eval(&x, &halves[1])?)?,
            };
            let noise = match sched.needs_noise() {
                true => Some(step_noise(items, i, shape, &devs.unet)?),
                false => None,
            };
            x = crate::nn::profile::scope("scheduler + CFG", x.device(), || {
                sched
                    .step(&out, i, &x, noise.as_ref())
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))
            })?;
            on_step(i + 1, n);
        }
        drop(unet);
        crate::nn::memory::phase_done("denoising", &devs.unet);
        Ok(Denoised {
            latents: x,
            prompt_tokens,
        })
    }

    /// The first process of a UNet pipeline: the denoising loop of `items`
    /// with the UNet's stages spread over the ring's processes (this one runs
    /// the stages it holds). Items go in groups (`chunks` micro-batches; one
    /// item each on a batch-invariant pipeline, whose guidance halves also go
    /// separately, so the bits equal one process's); every group's UNet calls
    /// for step i are sent before the predictions of step i − 1 of the next
    /// group are awaited, so the stages stay busy across steps: the pipeline
    /// fills once per batch of items, not once per step.
    pub fn denoise_ring(
        &self,
        items: &[Item],
        p: &Params,
        chunks: usize,
        ring: &dyn StageRing,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Denoised> {
        self.check(p)?;
        let b = items.len();
        if b == 0 || chunks == 0 {
            return Err(Error::invalid(
                "items",
                b,
                "a pipeline needs items and at least one micro-batch",
            ));
        }
        let f = self.vae_scale_factor();
        let devs = self.devices();
        let cfg = p.guidance > 1.0;
        let groups: Vec<std::ops::Range<usize>> = if self.batch_invariant {
            (0..b).map(|i| i..i + 1).collect()
        } else {
            let m = chunks.min(b);
            (0..m)
                .map(|r| {
                    let (base, extra) = (b / m, b % m);
                    let start = r * base + r.min(extra);
                    start..start + base + usize::from(r < extra)
                })
                .collect()
        };
        let shape = (self.latent_channels, p.height / f, p.width / f);
        let mut units: Vec<Vec<HalfCond>> = Vec::with_capacity(groups.len());
        let mut joint = Vec::with_capacity(groups.len());
        let mut xs = Vec::with_capacity(groups.len());
        let mut scheds = Vec::with_capacity(groups.len());
        let mut prompt_tokens = Vec::with_capacity(b);
        for g in &groups {
            let its = &items[g.clone()];
            let (halves, lens) = self.conditioning(its, p, None)?;
            prompt_tokens.extend(lens);
            let together = cfg && !self.batch_invariant;
            units.push(if together {
                let added = match (&halves[0].added, &halves[1].added) {
                    (Some(u), Some(c)) => Some(AddedCond {
                        text_embeds: Tensor::cat(&[&u.text_embeds, &c.text_embeds], 0)?,
                        time_ids: Tensor::cat(&[&u.time_ids, &c.time_ids], 0)?,
                    }),
                    _ => None,
                };
                vec![HalfCond {
                    ctx: Tensor::cat(&[&halves[0].ctx, &halves[1].ctx], 0)?,
                    added,
                }]
            } else {
                halves
            });
            joint.push(together);
            let sched = Scheduler::new(&self.sched, p.steps)?;
            let mut init = Vec::with_capacity(its.len());
            for it in its {
                init.push(match &it.latents {
                    Some(l) => (l.to_device(&devs.unet)?.to_dtype(DType::F32)? * sched.init_noise_sigma())?,
                    None => (self.noise(it.seed, p)? * sched.init_noise_sigma())?,
                });
            }
            xs.push(Tensor::stack(&init, 0)?);
            scheds.push(sched);
        }
        let unet = self.unet()?;
        let mine: Vec<crate::unet::Stage> = match &self.unet_stages {
            Some(s) => s.clone(),
            None => unet.stages(),
        };
        let n = scheds[0].timesteps().len();
        let guide = |u: &Tensor, c: &Tensor| -> Result<Tensor> { Ok((u + ((c - u)? * p.guidance)?)?) };
        // Receives group k's predictions of step i and takes its scheduler step.
        let finish = |k: usize, i: usize, xs: &mut Vec<Tensor>, scheds: &mut Vec<Scheduler>| -> Result<()> {
            let preds = (0..units[k].len())
                .map(|_| Ok(ring.recv_last()?.to_dtype(DType::F32)?))
                .collect::<Result<Vec<_>>>()?;
            let bg = groups[k].len();
            let out = match (cfg, joint[k]) {
                (false, _) => preds[0].clone(),
                (true, true) => guide(&preds[0].narrow(0, 0, bg)?, &preds[0].narrow(0, bg, bg)?)?,
                (true, false) => guide(&preds[0], &preds[1])?,
            };
            let noise = match scheds[k].needs_noise() {
                true => Some(step_noise(&items[groups[k].clone()], i, shape, &devs.unet)?),
                false => None,
            };
            xs[k] = scheds[k]
                .step(&out, i, &xs[k], noise.as_ref())
                .map_err(|e| Error::Candle(candle_core::Error::Msg(e.to_string())))?;
            Ok(())
        };
        for i in 0..n {
            let t = scheds[0].timesteps()[i];
            for k in 0..groups.len() {
                if i > 0 {
                    finish(k, i - 1, &mut xs, &mut scheds)?;
                }
                for u in &units[k] {
                    let xin = if joint[k] {
                        Tensor::cat(&[&xs[k], &xs[k]], 0)?
                    } else {
                        xs[k].clone()
                    };
                    let xin = scheds[k].scale_model_input(&xin, i)?.to_dtype(self.dtype)?;
                    let mut c = Carry::new(&xin, t, &u.ctx, u.added.as_ref());
                    for st in &mine {
                        c = unet.run_stage(*st, c)?;
                    }
                    ring.send_next(Some(&c))?;
                }
            }
            on_step(i + 1, n);
        }
        for k in 0..groups.len() {
            finish(k, n - 1, &mut xs, &mut scheds)?;
        }
        let latents: Vec<&Tensor> = xs.iter().collect();
        Ok(Denoised {
            latents: Tensor::cat(&latents, 0)?,
            prompt_tokens,
        })
    }

    /// A later process of a UNet pipeline: runs its stages on every carry the
    /// previous process sends, until the end of the job; the last stage sends
    /// each prediction back to the first process. Returns the carries served.
    pub fn serve_ring(&self, ring: &dyn StageRing) -> Result<usize> {
        let unet = self.unet()?;
        let mine: Vec<crate::unet::Stage> = match &self.unet_stages {
            Some(s) => s.clone(),
            None => unet.stages(),
        };
        let mut served = 0;
        loop {
            let Some(mut c) = ring.recv_prev()? else {
                if !ring.is_last() {
                    ring.send_next(None)?;
                }
                return Ok(served);
            };
            for st in &mine {
                c = unet.run_stage(*st, c)?;
            }
            if ring.is_last() {
                ring.send_first(&c.x)?;
            } else {
                ring.send_next(Some(&c))?;
            }
            served += 1;
        }
    }

    /// This process's band of rows of the decoded images, in [0, 1] on the CPU
    /// (the split VAE decode, [`crate::vae::Decoder::decode_band`]); one item
    /// at a time when the pipeline is batch-invariant. Stacked along the rows,
    /// the bands of all processes are [`Pipeline::decode_items`]' images up
    /// to the order of additions in the GroupNorm statistics.
    pub fn decode_band(&self, latents: &Tensor, comm: &dyn crate::vae::BandComm) -> Result<Tensor> {
        let b = latents.dim(0)?;
        if self.batch_invariant && b > 1 {
            let parts = (0..b)
                .map(|k| self.decode_band(&latents.narrow(0, k, 1)?, comm))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Tensor::cat(&parts, 0)?);
        }
        let vae = self.vae()?;
        let z = (latents.to_device(&self.devices().vae)? / self.vae_cfg.scaling_factor)?
            .to_dtype(self.vae_dtype)?;
        let img = crate::nn::profile::scope("VAE decode (band)", z.device(), || vae.decode_band(&z, comm))?
            .to_dtype(DType::F32)?;
        Ok(((img / 2.0)? + 0.5)?.clamp(0f32, 1f32)?.to_device(&Device::Cpu)?)
    }

    /// VAE decode to images in [0, 1] (on the CPU, whatever the VAE's device).
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let vae = self.vae()?;
        let z = (latents.to_device(&self.devices().vae)? / self.vae_cfg.scaling_factor)?
            .to_dtype(self.vae_dtype)?;
        let img = crate::nn::profile::scope("VAE decode (whole)", z.device(), || vae.decode(&z))?
            .to_dtype(DType::F32)?;
        crate::nn::memory::phase_done("VAE decode", z.device());
        Ok(((img / 2.0)? + 0.5)?.clamp(0f32, 1f32)?.to_device(&Device::Cpu)?)
    }
}

fn warn_truncation(tok: &ClipTokenizer, prompt: &str, t: &crate::tokenizer::Tokens, what: &str) {
    if t.untruncated_len > tok.max_len() {
        tracing::warn!(
            "the {what} {:?} has {} tokens; CLIP reads {} (BOS and EOS included), the rest is ignored",
            prompt.chars().take(60).collect::<String>(),
            t.untruncated_len,
            tok.max_len()
        );
    }
}

/// The fresh noise of step `i` for `items` (ancestral sampling), `(b, c, h, w)` f32
/// on `device`: each item's own (`step_noise`), or drawn from its step seed.
fn step_noise(items: &[Item], i: usize, shape: (usize, usize, usize), device: &Device) -> Result<Tensor> {
    let per: Vec<Tensor> = items
        .iter()
        .map(|it| match &it.step_noise {
            Some(n) => n.get(i)?.to_device(device)?.to_dtype(DType::F32),
            None => host_normal(step_seed(it.seed, i), shape.0 * shape.1 * shape.2, shape, device),
        })
        .collect::<candle_core::Result<_>>()?;
    Ok(Tensor::stack(&per, 0)?)
}

/// splitmix64: spreads a seed's bits.
pub fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

fn step_seed(seed: u64, step: usize) -> u64 {
    splitmix(seed ^ splitmix(0xA5A5_0000 + step as u64))
}

fn host_normal(
    seed: u64,
    n: usize,
    shape: (usize, usize, usize),
    device: &Device,
) -> candle_core::Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    Tensor::from_vec(v, shape, device)
}
