//! Group normalization (`nn.GroupNorm`, affine), optionally followed by SiLU.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use super::{Kernels, Layout};

/// A GroupNorm layer: candle-nn's composition on the plain path, one fused
/// kernel chain (statistics, then normalize + affine + SiLU) on the fast path,
/// one launch for small channels-last activations ([`group_norm_one_pass`]).
#[derive(Debug, Clone)]
pub struct GroupNorm {
    plain: candle_nn::GroupNorm,
    groups: usize,
    eps: f64,
    weight: Tensor,
    bias: Tensor,
    kernels: Kernels,
    layout: Layout,
}

/// Loads `weight` and `bias` under `vb`: `groups` groups over `channels`, NCHW.
pub fn group_norm(
    groups: usize,
    channels: usize,
    eps: f64,
    vb: VarBuilder,
) -> candle_core::Result<GroupNorm> {
    group_norm_in(groups, channels, eps, vb, Layout::Nchw)
}

/// [`group_norm`] for activations in `layout`.
pub fn group_norm_in(
    groups: usize,
    channels: usize,
    eps: f64,
    vb: VarBuilder,
    layout: Layout,
) -> candle_core::Result<GroupNorm> {
    let kernels = Kernels::for_weights(vb.device(), vb.dtype());
    let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.))?;
    let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.))?;
    Ok(GroupNorm {
        plain: candle_nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?,
        groups,
        eps,
        weight,
        bias,
        kernels,
        layout,
    })
}

/// Elements of one group of one image up to which a channels-last GroupNorm runs
/// in one launch (see [`group_norm_one_pass`]).
const ONE_PASS_MAX: usize = 8192;

/// Whether a channels-last GroupNorm of `groups` groups over `channels` channels
/// and `pixels` pixels per image runs in one launch (a block per group of one
/// image) rather than three (statistics spread over many blocks, their sum, the
/// result). `bench ops` (session 10, one H200, f16): 2560 elements per group
/// (2×1280×8²) 0.009 ms in one launch against 0.024 in three, 5120 (2×2560×8²)
/// 0.012 against 0.022, the same at batch 16; 10240 (1280×16²) even at batch 2
/// (0.021 / 0.022) and slower at batch 16 (0.034 / 0.028); from 15360 elements
/// on (1920 channels at 16², every 32², 64² and VAE shape) one launch is 1.1–36×
/// slower (docs/KERNELS.md).
pub fn group_norm_one_pass(channels: usize, pixels: usize, groups: usize) -> bool {
    groups > 0 && pixels.saturating_mul(channels / groups) <= ONE_PASS_MAX
}

impl GroupNorm {
    /// [`group_norm_one_pass`] for `x`, channels-last `(n, ..., c)`.
    #[cfg(feature = "fused")]
    fn takes_one_pass(&self, x: &Tensor) -> bool {
        let dims = x.dims();
        match dims {
            [_, inner @ .., c] if !inner.is_empty() => {
                group_norm_one_pass(*c, inner.iter().product(), self.groups)
            }
            _ => false,
        }
    }

    fn run(&self, x: &Tensor, silu: bool) -> candle_core::Result<Tensor> {
        super::profile::scope("group_norm", x.device(), || {
            if self.kernels == Kernels::Fast {
                #[cfg(feature = "fused")]
                let fused = match self.layout {
                    Layout::Nchw => shoal_kernels::fused::group_norm,
                    Layout::Nhwc if self.takes_one_pass(x) => shoal_kernels::fused::group_norm_nhwc_one_pass,
                    Layout::Nhwc => shoal_kernels::fused::group_norm_nhwc,
                };
                #[cfg(feature = "fused")]
                match fused(x, &self.weight, &self.bias, self.groups, self.eps, silu) {
                    Ok(y) => return Ok(y),
                    Err(shoal_kernels::Error::Unsupported { why, .. }) => {
                        super::fell_back(|| format!("group_norm {:?} {:?}", x.dtype(), x.dims()), &why)
                    }
                    Err(e) => return Err(candle_core::Error::Msg(e.to_string())),
                }
            }
            let _ = (self.groups, self.eps);
            let y = self.plain.forward(&self.layout.to_nchw(x)?)?;
            let y = if silu { y.silu()? } else { y };
            self.layout.from_nchw(&y)
        })
    }

    /// GroupNorm of a tensor cut into bands of rows held by several processes,
    /// `total_rows` rows in all: `sum` adds a tensor over every band (the same
    /// value on each; two calls per norm). The
    /// statistics are the whole tensor's, formed like candle-nn's GroupNorm (the
    /// mean, then the centred second moment, in f32), so each band is
    /// normalized as the whole would be, up to the order of the additions.
    pub fn forward_split(
        &self,
        x: &Tensor,
        silu: bool,
        total_rows: usize,
        sum: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<Tensor> {
        use candle_core::DType;
        super::profile::scope("group_norm (split)", x.device(), || {
            let xn = self.layout.to_nchw(x)?;
            let (b, c, h, w) = xn.dims4()?;
            let g = self.groups;
            if g == 0 || !c.is_multiple_of(g) {
                candle_core::bail!("group_norm: {c} channels in {g} groups")
            }
            let per = (c / g) * h * w;
            let count = ((c / g) * total_rows * w) as f64;
            let xf = xn.to_dtype(DType::F32)?.reshape((b, g, per))?;
            let mean = (sum(&xf.sum_keepdim(2)?)? / count)?;
            let xc = xf.broadcast_sub(&mean)?;
            let var = (sum(&xc.sqr()?.sum_keepdim(2)?)? / count)?;
            let y = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
            let y = y
                .to_dtype(x.dtype())?
                .reshape((b, c, h, w))?
                .broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?
                .broadcast_add(&self.bias.reshape((1, c, 1, 1))?)?;
            let y = if silu { y.silu()? } else { y };
            self.layout.from_nchw(&y)
        })
    }

    /// `silu(group_norm(x))`, the pre-activation of every ResNet convolution.
    pub fn forward_silu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.run(x, true)
    }

