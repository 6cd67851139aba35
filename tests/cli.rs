//! Issue 2: usage errors exit 2 naming the field; config files; `shoal env`.

use std::time::Duration;

use crate::util::{run_timed, shoal, text};

fn usage_error(args: &[&str], needle: &str) {
    let (out, _) = run_timed(shoal().args(args), Duration::from_secs(20));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {t}");
    assert!(t.contains(needle), "{args:?} should mention {needle:?}: {t}");
    assert!(!t.contains("panicked"), "{t}");
}

#[test]
fn r2_bad_launch_flags_exit_2_naming_the_field() {
    usage_error(&["launch", "-n", "0", "true"], "--num-processes");
    usage_error(&["launch", "-n", "two", "true"], "--num-processes");
    usage_error(
        &[
            "launch",
            "-n",
            "3",
            "--num-machines",
            "2",
            "--main-process-ip",
            "h",
            "true",
        ],
        "divide",
    );
    usage_error(
        &[
            "launch",
            "-n",
            "2",
            "--num-machines",
            "2",
            "--machine-rank",
            "2",
            "true",
        ],
        "--machine-rank",
    );
    usage_error(
        &["launch", "--main-process-port", "99999", "true"],
        "--main-process-port",
    );
    usage_error(&["launch", "--gpu-ids", "0,a", "true"], "--gpu-ids");
    usage_error(&["launch", "-n", "2"], "PROGRAM");
    usage_error(
        &["launch", "--config-file", "/nonexistent/c.yaml", "true"],
        "/nonexistent/c.yaml",
    );
}

#[test]
fn r2_malformed_configs_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (body, needle) in [
        ("num_processes: many\n", "num_processes"),
        ("num_procs: 2\n", "num_procs"),
        ("main_process_port: [1\n", "YAML"),
    ] {
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, body).unwrap();
        usage_error(&["launch", "--config-file", p.to_str().unwrap(), "true"], needle);
    }
}

#[test]
fn r2_accelerate_config_drives_the_launch_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("default_config.yaml");
    // What `accelerate config default` writes: JSON in a .yaml file.
    std::fs::write(
        &p,
        r#"{"compute_environment": "LOCAL_MACHINE", "debug": false, "distributed_type": "MULTI_CPU",
            "downcast_bf16": false, "enable_cpu_affinity": false, "machine_rank": 0,
            "main_training_function": "main", "mixed_precision": "no", "num_machines": 1,
            "num_processes": 2, "rdzv_backend": "static", "same_network": false,
            "tpu_use_cluster": false, "tpu_use_sudo": false, "use_cpu": true}"#,
    )
    .unwrap();
    let cfg = p.to_str().unwrap();
    let (out, _) = run_timed(
        shoal().args(["launch", "--config-file", cfg, "shoal", "demo"]),
        Duration::from_secs(60),
    );
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("rank 1/2: all collectives ok"),
        "{t}"
    );
    let (out, _) = run_timed(
        shoal().args(["launch", "--config-file", cfg, "-n", "3", "shoal", "demo"]),
        Duration::from_secs(60),
    );
    assert!(
        text(&out).contains("rank 2/3: all collectives ok"),
        "{}",
        text(&out)
    );
}

#[test]
fn r2_config_default_writes_never_overwrites_and_shows() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("sub").join("cfg.yaml");
    let ps = p.to_str().unwrap();
    let (out, _) = run_timed(
        shoal().args(["config", "default", "--config-file", ps, "--num-processes", "2"]),
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "{}", text(&out));
    let (out, _) = run_timed(
        shoal().args(["config", "default", "--config-file", ps]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("already exists"));
    let (out, _) = run_timed(
        shoal().args(["config", "show", "--config-file", ps]),
        Duration::from_secs(20),
    );
    assert!(text(&out).contains("num_processes: 2"), "{}", text(&out));
    // The written default launches.
    let (out, _) = run_timed(
        shoal().args(["launch", "--config-file", ps, "shoal", "demo"]),
        Duration::from_secs(60),
    );
    assert!(
        text(&out).contains("rank 1/2: all collectives ok"),
        "{}",
        text(&out)
    );
}

#[test]
fn r2_env_reports_the_launcher_and_refuses_partial_environments() {
    let (out, _) = run_timed(
        shoal().args(["env", "--json"]).envs([
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ]),
        Duration::from_secs(20),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["launcher"]["launcher"], "OpenMpi");
    assert_eq!(v["launcher"]["rank"], 1);
    assert_eq!(v["device"], "cpu");
    // A partial torchrun environment: `demo` refuses with exit 2 naming the variable.
    let (out, _) = run_timed(shoal().args(["demo"]).env("RANK", "0"), Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("WORLD_SIZE unset"));
}

