//! `UNet2DConditionModel` for SD 1.x, 2.x and XL.
//!
//! Written from `huggingface/diffusers src/diffusers/models/unets/unet_2d_condition.py`,
//! `unet_2d_blocks.py`, `models/resnet.py`, `models/attention.py` and
//! `models/transformers/transformer_2d.py`. Weight paths are the PyTorch
//! state-dict keys. Unlike candle-transformers' UNet it is built from
//! `config.json` (any block count, widths, group count, heads, transformer
//! depth per block) and has SDXL's `add_embedding` (`addition_embed_type:
//! text_time`).

//!
//! The files follow diffusers': `embeddings.rs`, `resnet.rs`, `transformer_2d.rs`,
//! `blocks.rs` (`unet_2d_blocks.py`), and this one (`unet_2d_condition.py`),
//! which also holds the stage API ([`Stage`], [`Carry`]): the forward pass as
//! a list of stages with everything passed between them made explicit, the
//! basis for pipeline parallelism.

mod blocks;
mod embeddings;
mod resnet;
mod transformer_2d;

pub use embeddings::timestep_embedding;

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::config::{BlockSpec, UNetConfig};
use crate::error::{Error, Result};
use crate::nn::{self, Conv2d, Kernels, Layout};
use crate::weights::Part;

use blocks::{Builder, Head, Level, Mid, Tail};
use resnet::Resnet;
use transformer_2d::Transformer2D;

type CResult<T> = candle_core::Result<T>;

fn conv(vb: VarBuilder, cin: usize, cout: usize, k: usize, stride: usize, layout: Layout) -> CResult<Conv2d> {
    nn::conv2d_in(vb, cin, cout, k, stride, k / 2, layout)
}

/// The parts of a resident UNet (all of them, or one pipeline stage's).
struct Resident {
    head: Option<Head>,
    down: Vec<Option<Level>>,
    mid: Option<Mid>,
    up: Vec<Option<Level>>,
    tail: Option<Tail>,
}

/// Where the UNet's weights are between calls.
enum Parts {
    /// Every part built once and kept on its device.
    Resident(Box<Resident>),
    /// Sequential offload: each part is built from the memory-mapped file onto
    /// the device right before it runs and freed right after, so only one
    /// block's weights are on the device at a time.
    Streamed(VarBuilder<'static>),
}

/// The UNet.
pub struct UNet {
    config: UNetConfig,
    blocks: Vec<BlockSpec>,
    parts: Parts,
    layout: Layout,
    /// For the steps between the layers (skip concatenation, upsample).
    kernels: Kernels,
    /// The forward pass recorded as a CUDA graph ([`UNet::record_graphs`]).
    graphs: Option<crate::nn::graph::Graphs>,
    /// Whether the weights are on a CUDA device.
    cuda: bool,
}

impl std::fmt::Debug for UNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.parts {
            Parts::Resident(_) => "resident",
            Parts::Streamed(_) => "streamed",
        };
        write!(f, "UNet({} blocks, {mode})", self.blocks.len())
    }
}

/// SDXL's extra conditioning: pooled text embeddings and the six time ids.
#[derive(Debug, Clone)]
pub struct AddedCond {
    /// `text_embeds`: `(batch, pooled width)`.
    pub text_embeds: Tensor,
    /// `time_ids`: `(batch, 6)`.
    pub time_ids: Tensor,
}

impl UNet {
    /// Builds the UNet from its config; `vb` is rooted at the state dict. The
    /// activations' layout is [`Layout::for_weights`].
    pub fn new(vb: VarBuilder, config: &UNetConfig, blocks: &[BlockSpec]) -> Result<Self> {
        let layout = Layout::for_weights(vb.device(), vb.dtype());
        Self::new_in(vb, config, blocks, layout)
    }

    /// [`UNet::new`] with the activations in `layout` between the layers
    /// (inputs and outputs stay NCHW).
    pub fn new_in(vb: VarBuilder, config: &UNetConfig, blocks: &[BlockSpec], layout: Layout) -> Result<Self> {
        Self::new_stages(vb, config, blocks, layout, None)
    }

