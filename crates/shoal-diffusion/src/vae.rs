//! `AutoencoderKL`'s encoder (with `quant_conv`) and decoder (with
//! `post_quant_conv`), through the kernel seam.
//!
//! Written from `diffusers src/diffusers/models/autoencoders/vae.py` (`Decoder`),
//! `unet_2d_blocks.py` (`UNetMidBlock2D`, `UpDecoderBlock2D`), `resnet.py`
//! and `attention_processor.py`; the state-dict names are diffusers' (the
//! mid-block attention also under the old `query`/`key`/`value`/`proj_attn`
//! names, with 1×1-conv-shaped weights, as candle-transformers accepts).
//! Unlike candle-transformers' VAE it goes through `nn::`, so on CUDA its
//! convolutions, GroupNorms and linear layers use the fast kernels.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::config::VaeConfig;
use crate::nn::{self, AttentionOpts, Conv2d, GroupNorm, Kernels, Layout, Linear};
use crate::weights::Part;

type CResult<T> = candle_core::Result<T>;

const EPS: f64 = 1e-6;

/// `ResnetBlock2D` without a time embedding.
#[derive(Debug)]
struct Resnet {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl Resnet {
    fn new(vb: VarBuilder, cin: usize, cout: usize, groups: usize, layout: Layout) -> CResult<Self> {
        Ok(Resnet {
            norm1: nn::group_norm_in(groups, cin, EPS, vb.pp("norm1"), layout)?,
            conv1: nn::conv2d_in(vb.pp("conv1"), cin, cout, 3, 1, 1, layout)?,
            norm2: nn::group_norm_in(groups, cout, EPS, vb.pp("norm2"), layout)?,
            conv2: nn::conv2d_in(vb.pp("conv2"), cout, cout, 3, 1, 1, layout)?,
            shortcut: if cin != cout {
                Some(nn::conv2d_in(vb.pp("conv_shortcut"), cin, cout, 1, 1, 0, layout)?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let skip = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        self.conv2.forward_add(&self.norm2.forward_silu(&h)?, &skip)
    }

    /// [`Resnet::forward`] taking the input, which must be the only handle on its
    /// memory: where a shortcut convolution replaces it (the channel count
    /// changes), the shortcut runs first and the first GroupNorm is written over
    /// the input, so the block never holds the input and its normalized copy at
    /// once (a decode's largest step, the last up block's first ResNet: a 128 MiB
    /// input at 512² in f16). Same ops on the same values, same bits.
    fn forward_owned(&self, x: Tensor) -> CResult<Tensor> {
        let Some(s) = &self.shortcut else {
            return self.forward(&x);
        };
        let skip = s.forward(&x)?;
        let a = self.norm1.forward_silu_over(x)?;
        let h = self.conv1.forward(&a)?;
        drop(a);
        self.conv2.forward_add(&self.norm2.forward_silu(&h)?, &skip)
    }
}

/// A projection of the mid-block attention: `(c, c)` or `(c, c, 1, 1)` weights.
fn proj(vb: VarBuilder, c: usize) -> CResult<Linear> {
    if vb.contains_tensor("weight") && vb.get((c, c), "weight").is_err() {
        let w = vb.get((c, c, 1, 1), "weight")?.reshape((c, c))?;
        let b = vb.get(c, "bias")?;
        let tensors = [("weight".to_string(), w), ("bias".to_string(), b)]
            .into_iter()
            .collect();
        return nn::linear(c, c, VarBuilder::from_tensors(tensors, vb.dtype(), vb.device()));
    }
    nn::linear(c, c, vb)
}

/// The mid block's single-head self-attention over the pixels, with its GroupNorm and residual.
#[derive(Debug)]
struct Attention {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    kernels: Kernels,
    layout: Layout,
}

impl Attention {
    fn new(vb: VarBuilder, c: usize, groups: usize, layout: Layout) -> CResult<Self> {
        let names = if vb.contains_tensor("to_q.weight") {
            ["to_q", "to_k", "to_v", "to_out.0"]
        } else {
            ["query", "key", "value", "proj_attn"]
        };
        Ok(Attention {
            norm: nn::group_norm_in(groups, c, EPS, vb.pp("group_norm"), layout)?,
            q: proj(vb.pp(names[0]), c)?,
            k: proj(vb.pp(names[1]), c)?,
            v: proj(vb.pp(names[2]), c)?,
            out: proj(vb.pp(names[3]), c)?,
            kernels: Kernels::for_weights(vb.device(), vb.dtype()),
            layout,
        })
    }

    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let (b, c, h, w) = self.layout.dims(x)?;
        let y = self.norm.forward(x)?;
        let y = match self.layout {
            Layout::Nchw => y.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?,
            Layout::Nhwc => y.reshape((b, h * w, c))?,
        };
        let (q, k, v) = (self.q.forward(&y)?, self.k.forward(&y)?, self.v.forward(&y)?);
        let opts = AttentionOpts {
            heads: 1,
            mask: None,
            causal: false,
            // candle-transformers' VAE forms these scores in f32; so does this one.
            upcast: true,
            kernels: self.kernels,
        };
        let o = self.out.forward(&nn::attention(&q, &k, &v, &opts)?)?;
        match self.layout {
            Layout::Nchw => o.transpose(1, 2)?.reshape((b, c, h, w))? + x,
            Layout::Nhwc => o.reshape((b, h, w, c))? + x,
        }
    }
}

/// The processes that decode one latent together, each a horizontal band of
/// its rows (the split VAE decode).
pub trait BandComm {
    /// This process's band and the number of bands (top band first).
    fn band(&self) -> (usize, usize);
    /// Sends `first` (this band's top rows) to the band above and `last` (its
    /// bottom rows) to the band below; returns the rows received from above
    /// and from below, `None` at the image's top and bottom edges.
    fn halo(&self, first: &Tensor, last: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)>;
    /// The element-wise sum of a tensor over every band, the same on each.
    fn sum(&self, t: &Tensor) -> CResult<Tensor>;
}

/// Rows `[start, start + len)` of `rows` held by band `index` of `count`, split like
/// `split_between_processes` (the first `rows % count` bands one row longer).
pub fn band_rows(rows: usize, index: usize, count: usize) -> Option<(usize, usize)> {
    if count == 0 || index >= count || rows < count {
        return None;
    }
    let (base, extra) = (rows / count, rows % count);
    let len = base + usize::from(index < extra);
    Some((index * base + index.min(extra), len))
}

/// A band's view of the layers: convolutions read their neighbours' edge rows,
/// GroupNorms the whole tensor's statistics.
struct Band<'a> {
    comm: &'a dyn BandComm,
    layout: Layout,
    /// Rows of the whole tensor at the current resolution.
    total_rows: std::cell::Cell<usize>,
}

impl Band<'_> {
    fn row_dim(&self) -> usize {
        match self.layout {
            Layout::Nchw => 2,
            Layout::Nhwc => 1,
        }
    }

    /// `conv(x)` on this band: the `p` rows a stride-1 convolution reads beyond
    /// the band come from the neighbours, the rows they produce are dropped.
    fn conv(&self, conv: &Conv2d, x: &Tensor) -> CResult<Tensor> {
        let p = conv.padding();
        if p == 0 {
            return conv.forward(x);
        }
        if conv.stride() != 1 {
            candle_core::bail!("split decode: a stride-{} convolution", conv.stride())
        }
        let d = self.row_dim();
        let rows = x.dim(d)?;
        if rows < p {
            candle_core::bail!("split decode: a band of {rows} rows under a convolution that reads {p}")
        }
        let (above, below) = self.comm.halo(&x.narrow(d, 0, p)?, &x.narrow(d, rows - p, p)?)?;
        let parts: Vec<&Tensor> = [above.as_ref(), Some(x), below.as_ref()]
            .into_iter()
            .flatten()
            .collect();
        let y = conv.forward(&Tensor::cat(&parts, d)?)?;
        let top = if above.is_some() { p } else { 0 };
        y.narrow(d, top, rows)
    }

    fn norm(&self, n: &GroupNorm, x: &Tensor, silu: bool) -> CResult<Tensor> {
        n.forward_split(x, silu, self.total_rows.get(), &|t| self.comm.sum(t))
    }

    fn resnet(&self, r: &Resnet, x: &Tensor) -> CResult<Tensor> {
        let h = self.conv(&r.conv1, &self.norm(&r.norm1, x, true)?)?;
        let h = self.conv(&r.conv2, &self.norm(&r.norm2, &h, true)?)?;
        match &r.shortcut {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

/// Builds the decoder's layers, each on its own, from `vb` (rooted at the
/// VAE's state dict): the held decoder builds them all once, the streamed one
/// each just before it runs.
struct Build<'a> {
    vb: VarBuilder<'a>,
    c: &'a VaeConfig,
    layout: Layout,
}

impl Build<'_> {
    fn channels(&self) -> CResult<(usize, usize)> {
        let ch = &self.c.block_out_channels;
        match (ch.first(), ch.last()) {
            (Some(&first), Some(&last)) => Ok((first, last)),
            _ => candle_core::bail!("vae: block_out_channels is empty"),
        }
    }

    fn decoder(&self) -> VarBuilder<'_> {
        self.vb.pp("decoder")
    }

    fn post_quant_conv(&self) -> CResult<Option<Conv2d>> {
        let l = self.c.latent_channels;
        self.c
            .use_post_quant_conv
            .then(|| nn::conv2d_in(self.vb.pp("post_quant_conv"), l, l, 1, 1, 0, self.layout))
            .transpose()
    }

    fn conv_in(&self) -> CResult<Conv2d> {
        let (_, last) = self.channels()?;
        nn::conv2d_in(
            self.decoder().pp("conv_in"),
            self.c.latent_channels,
            last,
            3,
            1,
            1,
            self.layout,
        )
    }

    fn mid_resnet(&self, j: usize) -> CResult<Resnet> {
        let (_, last) = self.channels()?;
        let vb = self.decoder().pp("mid_block").pp("resnets").pp(j);
        Resnet::new(vb, last, last, self.c.norm_num_groups, self.layout)
    }

    fn mid_attention(&self) -> CResult<Attention> {
        let (_, last) = self.channels()?;
        let vb = self.decoder().pp("mid_block").pp("attentions").pp(0);
        Attention::new(vb, last, self.c.norm_num_groups, self.layout)
    }

    /// Up levels (one per block, widest first).
    fn levels(&self) -> usize {
        self.c.block_out_channels.len()
    }

    /// `(in, out)` channels of up level `i`.
    fn level_channels(&self, i: usize) -> CResult<(usize, usize)> {
        let rev: Vec<usize> = self.c.block_out_channels.iter().rev().copied().collect();
        match (rev.get(i.saturating_sub(1)), rev.get(i)) {
            (Some(&prev), Some(&out)) => Ok((prev, out)),
            _ => candle_core::bail!("vae: no up level {i}"),
        }
    }

    fn up_resnet(&self, i: usize, j: usize) -> CResult<Resnet> {
        let (prev, out) = self.level_channels(i)?;
        let cin = if j == 0 { prev } else { out };
        let vb = self.decoder().pp("up_blocks").pp(i).pp("resnets").pp(j);
        Resnet::new(vb, cin, out, self.c.norm_num_groups, self.layout)
    }

    /// The ×2 upsample's conv of level `i` (every level but the last).
    fn upsample(&self, i: usize) -> CResult<Option<Conv2d>> {
        let (_, out) = self.level_channels(i)?;
        let vb = self
            .decoder()
            .pp("up_blocks")
            .pp(i)
            .pp("upsamplers")
            .pp(0)
            .pp("conv");
        (i + 1 < self.levels())
            .then(|| nn::conv2d_in(vb, out, out, 3, 1, 1, self.layout))
            .transpose()
    }

    fn norm_out(&self) -> CResult<GroupNorm> {
        let (first, _) = self.channels()?;
        nn::group_norm_in(
            self.c.norm_num_groups,
            first,
            EPS,
            self.decoder().pp("conv_norm_out"),
            self.layout,
        )
    }

    fn conv_out(&self) -> CResult<Conv2d> {
        let (first, _) = self.channels()?;
        nn::conv2d_in(
            self.decoder().pp("conv_out"),
            first,
            self.c.out_channels,
            3,
            1,
            1,
            self.layout,
        )
    }

    /// Every layer, held.
    fn all(&self) -> CResult<Layers> {
        let up = (0..self.levels())
            .map(|i| {
                Ok(Up {
                    resnets: (0..=self.c.layers_per_block)
                        .map(|j| self.up_resnet(i, j))
                        .collect::<CResult<_>>()?,
                    upsample: self.upsample(i)?,
                })
            })
            .collect::<CResult<_>>()?;
        Ok(Layers {
            post_quant_conv: self.post_quant_conv()?,
            conv_in: self.conv_in()?,
            mid: (self.mid_resnet(0)?, self.mid_attention()?, self.mid_resnet(1)?),
            up,
            norm_out: self.norm_out()?,
            conv_out: self.conv_out()?,
        })
    }
}

/// One up level: ResNets, then an optional nearest ×2 upsample and conv.
#[derive(Debug)]
struct Up {
    resnets: Vec<Resnet>,
    upsample: Option<Conv2d>,
}

/// The decoder's layers, held.
#[derive(Debug)]
struct Layers {
    post_quant_conv: Option<Conv2d>,
    conv_in: Conv2d,
    mid: (Resnet, Attention, Resnet),
    up: Vec<Up>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

/// Where the decoder's layers are: held, or built from the weights each time
/// one runs and dropped after it (sequential offload: one layer's weights on
/// the device at a time).
enum Weights {
    Held(Box<Layers>),
    Streamed(VarBuilder<'static>),
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Weights::Held(l) => l.fmt(f),
            Weights::Streamed(_) => f.write_str("Streamed"),
        }
    }
}

/// The decoder from latents to images in [-1, 1].
#[derive(Debug)]
pub struct Decoder {
    weights: Weights,
    config: VaeConfig,
    layout: Layout,
    /// For the steps between the layers (the upsample).
    kernels: Kernels,
}

impl Decoder {
    /// Builds the decoder; `vb` is rooted at the VAE's state dict. The
    /// activations' layout is [`Layout::for_weights`].
    pub fn new(vb: VarBuilder, c: &VaeConfig) -> CResult<Self> {
        let layout = Layout::for_weights(vb.device(), vb.dtype());
        Self::new_in(vb, c, layout)
    }

