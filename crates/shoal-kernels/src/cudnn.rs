//! cuDNN convolutions and attention (feature `cudnn`).
//!
//! Each call first *prepares* its plan outside candle (building it on first
//! use for that shape, dtype and layout, and caching it per device, together
//! with a cuDNN handle bound to the device's candle stream). A plan cuDNN
//! cannot build is cached as unsupported and reported as
//! [`Error::Unsupported`], so the caller falls back to its plain path once
//! per call without asking cuDNN again. The op itself (a candle custom op)
//! only looks the plan up and executes it on the stream: no descriptor, no
//! heuristic query and no allocation besides the output (and a growing
//! workspace) per call.

use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::{LazyLock, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, DeviceId};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::shape::ConvShape;

#[repr(C)]
struct ShoalPlan {
    _opaque: [u8; 0],
}

unsafe extern "C" {
    fn shoal_cudnn_handle_create(
        handle: *mut *mut c_void,
        stream: *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn shoal_cudnn_version() -> usize;
    #[allow(clippy::too_many_arguments)]
    fn shoal_cudnn_conv_build(
        handle: *mut c_void,
        dtype: c_int,
        n: i64,
        c: i64,
        h: i64,
        w: i64,
        k: i64,
        r: i64,
        s: i64,
        pad: i64,
        stride: i64,
        nhwc: c_int,
        has_bias: c_int,
        has_residual: c_int,
        out: *mut *mut ShoalPlan,
        workspace: *mut i64,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn shoal_cudnn_sdpa_build(
        handle: *mut c_void,
        dtype: c_int,
        b: i64,
        heads: i64,
        sq: i64,
        skv: i64,
        d: i64,
        q_stride: *const i64,
        k_stride: *const i64,
        v_stride: *const i64,
        o_stride: *const i64,
        scale: f32,
        causal: c_int,
        out: *mut *mut ShoalPlan,
        workspace: *mut i64,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn shoal_cudnn_execute(
        handle: *mut c_void,
        plan: *const ShoalPlan,
        ptrs: *const *mut c_void,
        workspace: *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
}

/// The cuDNN library's version (e.g. 91900 for 9.19.0), 0 when it cannot be loaded.
pub fn version() -> usize {
    // SAFETY: takes no arguments; the shim catches every C++ exception.
    unsafe { shoal_cudnn_version() }
}

/// What a plan computes; the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Conv {
        dtype: c_int,
        shape: ConvShape,
        bias: bool,
    },
    Sdpa {
        dtype: c_int,
        dims: [i64; 5],
        strides: [[i64; 4]; 4],
        scale: u32,
        causal: bool,
    },
}

enum Entry {
    Plan { plan: *mut ShoalPlan, workspace: usize },
    Unsupported(String),
}

struct DevState {
    handle: *mut c_void,
    plans: HashMap<Key, Entry>,
    workspace: Option<CudaSlice<u8>>,
}

// SAFETY: the handle and plans are only used while `STATES` is locked, so no
// two threads call into one cuDNN handle at once (cuDNN's documented rule).
unsafe impl Send for DevState {}

static STATES: LazyLock<Mutex<HashMap<DeviceId, DevState>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// How many plans have been built, over all devices (for `shoal bench`).
pub fn plans_built() -> usize {
    let states = STATES.lock().unwrap_or_else(|p| p.into_inner());
    states
        .values()
        .map(|s| {
            s.plans
                .values()
                .filter(|e| matches!(e, Entry::Plan { .. }))
                .count()
        })
        .sum()
}

fn message(buf: &[c_char]) -> String {
    // SAFETY: the shim writes a NUL-terminated string (snprintf) into `buf`,
    // which was zeroed, so a NUL is always inside the buffer.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn dtype_code(op: &'static str, dtype: DType) -> Result<c_int> {
    match dtype {
        DType::F16 => Ok(0),
        DType::BF16 => Ok(1),
        DType::F32 => Ok(2),
        d => Err(Error::Unsupported {
            op,
            why: format!("dtype {d:?}"),
        }),
    }
}

fn cuda_device(op: &'static str, t: &Tensor) -> Result<CudaDevice> {
    match t.device() {
        candle_core::Device::Cuda(d) => Ok(d.clone()),
        d => Err(Error::Unsupported {
            op,
            why: format!("tensor on {d:?}"),
        }),
    }
}

type Build<'a> = dyn FnOnce(*mut c_void, *mut *mut ShoalPlan, *mut i64, *mut c_char, usize) -> c_int + 'a;

/// Builds (once) the plan for `key` on `dev`, or reports why there is none.
fn prepare(dev: &CudaDevice, op: &'static str, key: &Key, build: Box<Build<'_>>) -> Result<()> {
    let mut states = STATES.lock().unwrap_or_else(|p| p.into_inner());
    let state = match states.entry(dev.id()) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            let stream = dev.cuda_stream();
            stream.context().bind_to_thread().map_err(|e| Error::Backend {
                op,
                message: format!("binding the CUDA context: {e:?}"),
            })?;
            let mut handle = std::ptr::null_mut();
            let mut err = [0 as c_char; 1024];
            // SAFETY: `handle` is a valid out-pointer, `err` a buffer of the length passed;
            // the stream belongs to the device whose context is bound to this thread.
            let rc = unsafe {
                shoal_cudnn_handle_create(
                    &mut handle,
                    stream.cu_stream() as *mut c_void,
                    err.as_mut_ptr(),
                    err.len(),
                )
            };
            if rc != 0 {
                return Err(Error::Unsupported {
                    op,
                    why: format!("cuDNN unavailable: {}", message(&err)),
                });
            }
            e.insert(DevState {
                handle,
                plans: HashMap::new(),
                workspace: None,
            })
        }
    };
    if !state.plans.contains_key(key) {
        let mut plan = std::ptr::null_mut();
        let mut ws = 0i64;
        let mut err = [0 as c_char; 1024];
        let rc = build(state.handle, &mut plan, &mut ws, err.as_mut_ptr(), err.len());
        let entry = if rc == 0 && !plan.is_null() {
            Entry::Plan {
                plan,
                workspace: usize::try_from(ws).unwrap_or(0),
            }
        } else {
            Entry::Unsupported(message(&err))
        };
        state.plans.insert(key.clone(), entry);
    }
    match state.plans.get(key) {
        Some(Entry::Plan { .. }) => Ok(()),
        Some(Entry::Unsupported(why)) => Err(Error::Unsupported { op, why: why.clone() }),
        None => Err(Error::Backend {
            op,
            message: "plan cache lost an entry".into(),
        }),
    }
}

