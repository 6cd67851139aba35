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
//! workspace) per call. `conv.rs` and `sdpa.rs` hold the two ops.

use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::{Arc, LazyLock, Mutex};

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DevicePtr, sys};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, DeviceId};
use candle_core::{DType, Layout, Tensor};

use crate::error::{Error, Result};
use crate::shape::ConvShape;

mod conv;
mod sdpa;

pub use conv::{conv2d, conv2d_ex};
pub use sdpa::sdpa;

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
    fn shoal_cudnn_rtc_plans() -> c_int;
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

/// Time spent building plans (cuDNN's heuristics, and the run-time compilation of
/// the engines that need it), per op, since the start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildStats {
    /// (op, plans built, seconds), in first-built order.
    pub per_op: Vec<(&'static str, usize, f64)>,
    /// Seconds spent creating cuDNN handles (loading the library included).
    pub handle_s: f64,
    /// Plans whose engine compiles its kernels at run time.
    pub runtime_compiled: usize,
}

static BUILD: Mutex<BuildStats> = Mutex::new(BuildStats {
    per_op: Vec::new(),
    handle_s: 0.0,
    runtime_compiled: 0,
});

/// Where plan building went so far (`shoal bench`, `generate -v`).
pub fn build_stats() -> BuildStats {
    let mut s = BUILD.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // SAFETY: takes no arguments, reads an atomic counter.
    s.runtime_compiled = usize::try_from(unsafe { shoal_cudnn_rtc_plans() }).unwrap_or(0);
    s
}

fn note_build(op: &'static str, seconds: f64) {
    let mut s = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    match s.per_op.iter_mut().find(|(o, _, _)| *o == op) {
        Some(e) => {
            e.1 += 1;
            e.2 += seconds;
        }
        None => s.per_op.push((op, 1, seconds)),
    }
}

/// What a plan computes; the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Conv {
        dtype: c_int,
        shape: ConvShape,
        bias: bool,
        nhwc: bool,
        residual: bool,
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
    /// A plan, executed on the handle it was built on.
    Plan {
        plan: *mut ShoalPlan,
        workspace: usize,
        handle: *mut c_void,
    },
    Unsupported(String),
}

