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

/// `SHOAL_CUDNN_PREBUILD`: threads that build a new batch shape's cuDNN plans
/// ahead of its first call (`LoadOptions::plan_threads`): `0` off (each plan
/// built on its first use), a number from 1 to 64, or `auto` (the cores, at
/// most 16: the default, also when unset or empty). `var` reads the environment.
pub fn plan_threads(var: impl Fn(&str) -> Option<String>) -> Result<usize> {
    const VAR: &str = "SHOAL_CUDNN_PREBUILD";
    let auto = || {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(16)
    };
    let Some(v) = var(VAR) else { return Ok(auto()) };
    match v.trim() {
        "0" => Ok(0),
        "" | "auto" => Ok(auto()),
        n => match n.parse::<usize>() {
            Ok(k) if (1..=64).contains(&k) => Ok(k),
            _ => Err(UsageError(format!(
                "{VAR}={v:?}: give a number of threads from 0 to 64, or auto"
            ))
            .into()),
        },
    }
}

/// `SHOAL_CUDA_GRAPHS`: whether the UNet's call is recorded as a CUDA graph
/// and replayed (`LoadOptions::cuda_graphs`): unset, empty or `1` on, `0` off.
pub fn cuda_graphs(var: impl Fn(&str) -> Option<String>) -> Result<bool> {
    const VAR: &str = "SHOAL_CUDA_GRAPHS";
    match var(VAR).as_deref().map(str::trim) {
        None | Some("" | "1") => Ok(true),
        Some("0") => Ok(false),
        Some(v) => Err(UsageError(format!("{VAR}={v:?}: give 1 (on, the default) or 0 (off)")).into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn plan_threads_from_the_environment() {
        let env = |v: Option<&'static str>| move |_: &str| v.map(String::from);
        let auto = plan_threads(env(Some("auto"))).unwrap();
        assert_eq!(plan_threads(env(None)).unwrap(), auto);
        assert_eq!(plan_threads(env(Some(""))).unwrap(), auto);
        assert_eq!(plan_threads(env(Some("0"))).unwrap(), 0);
        assert_eq!(plan_threads(env(Some(" 8 "))).unwrap(), 8);
        assert!((1..=16).contains(&plan_threads(env(Some("auto"))).unwrap()));
        for bad in ["65", "-1", "many", "1.5"] {
            let e = plan_threads(env(Some(bad))).unwrap_err();
            assert!(e.downcast_ref::<UsageError>().is_some(), "{bad}");
            assert!(e.to_string().contains("SHOAL_CUDNN_PREBUILD"), "{e}");
        }
    }

    #[test]
    fn cuda_graphs_from_the_environment() {
        let env = |v: Option<&'static str>| move |_: &str| v.map(String::from);
        assert!(cuda_graphs(env(None)).unwrap());
        assert!(cuda_graphs(env(Some("1"))).unwrap());
        assert!(!cuda_graphs(env(Some(" 0"))).unwrap());
        for bad in ["yes", "2", "off"] {
            let e = cuda_graphs(env(Some(bad))).unwrap_err();
            assert!(e.downcast_ref::<UsageError>().is_some(), "{bad}");
            assert!(e.to_string().contains("SHOAL_CUDA_GRAPHS"), "{e}");
        }
    }
}
