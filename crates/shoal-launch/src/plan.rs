//! The launch plan: flags + config file + the parent's environment → one
//! `(program, args, env)` per worker, as plain data.
//!
//! Modelled on accelerate's `utils/launch.py::prepare_multi_gpu_env`: the plan
//! is a pure function, and spawning is a thin layer on top (`supervise`).
//! Precedence: flags > config file > defaults. `--num-processes` counts all
//! processes across machines, as in accelerate; `--nproc-per-node` counts one
//! machine, as in torchrun.

use crate::config::{LaunchConfig, map_gpu_ids};
use crate::error::{Error, Result};

/// The raw `shoal launch` flags (everything optional but the program).
#[derive(Debug, Clone, Default)]
pub struct LaunchArgs {
    /// `--num-processes`: processes in total.
    pub num_processes: Option<usize>,
    /// `--nproc-per-node`: processes on this machine.
    pub nproc_per_node: Option<usize>,
    /// `--num-machines`.
    pub num_machines: Option<usize>,
    /// `--machine-rank`.
    pub machine_rank: Option<usize>,
    /// `--main-process-ip`.
    pub main_process_ip: Option<String>,
    /// `--main-process-port` (0 = a free port, on one machine only).
    pub main_process_port: Option<u16>,
    /// `--gpu-ids`: `all` or `0,1,...`.
    pub gpu_ids: Option<String>,
}

/// Facts about the launcher's own environment that the plan depends on.
#[derive(Debug, Clone, Default)]
pub struct ParentEnv {
    /// The launcher's `CUDA_VISIBLE_DEVICES`, if set.
    pub cuda_visible_devices: Option<String>,
    /// GPUs visible to the launcher (0 in a CPU build).
    pub visible_gpus: usize,
    /// Whether `OMP_NUM_THREADS` is already set.
    pub omp_num_threads_set: bool,
}

/// A validated launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchPlan {
    /// Processes in total.
    pub world_size: usize,
    /// Processes on this machine.
    pub nproc_per_node: usize,
    /// Machines.
    pub num_machines: usize,
    /// This machine's index.
    pub machine_rank: usize,
    /// Address of machine 0 (where the store lives).
    pub main_addr: String,
    /// Store port; 0 = pick a free one (one machine only).
    pub main_port: u16,
    /// The workers' `CUDA_VISIBLE_DEVICES`, if the launch sets it.
    pub cuda_visible_devices: Option<String>,
    /// Whether to set `OMP_NUM_THREADS=1` (torchrun does when nproc > 1 and unset).
    pub set_omp_threads: bool,
    /// Warnings for guessed values, shown to the user.
    pub warnings: Vec<String>,
}

/// The most processes one launcher starts on its machine.
pub const MAX_PROCS_PER_MACHINE: usize = 1024;

