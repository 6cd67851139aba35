//! GroupNorm (+SiLU; NCHW and channels-last, in one pass or three launches, in place) and
//! LayerNorm (+ the residual add before it).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, WrapErr};
use candle_core::{Layout, Shape, Tensor};

use super::{
    MODULE, PTX, THREADS, aligned, check_cuda, row_grid, slice, starts_aligned, suffix, warp_per_group,
};
use crate::error::{Error, Result};

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
