//! `DistributedState`: the analog of accelerate's `PartialState`, without the
//! singleton. It is a value built once from the environment and passed by
//! reference; it never writes `std::env`.

use candle_core::Device;

use crate::device::{DeviceSpec, VisibleDevices, parse_cuda_visible_devices, select_device};
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
    pub fn new() -> Result<Self> {
        let env = DistEnv::from_process_env()?;
        let visible = parse_cuda_visible_devices(std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref());
        Ok(Self::from_parts(env, visible, cuda_device_count()))
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
    pub fn process_group(&self, backend: Backend, opts: GroupOptions) -> Result<ProcessGroup> {
        ProcessGroup::new(self.env.clone(), backend, opts)
    }
}

/// How many CUDA devices the driver reports; 0 in a build without CUDA.
fn cuda_device_count() -> usize {
    // The CUDA build (issue 4) asks the driver here; the CPU build has none.
    0
}