    /// [`GroupNorm::forward_silu`] written over `x` where the fast channels-last
    /// kernel runs (the same bits as a new tensor; `bench ops` checks it), else a
    /// new tensor. `x`'s memory is overwritten: the caller must hold no other
    /// handle on it (no clone, no view of the same storage).
    pub fn forward_silu_over(&self, x: Tensor) -> candle_core::Result<Tensor> {
        #[cfg(feature = "fused")]
        if self.kernels == Kernels::Fast && self.layout == Layout::Nhwc {
            let done = super::profile::scope("group_norm", x.device(), || {
                match shoal_kernels::fused::group_norm_nhwc_(
                    &x,
                    &self.weight,
                    &self.bias,
                    self.groups,
                    self.eps,
                    true,
                ) {
                    Ok(()) => Ok(true),
                    Err(shoal_kernels::Error::Unsupported { why, .. }) => {
                        let what = || format!("group_norm in place {:?} {:?}", x.dtype(), x.dims());
                        super::fell_back(what, &why);
                        Ok(false)
                    }
                    Err(e) => Err(candle_core::Error::Msg(e.to_string())),
                }
            })?;
            if done {
                return Ok(x);
            }
        }
        self.run(&x, true)
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.run(x, false)
    }
}

/// A LayerNorm over the last dimension (`nn.LayerNorm`, affine): candle-nn's on the
/// plain path, one fused kernel on the fast path, which can also take the residual
/// add that comes before it ([`LayerNorm::forward_add`]).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    plain: candle_nn::LayerNorm,
    /// gamma then beta, `(2·dim,)`, for the fused kernel.
    #[cfg_attr(
        not(feature = "fused"),
        allow(dead_code, reason = "read by the fused kernel only")
    )]
    gb: Tensor,
    eps: f64,
    kernels: Kernels,
}

/// Loads `weight` and `bias` under `vb`: a LayerNorm over `dim` features.
pub fn layer_norm(dim: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<LayerNorm> {
    let kernels = Kernels::for_weights(vb.device(), vb.dtype());
    let weight = vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.))?;
    let bias = vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.))?;
    let gb = Tensor::cat(&[&weight, &bias], 0)?;
    Ok(LayerNorm {
        plain: candle_nn::LayerNorm::new(weight, bias, eps),
        gb,
        eps,
        kernels,
    })
}

impl LayerNorm {
    /// `(a + b, layer_norm(a + b))`: the residual stream and its norm, one kernel on
    /// the fast path (the sum rounded to the dtype as the plain add stores it).
    pub fn forward_add(&self, a: &Tensor, b: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        super::profile::scope("add + layer_norm", a.device(), || {
            #[cfg(feature = "fused")]
            if let Some((s, y)) = self.fused(a, Some(b))? {
                return Ok((s.unwrap_or_else(|| a.clone()), y));
            }
            let s = (a + b)?;
            let y = self.plain.forward(&s)?;
            Ok((s, y))
        })
    }

    /// The fused kernel's `(sum, norm)`, or `None` when it does not cover the input
    /// (counted as a fallback).
    #[cfg(feature = "fused")]
    fn fused(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
    ) -> candle_core::Result<Option<(Option<Tensor>, Tensor)>> {
        if self.kernels != Kernels::Fast {
            return Ok(None);
        }
        match shoal_kernels::fused::layer_norm(x, residual, &self.gb, self.eps as f32) {
            Ok(r) => Ok(Some(r)),
            Err(shoal_kernels::Error::Unsupported { why, .. }) => {
                super::fell_back(|| format!("layer_norm {:?} {:?}", x.dtype(), x.dims()), &why);
                Ok(None)
            }
            Err(e) => Err(candle_core::Error::Msg(e.to_string())),
        }
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        super::profile::scope("layer_norm", x.device(), || {
            #[cfg(feature = "fused")]
            if let Some((_, y)) = self.fused(x, None)? {
                return Ok(y);
            }
            let _ = (self.eps, self.kernels);
            self.plain.forward(x)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::group_norm_one_pass;

    #[test]
    fn one_launch_only_for_small_groups() {
        // The UNet's 8² level at 512² (1280 and 2560 channels, 32 groups).
        assert!(group_norm_one_pass(1280, 64, 32));
        assert!(group_norm_one_pass(2560, 64, 32));
        assert!(group_norm_one_pass(8192, 1, 1));
        // 16² and above, and the VAE's activations, take three launches.
        assert!(!group_norm_one_pass(1280, 256, 32));
        assert!(!group_norm_one_pass(320, 64 * 64, 32));
        assert!(!group_norm_one_pass(512, 512 * 512, 32));
        assert!(!group_norm_one_pass(8193, 1, 1));
        assert!(!group_norm_one_pass(1280, 64, 0));
        assert!(!group_norm_one_pass(usize::MAX, usize::MAX, 1));
    }
}
