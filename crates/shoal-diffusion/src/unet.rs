//! `UNet2DConditionModel` for SD 1.x, 2.x and XL.
//!
//! Written from `huggingface/diffusers src/diffusers/models/unets/unet_2d_condition.py`,
//! `unet_2d_blocks.py`, `models/resnet.py`, `models/attention.py` and
//! `models/transformers/transformer_2d.py`. Weight paths are the PyTorch
//! state-dict keys. Unlike candle-transformers' UNet it is built from
//! `config.json` (any block count, widths, group count, heads, transformer
//! depth per block) and has SDXL's `add_embedding` (`addition_embed_type:
//! text_time`).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use crate::config::{BlockSpec, UNetConfig};
use crate::error::Result;
use crate::nn::{self, AttentionOpts, Conv2d, GroupNorm, Kernels, Linear};

type CResult<T> = candle_core::Result<T>;

fn conv(vb: VarBuilder, cin: usize, cout: usize, k: usize, stride: usize) -> CResult<Conv2d> {
    nn::conv2d(vb, cin, cout, k, stride, k / 2)
}

/// `get_timestep_embedding`: sinusoidal embedding of `t` (shape `(b,)`, f32).
pub fn timestep_embedding(t: &Tensor, dim: usize, flip_sin_to_cos: bool, shift: f64) -> CResult<Tensor> {
    let half = dim / 2;
    let device = t.device();
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10000f64.ln()) * i as f64 / (half as f64 - shift)).exp() as f32)
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), device)?;
    let args = t.to_dtype(DType::F32)?.unsqueeze(1)?.broadcast_mul(&freqs)?;
    let (sin, cos) = (args.sin()?, args.cos()?);
    let emb = if flip_sin_to_cos {
        Tensor::cat(&[cos, sin], 1)?
    } else {
        Tensor::cat(&[sin, cos], 1)?
    };
    if dim % 2 == 1 {
        emb.pad_with_zeros(1, 0, 1)
    } else {
        Ok(emb)
    }
}

/// `TimestepEmbedding`: linear, SiLU, linear.
#[derive(Debug)]
struct TimestepEmbedding {
    l1: Linear,
    l2: Linear,
}

impl TimestepEmbedding {
    fn new(vb: VarBuilder, cin: usize, dim: usize) -> CResult<Self> {
        Ok(TimestepEmbedding {
            l1: nn::linear(cin, dim, vb.pp("linear_1"))?,
            l2: nn::linear(dim, dim, vb.pp("linear_2"))?,
        })
    }
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        self.l2.forward(&self.l1.forward(x)?.silu()?)
    }
}

/// `ResnetBlock2D` (time-scale-shift `default`).
#[derive(Debug)]
struct Resnet {
    norm1: GroupNorm,
    conv1: Conv2d,
    temb: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
    scale: f64,
    kernels: Kernels,
}

impl Resnet {
    fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        temb: usize,
        c: &UNetConfig,
        scale: f64,
    ) -> CResult<Self> {
        let g = c.norm_num_groups;
        Ok(Resnet {
            norm1: nn::group_norm(g, cin, c.norm_eps, vb.pp("norm1"))?,
            conv1: conv(vb.pp("conv1"), cin, cout, 3, 1)?,
            temb: nn::linear(temb, cout, vb.pp("time_emb_proj"))?,
            norm2: nn::group_norm(g, cout, c.norm_eps, vb.pp("norm2"))?,
            conv2: conv(vb.pp("conv2"), cout, cout, 3, 1)?,
            shortcut: if cin != cout {
                Some(conv(vb.pp("conv_shortcut"), cin, cout, 1, 1)?)
            } else {
                None
            },
            scale,
            kernels: Kernels::for_weights(vb.device(), vb.dtype()),
        })
    }

    fn forward(&self, x: &Tensor, temb: &Tensor) -> CResult<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let t = self.temb.forward(&temb.silu()?)?;
        let h = nn::add_per_channel(h, &t, self.kernels)?;
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let skip = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        let out = (skip + h)?;
        if self.scale == 1.0 {
            Ok(out)
        } else {
            out / self.scale
        }
    }
}

/// `Attention` with separate q/k/v projections (no bias) and `to_out.0`.
#[derive(Debug)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    upcast: bool,
    kernels: Kernels,
}

