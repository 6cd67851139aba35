//! Launch configuration files, shoal's own and accelerate's.
//!
//! Source: `huggingface/accelerate src/accelerate/commands/config/{config_args.py,
//! default.py}`. A `.json` file is JSON, anything else YAML (which is also how
//! accelerate reads the JSON that `accelerate config default` writes into a
//! `.yaml` file). Every key accelerate writes is accepted; the ones shoal does
//! not use are ignored. A key that neither knows is an error naming it, so a
//! typo never passes silently. Values are normalised as accelerate would
//! (`gpu_ids: 0,1` and `gpu_ids: "0,1"` are the same; `distributed_type: NO` is
//! a string).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

/// The settings shoal reads from a config file; `None` = not set.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LaunchConfig {
    /// Processes in total, across machines (accelerate's meaning; -1 = unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_processes: Option<usize>,
    /// Machines in the job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_machines: Option<usize>,
    /// This machine's index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_rank: Option<usize>,
    /// Address of machine 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub main_process_ip: Option<String>,
    /// Port of the rendezvous store on machine 0 (0 = a free port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub main_process_port: Option<u16>,
    /// `all` or a list such as `0,1,3`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_ids: Option<String>,
    /// `no`, `fp16`, `bf16`, `fp8`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mixed_precision: Option<String>,
    /// accelerate's `distributed_type` (`NO`, `MULTI_GPU`, `MULTI_CPU`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distributed_type: Option<String>,
}

/// Keys accelerate writes that shoal accepts and does not use.
const ACCELERATE_IGNORED: &[&str] = &[
    "compute_environment",
    "debug",
    "downcast_bf16",
    "enable_cpu_affinity",
    "main_training_function",
    "rdzv_backend",
    "same_network",
    "tpu_env",
    "tpu_use_cluster",
    "tpu_use_sudo",
    "tpu_name",
    "tpu_zone",
    "use_cpu",
    "commands",
    "command_file",
    "dynamo_backend",
    "ipex_config",
    "mpirun_config",
    "fp8_config",
    "deepspeed_config",
    "fsdp_config",
    "megatron_lm_config",
    "dynamo_config",
    "parallelism_config",
    "gpu_type",
];

const DISTRIBUTED_TYPES: &[&str] = &[
    "NO",
    "MULTI_CPU",
    "MULTI_GPU",
    "MULTI_NPU",
    "MULTI_MLU",
    "MULTI_SDAA",
    "MULTI_MUSA",
    "MULTI_HPU",
    "MULTI_XPU",
    "DEEPSPEED",
    "FSDP",
    "XLA",
    "MEGATRON_LM",
];

/// The default location of shoal's config: `$SHOAL_CONFIG_FILE`, else
/// `$XDG_CONFIG_HOME/shoal/default_config.yaml`, else `~/.config/shoal/...`.
pub fn default_config_path(vars: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(p) = vars("SHOAL_CONFIG_FILE") {
        return Some(PathBuf::from(p));
    }
    let base = match vars("XDG_CONFIG_HOME") {
        Some(x) if !x.is_empty() => PathBuf::from(x),
        _ => PathBuf::from(vars("HOME")?).join(".config"),
    };
    Some(base.join("shoal").join("default_config.yaml"))
}