/// Executes the prepared plan for `key` with `ptrs` (uid i + 1 at index i).
fn execute(dev: &CudaDevice, op: &'static str, key: &Key, ptrs: &[*mut c_void; 5]) -> Result<()> {
    let mut states = STATES.lock().unwrap_or_else(|p| p.into_inner());
    let state = states.get_mut(&dev.id()).ok_or_else(|| Error::Backend {
        op,
        message: "no cuDNN handle for this device (plan not prepared)".into(),
    })?;
    let (plan, need) = match state.plans.get(key) {
        Some(Entry::Plan { plan, workspace }) => (*plan, *workspace),
        _ => {
            return Err(Error::Backend {
                op,
                message: "plan not prepared".into(),
            });
        }
    };
    if need > 0 && state.workspace.as_ref().is_none_or(|w| w.len() < need) {
        // Stream-ordered: the old workspace is freed after the work queued on it.
        state.workspace = None;
        // SAFETY: the workspace is scratch memory cuDNN writes before it reads.
        state.workspace = Some(unsafe { dev.alloc::<u8>(need) }?);
    }
    let stream = dev.cuda_stream();
    let handle = state.handle;
    let mut err = [0 as c_char; 1024];
    let rc = match state.workspace.as_mut() {
        Some(ws) if need > 0 => {
            let (wp, _guard) = ws.device_ptr_mut(&stream);
            // SAFETY: the plan was built on this handle; every pointer is a live device
            // buffer of the size the plan's shapes imply (checked by the callers).
            unsafe {
                shoal_cudnn_execute(
                    handle,
                    plan,
                    ptrs.as_ptr(),
                    wp as *mut c_void,
                    err.as_mut_ptr(),
                    err.len(),
                )
            }
        }
        // SAFETY: as above; the plan needs no workspace.
        _ => unsafe {
            shoal_cudnn_execute(
                handle,
                plan,
                ptrs.as_ptr(),
                std::ptr::null_mut(),
                err.as_mut_ptr(),
                err.len(),
            )
        },
    };
    if rc != 0 {
        return Err(Error::Backend {
            op,
            message: message(&err),
        });
    }
    Ok(())
}

fn contiguous_slice<'a, T: CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
) -> candle_core::Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, T>> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("cuDNN op: input not contiguous".into()))?;
    Ok(s.as_cuda_slice::<T>()?.slice(a..b))
}

fn to_candle(e: Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

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
    prepare(
        &dev,
        OP,
        &key,
        Box::new(move |handle, out, ws, err, len| {
            // SAFETY: the stride arrays live until the call returns; out-pointers from `prepare`.
            unsafe {
                shoal_cudnn_sdpa_build(
                    handle,
                    dtype,
                    dims[0],
                    dims[1],
                    dims[2],
                    dims[3],
                    dims[4],
                    strides[0].as_ptr(),
                    strides[1].as_ptr(),
                    strides[2].as_ptr(),
                    strides[3].as_ptr(),
                    scale,
                    causal as c_int,
                    out,
                    ws,
                    err,
                    len,
                )
            }
        }),
    )?;
    Ok(q.apply_op3_no_bwd(&k, &v, &SdpaOp { key, dev, d })?)
}

struct SdpaOp {
    key: Key,
    dev: CudaDevice,
    d: usize,
}

impl SdpaOp {
    fn typed<T: CudaDType + DeviceRepr>(
        &self,
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
            // The furthest element the strides reach must lie inside the buffer.
            let reach = l
                .dims()
                .iter()
                .zip(l.stride())
                .map(|(n, s)| n.saturating_sub(1) * s)
                .sum::<usize>()
                + 1;
            if off + reach > s.as_cuda_slice::<T>()?.len() {
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

impl CustomOp3 for SdpaOp {
    fn name(&self) -> &'static str {
        "shoal-cudnn-sdpa"
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
        candle_core::bail!("the cuDNN attention needs CUDA tensors")
    }

    fn cuda_fwd(
        &self,
        qs: &CudaStorage,
        ql: &Layout,
        ks: &CudaStorage,
        kl: &Layout,
        vs: &CudaStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        match qs.dtype() {
            DType::F16 => self.typed::<f16>(qs, ql, ks, kl, vs, vl),
            DType::BF16 => self.typed::<bf16>(qs, ql, ks, kl, vs, vl),
            d => candle_core::bail!("cuDNN sdpa: dtype {d:?}"),
        }
    }
}
