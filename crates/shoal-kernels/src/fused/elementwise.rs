//! The in-place adds (row bias, per (n, c) plane, per image channel) and the channels-last
//! copies (2× nearest upsample, channel concatenation).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, CudaStorage, WrapErr};
use candle_core::{Layout, Shape, Tensor};

use super::{MODULE, PTX, THREADS, check_cuda, row_grid, slice, starts_aligned, suffix};
use crate::error::{Error, Result};

/// What an in-place kernel adds.
#[derive(Clone, Copy)]
enum Add {
    /// `y[r, j] += b[j]`.
    RowBias,
    /// `y[n, c, ...] += t[n, c]`.
    PerPlane,
    /// Channels-last: `y[n, ..., c] += t[n, c]`, `c` channels.
    PerImageChannel(usize),
}

struct InplaceAdd(Add);

impl InplaceAdd {
    fn typed<T: CudaDType + DeviceRepr>(
        &self,
        sfx: &str,
        ys: &mut CudaStorage,
        yl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<()> {
        let dev = ys.device.clone();
        let b = slice::<T>(bs, bl, "addend")?;
        let (a, e) = yl
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("in-place add: output not contiguous".into()))?;
        let numel = e - a;
        let (rows, cols, name) = match self.0 {
            Add::RowBias => (numel / b.len().max(1), b.len(), "add_row_bias"),
            Add::PerPlane => (b.len(), numel / b.len().max(1), "add_nc"),
            Add::PerImageChannel(c) => {
                let n = b.len() / c.max(1);
                (n, numel / n.max(1), "add_bc")
            }
        };
        if rows * cols != numel {
            candle_core::bail!("in-place add: {numel} elements are not {rows} × {cols}")
        }
        let stream = dev.cuda_stream();
        let mut y = ys.as_cuda_slice_mut::<T>()?.slice_mut(a..e);
        let f = dev.get_or_load_custom_func(&format!("{name}_{sfx}"), MODULE, PTX)?;
        let mut l = stream.launch_builder(&f);
        let (r64, c64) = (rows as u64, cols as u64);
        let channels = match self.0 {
            Add::PerImageChannel(c) => c as u64,
            _ => 0,
        };
        l.arg(&mut y).arg(&b).arg(&r64).arg(&c64);
        if let Add::PerImageChannel(_) = self.0 {
            // Alignment was checked by `add_bc_` (allocations are 256-byte aligned).
            l.arg(&channels);
        }
        // SAFETY: the argument list matches the kernel's signature; `y` holds rows × cols elements.
        unsafe { l.launch(row_grid(rows, cols, std::mem::size_of::<T>())) }.w()?;
        Ok(())
    }
}

cuda_only!(InplaceOp2 for InplaceAdd, "shoal-inplace-add", "fused add");

fn inplace_add(op: &'static str, y: &Tensor, addend: &Tensor, kind: Add, want: usize) -> Result<()> {
    check_cuda(op, y)?;
    suffix(op, y.dtype())?;
    if !y.is_contiguous() || addend.dtype() != y.dtype() || addend.elem_count() != want || want == 0 {
        return Err(Error::Unsupported {
            op,
            why: format!("{:?} {:?} with addend {:?}", y.dims(), y.dtype(), addend.dims()),
        });
    }
    let addend = addend.contiguous()?;
    y.inplace_op2(&addend, &InplaceAdd(kind))?;
    Ok(())
}

/// In place: `y[..., j] += bias[j]` (`y` contiguous, last dimension = `bias`'s length).
pub fn add_row_bias_(y: &Tensor, bias: &Tensor) -> Result<()> {
    let cols = y.dims().last().copied().unwrap_or(0);
    inplace_add("add_row_bias", y, bias, Add::RowBias, cols)
}

/// In place: `y[n, c, ...] += t[n, c]` for `y` `(n, c, ...)` contiguous and `t` `n × c` values.
pub fn add_nc_(y: &Tensor, t: &Tensor) -> Result<()> {
    let dims = y.dims();
    let want = if dims.len() >= 2 { dims[0] * dims[1] } else { 0 };
    inplace_add("add_nc", y, t, Add::PerPlane, want)
}

/// In place, channels-last: `y[n, ..., c] += t[n, c]` for `y` `(n, ..., c)` contiguous and
/// `t` `n × c` values (`c` a multiple of 8 for f16/bf16, 4 for f32).
pub fn add_bc_(y: &Tensor, t: &Tensor) -> Result<()> {
    let dims = y.dims();
    let c = dims.last().copied().unwrap_or(0);
    let vector = 16 / y.dtype().size_in_bytes();
    if dims.len() < 2 || !c.is_multiple_of(vector) || y.elem_count() / dims[0].max(1) >= 1 << 31 {
        return Err(Error::Unsupported {
            op: "add_bc",
            why: format!("channels-last {dims:?} (channels a multiple of {vector})"),
        });
    }
    if !starts_aligned(y) || !starts_aligned(t) {
        return Err(Error::Unsupported {
            op: "add_bc",
            why: "channels-last tensors not 16-byte aligned".into(),
        });
    }
    inplace_add("add_bc", y, t, Add::PerImageChannel(c), dims[0] * c)
}

