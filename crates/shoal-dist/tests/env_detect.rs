#![allow(clippy::unwrap_used, reason = "a test fails loudly on a broken precondition")]

//! One fixture per launcher: the variables each exports, and what shoal reads.

use std::collections::BTreeMap;

use shoal_dist::{DistEnv, Error, Launcher};

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn facts(e: &DistEnv) -> (Launcher, usize, usize, usize, usize, usize, String, u16) {
    (
        e.launcher,
        e.rank,
        e.world_size,
        e.local_rank,
        e.local_world_size,
        e.node_rank,
        e.master_addr.clone(),
        e.store_port,
    )
}

#[test]
fn no_launcher_is_one_process() {
    let e = DistEnv::detect(&env(&[("HOME", "/root")])).unwrap();
    assert_eq!(e, DistEnv::single());
    assert!(e.is_main_process() && e.is_last_process() && e.is_local_main_process());
}

#[test]
fn torchrun_second_node() {
    let e = DistEnv::detect(&env(&[
        ("RANK", "5"),
        ("WORLD_SIZE", "8"),
        ("LOCAL_RANK", "1"),
        ("LOCAL_WORLD_SIZE", "4"),
        ("GROUP_RANK", "1"),
        ("MASTER_ADDR", "10.0.0.1"),
        ("MASTER_PORT", "29400"),
        ("TORCHELASTIC_RUN_ID", "none"),
    ]))
    .unwrap();
    // torchrun's own c10d store holds MASTER_PORT, so shoal's store takes the next one.
    assert_eq!(
        facts(&e),
        (Launcher::Torchrun, 5, 8, 1, 4, 1, "10.0.0.1".into(), 29401)
    );
    assert!(!e.is_main_process() && !e.is_local_main_process() && !e.is_last_process());
}

