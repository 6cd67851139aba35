//! GEGLU with its projection in one GEMM (feature `gemm`): `csrc/geglu_gemm.cu`, a CUTLASS 3
//! kernel for sm_90a (TMA, wgmma) whose epilogue forms `(h + b)ᵥ · gelu_erf((h + b)₉)` from the
//! accumulators, so the projection's `2·inner` columns never reach memory. Compiled by nvcc
//! into a static library at build time (CUTLASS's headers from the PyPI wheel
//! `nvidia-cutlass`, `scripts/gpu/setup-kernels.sh cutlass`) and launched through the CUDA
//! runtime on candle's stream.
//!
//! The weight's rows and the bias are interleaved by blocks of 8 when the layer is built
//! (shoal-diffusion's `nn::geglu_interleave`): rows `16q..16q+8` the value rows `8q..8q+8`,
//! rows `16q+8..16q+16` the gate rows of the same outputs; the kernel takes that layout.

use std::ffi::{CStr, c_char, c_int, c_void};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DevicePtrMut, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::{DType, Device, Layout, Shape, Tensor};

use crate::error::{Error, Result};
use crate::fused::slice;

unsafe extern "C" {
    fn shoal_geglu_gemm_f16(
        x: *const c_void,
        w: *const c_void,
        bias: *const c_void,
        out: *mut c_void,
        m: i64,
        n: i64,
        k: i64,
        stream: *mut c_void,
    ) -> c_int;
    fn shoal_geglu_gemm_bf16(
        x: *const c_void,
        w: *const c_void,
        bias: *const c_void,
        out: *mut c_void,
        m: i64,
        n: i64,
        k: i64,
        stream: *mut c_void,
    ) -> c_int;
    fn shoal_geglu_supported() -> c_int;
    fn shoal_geglu_error() -> *const c_char;
}

const OP: &str = "geglu_gemm";

/// Whether the one-GEMM GEGLU covers a projection `cin → 2·inner` in `dtype` on `device`:
/// a CUDA device of compute capability 9.0 (the kernel is sm_90a code), f16 or bf16,
/// `inner` a multiple of 32 and `cin` of 8 (TMA's 16-byte rows).
pub fn geglu_gemm_covers(device: &Device, dtype: DType, cin: usize, inner: usize) -> bool {
    device.is_cuda()
        && matches!(dtype, DType::F16 | DType::BF16)
        && inner > 0
        && inner.is_multiple_of(32)
        && cin > 0
        && cin.is_multiple_of(8)
        // SAFETY: a query of the current device's attributes through the CUDA runtime.
        && unsafe { shoal_geglu_supported() } == 1
}

/// `x` `(..., k)` through the interleaved projection `w` `(2·inner, k)`, `b` `(2·inner,)`
/// (the layout above) and GEGLU: `(..., inner)`. A shape or dtype the kernel
/// does not cover is [`Error::Unsupported`].
pub fn geglu_gemm(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let unsupported = |why: String| Error::Unsupported { op: OP, why };
    let (n, k) = w
        .dims2()
        .map_err(|_| unsupported(format!("weight {:?}", w.dims())))?;
    if !geglu_gemm_covers(x.device(), x.dtype(), k, n / 2)
        || !n.is_multiple_of(2)
        || x.dims().last() != Some(&k)
        || b.dims() != [n]
        || w.dtype() != x.dtype()
        || b.dtype() != x.dtype()
        || x.elem_count() == 0
    {
        return Err(unsupported(format!(
            "{:?} {:?} · {:?} + {:?}",
            x.dtype(),
            x.dims(),
            w.dims(),
            b.dims()
        )));
    }
    let x = x.contiguous()?;
    Ok(x.apply_op3_no_bwd(&w.contiguous()?, &b.contiguous()?, &GegluGemmOp)?)
}

struct GegluGemmOp;

impl GegluGemmOp {
    #[allow(clippy::too_many_arguments)]
    fn typed<T: CudaDType + DeviceRepr>(
        &self,
        sfx: &str,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = xs.device().clone();
        let (x, w, b) = (
            slice::<T>(xs, xl, "input")?,
            slice::<T>(ws, wl, "weight")?,
            slice::<T>(bs, bl, "bias")?,
        );
        let (n, k) = wl.shape().dims2()?;
        let m = x.len() / k;
        if m * k != x.len() || b.len() != n {
            candle_core::bail!(
                "{OP}: sizes do not match: input {}, weight {n}×{k}, bias {}",
                x.len(),
                b.len()
            )
        }
        let stream = dev.cuda_stream();
        // SAFETY: the kernel writes every element of the (m, n/2) output.
        let mut out = unsafe { dev.alloc::<T>(m * (n / 2)) }?;
        let rc = {
            let (px, _gx) = x.device_ptr(&stream);
            let (pw, _gw) = w.device_ptr(&stream);
            let (pb, _gb) = b.device_ptr(&stream);
            let (po, _go) = out.device_ptr_mut(&stream);
            let f = if sfx == "f16" {
                shoal_geglu_gemm_f16
            } else {
                shoal_geglu_gemm_bf16
            };
            // SAFETY: the pointers are live device buffers of the sizes above on this stream
            // (x (m, k), w (n, k), b (n,), out (m, n/2)); the kernel only reads x, w, b.
            unsafe {
                f(
                    px as *const c_void,
                    pw as *const c_void,
                    pb as *const c_void,
                    po as *mut c_void,
                    m as i64,
                    n as i64,
                    k as i64,
                    stream.cu_stream() as *mut c_void,
                )
            }
        };
        if rc != 0 {
            // SAFETY: a static, NUL-terminated string from the CUDA runtime (or the shim).
            let why = unsafe { CStr::from_ptr(shoal_geglu_error()) }.to_string_lossy();
            candle_core::bail!("{OP}: {m}×{k} → {n}: {why}")
        }
        let mut dims = xl.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = n / 2;
        }
        Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(dims)))
    }
}

cuda_only!(
    CustomOp3 for GegluGemmOp,
    "shoal-geglu-gemm",
    "one-GEMM GEGLU",
    [F16 => half::f16, "f16"; BF16 => half::bf16, "bf16"]
);
