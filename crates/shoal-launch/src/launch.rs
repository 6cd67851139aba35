//! `shoal launch` and `spawn`: host the store, start the workers, supervise.
//!
//! The thin I/O layer over [`crate::plan`] and [`crate::supervise`]: it binds
//! the rendezvous store (machine 0 only), resolves the program, and turns the
//! plan into one [`WorkerSpec`] per local rank.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use std::time::Duration;

use shoal_dist::{SHOAL_STORE_TOKEN, Secret, StoreClient, StoreServer};

use crate::error::{Error, Result};
use crate::plan::LaunchPlan;
use crate::supervise::{NoPeers, Outcome, Peers, SuperviseOptions, WorkerSpec, supervise};

/// How long launchers wait for each other (to join, and to finish).
const MACHINE_WAIT: Duration = Duration::from_secs(600);

/// The store key under which a launcher publishes its job's failure.
const FAILED_KEY: &str = "shoal/launcher/failed";

/// The other launchers of a multi-machine job, reached through the store.
struct StorePeers {
    client: Option<StoreClient>,
}

impl Peers for StorePeers {
    fn publish_failure(&mut self, summary: &str) {
        if let Some(c) = &mut self.client {
            let _ = c.set(FAILED_KEY, summary.as_bytes());
        }
    }

    fn poll_failure(&mut self) -> Option<String> {
        let c = self.client.as_mut()?;
        match c.check(&[FAILED_KEY.to_string()]) {
            Ok(p) if p.first() == Some(&true) => {
                let v = c.get(FAILED_KEY, Duration::from_secs(5)).unwrap_or_default();
                Some(String::from_utf8_lossy(&v).into_owned())
            }
            Ok(_) => None,
            // Machine 0's launcher keeps the store up while any launcher runs,
            // so losing it means machine 0 died.
            Err(e) => {
                self.client = None;
                Some(format!("lost the rendezvous store ({e})"))
            }
        }
    }
}

/// Set in the children of [`spawn`]; its presence makes `spawn` run the
/// closure instead of starting processes.
pub const SHOAL_SPAWN_CHILD: &str = "SHOAL_SPAWN_CHILD";

/// A run id unique enough to tell two jobs on one store apart.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{:x}", std::process::id(), nanos)
}

/// Finds the program: a path as given, else a `PATH` lookup; `shoal` itself
/// falls back to the running executable so `shoal launch ... shoal demo` works
/// before shoal is installed.
pub fn resolve_program(program: &str, path_var: Option<&str>) -> Result<PathBuf> {
    let not_found = |detail: String| Error::ProgramNotFound {
        program: program.to_string(),
        detail,
    };
    if program.is_empty() {
        return Err(not_found("the program name is empty".into()));
    }
    if program.contains('/') {
        let p = Path::new(program);
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(not_found("no such file".into()))
        };
    }
    for dir in std::env::split_paths(path_var.unwrap_or("")) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    if program == "shoal"
        && let Ok(exe) = std::env::current_exe()
    {
        return Ok(exe);
    }
    Err(not_found("not a path and not on PATH".into()))
}

/// The job's store secret: `SHOAL_STORE_TOKEN` when given (every machine of a
/// multi-machine job must be given the same one), else a fresh random one.
fn job_secret(num_machines: usize) -> Result<Secret> {
    match std::env::var(SHOAL_STORE_TOKEN) {
        Ok(v) => Ok(Secret::parse(&v)?),
        Err(_) if num_machines > 1 => Err(Error::usage(
            SHOAL_STORE_TOKEN,
            format!(
                "a job over {num_machines} machines needs the same secret on every machine: \
                 export {SHOAL_STORE_TOKEN}=$(openssl rand -hex 32) (the same value) before each shoal launch"
            ),
        )),
        Err(_) => Ok(Secret::generate()?),
    }
}

/// Binds the store for this launch: machine 0 only. On one machine a busy
/// port is replaced by a free one (with a warning); across machines it is an
/// error naming the port, since the other machines were told that port.
fn host_store(plan: &LaunchPlan, secret: &Secret) -> Result<(Option<StoreServer>, String)> {
    if plan.machine_rank != 0 {
        return Ok((None, format!("{}:{}", plan.main_addr, plan.main_port)));
    }
    if plan.num_machines == 1 {
        let server = match StoreServer::bind_with_secret(("127.0.0.1", plan.main_port), Some(secret.clone()))
        {
            Ok(s) => s,
            Err(e) if plan.main_port != 0 => {
                tracing::warn!("port {} is not free ({e}); using a free port", plan.main_port);
                StoreServer::bind_with_secret(("127.0.0.1", 0), Some(secret.clone()))?
            }
            Err(e) => return Err(e.into()),
        };
        let addr = format!("127.0.0.1:{}", server.local_addr().port());
        return Ok((Some(server), addr));
    }
    let server =
        StoreServer::bind_with_secret(("0.0.0.0", plan.main_port), Some(secret.clone())).map_err(|e| {
            Error::usage(
                "--main-process-port",
                format!("cannot host the rendezvous store on port {}: {e}", plan.main_port),
            )
        })?;
    Ok((Some(server), format!("{}:{}", plan.main_addr, plan.main_port)))
}