    /// [`Decoder::new`] with the activations in `layout` between the layers
    /// (latents in and images out stay NCHW).
    pub fn new_in(vb: VarBuilder, c: &VaeConfig, layout: Layout) -> CResult<Self> {
        let kernels = Kernels::for_weights(vb.device(), vb.dtype());
        let layers = Build { vb, c, layout }.all()?;
        Ok(Decoder {
            weights: Weights::Held(Box::new(layers)),
            config: c.clone(),
            layout,
            kernels,
        })
    }

    /// A decoder whose weights stay in `vb` (memory-mapped files) and move to
    /// `vb`'s device one layer (a ResNet, the attention, a convolution) at a
    /// time, for each decode: sequential offload. A weight that does not fit
    /// the config is reported when its layer first runs (as the streamed UNet's).
    pub fn streamed(vb: VarBuilder<'static>, c: &VaeConfig) -> Self {
        let layout = Layout::for_weights(vb.device(), vb.dtype());
        let kernels = Kernels::for_weights(vb.device(), vb.dtype());
        Decoder {
            weights: Weights::Streamed(vb),
            config: c.clone(),
            layout,
            kernels,
        }
    }

    /// A layer: `held` of the held layers, or built by `build`.
    fn part<'a, T>(
        &'a self,
        held: impl FnOnce(&'a Layers) -> &'a T,
        build: impl FnOnce(&Build<'_>) -> CResult<T>,
    ) -> CResult<Part<'a, T>> {
        Ok(match &self.weights {
            Weights::Held(l) => Part::Borrowed(held(l)),
            Weights::Streamed(vb) => {
                crate::nn::memory::settle(vb.device())?;
                Part::Owned(build(&Build {
                    vb: vb.clone(),
                    c: &self.config,
                    layout: self.layout,
                })?)
            }
        })
    }

