//! Where a run's GPU memory goes, phase by phase (`-v`): the high-water mark of
//! the device's stream-ordered allocations (candle's tensors, the graphs'
//! intermediates excepted) since the previous phase ended, and of the memory
//! the pool reserved from the driver for them. Memory that cuDNN, cuBLAS and
//! the kernel modules take outside that pool is not in it. Within a phase,
//! [`mark`] logs the peak since the previous mark (`-vv`).

#[cfg(feature = "cuda")]
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::Device;

/// The largest peaks [`mark`] took in the current phase (used, reserved), kept
/// for [`phase_done`].
#[cfg(feature = "cuda")]
static MARKED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

#[cfg(feature = "cuda")]
fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// Logs (at debug level) the peak of `device`'s allocations since the last call
/// for it, naming `phase`, and starts the next phase's count. Does nothing on the
/// CPU or when debug logging is off.
pub fn phase_done(phase: &str, device: &Device) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    #[cfg(feature = "cuda")]
    if let Device::Cuda(dev) = device
        && let Some((used, reserved)) = cuda::take_peak(dev)
    {
        let used = used.max(MARKED[0].swap(0, Ordering::Relaxed));
        let reserved = reserved.max(MARKED[1].swap(0, Ordering::Relaxed));
        tracing::debug!(
            "{phase}: device allocations peaked at {:.0} MiB (the pool reserved up to {:.0} MiB)",
            mib(used),
            mib(reserved)
        );
    }
    let _ = (phase, device);
}

/// Logs (at trace level) the peak of `device`'s allocations since the previous
/// mark or phase, naming the step `what` just ended; the phase's own figure
/// still covers the whole phase. Does nothing on the CPU or below trace level.
pub fn mark(what: impl FnOnce() -> String, device: &Device) {
    if !tracing::enabled!(tracing::Level::TRACE) {
        return;
    }
    #[cfg(feature = "cuda")]
    if let Device::Cuda(dev) = device
        && let Some((used, reserved)) = cuda::take_peak(dev)
    {
        MARKED[0].fetch_max(used, Ordering::Relaxed);
        MARKED[1].fetch_max(reserved, Ordering::Relaxed);
        tracing::trace!("{}: device allocations peaked at {:.0} MiB", what(), mib(used));
        return;
    }
    let _ = (what, device);
}

/// Waits for `device`'s queued work before a streamed part (sequential offload)
/// is built. The stream-ordered pool that holds candle's tensors returns the
/// memory its freed blocks held to the driver only at a synchronization (its
/// release threshold is 0), so without one the blocks freed by earlier parts
/// stay reserved through a whole phase: in session 9 the decode used at most
/// 304 MiB while the pool reserved up to 608, and the driver-view peak followed
/// the reserved one. Here the host already waits on the copy of each part's
/// weights (pageable memory), so the wait adds little. Nothing on the CPU.
pub fn settle(device: &Device) -> candle_core::Result<()> {
    match device {
        Device::Cuda(_) => device.synchronize(),
        _ => Ok(()),
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::CudaDevice;
    use candle_core::cuda_backend::cudarc::driver::sys;

    /// The default pool's `USED_MEM_HIGH` and `RESERVED_MEM_HIGH`, then reset to
    /// what is in use (reserved) now.
    pub(super) fn take_peak(dev: &CudaDevice) -> Option<(u64, u64)> {
        let d = dev.cuda_stream().context().cu_device();
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        // SAFETY: plain driver queries on a valid device and its default pool, with
        // out-pointers to values of the types the attributes are documented to use.
        unsafe {
            if sys::cuDeviceGetDefaultMemPool(&mut pool, d) != sys::CUresult::CUDA_SUCCESS {
                return None;
            }
            let take = |attr| {
                let mut high: u64 = 0;
                if sys::cuMemPoolGetAttribute(pool, attr, (&mut high as *mut u64).cast())
                    != sys::CUresult::CUDA_SUCCESS
                {
                    return None;
                }
                let mut zero: u64 = 0;
                let _ = sys::cuMemPoolSetAttribute(pool, attr, (&mut zero as *mut u64).cast());
                Some(high)
            };
            let used = take(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?;
            let reserved = take(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH)?;
            Some((used, reserved))
        }
    }
}