struct DevState {
    handle: *mut c_void,
    plans: HashMap<Key, Entry>,
    /// Shared with the CUDA graphs captured on it ([`workspace`]): a graph's
    /// nodes hold its address, so a grown workspace replaces this one without
    /// freeing it while a graph still holds it.
    workspace: Option<Arc<CudaSlice<u8>>>,
    /// The handles [`prebuild`]'s threads built on, kept for the plans built on
    /// them and for the next prebuild.
    helpers: Vec<*mut c_void>,
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

/// The workspace `dev`'s cuDNN plans run in now, for a CUDA graph captured with
/// them to hold: the graph's nodes keep its address, so it must outlive the graph
/// even where a later, larger plan replaces it.
pub fn workspace(dev: &CudaDevice) -> Option<Arc<CudaSlice<u8>>> {
    let states = STATES.lock().unwrap_or_else(|p| p.into_inner());
    states.get(&dev.id()).and_then(|s| s.workspace.clone())
}

/// Whether this thread's cuDNN ops only collect plan keys now ([`discover`]): a
/// model call made then computes zeros and is no warm-up for a CUDA graph.
pub fn discovering() -> bool {
    COLLECT.with(|c| c.borrow().is_some())
}

fn capturing(stream: &candle_core::cuda_backend::cudarc::driver::CudaStream) -> bool {
    matches!(
        stream.capture_status(),
        Ok(s) if s != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE
    )
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

impl Key {
    fn op(&self) -> &'static str {
        match self {
            Key::Conv { .. } => "conv2d",
            Key::Sdpa { .. } => "sdpa",
        }
    }
}

/// What building one plan gave: the plan (null where cuDNN has none), its
/// workspace, the handle it was built on, and cuDNN's message.
struct Built {
    plan: *mut ShoalPlan,
    workspace: i64,
    handle: *mut c_void,
    err: String,
}

// SAFETY: a built plan and its handle move from the thread that built them to
// the plan cache once; from then on they are used only while `STATES` is locked.
unsafe impl Send for Built {}

impl Built {
    fn entry(self) -> Entry {
        if self.plan.is_null() {
            Entry::Unsupported(self.err)
        } else {
            Entry::Plan {
                plan: self.plan,
                workspace: usize::try_from(self.workspace).unwrap_or(0),
                handle: self.handle,
            }
        }
    }
}

/// Builds the plan for `key` on `handle` (timed into the build statistics).
fn build_key(handle: *mut c_void, key: &Key) -> Built {
    let mut plan = std::ptr::null_mut();
    let mut ws = 0i64;
    let mut err = [0 as c_char; 1024];
    let t0 = std::time::Instant::now();
    let rc = match key {
        Key::Conv {
            dtype,
            shape,
            bias,
            nhwc,
            residual,
        } => {
            let d = [
                shape.n,
                shape.c,
                shape.h,
                shape.w,
                shape.k,
                shape.r,
                shape.s,
                shape.pad,
                shape.stride,
            ]
            .map(|v| v as i64);
            // SAFETY: `plan`, `ws` and `err` are valid out-pointers, `err` of the length passed;
            // the handle is a live cuDNN handle of this device.
            unsafe {
                shoal_cudnn_conv_build(
                    handle,
                    *dtype,
                    d[0],
                    d[1],
                    d[2],
                    d[3],
                    d[4],
                    d[5],
                    d[6],
                    d[7],
                    d[8],
                    c_int::from(*nhwc),
                    c_int::from(*bias),
                    c_int::from(*residual),
                    &mut plan,
                    &mut ws,
                    err.as_mut_ptr(),
                    err.len(),
                )
            }
        }
        Key::Sdpa {
            dtype,
            dims,
            strides,
            scale,
            causal,
        } => {
            // SAFETY: as above; the stride arrays live in the key until the call returns.
            unsafe {
                shoal_cudnn_sdpa_build(
                    handle,
                    *dtype,
                    dims[0],
                    dims[1],
                    dims[2],
                    dims[3],
                    dims[4],
                    strides[0].as_ptr(),
                    strides[1].as_ptr(),
                    strides[2].as_ptr(),
                    strides[3].as_ptr(),
                    f32::from_bits(*scale),
                    c_int::from(*causal),
                    &mut plan,
                    &mut ws,
                    err.as_mut_ptr(),
                    err.len(),
                )
            }
        }
    };
    note_build(key.op(), t0.elapsed().as_secs_f64());
    Built {
        plan: if rc == 0 { plan } else { std::ptr::null_mut() },
        workspace: ws,
        handle,
        err: message(&err),
    }
}

/// A new cuDNN handle on `dev`'s candle stream, made on (and with the context
/// bound to) the calling thread.
fn new_handle(dev: &CudaDevice, op: &'static str) -> Result<*mut c_void> {
    let stream = dev.cuda_stream();
    stream.context().bind_to_thread().map_err(|e| Error::Backend {
        op,
        message: format!("binding the CUDA context: {e:?}"),
    })?;
    let t0 = std::time::Instant::now();
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
    BUILD.lock().unwrap_or_else(|p| p.into_inner()).handle_s += t0.elapsed().as_secs_f64();
    if rc != 0 {
        return Err(Error::Unsupported {
            op,
            why: format!("cuDNN unavailable: {}", message(&err)),
        });
    }
    Ok(handle)
}

/// The state of `dev` in `states`, made (with its handle) on first use.
fn state_of<'s>(
    states: &'s mut HashMap<DeviceId, DevState>,
    dev: &CudaDevice,
    op: &'static str,
) -> Result<&'s mut DevState> {
    Ok(match states.entry(dev.id()) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => e.insert(DevState {
            handle: new_handle(dev, op)?,
            plans: HashMap::new(),
            workspace: None,
            helpers: Vec::new(),
        }),
    })
}