    /// An optional layer, as [`Decoder::part`].
    fn part_opt<'a, T>(
        &'a self,
        held: impl FnOnce(&'a Layers) -> Option<&'a T>,
        build: impl FnOnce(&Build<'_>) -> CResult<Option<T>>,
    ) -> CResult<Option<Part<'a, T>>> {
        Ok(match &self.weights {
            Weights::Held(l) => held(l).map(Part::Borrowed),
            Weights::Streamed(vb) => {
                crate::nn::memory::settle(vb.device())?;
                build(&Build {
                    vb: vb.clone(),
                    c: &self.config,
                    layout: self.layout,
                })?
                .map(Part::Owned)
            }
        })
    }

    fn levels(&self) -> usize {
        self.config.block_out_channels.len()
    }

    fn up_resnet(&self, i: usize, j: usize) -> CResult<Part<'_, Resnet>> {
        self.part(|l| &l.up[i].resnets[j], |b| b.up_resnet(i, j))
    }

    fn upsample(&self, i: usize) -> CResult<Option<Part<'_, Conv2d>>> {
        self.part_opt(|l| l.up[i].upsample.as_ref(), |b| b.upsample(i))
    }

    /// The decode up to the up blocks: `post_quant_conv`, `conv_in` and the mid
    /// block, on the whole latents, in this decoder's layout.
    fn head(&self, z: &Tensor) -> CResult<Tensor> {
        let z = self.layout.from_nchw(z)?;
        let z = match self.part_opt(|l| l.post_quant_conv.as_ref(), |b| b.post_quant_conv())? {
            Some(p) => p.forward(&z)?,
            None => z,
        };
        let x = self.part(|l| &l.conv_in, |b| b.conv_in())?.forward(&z)?;
        let x = self.part(|l| &l.mid.0, |b| b.mid_resnet(0))?.forward(&x)?;
        let x = self.part(|l| &l.mid.1, |b| b.mid_attention())?.forward(&x)?;
        self.part(|l| &l.mid.2, |b| b.mid_resnet(1))?.forward(&x)
    }