/// A 1-D launch over `total` items, 256 threads a block, grid-stride beyond 2^20 blocks.
fn flat_grid(total: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (total.div_ceil(THREADS as usize).clamp(1, 1 << 20) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Checks a channels-last `(n, h, w, c)` tensor for the copy kernels: CUDA, a kernel
/// dtype, `c` a multiple of the 16-byte vector, 16-byte aligned. Returns the dims.
fn nhwc_dims(op: &'static str, x: &Tensor) -> Result<(usize, usize, usize, usize)> {
    check_cuda(op, x)?;
    suffix(op, x.dtype())?;
    let n = 16 / x.dtype().size_in_bytes();
    match *x.dims() {
        [b, h, w, c] if c.is_multiple_of(n) && c > 0 && starts_aligned(x) => Ok((b, h, w, c)),
        _ => Err(Error::Unsupported {
            op,
            why: format!(
                "{:?} {:?} (needs (n, h, w, c) with c a multiple of {n}, 16-byte aligned)",
                x.dtype(),
                x.dims()
            ),
        }),
    }
}

/// Nearest-neighbour 2× upsampling of channels-last `(n, h, w, c)` → `(n, 2h, 2w, c)`:
/// each input vector read once and written to its four pixels.
pub fn upsample2x_nhwc(x: &Tensor) -> Result<Tensor> {
    let (n, h, w, c) = nhwc_dims("upsample2x_nhwc", x)?;
    let x = x.contiguous()?;
    Ok(x.apply_op1_no_bwd(&Upsample2x { n, h, w, c })?)
}

struct Upsample2x {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
}

impl Upsample2x {
    fn typed<T: CudaDType + DeviceRepr>(
        &self,
        sfx: &str,
        xs: &CudaStorage,
        xl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = &xs.device;
        let x = slice::<T>(xs, xl, "input")?;
        let cv = self.c / (16 / std::mem::size_of::<T>());
        // SAFETY: every output element is written by the kernel (four per input vector).
        let mut out = unsafe { dev.alloc::<T>(4 * x.len()) }?;
        let stream = dev.cuda_stream();
        let f = dev.get_or_load_custom_func(&format!("upsample2x_nhwc_{sfx}"), MODULE, PTX)?;
        let mut l = stream.launch_builder(&f);
        let (n, h, w, cv64) = (self.n as u64, self.h as u64, self.w as u64, cv as u64);
        l.arg(&x).arg(&mut out).arg(&n).arg(&h).arg(&w).arg(&cv64);
        // SAFETY: the argument list matches the kernel's signature.
        unsafe { l.launch(flat_grid(self.n * self.h * self.w * cv)) }.w()?;
        let shape = Shape::from((self.n, 2 * self.h, 2 * self.w, self.c));
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape))
    }
}

cuda_only!(CustomOp1 for Upsample2x, "shoal-upsample2x-nhwc", "fused upsample");

/// Channels-last concatenation along the channels: `(n, h, w, ca)` and `(n, h, w, cb)`
/// → `(n, h, w, ca + cb)`, one pass (the UNet's skip connections).
pub fn cat_channels_nhwc(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    const OP: &str = "cat_nhwc";
    let (n, h, w, ca) = nhwc_dims(OP, a)?;
    let (n2, h2, w2, cb) = nhwc_dims(OP, b)?;
    if (n, h, w) != (n2, h2, w2) || a.dtype() != b.dtype() {
        return Err(Error::Unsupported {
            op: OP,
            why: format!(
                "{:?} {:?} with {:?} {:?}",
                a.dtype(),
                a.dims(),
                b.dtype(),
                b.dims()
            ),
        });
    }
    let (a, b) = (a.contiguous()?, b.contiguous()?);
    Ok(a.apply_op2_no_bwd(
        &b,
        &CatNhwc {
            pixels: n * h * w,
            ca,
            cb,
            dims: (n, h, w),
        },
    )?)
}

struct CatNhwc {
    pixels: usize,
    ca: usize,
    cb: usize,
    dims: (usize, usize, usize),
}

impl CatNhwc {
    fn typed<T: CudaDType + DeviceRepr>(
        &self,
        sfx: &str,
        as_: &CudaStorage,
        al: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = &as_.device;
        let a = slice::<T>(as_, al, "first input")?;
        let b = slice::<T>(bs, bl, "second input")?;
        let n = 16 / std::mem::size_of::<T>();
        let (av, bv) = (self.ca / n, self.cb / n);
        // SAFETY: every output element is written by the kernel.
        let mut out = unsafe { dev.alloc::<T>(a.len() + b.len()) }?;
        let stream = dev.cuda_stream();
        let f = dev.get_or_load_custom_func(&format!("cat_nhwc_{sfx}"), MODULE, PTX)?;
        let mut l = stream.launch_builder(&f);
        let (p, av64, bv64) = (self.pixels as u64, av as u64, bv as u64);
        l.arg(&a).arg(&b).arg(&mut out).arg(&p).arg(&av64).arg(&bv64);
        // SAFETY: the argument list matches the kernel's signature.
        unsafe { l.launch(flat_grid(self.pixels * (av + bv))) }.w()?;
        let (bn, h, w) = self.dims;
        let shape = Shape::from((bn, h, w, self.ca + self.cb));
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape))
    }
}

cuda_only!(CustomOp2 for CatNhwc, "shoal-cat-nhwc", "fused concatenation");
