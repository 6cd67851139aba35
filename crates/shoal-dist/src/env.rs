//! Launcher detection: which launcher started this process, and where it sits.
//!
//! A pure function of an environment map ([`DistEnv::detect`]); only
//! [`DistEnv::from_process_env`] reads `std::env`. The variable names live in
//! one table per launcher ([`TORCHRUN`], [`OPEN_MPI`], [`PMI`], [`MVAPICH`],
//! [`SLURM`]); the detection order and the conventions are those of
//! `shared/notes/semantics.md` §4-5: torchrun's `run.py`, srun(1), Open MPI's
//! docs and Lightning's `plugins/environments/slurm.py`.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::hostlist::{expand_hostlist, expand_tasks_per_node};

/// The default rendezvous port, as torchrun and accelerate.
pub const DEFAULT_MASTER_PORT: u16 = 29500;

/// Set by `shoal launch` (and `spawn`) in every worker; its value is the run id.
pub const SHOAL_RUN_ID: &str = "SHOAL_RUN_ID";
/// Set by `shoal launch` when the launcher itself hosts the rendezvous store:
/// `host:port` of the store. Workers then connect instead of hosting.
pub const SHOAL_STORE_ADDR: &str = "SHOAL_STORE_ADDR";
/// Overrides the store port (default: `MASTER_PORT`, or `MASTER_PORT + 1` under
/// torchrun, whose own c10d store already holds `MASTER_PORT`).
pub const SHOAL_STORE_PORT: &str = "SHOAL_STORE_PORT";

/// The variable names one launcher uses.
#[derive(Debug, Clone, Copy)]
pub struct EnvNames {
    /// The launcher's name, for messages.
    pub launcher: &'static str,
    /// Global rank.
    pub rank: &'static str,
    /// World size.
    pub world: &'static str,
    /// Rank within the node.
    pub local_rank: &'static str,
    /// Processes on this node.
    pub local_world: &'static str,
    /// Index of this node, if the launcher exports it.
    pub node_rank: Option<&'static str>,
}

/// torchrun and `accelerate launch` (and `shoal launch`, which exports the same names).
pub const TORCHRUN: EnvNames = EnvNames {
    launcher: "torchrun",
    rank: "RANK",
    world: "WORLD_SIZE",
    local_rank: "LOCAL_RANK",
    local_world: "LOCAL_WORLD_SIZE",
    node_rank: Some("GROUP_RANK"),
};
/// Open MPI's `mpirun`.
pub const OPEN_MPI: EnvNames = EnvNames {
    launcher: "Open MPI",
    rank: "OMPI_COMM_WORLD_RANK",
    world: "OMPI_COMM_WORLD_SIZE",
    local_rank: "OMPI_COMM_WORLD_LOCAL_RANK",
    local_world: "OMPI_COMM_WORLD_LOCAL_SIZE",
    node_rank: Some("OMPI_COMM_WORLD_NODE_RANK"),
};
/// MPICH and Intel MPI through PMI.
pub const PMI: EnvNames = EnvNames {
    launcher: "PMI",
    rank: "PMI_RANK",
    world: "PMI_SIZE",
    local_rank: "MPI_LOCALRANKID",
    local_world: "MPI_LOCALNRANKS",
    node_rank: None,
};
/// MVAPICH2.
pub const MVAPICH: EnvNames = EnvNames {
    launcher: "MVAPICH",
    rank: "MV2_COMM_WORLD_RANK",
    world: "MV2_COMM_WORLD_SIZE",
    local_rank: "MV2_COMM_WORLD_LOCAL_RANK",
    local_world: "MV2_COMM_WORLD_LOCAL_SIZE",
    node_rank: None,
};
/// SLURM's `srun`. The local world size comes from `SLURM_TASKS_PER_NODE`,
/// which is compressed (`2(x3),1`) and indexed by `SLURM_NODEID`.
pub const SLURM: EnvNames = EnvNames {
    launcher: "SLURM",
    rank: "SLURM_PROCID",
    world: "SLURM_NTASKS",
    local_rank: "SLURM_LOCALID",
    local_world: "SLURM_TASKS_PER_NODE",
    node_rank: Some("SLURM_NODEID"),
};