impl Attention {
    fn new(vb: VarBuilder, dim: usize, ctx: usize, heads: usize, upcast: bool) -> CResult<Self> {
        let kernels = Kernels::for_weights(vb.device(), vb.dtype());
        Ok(Attention {
            kernels,
            q: nn::linear_no_bias(dim, dim, vb.pp("to_q"))?,
            k: nn::linear_no_bias(ctx, dim, vb.pp("to_k"))?,
            v: nn::linear_no_bias(ctx, dim, vb.pp("to_v"))?,
            out: nn::linear(dim, dim, vb.pp("to_out").pp(0))?,
            heads,
            upcast,
        })
    }

    fn forward(&self, x: &Tensor, ctx: Option<&Tensor>) -> CResult<Tensor> {
        let ctx = ctx.unwrap_or(x);
        let (q, k, v) = nn::profile::scope("attn linear", x.device(), || {
            Ok((self.q.forward(x)?, self.k.forward(ctx)?, self.v.forward(ctx)?))
        })?;
        let opts = AttentionOpts {
            heads: self.heads,
            mask: None,
            causal: false,
            upcast: self.upcast,
            kernels: self.kernels,
        };
        let o = nn::attention(&q, &k, &v, &opts)?;
        nn::profile::scope("attn linear", x.device(), || self.out.forward(&o))
    }
}

/// `BasicTransformerBlock`: self-attention, cross-attention, GEGLU feed-forward.
#[derive(Debug)]
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
}

impl TransformerBlock {
    fn new(vb: VarBuilder, dim: usize, ctx: usize, heads: usize, upcast: bool) -> CResult<Self> {
        let inner = dim * 4;
        Ok(TransformerBlock {
            norm1: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(vb.pp("attn1"), dim, dim, heads, upcast)?,
            norm2: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(vb.pp("attn2"), dim, ctx, heads, upcast)?,
            norm3: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff_in: nn::linear(dim, inner * 2, vb.pp("ff").pp("net").pp(0).pp("proj"))?,
            ff_out: nn::linear(inner, dim, vb.pp("ff").pp("net").pp(2))?,
        })
    }

    fn forward(&self, x: &Tensor, ctx: &Tensor) -> CResult<Tensor> {
        use nn::profile::scope;
        let dev = x.device();
        let x = (self
            .attn1
            .forward(&scope("layer_norm", dev, || self.norm1.forward(x))?, None)?
            + x)?;
        let x = (self
            .attn2
            .forward(&scope("layer_norm", dev, || self.norm2.forward(&x))?, Some(ctx))?
            + &x)?;
        let n3 = scope("layer_norm", dev, || self.norm3.forward(&x))?;
        let h = scope("ff linear + geglu", dev, || self.ff_in.forward_geglu(&n3))?;
        let h = scope("ff linear", dev, || self.ff_out.forward(&h))?;
        h + x
    }
}

/// `Transformer2DModel` (continuous input).
#[derive(Debug)]
struct Transformer2D {
    norm: GroupNorm,
    proj_in: Proj,
    blocks: Vec<TransformerBlock>,
    proj_out: Proj,
}

#[derive(Debug)]
enum Proj {
    Conv(Conv2d),
    Linear(Linear),
}

impl Transformer2D {
    fn new(vb: VarBuilder, ch: usize, spec: &BlockSpec, layers: usize, c: &UNetConfig) -> CResult<Self> {
        let proj = |name: &str| -> CResult<Proj> {
            Ok(if c.use_linear_projection {
                Proj::Linear(nn::linear(ch, ch, vb.pp(name))?)
            } else {
                Proj::Conv(conv(vb.pp(name), ch, ch, 1, 1)?)
            })
        };
        Ok(Transformer2D {
            norm: nn::group_norm(c.norm_num_groups, ch, 1e-6, vb.pp("norm"))?,
            proj_in: proj("proj_in")?,
            blocks: (0..layers)
                .map(|i| {
                    TransformerBlock::new(
                        vb.pp("transformer_blocks").pp(i),
                        ch,
                        spec.cross_attention_dim,
                        spec.heads,
                        c.upcast_attention,
                    )
                })
                .collect::<CResult<_>>()?,
            proj_out: proj("proj_out")?,
        })
    }

