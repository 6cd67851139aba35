//! `Attention`, `BasicTransformerBlock` and `Transformer2DModel` (diffusers `models/attention.py`,
//! `models/attention_processor.py`, `models/transformers/transformer_2d.py`).

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::config::{BlockSpec, UNetConfig};
use crate::nn::{self, AttentionOpts, Conv2d, GroupNorm, Kernels, LayerNorm, Layout, Linear};

use super::{CResult, conv};

/// `Attention` with q/k/v projections (no bias) and `to_out.0`. On the fast
/// path the projections of one input are one GEMM: `[q; k; v]` for
/// self-attention, `[k; v]` for cross-attention (the separate layers are views
/// of the stacked weight), and attention reads q, k and v as strided views of it.
#[derive(Debug)]
pub(super) struct Attention {
    pub(super) q: Linear,
    pub(super) k: Linear,
    pub(super) v: Linear,
    pub(super) stacked: Option<Linear>,
    pub(super) out: Linear,
    pub(super) heads: usize,
    pub(super) upcast: bool,
    pub(super) kernels: Kernels,
}

impl Attention {
    /// `self_attn`: the layer attends to its own input (`ctx == dim`, called without a context).
    pub(super) fn new(
        vb: VarBuilder,
        dim: usize,
        ctx: usize,
        heads: usize,
        upcast: bool,
        self_attn: bool,
    ) -> CResult<Self> {
        let kernels = Kernels::for_weights(vb.device(), vb.dtype());
        let (q, k, v, stacked) = if kernels == Kernels::Fast && self_attn && ctx == dim {
            let s = nn::linear_stack_no_bias(dim, &[dim; 3], &[vb.pp("to_q"), vb.pp("to_k"), vb.pp("to_v")])?;
            (s.rows(0, dim)?, s.rows(dim, dim)?, s.rows(2 * dim, dim)?, Some(s))
        } else if kernels == Kernels::Fast && !self_attn {
            let s = nn::linear_stack_no_bias(ctx, &[dim; 2], &[vb.pp("to_k"), vb.pp("to_v")])?;
            let q = nn::linear_no_bias(dim, dim, vb.pp("to_q"))?;
            (q, s.rows(0, dim)?, s.rows(dim, dim)?, Some(s))
        } else {
            (
                nn::linear_no_bias(dim, dim, vb.pp("to_q"))?,
                nn::linear_no_bias(ctx, dim, vb.pp("to_k"))?,
                nn::linear_no_bias(ctx, dim, vb.pp("to_v"))?,
                None,
            )
        };
        Ok(Attention {
            kernels,
            q,
            k,
            v,
            stacked,
            out: nn::linear(dim, dim, vb.pp("to_out").pp(0))?,
            heads,
            upcast,
        })
    }

    pub(super) fn forward(&self, x: &Tensor, ctx: Option<&Tensor>) -> CResult<Tensor> {
        let (q, k, v) = nn::profile::scope("attn linear", x.device(), || {
            let dim = x.dim(2)?;
            let third = |t: &Tensor, i: usize| t.narrow(2, i * dim, dim);
            match (&self.stacked, ctx) {
                (Some(s), None) => {
                    let h = s.forward(x)?;
                    Ok((third(&h, 0)?, third(&h, 1)?, third(&h, 2)?))
                }
                (Some(s), Some(c)) => {
                    let h = s.forward(c)?;
                    Ok((self.q.forward(x)?, third(&h, 0)?, third(&h, 1)?))
                }
                (None, c) => {
                    let c = c.unwrap_or(x);
                    Ok((self.q.forward(x)?, self.k.forward(c)?, self.v.forward(c)?))
                }
            }
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
    pub(super) ff_in: nn::Geglu,
    pub(super) ff_out: Linear,
}

impl TransformerBlock {
    pub(super) fn new(vb: VarBuilder, dim: usize, ctx: usize, heads: usize, upcast: bool) -> CResult<Self> {
        let inner = dim * 4;
        Ok(TransformerBlock {
            norm1: nn::layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(vb.pp("attn1"), dim, dim, heads, upcast, true)?,
            norm2: nn::layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(vb.pp("attn2"), dim, ctx, heads, upcast, false)?,
            norm3: nn::layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff_in: nn::geglu(dim, inner, vb.pp("ff").pp("net").pp(0).pp("proj"))?,
            ff_out: nn::linear(inner, dim, vb.pp("ff").pp("net").pp(2))?,
        })
    }

    pub(super) fn forward(&self, x: &Tensor, ctx: &Tensor) -> CResult<Tensor> {
        use nn::profile::scope;
        let dev = x.device();
        // Each residual add and the norm after it are one step (one kernel on the fast path).
        let a1 = self.attn1.forward(&self.norm1.forward(x)?, None)?;
        let (x, n2) = self.norm2.forward_add(&a1, x)?;
        let a2 = self.attn2.forward(&n2, Some(ctx))?;
        let (x, n3) = self.norm3.forward_add(&a2, &x)?;
        let h = scope("ff linear + geglu", dev, || self.ff_in.forward(&n3))?;
        // The output projection accumulates into the residual stream (one GEMM on the fast path).
        scope("ff linear + residual", dev, || self.ff_out.forward_add(&h, x))
    }
}

/// `Transformer2DModel` (continuous input).
#[derive(Debug)]
pub(super) struct Transformer2D {
    pub(super) norm: GroupNorm,
    pub(super) proj_in: Proj,
    pub(super) blocks: Vec<TransformerBlock>,
    pub(super) proj_out: Proj,
    pub(super) layout: Layout,
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
        layout: Layout,
    ) -> CResult<Self> {
        let proj = |name: &str| -> CResult<Proj> {
            Ok(if c.use_linear_projection {
                Proj::Linear(nn::linear(ch, ch, vb.pp(name))?)
            } else {
                Proj::Conv(conv(vb.pp(name), ch, ch, 1, 1, layout)?)
            })
        };
        Ok(Transformer2D {
            layout,
            norm: nn::group_norm_in(c.norm_num_groups, ch, 1e-6, vb.pp("norm"), layout)?,
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
        let (b, c, h, w) = self.layout.dims(x)?;
        let y = self.norm.forward(x)?;
        // The blocks run on (b, h·w, c): a view of channels-last activations, a
        // transpose of NCHW ones.
        let to_seq = |t: Tensor| match self.layout {
            Layout::Nchw => t.permute((0, 2, 3, 1))?.reshape((b, h * w, c)),
            Layout::Nhwc => t.reshape((b, h * w, c)),
        };
        let to_img = |t: Tensor| match self.layout {
            Layout::Nchw => t.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?.contiguous(),
            Layout::Nhwc => t.reshape((b, h, w, c)),
        };
        let mut y = match &self.proj_in {
            Proj::Conv(p) => to_seq(p.forward(&y)?)?,
            Proj::Linear(p) => p.forward(&to_seq(y)?)?,
        };
        for blk in &self.blocks {
            y = blk.forward(&y, ctx)?;
        }
        match &self.proj_out {
            Proj::Conv(p) => p.forward_add(&to_img(y)?, x),
            Proj::Linear(p) => to_img(p.forward(&y)?)? + x,
        }
    }
}
