//! Fused elementwise kernels (feature `fused`): GroupNorm (+SiLU), row-bias
//! add, per-(n, c) add and bias + GEGLU, from `csrc/fused.cu` compiled to PTX
//! at build time (nvcc) and loaded once per device through candle's module
//! cache. Every kernel computes in f32 and exists for f16, bf16 and f32.
//!
//! The in-place ops ([`add_row_bias_`], [`add_nc_`]) write into their first
//! argument: call them only on a tensor nothing else holds (a fresh GEMM or
//! convolution output).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg, sys};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, WrapErr};
use candle_core::{DType, Layout, Shape, Tensor};

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

/// `GroupNorm(groups, eps)` with affine `gamma`, `beta` over `x` `(n, c, ...)`,
/// then SiLU when `silu`. Statistics in f32 (each group's sums shifted by its
/// first element), like candle-nn's composition but in three launches.
pub fn group_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    group_norm_in(x, gamma, beta, groups, eps, silu, Form::Nchw)
}

/// [`group_norm`] on channels-last activations `x` `(n, ..., c)`: the groups
/// are runs of `c / groups` consecutive channels of every pixel. Needs `c` a
/// multiple of 8 (f16, bf16) or 4 (f32).
pub fn group_norm_nhwc(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    group_norm_in(x, gamma, beta, groups, eps, silu, Form::Nhwc)
}

/// [`group_norm_nhwc`] in one launch: a block per group of one image takes the
/// statistics and writes the result (`gn_one_pass_nhwc`), where the three-launch
/// op spreads each image over many blocks. Meant for small activations, whose
/// three launches cost more than their bytes; the statistics are summed in
/// another order, so the bits may differ from [`group_norm_nhwc`]'s in the last
/// place. The models take it where `shoal_diffusion::nn::group_norm_one_pass`
/// says (`bench ops` times it beside the other form).
pub fn group_norm_nhwc_one_pass(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    group_norm_in(x, gamma, beta, groups, eps, silu, Form::NhwcOnePass)
}

/// [`group_norm_nhwc`] written over `x` (contiguous): for a tensor nothing else
/// holds, whose values are not needed after (a layer's input once its other uses
/// are done). Each element is read before it is written, after the statistics
/// are taken: the same bits as [`group_norm_nhwc`].
pub fn group_norm_nhwc_(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<()> {
    const OP: &str = "group_norm_";
    check_group_norm(OP, x, gamma, beta, groups, true)?;
    let (gamma, beta) = (gamma.contiguous()?, beta.contiguous()?);
    if !x.is_contiguous() || ![x, &gamma, &beta].iter().all(|t| starts_aligned(t)) {
        return Err(Error::Unsupported {
            op: OP,
            why: "in place needs a contiguous input and 16-byte aligned input and affine".into(),
        });
    }
    let op = GroupNormInPlace(GroupNormOp {
        groups,
        eps,
        silu,
        nhwc: true,
        one_pass: false,
    });
    Ok(x.inplace_op3(&gamma, &beta, &op)?)
}

/// The layout a GroupNorm reads and the kernels it runs as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// NCHW, three launches.
    Nchw,
    /// Channels-last, three launches.
    Nhwc,
    /// Channels-last, one launch (`gn_one_pass_nhwc`).
    NhwcOnePass,
}

fn group_norm_in(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
    form: Form,
) -> Result<Tensor> {
    const OP: &str = "group_norm";
    let nhwc = form != Form::Nchw;
    check_group_norm(OP, x, gamma, beta, groups, nhwc)?;
    let x = x.contiguous()?;
    let (gamma, beta) = (gamma.contiguous()?, beta.contiguous()?);
    if nhwc && ![&x, &gamma, &beta].iter().all(|t| starts_aligned(t)) {
        return Err(Error::Unsupported {
            op: OP,
            why: "channels-last input or affine not 16-byte aligned".into(),
        });
    }
    Ok(x.apply_op3_no_bwd(
        &gamma,
        &beta,
        &GroupNormOp {
            groups,
            eps,
            silu,
            nhwc,
            one_pass: form == Form::NhwcOnePass,
        },
    )?)
}