    /// Decodes scaled latents `(b, latent, h, w)` to images `(b, out, h·f, w·f)`.
    pub fn decode(&self, z: &Tensor) -> CResult<Tensor> {
        let mut x = self.head(z)?;
        for i in 0..self.levels() {
            for j in 0..=self.config.layers_per_block {
                x = self.up_resnet(i, j)?.forward_owned(x)?;
                crate::nn::memory::mark(|| format!("VAE decode: up {i} resnet {j}"), x.device());
            }
            if let Some(u) = self.upsample(i)? {
                let (_, _, h, w) = self.layout.dims(&x)?;
                // The input is freed before the convolution runs on its upsampled copy.
                let up = nn::upsample_nearest(&x, h * 2, w * 2, self.layout, self.kernels)?;
                drop(x);
                x = u.forward(&up)?;
                crate::nn::memory::mark(|| format!("VAE decode: up {i} upsample"), x.device());
            }
        }
        let norm = self.part(|l| &l.norm_out, |b| b.norm_out())?;
        let x = norm.forward_silu(&x)?;
        drop(norm);
        let y = self.part(|l| &l.conv_out, |b| b.conv_out())?.forward(&x)?;
        self.layout.to_nchw(&y)
    }
}

impl Decoder {
    /// This process's band of the decoded images: `z` holds the whole latents
    /// (the same on every band's process); the mid block (whose attention sees
    /// every pixel) runs whole on each, then the latent rows are split like
    /// [`band_rows`] and the up blocks, the output norm and `conv_out` (most of
    /// the decode's work) run on the band alone, exchanging one edge row per
    /// convolution and the GroupNorm sums. The bands stacked are the whole
    /// decode, up to the order of the additions in the norms' statistics.
    pub fn decode_band(&self, z: &Tensor, comm: &dyn BandComm) -> CResult<Tensor> {
        let (index, count) = comm.band();
        let mut x = self.head(z)?;
        let d = match self.layout {
            Layout::Nchw => 2,
            Layout::Nhwc => 1,
        };
        let rows = x.dim(d)?;
        let band = Band {
            comm,
            layout: self.layout,
            total_rows: std::cell::Cell::new(rows),
        };
        let Some((start, len)) = band_rows(rows, index, count) else {
            candle_core::bail!("split decode: {rows} latent rows cannot make {count} bands (band {index})")
        };
        x = x.narrow(d, start, len)?;
        for i in 0..self.levels() {
            for j in 0..=self.config.layers_per_block {
                x = band.resnet(&*self.up_resnet(i, j)?, &x)?;
            }
            if let Some(u) = self.upsample(i)? {
                let (_, _, h, w) = self.layout.dims(&x)?;
                band.total_rows.set(band.total_rows.get() * 2);
                x = band.conv(
                    &u,
                    &nn::upsample_nearest(&x, h * 2, w * 2, self.layout, self.kernels)?,
                )?;
            }
        }
        let x = band.norm(&*self.part(|l| &l.norm_out, |b| b.norm_out())?, &x, true)?;
        let y = band.conv(&*self.part(|l| &l.conv_out, |b| b.conv_out())?, &x)?;
        self.layout.to_nchw(&y)
    }
}

