//! Elementwise steps between the layers.

use candle_core::Tensor;

use super::{Kernels, Layout};

/// `h + t` with `t` `(n, c)` broadcast over the pixels of `h` (`(n, c, h, w)`
/// or, channels-last, `(n, h, w, c)`): a ResNet's time embedding. On the fast
/// path `h` must be a fresh tensor nothing else holds: the sum is written into it.
pub fn add_per_channel(
    h: Tensor,
    t: &Tensor,
    kernels: Kernels,
    layout: Layout,
) -> candle_core::Result<Tensor> {
    super::profile::scope("add time embedding", h.device(), || {
        #[cfg(feature = "fused")]
        if kernels == Kernels::Fast {
            let done = match layout {
                Layout::Nchw => shoal_kernels::fused::add_nc_(&h, t),
                Layout::Nhwc => shoal_kernels::fused::add_bc_(&h, t),
            };
            match done {
                Ok(()) => return Ok(h.clone()),
                Err(shoal_kernels::Error::Unsupported { why, .. }) => super::fell_back(
                    || format!("add_per_channel {:?} {:?} {layout:?}", h.dtype(), h.dims()),
                    &why,
                ),
                Err(e) => return Err(candle_core::Error::Msg(e.to_string())),
            }
        }
        let _ = kernels;
        match layout {
            Layout::Nchw => h.broadcast_add(&t.unsqueeze(2)?.unsqueeze(3)?),
            Layout::Nhwc => h.broadcast_add(&t.unsqueeze(1)?.unsqueeze(1)?),
        }
    })
}

/// Nearest-neighbour upsampling of `x` to `(h, w)` (`F.interpolate(mode="nearest")`).
/// Channels-last doubling is one copy (one kernel on the fast path); other sizes go
/// through NCHW.
pub fn upsample_nearest(
    x: &Tensor,
    h: usize,
    w: usize,
    layout: Layout,
    kernels: Kernels,
) -> candle_core::Result<Tensor> {
    match layout {
        Layout::Nchw => x.upsample_nearest2d(h, w),
        Layout::Nhwc => {
            let (n, c, hi, wi) = layout.dims(x)?;
            if h == 2 * hi && w == 2 * wi {
                #[cfg(feature = "fused")]
                if kernels == Kernels::Fast {
                    match shoal_kernels::fused::upsample2x_nhwc(x) {
                        Ok(y) => return Ok(y),
                        Err(shoal_kernels::Error::Unsupported { why, .. }) => super::fell_back(
                            || format!("upsample2x_nhwc {:?} {:?}", x.dtype(), x.dims()),
                            &why,
                        ),
                        Err(e) => return Err(candle_core::Error::Msg(e.to_string())),
                    }
                }
                let _ = kernels;
                x.reshape((n, hi, 1, wi, 1, c))?
                    .broadcast_as((n, hi, 2, wi, 2, c))?
                    .contiguous()?
                    .reshape((n, h, w, c))
            } else {
                layout.from_nchw(&layout.to_nchw(x)?.upsample_nearest2d(h, w)?)
            }
        }
    }
}

/// `a` and `b` concatenated along the channels (`torch.cat(dim=1)` of a UNet's skip
/// connection): one copy kernel on the fast path in channels-last.
pub fn cat_channels(a: &Tensor, b: &Tensor, layout: Layout, kernels: Kernels) -> candle_core::Result<Tensor> {
    #[cfg(feature = "fused")]
    if kernels == Kernels::Fast && layout == Layout::Nhwc {
        match shoal_kernels::fused::cat_channels_nhwc(a, b) {
            Ok(y) => return Ok(y),
            Err(shoal_kernels::Error::Unsupported { why, .. }) => super::fell_back(
                || format!("cat_nhwc {:?} {:?} {:?}", a.dtype(), a.dims(), b.dims()),
                &why,
            ),
            Err(e) => return Err(candle_core::Error::Msg(e.to_string())),
        }
    }
    let _ = kernels;
    Tensor::cat(&[a, b], layout.channel_dim())
}
