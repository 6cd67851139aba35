//! Where a run's GPU memory goes, phase by phase (`-v`): the high-water mark of
//! the device's stream-ordered allocations (candle's tensors, the graphs'
//! intermediates excepted) since the previous phase ended. Memory that cuDNN,
//! cuBLAS and the kernel modules take outside that pool is not in it.

use candle_core::Device;

/// Logs (at debug level) the peak of `device`'s allocations since the last call
/// for it, naming `phase`, and starts the next phase's count. Does nothing on the
/// CPU or when debug logging is off.
pub fn phase_done(phase: &str, device: &Device) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    #[cfg(feature = "cuda")]
    if let Device::Cuda(dev) = device
        && let Some(peak) = cuda::take_peak(dev)
    {
        tracing::debug!(
            "{phase}: device allocations peaked at {:.0} MiB",
            peak as f64 / (1u64 << 20) as f64
        );
    }
    let _ = (phase, device);
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::CudaDevice;
    use candle_core::cuda_backend::cudarc::driver::sys;

    /// The default pool's `USED_MEM_HIGH`, then reset to what is in use now.
    pub(super) fn take_peak(dev: &CudaDevice) -> Option<u64> {
        let d = dev.cuda_stream().context().cu_device();
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        // SAFETY: plain driver queries on a valid device and its default pool, with
        // out-pointers to values of the types the attributes are documented to use.
        unsafe {
            if sys::cuDeviceGetDefaultMemPool(&mut pool, d) != sys::CUresult::CUDA_SUCCESS {
                return None;
            }
            let mut high: u64 = 0;
            let attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH;
            if sys::cuMemPoolGetAttribute(pool, attr, (&mut high as *mut u64).cast())
                != sys::CUresult::CUDA_SUCCESS
            {
                return None;
            }
            let mut zero: u64 = 0;
            let _ = sys::cuMemPoolSetAttribute(pool, attr, (&mut zero as *mut u64).cast());
            Some(high)
        }
    }
}