/// One down level of the encoder: ResNets, then an optional stride-2 conv on
/// the input padded by one row and column at the bottom and right
/// (diffusers' `Downsample2D` with `padding=0`).
#[derive(Debug)]
struct Down {
    resnets: Vec<Resnet>,
    downsample: Option<Conv2d>,
}

/// The encoder from images in [-1, 1] to the latent distribution's moments.
#[derive(Debug)]
pub struct Encoder {
    conv_in: Conv2d,
    down: Vec<Down>,
    mid: (Resnet, Attention, Resnet),
    norm_out: GroupNorm,
    conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
}

impl Encoder {
    /// Builds the encoder; `vb` is rooted at the VAE's state dict.
    pub fn new(vb: VarBuilder, c: &VaeConfig) -> CResult<Self> {
        let g = c.norm_num_groups;
        let ch = &c.block_out_channels;
        let (Some(&last), Some(&first)) = (ch.last(), ch.first()) else {
            candle_core::bail!("vae: block_out_channels is empty")
        };
        let e = vb.pp("encoder");
        let mid = e.pp("mid_block");
        let mut down = Vec::with_capacity(ch.len());
        for (i, &out) in ch.iter().enumerate() {
            let vbi = e.pp("down_blocks").pp(i);
            let cin = if i == 0 { first } else { ch[i - 1] };
            let resnets = (0..c.layers_per_block)
                .map(|j| {
                    let rin = if j == 0 { cin } else { out };
                    Resnet::new(vbi.pp("resnets").pp(j), rin, out, g, Layout::Nchw)
                })
                .collect::<CResult<_>>()?;
            let downsample = if i + 1 < ch.len() {
                Some(nn::conv2d(
                    vbi.pp("downsamplers").pp(0).pp("conv"),
                    out,
                    out,
                    3,
                    2,
                    0,
                )?)
            } else {
                None
            };
            down.push(Down { resnets, downsample });
        }
        let moments = 2 * c.latent_channels;
        Ok(Encoder {
            conv_in: nn::conv2d(e.pp("conv_in"), c.in_channels, first, 3, 1, 1)?,
            down,
            mid: (
                Resnet::new(mid.pp("resnets").pp(0), last, last, g, Layout::Nchw)?,
                Attention::new(mid.pp("attentions").pp(0), last, g, Layout::Nchw)?,
                Resnet::new(mid.pp("resnets").pp(1), last, last, g, Layout::Nchw)?,
            ),
            norm_out: nn::group_norm(g, last, EPS, e.pp("conv_norm_out"))?,
            conv_out: nn::conv2d(e.pp("conv_out"), last, moments, 3, 1, 1)?,
            quant_conv: if c.use_quant_conv {
                Some(nn::conv2d(vb.pp("quant_conv"), moments, moments, 1, 1, 0)?)
            } else {
                None
            },
        })
    }

