//! Issue 6: `shoal plan` and the placement flags of `shoal generate`, through the real binary.

use std::time::Duration;

use crate::util::{run_timed, shoal, text};

fn model() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    let (o, _) = run_timed(
        shoal().args(["make-model", "--preset", "tiny", "--out", m.to_str().unwrap()]),
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", text(&o));
    let s = m.to_str().unwrap().to_string();
    (tmp, s)
}

#[test]
fn r6_plan_prints_maps_and_totals_without_loading_weights() {
    let (_t, m) = model();
    let (o, _) = run_timed(
        shoal().args([
            "plan",
            "--model",
            &m,
            "--device-map",
            "unet=1,vae=1,text_encoder=0",
            "--max-memory",
            "0=1GB,1=1GB",
        ]),
        Duration::from_secs(30),
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("unet: 1") && t.contains("text_encoder: 0"), "{t}");
    let (o, _) = run_timed(
        shoal().args(["plan", "--model", &m, "--max-memory", "0=2MB,cpu=1GB", "--json"]),
        Duration::from_secs(30),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(!v["on_cpu"].as_array().unwrap().is_empty(), "{v}");
}

#[test]
fn r6_bad_placement_inputs_exit_2_naming_the_value() {
    let (_t, m) = model();
    for (args, needle) in [
        (vec!["--max-memory", "0=16Gb"], "16Gb"),
        (
            vec![
                "--max-memory",
                "0=1GB",
                "--device-map",
                "unet=3,vae=0,text_encoder=0",
            ],
            "device 3",
        ),
        (
            vec![
                "--max-memory",
                "0=1GB",
                "--device-map",
                "unet=0,vea=0,text_encoder=0",
            ],
            "vea",
        ),
        (vec!["--max-memory", "0=2MB"], "short"),
        (vec!["--max-memory", "x=1GB"], "\"x\""),
        // A CPU budget alone is a plan on the host (r13), unless it is too small.
        (vec!["--max-memory", "cpu=1MB"], "activation allowance"),
        (vec![], "no GPU"),
        (
            vec!["--max-memory", "0=1GB", "--device-map", "fastest"],
            "fastest",
        ),
    ] {
        let mut cmd = shoal();
        cmd.args(["plan", "--model", &m]).args(&args);
        let (o, _) = run_timed(&mut cmd, Duration::from_secs(30));
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {t}");
        assert!(
            t.contains(needle) || (needle == "short" && t.contains("more than any device")),
            "{args:?}: {t}"
        );
    }
    let out = tempfile::tempdir().unwrap();
    let o_ = out.path().join("o");
    let mut cmd = shoal();
    cmd.args([
        "generate",
        "x",
        "--model",
        &m,
        "--device-map",
        "balanced",
        "--offload",
        "model",
    ])
    .args(["--out", o_.to_str().unwrap()]);
    let (o, _) = run_timed(&mut cmd, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("exclude each other"), "{}", text(&o));
    assert!(!o_.exists(), "a usage error must write nothing");
}

#[test]
fn r6_model_and_sequential_offload_write_the_same_file() {
    let (t, m) = model();
    let run = |out: &str, extra: &[&str]| {
        let mut cmd = shoal();
        cmd.args([
            "generate",
            "a red fox",
            "--model",
            &m,
            "--steps",
            "2",
            "--height",
            "32",
            "--width",
            "32",
            "--quiet",
        ])
        .args(["--out", out])
        .args(extra);
        let (o, _) = run_timed(&mut cmd, Duration::from_secs(120));
        assert!(o.status.success(), "{}", text(&o));
    };
    let a = t.path().join("a");
    let b = t.path().join("b");
    let q = t.path().join("q");
    run(a.to_str().unwrap(), &[]);
    run(b.to_str().unwrap(), &["--offload", "model"]);
    run(q.to_str().unwrap(), &["--offload", "sequential"]);
    let read = |d: &std::path::Path| {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
            .map(|e| std::fs::read(e.path()).unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(read(&a), read(&b));
    assert_eq!(read(&a), read(&q));
}

/// Issue 13: device-map messages on a machine without GPUs (CI's): a typo in
/// a map is named before any GPU is looked for; `plan` works for a cpu budget
/// and for an all-CPU map; a shortfall gives weights and the activation
/// allowance apart; `--offload` on the CPU says that it does nothing.
#[test]
fn r13_device_map_messages_without_gpus() {
    let (t, m) = model();
    let run = |args: &[&str]| run_timed(shoal().args(args), Duration::from_secs(60)).0;
    let out = t.path().join("o");
    let o = run(&[
        "generate",
        "x",
        "--model",
        &m,
        "--device-map",
        "unet=1,vea=0",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("\"vea\"") && !text(&o).contains("no GPU"),
        "{}",
        text(&o)
    );
    assert!(!out.exists(), "a refused job leaves nothing behind");
    let o = run(&["plan", "--model", &m, "--max-memory", "cpu=10GiB"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("unet: cpu") && text(&o).contains("on the CPU"),
        "{}",
        text(&o)
    );
    let o = run(&[
        "plan",
        "--model",
        &m,
        "--device-map",
        "unet=cpu,vae=cpu,text_encoder=cpu",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("no budget given"), "{}", text(&o));
    let o = run(&[
        "plan",
        "--model",
        &m,
        "--device-map",
        "unet=0,vae=cpu,text_encoder=cpu",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("device 0 is not available"), "{}", text(&o));
    let o = run(&["plan", "--model", &m, "--max-memory", "0=10MB,cpu=20MB"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("of weights +") && text(&o).contains("activation allowance for this size"),
        "{}",
        text(&o)
    );
    for mode in ["model", "sequential"] {
        let dir = t.path().join(mode);
        let o = run(&[
            "generate",
            "x",
            "--model",
            &m,
            "--offload",
            mode,
            "--steps",
            "1",
            "--height",
            "32",
            "--width",
            "32",
            "--quiet",
            "--out",
            dir.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains(&format!("--offload {mode} does nothing here")),
            "{}",
            text(&o)
        );
    }
}

#[test]
fn r11_bench_peer_needs_a_gpu_and_one_device() {
    let (_t, m) = model();
    for (extra, needle) in [
        (vec!["--device", "cpu", "--peer", "diffusers"], "--device cuda"),
        (vec!["--device", "cpu", "--peer", "torch"], "diffusers-compiled"),
    ] {
        let mut args = vec![
            "bench",
            "sd",
            "--model",
            &m,
            "--steps",
            "2",
            "--batches",
            "1",
            "--reps",
            "1",
        ];
        args.extend(extra.iter().copied());
        let (o, _) = run_timed(shoal().args(&args), Duration::from_secs(60));
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{t}");
        assert!(t.contains(needle), "{needle}: {t}");
    }
}

/// `bench ops --peer torch` compares GPU kernels: refused on the CPU (exit 2)
/// before any work, an unknown peer names the ones there are, and `--reps` is bounded.
#[test]
fn r11_bench_ops_peer_needs_a_gpu() {
    for (extra, needle) in [
        (vec!["--device", "cpu", "--peer", "torch"], "--device cuda"),
        (vec!["--peer", "diffusers"], "torch"),
        (vec!["--reps", "0"], "--reps must be from 1 to 1000 (got 0)"),
        (vec!["--reps", "100000"], "--reps must be from 1"),
    ] {
        let mut args = vec!["bench", "ops", "--batches", "2", "--iters", "1"];
        args.extend(extra.iter().copied());
        let (o, _) = run_timed(shoal().args(&args), Duration::from_secs(60));
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{t}");
        assert!(t.contains(needle), "{needle}: {t}");
    }
}
