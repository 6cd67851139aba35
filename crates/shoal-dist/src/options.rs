//! How a process group is configured: its backend, its timeout and debug mode
//! (from the environment), and the environment of explicitly given ranks.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use crate::env::{DistEnv, Launcher};
use crate::error::{Error, Result};

/// Names the variable that sets the collective timeout, in seconds.
pub const SHOAL_TIMEOUT: &str = "SHOAL_TIMEOUT";
/// The default collective timeout (torch's NCCL default is also 10 minutes).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The communication backend of a process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Everything through the TCP store; works everywhere (`"cpu"` or `"gloo"`).
    Cpu,
    /// NCCL on CUDA tensors (requires the `nccl` feature).
    Nccl,
}

impl FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" | "gloo" => Ok(Backend::Cpu),
            "nccl" => Ok(Backend::Nccl),
            other => Err(Error::InvalidArgument {
                field: "backend",
                value: other.to_string(),
                detail: "supported backends: cpu (alias gloo), nccl".into(),
            }),
        }
    }
}

/// Options of a process group.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// How long any one wait may take.
    pub timeout: Duration,
    /// Check shapes and dtypes across ranks before each NCCL collective
    /// (`SHOAL_DEBUG_MODE=1`, or accelerate's `ACCELERATE_DEBUG_MODE=1`).
    pub debug: bool,
    /// The job's store secret (`SHOAL_STORE_TOKEN`): required by a store rank 0
    /// hosts, presented to any store.
    pub token: Option<crate::secret::Secret>,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            timeout: DEFAULT_TIMEOUT,
            debug: false,
            token: None,
        }
    }
}

impl GroupOptions {
    /// Reads `SHOAL_TIMEOUT` (seconds, fractions allowed) from an environment map.
    pub fn from_env(vars: &BTreeMap<String, String>) -> Result<Self> {
        let mut o = GroupOptions::default();
        if let Some(v) = vars.get(SHOAL_TIMEOUT) {
            let secs: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s > 0.0)
                .ok_or_else(|| Error::InvalidArgument {
                    field: SHOAL_TIMEOUT,
                    value: v.clone(),
                    detail: "must be a positive number of seconds".into(),
                })?;
            o.timeout = Duration::from_secs_f64(secs);
        }
        let on = |k: &str| {
            vars.get(k)
                .is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes" | "TRUE" | "True"))
        };
        o.debug = on("SHOAL_DEBUG_MODE") || on("ACCELERATE_DEBUG_MODE");
        if let Some(t) = vars.get(crate::secret::SHOAL_STORE_TOKEN) {
            o.token = Some(crate::secret::Secret::parse(t)?);
        }
        Ok(o)
    }
}

/// The [`DistEnv`] of explicitly given ranks (pure).
pub fn explicit_env(vars: &BTreeMap<String, String>, rank: usize, world_size: usize) -> Result<DistEnv> {
    if world_size == 0 || rank >= world_size {
        return Err(Error::InvalidArgument {
            field: "rank",
            value: format!("{rank} of world_size {world_size}"),
            detail: "rank must be below world_size, and world_size at least 1".into(),
        });
    }
    let mut env = DistEnv {
        launcher: Launcher::Explicit,
        rank,
        world_size,
        local_rank: rank,
        local_world_size: world_size,
        ..DistEnv::single()
    };
    crate::env::resolve_store(vars, &mut env)?;
    Ok(env)
}
