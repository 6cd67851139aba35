//! Linear layers on cuBLASLt (the bias, or the bias and a residual, in the GEMM's epilogue)
//! and bias + GEGLU after a GEMM without its bias.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, WrapErr};
use candle_core::{DType, Layout, Shape, Tensor};

use super::{MODULE, PTX, add_row_bias_, check_cuda, row_grid, slice, suffix};
use crate::error::{Error, Result};

/// `x · wᵀ + b` for `x` `(..., k)`, `w` `(n, k)`, `b` `(n,)`: in f16 and bf16 one
/// cuBLASLt GEMM over all rows with the bias in its epilogue; in f32 (where cuBLASLt
/// would run TF32) and without a bias, candle's GEMM, then the bias added in place.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "linear";
    check_cuda(OP, x)?;
    let dims = x.dims().to_vec();
    let k = *dims.last().unwrap_or(&0);
    let (n, k2) = w.dims2()?;
    if k != k2 {
        return Err(Error::Unsupported {
            op: OP,
            why: format!("input {dims:?}, weight {:?}", w.dims()),
        });
    }
    let rows = x.elem_count() / k.max(1);
    let mut out = dims;
    if let Some(last) = out.last_mut() {
        *last = n;
    }
    let x2 = x.contiguous()?.reshape((rows, k))?;
    if let Some(b) = b
        && matches!(x.dtype(), DType::F16 | DType::BF16)
        && rows > 0
        && b.elem_count() == n
        && w.dtype() == x.dtype()
        && b.dtype() == x.dtype()
    {
        let op = LinearBias {
            bias: b.contiguous()?,
            rows,
            k,
            n,
        };
        return Ok(x2.apply_op2_no_bwd(&w.contiguous()?, &op)?.reshape(out)?);
    }
    let y = x2.matmul(&w.t()?)?;
    if let Some(b) = b {
        add_row_bias_(&y, b)?;
    }
    Ok(y.reshape(out)?)
}

/// `x · wᵀ + b` as one cuBLASLt GEMM with the bias epilogue, into a new buffer.
struct LinearBias {
    bias: Tensor,
    rows: usize,
    k: usize,
    n: usize,
}

impl LinearBias {
    fn typed<T: CudaDType + DeviceRepr>(
        &self,
        _sfx: &str,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)>
    where
        candle_core::cuda_backend::cudarc::cublaslt::CudaBlasLT:
            candle_core::cuda_backend::cudarc::cublaslt::Matmul<T>,
    {
        let dev = xs.device.clone();
        // SAFETY: beta = 0, so cuBLASLt writes every element of y without reading it.
        let mut y = unsafe { dev.alloc::<T>(self.rows * self.n) }?;
        lt_linear(
            &dev,
            (self.rows, self.k, self.n),
            &slice::<T>(xs, xl, "input")?,
            &slice::<T>(ws, wl, "weight")?,
            &self.bias,
            &mut y,
            0.0,
        )?;
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev),
            Shape::from((self.rows, self.n)),
        ))
    }
}