    /// A UNet holding only the parts of `held` (a pipeline stage; `None`: all):
    /// the other parts' weights are never read from the memory-mapped file, and
    /// running their stages is an error.
    pub fn new_stages(
        vb: VarBuilder,
        config: &UNetConfig,
        blocks: &[BlockSpec],
        layout: Layout,
        held: Option<&[Stage]>,
    ) -> Result<Self> {
        let kernels = Kernels::for_weights(vb.device(), vb.dtype());
        let cuda = vb.device().is_cuda();
        let b = Builder {
            vb,
            c: config,
            blocks,
            layout,
        };
        let n = blocks.len();
        let has = |s: Stage| held.is_none_or(|h| h.contains(&s));
        let parts = Parts::Resident(Box::new(Resident {
            head: has(Stage::Head).then(|| b.head()).transpose()?,
            down: (0..n)
                .map(|i| has(Stage::Down(i)).then(|| b.down(i)).transpose())
                .collect::<CResult<_>>()?,
            mid: has(Stage::Mid).then(|| b.mid()).transpose()?,
            up: (0..n)
                .map(|i| has(Stage::Up(i)).then(|| b.up(i)).transpose())
                .collect::<CResult<_>>()?,
            tail: has(Stage::Tail).then(|| b.tail()).transpose()?,
        }));
        Ok(UNet {
            config: config.clone(),
            blocks: blocks.to_vec(),
            parts,
            layout,
            kernels,
            graphs: None,
            cuda,
        })
    }

    /// A UNet whose weights stay in `vb` (memory-mapped files) and are moved to
    /// `vb`'s device one block at a time, for each forward pass. A weight that
    /// does not match the config is reported when its block first runs.
    pub fn streamed(vb: VarBuilder<'static>, config: &UNetConfig, blocks: &[BlockSpec]) -> Result<Self> {
        Ok(UNet {
            cuda: vb.device().is_cuda(),
            layout: Layout::for_weights(vb.device(), vb.dtype()),
            kernels: Kernels::for_weights(vb.device(), vb.dtype()),
            config: config.clone(),
            blocks: blocks.to_vec(),
            parts: Parts::Streamed(vb),
            graphs: None,
        })
    }

    /// Records [`UNet::forward`] as a CUDA graph per input shape and replays it
    /// ([`crate::nn::graph`]) where that is sound: on CUDA with the fast kernels,
    /// every stage held and resident, and no per-op profile. `on = false` (or
    /// anywhere else) keeps every call eager. Returns whether graphs are on.
    pub fn record_graphs(&mut self, on: bool) -> bool {
        let whole = match &self.parts {
            Parts::Resident(r) => {
                r.head.is_some()
                    && r.mid.is_some()
                    && r.tail.is_some()
                    && r.down.iter().chain(&r.up).all(Option::is_some)
            }
            Parts::Streamed(_) => false,
        };
        let want = crate::nn::graph::wanted(
            self.cuda,
            self.kernels == Kernels::Fast,
            whole,
            crate::nn::profile::enabled(),
            on,
        );
        self.graphs = want.then(crate::nn::graph::Graphs::new);
        want
    }

    /// The layout of the activations between stages ([`Carry::x`] and
    /// [`Carry::skips`] from `head` to `tail`).
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// A part: borrowed when resident, built from the weights when streamed.
    fn part<'a, T>(
        &'a self,
        resident: impl FnOnce(&'a Resident) -> Option<&'a T>,
        build: impl FnOnce(&Builder<'_>) -> CResult<T>,
    ) -> CResult<Part<'a, T>> {
        match &self.parts {
            Parts::Streamed(vb) => {
                crate::nn::memory::settle(vb.device())?;
                Ok(Part::Owned(build(&Builder {
                    vb: vb.clone(),
                    c: &self.config,
                    blocks: &self.blocks,
                    layout: self.layout,
                })?))
            }
            Parts::Resident(r) => resident(r)
                .map(Part::Borrowed)
                .ok_or_else(|| candle_core::Error::Msg("this UNet stage is not held by this process".into())),
        }
    }