    fn forward(&self, x: &Tensor, ctx: &Tensor) -> CResult<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let mut y = self.norm.forward(x)?;
        let to_seq = |t: Tensor| t.permute((0, 2, 3, 1))?.reshape((b, h * w, c));
        y = match &self.proj_in {
            Proj::Conv(p) => to_seq(p.forward(&y)?)?,
            Proj::Linear(p) => p.forward(&to_seq(y)?)?,
        };
        for blk in &self.blocks {
            y = blk.forward(&y, ctx)?;
        }
        let to_img = |t: Tensor| t.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?.contiguous();
        y = match &self.proj_out {
            Proj::Conv(p) => p.forward(&to_img(y)?)?,
            Proj::Linear(p) => to_img(p.forward(&y)?)?,
        };
        y + x
    }
}

/// One down or up level: ResNets, optional attentions, optional resampler.
#[derive(Debug)]
struct Level {
    resnets: Vec<Resnet>,
    attns: Vec<Transformer2D>,
    resample: Option<Conv2d>,
}

/// The mid block.
#[derive(Debug)]
struct Mid {
    resnets: [Resnet; 2],
    attn: Transformer2D,
}

/// The input side: time embeddings and `conv_in`.
#[derive(Debug)]
struct Head {
    time_embedding: TimestepEmbedding,
    add_embedding: Option<TimestepEmbedding>,
    conv_in: Conv2d,
}

/// The output side: `conv_norm_out`, `conv_out`.
#[derive(Debug)]
struct Tail {
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

/// Builds the UNet's parts from a `VarBuilder` (state-dict paths), one at a time.
struct Builder<'a> {
    vb: VarBuilder<'a>,
    c: &'a UNetConfig,
    blocks: &'a [BlockSpec],
}

impl Builder<'_> {
    fn temb(&self) -> usize {
        self.blocks[0].channels * 4
    }

    fn head(&self) -> CResult<Head> {
        let (c, vb, ch0) = (self.c, &self.vb, self.blocks[0].channels);
        let add_embedding = match (
            c.addition_embed_type.as_deref(),
            c.projection_class_embeddings_input_dim,
        ) {
            (Some("text_time"), Some(cin)) => {
                Some(TimestepEmbedding::new(vb.pp("add_embedding"), cin, self.temb())?)
            }
            _ => None,
        };
        Ok(Head {
            time_embedding: TimestepEmbedding::new(vb.pp("time_embedding"), ch0, self.temb())?,
            add_embedding,
            conv_in: conv(vb.pp("conv_in"), c.in_channels, ch0, 3, 1)?,
        })
    }

    /// One level of `block`: a ResNet (with its attention, if any) for each
    /// input width in `rins`, and the resampler named `sampler` if `stride` is given.
    fn level(
        &self,
        vbi: VarBuilder,
        block: &BlockSpec,
        rins: impl IntoIterator<Item = usize>,
        sampler: (&str, Option<usize>),
    ) -> CResult<Level> {
        let mut resnets = Vec::new();
        let mut attns = Vec::new();
        for (j, rin) in rins.into_iter().enumerate() {
            resnets.push(Resnet::new(
                vbi.pp("resnets").pp(j),
                rin,
                block.channels,
                self.temb(),
                self.c,
                1.0,
            )?);
            if block.cross_attn {
                let vba = vbi.pp("attentions").pp(j);
                attns.push(Transformer2D::new(
                    vba,
                    block.channels,
                    block,
                    block.transformer_layers,
                    self.c,
                )?);
            }
        }
        let resample = match sampler {
            (name, Some(stride)) => Some(conv(
                vbi.pp(name).pp(0).pp("conv"),
                block.channels,
                block.channels,
                3,
                stride,
            )?),
            (_, None) => None,
        };
        Ok(Level {
            resnets,
            attns,
            resample,
        })
    }

    fn down(&self, i: usize) -> CResult<Level> {
        let (b, n) = (&self.blocks[i], self.blocks.len());
        let cin = if i == 0 {
            self.blocks[0].channels
        } else {
            self.blocks[i - 1].channels
        };
        let rins = (0..b.layers).map(|j| if j == 0 { cin } else { b.channels });
        let stride = (i + 1 < n).then_some(2);
        self.level(self.vb.pp("down_blocks").pp(i), b, rins, ("downsamplers", stride))
    }

    fn mid(&self) -> CResult<Mid> {
        let (c, last) = (self.c, &self.blocks[self.blocks.len() - 1]);
        let mid = self.vb.pp("mid_block");
        let r = |j: usize| {
            Resnet::new(
                mid.pp("resnets").pp(j),
                last.channels,
                last.channels,
                self.temb(),
                c,
                c.mid_block_scale_factor,
            )
        };
        Ok(Mid {
            resnets: [r(0)?, r(1)?],
            attn: Transformer2D::new(
                mid.pp("attentions").pp(0),
                last.channels,
                last,
                last.transformer_layers,
                c,
            )?,
        })
    }

    fn up(&self, i: usize) -> CResult<Level> {
        let n = self.blocks.len();
        let b = &self.blocks[n - 1 - i];
        let prev = if i == 0 {
            self.blocks[n - 1].channels
        } else {
            self.blocks[n - i].channels
        };
        let skip_in = self.blocks[(n - 1 - i).saturating_sub(1)].channels;
        // Each ResNet takes the previous output and one skip connection.
        let rins = (0..=b.layers).map(|j| {
            let skip = if j == b.layers { skip_in } else { b.channels };
            (if j == 0 { prev } else { b.channels }) + skip
        });
        let stride = (i + 1 < n).then_some(1);
        self.level(self.vb.pp("up_blocks").pp(i), b, rins, ("upsamplers", stride))
    }

    fn tail(&self) -> CResult<Tail> {
        let (c, ch0) = (self.c, self.blocks[0].channels);
        Ok(Tail {
            norm_out: nn::group_norm(c.norm_num_groups, ch0, c.norm_eps, self.vb.pp("conv_norm_out"))?,
            conv_out: conv(self.vb.pp("conv_out"), ch0, c.out_channels, 3, 1)?,
        })
    }
}

