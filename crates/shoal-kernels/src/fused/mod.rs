//! shoal's own CUDA kernels (feature `fused`), from `csrc/fused.cu` compiled to PTX at build
//! time (nvcc) and loaded once per device through candle's module cache: the normalizations
//! (`norm.rs`), the in-place adds and channels-last copies (`elementwise.rs`), linear layers with
//! their epilogues on cuBLASLt (`linear.rs`) and attention (`attention.rs`). The elementwise
//! kernels compute in f32 and exist for f16, bf16 and f32.
//!
//! The in-place ops ([`add_row_bias_`], [`add_nc_`]) write into their first
//! argument: call them only on a tensor nothing else holds (a fresh GEMM or
//! convolution output).

use candle_core::cuda_backend::cudarc::driver::LaunchConfig;
use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::{DType, Layout, Tensor};

use crate::error::{Error, Result};

pub(crate) const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));
const MODULE: &str = "shoal_fused";
const THREADS: u32 = 256;

fn suffix(op: &'static str, d: DType) -> Result<&'static str> {
    match d {
        DType::F16 => Ok("f16"),
        DType::BF16 => Ok("bf16"),
        DType::F32 => Ok("f32"),
        d => Err(Error::Unsupported {
            op,
            why: format!("dtype {d:?}"),
        }),
    }
}

fn check_cuda(op: &'static str, t: &Tensor) -> Result<()> {
    if t.device().is_cuda() {
        Ok(())
    } else {
        Err(Error::Unsupported {
            op,
            why: format!("tensor on {:?}", t.device()),
        })
    }
}

/// A launch over `rows` rows of `cols` elements of `elem` bytes: x covers a row (16 bytes per
/// thread, the kernels' vector width), y strides over rows.
fn row_grid(rows: usize, cols: usize, elem: usize) -> LaunchConfig {
    let per_thread = (16 / elem.max(1)).max(1);
    let x = cols.div_ceil(THREADS as usize * per_thread).clamp(1, 1 << 16) as u32;
    let y = rows.clamp(1, 65_535) as u32;
    LaunchConfig {
        grid_dim: (x, y, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One warp per group of `groups_total` (the GroupNorm finalize kernels).
fn warp_per_group(groups_total: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((groups_total * 32).div_ceil(THREADS as usize) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub(crate) fn slice<'a, T: CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, T>> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("fused kernel: {what} not contiguous")))?;
    Ok(s.as_cuda_slice::<T>()?.slice(a..b))
}

/// Whether a tensor's first element sits 16 bytes into its (256-byte aligned) allocation.
fn starts_aligned(t: &Tensor) -> bool {
    (t.layout().start_offset() * t.dtype().size_in_bytes()).is_multiple_of(16)
}

/// Whether a device view starts on a 16-byte boundary (the kernels' vector loads).
fn aligned<T, P: candle_core::cuda_backend::cudarc::driver::DevicePtr<T>>(
    v: &P,
    stream: &candle_core::cuda_backend::cudarc::driver::CudaStream,
) -> bool {
    let (p, _guard) = v.device_ptr(stream);
    p.is_multiple_of(16)
}

mod attention;
mod elementwise;
mod linear;
mod norm;

pub use attention::{FEW_KEYS_DIMS, FEW_KEYS_MAX, TMA_DIMS, attention_few_keys, attention_tma};
pub use elementwise::{add_bc_, add_nc_, add_row_bias_, cat_channels_nhwc, upsample2x_nhwc};
pub use linear::{bias_geglu, linear, linear_add_};
pub use norm::{group_norm, group_norm_nhwc, group_norm_nhwc_, group_norm_nhwc_one_pass, layer_norm};
