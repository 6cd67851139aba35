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

/// Rows per block of the GEGLU projection's interleaved layout ([`geglu_interleave`]).
pub const GEGLU_BLOCK: usize = 8;

/// The GEGLU projection `w` `(2·inner, k)`, `b` `(2·inner,)` with its rows interleaved by
/// blocks of [`GEGLU_BLOCK`]: rows `16q..16q+8` of the result are the value rows `8q..8q+8`,
/// rows `16q+8..16q+16` the gate rows `inner+8q..inner+8q+8` of the same outputs (the
/// layout of shoal-kernels' one-GEMM GEGLU, whose epilogue pairs each value with its gate
/// in registers). `inner` must be a multiple of the block.
pub fn geglu_interleave(w: &Tensor, b: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let (n, k) = w.dims2()?;
    let inner = n / 2;
    if !n.is_multiple_of(2) || !inner.is_multiple_of(GEGLU_BLOCK) || b.dims() != [n] {
        candle_core::bail!(
            "GEGLU projection {:?} with bias {:?}: 2·inner rows, inner a multiple of {GEGLU_BLOCK}",
            w.dims(),
            b.dims()
        )
    }
    let q = inner / GEGLU_BLOCK;
    let w = w
        .reshape((2, q, GEGLU_BLOCK, k))?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((n, k))?;
    let b = b
        .reshape((2, q, GEGLU_BLOCK))?
        .transpose(0, 1)?
        .contiguous()?
        .reshape(n)?;
    Ok((w, b))
}

/// The values and the gates, each `(..., inner)`, of a projection's output `h` `(..., 2·inner)`
/// computed with [`geglu_interleave`]'s weights.
pub fn geglu_split(h: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let dims = h.dims().to_vec();
    let Some((&n, lead)) = dims.split_last() else {
        candle_core::bail!("GEGLU: a scalar projection output")
    };
    let (inner, rows) = (n / 2, lead.iter().product::<usize>());
    let q = inner / GEGLU_BLOCK;
    let blocks = h.reshape((rows, q, 2, GEGLU_BLOCK))?;
    let mut out = lead.to_vec();
    out.push(inner);
    let half = |i| blocks.narrow(2, i, 1)?.contiguous()?.reshape(out.as_slice());
    Ok((half(0)?, half(1)?))
}

/// The feed-forward's GEGLU (diffusers' `GEGLU`): the projection `cin → 2·inner`, then
/// `a · gelu_erf(gate)` of its two halves. Where shoal-kernels' one-GEMM GEGLU covers the
/// layer (feature `gemm`: sm_90, f16/bf16, `inner` a multiple of 32), the weight is held in
/// that kernel's interleaved layout ([`geglu_interleave`], instead of the loaded one).
#[derive(Debug, Clone)]
pub struct Geglu {
    proj: Linear,
    interleaved: bool,
}

/// Loads the projection `weight` `(2·inner, cin)` and `bias` `(2·inner,)` under `vb`.
pub fn geglu(cin: usize, inner: usize, vb: VarBuilder) -> candle_core::Result<Geglu> {
    let (device, dtype) = (vb.device().clone(), vb.dtype());
    let proj = linear(cin, 2 * inner, vb)?;
    #[cfg(feature = "gemm")]
    let one_gemm =
        proj.kernels == Kernels::Fast && shoal_kernels::gemm::geglu_gemm_covers(&device, dtype, cin, inner);
    #[cfg(not(feature = "gemm"))]
    let one_gemm = {
        let _ = (&device, dtype);
        false
    };
    Geglu::new(proj, one_gemm)
}

impl Geglu {
    /// `proj` as it was loaded, or with its rows interleaved for the one-GEMM kernel.
    pub fn new(proj: Linear, interleave: bool) -> candle_core::Result<Geglu> {
        let (w, b) = (proj.plain.weight(), proj.plain.bias());
        match b {
            Some(b) if interleave => {
                let (w, b) = geglu_interleave(w, b)?;
                Ok(Geglu {
                    proj: Linear {
                        plain: candle_nn::Linear::new(w, Some(b)),
                        kernels: proj.kernels,
                    },
                    interleaved: true,
                })
            }
            _ => Ok(Geglu {
                proj,
                interleaved: false,
            }),
        }
    }

