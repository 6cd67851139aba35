//! Which device a process uses: `LOCAL_RANK % visible GPUs`, as accelerate.
//!
//! `CUDA_VISIBLE_DEVICES` follows the CUDA programming guide's rules (unset =
//! all, empty = none, parsing stops at the first invalid entry); see
//! `shared/notes/semantics.md` §6. The decision is a pure function; only the
//! CUDA build asks the driver how many GPUs exist, at the edge.

use candle_core::Device;

use crate::env::DistEnv;
use crate::error::{Error, Result};

/// The device of one process, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeviceSpec {
    /// The host CPU.
    Cpu,
    /// A CUDA device by ordinal (within `CUDA_VISIBLE_DEVICES`).
    Cuda(usize),
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// What `CUDA_VISIBLE_DEVICES` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VisibleDevices {
    /// Unset: every GPU the driver has.
    All,
    /// These entries, in ordinal order (indices, `GPU-<uuid>`, `MIG-...`).
    List(Vec<String>),
}

/// Parses `CUDA_VISIBLE_DEVICES`; like CUDA, stops at the first invalid entry
/// (`0,2,-1,1` gives `0, 2`).
///
/// ```
/// use shoal_dist::{parse_cuda_visible_devices, VisibleDevices};
/// assert_eq!(parse_cuda_visible_devices(None), VisibleDevices::All);
/// assert_eq!(parse_cuda_visible_devices(Some("0,2,-1,1")), VisibleDevices::List(vec!["0".into(), "2".into()]));
/// ```
pub fn parse_cuda_visible_devices(v: Option<&str>) -> VisibleDevices {
    let Some(v) = v else { return VisibleDevices::All };
    let mut out = Vec::new();
    for e in v.split(',').map(str::trim) {
        let valid = (!e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()))
            || e.starts_with("GPU-")
            || e.starts_with("MIG-");
        if !valid {
            break;
        }
        out.push(e.to_string());
    }
    VisibleDevices::List(out)
}

/// The device of a process: CPU without CUDA or without visible GPUs, else
/// `local_rank % visible`.
pub fn select_device(local_rank: usize, visible: usize, cuda_built: bool) -> DeviceSpec {
    if !cuda_built || visible == 0 {
        DeviceSpec::Cpu
    } else {
        DeviceSpec::Cuda(local_rank % visible)
    }
}

/// How many CUDA devices the driver reports; 0 in a build without CUDA or
/// on a machine without a driver.
pub fn cuda_device_count() -> usize {
    #[cfg(feature = "cuda")]
    {
        candle_core::cuda_backend::cudarc::driver::CudaContext::device_count()
            .map(|n| n.max(0) as usize)
            .unwrap_or(0)
    }
    #[cfg(not(feature = "cuda"))]
    {
        0
    }
}

/// The CUDA device of this process for the NCCL backend: local rank modulo
/// the visible GPUs.
pub(crate) fn local_cuda_device(env: &DistEnv) -> Result<Device> {
    let n = cuda_device_count();
    if n == 0 {
        return Err(Error::Backend {
            backend: "nccl".into(),
            detail: format!("rank {}/{}: no CUDA device is visible", env.rank, env.world_size),
        });
    }
    Ok(Device::new_cuda(env.local_rank % n)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_devices_rules() {
        assert_eq!(parse_cuda_visible_devices(Some("")), VisibleDevices::List(vec![]));
        assert_eq!(
            parse_cuda_visible_devices(Some("GPU-abc,1")),
            VisibleDevices::List(vec!["GPU-abc".into(), "1".into()])
        );
        assert_eq!(
            parse_cuda_visible_devices(Some("x,1")),
            VisibleDevices::List(vec![])
        );
    }

    #[test]
    fn device_is_local_rank_modulo_visible() {
        assert_eq!(select_device(3, 2, true), DeviceSpec::Cuda(1));
        assert_eq!(select_device(3, 0, true), DeviceSpec::Cpu);
        assert_eq!(select_device(1, 8, false), DeviceSpec::Cpu);
    }
}
