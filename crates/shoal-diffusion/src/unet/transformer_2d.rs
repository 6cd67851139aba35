//! `Attention`, `BasicTransformerBlock` and `Transformer2DModel` (diffusers `models/attention.py`,
//! `models/attention_processor.py`, `models/transformers/transformer_2d.py`).

use candle_core::{Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use crate::config::{BlockSpec, UNetConfig};
use crate::nn::{self, AttentionOpts, Conv2d, GroupNorm, Kernels, Linear};

use super::{CResult, conv};

/// `Attention` with separate q/k/v projections (no bias) and `to_out.0`.
#[derive(Debug)]
pub(super) struct Attention {
    pub(super) q: Linear,
    pub(super) k: Linear,
    pub(super) v: Linear,
    pub(super) out: Linear,
    pub(super) heads: usize,
    pub(super) upcast: bool,
    pub(super) kernels: Kernels,
}

impl Attention {
    pub(super) fn new(vb: VarBuilder, dim: usize, ctx: usize, heads: usize, upcast: bool) -> CResult<Self> {
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

    pub(super) fn forward(&self, x: &Tensor, ctx: Option<&Tensor>) -> CResult<Tensor> {
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
pub(super) struct TransformerBlock {
    pub(super) norm1: LayerNorm,
    pub(super) attn1: Attention,
    pub(super) norm2: LayerNorm,
    pub(super) attn2: Attention,
    pub(super) norm3: LayerNorm,
    pub(super) ff_in: Linear,
    pub(super) ff_out: Linear,
}

impl TransformerBlock {
    pub(super) fn new(vb: VarBuilder, dim: usize, ctx: usize, heads: usize, upcast: bool) -> CResult<Self> {
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

    pub(super) fn forward(&self, x: &Tensor, ctx: &Tensor) -> CResult<Tensor> {
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
pub(super) struct Transformer2D {
    pub(super) norm: GroupNorm,
    pub(super) proj_in: Proj,
    pub(super) blocks: Vec<TransformerBlock>,
    pub(super) proj_out: Proj,
}

#[derive(Debug)]
pub(super) enum Proj {
    Conv(Conv2d),
    Linear(Linear),
}

impl Transformer2D {
    pub(super) fn new(
        vb: VarBuilder,
        ch: usize,
        spec: &BlockSpec,
        layers: usize,
        c: &UNetConfig,
    ) -> CResult<Self> {
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

    pub(super) fn forward(&self, x: &Tensor, ctx: &Tensor) -> CResult<Tensor> {
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
