//! CUDA graphs for a model call that repeats with the same shapes (the UNet's
//! call in every denoising step): the call's kernels are recorded once and
//! replayed as one launch, so the host no longer issues each of its ~1000
//! kernels per step.
//!
//! A [`Graphs`] slot goes through three states per input shape:
//! 1. the first call runs eagerly with candle's host-to-device parameter cache on
//!    (`enable_cuda_graph_htod_cache`), which fills the cache with every small
//!    upload the call makes (strides of non-contiguous ops), grows the cuDNN
//!    workspace and builds every plan: nothing is allocated or uploaded for
//!    good while capturing;
//! 2. the second call copies its inputs into buffers the slot owns, records the
//!    call on candle's stream (stream capture, this thread only), writes its
//!    result into an output buffer the slot owns, and replays the graph once;
//! 3. every later call copies its inputs into those buffers, replays, and
//!    returns a copy of the output (so a scheduler that keeps earlier outputs,
//!    PNDM's, keeps its own).
//!
//! Every intermediate of the call is allocated and freed inside the graph
//! (stream-ordered allocation nodes), so replays reuse one fixed set of
//! addresses and the graph can be relaunched. A capture that fails (an op that
//! must talk to the host, a workspace that would grow) leaves capture mode,
//! warns once and runs that shape eagerly from then on: the result never
//! depends on whether a graph ran (the same kernels on the same data). One
//! shape is kept: a call with another shape drops the graph and starts over.
//!
//! Used only where the weights stay where they are for the model's life (a
//! resident UNet, not a streamed one) and not under `SHOAL_PROFILE` (whose
//! events time single ops).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Tensor};

static CAPTURED: AtomicU64 = AtomicU64::new(0);
static REPLAYED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

/// What the graphs of this process did, for `shoal bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GraphStats {
    /// Graphs recorded.
    pub captured: u64,
    /// Calls served by a replay (the capturing call's own launch included).
    pub replayed: u64,
    /// Captures that failed (those shapes ran eagerly).
    pub failed: u64,
}

/// The process's counts so far.
pub fn stats() -> GraphStats {
    GraphStats {
        captured: CAPTURED.load(Ordering::Relaxed),
        replayed: REPLAYED.load(Ordering::Relaxed),
        failed: FAILED.load(Ordering::Relaxed),
    }
}

/// Whether a model built for `device` with these properties records its calls
/// as CUDA graphs: a CUDA device, the fast kernels, weights that stay in place,
/// no per-op profile, and not turned off (`SHOAL_CUDA_GRAPHS=0`, parsed by the
/// caller into `setting`).
pub fn wanted(cuda: bool, fast_kernels: bool, resident: bool, profiling: bool, setting: bool) -> bool {
    cfg!(feature = "cuda") && cuda && fast_kernels && resident && !profiling && setting
}

/// The shapes and dtypes of a call's inputs: one graph per key.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
type Key = Vec<(Vec<usize>, DType)>;

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn key_of(inputs: &[&Tensor]) -> Key {
    inputs.iter().map(|t| (t.dims().to_vec(), t.dtype())).collect()
}

/// One model's graph slot (see the module's documentation).
#[derive(Default)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub struct Graphs {
    slot: Mutex<Option<Slot>>,
}

impl std::fmt::Debug for Graphs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Graphs")
    }
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct Slot {
    key: Key,
    state: State,
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
enum State {
    /// One eager call made (the warm-up); its output's shape and dtype.
    Warm(Vec<usize>, DType),
    #[cfg(feature = "cuda")]
    Ready(cuda::Captured),
    /// The capture failed: this shape runs eagerly.
    Eager,
}

impl Graphs {
    /// A slot with nothing recorded.
    pub fn new() -> Graphs {
        Graphs::default()
    }

    /// `f(inputs)`, eagerly or through the slot's graph (see the module's
    /// documentation). `f` must compute its result from `inputs` and from
    /// tensors that live as long as the model (its weights) alone, launching
    /// the same work for the same shapes.
    pub fn run<E>(&self, inputs: &[&Tensor], f: &dyn Fn(&[Tensor]) -> Result<Tensor, E>) -> Result<Tensor, E>
    where
        E: From<candle_core::Error> + std::fmt::Display,
    {
        let owned = || inputs.iter().map(|t| (*t).clone()).collect::<Vec<_>>();
        #[cfg(feature = "cuda")]
        {
            let Some(candle_core::Device::Cuda(dev)) = inputs.first().map(|t| t.device()) else {
                return f(&owned());
            };
            #[cfg(feature = "cudnn")]
            if shoal_kernels::cudnn::discovering() {
                return f(&owned());
            }
            use candle_core::backend::BackendDevice;
            let key = key_of(inputs);
            let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
            if slot.as_ref().is_none_or(|s| s.key != key) {
                // A new shape: the old graph goes (after its last replay has run).
                if let Some(old) = slot.take()
                    && matches!(old.state, State::Ready(_))
                {
                    dev.synchronize()?;
                    drop(old);
                    cuda::trim(dev);
                }
                let _cache = dev.enable_cuda_graph_htod_cache();
                let y = f(&owned())?;
                *slot = Some(Slot {
                    key,
                    state: State::Warm(y.dims().to_vec(), y.dtype()),
                });
                return Ok(y);
            }
            let Some(s) = slot.as_mut() else {
                return f(&owned());
            };
            if let State::Warm(dims, dtype) = &s.state {
                let t0 = std::time::Instant::now();
                match cuda::Captured::record(dev, inputs, dims, *dtype, f) {
                    Ok(c) => {
                        CAPTURED.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            "CUDA graph recorded for inputs {:?} in {:.1} ms",
                            s.key,
                            t0.elapsed().as_secs_f64() * 1e3
                        );
                        s.state = State::Ready(c);
                    }
                    Err(e) => {
                        FAILED.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            "CUDA graph capture failed for inputs {:?} ({e}); running them op by op",
                            s.key
                        );
                        s.state = State::Eager;
                    }
                }
            }
            match &s.state {
                State::Ready(c) => {
                    REPLAYED.fetch_add(1, Ordering::Relaxed);
                    Ok(c.replay(inputs)?)
                }
                _ => f(&owned()),
            }
        }
        #[cfg(not(feature = "cuda"))]
        {
            f(&owned())
        }
    }
}