/// Which launcher started this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Launcher {
    /// `shoal launch` or `shoal_launch::spawn`.
    Shoal,
    /// torchrun or `accelerate launch`.
    Torchrun,
    /// Open MPI.
    OpenMpi,
    /// MPICH / Intel MPI (PMI).
    Pmi,
    /// MVAPICH2.
    Mvapich,
    /// SLURM's srun.
    Slurm,
    /// Ranks given explicitly to `init_process_group`.
    Explicit,
    /// No launcher: one process.
    Single,
}

/// Where this process sits in the job: the `PartialState` facts, as plain data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DistEnv {
    /// The launcher that was detected.
    pub launcher: Launcher,
    /// Global rank (`process_index`).
    pub rank: usize,
    /// Number of processes (`num_processes`).
    pub world_size: usize,
    /// Rank within this machine (`local_process_index`).
    pub local_rank: usize,
    /// Processes on this machine.
    pub local_world_size: usize,
    /// Index of this machine.
    pub node_rank: usize,
    /// Host of the rendezvous store.
    pub master_addr: String,
    /// Port of the rendezvous store.
    pub store_port: u16,
    /// Whether the launcher already hosts the store (workers only connect).
    pub store_hosted: bool,
}

impl DistEnv {
    /// A single process with no launcher.
    pub fn single() -> Self {
        DistEnv {
            launcher: Launcher::Single,
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_world_size: 1,
            node_rank: 0,
            master_addr: "127.0.0.1".into(),
            store_port: DEFAULT_MASTER_PORT,
            store_hosted: false,
        }
    }

    /// Detects the launcher from the variables of this process.
    pub fn from_process_env() -> Result<Self> {
        let vars: BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Self::detect(&vars)
    }

    /// Detects the launcher from an environment map; the order is
    /// shoal → torchrun → Open MPI → PMI → MVAPICH → SLURM → single process.
    ///
    /// A launcher whose variables are only partly set, or two launchers that
    /// disagree on the rank of this process, are errors naming the variables.
    pub fn detect(vars: &BTreeMap<String, String>) -> Result<Self> {
        let get = |k: &str| vars.get(k).map(String::as_str);
        let mut found: Vec<(EnvNames, DistEnv)> = Vec::new();
        for names in [TORCHRUN, OPEN_MPI, PMI, MVAPICH] {
            if let Some(env) = read_generic(&names, &get)? {
                found.push((names, env));
            }
        }
        if slurm_is_active(&get)
            && let Some(env) = read_slurm(&get)?
        {
            found.push((SLURM, env));
        }
        let Some((names, mut env)) = found.first().cloned() else {
            return Ok(Self::single());
        };
        // Two launchers at the same level must agree. Nested launchers
        // (`srun torchrun ...`) differ in world size and are not compared.
        for (other, oenv) in &found[1..] {
            if oenv.world_size == env.world_size && oenv.rank != env.rank {
                return Err(Error::Env {
                    launcher: names.launcher,
                    detail: format!(
                        "{} and {} disagree on this process's rank ({} vs {})",
                        names.launcher, other.launcher, env.rank, oenv.rank
                    ),
                    vars: show(&get, &[names.rank, other.rank]),
                });
            }
        }
        if get(SHOAL_RUN_ID).is_some() && names.rank == TORCHRUN.rank {
            env.launcher = Launcher::Shoal;
        }
        resolve_master(&get, &names, &mut env)?;
        Ok(env)
    }

    /// Whether this is the main process (rank 0).
    pub fn is_main_process(&self) -> bool {
        self.rank == 0
    }

    /// Whether this is the first process on its machine.
    pub fn is_local_main_process(&self) -> bool {
        self.local_rank == 0
    }

    /// Whether this is the last process (`world_size - 1`).
    pub fn is_last_process(&self) -> bool {
        self.rank + 1 == self.world_size
    }

    /// `host:port` of the rendezvous store.
    pub fn store_addr(&self) -> String {
        format!("{}:{}", self.master_addr, self.store_port)
    }
}

/// Formats `NAME=value` for each name, `NAME unset` where missing.
fn show<'a>(get: &impl Fn(&str) -> Option<&'a str>, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| match get(n) {
            Some(v) => format!("{n}={v}"),
            None => format!("{n} unset"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a variable as a count or index, naming it on failure.
fn parse_num<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    names: &EnvNames,
    var: &str,
) -> Result<Option<usize>> {
    match get(var) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| Error::Env {
            launcher: names.launcher,
            detail: format!("{var} is not a non-negative integer"),
            vars: format!("{var}={v}"),
        }),
    }
}