/// Builds (once) the plan for `key` on `dev`, or reports why there is none.
fn prepare(dev: &CudaDevice, op: &'static str, key: &Key) -> Result<()> {
    let mut states = STATES.lock().unwrap_or_else(|p| p.into_inner());
    let state = state_of(&mut states, dev, op)?;
    if !state.plans.contains_key(key) {
        let built = build_key(state.handle, key);
        state.plans.insert(key.clone(), built.entry());
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

thread_local! {
    /// The keys collected by [`discover`] on this thread, while it runs.
    static COLLECT: std::cell::RefCell<Option<Vec<Key>>> = const { std::cell::RefCell::new(None) };
}

/// Plan keys that [`discover`] found without a plan yet.
#[derive(Debug, Default)]
pub struct PlanKeys(Vec<Key>);

impl PlanKeys {
    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// None found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Runs `f` with this thread's cuDNN ops collecting the keys of the plans they
/// lack instead of running: each returns zeros of its output's shape (so the
/// shapes downstream are the real ones), the other ops run as usual. For
/// [`prebuild`]: a model call under `discover` costs its elementwise kernels.
pub fn discover<R>(f: impl FnOnce() -> R) -> (R, PlanKeys) {
    let nested = COLLECT.with(|c| c.borrow().is_some());
    if nested {
        return (f(), PlanKeys::default());
    }
    COLLECT.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let r = f();
    let keys = COLLECT.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (r, PlanKeys(keys))
}

/// Whether this call only collects its key ([`discover`]): then the op returns
/// zeros of its output's shape.
fn collecting(dev: &CudaDevice, key: &Key) -> bool {
    COLLECT.with(|c| {
        let mut c = c.borrow_mut();
        let Some(keys) = c.as_mut() else {
            return false;
        };
        let built = STATES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&dev.id())
            .is_some_and(|s| s.plans.contains_key(key));
        if !built && !keys.contains(key) {
            keys.push(key.clone());
        }
        true
    })
}

/// What [`prebuild`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prebuilt {
    /// Plans built.
    pub plans: usize,
    /// Keys cuDNN has no plan for (their calls run the plain path).
    pub unsupported: usize,
    /// Threads used.
    pub threads: usize,
    /// Wall seconds, handles included.
    pub seconds: f64,
}

/// Builds the plans of `keys` on `threads` threads, each with a cuDNN handle
/// of its own on `dev`'s candle stream, and caches them: a plan executes later
/// on the handle it was built on. The cuDNN engines that compile their kernels
/// at run time compile side by side. The plan cache stays locked throughout,
/// so no cuDNN op runs meanwhile and no handle is ever used by two threads at
/// once; the threads' handles are kept for the next call.
pub fn prebuild(dev: &CudaDevice, keys: PlanKeys, threads: usize) -> Result<Prebuilt> {
    const OP: &str = "prebuild";
    let t0 = std::time::Instant::now();
    let keys = keys.0;
    if keys.is_empty() {
        return Ok(Prebuilt::default());
    }
    let threads = threads.clamp(1, keys.len());
    let mut states = STATES.lock().unwrap_or_else(|p| p.into_inner());
    let state = state_of(&mut states, dev, OP)?;
    let mut shares: Vec<(Option<Handle>, Vec<Key>)> = (0..threads)
        .map(|_| (state.helpers.pop().map(Handle), Vec::new()))
        .collect();
    for (i, k) in keys.into_iter().enumerate() {
        shares[i % threads].1.push(k);
    }
    type Share = Result<(Handle, Vec<(Key, Built)>)>;
    let results: Vec<std::thread::Result<Share>> = std::thread::scope(|s| {
        let running: Vec<_> = shares
            .into_iter()
            .map(|(handle, share)| {
                let dev = dev.clone();
                s.spawn(move || -> Share {
                    let handle = match handle {
                        Some(h) => {
                            dev.cuda_stream()
                                .context()
                                .bind_to_thread()
                                .map_err(|e| Error::Backend {
                                    op: OP,
                                    message: format!("binding the CUDA context: {e:?}"),
                                })?;
                            h
                        }
                        None => Handle(new_handle(&dev, OP)?),
                    };
                    let built = share
                        .into_iter()
                        .map(|k| {
                            let b = build_key(handle.0, &k);
                            (k, b)
                        })
                        .collect();
                    Ok((handle, built))
                })
            })
            .collect();
        running.into_iter().map(|h| h.join()).collect()
    });
    let mut done = Prebuilt {
        threads,
        ..Prebuilt::default()
    };
    let mut first_err = None;
    for r in results {
        match r {
            Ok(Ok((handle, built))) => {
                state.helpers.push(handle.0);
                for (key, b) in built {
                    let entry = b.entry();
                    match entry {
                        Entry::Plan { .. } => done.plans += 1,
                        Entry::Unsupported(_) => done.unsupported += 1,
                    }
                    state.plans.entry(key).or_insert(entry);
                }
            }
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            // A thread that panicked: its handle (if it had one from the pool) is
            // not reused; its keys build on first use.
            Err(_) => {
                first_err.get_or_insert(Error::Backend {
                    op: OP,
                    message: "a plan-building thread panicked".into(),
                });
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    done.seconds = t0.elapsed().as_secs_f64();
    Ok(done)
}

/// A cuDNN handle moving to a plan-building thread and back.
#[derive(Clone, Copy)]
struct Handle(*mut c_void);

// SAFETY: a handle goes to one thread at a time ([`prebuild`] holds the plan
// cache's lock until every thread has returned its handle).
unsafe impl Send for Handle {}

/// Executes the prepared plan for `key` with `ptrs` (uid i + 1 at index i).
fn execute(dev: &CudaDevice, op: &'static str, key: &Key, ptrs: &[*mut c_void; 5]) -> Result<()> {
    let mut states = STATES.lock().unwrap_or_else(|p| p.into_inner());
    let state = states.get_mut(&dev.id()).ok_or_else(|| Error::Backend {
        op,
        message: "no cuDNN handle for this device (plan not prepared)".into(),
    })?;
    let (plan, need, handle) = match state.plans.get(key) {
        Some(Entry::Plan {
            plan,
            workspace,
            handle,
        }) => (*plan, *workspace, *handle),
        _ => {
            return Err(Error::Backend {
                op,
                message: "plan not prepared".into(),
            });
        }
    };
    let stream = dev.cuda_stream();
    if need > 0 && state.workspace.as_ref().is_none_or(|w| w.len() < need) {
        // Memory allocated while a CUDA graph is being captured belongs to the graph:
        // a workspace that outlives the call cannot be made there (the capture's
        // eager warm-up call grows it first).
        if capturing(&stream) {
            return Err(Error::Backend {
                op,
                message: format!(
                    "the cuDNN workspace would grow to {need} bytes during a CUDA graph capture"
                ),
            });
        }
        // Stream-ordered: the old workspace is freed after the work queued on it
        // (or later, by the last graph that holds it).
        state.workspace = None;
        // SAFETY: the workspace is scratch memory cuDNN writes before it reads.
        state.workspace = Some(Arc::new(unsafe { dev.alloc::<u8>(need) }?));
    }
    let mut err = [0 as c_char; 1024];
    let rc = match state.workspace.as_ref() {
        Some(ws) if need > 0 => {
            let (wp, _guard) = ws.device_ptr(&stream);
            // SAFETY: the plan was built on this handle (on this stream); every pointer is a live device
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
