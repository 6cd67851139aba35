//! The kernel seam: every convolution, attention and normalization of the
//! CLIP, UNet and VAE code goes through these modules, so a fast kernel is
//! swapped in one place.
//!
//! The kernel is chosen once, when a layer is built, from its device, its
//! dtype and the build features ([`Kernels::for_weights`]); `forward` never
//! takes a flag. The plain path is candle's own ops (the CPU path, and the
//! reference the fast path is checked against); with the `cudnn` feature, f16
//! and bf16 layers on CUDA use shoal-kernels' cuDNN convolutions and fused
//! attention. A shape the fast kernel does not cover runs the plain path and
//! is counted in `shoal_kernels::fallbacks()` (feature `cudnn`).

mod attention;
mod conv;
mod elementwise;
mod linear;
mod norm;
pub mod profile;

pub use attention::{AttentionOpts, attention};
pub use conv::{Conv2d, conv2d};
pub use elementwise::add_per_channel;
pub use linear::{Linear, linear, linear_no_bias};
pub use norm::{GroupNorm, group_norm};

use candle_core::{DType, Device};

/// Which implementation a layer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// candle's ops.
    Plain,
    /// The fast kernels built in: cuDNN convolutions and attention (feature
    /// `cudnn`), fused GroupNorm, bias adds and GEGLU (feature `fused`); an op
    /// whose feature is off runs its plain path.
    Fast,
}

impl Kernels {
    /// The fastest kernels built in for weights of `dtype` on `device`
    /// (`SHOAL_PLAIN_KERNELS=1` forces the plain path, for A/B runs and as the
    /// GPU reference). f32 layers use them too (SDXL's upcast VAE): cuDNN may
    /// run f32 convolutions in TF32, as PyTorch does by default
    /// (`torch.backends.cudnn.allow_tf32`); attention in f32 stays plain.
    pub fn for_weights(device: &Device, dtype: DType) -> Kernels {
        let built = cfg!(any(feature = "cudnn", feature = "fused"));
        let fast = built && device.is_cuda() && matches!(dtype, DType::F16 | DType::BF16 | DType::F32);
        if fast && std::env::var_os("SHOAL_PLAIN_KERNELS").is_none_or(|v| v == "0") {
            Kernels::Fast
        } else {
            Kernels::Plain
        }
    }
}

/// Records a fallback to the plain path.
#[cfg(any(feature = "cudnn", feature = "fused"))]
fn fell_back(what: impl FnOnce() -> String, why: &str) {
    shoal_kernels::note_fallback(&what(), why);
}
