//! `DistributedState`: the analog of accelerate's `PartialState`, without the
//! singleton. It is a value built once from the environment and passed by
//! reference; it never writes `std::env`.

use candle_core::Device;

use crate::device::{
    DeviceSpec, VisibleDevices, cuda_device_count, parse_cuda_visible_devices, select_device,
};
use crate::env::DistEnv;
use crate::error::{Error, Result};
use crate::group::{Backend, GroupOptions, ProcessGroup};
use crate::split::Splittable;

/// Where this process sits and which device it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistributedState {
    env: DistEnv,
    device: DeviceSpec,
}

impl DistributedState {
    /// Detects the launcher from the environment (no arguments, like
    /// `PartialState()`); a partial or contradictory environment is an error.
    ///
    /// With CUDA, more processes on a machine than visible GPUs is an error
    /// unless `SHOAL_ALLOW_GPU_SHARING=1` asks for it.
    pub fn new() -> Result<Self> {
        let env = DistEnv::from_process_env()?;
        let visible = parse_cuda_visible_devices(std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref());
        let gpus = cuda_device_count();
        let allow = std::env::var("SHOAL_ALLOW_GPU_SHARING").is_ok_and(|v| v == "1");
        check_gpu_sharing(env.local_world_size, gpus, allow)?;
        Ok(Self::from_parts(env, visible, gpus))
    }

    /// Builds the state from explicit inputs (pure): the environment, what
    /// `CUDA_VISIBLE_DEVICES` says and how many GPUs the driver reports.
    pub fn from_parts(env: DistEnv, visible: VisibleDevices, driver_gpus: usize) -> Self {
        let count = match visible {
            VisibleDevices::All => driver_gpus,
            VisibleDevices::List(l) => l.len().min(driver_gpus),
        };
        let device = select_device(env.local_rank, count, driver_gpus > 0);
        DistributedState { env, device }
    }

    /// The environment facts.
    pub fn env(&self) -> &DistEnv {
        &self.env
    }

    /// Global rank.
    pub fn process_index(&self) -> usize {
        self.env.rank
    }

    /// Rank on this machine.
    pub fn local_process_index(&self) -> usize {
        self.env.local_rank
    }

    /// Number of processes.
    pub fn num_processes(&self) -> usize {
        self.env.world_size
    }

    /// Whether this is rank 0.
    pub fn is_main_process(&self) -> bool {
        self.env.is_main_process()
    }

    /// Whether this is the first process on its machine.
    pub fn is_local_main_process(&self) -> bool {
        self.env.is_local_main_process()
    }

    /// Whether this is the last process.
    pub fn is_last_process(&self) -> bool {
        self.env.is_last_process()
    }

    /// This process's device, as data.
    pub fn device_spec(&self) -> DeviceSpec {
        self.device
    }

    /// This process's device, as a candle device.
    pub fn device(&self) -> Result<Device> {
        match self.device {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(i) => Device::new_cuda(i).map_err(Error::from),
        }
    }

    /// This process's share of `items` (see [`crate::split_between_processes`]).
    pub fn split_between_processes<S: Splittable + ?Sized>(
        &self,
        items: &S,
        apply_padding: bool,
    ) -> Result<S::Output> {
        items.split_for(self.env.rank, self.env.world_size, apply_padding)
    }

    /// The scoped form, as the seed's `with state.split_between_processes(...) as part:`.
    ///
    /// ```
    /// let state = shoal_dist::DistributedState::from_parts(
    ///     shoal_dist::DistEnv::single(), shoal_dist::VisibleDevices::All, 0);
    /// let n = state.with_split(&["a dog", "a cat"][..], false, |part| part.items.len()).unwrap();
    /// assert_eq!(n, 2);
    /// ```
    pub fn with_split<S: Splittable + ?Sized, R>(
        &self,
        items: &S,
        apply_padding: bool,
        f: impl FnOnce(S::Output) -> R,
    ) -> Result<R> {
        Ok(f(self.split_between_processes(items, apply_padding)?))
    }

