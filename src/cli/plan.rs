//! `shoal plan`: a device map for a model, without loading any weight; also
//! the resolution of `--device-map` for `shoal generate`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{DType, Device};
use clap::Args;
use shoal_diffusion::pipeline::ComponentDevices;
use shoal_plan::{Component, Dev, Plan, Strategy, format_bytes};

use super::UsageError;
use super::args::parse_dtype;

#[derive(Debug, Args)]
pub struct PlanCmd {
    /// A diffusers model folder (or, with --pipeline-parallel, a GPT-2 folder).
    #[arg(long)]
    model: PathBuf,
    /// Print the pipeline stages for N processes instead of a device map: each
    /// stage's blocks, weight bytes (in --dtype) and counted FLOPs.
    #[arg(long)]
    pipeline_parallel: Option<usize>,
    /// With --pipeline-parallel: `auto` or the first block of each later stage.
    #[arg(long, default_value = "auto")]
    split_points: String,
    /// balanced, sequential, or an explicit map such as unet=1,vae=1,text_encoder=0.
    #[arg(long, default_value = "balanced")]
    device_map: String,
    /// Per-device limits, e.g. 0=20GiB,1=20GiB,cpu=64GiB (devices not listed are not used;
    /// default: each GPU's free memory, no CPU).
    #[arg(long)]
    max_memory: Option<String>,
    /// Image height in pixels (sizes the activation allowance and the FLOPs).
    #[arg(long, default_value_t = 512)]
    height: usize,
    /// Image width in pixels.
    #[arg(long, default_value_t = 512)]
    width: usize,
    /// Images per call.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// The dtype the weights would be loaded in: f32, f16 or bf16.
    #[arg(long, default_value = "f16")]
    dtype: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Plans a device map for `model`; every input error is a usage error naming the value.
pub fn make_plan(
    model: &Path,
    map: &str,
    max_memory: Option<&str>,
    dtype: DType,
    (height, width, batch): (usize, usize, usize),
) -> Result<Plan> {
    let strategy: Strategy = map
        .parse()
        .map_err(|e: shoal_plan::PlanError| UsageError(e.to_string()))?;
    let capacity: Vec<(Dev, u64)> = match max_memory {
        Some(m) => shoal_plan::parse_max_memory(m).map_err(|e| UsageError(format!("--max-memory: {e}")))?,
        None => shoal_dist::cuda_memory()
            .into_iter()
            .map(|(i, free, _)| (Dev::Gpu(i), free))
            .collect(),
    };
    let visible = shoal_dist::cuda_device_count();
    if let Some((d, _)) = capacity
        .iter()
        .find(|(d, _)| max_memory.is_some() && visible > 0 && matches!(d, Dev::Gpu(i) if *i >= visible))
    {
        return Err(UsageError(format!(
            "--max-memory lists GPU {d}, but {visible} GPU(s) are visible"
        ))
        .into());
    }
    let sizes = shoal_diffusion::sizes::component_sizes(model, dtype, height, width, batch)?;
    let components: Vec<Component> = sizes
        .into_iter()
        .map(|c| Component {
            name: c.name,
            weights: c.weights,
            activations: c.activations,
        })
        .collect();
    Ok(shoal_plan::plan(&components, &capacity, &strategy).map_err(|e| UsageError(e.to_string()))?)
}

/// Where a pipeline's components go, from the placement flags: the one rule
/// set of `shoal_engine::placement::resolve`, then the device map planned
/// from the model's sizes (`generate` and `bench` both come here).
pub fn placement(
    flags: &shoal_engine::placement::PlacementFlags,
    world: usize,
    model: &std::path::Path,
    device: &Device,
    dtype: candle_core::DType,
    size: (usize, usize, usize),
) -> Result<shoal_diffusion::pipeline::Placement> {
    use shoal_diffusion::pipeline::Placement;
    use shoal_engine::placement::Choice;
    let choice = shoal_engine::placement::resolve(flags, world)?;
    if device.is_cpu()
        && let Some(mode) = match choice {
            Choice::OffloadModel => Some("model"),
            Choice::OffloadSequential => Some("sequential"),
            _ => None,
        }
    {
        tracing::info!(
            "note: --offload {mode} does nothing here: the pipeline runs on the CPU, whose memory \
             is where offloading would keep the weights"
        );
        return Ok(Placement::Device(device.clone()));
    }
    Ok(match choice {
        Choice::Device => Placement::Device(device.clone()),
        Choice::OffloadModel => Placement::OffloadModel(device.clone()),
        Choice::OffloadSequential => Placement::OffloadSequential(device.clone()),
        Choice::Map { map, max_memory } => {
            let plan = make_plan(model, &map, max_memory.as_deref(), dtype, size)?;
            Placement::Map(devices_of(&plan)?)
        }
    })
}

/// Bytes the OS can give this process now (`MemAvailable`), `None` when unknown.
fn host_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses, before any work, a request whose activations cannot fit `device`
/// (the allowances of `shoal_diffusion::sizes`, attention fused or not as it
/// will run): a usage error naming the size, the component and both amounts.
/// Under a device map or offload the placement decides, not this check.
pub fn check_activations(
    model: &Path,
    device: &Device,
    dtype: DType,
    sizes: &[(usize, usize)],
    batch: usize,
) -> Result<()> {
    let available = match device {
        Device::Cuda(_) => match device.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => shoal_dist::cuda_memory()
                .into_iter()
                .find(|(i, _, _)| *i == gpu_id)
                .map(|(_, free, _)| free),
            _ => None,
        },
        _ => host_available(),
    };
    let Some(available) = available else {
        return Ok(());
    };
    let fused = shoal_diffusion::nn::fused_attention(device, dtype);
    let mut seen = std::collections::BTreeSet::new();
    for &(h, w) in sizes {
        if !seen.insert((h, w)) {
            continue;
        }
        let need = shoal_diffusion::sizes::component_sizes_for(model, dtype, h, w, batch, fused)?;
        if let Some(why) = shoal_diffusion::sizes::activation_shortfall(&need, available) {
            return Err(UsageError(format!(
                "{h}×{w} at batch {batch} cannot run on {device:?}: {why}; use a smaller --height/--width or --batch-size"
            ))
            .into());
        }
    }
    Ok(())
}

