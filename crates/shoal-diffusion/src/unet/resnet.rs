//! `ResnetBlock2D` with a time embedding (diffusers `models/resnet.py`).

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::config::UNetConfig;
use crate::nn::{self, Conv2d, GroupNorm, Kernels, Layout, Linear};

use super::{CResult, conv};

/// `ResnetBlock2D` (time-scale-shift `default`).
#[derive(Debug)]
pub(super) struct Resnet {
    pub(super) norm1: GroupNorm,
    pub(super) conv1: Conv2d,
    pub(super) temb: Linear,
    pub(super) norm2: GroupNorm,
    pub(super) conv2: Conv2d,
    pub(super) shortcut: Option<Conv2d>,
    pub(super) scale: f64,
    pub(super) kernels: Kernels,
    pub(super) layout: Layout,
    /// The time embedding's projection goes into `conv1`'s bias (see [`Resnet::forward`]).
    pub(super) temb_in_bias: bool,
}

impl Resnet {
    pub(super) fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        temb: usize,
        c: &UNetConfig,
        scale: f64,
        layout: Layout,
    ) -> CResult<Self> {
        let g = c.norm_num_groups;
        let kernels = Kernels::for_weights(vb.device(), vb.dtype());
        Ok(Resnet {
            norm1: nn::group_norm_in(g, cin, c.norm_eps, vb.pp("norm1"), layout)?,
            conv1: conv(vb.pp("conv1"), cin, cout, 3, 1, layout)?,
            temb: nn::linear(temb, cout, vb.pp("time_emb_proj"))?,
            norm2: nn::group_norm_in(g, cout, c.norm_eps, vb.pp("norm2"), layout)?,
            conv2: conv(vb.pp("conv2"), cout, cout, 3, 1, layout)?,
            shortcut: if cin != cout {
                Some(conv(vb.pp("conv_shortcut"), cin, cout, 1, 1, layout)?)
            } else {
                None
            },
            scale,
            kernels,
            layout,
            temb_in_bias: kernels == Kernels::Fast && c.addition_embed_type.is_none(),
        })
    }

    /// `temb`: the time embedding after its SiLU (`UNet::time_embedding`).
    ///
    /// Without an added embedding (SD 1.x, 2.x) every image of a call has the same
    /// time embedding (the UNet takes one timestep), so on the fast path its
    /// projection is added to `conv1`'s bias, `cout` values, rather than to every
    /// pixel of `conv1`'s output: one pass over the activation less, and the sum
    /// rounded once (diffusers rounds the convolution's output, then the sum).
    pub(super) fn forward(&self, x: &Tensor, temb: &Tensor) -> CResult<Tensor> {
        let xn = self.norm1.forward_silu(x)?;
        let project = |t: &Tensor| {
            nn::profile::scope("time embedding projection", temb.device(), || {
                self.temb.forward(t)
            })
        };
        let h = match self.conv1.bias() {
            Some(b) if self.temb_in_bias => {
                let t = project(&temb.narrow(0, 0, 1)?)?.squeeze(0)?;
                self.conv1.with_bias((b + t)?).forward(&xn)?
            }
            _ => nn::add_per_channel(
                self.conv1.forward(&xn)?,
                &project(temb)?,
                self.kernels,
                self.layout,
            )?,
        };
        let skip = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        // conv2 and the skip in one kernel on the fast path.
        let out = self.conv2.forward_add(&self.norm2.forward_silu(&h)?, &skip)?;
        if self.scale == 1.0 {
            Ok(out)
        } else {
            out / self.scale
        }
    }
}
