//! The placement flags, resolved once by one pure function for `generate` and `bench`.

use crate::error::{Error, Result};

/// The placement flags as given.
#[derive(Debug, Clone, Default)]
pub struct PlacementFlags {
    /// `--device-map` (balanced, sequential, or `unet=1,...`).
    pub device_map: Option<String>,
    /// `--max-memory`.
    pub max_memory: Option<String>,
    /// `--offload` (model or sequential).
    pub offload: Option<String>,
}

/// What the flags ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Everything on the process's device.
    Device,
    /// A device map: the strategy or explicit map, and the memory limits.
    Map {
        /// The `--device-map` value.
        map: String,
        /// The `--max-memory` value.
        max_memory: Option<String>,
    },
    /// `enable_model_cpu_offload`.
    OffloadModel,
    /// `enable_sequential_cpu_offload`.
    OffloadSequential,
}

/// Resolves the flags for a job of `world` processes; contradictions are usage errors.
pub fn resolve(f: &PlacementFlags, world: usize) -> Result<Choice> {
    let usage = |m: &str| Err(Error::Usage(m.into()));
    match (&f.device_map, f.offload.as_deref()) {
        (Some(_), Some(_)) => usage(
            "--device-map and --offload exclude each other (as diffusers' device_map and enable_*_cpu_offload)",
        ),
        (None, Some(_)) if f.max_memory.is_some() => usage("--max-memory needs --device-map"),
        (None, Some("model")) => Ok(Choice::OffloadModel),
        (None, Some("sequential")) => Ok(Choice::OffloadSequential),
        (None, Some(o)) => Err(Error::Usage(format!(
            "invalid --offload {o:?}: expected model or sequential"
        ))),
        (Some(_), None) if world > 1 => {
            usage("--device-map spreads one process over GPUs; run it without a multi-process launcher")
        }
        (Some(m), None) => Ok(Choice::Map {
            map: m.clone(),
            max_memory: f.max_memory.clone(),
        }),
        (None, None) if f.max_memory.is_some() => usage("--max-memory needs --device-map"),
        (None, None) => Ok(Choice::Device),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(map: Option<&str>, mem: Option<&str>, off: Option<&str>) -> PlacementFlags {
        PlacementFlags {
            device_map: map.map(String::from),
            max_memory: mem.map(String::from),
            offload: off.map(String::from),
        }
    }

    #[test]
    fn every_combination() {
        assert_eq!(resolve(&flags(None, None, None), 1).unwrap(), Choice::Device);
        assert_eq!(
            resolve(&flags(None, None, Some("model")), 4).unwrap(),
            Choice::OffloadModel
        );
        assert_eq!(
            resolve(&flags(None, None, Some("sequential")), 1).unwrap(),
            Choice::OffloadSequential
        );
        assert_eq!(
            resolve(&flags(Some("balanced"), Some("0=1GB"), None), 1).unwrap(),
            Choice::Map {
                map: "balanced".into(),
                max_memory: Some("0=1GB".into())
            }
        );
        for (f, world, needle) in [
            (
                flags(None, Some("0=1GB"), None),
                1,
                "--max-memory needs --device-map",
            ),
            (
                flags(None, Some("0=1GB"), Some("model")),
                1,
                "--max-memory needs --device-map",
            ),
            (
                flags(Some("balanced"), None, Some("model")),
                1,
                "exclude each other",
            ),
            (flags(None, None, Some("disk")), 1, "invalid --offload"),
            (
                flags(Some("balanced"), None, None),
                2,
                "without a multi-process launcher",
            ),
        ] {
            let e = resolve(&f, world).unwrap_err();
            assert!(e.is_usage() && e.to_string().contains(needle), "{e}");
        }
    }
}
