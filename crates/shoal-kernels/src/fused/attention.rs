//! Attention kernels of shoal's own: over few keys (`attn_few_keys`, the cross-attention over
//! the text tokens) and over many keys on the copy engine (`attn_tma`, sm_90a).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg, sys};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, WrapErr};
use candle_core::{DType, Layout, Shape, Tensor};

use super::{MODULE, PTX, check_cuda, starts_aligned};
use crate::error::{Error, Result};

/// The head widths [`attention_few_keys`] is built for (64 measured level with or slower than
/// cuDNN's SDPA in session 12, so not built; 160 added in session 18).
pub const FEW_KEYS_DIMS: [usize; 3] = [40, 80, 160];
/// The most keys [`attention_few_keys`] takes (CLIP's 77 text tokens, padded to 80).
pub const FEW_KEYS_MAX: usize = 80;

/// The few-keys kernel's shared memory in bytes at head width `d` (fused.cu `attn_few_keys`):
/// the keys and values, [`FEW_KEYS_MAX`] rows each of the width padded to 16 plus 8 elements
/// of 2 bytes; static up to [`SMEM_DEFAULT`], dynamic past it (width 160).
fn few_keys_smem(d: usize) -> usize {
    2 * FEW_KEYS_MAX * (d.div_ceil(16) * 16 + 8) * 2
}

/// The most dynamic shared memory a kernel may take without asking for more.
const SMEM_DEFAULT: usize = 48 * 1024;
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
        // Static shared memory up to 48 KB (nothing to ask for), dynamic past it.
        let smem = few_keys_smem(self.d);
        let smem = if smem > SMEM_DEFAULT {
            f.set_attribute(
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem as i32,
            )
            .w()?;
            smem
        } else {
            0
        };
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
            shared_mem_bytes: smem as u32,
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
