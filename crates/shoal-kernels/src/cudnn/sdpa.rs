//! cuDNN's fused scaled-dot-product attention.

use std::ffi::c_void;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DevicePtrMut, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage};
use candle_core::{Layout, Shape, Tensor};
use half::{bf16, f16};

use super::{Key, collecting, cuda_device, dtype_code, execute, prepare, to_candle};
use crate::error::{Error, Result};

/// The element strides of a `(b, s, heads·d)` tensor seen as `(b, heads, s, d)`,
/// and its start offset; `None` unless the last dimension is dense.
fn bshd_strides(l: &Layout, d: usize) -> Option<([i64; 4], usize)> {
    let st = l.stride();
    (st.len() == 3 && st[2] == 1).then(|| ([st[0] as i64, d as i64, st[1] as i64, 1], l.start_offset()))
}

/// Fused attention `softmax(scale · q kᵀ) v` per head, without the score matrix.
///
/// `q` is `(b, sq, heads·d)`, `k` and `v` `(b, skv, heads·d)` (each with a dense
/// last dimension; other strides are free, so views into a fused QKV
/// projection need no copy); the result is `(b, sq, heads·d)`, contiguous.
/// Scores and softmax are in f32 (so SD 2.1's `upcast_attention` holds).
pub fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f32, causal: bool) -> Result<Tensor> {
    const OP: &str = "sdpa";
    let dev = cuda_device(OP, q)?;
    let dtype = dtype_code(OP, q.dtype())?;
    let (b, sq, hd) = q.dims3()?;
    let (bk, skv, hdk) = k.dims3()?;
    let unsupported = |why: String| Error::Unsupported { op: OP, why };
    if dtype == 2 {
        return Err(unsupported("f32 (cuDNN SDPA takes f16 and bf16)".into()));
    }
    if heads == 0 || hd % heads != 0 || bk != b || hdk != hd || v.dims3()? != (b, skv, hd) {
        return Err(unsupported(format!(
            "q {:?}, k {:?}, v {:?}, {heads} heads",
            q.dims(),
            k.dims(),
            v.dims()
        )));
    }
    if k.dtype() != q.dtype() || v.dtype() != q.dtype() {
        return Err(unsupported("mixed dtypes".into()));
    }
    let d = hd / heads;
    if !d.is_multiple_of(8) || d > 256 {
        return Err(unsupported(format!(
            "head dim {d} (needs a multiple of 8, at most 256)"
        )));
    }
    let fix = |t: &Tensor| -> Result<Tensor> {
        Ok(if bshd_strides(t.layout(), d).is_some() {
            t.clone()
        } else {
            t.contiguous()?
        })
    };
    let (q, k, v) = (fix(q)?, fix(k)?, fix(v)?);
    let stride = |t: &Tensor| bshd_strides(t.layout(), d).map(|s| s.0).unwrap_or_default();
    let o_stride = [(sq * hd) as i64, d as i64, hd as i64, 1];
    let strides = [stride(&q), stride(&k), stride(&v), o_stride];
    let dims = [b, heads, sq, skv, d].map(|v| v as i64);
    let key = Key::Sdpa {
        dtype,
        dims,
        strides,
        scale: scale.to_bits(),
        causal,
    };
    if collecting(&dev, &key) {
        return Ok(Tensor::zeros((b, sq, hd), q.dtype(), q.device())?);
    }
    prepare(&dev, OP, &key)?;
    Ok(q.apply_op3_no_bwd(&k, &v, &SdpaOp { key, dev, d })?)
}

struct SdpaOp {
    key: Key,
    dev: CudaDevice,
    d: usize,
}

impl SdpaOp {
    #[allow(
        clippy::too_many_arguments,
        reason = "the storage and layout of each input, as candle's op traits pass them"
    )]
    fn typed<T: CudaDType + DeviceRepr>(
        &self,
        _sfx: &str,
        qs: &CudaStorage,
        ql: &Layout,
        ks: &CudaStorage,
        kl: &Layout,
        vs: &CudaStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let Key::Sdpa { dims, .. } = &self.key else {
            candle_core::bail!("sdpa op with a non-sdpa key")
        };
        let (b, sq) = (dims[0] as usize, dims[2] as usize);
        let hd = dims[1] as usize * self.d;
        let view = |s: &'_ CudaStorage, l: &Layout| -> candle_core::Result<usize> {
            let (_, off) = bshd_strides(l, self.d)
                .ok_or_else(|| candle_core::Error::Msg("sdpa: layout changed after prepare".into()))?;
            if !crate::op::view_fits(l, s.as_cuda_slice::<T>()?.len()) {
                candle_core::bail!("sdpa: view outside its buffer")
            }
            Ok(off)
        };
        let (oq, ok, ov) = (view(qs, ql)?, view(ks, kl)?, view(vs, vl)?);
        let (q, k, v) = (
            qs.as_cuda_slice::<T>()?.slice(oq..),
            ks.as_cuda_slice::<T>()?.slice(ok..),
            vs.as_cuda_slice::<T>()?.slice(ov..),
        );
        let stream = self.dev.cuda_stream();
        // SAFETY: every output element is written by the attention kernel.
        let mut o = unsafe { self.dev.alloc::<T>(b * sq * hd) }?;
        {
            let (pq, _gq) = q.device_ptr(&stream);
            let (pk, _gk) = k.device_ptr(&stream);
            let (pv, _gv) = v.device_ptr(&stream);
            let (po, _go) = o.device_ptr_mut(&stream);
            let ptrs = [pq, pk, pv, po, 0].map(|p| p as *mut c_void);
            execute(&self.dev, "sdpa", &self.key, &ptrs).map_err(to_candle)?;
        }
        Ok((
            CudaStorage::wrap_cuda_slice(o, self.dev.clone()),
            Shape::from((b, sq, hd)),
        ))
    }
}

cuda_only!(CustomOp3 for SdpaOp, "shoal-cudnn-sdpa", "cuDNN attention", [F16 => f16, "f16"; BF16 => bf16, "bf16"]);