/// What the fused GroupNorm takes: CUDA, a float dtype, channels a multiple of
/// the groups (and of the vector width channels-last), sizes the kernels index.
fn check_group_norm(
    op: &'static str,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    nhwc: bool,
) -> Result<()> {
    check_cuda(op, x)?;
    suffix(op, x.dtype())?;
    let dims = x.dims();
    let c = if nhwc {
        dims.last().copied().unwrap_or(0)
    } else {
        dims.get(1).copied().unwrap_or(0)
    };
    if dims.len() < 2 || groups == 0 || !c.is_multiple_of(groups) || x.elem_count() == 0 {
        return Err(Error::Unsupported {
            op,
            why: format!("input {dims:?} with {groups} groups"),
        });
    }
    let vector = 16 / x.dtype().size_in_bytes();
    if nhwc && x.elem_count() / dims[0].max(1) >= 1 << 31 {
        return Err(Error::Unsupported {
            op,
            why: format!(
                "channels-last image of {} elements (at most 2^31)",
                x.elem_count() / dims[0].max(1)
            ),
        });
    }
    if nhwc && !c.is_multiple_of(vector) {
        return Err(Error::Unsupported {
            op,
            why: format!("channels-last with {c} channels (needs a multiple of {vector})"),
        });
    }
    if nhwc && nhwc_partial_shared_bytes(c, x.dtype().size_in_bytes()) > 48 * 1024 {
        return Err(Error::Unsupported {
            op,
            why: format!(
                "channels-last with {c} channels (the per-channel sums need over 48 KiB of shared memory)"
            ),
        });
    }
    if dims[0] * groups > 65_535 {
        return Err(Error::Unsupported {
            op,
            why: format!("{} groups in all (at most 65535)", dims[0] * groups),
        });
    }
    if gamma.dims1()? != c || beta.dims1()? != c || gamma.dtype() != x.dtype() || beta.dtype() != x.dtype() {
        return Err(Error::Unsupported {
            op,
            why: format!("affine {:?}/{:?} for {c} channels", gamma.dims(), beta.dims()),
        });
    }
    Ok(())
}

struct GroupNormOp {
    groups: usize,
    eps: f64,
    silu: bool,
    nhwc: bool,
    /// Channels-last in one launch (`gn_one_pass_nhwc`), not three.
    one_pass: bool,
}

/// What the statistics pass leaves for the apply pass: NCHW, each group's mean and
/// 1/σ; channels-last, each image's per-channel scale and shift.
struct GroupStats {
    stats: candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>,
    n: usize,
    c: usize,
    hw: usize,
}

