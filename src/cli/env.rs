//! `shoal env`: what this build and this process see.

use anyhow::Result;
use clap::Args;
use shoal_dist::{DistEnv, DistributedState};

#[derive(Debug, Args)]
pub struct EnvCmd {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// The cargo features this binary was built with.
pub fn features() -> Vec<&'static str> {
    let mut f = vec!["cpu"];
    for (on, name) in [
        (cfg!(feature = "cuda"), "cuda"),
        (cfg!(feature = "nccl"), "nccl"),
        (cfg!(feature = "cudnn"), "cudnn"),
        (cfg!(feature = "fused"), "fused"),
        (cfg!(feature = "gemm"), "gemm"),
        (cfg!(feature = "sass"), "sass"),
    ] {
        if on {
            f.push(name);
        }
    }
    f
}

/// What loading kernels cost this process so far: modules from SASS or the driver's
/// JIT (feature `sass`), cuDNN plans and their build time (feature `cudnn`), the
/// UNet's CUDA graphs.
pub fn kernel_load_report() -> Vec<String> {
    let mut lines = Vec::new();
    #[cfg(feature = "sass")]
    {
        let (handed, missed) = shoal_kernels::sass::report();
        lines.push(format!(
            "kernel modules loaded as SASS: {handed}; JIT-compiled from PTX: {}",
            if missed.is_empty() {
                "none".to_string()
            } else {
                missed.join(", ")
            }
        ));
    }
    #[cfg(feature = "cudnn")]
    {
        let s = shoal_kernels::cudnn::build_stats();
        if !s.per_op.is_empty() {
            let n: usize = s.per_op.iter().map(|o| o.1).sum();
            let secs: f64 = s.per_op.iter().map(|o| o.2).sum();
            let per: Vec<String> = s
                .per_op
                .iter()
                .map(|(op, k, t)| format!("{op} {k} in {t:.2} s"))
                .collect();
            lines.push(format!(
                "cuDNN: {n} plan(s) built in {secs:.2} s ({}), {} compiling kernels at run time; handle {:.2} s",
                per.join(", "),
                s.runtime_compiled,
                s.handle_s
            ));
        }
    }
    let g = shoal_diffusion::nn::graph::stats();
    if g.captured + g.failed > 0 {
        lines.push(format!(
            "CUDA graphs of the UNet call: {} recorded, {} calls replayed, {} captures failed (those shapes ran op by op)",
            g.captured, g.replayed, g.failed
        ));
    }
    lines
}

/// The kernel images this build embeds, in words (feature `sass`).
pub fn kernel_images() -> Option<String> {
    #[cfg(feature = "sass")]
    {
        let n = shoal_kernels::sass::install();
        return Some(format!(
            "{n} kernel module(s) as SASS for sm_{} (others JIT-compiled from PTX)",
            shoal_kernels::sass::arch()
        ));
    }
    #[allow(unreachable_code, reason = "the return above exists only with feature sass")]
    None
}

pub fn run(c: EnvCmd) -> Result<()> {
    let detected: std::result::Result<DistEnv, String> =
        DistEnv::from_process_env().map_err(|e| e.to_string());
    let device = DistributedState::new()
        .map(|s| s.device_spec().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let host = shoal_launch::hostname();
    if c.json {
        let v = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "features": features(),
            "kernel_images": kernel_images(),
            "host": host,
            "device": device,
            "cuda_visible_devices": std::env::var("CUDA_VISIBLE_DEVICES").ok(),
            "launcher": match &detected { Ok(e) => serde_json::to_value(e)?, Err(e) => serde_json::json!({"error": e}) },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("shoal {}", env!("CARGO_PKG_VERSION"));
    println!("features: {}", features().join(", "));
    if let Some(k) = kernel_images() {
        println!("kernels: {k}");
    }
    println!("host: {host}");
    println!("device: {device}");
    println!(
        "CUDA_VISIBLE_DEVICES: {}",
        std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_else(|_| "(unset: all)".into())
    );
    match detected {
        Ok(e) => println!(
            "launcher: {:?}, rank {}/{}, local rank {}/{}, machine {}, store {}{}",
            e.launcher,
            e.rank,
            e.world_size,
            e.local_rank,
            e.local_world_size,
            e.node_rank,
            e.store_addr(),
            if e.store_hosted {
                " (hosted by the launcher)"
            } else {
                ""
            }
        ),
        Err(e) => println!("launcher: error: {e}"),
    }
    Ok(())
}