    fn head(&self) -> CResult<Part<'_, Head>> {
        self.part(|r| r.head.as_ref(), |b| b.head())
    }

    /// The block spec of a level.
    fn level_block(&self, side: Side, i: usize) -> &BlockSpec {
        match side {
            Side::Down => &self.blocks[i],
            Side::Up => &self.blocks[self.blocks.len() - 1 - i],
        }
    }

    /// How many ResNets a level has (a down level one per layer, an up level one more).
    fn level_len(&self, side: Side, i: usize) -> usize {
        let layers = self.level_block(side, i).layers;
        match side {
            Side::Down => layers,
            Side::Up => layers + 1,
        }
    }

    fn held_level(r: &Resident, side: Side, i: usize) -> Option<&Level> {
        match side {
            Side::Down => r.down.get(i).and_then(Option::as_ref),
            Side::Up => r.up.get(i).and_then(Option::as_ref),
        }
    }

    fn spec<'b>(b: &'b Builder<'_>, side: Side, i: usize) -> blocks::LevelSpec<'b> {
        match side {
            Side::Down => b.down_spec(i),
            Side::Up => b.up_spec(i),
        }
    }

    /// ResNet `j` of a level: borrowed when resident, built alone when streamed.
    fn resnet(&self, side: Side, i: usize, j: usize) -> CResult<Part<'_, Resnet>> {
        self.part(
            |r| Self::held_level(r, side, i).and_then(|l| l.resnets.get(j)),
            |b| b.level_resnet(&Self::spec(b, side, i), j),
        )
    }

    /// Attention `j` of a level, if the level has attention.
    fn attn(&self, side: Side, i: usize, j: usize) -> CResult<Option<Part<'_, Transformer2D>>> {
        if !self.level_block(side, i).cross_attn {
            return Ok(None);
        }
        self.part(
            |r| Self::held_level(r, side, i).and_then(|l| l.attns.get(j)),
            |b| {
                b.level_attn(&Self::spec(b, side, i), j)?
                    .ok_or_else(|| candle_core::Error::Msg(format!("level {i} has no attention")))
            },
        )
        .map(Some)
    }

    /// A level's resampler, if it has one.
    fn resample(&self, side: Side, i: usize) -> CResult<Option<Part<'_, Conv2d>>> {
        if i + 1 >= self.blocks.len() {
            return Ok(None);
        }
        self.part(
            |r| Self::held_level(r, side, i).and_then(|l| l.resample.as_ref()),
            |b| {
                b.level_resample(&Self::spec(b, side, i))?
                    .ok_or_else(|| candle_core::Error::Msg(format!("level {i} has no resampler")))
            },
        )
        .map(Some)
    }

    fn mid_resnet(&self, j: usize) -> CResult<Part<'_, Resnet>> {
        self.part(
            |r| r.mid.as_ref().and_then(|m| m.resnets.get(j)),
            |b| b.mid_resnet(j),
        )
    }

    fn mid_attn(&self) -> CResult<Part<'_, Transformer2D>> {
        self.part(|r| r.mid.as_ref().map(|m| &m.attn), |b| b.mid_attn())
    }

    fn tail(&self) -> CResult<Part<'_, Tail>> {
        self.part(|r| r.tail.as_ref(), |b| b.tail())
    }

    /// Whether the model needs [`AddedCond`] (SDXL).
    pub fn needs_added_cond(&self) -> bool {
        self.config.addition_embed_type.is_some()
    }

    /// The stages of the forward pass, in order: `head`, `down_blocks.0` …,
    /// `mid_block`, `up_blocks.0` …, `tail`.
    pub fn stages(&self) -> Vec<Stage> {
        let n = self.blocks.len();
        let mut v = vec![Stage::Head];
        v.extend((0..n).map(Stage::Down));
        v.push(Stage::Mid);
        v.extend((0..n).map(Stage::Up));
        v.push(Stage::Tail);
        v
    }

    /// Predicts noise (or v) for `sample` `(b, c, h, w)` at timestep `t`,
    /// conditioned on `ctx` `(b, 77, cross_attention_dim)`: every stage in turn.
    pub fn forward(
        &self,
        sample: &Tensor,
        t: f64,
        ctx: &Tensor,
        added: Option<&AddedCond>,
    ) -> Result<Tensor> {
        // The time embedding is made outside the graph: it uploads the timestep.
        let emb = self.time_embedding(sample, t, added)?;
        let body = |inputs: &[Tensor]| -> Result<Tensor> {
            let mut carry = Carry::new(&inputs[0], t, &inputs[2], None);
            carry.emb = Some(inputs[1].clone());
            for stage in self.stages() {
                carry = self.run_stage(stage, carry)?;
            }
            Ok(carry.x)
        };
        match &self.graphs {
            Some(g) => g.run(&[sample, &emb, ctx], &body),
            None => body(&[sample.clone(), emb, ctx.clone()]),
        }
    }

    /// `time_embedding` (and SDXL's `add_embedding`) of `t` for a batch like
    /// `sample`, after the SiLU that every ResNet applies before its
    /// `time_emb_proj` (done once here instead of once per ResNet: same values).
    fn time_embedding(&self, sample: &Tensor, t: f64, added: Option<&AddedCond>) -> Result<Tensor> {
        let cfg = &self.config;
        let dtype = sample.dtype();
        let b = sample.dim(0)?;
        let head = self.head()?;
        let ts = Tensor::full(t as f32, (b,), sample.device())?;
        let t_emb = timestep_embedding(
            &ts,
            self.blocks[0].channels,
            cfg.flip_sin_to_cos,
            cfg.freq_shift as f64,
        )?;
        let mut emb = head.time_embedding.forward(&t_emb.to_dtype(dtype)?)?;
        if let (Some(add), Some(cond)) = (&head.add_embedding, added) {
            let dim = cfg.addition_time_embed_dim.unwrap_or(256);
            let ids = cond.time_ids.flatten_all()?;
            let te = timestep_embedding(&ids, dim, cfg.flip_sin_to_cos, cfg.freq_shift as f64)?
                .reshape((b, ()))?;
            let add_in = Tensor::cat(&[cond.text_embeds.to_dtype(dtype)?, te.to_dtype(dtype)?], 1)?;
            emb = (emb + add.forward(&add_in)?)?;
        }
        Ok(emb.silu()?)
    }

    /// Runs one stage on `carry`, returning the carry for the next stage (after
    /// `tail`, `x` holds the prediction). A stage needs nothing but the carry
    /// and its own weights.
    pub fn run_stage(&self, stage: Stage, mut c: Carry) -> Result<Carry> {
        let n = self.blocks.len();
        match stage {
            Stage::Head => {
                let cfg = &self.config;
                let head = self.head()?;
                let emb = match c.emb.take() {
                    Some(e) => e,
                    None => self.time_embedding(&c.x, c.t, c.added.as_ref())?,
                };
                let x = if cfg.center_input_sample {
                    ((&c.x * 2.0)? - 1.0)?
                } else {
                    c.x.clone()
                };
                c.x = head.conv_in.forward(&self.layout.from_nchw(&x)?)?;
                c.skips = vec![c.x.clone()];
                c.emb = Some(emb);
            }
            Stage::Down(i) if i < n => {
                let emb = c.emb()?;
                // One layer at a time: a streamed UNet holds one layer's weights.
                for j in 0..self.level_len(Side::Down, i) {
                    c.x = self.resnet(Side::Down, i, j)?.forward(&c.x, &emb)?;
                    if let Some(a) = self.attn(Side::Down, i, j)? {
                        c.x = a.forward(&c.x, &c.ctx)?;
                    }
                    c.skips.push(c.x.clone());
                }
                if let Some(d) = self.resample(Side::Down, i)? {
                    c.x = d.forward(&c.x)?;
                    c.skips.push(c.x.clone());
                }
            }
            Stage::Mid => {
                let emb = c.emb()?;
                c.x = self.mid_resnet(0)?.forward(&c.x, &emb)?;
                c.x = self.mid_attn()?.forward(&c.x, &c.ctx)?;
                c.x = self.mid_resnet(1)?.forward(&c.x, &emb)?;
            }
            Stage::Up(i) if i < n => {
                let emb = c.emb()?;
                for j in 0..self.level_len(Side::Up, i) {
                    let skip = c
                        .skips
                        .pop()
                        .ok_or_else(|| candle_core::Error::Msg("UNet skip underflow".into()))?;
                    let cat = nn::profile::scope("skip concat", skip.device(), || {
                        nn::cat_channels(&c.x, &skip, self.layout, self.kernels)
                    })?;
                    c.x = self.resnet(Side::Up, i, j)?.forward(&cat, &emb)?;
                    if let Some(a) = self.attn(Side::Up, i, j)? {
                        c.x = a.forward(&c.x, &c.ctx)?;
                    }
                }
                if let Some(u) = self.resample(Side::Up, i)? {
                    // Upsample to the next skip's size (diffusers' `upsample_size`), which
                    // also covers latents whose sides are not multiples of 2^levels.
                    let (_, _, h, w) = self.layout.dims(&c.x)?;
                    let (h, w) = match c.skips.last() {
                        Some(s) => {
                            let (_, _, sh, sw) = self.layout.dims(s)?;
                            (sh, sw)
                        }
                        None => (h * 2, w * 2),
                    };
                    let up = nn::profile::scope("upsample", c.x.device(), || {
                        nn::upsample_nearest(&c.x, h, w, self.layout, self.kernels)
                    })?;
                    c.x = u.forward(&up)?;
                }
            }
            Stage::Tail => {
                let tail = self.tail()?;
                let y = tail.conv_out.forward(&tail.norm_out.forward_silu(&c.x)?)?;
                c.x = self.layout.to_nchw(&y)?;
                c.skips.clear();
            }
            Stage::Down(_) | Stage::Up(_) => {
                return Err(Error::invalid(
                    "stage",
                    stage.name(),
                    format!("this UNet has {n} down and up blocks"),
                ));
            }
        }
        Ok(c)
    }
}