impl GroupNormOp {
    /// Launches the statistics kernels on `x`: partial sums, then each group's mean and 1/σ
    /// (NCHW) or each channel's scale and shift (channels-last).
    fn stats<T: CudaDType + DeviceRepr>(
        &self,
        sfx: &str,
        dev: &CudaDevice,
        x: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, T>,
        gamma: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, T>,
        beta: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, T>,
        dims: &[usize],
    ) -> candle_core::Result<GroupStats> {
        let n = dims[0];
        let (c, hw) = if self.nhwc {
            let c = dims[dims.len() - 1];
            (c, dims[1..dims.len() - 1].iter().product::<usize>())
        } else {
            (dims[1], dims[2..].iter().product::<usize>())
        };
        let groups_total = n * self.groups;
        let cpg = c / self.groups;
        let group_len = cpg * hw;
        // NCHW: chunks of a group's contiguous run; NHWC: chunks of pixels (all channels).
        const CHUNK: usize = 8192;
        let (chunks, chunk_px) = if self.nhwc {
            // At least 16 K elements a block, at most 256 chunks an image.
            let px = (16_384 / c).max(1).max(hw.div_ceil(256));
            (hw.div_ceil(px), px)
        } else {
            (group_len.div_ceil(CHUNK), 0)
        };
        if chunks > 65_535 && self.nhwc {
            candle_core::bail!("fused GroupNorm: {chunks} chunks of pixels")
        }
        let stream = dev.cuda_stream();
        if self.nhwc && (!aligned(x, &stream) || !aligned(gamma, &stream) || !aligned(beta, &stream)) {
            candle_core::bail!("fused GroupNorm: channels-last buffers not 16-byte aligned")
        }
        // SAFETY: every partial sum is written before it is read.
        let mut partial = unsafe { dev.alloc::<f32>(groups_total * chunks * 2) }?;
        let (gl64, gt64, ch64) = (group_len as u64, groups_total as u64, chunks as u64);
        let (hw64, c64, g64) = (hw as u64, c as u64, self.groups as u64);
        let eps = self.eps as f32;
        if self.nhwc {
            // SAFETY: the finalize writes every image's c (scale, shift) pairs before the apply.
            let mut ss = unsafe { dev.alloc::<f32>(n * c * 2) }?;
            let f = dev.get_or_load_custom_func(&format!("gn_partial_nhwc_{sfx}"), MODULE, PTX)?;
            let mut b = stream.launch_builder(&f);
            let cp64 = chunk_px as u64;
            b.arg(x)
                .arg(&mut partial)
                .arg(&hw64)
                .arg(&c64)
                .arg(&g64)
                .arg(&cp64);
            let cfg = LaunchConfig {
                grid_dim: (chunks as u32, n as u32, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: nhwc_partial_shared_bytes(c, std::mem::size_of::<T>()) as u32,
            };
            // SAFETY: the argument list matches the kernel's signature; buffers are sized above.
            unsafe { b.launch(cfg) }.w()?;
            let f = dev.get_or_load_custom_func(&format!("gn_finalize_nhwc_{sfx}"), MODULE, PTX)?;
            let mut b = stream.launch_builder(&f);
            b.arg(x)
                .arg(&partial)
                .arg(&mut ss)
                .arg(gamma)
                .arg(beta)
                .arg(&gt64)
                .arg(&ch64)
                .arg(&hw64)
                .arg(&c64)
                .arg(&g64)
                .arg(&eps);
            // SAFETY: as above.
            unsafe { b.launch(warp_per_group(groups_total)) }.w()?;
            return Ok(GroupStats { stats: ss, n, c, hw });
        }
        let f = dev.get_or_load_custom_func(&format!("gn_partial_{sfx}"), MODULE, PTX)?;
        let mut b = stream.launch_builder(&f);
        let cl64 = CHUNK as u64;
        b.arg(x).arg(&mut partial).arg(&gl64).arg(&cl64);
        let cfg = LaunchConfig {
            grid_dim: (chunks as u32, groups_total as u32, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the argument list matches the kernel's signature; buffers are sized above.
        unsafe { b.launch(cfg) }.w()?;
        // SAFETY: the finalize writes every group's statistics before the apply.
        let mut stats = unsafe { dev.alloc::<f32>(groups_total * 2) }?;
        let f = dev.get_or_load_custom_func(&format!("gn_finalize_{sfx}"), MODULE, PTX)?;
        let mut b = stream.launch_builder(&f);
        let img = (c * hw) as u64;
        let pivot_stride = gl64;
        b.arg(x)
            .arg(&partial)
            .arg(&mut stats)
            .arg(&gt64)
            .arg(&ch64)
            .arg(&gl64)
            .arg(&eps)
            .arg(&g64)
            .arg(&img)
            .arg(&pivot_stride);
        // SAFETY: as above.
        unsafe { b.launch(warp_per_group(groups_total)) }.w()?;
        Ok(GroupStats { stats, n, c, hw })
    }

    #[allow(clippy::too_many_arguments)]
    fn typed<T: CudaDType + DeviceRepr>(
        &self,
        sfx: &str,
        xs: &CudaStorage,
        xl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev: &CudaDevice = &xs.device;
        let x = slice::<T>(xs, xl, "input")?;
        let (gamma, beta) = (slice::<T>(gs, gl, "gamma")?, slice::<T>(bs, bl, "beta")?);
        if self.one_pass {
            return self.launch_one_pass::<T>(sfx, dev, &x, &gamma, &beta, xl);
        }
        let GroupStats { stats, n, c, hw } = self.stats(sfx, dev, &x, &gamma, &beta, xl.dims())?;
        let stream = dev.cuda_stream();
        // SAFETY: the apply kernel writes every output element.
        let mut y = unsafe { dev.alloc::<T>(x.len()) }?;
        let (hw64, c64, cpg64) = (hw as u64, c as u64, (c / self.groups) as u64);
        let img = (c * hw) as u64;
        let act = i32::from(self.silu);
        let elem = std::mem::size_of::<T>();
        if self.nhwc {
            let f = dev.get_or_load_custom_func(&format!("gn_apply_nhwc_{sfx}"), MODULE, PTX)?;
            let mut b = stream.launch_builder(&f);
            let (n64, cols) = (n as u64, img);
            b.arg(&x)
                .arg(&stats)
                .arg(&mut y)
                .arg(&n64)
                .arg(&cols)
                .arg(&c64)
                .arg(&act);
            // SAFETY: as above.
            unsafe { b.launch(row_grid(n, c * hw, elem)) }.w()?;
        } else {
            let f = dev.get_or_load_custom_func(&format!("gn_apply_{sfx}"), MODULE, PTX)?;
            let mut b = stream.launch_builder(&f);
            let planes = (n * c) as u64;
            b.arg(&x)
                .arg(&stats)
                .arg(&gamma)
                .arg(&beta)
                .arg(&mut y)
                .arg(&planes)
                .arg(&hw64)
                .arg(&c64)
                .arg(&cpg64)
                .arg(&act);
            // SAFETY: as above.
            unsafe { b.launch(row_grid(n * c, hw, elem)) }.w()?;
        }
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), xl.shape().clone()))
    }
}

impl GroupNormOp {
    /// The channels-last GroupNorm in one launch: grid (groups, n).
    fn launch_one_pass<T: CudaDType + DeviceRepr>(
        &self,
        sfx: &str,
        dev: &CudaDevice,
        x: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, T>,
        gamma: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, T>,
        beta: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, T>,
        xl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dims = xl.dims();
        let (n, c) = (dims[0], dims[dims.len() - 1]);
        let hw = dims[1..dims.len() - 1].iter().product::<usize>();
        let stream = dev.cuda_stream();
        // SAFETY: the kernel writes every output element (each group's block all of its own).
        let mut y = unsafe { dev.alloc::<T>(x.len()) }?;
        let f = dev.get_or_load_custom_func(&format!("gn_one_pass_nhwc_{sfx}"), MODULE, PTX)?;
        let mut b = stream.launch_builder(&f);
        let (hw64, c64, g64) = (hw as u64, c as u64, self.groups as u64);
        let eps = self.eps as f32;
        let act = i32::from(self.silu);
        b.arg(x)
            .arg(gamma)
            .arg(beta)
            .arg(&mut y)
            .arg(&hw64)
            .arg(&c64)
            .arg(&g64)
            .arg(&eps)
            .arg(&act);
        // check_group_norm bounds n · groups by 65535 and an image by 2^31 elements.
        let cfg = LaunchConfig {
            grid_dim: (self.groups as u32, n as u32, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the argument list matches the kernel's signature; `y` has x's length.
        unsafe { b.launch(cfg) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), xl.shape().clone()))
    }
}