#[test]
fn shoal_launch_exports_torchrun_names_and_its_store() {
    let e = DistEnv::detect(&env(&[
        ("RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("LOCAL_RANK", "1"),
        ("LOCAL_WORLD_SIZE", "2"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29500"),
        ("SHOAL_RUN_ID", "abc"),
        ("SHOAL_STORE_ADDR", "127.0.0.1:41000"),
    ]))
    .unwrap();
    assert_eq!(e.launcher, Launcher::Shoal);
    assert!(e.store_hosted);
    assert_eq!(e.store_addr(), "127.0.0.1:41000");
    assert!(e.is_last_process());
}

#[test]
fn open_mpi() {
    let e = DistEnv::detect(&env(&[
        ("OMPI_COMM_WORLD_RANK", "3"),
        ("OMPI_COMM_WORLD_SIZE", "4"),
        ("OMPI_COMM_WORLD_LOCAL_RANK", "3"),
        ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
    ]))
    .unwrap();
    assert_eq!(
        facts(&e),
        (Launcher::OpenMpi, 3, 4, 3, 4, 0, "127.0.0.1".into(), 29500)
    );
}

#[test]
fn pmi_and_mvapich() {
    let e = DistEnv::detect(&env(&[
        ("PMI_RANK", "1"),
        ("PMI_SIZE", "2"),
        ("MPI_LOCALRANKID", "1"),
        ("MPI_LOCALNRANKS", "2"),
    ]))
    .unwrap();
    assert_eq!((e.launcher, e.rank, e.world_size), (Launcher::Pmi, 1, 2));
    let e = DistEnv::detect(&env(&[
        ("MV2_COMM_WORLD_RANK", "0"),
        ("MV2_COMM_WORLD_SIZE", "2"),
        ("MV2_COMM_WORLD_LOCAL_RANK", "0"),
        ("MV2_COMM_WORLD_LOCAL_SIZE", "2"),
    ]))
    .unwrap();
    assert_eq!((e.launcher, e.rank, e.world_size), (Launcher::Mvapich, 0, 2));
}

#[test]
fn pmi_across_machines_needs_a_master() {
    let err = DistEnv::detect(&env(&[
        ("PMI_RANK", "1"),
        ("PMI_SIZE", "4"),
        ("MPI_LOCALRANKID", "1"),
        ("MPI_LOCALNRANKS", "2"),
    ]))
    .unwrap_err();
    assert!(err.to_string().contains("MASTER_ADDR"), "{err}");
}

fn slurm(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m = env(&[
        ("SLURM_PROCID", "5"),
        ("SLURM_NTASKS", "8"),
        ("SLURM_LOCALID", "1"),
        ("SLURM_NODEID", "2"),
        ("SLURM_TASKS_PER_NODE", "2(x4)"),
        ("SLURM_JOB_NODELIST", "gpu[007-010]"),
        ("SLURM_JOB_ID", "1234567"),
        ("SLURM_JOB_NAME", "train"),
    ]);
    m.extend(env(extra));
    m
}

#[test]
fn slurm_expands_the_nodelist_for_the_master() {
    let e = DistEnv::detect(&slurm(&[])).unwrap();
    assert_eq!(
        facts(&e),
        (Launcher::Slurm, 5, 8, 1, 2, 2, "gpu007".into(), 15000 + 4567)
    );
    // An explicit master wins.
    let e = DistEnv::detect(&slurm(&[("MASTER_ADDR", "head"), ("MASTER_PORT", "1234")])).unwrap();
    assert_eq!((e.master_addr.as_str(), e.store_port), ("head", 1234));
}

#[test]
fn slurm_interactive_shells_do_not_count() {
    let e = DistEnv::detect(&slurm(&[("SLURM_JOB_NAME", "bash")])).unwrap();
    assert_eq!(e.launcher, Launcher::Single);
}

#[test]
fn srun_around_torchrun_is_not_a_conflict() {
    // srun starts one torchrun per node (SLURM_NTASKS = nodes); torchrun's ranks win.
    let mut m = env(&[
        ("SLURM_PROCID", "1"),
        ("SLURM_NTASKS", "2"),
        ("SLURM_LOCALID", "0"),
        ("SLURM_NODEID", "1"),
        ("SLURM_TASKS_PER_NODE", "1(x2)"),
        ("SLURM_JOB_NODELIST", "n[1-2]"),
    ]);
    m.extend(env(&[
        ("RANK", "6"),
        ("WORLD_SIZE", "8"),
        ("LOCAL_RANK", "2"),
        ("LOCAL_WORLD_SIZE", "4"),
        ("MASTER_ADDR", "n1"),
        ("MASTER_PORT", "29500"),
    ]));
    let e = DistEnv::detect(&m).unwrap();
    assert_eq!((e.launcher, e.rank, e.world_size), (Launcher::Torchrun, 6, 8));
}

#[test]
fn disagreeing_launchers_are_an_error_naming_both_variables() {
    let mut m = slurm(&[]);
    m.extend(env(&[
        ("RANK", "4"),
        ("WORLD_SIZE", "8"),
        ("LOCAL_RANK", "0"),
        ("LOCAL_WORLD_SIZE", "2"),
        ("MASTER_ADDR", "gpu007"),
    ]));
    let err = DistEnv::detect(&m).unwrap_err().to_string();
    assert!(err.contains("RANK=4") && err.contains("SLURM_PROCID=5"), "{err}");
}

#[test]
fn partial_and_inconsistent_environments_are_errors() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("RANK", "0")], "WORLD_SIZE unset"),
        (&[("WORLD_SIZE", "2")], "RANK unset"),
        (&[("RANK", "2"), ("WORLD_SIZE", "2")], "RANK=2"),
        (&[("RANK", "x"), ("WORLD_SIZE", "2")], "RANK=x"),
        (&[("RANK", "0"), ("WORLD_SIZE", "0")], "WORLD_SIZE=0"),
        (
            &[("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_WORLD_SIZE", "2")],
            "LOCAL_RANK unset",
        ),
        (
            &[("RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_PORT", "29500")],
            "MASTER_ADDR unset",
        ),
        (
            &[
                ("RANK", "0"),
                ("WORLD_SIZE", "1"),
                ("MASTER_ADDR", "h"),
                ("MASTER_PORT", "99999"),
            ],
            "MASTER_PORT=99999",
        ),
        (&[("OMPI_COMM_WORLD_RANK", "0")], "OMPI_COMM_WORLD_SIZE unset"),
        (&[("SLURM_NTASKS", "2"), ("SLURM_PROCID", "0")], "SLURM_LOCALID"),
    ];
    for (vars, needle) in cases {
        let err = DistEnv::detect(&env(vars)).unwrap_err();
        assert!(matches!(err, Error::Env { .. }), "{vars:?}: {err}");
        assert!(err.to_string().contains(needle), "{vars:?}: {err}");
    }
}