/// A down or an up level.
#[derive(Debug, Clone, Copy)]
enum Side {
    Down,
    Up,
}

/// One stage of the UNet's forward pass, named like the diffusers modules it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// `time_embedding`, `add_embedding` and `conv_in`.
    Head,
    /// `down_blocks.{i}`.
    Down(usize),
    /// `mid_block`.
    Mid,
    /// `up_blocks.{i}`.
    Up(usize),
    /// `conv_norm_out` and `conv_out`.
    Tail,
}

impl Stage {
    /// The name (`head`, `down_blocks.2`, `mid_block`, `up_blocks.1`, `tail`).
    pub fn name(&self) -> String {
        match self {
            Stage::Head => "head".into(),
            Stage::Down(i) => format!("down_blocks.{i}"),
            Stage::Mid => "mid_block".into(),
            Stage::Up(i) => format!("up_blocks.{i}"),
            Stage::Tail => "tail".into(),
        }
    }

    /// Parses a name as [`Stage::name`] writes it.
    pub fn parse(name: &str) -> Option<Stage> {
        let index = |p: &str| name.strip_prefix(p).and_then(|i| i.parse().ok());
        match name {
            "head" => Some(Stage::Head),
            "mid_block" => Some(Stage::Mid),
            "tail" => Some(Stage::Tail),
            _ => index("down_blocks.")
                .map(Stage::Down)
                .or_else(|| index("up_blocks.").map(Stage::Up)),
        }
    }
}