cuda_only!(CustomOp3 for GroupNormOp, "shoal-group-norm", "fused GroupNorm");

/// [`GroupNormOp`] written over its channels-last input.
struct GroupNormInPlace(GroupNormOp);

impl GroupNormInPlace {
    #[allow(clippy::too_many_arguments)]
    fn typed<T: CudaDType + DeviceRepr>(
        &self,
        sfx: &str,
        xs: &mut CudaStorage,
        xl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<()> {
        let dev = xs.device.clone();
        let (gamma, beta) = (slice::<T>(gs, gl, "gamma")?, slice::<T>(bs, bl, "beta")?);
        let (a, z) = xl
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("fused kernel: input not contiguous".into()))?;
        let GroupStats { stats, n, c, hw } = {
            let x = slice::<T>(xs, xl, "input")?;
            self.0.stats(sfx, &dev, &x, &gamma, &beta, xl.dims())?
        };
        let mut x = xs.as_cuda_slice_mut::<T>()?.slice_mut(a..z);
        let stream = dev.cuda_stream();
        let f = dev.get_or_load_custom_func(&format!("gn_apply_nhwc_inplace_{sfx}"), MODULE, PTX)?;
        let mut b = stream.launch_builder(&f);
        let (n64, cols, c64) = (n as u64, (c * hw) as u64, c as u64);
        let act = i32::from(self.0.silu);
        b.arg(&mut x).arg(&stats).arg(&n64).arg(&cols).arg(&c64).arg(&act);
        // SAFETY: the argument list matches the kernel's signature; each thread reads the
        // elements it writes before writing them, and the statistics were taken before.
        unsafe { b.launch(row_grid(n, c * hw, std::mem::size_of::<T>())) }.w()?;
        Ok(())
    }
}

cuda_only!(InplaceOp3 for GroupNormInPlace, "shoal-group-norm-inplace", "fused GroupNorm in place");

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

/// LayerNorm over the last dimension in one pass (a warp per row, the row in
/// registers): `gb` packs gamma then beta (`(2·cols,)`). With `residual`, the norm
/// is of `s = x + residual` (rounded to the dtype as a separate add would be) and
/// `s` is returned too: `(Some(s), y)`, the pre-norm residual stream of a
/// transformer block. Statistics in f32 with the centred variance.
pub fn layer_norm(
    x: &Tensor,
    residual: Option<&Tensor>,
    gb: &Tensor,
    eps: f32,
) -> Result<(Option<Tensor>, Tensor)> {
    const OP: &str = "layer_norm";
    check_cuda(OP, x)?;
    suffix(OP, x.dtype())?;
    let dims = x.dims().to_vec();
    let cols = dims.last().copied().unwrap_or(0);
    let n = 16 / x.dtype().size_in_bytes();
    let ok_res = residual.is_none_or(|r| r.dims() == x.dims() && r.dtype() == x.dtype());
    let vectors = cols / n.max(1);
    if cols == 0 || !cols.is_multiple_of(n) || vectors > 32 * 16 || !ok_res {
        return Err(Error::Unsupported {
            op: OP,
            why: format!(
                "{:?} {dims:?} (last dim a multiple of {n}, at most {}){}",
                x.dtype(),
                32 * 16 * n,
                if ok_res {
                    ""
                } else {
                    ", residual of another shape or dtype"
                }
            ),
        });
    }
    if gb.dims() != [2 * cols] || gb.dtype() != x.dtype() {
        return Err(Error::Unsupported {
            op: OP,
            why: format!("gamma+beta {:?} {:?} for {cols} columns", gb.dtype(), gb.dims()),
        });
    }
    let x = x.contiguous()?;
    let r = match residual {
        Some(r) => r.contiguous()?,
        None => x.clone(),
    };
    let gb = gb.contiguous()?;
    if !(starts_aligned(&x) && starts_aligned(&r) && starts_aligned(&gb)) {
        return Err(Error::Unsupported {
            op: OP,
            why: "input not 16-byte aligned".into(),
        });
    }
    let op = LayerNormOp {
        residual: residual.is_some(),
        eps,
    };
    let out = x.apply_op3_no_bwd(&r, &gb, &op)?;
    let rows = x.elem_count() / cols;
    if residual.is_some() {
        let s = out.narrow(0, 0, rows)?.reshape(dims.as_slice())?;
        let y = out.narrow(0, rows, rows)?.reshape(dims.as_slice())?;
        Ok((Some(s), y))
    } else {
        Ok((None, out.reshape(dims.as_slice())?))
    }
}

struct LayerNormOp {
    residual: bool,
    eps: f32,
}

