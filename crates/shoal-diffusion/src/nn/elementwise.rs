//! Elementwise steps between the layers.

use candle_core::Tensor;

use super::Kernels;

/// `h + t` with `t` `(n, c)` broadcast over `h` `(n, c, h, w)` (a ResNet's time
/// embedding). On the fast path `h` must be a fresh tensor nothing else holds:
/// the sum is written into it.
pub fn add_per_channel(h: Tensor, t: &Tensor, kernels: Kernels) -> candle_core::Result<Tensor> {
    super::profile::scope("add time embedding", h.device(), || {
        #[cfg(feature = "fused")]
        if kernels == Kernels::Fast {
            match shoal_kernels::fused::add_nc_(&h, t) {
                Ok(()) => return Ok(h.clone()),
                Err(shoal_kernels::Error::Unsupported { why, .. }) => {
                    super::fell_back(|| format!("add_nc {:?} {:?}", h.dtype(), h.dims()), &why)
                }
                Err(e) => return Err(candle_core::Error::Msg(e.to_string())),
            }
        }
        let _ = kernels;
        h.broadcast_add(&t.unsqueeze(2)?.unsqueeze(3)?)
    })
}
