//! `shoal launch`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use shoal_launch::{LaunchArgs, LaunchConfig, ParentEnv, SuperviseOptions};

/// Flags follow accelerate (`--num_processes` is accepted too) and torchrun
/// (`--nproc_per_node`) where they overlap.
#[derive(Debug, Args)]
pub struct LaunchCmd {
    /// Processes in total, across all machines (accelerate's meaning).
    #[arg(long = "num-processes", short = 'n', alias = "num_processes")]
    num_processes: Option<usize>,
    /// Processes on this machine (torchrun's meaning).
    #[arg(long = "nproc-per-node", alias = "nproc_per_node")]
    nproc_per_node: Option<usize>,
    /// Machines in the job; one launcher runs on each.
    #[arg(long = "num-machines", alias = "num_machines", alias = "nnodes")]
    num_machines: Option<usize>,
    /// This machine's index, 0 for the machine that hosts the store.
    #[arg(
        long = "machine-rank",
        alias = "machine_rank",
        alias = "node-rank",
        alias = "node_rank"
    )]
    machine_rank: Option<usize>,
    /// Address of machine 0, the same on every machine.
    #[arg(
        long = "main-process-ip",
        alias = "main_process_ip",
        alias = "master-addr",
        alias = "master_addr"
    )]
    main_process_ip: Option<String>,
    /// Port of the rendezvous store on machine 0; 0 picks a free port (one machine only).
    #[arg(
        long = "main-process-port",
        alias = "main_process_port",
        alias = "master-port",
        alias = "master_port"
    )]
    main_process_port: Option<u16>,
    /// GPUs to use, `all` or e.g. `0,1` (sets the workers' CUDA_VISIBLE_DEVICES).
    #[arg(long = "gpu-ids", alias = "gpu_ids")]
    gpu_ids: Option<String>,
    /// A config file (YAML or JSON; accelerate's files are accepted).
    #[arg(long = "config-file", alias = "config_file")]
    config_file: Option<PathBuf>,
    /// Seconds between SIGTERM and SIGKILL when stopping workers.
    #[arg(long = "grace-period", default_value_t = 10.0)]
    grace_period: f64,
    /// Do not prefix worker output lines with their rank.
    #[arg(long = "no-prefix")]
    no_prefix: bool,
    /// No live bar of the job's progress (there is none either when stderr is not a terminal).
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Seconds to wait for the other workers once one has exited 0; those still
    /// running then are treated as hung and stopped.
    #[arg(long = "exit-wait", default_value_t = 1800.0)]
    exit_wait: f64,
    /// The program and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM [ARGS]..."
    )]
    command: Vec<String>,
}

pub fn run(c: LaunchCmd) -> Result<()> {
    let config = load_config(c.config_file.as_deref())?;
    let args = LaunchArgs {
        num_processes: c.num_processes,
        nproc_per_node: c.nproc_per_node,
        num_machines: c.num_machines,
        machine_rank: c.machine_rank,
        main_process_ip: c.main_process_ip,
        main_process_port: c.main_process_port,
        gpu_ids: c.gpu_ids,
    };
    let parent = ParentEnv {
        cuda_visible_devices: std::env::var("CUDA_VISIBLE_DEVICES").ok(),
        visible_gpus: 0,
        omp_num_threads_set: std::env::var_os("OMP_NUM_THREADS").is_some(),
    };
    let plan = shoal_launch::plan(&args, &config, &parent)?;
    if !(c.grace_period.is_finite() && c.grace_period >= 0.0) {
        return Err(super::UsageError(format!(
            "invalid --grace-period {}: expected a non-negative number of seconds",
            c.grace_period
        ))
        .into());
    }
    if !(c.exit_wait.is_finite() && c.exit_wait >= 0.0) {
        return Err(super::UsageError(format!(
            "invalid --exit-wait {}: expected a non-negative number of seconds",
            c.exit_wait
        ))
        .into());
    }
    let (program, rest) = c
        .command
        .split_first()
        .ok_or_else(|| super::UsageError("no program given".into()))?;
    // A program name starting with a dash is a mistyped launcher flag, unless it
    // came after `--`.
    if program.starts_with('-') && !std::env::args().any(|a| a == "--") {
        return Err(super::UsageError(format!(
            "unknown flag {program} for shoal launch (see `shoal launch --help`; a program whose name starts \
             with a dash goes after `--`)"
        ))
        .into());
    }
    let program = shoal_launch::resolve_program(program, std::env::var("PATH").ok().as_deref())?;
    let opts = SuperviseOptions {
        grace: Duration::from_secs_f64(c.grace_period),
        prefix_output: !c.no_prefix,
        exit_wait: Duration::from_secs_f64(c.exit_wait),
        bar: (!c.quiet && std::io::stderr().is_terminal())
            .then(|| std::sync::Arc::new(shoal_launch::JobBar::new())),
        ..Default::default()
    };
    shoal_launch::launch(&plan, &program, rest, &opts)?;
    Ok(())
}

/// The explicit file, else shoal's default file if it exists, else nothing.
pub fn load_config(explicit: Option<&std::path::Path>) -> Result<LaunchConfig> {
    if let Some(p) = explicit {
        return Ok(LaunchConfig::load(p)?);
    }
    let vars = |k: &str| std::env::var(k).ok();
    match shoal_launch::default_config_path(&vars) {
        Some(p) if p.is_file() => Ok(LaunchConfig::load(&p)?),
        _ => Ok(LaunchConfig::default()),
    }
}