/// A part, resident or built for this call only.
enum Part<'a, T> {
    Borrowed(&'a T),
    Owned(T),
}

impl<T> std::ops::Deref for Part<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            Part::Borrowed(t) => t,
            Part::Owned(t) => t,
        }
    }
}

/// Every part of a resident UNet.
struct Resident {
    head: Head,
    down: Vec<Level>,
    mid: Mid,
    up: Vec<Level>,
    tail: Tail,
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
    /// Builds the UNet from its config; `vb` is rooted at the state dict.
    pub fn new(vb: VarBuilder, config: &UNetConfig, blocks: &[BlockSpec]) -> Result<Self> {
        let b = Builder {
            vb,
            c: config,
            blocks,
        };
        let n = blocks.len();
        let parts = Parts::Resident(Box::new(Resident {
            head: b.head()?,
            down: (0..n).map(|i| b.down(i)).collect::<CResult<_>>()?,
            mid: b.mid()?,
            up: (0..n).map(|i| b.up(i)).collect::<CResult<_>>()?,
            tail: b.tail()?,
        }));
        Ok(UNet {
            config: config.clone(),
            blocks: blocks.to_vec(),
            parts,
        })
    }

    /// A UNet whose weights stay in `vb` (memory-mapped files) and are moved to
    /// `vb`'s device one block at a time, for each forward pass. A weight that
    /// does not match the config is reported when its block first runs.
    pub fn streamed(vb: VarBuilder<'static>, config: &UNetConfig, blocks: &[BlockSpec]) -> Result<Self> {
        Ok(UNet {
            config: config.clone(),
            blocks: blocks.to_vec(),
            parts: Parts::Streamed(vb),
        })
    }

    /// A part: borrowed when resident, built from the weights when streamed.
    fn part<'a, T>(
        &'a self,
        resident: impl FnOnce(&'a Resident) -> Option<&'a T>,
        build: impl FnOnce(&Builder<'_>) -> CResult<T>,
    ) -> CResult<Part<'a, T>> {
        match &self.parts {
            Parts::Streamed(vb) => Ok(Part::Owned(build(&Builder {
                vb: vb.clone(),
                c: &self.config,
                blocks: &self.blocks,
            })?)),
            Parts::Resident(r) => resident(r)
                .map(Part::Borrowed)
                .ok_or_else(|| candle_core::Error::Msg("UNet part missing".into())),
        }
    }