/// Everything one stage passes to the next: the activations `x` (NCHW before
/// `head` and after `tail`, in [`UNet::layout`] between), the skip
/// connections the down blocks pushed and the up blocks pop, the time
/// embedding (made by `head`), and the inputs every stage may read (text
/// context, timestep, SDXL's added conditioning).
#[derive(Debug, Clone)]
pub struct Carry {
    /// The activations (the sample before `head`, the prediction after `tail`).
    pub x: Tensor,
    /// Skip connections, in the order the down blocks pushed them.
    pub skips: Vec<Tensor>,
    /// The time embedding after its SiLU (what the ResNets project), from `head` on.
    pub emb: Option<Tensor>,
    /// The text context `(b, 77, cross_attention_dim)`.
    pub ctx: Tensor,
    /// The timestep.
    pub t: f64,
    /// SDXL's added conditioning.
    pub added: Option<AddedCond>,
}

impl Carry {
    /// The carry before `head`.
    pub fn new(sample: &Tensor, t: f64, ctx: &Tensor, added: Option<&AddedCond>) -> Carry {
        Carry {
            x: sample.clone(),
            skips: Vec::new(),
            emb: None,
            ctx: ctx.clone(),
            t,
            added: added.cloned(),
        }
    }

    fn emb(&self) -> Result<Tensor> {
        self.emb.clone().ok_or_else(|| {
            Error::invalid(
                "stage",
                "before head",
                "the time embedding is made by the head stage",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// A tiny UNet with random weights (the `tiny` and `tiny-sdxl` presets' configs).
    fn tiny(preset: &str) -> (UNet, UNetConfig) {
        tiny_in(preset, Layout::Nchw)
    }

    fn tiny_in(preset: &str, layout: Layout) -> (UNet, UNetConfig) {
        let p = crate::presets::preset(preset).unwrap();
        let cfg: UNetConfig = serde_json::from_value(p.unet.clone()).unwrap();
        let blocks = cfg.blocks(std::path::Path::new("config.json")).unwrap();
        let (vb, _) = crate::random::var_builder(7, DType::F32);
        (UNet::new_in(vb, &cfg, &blocks, layout).unwrap(), cfg)
    }

    /// The channels-last UNet (every layer permuting around candle's NCHW ops on
    /// the CPU) predicts what the NCHW one does, for each preset's features
    /// (conv and linear projections, SDXL's added conditioning) and for latent
    /// sides that are not multiples of the down-sampling (the general upsample).
    #[test]
    fn channels_last_matches_nchw() {
        for preset in ["tiny", "tiny-sd2", "tiny-sdxl"] {
            let (nchw, cfg) = tiny_in(preset, Layout::Nchw);
            let (nhwc, _) = tiny_in(preset, Layout::Nhwc);
            assert_eq!(nhwc.layout(), Layout::Nhwc);
            for (h, w) in [(8, 8), (9, 6)] {
                let (x, ctx, added) = inputs(&nchw, &cfg, h, w);
                let a = nchw.forward(&x, 500.0, &ctx, added.as_ref()).unwrap();
                let b = nhwc.forward(&x, 500.0, &ctx, added.as_ref()).unwrap();
                assert_eq!(a.dims(), b.dims(), "{preset} {h}x{w}");
                let scale = crate::test_util::max_abs(&a);
                let d = crate::test_util::max_abs_diff(&a, &b);
                assert!(scale > 0.0, "{preset}: a zero prediction proves nothing");
                assert!(
                    d <= 1e-5 * scale,
                    "{preset} {h}x{w}: max |Δ| {d} (max |x| {scale})"
                );
            }
        }
    }

    /// The streamed UNet (sequential offload: each ResNet, attention and
    /// resampler built from the weights just before it runs) computes the
    /// resident one's bits, for each preset's layout of levels.
    #[test]
    fn streamed_unet_equals_the_resident_one() {
        for preset in ["tiny", "tiny-sd2", "tiny-sdxl"] {
            let p = crate::presets::preset(preset).unwrap();
            let cfg: UNetConfig = serde_json::from_value(p.unet.clone()).unwrap();
            let blocks = cfg.blocks(std::path::Path::new("config.json")).unwrap();
            let (vb, _) = crate::random::var_builder(7, DType::F32);
            let held = UNet::new_in(vb.clone(), &cfg, &blocks, Layout::Nchw).unwrap();
            let streamed = UNet::streamed(vb, &cfg, &blocks).unwrap();
            assert_eq!(
                format!("{streamed:?}"),
                format!("UNet({} blocks, streamed)", blocks.len())
            );
            let (x, ctx, added) = inputs(&held, &cfg, 8, 6);
            let a = held.forward(&x, 321.0, &ctx, added.as_ref()).unwrap();
            let b = streamed.forward(&x, 321.0, &ctx, added.as_ref()).unwrap();
            assert!(
                crate::test_util::max_abs(&a) > 0.0,
                "{preset}: a zero prediction proves nothing"
            );
            assert_eq!(crate::test_util::max_abs_diff(&a, &b), 0.0, "{preset}");
        }
    }

    /// Random inputs for a batch of 2 at latent size `h`×`w`: the sample, the text
    /// context and (SDXL) the added conditioning.
    fn inputs(u: &UNet, cfg: &UNetConfig, h: usize, w: usize) -> (Tensor, Tensor, Option<AddedCond>) {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, cfg.in_channels, h, w), &dev).unwrap();
        let ctx = Tensor::randn(0f32, 1., (2, 77, u.blocks[0].cross_attention_dim), &dev).unwrap();
        let added = u.needs_added_cond().then(|| AddedCond {
            text_embeds: Tensor::randn(0f32, 1., (2, pooled(cfg)), &dev).unwrap(),
            time_ids: Tensor::new(
                &[[64f32, 64., 0., 0., 64., 64.], [64., 64., 0., 0., 64., 64.]],
                &dev,
            )
            .unwrap(),
        });
        (x, ctx, added)
    }

    fn pooled(c: &UNetConfig) -> usize {
        c.projection_class_embeddings_input_dim.unwrap_or(0) - 6 * c.addition_time_embed_dim.unwrap_or(0)
    }

    /// Stages run one at a time, each from a carry rebuilt from copies of the
    /// previous carry's fields (as another process would receive them), give
    /// the same prediction as `forward`, bit for bit: the carry is all the state.
    #[test]
    fn stages_carry_all_the_state() {
        for preset in ["tiny", "tiny-sdxl"] {
            let (unet, cfg) = tiny(preset);
            let dev = Device::Cpu;
            let x = Tensor::randn(0f32, 1., (2, cfg.in_channels, 8, 8), &dev).unwrap();
            let width = unet.blocks[0].cross_attention_dim;
            let ctx = Tensor::randn(0f32, 1., (2, 77, width), &dev).unwrap();
            let added = unet.needs_added_cond().then(|| AddedCond {
                text_embeds: Tensor::randn(0f32, 1., (2, pooled(&cfg)), &dev).unwrap(),
                time_ids: Tensor::new(
                    &[[64f32, 64., 0., 0., 64., 64.], [64., 64., 0., 0., 64., 64.]],
                    &dev,
                )
                .unwrap(),
            });
            let want = unet.forward(&x, 500.0, &ctx, added.as_ref()).unwrap();
            let copy = |t: &Tensor| {
                Tensor::from_vec(t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), t.dims(), &dev).unwrap()
            };
            let mut c = Carry::new(&x, 500.0, &ctx, added.as_ref());
            for stage in unet.stages() {
                let fresh = Carry {
                    x: copy(&c.x),
                    skips: c.skips.iter().map(copy).collect(),
                    emb: c.emb.as_ref().map(copy),
                    ctx: copy(&c.ctx),
                    t: c.t,
                    added: c.added.clone(),
                };
                c = unet.run_stage(stage, fresh).unwrap();
            }
            assert!(c.skips.is_empty(), "{preset}: skips left after tail");
            let d = crate::test_util::max_abs_diff(&c.x, &want);
            assert_eq!(d, 0.0, "{preset}");
        }
    }

    #[test]
    fn a_stage_beyond_the_model_is_an_error() {
        let (unet, cfg) = tiny("tiny");
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, cfg.in_channels, 8, 8), DType::F32, &dev).unwrap();
        let ctx = Tensor::zeros((1, 77, unet.blocks[0].cross_attention_dim), DType::F32, &dev).unwrap();
        let c = unet
            .run_stage(Stage::Head, Carry::new(&x, 1.0, &ctx, None))
            .unwrap();
        let n = unet.stages().len();
        let e = unet.run_stage(Stage::Down(n), c.clone()).unwrap_err().to_string();
        assert!(e.contains(&format!("down_blocks.{n}")), "{e}");
        let e = unet
            .run_stage(Stage::Mid, Carry::new(&x, 1.0, &ctx, None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("head"), "{e}");
    }

    #[test]
    fn stage_names_round_trip() {
        for s in [
            Stage::Head,
            Stage::Down(0),
            Stage::Down(3),
            Stage::Mid,
            Stage::Up(2),
            Stage::Tail,
        ] {
            assert_eq!(Stage::parse(&s.name()), Some(s));
        }
        for bad in [
            "",
            "down_blocks",
            "down_blocks.x",
            "up_blocks.-1",
            "mid",
            "transformer.h.6",
        ] {
            assert_eq!(Stage::parse(bad), None, "{bad}");
        }
    }
}