impl LayerNormOp {
    #[allow(
        clippy::too_many_arguments,
        reason = "the storage and layout of each input, as candle's op traits pass them"
    )]
    fn typed<T: CudaDType + DeviceRepr>(
        &self,
        sfx: &str,
        xs: &CudaStorage,
        xl: &Layout,
        rs: &CudaStorage,
        rl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = &xs.device;
        let x = slice::<T>(xs, xl, "input")?;
        let r = slice::<T>(rs, rl, "residual")?;
        let gb = slice::<T>(gs, gl, "gamma+beta")?;
        let cols = gb.len() / 2;
        let rows = x.len() / cols.max(1);
        let vectors = cols / (16 / std::mem::size_of::<T>());
        let maxv = [2usize, 4, 8, 16]
            .into_iter()
            .find(|m| vectors <= 32 * m)
            .ok_or_else(|| candle_core::Error::Msg(format!("layer_norm: {cols} columns")))?;
        let parts = if self.residual { 2 } else { 1 };
        // SAFETY: every output element is written by the kernel (s and y, or y).
        let mut out = unsafe { dev.alloc::<T>(parts * rows * cols) }?;
        let stream = dev.cuda_stream();
        let f = dev.get_or_load_custom_func(&format!("layer_norm_{sfx}_{maxv}"), MODULE, PTX)?;
        let (r64, c32) = (rows as u64, cols as u32);
        let null = 0u64;
        let warps = THREADS / 32;
        let cfg = LaunchConfig {
            grid_dim: (rows.div_ceil(warps as usize).max(1) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        if self.residual {
            let (mut s, mut y) = out.split_at_mut(rows * cols);
            let mut l = stream.launch_builder(&f);
            l.arg(&x).arg(&r).arg(&gb).arg(&mut s).arg(&mut y);
            l.arg(&r64).arg(&c32).arg(&self.eps);
            // SAFETY: the argument list matches the kernel's signature.
            unsafe { l.launch(cfg) }.w()?;
        } else {
            let mut l = stream.launch_builder(&f);
            l.arg(&x).arg(&null).arg(&gb).arg(&null).arg(&mut out);
            l.arg(&r64).arg(&c32).arg(&self.eps);
            // SAFETY: the argument list matches the kernel's signature (null r and sum).
            unsafe { l.launch(cfg) }.w()?;
        }
        let shape = if self.residual {
            Shape::from((2 * rows, cols))
        } else {
            Shape::from((rows, cols))
        };
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape))
    }
}

cuda_only!(CustomOp3 for LayerNormOp, "shoal-layer-norm", "fused LayerNorm");