    fn head(&self) -> CResult<Part<'_, Head>> {
        self.part(|r| Some(&r.head), |b| b.head())
    }

    fn down(&self, i: usize) -> CResult<Part<'_, Level>> {
        self.part(|r| r.down.get(i), |b| b.down(i))
    }

    fn mid(&self) -> CResult<Part<'_, Mid>> {
        self.part(|r| Some(&r.mid), |b| b.mid())
    }

    fn up(&self, i: usize) -> CResult<Part<'_, Level>> {
        self.part(|r| r.up.get(i), |b| b.up(i))
    }

    fn tail(&self) -> CResult<Part<'_, Tail>> {
        self.part(|r| Some(&r.tail), |b| b.tail())
    }

    /// Whether the model needs [`AddedCond`] (SDXL).
    pub fn needs_added_cond(&self) -> bool {
        self.config.addition_embed_type.is_some()
    }

    /// Predicts noise (or v) for `sample` `(b, c, h, w)` at timestep `t`,
    /// conditioned on `ctx` `(b, 77, cross_attention_dim)`.
    pub fn forward(
        &self,
        sample: &Tensor,
        t: f64,
        ctx: &Tensor,
        added: Option<&AddedCond>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let dtype = sample.dtype();
        let device: &Device = sample.device();
        let b = sample.dim(0)?;
        let head = self.head()?;
        let ts = Tensor::full(t as f32, (b,), device)?;
        let t_emb = timestep_embedding(
            &ts,
            self.blocks[0].channels,
            c.flip_sin_to_cos,
            c.freq_shift as f64,
        )?;
        let mut emb = head.time_embedding.forward(&t_emb.to_dtype(dtype)?)?;
        if let (Some(add), Some(cond)) = (&head.add_embedding, added) {
            let dim = c.addition_time_embed_dim.unwrap_or(256);
            let ids = cond.time_ids.flatten_all()?;
            let te =
                timestep_embedding(&ids, dim, c.flip_sin_to_cos, c.freq_shift as f64)?.reshape((b, ()))?;
            let add_in = Tensor::cat(&[cond.text_embeds.to_dtype(dtype)?, te.to_dtype(dtype)?], 1)?;
            emb = (emb + add.forward(&add_in)?)?;
        }
        let mut x = if c.center_input_sample {
            ((sample * 2.0)? - 1.0)?
        } else {
            sample.clone()
        };
        x = head.conv_in.forward(&x)?;
        drop(head);
        let mut skips = vec![x.clone()];
        for i in 0..self.blocks.len() {
            let lvl = self.down(i)?;
            for (j, r) in lvl.resnets.iter().enumerate() {
                x = r.forward(&x, &emb)?;
                if let Some(a) = lvl.attns.get(j) {
                    x = a.forward(&x, ctx)?;
                }
                skips.push(x.clone());
            }
            if let Some(d) = &lvl.resample {
                x = d.forward(&x)?;
                skips.push(x.clone());
            }
        }
        {
            let mid = self.mid()?;
            x = mid.resnets[0].forward(&x, &emb)?;
            x = mid.attn.forward(&x, ctx)?;
            x = mid.resnets[1].forward(&x, &emb)?;
        }
        for i in 0..self.blocks.len() {
            let lvl = self.up(i)?;
            for (j, r) in lvl.resnets.iter().enumerate() {
                let skip = skips
                    .pop()
                    .ok_or_else(|| candle_core::Error::Msg("UNet skip underflow".into()))?;
                x = r.forward(&Tensor::cat(&[&x, &skip], 1)?, &emb)?;
                if let Some(a) = lvl.attns.get(j) {
                    x = a.forward(&x, ctx)?;
                }
            }
            if let Some(u) = &lvl.resample {
                // Upsample to the next skip's size (diffusers' `upsample_size`), which
                // also covers latents whose sides are not multiples of 2^levels.
                let (h, w) = match skips.last() {
                    Some(s) => (s.dim(2)?, s.dim(3)?),
                    None => (x.dim(2)? * 2, x.dim(3)? * 2),
                };
                x = u.forward(&x.upsample_nearest2d(h, w)?)?;
            }
        }
        let tail = self.tail()?;
        x = tail.conv_out.forward(&tail.norm_out.forward_silu(&x)?)?;
        Ok(x)
    }
}