    /// Whether the weight is held interleaved (the one-GEMM kernel's layout).
    pub fn interleaved(&self) -> bool {
        self.interleaved
    }

    /// `x` `(..., cin)` → `(..., inner)`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if !self.interleaved {
            return self.proj.forward_geglu(x);
        }
        #[cfg(feature = "gemm")]
        if let Some(b) = self.proj.plain.bias() {
            match shoal_kernels::gemm::geglu_gemm(x, self.proj.plain.weight(), b) {
                Ok(y) => return Ok(y),
                Err(shoal_kernels::Error::Unsupported { why, .. }) => {
                    super::fell_back(|| format!("geglu_gemm {:?} {:?}", x.dtype(), x.dims()), &why)
                }
                Err(e) => return Err(candle_core::Error::Msg(e.to_string())),
            }
        }
        // The plain composition on the interleaved weight (a shape the kernel declined).
        let (a, gate) = geglu_split(&self.proj.forward(x)?)?;
        a * gate.gelu_erf()?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn weights(inner: usize, k: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let dev = Device::Cpu;
        Ok((
            Tensor::randn(0f32, 1., (2 * inner, k), &dev)?,
            Tensor::randn(0f32, 1., 2 * inner, &dev)?,
        ))
    }

    #[test]
    fn the_interleave_puts_each_block_of_values_before_its_gates() -> candle_core::Result<()> {
        let (inner, k) = (24, 5);
        let (w, b) = weights(inner, k)?;
        let (wi, bi) = geglu_interleave(&w, &b)?;
        let (w, wi) = (w.to_vec2::<f32>()?, wi.to_vec2::<f32>()?);
        let (b, bi) = (b.to_vec1::<f32>()?, bi.to_vec1::<f32>()?);
        for q in 0..inner / GEGLU_BLOCK {
            for i in 0..GEGLU_BLOCK {
                let (v, g) = (GEGLU_BLOCK * q + i, inner + GEGLU_BLOCK * q + i);
                let (rv, rg) = (2 * GEGLU_BLOCK * q + i, 2 * GEGLU_BLOCK * q + GEGLU_BLOCK + i);
                assert_eq!(wi[rv], w[v], "value row {v}");
                assert_eq!(wi[rg], w[g], "gate row {g}");
                assert_eq!((bi[rv], bi[rg]), (b[v], b[g]));
            }
        }
        Ok(())
    }

    #[test]
    fn an_interleaved_geglu_computes_the_loaded_one() -> candle_core::Result<()> {
        let (inner, k) = (32, 16);
        let (w, b) = weights(inner, k)?;
        let x = Tensor::randn(0f32, 1., (2, 3, k), &Device::Cpu)?;
        let proj = || Linear {
            plain: candle_nn::Linear::new(w.clone(), Some(b.clone())),
            kernels: Kernels::Plain,
        };
        let loaded = Geglu::new(proj(), false)?;
        let interleaved = Geglu::new(proj(), true)?;
        assert!(interleaved.interleaved() && !loaded.interleaved());
        let (y0, y1) = (loaded.forward(&x)?, interleaved.forward(&x)?);
        assert_eq!(y1.dims(), [2, 3, inner]);
        let diff = (y0 - y1)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?;
        // The same products in the same order: only the GEMM's column order differs.
        assert!(diff < 1e-5, "max abs difference {diff}");
        Ok(())
    }

    #[test]
    fn a_projection_that_is_not_two_halves_of_whole_blocks_is_refused() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::zeros((2 * 12, 4), DType::F32, &dev)?;
        let b = Tensor::zeros(24, DType::F32, &dev)?;
        let e = geglu_interleave(&w, &b)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("a multiple of 8"), "{e}");
        Ok(())
    }
}