/// The candle devices of a plan.
pub fn devices_of(plan: &Plan) -> Result<ComponentDevices> {
    let dev = |name: &str| -> Result<Device> {
        Ok(match plan.map.get(name) {
            Some(Dev::Gpu(i)) => Device::new_cuda(*i)?,
            _ => Device::Cpu,
        })
    };
    Ok(ComponentDevices {
        text_encoder: dev("text_encoder")?,
        text_encoder_2: if plan.map.contains_key("text_encoder_2") {
            dev("text_encoder_2")?
        } else {
            dev("text_encoder")?
        },
        unet: dev("unet")?,
        vae: dev("vae")?,
    })
}

/// `shoal plan --pipeline-parallel N`: the stages of a UNet (diffusers folder)
/// or a GPT-2 (`config.json` with `model_type: gpt2`).
fn pipeline_plan(c: &PlanCmd, n: usize, dtype: DType) -> Result<()> {
    let gpt2 = !c.model.join("model_index.json").exists() && c.model.join("config.json").exists();
    let (what, blocks): (&str, Vec<shoal_pipe::BlockCost>) = if gpt2 {
        let cfg = shoal_lm::Gpt2Config::read(&c.model.join("config.json"))
            .map_err(|e| UsageError(e.to_string()))?;
        let names = shoal_lm::Gpt2::block_names(&cfg);
        let params = shoal_lm::Gpt2::block_params(&cfg);
        let flops = shoal_lm::Gpt2::block_flops(&cfg, c.batch_size, cfg.n_positions);
        let b = names
            .into_iter()
            .zip(params.into_iter().zip(flops))
            .map(|(name, (params, flops))| shoal_pipe::BlockCost { name, params, flops })
            .collect();
        ("GPT-2 (FLOPs of the matrix products at n_positions tokens)", b)
    } else {
        let costs = shoal_diffusion::sizes::unet_stage_costs(&c.model, c.height, c.width, c.batch_size)?;
        let b = costs
            .into_iter()
            .map(|(name, params, flops)| shoal_pipe::BlockCost { name, params, flops })
            .collect();
        (
            "UNet (FLOPs: 2 × parameters × latent pixels per call, guidance included)",
            b,
        )
    };
    let split = shoal_pipe::SplitPoints::parse(&c.split_points);
    let plan = shoal_pipe::plan_stages(&blocks, &split, n).map_err(|e| UsageError(e.to_string()))?;
    let size = if gpt2 {
        String::new()
    } else {
        format!("{}×{}, ", c.width, c.height)
    };
    println!(
        "pipeline of {n} stages, {what}, {size}batch {}, {dtype:?}:",
        c.batch_size
    );
    for (s, r) in plan.iter().enumerate() {
        let params: u64 = blocks[r.clone()].iter().map(|b| b.params).sum();
        let flops: f64 = blocks[r.clone()].iter().map(|b| b.flops).sum();
        println!(
            "  stage {s} (rank {s}): {} … {}: {} blocks, {}, {:.2} GFLOP",
            blocks[r.start].name,
            blocks[r.end - 1].name,
            r.len(),
            format_bytes(params * dtype.size_in_bytes() as u64),
            flops / 1e9
        );
    }
    Ok(())
}

pub fn run(c: PlanCmd) -> Result<()> {
    let dtype = parse_dtype(&c.dtype)?;
    if let Some(n) = c.pipeline_parallel {
        return pipeline_plan(&c, n, dtype);
    }
    let plan = make_plan(
        &c.model,
        &c.device_map,
        c.max_memory.as_deref(),
        dtype,
        (c.height, c.width, c.batch_size),
    )?;
    if c.json {
        let per_device: serde_json::Map<String, serde_json::Value> = plan
            .used
            .iter()
            .map(|(d, u)| {
                (
                    d.to_string(),
                    serde_json::json!({"used": u, "capacity": plan.capacity.get(d)}),
                )
            })
            .collect();
        let v = serde_json::json!({
            "device_map": plan.map.iter().map(|(k, d)| (k.clone(), d.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
            "per_device": per_device,
            "on_cpu": plan.on_cpu,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "device map ({}, {}×{}, batch {}, {:?}):",
        c.device_map, c.width, c.height, c.batch_size, dtype
    );
    for (comp, d) in &plan.map {
        println!("  {comp}: {d}");
    }
    println!("per device:");
    for (d, used) in &plan.used {
        match plan.capacity.get(d) {
            Some(cap) => println!("  {d}: {} of {}", format_bytes(*used), format_bytes(*cap)),
            None => println!("  {d}: {} (no budget given)", format_bytes(*used)),
        }
    }
    if !plan.on_cpu.is_empty() {
        println!("on the CPU (slow): {}", plan.on_cpu.join(", "));
    }
    Ok(())
}