/// Shared memory of the channels-last GroupNorm's partial sums: a slot pair per
/// (row of lanes, channel), rows = threads ÷ lanes, lanes = min(16-byte vectors per pixel, threads).
fn nhwc_partial_shared_bytes(c: usize, elem: usize) -> usize {
    let nv = (c / (16 / elem.max(1)).max(1)).max(1);
    let rows = THREADS as usize / nv.min(THREADS as usize);
    rows * c * 2 * std::mem::size_of::<f32>()
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

/// The head widths [`attention_few_keys`] is built for (64 measured level with or slower than
/// cuDNN's SDPA in session 12, so not built).
pub const FEW_KEYS_DIMS: [usize; 2] = [40, 80];
/// The most keys [`attention_few_keys`] takes (CLIP's 77 text tokens, padded to 80).
pub const FEW_KEYS_MAX: usize = 80;
/// Query rows per block of the attention kernels: per tile of each warp of the few-keys
/// kernel (`FEW_KEYS_WARPS` · 16); per warpgroup of the copy-engine kernel.
const ATTN_ROWS: usize = 64;
/// The head widths [`attention_tma`] is built for.
pub const TMA_DIMS: [usize; 2] = [40, 64];

/// Tiles of 16 rows per warp of the few-keys kernel: the most of 1, 2, 4, 8 that
/// leaves at least 1024 blocks (about 8 per SM of an H200), so that each block's
/// staging of the head's keys and values serves as many rows as the grid allows.
fn few_keys_tiles(b: usize, heads: usize, sq: usize) -> usize {
    [8, 4, 2]
        .into_iter()
        .find(|&t| sq.div_ceil(ATTN_ROWS * t) * heads * b >= 1024)
        .unwrap_or(1)
}

/// Attention `softmax(scale · q kᵀ) v` per head over at most [`FEW_KEYS_MAX`] keys
/// (the cross-attention over the text tokens), f16 and bf16, in one launch: every
/// key and value of a head in shared memory, the scores as tensor-core MMAs into
/// f32, the row's softmax in f32 registers, the probabilities rounded to the dtype
/// for the product with `v`. `q` `(b, sq, heads·d)`, `k`, `v` `(b, skv, heads·d)`
/// with a dense last dimension and other strides free (views into a fused
/// projection need no copy); the result `(b, sq, heads·d)`, contiguous.
/// `Unsupported` for another head width (see [`FEW_KEYS_DIMS`]), more keys, f32,
/// or rows not on 16-byte boundaries.
pub fn attention_few_keys(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f32) -> Result<Tensor> {
    attention_kernel("attention_few_keys", AttnKernel::FewKeys, q, k, v, heads, scale)
}

/// Warpgroups per block of [`attention_tma`] (fused.cu `ATTN_TMA_WG`), one block an SM
/// (session 15: 1.116 ms against 1.29 with two warpgroups at width 40, 16×8 heads × 4096²).
const TMA_WARPGROUPS: usize = 4;
/// Keys per tile of [`attention_tma`] (fused.cu `attn_tma`'s `BN`).
const TMA_KEYS: usize = 64;

/// Stages of keys and values of [`attention_tma`] at head width `d` (fused.cu
/// `ATTN_TMA_STAGES_D40`, `_D64`) and its dynamic shared memory in bytes (fused.cu
/// `attn_tma_smem`: the stages, 1 KB to align them, the mbarriers).
fn tma_smem(d: usize) -> usize {
    let stages = if d == 40 { 8 } else { 6 };
    let tile = d.div_ceil(16) * TMA_KEYS * 32;
    stages * 2 * tile + 1024 + 16 * stages
}

/// Attention `softmax(scale · q kᵀ) v` per head over any number of keys (the
/// self-attention over the latent's tokens), f16 and bf16, on Hopper's warpgroup MMAs
/// (sm_90a) in one pass over the keys, in FlashAttention-3's structure: 64 query rows
/// per warpgroup with their fragments in registers, four warpgroups a block sharing
/// each tile of 64 keys and values, brought into shared memory by the copy engine (TMA)
/// on mbarriers, with no block-wide barrier (the warpgroups never wait for each other);
/// within a warpgroup the scores of a tile and the product of the previous tile's
/// probabilities with its values run on the tensor cores while the softmax runs; the
/// scores, the running maximum and sum in f32, the probabilities rounded to the dtype,
/// the product at the head's own width (40, where cuDNN pads to 64; the session-13/14
/// `cp.async` kernel it replaces is in docs/KERNELS.md). Views as for
/// [`attention_few_keys`], their strides within the copy engine's limits (multiples of
/// 16 bytes under 2^40). `Unsupported` off a device of compute capability 9.0, for a
/// head width it is not built for ([`TMA_DIMS`]), f32, or rows not on 16-byte boundaries.
pub fn attention_tma(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f32) -> Result<Tensor> {
    attention_kernel("attention_tma", AttnKernel::Tma, q, k, v, heads, scale)
}

/// A tensor map (`CUtensorMap`) passed by value as a kernel parameter.
#[repr(transparent)]
struct TensorMap(sys::CUtensorMap);
// SAFETY: a plain 128-byte, 64-byte aligned C struct, what the kernel's `__grid_constant__
// CUtensorMap` parameter is.
unsafe impl DeviceRepr for TensorMap {}

/// The tensor map of `attn_tma`'s `k` or `v`: 4-d (width `d`, `heads`, `s` tokens, `b`
/// images) over a `(b, s, heads·d)` view at `ptr` with rows `ss` and images `sb` elements
/// apart, box (16, 1, 64, 1) in the 32-byte swizzle, out-of-bounds elements zeros.
#[allow(
    clippy::too_many_arguments,
    reason = "the view's shape and strides, one by one"
)]
fn tensor_map(
    ptr: sys::CUdeviceptr,
    bf16: bool,
    d: usize,
    heads: usize,
    s: usize,
    b: usize,
    ss: u64,
    sb: u64,
) -> candle_core::Result<TensorMap> {
    let dims: [u64; 4] = [d as u64, heads as u64, s as u64, b as u64];
    // Byte strides of dimensions 1..3; TMA wants multiples of 16 under 2^40. With one image
    // its stride is never followed: any valid one will do.
    let sb = if b == 1 { ss.saturating_mul(s as u64) } else { sb };
    let strides: [u64; 3] = [d as u64 * 2, ss.saturating_mul(2), sb.saturating_mul(2)];
    if strides.iter().any(|&x| x % 16 != 0 || x >= 1 << 40) || dims.iter().any(|&x| x == 0 || x > 1 << 32) {
        candle_core::bail!(
            "attention: view of {dims:?} with byte strides {strides:?} outside the copy engine's limits"
        )
    }
    let boxd: [u32; 4] = [16, 1, TMA_KEYS as u32, 1];
    let es: [u32; 4] = [1; 4];
    let mut m = std::mem::MaybeUninit::<sys::CUtensorMap>::zeroed();
    let dtype = if bf16 {
        sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
    } else {
        sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16
    };
    // SAFETY: every array holds the rank's entries (4, strides 3); the map is written before use.
    unsafe {
        sys::cuTensorMapEncodeTiled(
            m.as_mut_ptr(),
            dtype,
            4,
            ptr as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxd.as_ptr(),
            es.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_32B,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
        .result()
        .w()?;
        Ok(TensorMap(m.assume_init()))
    }
}

/// Whether the device is of compute capability 9.0 (the copy-engine kernel is sm_90a code).
fn sm90(t: &Tensor) -> bool {
    match t.device() {
        candle_core::Device::Cuda(d) => d.cuda_stream().context().compute_capability().ok() == Some((9, 0)),
        _ => false,
    }
}

#[derive(Clone, Copy, Debug)]
enum AttnKernel {
    FewKeys,
    Tma,
}

fn attention_kernel(
    op: &'static str,
    kernel: AttnKernel,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f32,
) -> Result<Tensor> {
    check_cuda(op, q)?;
    let unsupported = |why: String| Error::Unsupported { op, why };
    if !matches!(q.dtype(), DType::F16 | DType::BF16) {
        return Err(unsupported(format!("dtype {:?}", q.dtype())));
    }
    let (b, sq, hd) = q.dims3()?;
    let (bk, skv, hdk) = k.dims3()?;
    if heads == 0
        || !hd.is_multiple_of(heads)
        || bk != b
        || hdk != hd
        || v.dims3()? != (b, skv, hd)
        || k.dtype() != q.dtype()
        || v.dtype() != q.dtype()
    {
        return Err(unsupported(format!(
            "q {:?}, k {:?}, v {:?} {:?}, {heads} heads",
            q.dims(),
            k.dims(),
            v.dims(),
            q.dtype()
        )));
    }
    let d = hd / heads;
    match kernel {
        AttnKernel::FewKeys if !FEW_KEYS_DIMS.contains(&d) || skv == 0 || skv > FEW_KEYS_MAX || sq == 0 => {
            return Err(unsupported(format!(
                "head dim {d} with {skv} keys (built for {FEW_KEYS_DIMS:?}, 1 to {FEW_KEYS_MAX} keys)"
            )));
        }
        AttnKernel::Tma if !TMA_DIMS.contains(&d) || skv == 0 || sq == 0 => {
            return Err(unsupported(format!(
                "head dim {d} with {skv} keys (built for {TMA_DIMS:?}, at least 1 key)"
            )));
        }
        AttnKernel::Tma if !sm90(q) => {
            return Err(unsupported("a device other than compute capability 9.0".into()));
        }
        _ => {}
    }
    // Rows on 16-byte boundaries: strides and offsets multiples of 8 elements.
    let fix = |t: &Tensor| -> Result<Tensor> {
        let l = t.layout();
        let ok = l.stride()[2] == 1
            && l.stride()[..2]
                .iter()
                .chain([&l.start_offset()])
                .all(|s| s % 8 == 0);
        Ok(if ok { t.clone() } else { t.contiguous()? })
    };
    let (q, k, v) = (fix(q)?, fix(k)?, fix(v)?);
    if !(starts_aligned(&q) && starts_aligned(&k) && starts_aligned(&v)) {
        return Err(unsupported("rows not on 16-byte boundaries".into()));
    }
    // The copy engine's strides: bytes under 2^40 (multiples of 16 by `fix`), and no image
    // stride of 0 (a view broadcast over the images) where there are several images.
    let far = |t: &Tensor| {
        let st = t.layout().stride();
        st[..2].iter().any(|&x| x as u64 * 2 >= 1 << 40) || (b > 1 && st[0] == 0) || st[1] == 0
    };
    if matches!(kernel, AttnKernel::Tma) && (far(&k) || far(&v)) {
        return Err(unsupported(format!(
            "strides of k {:?} and v {:?}: broadcast, or past the copy engine's 2^40 bytes",
            k.layout().stride(),
            v.layout().stride()
        )));
    }
    let op = AttnOp {
        kernel,
        heads,
        d,
        scale_log2: scale * std::f32::consts::LOG2_E,
    };
    Ok(q.apply_op3_no_bwd(&k, &v, &op)?)
}

struct AttnOp {
    kernel: AttnKernel,
    heads: usize,
    d: usize,
    scale_log2: f32,
}

/// A strided `(b, s, ·)` view's buffer from its first element, after checking that its
/// elements lie inside the buffer (`op::view_fits`); and its two outer strides.
fn strided<'a, T: CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<(
    candle_core::cuda_backend::cudarc::driver::CudaView<'a, T>,
    [u64; 2],
)> {
    let buf = s.as_cuda_slice::<T>()?;
    if !crate::op::view_fits(l, buf.len()) || l.stride().len() != 3 {
        candle_core::bail!("attention: {what} view outside its buffer")
    }
    let st = l.stride();
    Ok((buf.slice(l.start_offset()..), [st[0] as u64, st[1] as u64]))
}