/// Builds the plan; every error names the flag or key.
pub fn plan(args: &LaunchArgs, config: &LaunchConfig, parent: &ParentEnv) -> Result<LaunchPlan> {
    let mut warnings = Vec::new();
    let num_machines = args.num_machines.or(config.num_machines).unwrap_or(1);
    if num_machines == 0 {
        return Err(Error::usage("--num-machines", "must be at least 1"));
    }
    let machine_rank = args.machine_rank.or(config.machine_rank).unwrap_or(0);
    if machine_rank >= num_machines {
        return Err(Error::usage(
            "--machine-rank",
            format!(
                "{machine_rank} is out of range for --num-machines {num_machines} (0..={})",
                num_machines - 1
            ),
        ));
    }
    let (world_size, nproc_per_node) = match (args.num_processes, args.nproc_per_node) {
        (Some(0), _) => return Err(Error::usage("--num-processes", "must be at least 1")),
        (_, Some(0)) => return Err(Error::usage("--nproc-per-node", "must be at least 1")),
        (Some(n), Some(p)) => {
            if n != p * num_machines {
                return Err(Error::usage(
                    "--num-processes",
                    format!("{n} disagrees with --nproc-per-node {p} × --num-machines {num_machines}"),
                ));
            }
            (n, p)
        }
        (None, Some(p)) => (p * num_machines, p),
        (Some(n), None) => per_node(n, num_machines, "--num-processes")?,
        (None, None) => match config.num_processes {
            Some(n) => per_node(n, num_machines, "num_processes (config file)")?,
            None => {
                let n = parent.visible_gpus.max(1) * num_machines;
                warnings.push(format!(
                    "--num-processes not given; using {n} ({} per machine: {})",
                    n / num_machines,
                    if parent.visible_gpus > 0 {
                        "one per visible GPU"
                    } else {
                        "no GPU visible"
                    }
                ));
                (n, n / num_machines)
            }
        },
    };
    if nproc_per_node > MAX_PROCS_PER_MACHINE {
        return Err(Error::usage(
            "--num-processes",
            format!(
                "{nproc_per_node} processes per machine; at most {MAX_PROCS_PER_MACHINE} (one per GPU is the usual)"
            ),
        ));
    }
    let main_addr = args
        .main_process_ip
        .clone()
        .or_else(|| config.main_process_ip.clone());
    let main_addr = match (main_addr, num_machines) {
        (Some(a), _) if a.trim().is_empty() => {
            return Err(Error::usage("--main-process-ip", "is empty"));
        }
        (Some(a), _) => a,
        (None, 1) => "127.0.0.1".to_string(),
        (None, _) => {
            return Err(Error::usage(
                "--main-process-ip",
                "is required with --num-machines > 1: the address of machine 0, the same on every machine",
            ));
        }
    };
    let main_port = args
        .main_process_port
        .or(config.main_process_port)
        .unwrap_or(shoal_dist::DEFAULT_MASTER_PORT);
    if main_port == 0 && num_machines > 1 {
        return Err(Error::usage(
            "--main-process-port",
            "0 (a free port) works on one machine only; give every machine the same port",
        ));
    }
    let gpu_ids = args.gpu_ids.clone().or_else(|| config.gpu_ids.clone());
    let cuda_visible_devices = match gpu_ids.as_deref().map(str::trim) {
        None | Some("all") => None,
        Some(ids) => Some(map_gpu_ids(ids, parent.cuda_visible_devices.as_deref())?),
    };
    Ok(LaunchPlan {
        world_size,
        nproc_per_node,
        num_machines,
        machine_rank,
        main_addr,
        main_port,
        cuda_visible_devices,
        set_omp_threads: nproc_per_node > 1 && !parent.omp_num_threads_set,
        warnings,
    })
}

fn per_node(n: usize, machines: usize, field: &str) -> Result<(usize, usize)> {
    if n == 0 {
        return Err(Error::usage(field, "must be at least 1"));
    }
    if !n.is_multiple_of(machines) {
        return Err(Error::usage(
            field,
            format!(
                "{n} processes do not divide evenly over {machines} machines (accelerate would silently drop {})",
                n % machines
            ),
        ));
    }
    Ok((n, n / machines))
}

impl LaunchPlan {
    /// The global rank of local worker `local_rank` on this machine.
    pub fn global_rank(&self, local_rank: usize) -> usize {
        self.machine_rank * self.nproc_per_node + local_rank
    }

