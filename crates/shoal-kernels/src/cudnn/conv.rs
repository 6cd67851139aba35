//! The cuDNN convolution (+ bias).

use std::ffi::c_void;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DevicePtrMut, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use half::{bf16, f16};

use super::{Key, cuda_device, dtype_code, execute, prepare, to_candle};
use super::{contiguous_slice, shoal_cudnn_conv_build};
use crate::error::{Error, Result};
use crate::shape::ConvShape;

/// `y = conv2d(x, w) + b` in NCHW, `x` `(n, c, h, w)`, `w` `(k, c, r, s)`, `b` `(k,)`,
/// zero padding `pad` on every side, one `stride`. f16 and bf16 with f32
/// accumulation; f32 too (cuDNN may use TF32 for it).
pub fn conv2d(x: &Tensor, w: &Tensor, b: &Tensor, pad: usize, stride: usize) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let dev = cuda_device(OP, x)?;
    let dtype = dtype_code(OP, x.dtype())?;
    let (n, c, h, wd) = x.dims4()?;
    let (k, c2, r, s) = w.dims4()?;
    if c2 != c || b.dims1()? != k || w.dtype() != x.dtype() || b.dtype() != x.dtype() {
        return Err(Error::Unsupported {
            op: OP,
            why: format!(
                "input {:?} {:?}, weight {:?} {:?}, bias {:?} {:?}",
                x.dims(),
                x.dtype(),
                w.dims(),
                w.dtype(),
                b.dims(),
                b.dtype()
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
    if shape.out_dims().is_none() {
        return Err(Error::Unsupported {
            op: OP,
            why: format!("filter {r}x{s} does not fit {h}x{wd} with padding {pad}"),
        });
    }
    let key = Key::Conv {
        dtype,
        shape,
        bias: true,
    };
    let dims = [n, c, h, wd, k, r, s, pad, stride].map(|v| v as i64);
    prepare(
        &dev,
        OP,
        &key,
        Box::new(move |handle, out, ws, err, len| {
            // SAFETY: out-pointers and the error buffer come from `prepare`.
            unsafe {
                shoal_cudnn_conv_build(
                    handle, dtype, dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6], dims[7],
                    dims[8], 0, 1, 0, out, ws, err, len,
                )
            }
        }),
    )?;
    let (x, w, b) = (x.contiguous()?, w.contiguous()?, b.contiguous()?);
    Ok(x.apply_op3_no_bwd(&w, &b, &ConvOp { key, dev })?)
}

struct ConvOp {
    key: Key,
    dev: CudaDevice,
}

impl ConvOp {
    fn typed<T: CudaDType + DeviceRepr>(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let Key::Conv { shape, .. } = &self.key else {
            candle_core::bail!("conv op with a non-conv key")
        };
        let (n, k, ho, wo) = shape
            .out_dims()
            .ok_or_else(|| candle_core::Error::Msg("conv2d: bad shape".into()))?;
        let (x, w, b) = (
            contiguous_slice::<T>(xs, xl)?,
            contiguous_slice::<T>(ws, wl)?,
            contiguous_slice::<T>(bs, bl)?,
        );
        if x.len() != shape.n * shape.c * shape.h * shape.w
            || w.len() != k * shape.c * shape.r * shape.s
            || b.len() != k
        {
            candle_core::bail!("conv2d: buffer sizes do not match the prepared shape {shape:?}")
        }
        let stream = self.dev.cuda_stream();
        // SAFETY: every element is written by the convolution before it is read.
        let mut y = unsafe { self.dev.alloc::<T>(n * k * ho * wo) }?;
        {
            let (px, _gx) = x.device_ptr(&stream);
            let (pw, _gw) = w.device_ptr(&stream);
            let (pb, _gb) = b.device_ptr(&stream);
            let (py, _gy) = y.device_ptr_mut(&stream);
            let ptrs = [px, pw, pb, py, 0].map(|p| p as *mut c_void);
            execute(&self.dev, "conv2d", &self.key, &ptrs).map_err(to_candle)?;
        }
        Ok((
            CudaStorage::wrap_cuda_slice(y, self.dev.clone()),
            Shape::from((n, k, ho, wo)),
        ))
    }
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "shoal-cudnn-conv2d"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("the cuDNN convolution needs CUDA tensors")
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        match xs.dtype() {
            DType::F16 => self.typed::<f16>(xs, xl, ws, wl, bs, bl),
            DType::BF16 => self.typed::<bf16>(xs, xl, ws, wl, bs, bl),
            DType::F32 => self.typed::<f32>(xs, xl, ws, wl, bs, bl),
            d => candle_core::bail!("cuDNN conv2d: dtype {d:?}"),
        }
    }
}