impl LaunchConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            detail: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` decides the format and names errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let err = |detail: String| Error::Config {
            path: path.to_path_buf(),
            detail,
        };
        let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let value: Value = if is_json {
            serde_json::from_str(text).map_err(|e| err(format!("not valid JSON: {e}")))?
        } else {
            serde_saphyr::from_str(text).map_err(|e| err(format!("not valid YAML: {e}")))?
        };
        let map = match value {
            Value::Object(m) => m,
            Value::Null => return Ok(LaunchConfig::default()),
            other => {
                return Err(err(format!(
                    "expected a mapping of keys to values, found {other}"
                )));
            }
        };
        let mut c = LaunchConfig::default();
        for (key, v) in &map {
            let field = |detail: &str| err(format!("key `{key}`: {detail} (found {v})"));
            match key.as_str() {
                "num_processes" => {
                    c.num_processes = match as_int(v).ok_or_else(|| field("expected an integer"))? {
                        -1 => None,
                        n if n >= 1 => Some(n as usize),
                        _ => return Err(field("must be at least 1, or -1 for unset")),
                    }
                }
                "num_machines" => {
                    c.num_machines = Some(
                        as_int(v)
                            .filter(|n| *n >= 1)
                            .ok_or_else(|| field("expected an integer of at least 1"))?
                            as usize,
                    )
                }
                "machine_rank" => {
                    c.machine_rank = Some(
                        as_int(v)
                            .filter(|n| *n >= 0)
                            .ok_or_else(|| field("expected a non-negative integer"))?
                            as usize,
                    )
                }
                "main_process_ip" => c.main_process_ip = as_opt_string(v),
                "main_process_port" => {
                    c.main_process_port = match v {
                        Value::Null => None,
                        _ => Some(
                            as_int(v)
                                .and_then(|n| u16::try_from(n).ok())
                                .ok_or_else(|| field("expected a port number 0-65535"))?,
                        ),
                    }
                }
                "gpu_ids" => {
                    c.gpu_ids = as_opt_string(v);
                    if let Some(ids) = c.gpu_ids.as_deref() {
                        check_gpu_ids(ids).map_err(|e| field(&e.to_string()))?;
                    }
                }
                "mixed_precision" => {
                    // `mixed_precision: no` reads as a boolean in YAML 1.1.
                    let s = match v {
                        Value::Bool(false) => Some("no".to_string()),
                        _ => as_opt_string(v).map(|s| s.to_ascii_lowercase()),
                    };
                    if let Some(s) = &s
                        && !["no", "fp16", "bf16", "fp8"].contains(&s.as_str())
                    {
                        return Err(field("expected one of no, fp16, bf16, fp8"));
                    }
                    c.mixed_precision = s;
                }
                "distributed_type" => {
                    // PyYAML reads an unquoted NO as false.
                    let s = match v {
                        Value::Bool(false) => "NO".to_string(),
                        _ => as_opt_string(v).unwrap_or_default().to_ascii_uppercase(),
                    };
                    if !DISTRIBUTED_TYPES.contains(&s.as_str()) {
                        return Err(field(&format!(
                            "expected one of {}",
                            DISTRIBUTED_TYPES.join(", ")
                        )));
                    }
                    c.distributed_type = Some(s);
                }
                k if ACCELERATE_IGNORED.contains(&k) || k.ends_with("_config") => {}
                _ => {
                    return Err(err(format!(
                        "unknown key `{key}`; shoal reads num_processes, num_machines, machine_rank, \
                         main_process_ip, main_process_port, gpu_ids, mixed_precision, distributed_type \
                         and accepts the other keys accelerate writes"
                    )));
                }
            }
        }
        Ok(c)
    }

    /// The YAML `shoal config default` writes.
    pub fn to_yaml(&self) -> String {
        let mut out = String::from("# shoal launch configuration (accelerate-compatible keys)\n");
        out.push_str(&format!(
            "distributed_type: \"{}\"\n",
            self.distributed_type.as_deref().unwrap_or("NO")
        ));
        out.push_str(&format!(
            "num_processes: {}\n",
            self.num_processes.map_or("-1".to_string(), |n| n.to_string())
        ));
        out.push_str(&format!("num_machines: {}\n", self.num_machines.unwrap_or(1)));
        out.push_str(&format!("machine_rank: {}\n", self.machine_rank.unwrap_or(0)));
        out.push_str(&format!(
            "main_process_ip: {}\n",
            self.main_process_ip.as_deref().unwrap_or("null")
        ));
        out.push_str(&format!(
            "main_process_port: {}\n",
            self.main_process_port
                .map_or("null".to_string(), |p| p.to_string())
        ));
        out.push_str(&format!(
            "gpu_ids: \"{}\"\n",
            self.gpu_ids.as_deref().unwrap_or("all")
        ));
        out.push_str(&format!(
            "mixed_precision: \"{}\"\n",
            self.mixed_precision.as_deref().unwrap_or("no")
        ));
        out
    }
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_opt_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(a) => Some(a.iter().filter_map(as_opt_string).collect::<Vec<_>>().join(",")),
        Value::Object(_) => None,
    }
}

/// Checks a `gpu_ids` value on its own (`all`, or distinct GPU indices), as a
/// config is written or read, before any launch.
pub fn check_gpu_ids(ids: &str) -> Result<()> {
    match ids.trim() {
        "all" => Ok(()),
        ids => map_gpu_ids(ids, None).map(|_| ()),
    }
}

/// `--gpu-ids 0,2` → the children's `CUDA_VISIBLE_DEVICES`; the ids index the
/// launcher's own list when it has one.
pub(crate) fn map_gpu_ids(ids: &str, parent: Option<&str>) -> Result<String> {
    let parent_list: Option<Vec<&str>> = parent.map(|p| p.split(',').map(str::trim).collect());
    let mut out = Vec::new();
    for id in ids.split(',').map(str::trim) {
        let i: usize = id.parse().map_err(|_| {
            Error::usage(
                "--gpu-ids",
                format!("{id:?} is not a GPU index; expected `all` or e.g. `0,1`"),
            )
        })?;
        match &parent_list {
            Some(l) => out.push(
                l.get(i)
                    .ok_or_else(|| {
                        Error::usage(
                            "--gpu-ids",
                            format!(
                                "{i} is out of range: CUDA_VISIBLE_DEVICES lists {} device(s)",
                                l.len()
                            ),
                        )
                    })?
                    .to_string(),
            ),
            None => out.push(i.to_string()),
        }
    }
    let mut seen = out.clone();
    seen.sort();
    seen.dedup();
    if seen.len() != out.len() {
        return Err(Error::usage("--gpu-ids", format!("{ids:?} lists a GPU twice")));
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, name: &str) -> Result<LaunchConfig> {
        LaunchConfig::parse(text, Path::new(name))
    }

    /// What `accelerate config default` writes (JSON in a `.yaml` file), accelerate 1.x.
    const ACCELERATE_DEFAULT: &str = r#"{
  "compute_environment": "LOCAL_MACHINE",
  "debug": false,
  "distributed_type": "MULTI_GPU",
  "downcast_bf16": false,
  "enable_cpu_affinity": false,
  "machine_rank": 0,
  "main_training_function": "main",
  "mixed_precision": "no",
  "num_machines": 1,
  "num_processes": 2,
  "rdzv_backend": "static",
  "same_network": false,
  "tpu_use_cluster": false,
  "tpu_use_sudo": false,
  "use_cpu": false
}"#;

    #[test]
    fn reads_accelerate_default_json_in_a_yaml_file() {
        let c = parse(ACCELERATE_DEFAULT, "default_config.yaml").unwrap();
        assert_eq!(c.num_processes, Some(2));
        assert_eq!(c.distributed_type.as_deref(), Some("MULTI_GPU"));
        assert_eq!(parse(ACCELERATE_DEFAULT, "c.json").unwrap(), c);
    }

    #[test]
    fn reads_accelerate_yaml_with_unquoted_values() {
        let text = "compute_environment: LOCAL_MACHINE\ndistributed_type: NO\ngpu_ids: 0,1\n\
                    num_processes: 2\nmain_process_port: 0\nfsdp_config: {}\nmixed_precision: fp16\n";
        let c = parse(text, "c.yaml").unwrap();
        assert_eq!(c.distributed_type.as_deref(), Some("NO"));
        assert_eq!(c.gpu_ids.as_deref(), Some("0,1"));
        assert_eq!(c.main_process_port, Some(0));
    }

    #[test]
    fn round_trips_its_own_default() {
        let c = LaunchConfig {
            num_processes: Some(4),
            gpu_ids: Some("0,1".into()),
            ..Default::default()
        };
        let back = parse(&c.to_yaml(), "x.yaml").unwrap();
        assert_eq!(back.num_processes, Some(4));
        assert_eq!(back.gpu_ids.as_deref(), Some("0,1"));
    }

    #[test]
    fn bad_configs_name_the_key() {
        for (text, needle) in [
            ("num_processes: two\n", "num_processes"),
            ("num_processes: 0\n", "num_processes"),
            ("num_procesess: 2\n", "num_procesess"),
            ("main_process_port: 70000\n", "main_process_port"),
            ("mixed_precision: fp12\n", "mixed_precision"),
            ("distributed_type: SOMETHING\n", "distributed_type"),
            ("gpu_ids: foo\n", "gpu_ids"),
            ("gpu_ids: 0,0\n", "gpu_ids"),
            ("- a\n- b\n", "mapping"),
            ("num_processes: [\n", "YAML"),
        ] {
            let err = parse(text, "c.yaml").unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("c.yaml"), "{text:?}: {err}");
        }
    }
}
