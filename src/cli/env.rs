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
    // The GPU features arrive with the GPU build (issue 4); the default build is CPU-only.
    vec!["cpu"]
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
