//! Group normalization (`nn.GroupNorm`, affine), optionally followed by SiLU.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use super::{Kernels, Layout};

/// A GroupNorm layer: candle-nn's composition on the plain path, one fused
/// kernel chain (statistics, then normalize + affine + SiLU) on the fast path.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    plain: candle_nn::GroupNorm,
    groups: usize,
    eps: f64,
    #[cfg_attr(not(feature = "fused"), allow(dead_code))]
    weight: Tensor,
    #[cfg_attr(not(feature = "fused"), allow(dead_code))]
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

impl GroupNorm {
    fn run(&self, x: &Tensor, silu: bool) -> candle_core::Result<Tensor> {
        super::profile::scope("group_norm", x.device(), || {
            if self.kernels == Kernels::Fast {
                #[cfg(feature = "fused")]
                let fused = match self.layout {
                    Layout::Nchw => shoal_kernels::fused::group_norm,
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

    /// `silu(group_norm(x))`, the pre-activation of every ResNet convolution.
    pub fn forward_silu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.run(x, true)
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.run(x, false)
    }
}