    /// The moments `(b, 2·latent, h/f, w/f)`: the mean, then the log-variance.
    pub fn moments(&self, x: &Tensor) -> CResult<Tensor> {
        let mut x = self.conv_in.forward(x)?;
        for lvl in &self.down {
            for r in &lvl.resnets {
                x = r.forward(&x)?;
            }
            if let Some(d) = &lvl.downsample {
                x = d.forward(&x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?)?;
            }
        }
        x = self.mid.0.forward(&x)?;
        x = self.mid.1.forward(&x)?;
        x = self.mid.2.forward(&x)?;
        x = self.conv_out.forward(&self.norm_out.forward_silu(&x)?)?;
        match &self.quant_conv {
            Some(q) => q.forward(&x),
            None => Ok(x),
        }
    }

    /// The mean of the latent distribution (`latent_dist.mode()`), unscaled.
    pub fn mean(&self, x: &Tensor) -> CResult<Tensor> {
        let m = self.moments(x)?;
        let half = m.dim(1)? / 2;
        m.narrow(1, 0, half)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};

    /// The tiny preset's VAE with random weights, except a `quant_conv` that copies
    /// the mean and sends the log-variance to -1e4, so that candle-transformers'
    /// `encode(x).sample()` is its mean exactly; shoal's encoder must give it.
    #[test]
    fn encoder_equals_candle_transformers() {
        let p = crate::presets::preset("tiny").unwrap();
        let cfg: VaeConfig = serde_json::from_value(p.vae.clone()).unwrap();
        let ak = || AutoEncoderKLConfig {
            block_out_channels: cfg.block_out_channels.clone(),
            layers_per_block: cfg.layers_per_block,
            latent_channels: cfg.latent_channels,
            norm_num_groups: cfg.norm_num_groups,
            use_quant_conv: true,
            use_post_quant_conv: true,
        };
        let (vb, made) = crate::random::var_builder(3, DType::F32);
        AutoEncoderKL::new(vb, 3, 3, ak()).unwrap();
        let mut map = made.take();
        let m = 2 * cfg.latent_channels;
        let l = cfg.latent_channels;
        let eye = Tensor::eye(m, DType::F32, &Device::Cpu).unwrap();
        let keep = Tensor::cat(
            &[
                Tensor::ones((l, 1), DType::F32, &Device::Cpu).unwrap(),
                Tensor::zeros((l, 1), DType::F32, &Device::Cpu).unwrap(),
            ],
            0,
        )
        .unwrap();
        let w = eye.broadcast_mul(&keep).unwrap().reshape((m, m, 1, 1)).unwrap();
        let mut b = vec![0f32; m];
        for v in &mut b[l..] {
            *v = -1e4;
        }
        map.insert("quant_conv.weight".into(), w);
        map.insert("quant_conv.bias".into(), Tensor::new(b, &Device::Cpu).unwrap());
        let vb = VarBuilder::from_tensors(map.into_iter().collect(), DType::F32, &Device::Cpu);
        let theirs = AutoEncoderKL::new(vb.clone(), 3, 3, ak()).unwrap();
        let ours = Encoder::new(vb, &cfg).unwrap();
        let x = Tensor::randn(0f32, 1., (2, 3, 32, 32), &Device::Cpu).unwrap();
        let want = theirs.encode(&x).unwrap().sample().unwrap();
        let got = ours.mean(&x).unwrap();
        assert_eq!(got.dims(), want.dims());
        let d = crate::test_util::max_abs_diff(&got, &want);
        assert!(d < 1e-5, "max |Δ| {d}");
    }