    /// Joins the process group of this job.
    /// For NCCL the group runs on this process's device ([`DistributedState::device`]).
    pub fn process_group(&self, backend: Backend, opts: GroupOptions) -> Result<ProcessGroup> {
        let device = match backend {
            Backend::Nccl => Some(self.device()?),
            Backend::Cpu => None,
        };
        ProcessGroup::with_device(self.env.clone(), backend, opts, device)
    }
}

/// More local processes than GPUs would put two ranks on one GPU (NCCL then
/// fails with "Duplicate GPU detected"); refuse unless asked for.
pub fn check_gpu_sharing(local_world: usize, gpus: usize, allow: bool) -> Result<()> {
    if gpus > 0 && local_world > gpus && !allow {
        return Err(Error::InvalidArgument {
            field: "LOCAL_WORLD_SIZE",
            value: local_world.to_string(),
            detail: format!(
                "{local_world} processes on this machine but {gpus} visible GPU(s); \
                 launch at most one process per GPU, or set SHOAL_ALLOW_GPU_SHARING=1 to share"
            ),
        });
    }
    Ok(())
}

/// Free and total memory of every visible CUDA device, `(ordinal, free, total)`;
/// empty without CUDA. Creates a context on each GPU (the edge of the planner).
pub fn cuda_memory() -> Vec<(usize, u64, u64)> {
    #[cfg(feature = "cuda")]
    {
        (0..cuda_device_count())
            .filter_map(|i| {
                let ctx = candle_core::cuda_backend::cudarc::driver::CudaContext::new(i).ok()?;
                let (free, total) = ctx.mem_get_info().ok()?;
                Some((i, free as u64, total as u64))
            })
            .collect()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Vec::new()
    }
}

/// Samples every visible GPU's used memory (driver view: total − free, so
/// CUDA contexts and allocator caches count) from a thread until stopped.
pub struct MemoryPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<(usize, u64, u64)>>>,
}

impl MemoryPeak {
    /// Starts sampling every `every`; a build without CUDA samples nothing.
    pub fn start(every: std::time::Duration) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        #[cfg(feature = "cuda")]
        let handle = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("shoal-mem-peak".into())
                .spawn(move || {
                    use candle_core::cuda_backend::cudarc::driver::CudaContext;
                    let ctxs: Vec<_> = (0..cuda_device_count())
                        .filter_map(|i| CudaContext::new(i).ok())
                        .collect();
                    let used = |c: &std::sync::Arc<CudaContext>| {
                        c.mem_get_info().map(|(f, t)| (t - f) as u64).unwrap_or(0)
                    };
                    let base: Vec<u64> = ctxs.iter().map(used).collect();
                    let mut peak = base.clone();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        for (p, c) in peak.iter_mut().zip(&ctxs) {
                            *p = (*p).max(used(c));
                        }
                        std::thread::sleep(every);
                    }
                    base.into_iter()
                        .zip(peak)
                        .enumerate()
                        .map(|(i, (b, p))| (i, b, p))
                        .collect()
                })
                .ok()
        };
        #[cfg(not(feature = "cuda"))]
        let handle = {
            let _ = every;
            None
        };
        MemoryPeak { stop, handle }
    }

    /// Stops and returns `(gpu, used at start, peak used)` in bytes per GPU.
    pub fn finish(mut self) -> Vec<(usize, u64, u64)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_processes_than_gpus_needs_consent() {
        assert!(check_gpu_sharing(2, 2, false).is_ok());
        assert!(check_gpu_sharing(4, 0, false).is_ok());
        assert!(
            check_gpu_sharing(3, 2, false)
                .unwrap_err()
                .to_string()
                .contains("SHOAL_ALLOW_GPU_SHARING")
        );
        assert!(check_gpu_sharing(3, 2, true).is_ok());
    }
}