    /// The environment of one worker: torchrun's names (so torch-style
    /// programs work unchanged), the store address, the run id and the
    /// job's store secret.
    pub fn worker_env(
        &self,
        local_rank: usize,
        store_addr: &str,
        run_id: &str,
        secret: &shoal_dist::Secret,
    ) -> Vec<(String, String)> {
        let port = store_addr.rsplit(':').next().unwrap_or("0").to_string();
        let mut env = vec![
            ("RANK".to_string(), self.global_rank(local_rank).to_string()),
            ("WORLD_SIZE".into(), self.world_size.to_string()),
            ("LOCAL_RANK".into(), local_rank.to_string()),
            ("LOCAL_WORLD_SIZE".into(), self.nproc_per_node.to_string()),
            ("GROUP_RANK".into(), self.machine_rank.to_string()),
            ("GROUP_WORLD_SIZE".into(), self.num_machines.to_string()),
            ("MASTER_ADDR".into(), self.main_addr.clone()),
            ("MASTER_PORT".into(), port),
            (shoal_dist::SHOAL_STORE_ADDR.into(), store_addr.to_string()),
            (shoal_dist::SHOAL_RUN_ID.into(), run_id.to_string()),
            (shoal_dist::SHOAL_STORE_TOKEN.into(), secret.expose().to_string()),
        ];
        if let Some(cvd) = &self.cuda_visible_devices {
            env.push(("CUDA_VISIBLE_DEVICES".into(), cvd.clone()));
        }
        if self.set_omp_threads {
            env.push(("OMP_NUM_THREADS".into(), "1".into()));
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> LaunchArgs {
        LaunchArgs::default()
    }

    #[test]
    fn num_processes_counts_all_machines() {
        let a = LaunchArgs {
            num_processes: Some(8),
            num_machines: Some(2),
            machine_rank: Some(1),
            main_process_ip: Some("10.0.0.1".into()),
            ..args()
        };
        let p = plan(&a, &LaunchConfig::default(), &ParentEnv::default()).unwrap();
        assert_eq!((p.world_size, p.nproc_per_node), (8, 4));
        assert_eq!(p.global_rank(1), 5);
        let secret = shoal_dist::Secret::parse("0123456789abcdef").unwrap();
        let env = p.worker_env(1, "10.0.0.1:29500", "run", &secret);
        assert!(env.contains(&("RANK".into(), "5".into())));
        assert!(env.contains(&("LOCAL_WORLD_SIZE".into(), "4".into())));
        assert!(env.contains(&("OMP_NUM_THREADS".into(), "1".into())));
    }

    #[test]
    fn flags_override_the_config() {
        let c = LaunchConfig {
            num_processes: Some(4),
            gpu_ids: Some("0,1".into()),
            ..Default::default()
        };
        let p = plan(
            &LaunchArgs {
                num_processes: Some(2),
                ..args()
            },
            &c,
            &ParentEnv::default(),
        )
        .unwrap();
        assert_eq!(p.world_size, 2);
        assert_eq!(p.cuda_visible_devices.as_deref(), Some("0,1"));
    }

    #[test]
    fn gpu_ids_index_the_parents_visible_list() {
        let parent = ParentEnv {
            cuda_visible_devices: Some("4,5,6".into()),
            ..Default::default()
        };
        let a = LaunchArgs {
            gpu_ids: Some("2,0".into()),
            num_processes: Some(2),
            ..args()
        };
        let p = plan(&a, &LaunchConfig::default(), &parent).unwrap();
        assert_eq!(p.cuda_visible_devices.as_deref(), Some("6,4"));
        let a = LaunchArgs {
            gpu_ids: Some("3".into()),
            ..a
        };
        assert!(plan(&a, &LaunchConfig::default(), &parent).is_err());
    }

    #[test]
    fn defaults_guess_with_a_warning() {
        let p = plan(&args(), &LaunchConfig::default(), &ParentEnv::default()).unwrap();
        assert_eq!(p.world_size, 1);
        assert_eq!(p.warnings.len(), 1);
        let p = plan(
            &args(),
            &LaunchConfig::default(),
            &ParentEnv {
                visible_gpus: 2,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(p.world_size, 2);
    }

    #[test]
    fn usage_errors_name_the_flag() {
        let cfg = LaunchConfig::default();
        let par = ParentEnv::default();
        let cases = [
            (
                LaunchArgs {
                    num_processes: Some(0),
                    ..args()
                },
                "--num-processes",
            ),
            (
                LaunchArgs {
                    nproc_per_node: Some(0),
                    ..args()
                },
                "--nproc-per-node",
            ),
            (
                LaunchArgs {
                    num_processes: Some(3),
                    num_machines: Some(2),
                    main_process_ip: Some("h".into()),
                    ..args()
                },
                "divide",
            ),
            (
                LaunchArgs {
                    num_machines: Some(2),
                    machine_rank: Some(2),
                    ..args()
                },
                "--machine-rank",
            ),
            (
                LaunchArgs {
                    num_machines: Some(2),
                    num_processes: Some(2),
                    ..args()
                },
                "--main-process-ip",
            ),
            (
                LaunchArgs {
                    num_machines: Some(2),
                    num_processes: Some(2),
                    main_process_ip: Some("h".into()),
                    main_process_port: Some(0),
                    ..args()
                },
                "--main-process-port",
            ),
            (
                LaunchArgs {
                    gpu_ids: Some("0,x".into()),
                    ..args()
                },
                "--gpu-ids",
            ),
            (
                LaunchArgs {
                    gpu_ids: Some("1,1".into()),
                    ..args()
                },
                "twice",
            ),
            (
                LaunchArgs {
                    num_processes: Some(4),
                    nproc_per_node: Some(3),
                    ..args()
                },
                "disagrees",
            ),
        ];
        for (a, needle) in cases {
            let err = plan(&a, &cfg, &par).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(needle), "{a:?}: {err}");
        }
    }
}
