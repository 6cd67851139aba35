//! The first CUDA start of a process: the driver JIT-compiles every PTX module
//! on its first load (candle's eleven, shoal's fused kernels), and candle loads
//! them one at a time, under a lock, as each op is first used — about 20 s
//! before the first image on a fresh machine (docs/PERFORMANCE.md). [`prewarm`]
//! loads the modules the pipeline uses on threads of their own at once, while
//! the weights load: the driver compiles them in parallel and keeps the
//! results in its compute cache (`~/.nv/ComputeCache`), where candle's own
//! loads then find them. `SHOAL_PREWARM=0` turns it off (for A/B timing).

use candle_core::Device;

/// Starts the background loads for `device` (nothing on the CPU, nothing twice).
pub fn prewarm(device: &Device) {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(dev) = device {
        cuda::start(dev);
    }
    #[cfg(not(feature = "cuda"))]
    let _ = device;
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::Once;

    use candle_core::cuda_backend::cudarc::nvrtc::Ptx;
    use candle_core::cuda_backend::kernels;

    static STARTED: Once = Once::new();

    pub(super) fn start(dev: &candle_core::CudaDevice) {
        if std::env::var("SHOAL_PREWARM").is_ok_and(|v| v == "0") {
            return;
        }
        STARTED.call_once(|| {
            let ctx = dev.cuda_stream().context().clone();
            // Quantized (GGUF) kernels are never used by the pipelines: not compiled.
            let mut modules: Vec<(&'static str, &'static str)> = vec![
                ("affine", kernels::AFFINE.ptx()),
                ("binary", kernels::BINARY.ptx()),
                ("cast", kernels::CAST.ptx()),
                ("conv", kernels::CONV.ptx()),
                ("fill", kernels::FILL.ptx()),
                ("indexing", kernels::INDEXING.ptx()),
                ("reduce", kernels::REDUCE.ptx()),
                ("sort", kernels::SORT.ptx()),
                ("ternary", kernels::TERNARY.ptx()),
                ("unary", kernels::UNARY.ptx()),
            ];
            #[cfg(feature = "fused")]
            modules.push(("shoal-fused", shoal_kernels::fused::ptx()));
            // The largest first, so the longest compile starts at once.
            modules.sort_by_key(|(_, p)| std::cmp::Reverse(p.len()));
            for (name, ptx) in modules {
                let ctx = ctx.clone();
                let _ = std::thread::Builder::new()
                    .name(format!("prewarm-{name}"))
                    .spawn(move || {
                        let t = std::time::Instant::now();
                        match ctx.load_module(Ptx::from_src(ptx)) {
                            Ok(_) => tracing::debug!(
                                "prewarm: {name} ({} kB of PTX) compiled in {:.2} s",
                                ptx.len() / 1000,
                                t.elapsed().as_secs_f64()
                            ),
                            Err(e) => tracing::debug!("prewarm: {name}: {e}"),
                        }
                    });
            }
        });
    }
}