impl AttnOp {
    /// [`attention_tma`]'s launch: the tensor maps of `k` and `v`, the dynamic shared memory.
    #[allow(
        clippy::too_many_arguments,
        reason = "the views and their strides, as `typed` has them"
    )]
    fn launch_tma<T: CudaDType + DeviceRepr>(
        &self,
        sfx: &str,
        dev: &CudaDevice,
        q: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, T>,
        k: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, T>,
        v: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, T>,
        [b, sq, skv, hd]: [usize; 4],
        [q_sb, q_ss, k_sb, k_ss, v_sb, v_ss]: [u64; 6],
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let stream = dev.cuda_stream();
        // SAFETY: every output element is written by the kernel (each block writes its rows' D columns of each head).
        let mut out = unsafe { dev.alloc::<T>(b * sq * hd) }?;
        let bf16 = sfx == "bf16";
        // The guards keep candle's event tracking: their reads are recorded when they drop,
        // after the launch.
        let (kp, kg) = k.device_ptr(&stream);
        let (vp, vg) = v.device_ptr(&stream);
        let tk = tensor_map(kp, bf16, self.d, self.heads, skv, b, k_ss, k_sb)?;
        let tv = tensor_map(vp, bf16, self.d, self.heads, skv, b, v_ss, v_sb)?;
        let f = dev.get_or_load_custom_func(&format!("attn_tma_d{}_{sfx}", self.d), MODULE, PTX)?;
        let smem = tma_smem(self.d);
        f.set_attribute(
            sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem as i32,
        )
        .w()?;
        let mut l = stream.launch_builder(&f);
        let (sq64, skv64, h64) = (sq as u64, skv as u64, self.heads as u64);
        l.arg(&tk).arg(&tv).arg(q).arg(&mut out);
        l.arg(&sq64).arg(&skv64).arg(&h64).arg(&q_sb).arg(&q_ss);
        l.arg(&self.scale_log2);
        if self.heads > 65_535 || b > 65_535 {
            candle_core::bail!(
                "attention: {b} images × {} heads past the grid's limits",
                self.heads
            )
        }
        let cfg = LaunchConfig {
            grid_dim: (
                sq.div_ceil(ATTN_ROWS * TMA_WARPGROUPS)
                    .clamp(1, i32::MAX as usize) as u32,
                self.heads as u32,
                b as u32,
            ),
            block_dim: (128 * TMA_WARPGROUPS as u32, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        // SAFETY: the argument list matches the kernel's signature; the views were
        // bounds-checked and the tensor maps describe them.
        unsafe { l.launch(cfg) }.w()?;
        drop((kg, vg));
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from((b, sq, hd)),
        ))
    }
    #[allow(
        clippy::too_many_arguments,
        reason = "the storage and layout of each input, as candle's op traits pass them"
    )]
    fn typed<T: CudaDType + DeviceRepr>(
        &self,
        sfx: &str,
        qs: &CudaStorage,
        ql: &Layout,
        ks: &CudaStorage,
        kl: &Layout,
        vs: &CudaStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = &qs.device;
        let (b, sq, hd) = ql.shape().dims3()?;
        let skv = kl.dims()[1];
        let (q, [q_sb, q_ss]) = strided::<T>(qs, ql, "q")?;
        let (k, [k_sb, k_ss]) = strided::<T>(ks, kl, "k")?;
        let (v, [v_sb, v_ss]) = strided::<T>(vs, vl, "v")?;
        if let AttnKernel::Tma = self.kernel {
            return self.launch_tma(
                sfx,
                dev,
                &q,
                &k,
                &v,
                [b, sq, skv, hd],
                [q_sb, q_ss, k_sb, k_ss, v_sb, v_ss],
            );
        }
        // SAFETY: every output element is written by the kernel (each block writes its rows' D columns of each head).
        let mut out = unsafe { dev.alloc::<T>(b * sq * hd) }?;
        let stream = dev.cuda_stream();
        // 64 rows per block per tile of each warp.
        let tiles = few_keys_tiles(b, self.heads, sq);
        let name = format!("attn_few_keys_d{}_{sfx}", self.d);
        let f = dev.get_or_load_custom_func(&name, MODULE, PTX)?;
        let mut l = stream.launch_builder(&f);
        let (sq64, skv64, h64) = (sq as u64, skv as u64, self.heads as u64);
        l.arg(&q).arg(&k).arg(&v).arg(&mut out);
        l.arg(&sq64).arg(&skv64).arg(&h64);
        l.arg(&q_sb)
            .arg(&q_ss)
            .arg(&k_sb)
            .arg(&k_ss)
            .arg(&v_sb)
            .arg(&v_ss);
        let tiles_i32 = tiles as i32;
        l.arg(&self.scale_log2).arg(&tiles_i32);
        let threads = 128;
        let cfg = LaunchConfig {
            grid_dim: (
                sq.div_ceil(ATTN_ROWS * tiles).clamp(1, i32::MAX as usize) as u32,
                self.heads.clamp(1, 65_535) as u32,
                b.clamp(1, 65_535) as u32,
            ),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        if self.heads > 65_535 || b > 65_535 {
            candle_core::bail!(
                "attention: {b} images × {} heads past the grid's limits",
                self.heads
            )
        }
        // SAFETY: the argument list matches the kernel's signature; the views were bounds-checked.
        unsafe { l.launch(cfg) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from((b, sq, hd)),
        ))
    }
}

cuda_only!(CustomOp3 for AttnOp, "shoal-attention", "attention kernel", [F16 => half::f16, "f16"; BF16 => half::bf16, "bf16"]);