    /// The channels-last decoder decodes what the NCHW one does (the tiny
    /// preset's VAE, random weights), at a square and an oblong latent.
    #[test]
    fn channels_last_decoder_matches_nchw() {
        let p = crate::presets::preset("tiny").unwrap();
        let cfg: VaeConfig = serde_json::from_value(p.vae.clone()).unwrap();
        let (vb, _) = crate::random::var_builder(5, DType::F32);
        let a = Decoder::new_in(vb.clone(), &cfg, Layout::Nchw).unwrap();
        let b = Decoder::new_in(vb, &cfg, Layout::Nhwc).unwrap();
        for (h, w) in [(8, 8), (5, 7)] {
            let z = Tensor::randn(0f32, 1., (2, cfg.latent_channels, h, w), &Device::Cpu).unwrap();
            let (x, y) = (a.decode(&z).unwrap(), b.decode(&z).unwrap());
            assert_eq!(x.dims(), y.dims());
            let scale = crate::test_util::max_abs(&x);
            let d = crate::test_util::max_abs_diff(&x, &y);
            assert!(scale > 0.0);
            assert!(d <= 1e-5 * scale, "{h}x{w}: max |Δ| {d}");
        }
    }

    /// Bands in threads of one process, over channels: the same protocol the
    /// engine runs between processes (its test goes through `shoal launch`).
    struct ThreadBands {
        index: usize,
        count: usize,
        tx: Vec<Option<std::sync::mpsc::Sender<Tensor>>>,
        rx: Vec<Option<std::sync::mpsc::Receiver<Tensor>>>,
    }

    impl ThreadBands {
        fn all(count: usize) -> Vec<ThreadBands> {
            let mut tx: Vec<Vec<Option<std::sync::mpsc::Sender<Tensor>>>> =
                (0..count).map(|_| (0..count).map(|_| None).collect()).collect();
            let mut rx: Vec<Vec<Option<std::sync::mpsc::Receiver<Tensor>>>> =
                (0..count).map(|_| (0..count).map(|_| None).collect()).collect();
            for a in 0..count {
                for b in 0..count {
                    if a != b {
                        let (t, r) = std::sync::mpsc::channel();
                        tx[a][b] = Some(t);
                        rx[b][a] = Some(r);
                    }
                }
            }
            tx.into_iter()
                .zip(rx)
                .enumerate()
                .map(|(index, (tx, rx))| ThreadBands { index, count, tx, rx })
                .collect()
        }
        fn send(&self, to: usize, t: &Tensor) {
            self.tx[to].as_ref().unwrap().send(t.clone()).unwrap();
        }
        fn recv(&self, from: usize) -> Tensor {
            self.rx[from].as_ref().unwrap().recv().unwrap()
        }
    }

