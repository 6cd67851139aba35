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
pub mod graph;
mod linear;
pub mod memory;
mod norm;
pub mod profile;

pub use attention::{AttentionOpts, attention, few_keys_kernel, many_keys_kernel};
pub use conv::{Conv2d, conv2d, conv2d_in, fuses_residual};
pub use elementwise::{add_per_channel, cat_channels, upsample_nearest};
pub use linear::{
    GEGLU_BLOCK, Geglu, Linear, geglu, geglu_interleave, geglu_split, linear, linear_no_bias,
    linear_stack_no_bias,
};
pub use norm::{GroupNorm, LayerNorm, group_norm, group_norm_in, group_norm_one_pass, layer_norm};

use candle_core::{DType, Device, Tensor};

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

/// Whether the UNet's attention on `device` in `dtype` is the fused kernel
/// (no score matrix): CUDA, f16 or bf16, the cuDNN kernels built and not
/// turned off.
pub fn fused_attention(device: &Device, dtype: DType) -> bool {
    cfg!(feature = "cudnn") && dtype != DType::F32 && Kernels::for_weights(device, dtype) == Kernels::Fast
}

/// How image activations `(batch, channels, height, width)` are laid out in
/// memory between the layers of a model. Chosen once, when the model is
/// built; every layer of it is built for the same layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `(n, c, h, w)`: PyTorch's default, the CPU path and the reference.
    Nchw,
    /// `(n, h, w, c)`, channels-last: what cuDNN's tensor-core convolutions
    /// read without transposing, and a transformer's `(n, h·w, c)` sequence
    /// without a copy.
    Nhwc,
}

impl Layout {
    /// The layout for a model with weights of `dtype` on `device`: channels-last
    /// when the cuDNN convolutions are built in and used ([`Kernels::Fast`]),
    /// NCHW otherwise. `SHOAL_LAYOUT=nchw|nhwc` overrides it (A/B runs; on the
    /// plain path channels-last permutes around each convolution and norm, which
    /// is slow but exact).
    pub fn for_weights(device: &Device, dtype: DType) -> Layout {
        match std::env::var("SHOAL_LAYOUT").as_deref() {
            Ok("nchw") => Layout::Nchw,
            Ok("nhwc") => Layout::Nhwc,
            _ if cfg!(feature = "cudnn") && Kernels::for_weights(device, dtype) == Kernels::Fast => {
                Layout::Nhwc
            }
            _ => Layout::Nchw,
        }
    }

    /// The channel dimension's index.
    pub fn channel_dim(self) -> usize {
        match self {
            Layout::Nchw => 1,
            Layout::Nhwc => 3,
        }
    }

    /// `(n, c, h, w)` of an activation in this layout.
    pub fn dims(self, x: &Tensor) -> candle_core::Result<(usize, usize, usize, usize)> {
        match self {
            Layout::Nchw => x.dims4(),
            Layout::Nhwc => {
                let (n, h, w, c) = x.dims4()?;
                Ok((n, c, h, w))
            }
        }
    }

    /// An NCHW tensor in this layout (contiguous).
    pub fn from_nchw(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Layout::Nchw => Ok(x.clone()),
            Layout::Nhwc => x.permute((0, 2, 3, 1))?.contiguous(),
        }
    }

    /// A tensor in this layout as NCHW (contiguous).
    pub fn to_nchw(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Layout::Nchw => Ok(x.clone()),
            Layout::Nhwc => x.permute((0, 3, 1, 2))?.contiguous(),
        }
    }
}

/// Builds the cuDNN plans that `call` (one model call, and whatever else
/// belongs to it) will need, on `threads` threads, before it runs for real:
/// `call` runs once with the cuDNN ops collecting their plan keys instead of
/// computing (their outputs are zeros; what it returns is thrown away), then
/// the missing plans are built side by side (`shoal_kernels::cudnn::prebuild`).
/// Without the `cudnn` kernels, or off CUDA, it does nothing and `call` does
/// not run.
pub fn prebuild_plans(
    device: &Device,
    threads: usize,
    call: impl FnOnce() -> candle_core::Result<()>,
) -> candle_core::Result<()> {
    #[cfg(feature = "cudnn")]
    if let Device::Cuda(dev) = device
        && threads > 0
    {
        let t0 = std::time::Instant::now();
        let (ran, keys) = shoal_kernels::cudnn::discover(call);
        ran?;
        let found = (keys.len(), t0.elapsed().as_secs_f64());
        let done = shoal_kernels::cudnn::prebuild(dev, keys, threads)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        if found.0 > 0 {
            tracing::info!(
                "cuDNN: {} plan(s) built ahead on {} thread(s) in {:.2} s ({} without an engine; found in {:.2} s)",
                done.plans,
                done.threads,
                done.seconds,
                done.unsupported,
                found.1
            );
        }
        return Ok(());
    }
    let _ = (device, threads, call);
    Ok(())
}

/// Records a fallback to the plain path.
#[cfg(any(feature = "cudnn", feature = "fused"))]
fn fell_back(what: impl FnOnce() -> String, why: &str) {
    shoal_kernels::note_fallback(&what(), why);
}