/// Seconds per call of `f` as a CUDA graph runs it (for `shoal bench ops
/// --graphs`): one eager call with the host-to-device cache on (plans built,
/// workspace grown), then `iters` calls recorded as one graph, replayed once to
/// warm it and once timed. GPU time without the host's launch cost, as the
/// model's UNet call runs its ops. An error where the device is not CUDA, the
/// build has no CUDA, or the calls cannot be recorded (the message says why).
pub fn seconds_per_call_in_graph(
    device: &candle_core::Device,
    iters: usize,
    f: &mut dyn FnMut() -> candle_core::Result<()>,
) -> Result<f64, String> {
    #[cfg(feature = "cuda")]
    {
        let candle_core::Device::Cuda(dev) = device else {
            return Err("CUDA graphs need a CUDA device".into());
        };
        cuda::seconds_per_call(dev, iters, f)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (device, iters, f);
        Err("this build has no CUDA".into())
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendDevice;
    use candle_core::cuda_backend::CudaDevice;
    use candle_core::cuda_backend::cudarc::driver::{CudaGraph, sys};
    use candle_core::{DType, Device, Tensor};

    /// A recorded call: the graph and the buffers its nodes read and write.
    pub(super) struct Captured {
        graph: CudaGraph,
        /// The buffers the graph reads its inputs from.
        inputs: Vec<Tensor>,
        /// The buffer the graph writes its result into.
        out: Tensor,
        /// Memory the graph's nodes use that other code may replace (the cuDNN
        /// workspace): held so that it outlives the graph.
        #[cfg(feature = "cudnn")]
        _workspace: Option<std::sync::Arc<candle_core::cuda_backend::cudarc::driver::CudaSlice<u8>>>,
    }

    // SAFETY: a graph exec may be launched from any thread as long as no two
    // threads use it at once (CUDA's rule for graph objects); a `Captured` is only
    // reached through its slot's mutex.
    unsafe impl Send for Captured {}

    /// Gives the memory of graphs destroyed so far back to the driver (a graph's
    /// intermediates live in a pool of their own, kept until trimmed).
    pub(super) fn trim(dev: &CudaDevice) {
        let d = dev.cuda_stream().context().cu_device();
        // SAFETY: a plain driver call on a valid device; nothing is in flight on the
        // destroyed graphs (the stream was synchronized before they were dropped).
        let r = unsafe { sys::cuDeviceGraphMemTrim(d) };
        if r != sys::CUresult::CUDA_SUCCESS {
            tracing::debug!("cuDeviceGraphMemTrim: {r:?}");
        }
    }

    /// Records what `body` launches on `dev`'s stream (this thread only) as a
    /// graph, with candle's host-to-device cache on (the caller's eager call
    /// filled it): the device is synchronized first and an error an earlier call
    /// left behind is cleared, so an error here is the capture's own.
    fn capture(dev: &CudaDevice, body: &mut dyn FnMut() -> Result<(), String>) -> Result<CudaGraph, String> {
        dev.synchronize().map_err(|e| e.to_string())?;
        let _ = dev.cuda_stream().context().check_err();
        let _cache = dev.enable_cuda_graph_htod_cache();
        let stream = dev.cuda_stream();
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| format!("begin capture: {e:?}"))?;
        let done = body();
        let ended = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        done?;
        let graph = ended
            .map_err(|e| format!("end capture: {e:?}"))?
            .ok_or_else(|| "the capture recorded nothing".to_string())?;
        stream
            .context()
            .check_err()
            .map_err(|e| format!("during the capture: {e:?}"))?;
        Ok(graph)
    }

    /// See [`super::seconds_per_call_in_graph`].
    pub(super) fn seconds_per_call(
        dev: &CudaDevice,
        iters: usize,
        f: &mut dyn FnMut() -> candle_core::Result<()>,
    ) -> Result<f64, String> {
        let cerr = |e: candle_core::Error| e.to_string();
        {
            let _cache = dev.enable_cuda_graph_htod_cache();
            f().map_err(cerr)?;
        }
        let graph = capture(dev, &mut || (0..iters).try_for_each(|_| f()).map_err(cerr))?;
        graph.upload().map_err(|e| format!("upload: {e:?}"))?;
        graph.launch().map_err(|e| format!("launch: {e:?}"))?;
        dev.synchronize().map_err(cerr)?;
        let t = std::time::Instant::now();
        graph.launch().map_err(|e| format!("launch: {e:?}"))?;
        dev.synchronize().map_err(cerr)?;
        let s = t.elapsed().as_secs_f64() / iters.max(1) as f64;
        drop(graph);
        trim(dev);
        Ok(s)
    }

    impl Captured {
        /// Records `f` over copies of `inputs` (see the module's documentation)
        /// and launches the graph once, so that the output buffer holds this
        /// call's result.
        pub(super) fn record<E>(
            dev: &CudaDevice,
            inputs: &[&Tensor],
            dims: &[usize],
            dtype: DType,
            f: &dyn Fn(&[Tensor]) -> Result<Tensor, E>,
        ) -> Result<Captured, String>
        where
            E: std::fmt::Display,
        {
            let cerr = |e: candle_core::Error| e.to_string();
            let device = Device::Cuda(dev.clone());
            // Allocated before the capture: buffers that outlive the graph.
            let statics = inputs
                .iter()
                .map(|t| t.contiguous().and_then(|t| t.copy()))
                .collect::<candle_core::Result<Vec<_>>>()
                .map_err(cerr)?;
            let out = Tensor::zeros(dims, dtype, &device).map_err(cerr)?;
            let graph = capture(dev, &mut || {
                let y = f(&statics).map_err(|e| e.to_string())?;
                let y = y.contiguous().map_err(cerr)?;
                if y.dims() != dims || y.dtype() != dtype {
                    return Err(format!(
                        "the call gave {:?} {:?} where the warm-up gave {dims:?} {dtype:?}",
                        y.dims(),
                        y.dtype()
                    ));
                }
                out.slice_set(&y, 0, 0).map_err(cerr)
                // `y` and every intermediate are freed here, inside the graph.
            })?;
            let c = Captured {
                graph,
                inputs: statics,
                out,
                #[cfg(feature = "cudnn")]
                _workspace: shoal_kernels::cudnn::workspace(dev),
            };
            c.graph.upload().map_err(|e| format!("upload: {e:?}"))?;
            c.graph.launch().map_err(|e| format!("launch: {e:?}"))?;
            Ok(c)
        }

        /// Copies `inputs` into the graph's buffers, replays it and returns a
        /// copy of its output.
        pub(super) fn replay(&self, inputs: &[&Tensor]) -> candle_core::Result<Tensor> {
            for (dst, src) in self.inputs.iter().zip(inputs) {
                dst.slice_set(&src.contiguous()?, 0, 0)?;
            }
            self.graph
                .launch()
                .map_err(|e| candle_core::Error::Msg(format!("CUDA graph launch: {e:?}")))?;
            self.out.copy()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn graphs_only_where_every_condition_holds() {
        let cuda_built = cfg!(feature = "cuda");
        assert_eq!(wanted(true, true, true, false, true), cuda_built);
        for off in [
            wanted(false, true, true, false, true),
            wanted(true, false, true, false, true),
            wanted(true, true, false, false, true),
            wanted(true, true, true, true, true),
            wanted(true, true, true, false, false),
        ] {
            assert!(!off);
        }
    }

    #[test]
    fn on_the_cpu_every_call_runs_the_function() -> candle_core::Result<()> {
        let g = Graphs::new();
        let x = Tensor::arange(0f32, 6., &Device::Cpu)?.reshape((2, 3))?;
        let f = |i: &[Tensor]| -> candle_core::Result<Tensor> { (&i[0] * 2.0)? + 1.0 };
        for k in 0..3 {
            let y = g.run(&[&(&x + k as f64)?], &f)?;
            let want: Vec<f32> = (0..6).map(|v| (v + k) as f32 * 2.0 + 1.0).collect();
            assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, want);
        }
        Ok(())
    }

    #[test]
    fn a_graph_timing_on_the_cpu_is_refused_without_calling() {
        let mut calls = 0;
        let r = seconds_per_call_in_graph(&Device::Cpu, 3, &mut || {
            calls += 1;
            Ok(())
        });
        let e = r.expect_err("no CUDA graph on the CPU");
        assert!(e.contains("CUDA"), "{e}");
        assert_eq!(calls, 0);
    }
}