/// `y ← x·wᵀ + bias + beta·y` for row-major `x` (rows, k), `w` (n, k), `y` (rows, n)
/// and `bias` (n,): one cuBLASLt GEMM with the bias in its epilogue, on `dev`'s stream
/// (`beta` 0: `y` is only written; 1: the product accumulates into it).
fn lt_linear<T: CudaDType + DeviceRepr>(
    dev: &CudaDevice,
    (rows, k, n): (usize, usize, usize),
    x: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, T>,
    w: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, T>,
    bias: &Tensor,
    y: &mut impl candle_core::cuda_backend::cudarc::driver::DevicePtrMut<T>,
    beta: f32,
) -> candle_core::Result<()>
where
    candle_core::cuda_backend::cudarc::cublaslt::CudaBlasLT:
        candle_core::cuda_backend::cudarc::cublaslt::Matmul<T>,
{
    use candle_core::cuda_backend::cudarc::cublaslt::{Matmul, MatmulConfig};
    let (bias_storage, bias_layout) = bias.storage_and_layout();
    let candle_core::Storage::Cuda(bs) = &*bias_storage else {
        candle_core::bail!("linear: the bias is not on the GPU")
    };
    let bias = slice::<T>(bs, bias_layout, "bias")?;
    // Column-major view of the row-major product: yᵀ (n × rows) = w (k × n)ᵀ · xᵀ (k × rows).
    let cfg = MatmulConfig {
        transa: true,
        transb: false,
        transc: false,
        m: n as u64,
        n: rows as u64,
        k: k as u64,
        alpha: 1.0,
        lda: k as i64,
        ldb: k as i64,
        beta,
        ldc: n as i64,
        stride_a: None,
        stride_b: None,
        stride_c: None,
        stride_bias: None,
        batch_size: None,
    };
    let lt = blas_lt(dev)?;
    // SAFETY: the dimensions and leading dimensions above describe the buffers: w (n, k),
    // x (rows, k) and y (rows, n) row-major, bias (n,); all on this device's stream.
    unsafe { lt.matmul(cfg, w, x, y, Some(&bias), None) }
        .map_err(|e| candle_core::Error::Msg(format!("cuBLASLt matmul: {e:?}")))
}

cuda_only!(CustomOp2 for LinearBias, "shoal-linear-bias", "fused linear + bias");

/// GEGLU on a projection without its bias: `h` `(..., 2·inner)`, `bias` `(2·inner,)`;
/// `(h₁ + b₁) · gelu_erf(h₂ + b₂)`, `(..., inner)`.
pub fn bias_geglu(h: &Tensor, bias: &Tensor) -> Result<Tensor> {
    const OP: &str = "bias_geglu";
    check_cuda(OP, h)?;
    suffix(OP, h.dtype())?;
    let two = h.dims().last().copied().unwrap_or(0);
    if !two.is_multiple_of(2) || two == 0 || bias.elem_count() != two || bias.dtype() != h.dtype() {
        return Err(Error::Unsupported {
            op: OP,
            why: format!("{:?} with bias {:?}", h.dims(), bias.dims()),
        });
    }
    let h = h.contiguous()?;
    Ok(h.apply_op2_no_bwd(&bias.contiguous()?, &GegluOp)?)
}

struct GegluOp;

impl GegluOp {
    fn typed<T: CudaDType + DeviceRepr>(
        &self,
        sfx: &str,
        hs: &CudaStorage,
        hl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = &hs.device;
        let h = slice::<T>(hs, hl, "input")?;
        let b = slice::<T>(bs, bl, "bias")?;
        let inner = b.len() / 2;
        let rows = h.len() / (2 * inner);
        // SAFETY: every output element is written by the kernel.
        let mut out = unsafe { dev.alloc::<T>(rows * inner) }?;
        let stream = dev.cuda_stream();
        let f = dev.get_or_load_custom_func(&format!("bias_geglu_{sfx}"), MODULE, PTX)?;
        let mut l = stream.launch_builder(&f);
        let (r64, i64_) = (rows as u64, inner as u64);
        l.arg(&h).arg(&b).arg(&mut out).arg(&r64).arg(&i64_);
        // SAFETY: the argument list matches the kernel's signature.
        unsafe { l.launch(row_grid(rows, inner, std::mem::size_of::<T>())) }.w()?;
        let mut dims = hl.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = inner;
        }
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from(dims)))
    }
}

cuda_only!(CustomOp2 for GegluOp, "shoal-bias-geglu", "fused GEGLU");