/// Issue 13: `config default --gpu-ids foo` is refused when written (nothing is
/// written), and a config file with bad `gpu_ids` is refused when read;
/// `make-model` gives every file one mode; it never writes over a user's file.
#[test]
fn r13_config_gpu_ids_make_model_modes_and_foreign_files() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.yaml");
    let c = cfg.to_str().unwrap();
    for bad in ["foo", "0,0", "0,-1"] {
        usage_error(
            &["config", "default", "--gpu-ids", bad, "--config-file", c],
            "--gpu-ids",
        );
        assert!(!cfg.exists(), "{bad}: a refused config is not written");
    }
    std::fs::write(&cfg, "gpu_ids: foo\n").unwrap();
    let (o, _) = run_timed(
        shoal().args(["config", "show", "--config-file", c]),
        Duration::from_secs(20),
    );
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("gpu_ids") && text(&o).contains("c.yaml"),
        "{}",
        text(&o)
    );
    for preset in ["tiny", "tiny-gpt2"] {
        let out = tmp.path().join(preset);
        let (o, _) = run_timed(
            shoal().args(["make-model", "--preset", preset, "--out", out.to_str().unwrap()]),
            Duration::from_secs(120),
        );
        assert!(o.status.success(), "{}", text(&o));
        let mut modes = std::collections::BTreeSet::new();
        let mut todo = vec![out.clone()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    todo.push(e.path());
                } else {
                    modes.insert(e.metadata().unwrap().permissions().mode() & 0o777);
                }
            }
        }
        assert_eq!(modes.len(), 1, "{preset}: file modes {modes:?}");
        // A folder holding a user's file is refused, and the file is left as it was.
        let theirs = tmp.path().join(format!("{preset}-theirs"));
        std::fs::create_dir_all(theirs.join("unet")).unwrap();
        std::fs::write(theirs.join("config.json"), "mine").unwrap();
        let (o, _) = run_timed(
            shoal().args([
                "make-model",
                "--preset",
                preset,
                "--out",
                theirs.to_str().unwrap(),
            ]),
            Duration::from_secs(120),
        );
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert_eq!(
            std::fs::read_to_string(theirs.join("config.json")).unwrap(),
            "mine"
        );
        assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 2);
    }
}

/// Issue 13: diagnostics are log lines naming the rank and the host;
/// `-v` and `SHOAL_LOG` set the level (a bad filter is said and the default
/// used); the final error shows whatever the filter; an error every rank of a
/// job prints the same way is shown once, the summary naming the others.
#[test]
fn r13_log_lines_levels_and_errors_once() {
    let tmp = tempfile::tempdir().unwrap();
    let host = shoal_launch::hostname();
    let generate = |env: &[(&str, &str)], pre: &[&str], out: &str| {
        let mut cmd = shoal();
        cmd.args(pre)
            .args([
                "generate", "x", "--steps", "1", "--height", "32", "--width", "32", "--quiet", "--out",
            ])
            .arg(tmp.path().join(out));
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_timed(&mut cmd, Duration::from_secs(120)).0
    };
    let o = generate(&[], &[], "a");
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let tag = format!("shoal[rank 0/1 {host}] ");
    assert!(t.contains(&format!("{tag}no --model given")), "{t}");
    assert!(!t.contains("debug:"), "{t}");
    for (env, pre) in [(vec![], vec!["-v"]), (vec![("SHOAL_LOG", "debug")], vec![])] {
        let o = generate(&env, &pre, &format!("b{}", pre.len()));
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert!(t.contains(&format!("{tag}debug: loaded ")), "{t}");
        assert!(t.contains("block(s) of up to"), "{t}");
    }
    let o = generate(&[("SHOAL_LOG", "off")], &[], "c");
    assert!(
        o.status.success() && !text(&o).contains("no --model"),
        "{}",
        text(&o)
    );
    let o = generate(&[("SHOAL_LOG", "shoal=[")], &[], "d");
    assert!(
        text(&o).contains("warning: SHOAL_LOG=\"shoal=[\" is not a log filter"),
        "{}",
        text(&o)
    );
    let (o, _) = run_timed(
        shoal()
            .env("SHOAL_LOG", "off")
            .args(["generate", "x", "--steps", "0"]),
        Duration::from_secs(30),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains(&format!("{tag}error: ")), "{}", text(&o));
    // Two ranks failing alike: the error once, then who else said it.
    let (o, _) = run_timed(
        shoal().args([
            "launch",
            "-n",
            "2",
            "--",
            "sh",
            "-c",
            "echo \"shoal[rank $RANK/2 h] error: the same failure\" >&2; sleep 1; exit 1",
        ]),
        Duration::from_secs(60),
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert_eq!(t.matches("error: the same failure").count(), 1, "{t}");
    assert!(t.contains("printed the same error as rank"), "{t}");
}