/// Reads a launcher that exports rank, world, local rank and local world directly.
fn read_generic<'a>(names: &EnvNames, get: &impl Fn(&str) -> Option<&'a str>) -> Result<Option<DistEnv>> {
    let all = [names.rank, names.world, names.local_rank, names.local_world];
    if all.iter().all(|n| get(n).is_none()) {
        return Ok(None);
    }
    let partial = |detail: &str| Error::Env {
        launcher: names.launcher,
        detail: detail.to_string(),
        vars: show(get, &all),
    };
    let rank = parse_num(get, names, names.rank)?;
    let world = parse_num(get, names, names.world)?;
    let (Some(rank), Some(world)) = (rank, world) else {
        return Err(partial(
            "partial environment: rank and world size must both be set",
        ));
    };
    let local_rank = parse_num(get, names, names.local_rank)?;
    let local_world = parse_num(get, names, names.local_world)?;
    // torchrun always exports both local variables; accept their absence only
    // for a single node, where they equal the global ones.
    let (local_rank, local_world) = match (local_rank, local_world) {
        (Some(lr), Some(lw)) => (lr, lw),
        (None, None) => (rank, world),
        (Some(lr), None) => (lr, world),
        (None, Some(_)) => return Err(partial("partial environment: local rank is missing")),
    };
    let node_rank = match names.node_rank {
        Some(var) => parse_num(get, names, var)?,
        None => None,
    };
    let node_rank = node_rank.unwrap_or(rank.checked_div(local_world).unwrap_or(0));
    check_ranges(names, get, rank, world, local_rank, local_world)?;
    Ok(Some(DistEnv {
        launcher: launcher_of(names),
        rank,
        world_size: world,
        local_rank,
        local_world_size: local_world,
        node_rank,
        master_addr: String::new(),
        store_port: 0,
        store_hosted: false,
    }))
}

fn launcher_of(names: &EnvNames) -> Launcher {
    match names.rank {
        "RANK" => Launcher::Torchrun,
        "OMPI_COMM_WORLD_RANK" => Launcher::OpenMpi,
        "PMI_RANK" => Launcher::Pmi,
        "MV2_COMM_WORLD_RANK" => Launcher::Mvapich,
        _ => Launcher::Slurm,
    }
}

fn check_ranges<'a>(
    names: &EnvNames,
    get: &impl Fn(&str) -> Option<&'a str>,
    rank: usize,
    world: usize,
    local_rank: usize,
    local_world: usize,
) -> Result<()> {
    let bad = |detail: &str| {
        Err(Error::Env {
            launcher: names.launcher,
            detail: detail.to_string(),
            vars: show(
                get,
                &[names.rank, names.world, names.local_rank, names.local_world],
            ),
        })
    };
    if world == 0 {
        return bad("world size is 0");
    }
    if rank >= world {
        return bad("rank is not below the world size");
    }
    if local_world == 0 || local_world > world {
        return bad("local world size must be between 1 and the world size");
    }
    if local_rank >= local_world {
        return bad("local rank is not below the local world size");
    }
    Ok(())
}

/// SLURM counts only inside a batch step, not in an `salloc` shell whose
/// variables leak into other launchers (Lightning's `_is_srun_used`).
fn slurm_is_active<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> bool {
    get("SLURM_NTASKS").is_some() && !matches!(get("SLURM_JOB_NAME"), Some("bash") | Some("interactive"))
}

fn read_slurm<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<Option<DistEnv>> {
    let names = SLURM;
    let required = [
        names.rank,
        names.world,
        names.local_rank,
        "SLURM_NODEID",
        "SLURM_TASKS_PER_NODE",
    ];
    let missing: Vec<&str> = required.iter().copied().filter(|n| get(n).is_none()).collect();
    if !missing.is_empty() {
        return Err(Error::Env {
            launcher: names.launcher,
            detail: format!("partial environment: {} unset", missing.join(", ")),
            vars: show(get, &required),
        });
    }
    let num = |v: &str| parse_num(get, &names, v).map(|n| n.unwrap_or(0));
    let (rank, world, local_rank, node) = (
        num(names.rank)?,
        num(names.world)?,
        num(names.local_rank)?,
        num("SLURM_NODEID")?,
    );
    let per_node = expand_tasks_per_node(get("SLURM_TASKS_PER_NODE").unwrap_or(""))?;
    let local_world = *per_node.get(node).ok_or_else(|| Error::Env {
        launcher: names.launcher,
        detail: format!("SLURM_NODEID {node} has no entry in SLURM_TASKS_PER_NODE"),
        vars: show(get, &["SLURM_NODEID", "SLURM_TASKS_PER_NODE"]),
    })?;
    check_ranges(&names, get, rank, world, local_rank, local_world)?;
    Ok(Some(DistEnv {
        launcher: Launcher::Slurm,
        rank,
        world_size: world,
        local_rank,
        local_world_size: local_world,
        node_rank: node,
        master_addr: String::new(),
        store_port: 0,
        store_hosted: false,
    }))
}

