//! `get_timestep_embedding` and `TimestepEmbedding` (diffusers `models/embeddings.py`).

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

use crate::nn::{self, Linear};

use super::CResult;

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
pub(super) struct TimestepEmbedding {
    pub(super) l1: Linear,
    pub(super) l2: Linear,
}

impl TimestepEmbedding {
    pub(super) fn new(vb: VarBuilder, cin: usize, dim: usize) -> CResult<Self> {
        Ok(TimestepEmbedding {
            l1: nn::linear(cin, dim, vb.pp("linear_1"))?,
            l2: nn::linear(dim, dim, vb.pp("linear_2"))?,
        })
    }
    pub(super) fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        self.l2.forward(&self.l1.forward(x)?.silu()?)
    }
}
