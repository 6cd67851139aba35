//! shoal's distributed runtime: launcher detection, `split_between_processes`,
//! the TCP rendezvous store and process groups.
//!
//! The analog of accelerate's `PartialState` and of `torch.distributed`:
//! decisions (detection, splitting, device choice) are pure functions of
//! explicit inputs; only thin edges read `std::env`, open sockets or query
//! devices. See `docs/ARCHITECTURE.md`.

mod comm;
mod device;
mod env;
mod error;
mod group;
mod hostlist;
#[cfg(feature = "nccl")]
mod nccl;
mod options;
mod progress;
mod secret;
mod split;
mod state;
mod store;
mod wire;

pub use comm::{Communicator, ReduceOp, StoreComm};
pub use device::{DeviceSpec, VisibleDevices, cuda_device_count, parse_cuda_visible_devices, select_device};
pub use env::{
    DEFAULT_MASTER_PORT, DistEnv, EnvNames, Launcher, MVAPICH, OPEN_MPI, PMI, SHOAL_RUN_ID, SHOAL_STORE_ADDR,
    SHOAL_STORE_PORT, SLURM, TORCHRUN, resolve_store,
};
pub use error::{Error, Result};
pub use group::{
    Backend, DEFAULT_TIMEOUT, GroupOptions, ProcessGroup, SHOAL_TIMEOUT, explicit_env, init_process_group,
};
pub use hostlist::{expand_hostlist, expand_tasks_per_node};
pub use progress::{PROGRESS_PREFIX, Report, SHOAL_PROGRESS, reporting_to_launcher};
pub use secret::{SHOAL_STORE_TOKEN, Secret};
pub use split::{
    Split, Splittable, TensorSplit, padded_len, split_between_processes, split_indices, split_range,
};
pub use state::{DistributedState, MemoryPeak, check_gpu_sharing, cuda_memory};
pub use store::{StoreClient, StoreServer};