    impl BandComm for ThreadBands {
        fn band(&self) -> (usize, usize) {
            (self.index, self.count)
        }
        fn halo(&self, first: &Tensor, last: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
            let (up, down) = (
                self.index.checked_sub(1),
                (self.index + 1 < self.count).then_some(self.index + 1),
            );
            if let Some(u) = up {
                self.send(u, first);
            }
            if let Some(d) = down {
                self.send(d, last);
            }
            Ok((up.map(|u| self.recv(u)), down.map(|d| self.recv(d))))
        }
        fn sum(&self, t: &Tensor) -> CResult<Tensor> {
            for o in (0..self.count).filter(|&o| o != self.index) {
                self.send(o, t);
            }
            let mut acc: Option<Tensor> = None;
            for o in 0..self.count {
                let v = if o == self.index { t.clone() } else { self.recv(o) };
                acc = Some(match acc {
                    None => v,
                    Some(a) => (a + v)?,
                });
            }
            Ok(acc.unwrap())
        }
    }

    /// The streamed decoder (sequential offload: each layer built from the
    /// weights when it runs) computes the held one's bits, whole and in bands.
    #[test]
    fn streamed_decoder_equals_the_held_one() {
        let p = crate::presets::preset("tiny").unwrap();
        let cfg: VaeConfig = serde_json::from_value(p.vae.clone()).unwrap();
        let (vb, _) = crate::random::var_builder(11, DType::F32);
        let held = Decoder::new(vb.clone(), &cfg).unwrap();
        let streamed = Decoder::streamed(vb, &cfg);
        let z = Tensor::randn(0f32, 1., (2, cfg.latent_channels, 6, 5), &Device::Cpu).unwrap();
        let (a, b) = (held.decode(&z).unwrap(), streamed.decode(&z).unwrap());
        assert_eq!(a.dims(), b.dims());
        assert_eq!(crate::test_util::max_abs_diff(&a, &b), 0.0);
        let bands: Vec<Tensor> = std::thread::scope(|s| {
            let hs: Vec<_> = ThreadBands::all(2)
                .into_iter()
                .enumerate()
                .map(|(k, comm)| {
                    let dec = if k == 0 { &held } else { &streamed };
                    let z = &z;
                    s.spawn(move || dec.decode_band(z, &comm).unwrap())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let stacked = Tensor::cat(&bands, 2).unwrap();
        assert!(crate::test_util::max_abs_diff(&stacked, &a) < 1e-5);
    }

    #[test]
    fn band_rows_cover_the_rows_once() {
        for rows in 1..20 {
            for count in 1..=rows.min(5) {
                let mut next = 0;
                for i in 0..count {
                    let (s, l) = band_rows(rows, i, count).unwrap();
                    assert_eq!(s, next);
                    assert!(l >= 1);
                    next = s + l;
                }
                assert_eq!(next, rows);
            }
            assert_eq!(band_rows(rows, 0, rows + 1), None);
        }
        assert_eq!(band_rows(4, 4, 4), None);
    }

    /// The split decode on 2 and 3 bands (uneven ones included), NCHW and
    /// channels-last, stacks to the whole decode within 1e-5 of the image's scale.
    #[test]
    fn split_decode_equals_the_whole_decode() {
        let p = crate::presets::preset("tiny").unwrap();
        let cfg: VaeConfig = serde_json::from_value(p.vae.clone()).unwrap();
        let (vb, _) = crate::random::var_builder(9, DType::F32);
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let dec = Decoder::new_in(vb.clone(), &cfg, layout).unwrap();
            let z = Tensor::randn(0f32, 1., (2, cfg.latent_channels, 7, 5), &Device::Cpu).unwrap();
            let whole = dec.decode(&z).unwrap();
            for count in [2, 3] {
                let bands: Vec<Tensor> = std::thread::scope(|s| {
                    let hs: Vec<_> = ThreadBands::all(count)
                        .into_iter()
                        .map(|b| {
                            let (dec, z) = (&dec, &z);
                            s.spawn(move || dec.decode_band(z, &b).unwrap())
                        })
                        .collect();
                    hs.into_iter().map(|h| h.join().unwrap()).collect()
                });
                let got = Tensor::cat(&bands, 2).unwrap();
                assert_eq!(got.dims(), whole.dims(), "{layout:?} {count}");
                let scale = crate::test_util::max_abs(&whole);
                let d = crate::test_util::max_abs_diff(&got, &whole);
                assert!(
                    d <= 1e-5 * scale,
                    "{layout:?}, {count} bands: max |Δ| {d} (scale {scale})"
                );
            }
        }
    }
}
