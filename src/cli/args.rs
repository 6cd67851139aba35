//! Flag values shared by the subcommands.

use anyhow::Result;
use candle_core::{DType, Device};
use shoal_dist::DistributedState;

use super::UsageError;

/// Resolves `--dtype`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s.to_ascii_lowercase().as_str() {
        "f32" | "fp32" | "float32" => Ok(DType::F32),
        "f16" | "fp16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        _ => Err(UsageError(format!("invalid --dtype {s:?}: expected f32, f16 or bf16")).into()),
    }
}

/// Resolves `--device`.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "auto" => Ok(DistributedState::new()?.device()?),
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::new_cuda(0).map_err(|e| UsageError(format!("--device cuda: {e}")))?),
        _ => match s.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => Ok(Device::new_cuda(n).map_err(|e| UsageError(format!("--device {s}: {e}")))?),
            None => Err(UsageError(format!(
                "invalid --device {s:?}: expected auto, cpu, cuda or cuda:N"
            ))
            .into()),
        },
    }
}
