//! Linear layers (`nn.Linear`), and the GEGLU projection of the feed-forward.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use super::Kernels;

/// `x · wᵀ + b` over the last dimension.
#[derive(Debug, Clone)]
pub struct Linear {
    plain: candle_nn::Linear,
    kernels: Kernels,
}

/// Loads `weight` `(out, in)` and `bias` `(out,)` under `vb`.
pub fn linear(cin: usize, cout: usize, vb: VarBuilder) -> candle_core::Result<Linear> {
    let kernels = Kernels::for_weights(vb.device(), vb.dtype());
    Ok(Linear {
        plain: candle_nn::linear(cin, cout, vb)?,
        kernels,
    })
}

/// Loads `weight` `(out, in)` only.
pub fn linear_no_bias(cin: usize, cout: usize, vb: VarBuilder) -> candle_core::Result<Linear> {
    let kernels = Kernels::for_weights(vb.device(), vb.dtype());
    Ok(Linear {
        plain: candle_nn::linear_no_bias(cin, cout, vb)?,
        kernels,
    })
}

/// Bias-free projections of one input, loaded under `vbs` (`cin → couts[i]`)
/// and stacked along the output: one GEMM computes them all, and
/// [`Linear::rows`] gives each back as a view of the stacked weight.
pub fn linear_stack_no_bias(cin: usize, couts: &[usize], vbs: &[VarBuilder]) -> candle_core::Result<Linear> {
    let kernels = vbs
        .first()
        .map(|vb| Kernels::for_weights(vb.device(), vb.dtype()))
        .unwrap_or(Kernels::Plain);
    let ws = couts
        .iter()
        .zip(vbs)
        .map(|(&cout, vb)| vb.get_with_hints((cout, cin), "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Linear {
        plain: candle_nn::Linear::new(Tensor::cat(&ws, 0)?, None),
        kernels,
    })
}

impl Linear {
    /// The projection onto output rows `start..start + len` (a view of the weight).
    pub fn rows(&self, start: usize, len: usize) -> candle_core::Result<Linear> {
        let w = self.plain.weight().narrow(0, start, len)?;
        let b = self.plain.bias().map(|b| b.narrow(0, start, len)).transpose()?;
        Ok(Linear {
            plain: candle_nn::Linear::new(w, b),
            kernels: self.kernels,
        })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.kernels == Kernels::Fast {
            #[cfg(feature = "fused")]
            match shoal_kernels::fused::linear(x, self.plain.weight(), self.plain.bias()) {
                Ok(y) => return Ok(y),
                Err(shoal_kernels::Error::Unsupported { why, .. }) => {
                    super::fell_back(|| format!("linear {:?} {:?}", x.dtype(), x.dims()), &why)
                }
                Err(e) => return Err(candle_core::Error::Msg(e.to_string())),
            }
        }
        self.plain.forward(x)
    }
}

impl Linear {
    /// `x · wᵀ + b + residual`, taking `residual`: on the fast path one GEMM that
    /// accumulates into `residual`'s buffer (so nothing else may hold it).
    pub fn forward_add(&self, x: &Tensor, residual: Tensor) -> candle_core::Result<Tensor> {
        if self.kernels == Kernels::Fast {
            #[cfg(feature = "fused")]
            if let Some(b) = self.plain.bias() {
                match shoal_kernels::fused::linear_add_(&residual, x, self.plain.weight(), b) {
                    Ok(()) => return Ok(residual),
                    Err(shoal_kernels::Error::Unsupported { why, .. }) => {
                        super::fell_back(|| format!("linear_add {:?} {:?}", x.dtype(), x.dims()), &why)
                    }
                    Err(e) => return Err(candle_core::Error::Msg(e.to_string())),
                }
            }
        }
        self.forward(x)? + residual
    }

    /// GEGLU on this projection (`out` = 2·inner): `a · gelu_erf(gate)` where
    /// `(a, gate)` are the two halves of `x · wᵀ + b` (diffusers' `GEGLU`).
    pub fn forward_geglu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.kernels == Kernels::Fast {
            #[cfg(feature = "fused")]
            if let Some(b) = self.plain.bias() {
                let fast = shoal_kernels::fused::linear(x, self.plain.weight(), None)
                    .and_then(|h| shoal_kernels::fused::bias_geglu(&h, b));
                match fast {
                    Ok(y) => return Ok(y),
                    Err(shoal_kernels::Error::Unsupported { why, .. }) => {
                        super::fell_back(|| format!("geglu {:?} {:?}", x.dtype(), x.dims()), &why)
                    }
                    Err(e) => return Err(candle_core::Error::Msg(e.to_string())),
                }
            }
        }
        let h = self.plain.forward(x)?;
        let last = h.rank().saturating_sub(1);
        let half = h.dim(last)? / 2;
        let (a, gate) = (h.narrow(last, 0, half)?, h.narrow(last, half, half)?);
        a * gate.gelu_erf()?
    }
}