/// Fills in where the rendezvous store lives, for ranks given explicitly
/// (`init_process_group`): `SHOAL_STORE_ADDR`, else `MASTER_ADDR`/`MASTER_PORT`,
/// else `127.0.0.1:29500`.
pub fn resolve_store(vars: &BTreeMap<String, String>, env: &mut DistEnv) -> Result<()> {
    let get = |k: &str| vars.get(k).map(String::as_str);
    let names = EnvNames {
        launcher: "init_process_group",
        ..TORCHRUN
    };
    resolve_master(&get, &names, env)
}

/// Fills in where the rendezvous store lives.
fn resolve_master<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    names: &EnvNames,
    env: &mut DistEnv,
) -> Result<()> {
    let port_of = |var: &str, v: &str| {
        v.trim().parse::<u16>().map_err(|_| Error::Env {
            launcher: names.launcher,
            detail: format!("{var} is not a port number (0-65535)"),
            vars: format!("{var}={v}"),
        })
    };
    if let Some(addr) = get(SHOAL_STORE_ADDR) {
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| Error::Env {
            launcher: "shoal",
            detail: format!("{SHOAL_STORE_ADDR} must be host:port"),
            vars: format!("{SHOAL_STORE_ADDR}={addr}"),
        })?;
        env.master_addr = host.to_string();
        env.store_port = port_of(SHOAL_STORE_ADDR, port)?;
        env.store_hosted = true;
        return Ok(());
    }
    let (addr, port) = (get("MASTER_ADDR"), get("MASTER_PORT"));
    let (addr, mut port) = match (addr, port) {
        (Some(a), Some(p)) => (a.to_string(), port_of("MASTER_PORT", p)?),
        (Some(a), None) => (a.to_string(), DEFAULT_MASTER_PORT),
        (None, Some(_)) => {
            return Err(Error::Env {
                launcher: names.launcher,
                detail: "MASTER_PORT is set but MASTER_ADDR is not".into(),
                vars: show(get, &["MASTER_ADDR", "MASTER_PORT"]),
            });
        }
        (None, None) if env.launcher == Launcher::Slurm => slurm_master(get)?,
        (None, None) if env.local_world_size == env.world_size => {
            ("127.0.0.1".to_string(), DEFAULT_MASTER_PORT)
        }
        (None, None) => {
            return Err(Error::Env {
                launcher: names.launcher,
                detail: "the job spans machines but MASTER_ADDR is not set; export \
                         MASTER_ADDR and MASTER_PORT of rank 0's machine"
                    .into(),
                vars: show(get, &["MASTER_ADDR", "MASTER_PORT"]),
            });
        }
    };
    // torchrun's agent hosts its own c10d store on MASTER_PORT.
    if env.launcher == Launcher::Torchrun && get("TORCHELASTIC_RUN_ID").is_some() {
        port = port.checked_add(1).ok_or_else(|| Error::Env {
            launcher: names.launcher,
            detail: "MASTER_PORT 65535 leaves no port for shoal's store; set SHOAL_STORE_PORT".into(),
            vars: show(get, &["MASTER_PORT"]),
        })?;
    }
    if let Some(p) = get(SHOAL_STORE_PORT) {
        port = port_of(SHOAL_STORE_PORT, p)?;
    }
    env.master_addr = addr;
    env.store_port = port;
    Ok(())
}

/// Lightning's rule: the first host of the node list, port 15000 + the last
/// four digits of the job id.
fn slurm_master<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<(String, u16)> {
    let list = get("SLURM_JOB_NODELIST").or_else(|| get("SLURM_NODELIST"));
    let host = match list {
        Some(l) => expand_hostlist(l)?.swap_remove(0),
        None => "127.0.0.1".to_string(),
    };
    let port = match get("SLURM_JOB_ID") {
        Some(id) => {
            let digits: String = id
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            15000 + digits.parse::<u16>().unwrap_or(0)
        }
        None => DEFAULT_MASTER_PORT,
    };
    Ok((host, port))
}