/// One cuBLASLt handle (and its workspace) per device, on candle's stream.
fn blas_lt(
    dev: &CudaDevice,
) -> candle_core::Result<std::sync::Arc<candle_core::cuda_backend::cudarc::cublaslt::CudaBlasLT>> {
    use candle_core::cuda_backend::cudarc::cublaslt::CudaBlasLT;
    use std::collections::HashMap;
    use std::sync::{Arc, LazyLock, Mutex};
    static HANDLES: LazyLock<Mutex<HashMap<candle_core::cuda_backend::DeviceId, Arc<CudaBlasLT>>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    let mut m = HANDLES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = m.get(&dev.id()) {
        return Ok(h.clone());
    }
    let h = Arc::new(
        CudaBlasLT::new(dev.cuda_stream())
            .map_err(|e| candle_core::Error::Msg(format!("cuBLASLt: {e:?}")))?,
    );
    m.insert(dev.id(), h.clone());
    Ok(h)
}

/// `residual ← residual + x·wᵀ + b`, in place: one cuBLASLt GEMM with the bias in its
/// epilogue and beta = 1 (a transformer block's feed-forward output and the residual add
/// after it: no separate bias pass, no separate add). `residual` must be contiguous, of
/// `x`'s rows × `w`'s rows, and a tensor nothing else reads afterwards.
pub fn linear_add_(residual: &Tensor, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<()> {
    const OP: &str = "linear_add";
    check_cuda(OP, x)?;
    suffix(OP, x.dtype())?;
    if x.dtype() == DType::F32 {
        // cuBLASLt's f32 GEMM here runs in TF32 (rel. error 1.7e-4 against 0 for candle's f32
        // matmul, `bench ops`); PyTorch's f32 matmul does not, so f32 keeps the plain path.
        return Err(Error::Unsupported {
            op: OP,
            why: "f32 (kept on candle's full-precision GEMM)".into(),
        });
    }
    let k = x.dims().last().copied().unwrap_or(0);
    let (n, k2) = w.dims2()?;
    let rows = x.elem_count() / k.max(1);
    let fits = k == k2
        && k > 0
        && residual.elem_count() == rows * n
        && residual.dims().last() == Some(&n)
        && residual.is_contiguous()
        && b.elem_count() == n
        && [residual.dtype(), w.dtype(), b.dtype()]
            .iter()
            .all(|d| *d == x.dtype());
    if !fits {
        return Err(Error::Unsupported {
            op: OP,
            why: format!(
                "x {:?} w {:?} b {:?} into {:?} (contiguous: {})",
                x.dims(),
                w.dims(),
                b.dims(),
                residual.dims(),
                residual.is_contiguous()
            ),
        });
    }
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    let op = LinearAdd {
        bias: b.contiguous()?,
        rows,
        k,
        n,
    };
    residual.inplace_op3(&x, &w, &op)?;
    Ok(())
}

struct LinearAdd {
    bias: Tensor,
    rows: usize,
    k: usize,
    n: usize,
}

impl LinearAdd {
    #[allow(
        clippy::too_many_arguments,
        reason = "the storage and layout of each input, as candle's op traits pass them"
    )]
    fn typed<T: CudaDType + DeviceRepr>(
        &self,
        _sfx: &str,
        ys: &mut CudaStorage,
        yl: &Layout,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> candle_core::Result<()>
    where
        candle_core::cuda_backend::cudarc::cublaslt::CudaBlasLT:
            candle_core::cuda_backend::cudarc::cublaslt::Matmul<T>,
    {
        let dev = ys.device.clone();
        let (a, b) = yl
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("linear_add: residual not contiguous".into()))?;
        let mut y = ys.as_cuda_slice_mut::<T>()?.slice_mut(a..b);
        lt_linear(
            &dev,
            (self.rows, self.k, self.n),
            &slice::<T>(xs, xl, "input")?,
            &slice::<T>(ws, wl, "weight")?,
            &self.bias,
            &mut y,
            1.0,
        )
    }
}

cuda_only!(InplaceOp3 for LinearAdd, "shoal-linear-add", "fused linear + add");