/// Runs one machine's share of a launch and waits for it.
pub fn launch(
    plan: &LaunchPlan,
    program: &Path,
    args: &[String],
    opts: &SuperviseOptions,
) -> Result<Vec<Outcome>> {
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    let secret = job_secret(plan.num_machines)?;
    let (_server, store_addr) = host_store(plan, &secret)?;
    let run = run_id();
    // Machine 0's launcher publishes the run id; the others adopt it.
    let mut peers = StorePeers { client: None };
    let mut run = run;
    if plan.num_machines > 1 {
        let mut client = StoreClient::connect_with_secret(
            &store_addr,
            plan.machine_rank,
            plan.num_machines,
            MACHINE_WAIT,
            Some(&secret),
        )?;
        if plan.machine_rank == 0 {
            client.set("shoal/launcher/run_id", run.as_bytes())?;
        } else {
            let v = client.get("shoal/launcher/run_id", MACHINE_WAIT)?;
            run = String::from_utf8_lossy(&v).into_owned();
        }
        peers.client = Some(client);
    }
    let workers = (0..plan.nproc_per_node)
        .map(|local| WorkerSpec {
            rank: plan.global_rank(local),
            local_rank: local,
            program: program.to_path_buf(),
            args: args.to_vec(),
            env: {
                let mut env = plan.worker_env(local, &store_addr, &run, &secret);
                if opts.bar.is_some() {
                    env.push((shoal_dist::SHOAL_PROGRESS.to_string(), "1".to_string()));
                }
                env
            },
        })
        .collect();
    let result = supervise(workers, opts, &mut peers);
    // Machine 0 keeps the store up until every launcher is done with it.
    if let Some(c) = &mut peers.client {
        let _ = c.set(&format!("shoal/launcher/done/{}", plan.machine_rank), &[]);
        if plan.machine_rank == 0 {
            let keys: Vec<String> = (0..plan.num_machines)
                .map(|m| format!("shoal/launcher/done/{m}"))
                .collect();
            if let Ok(missing) = c.wait_missing(&keys, MACHINE_WAIT)
                && !missing.is_empty()
            {
                tracing::warn!("launchers never finished: {}", missing.join(", "));
            }
        }
    }
    result
}

/// `torch.multiprocessing.spawn`: runs `f(rank, world_size)` in `world_size`
/// child processes of the current executable and returns when all are done,
/// or with the first failure (the others are stopped).
///
/// The children re-run the program from `main` with the same arguments; when
/// they reach this call they run `f` and exit. So call `spawn` before any
/// work that must happen once. In a child an `Err` from `f` is printed with
/// the rank and ends the process with code 1.
pub fn spawn<E: std::fmt::Display>(
    world_size: usize,
    f: impl FnOnce(usize, usize) -> std::result::Result<(), E>,
) -> Result<()> {
    if world_size == 0 || world_size > crate::plan::MAX_PROCS_PER_MACHINE {
        return Err(Error::usage(
            "nprocs",
            format!(
                "{world_size} processes; spawn starts 1 to {} on this machine",
                crate::plan::MAX_PROCS_PER_MACHINE
            ),
        ));
    }
    if let Ok(rank) = std::env::var(SHOAL_SPAWN_CHILD) {
        let rank: usize = rank
            .parse()
            .map_err(|_| Error::usage(SHOAL_SPAWN_CHILD, format!("{rank:?} is not a rank")))?;
        let code = match f(rank, world_size) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("rank {rank}/{world_size}: {e}");
                1
            }
        };
        std::process::exit(code);
    }
    if world_size == 0 {
        return Err(Error::usage("world_size", "spawn needs at least 1 process"));
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("finding the current executable", e))?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plan = LaunchPlan {
        world_size,
        nproc_per_node: world_size,
        num_machines: 1,
        machine_rank: 0,
        main_addr: "127.0.0.1".into(),
        main_port: 0,
        cuda_visible_devices: None,
        set_omp_threads: false,
        warnings: Vec::new(),
    };
    let secret = job_secret(1)?;
    let (_server, store_addr) = host_store(&plan, &secret)?;
    let run = run_id();
    let workers = (0..world_size)
        .map(|rank| {
            let mut env = plan.worker_env(rank, &store_addr, &run, &secret);
            env.push((SHOAL_SPAWN_CHILD.into(), rank.to_string()));
            WorkerSpec {
                rank,
                local_rank: rank,
                program: exe.clone(),
                args: args.clone(),
                env,
            }
        })
        .collect();
    supervise(workers, &SuperviseOptions::default(), &mut NoPeers).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_resolve_by_path_or_fail_clearly() {
        assert!(resolve_program("/bin/sh", None).is_ok());
        assert!(resolve_program("sh", Some("/usr/bin:/bin")).is_ok());
        let err = resolve_program("no-such-program-xyz", Some("/bin")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("no-such-program-xyz"));
        assert!(resolve_program("./missing/file", None).is_err());
    }
}
