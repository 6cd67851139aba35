//! The cuDNN convolution (+ bias).

use std::ffi::c_void;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DevicePtrMut, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage};
use candle_core::{Layout, Shape, Storage, Tensor};

use super::{Key, collecting, contiguous_slice, cuda_device, dtype_code, execute, prepare, to_candle};
use crate::error::{Error, Result};
use crate::shape::ConvShape;

/// `y = conv2d(x, w) + b` in NCHW, `x` `(n, c, h, w)`, `w` `(k, c, r, s)`, `b` `(k,)`,
/// zero padding `pad` on every side, one `stride`. f16 and bf16 with f32
/// accumulation; f32 too (cuDNN may use TF32 for it).
pub fn conv2d(x: &Tensor, w: &Tensor, b: &Tensor, pad: usize, stride: usize) -> Result<Tensor> {
    conv2d_ex(x, w, Some(b), None, pad, stride, false)
}

/// [`conv2d`] with the bias optional and an optional `residual` added in the same kernel
/// (`y = conv(x, w) + b + r`, one rounding), in NCHW or, with `nhwc`, channels-last: `x`
/// `(n, h, w, c)`, `w` `(k, r, s, c)`, `residual` and the result `(n, ho, wo, k)`.
pub fn conv2d_ex(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    residual: Option<&Tensor>,
    pad: usize,
    stride: usize,
    nhwc: bool,
) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let dev = cuda_device(OP, x)?;
    let dtype = dtype_code(OP, x.dtype())?;
    let (n, c, h, wd) = if nhwc {
        let (n, h, w, c) = x.dims4()?;
        (n, c, h, w)
    } else {
        x.dims4()?
    };
    let (k, c2, r, s) = if nhwc {
        let (k, r, s, c) = w.dims4()?;
        (k, c, r, s)
    } else {
        w.dims4()?
    };
    let bias_ok = b.is_none_or(|b| b.dims() == [k] && b.dtype() == x.dtype());
    if c2 != c || !bias_ok || w.dtype() != x.dtype() {
        return Err(Error::Unsupported {
            op: OP,
            why: format!(
                "input {:?} {:?}, weight {:?} {:?}, bias {:?}",
                x.dims(),
                x.dtype(),
                w.dims(),
                w.dtype(),
                b.map(|b| (b.dims().to_vec(), b.dtype())),
            ),
        });
    }
    let shape = ConvShape {
        n,
        c,
        h,
        w: wd,
        k,
        r,
        s,
        pad,
        stride,
    };
    let Some((_, _, ho, wo)) = shape.out_dims() else {
        return Err(Error::Unsupported {
            op: OP,
            why: format!("filter {r}x{s} does not fit {h}x{wd} with padding {pad}"),
        });
    };
    if let Some(z) = residual {
        let want: [usize; 4] = if nhwc { [n, ho, wo, k] } else { [n, k, ho, wo] };
        if z.dims() != want || z.dtype() != x.dtype() {
            return Err(Error::Unsupported {
                op: OP,
                why: format!("residual {:?} {:?} for an output {want:?}", z.dims(), z.dtype()),
            });
        }
    }
    let key = Key::Conv {
        dtype,
        shape,
        bias: b.is_some(),
        nhwc,
        residual: residual.is_some(),
    };
    if collecting(&dev, &key) {
        let out: [usize; 4] = if nhwc { [n, ho, wo, k] } else { [n, k, ho, wo] };
        return Ok(Tensor::zeros(&out, x.dtype(), x.device())?);
    }
    prepare(&dev, OP, &key)?;
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    let residual = residual.map(Tensor::contiguous).transpose()?;
    let bias = b.map(Tensor::contiguous).transpose()?;
    Ok(x.apply_op2_no_bwd(
        &w,
        &ConvOp {
            key,
            dev,
            bias,
            residual,
        },
    )?)
}

struct ConvOp {
    key: Key,
    dev: CudaDevice,
    /// The per-channel bias and the residual added to the output in the kernel; read
    /// through their storage at launch.
    bias: Option<Tensor>,
    residual: Option<Tensor>,
}

/// The device buffer of `t` (on the GPU, contiguous), as a slice of `len` elements.
fn operand<'a, T: CudaDType>(
    st: &'a Storage,
    l: &Layout,
    len: usize,
    what: &str,
) -> candle_core::Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, T>> {
    match st {
        Storage::Cuda(cs) => {
            let z = contiguous_slice::<T>(cs, l)?;
            if z.len() != len {
                candle_core::bail!("conv2d: {what} has {} elements, not {len}", z.len())
            }
            Ok(z)
        }
        _ => candle_core::bail!("conv2d: {what} not on the GPU"),
    }
}

impl ConvOp {
    fn typed<T: CudaDType + DeviceRepr>(
        &self,
        _sfx: &str,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let Key::Conv { shape, nhwc, .. } = &self.key else {
            candle_core::bail!("conv op with a non-conv key")
        };
        let (n, k, ho, wo) = shape
            .out_dims()
            .ok_or_else(|| candle_core::Error::Msg("conv2d: bad shape".into()))?;
        let (x, w) = (contiguous_slice::<T>(xs, xl)?, contiguous_slice::<T>(ws, wl)?);
        if x.len() != shape.n * shape.c * shape.h * shape.w || w.len() != k * shape.c * shape.r * shape.s {
            candle_core::bail!("conv2d: buffer sizes do not match the prepared shape {shape:?}")
        }
        let stream = self.dev.cuda_stream();
        // SAFETY: every element is written by the convolution before it is read.
        let mut y = unsafe { self.dev.alloc::<T>(n * k * ho * wo) }?;
        let rguard = self.residual.as_ref().map(|r| r.storage_and_layout());
        let z = match &rguard {
            Some((st, l)) => Some(operand::<T>(st, l, y.len(), "the residual")?),
            None => None,
        };
        let bguard = self.bias.as_ref().map(|b| b.storage_and_layout());
        let b = match &bguard {
            Some((st, l)) => Some(operand::<T>(st, l, k, "the bias")?),
            None => None,
        };
        {
            let (px, _gx) = x.device_ptr(&stream);
            let (pw, _gw) = w.device_ptr(&stream);
            let bp = b.as_ref().map(|b| b.device_ptr(&stream));
            let pb = bp.as_ref().map_or(0, |(p, _)| *p);
            let (py, _gy) = y.device_ptr_mut(&stream);
            let zp = z.as_ref().map(|z| z.device_ptr(&stream));
            let pz = zp.as_ref().map_or(0, |(p, _)| *p);
            let ptrs = [px, pw, pb, py, pz].map(|p| p as *mut c_void);
            execute(&self.dev, "conv2d", &self.key, &ptrs).map_err(to_candle)?;
        }
        let out = if *nhwc {
            Shape::from((n, ho, wo, k))
        } else {
            Shape::from((n, k, ho, wo))
        };
        Ok((CudaStorage::wrap_cuda_slice(y, self.dev.clone()), out))
    }
}

cuda_only!(CustomOp2 for ConvOp, "shoal-cudnn-conv2d", "cuDNN convolution");
