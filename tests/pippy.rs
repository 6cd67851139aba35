//! Issue 14: pipeline parallelism on GPT-2 (`shoal pippy`) through the real
//! `shoal launch`, on CPU processes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::util::{run_timed, shoal, text, unique_tag};

const BATCHES: &str = "1,2,3,4,5,6,7,8,9";
const CHUNKS: &str = "1,2,3,4";

fn make(preset: &str, out: &Path) {
    let (o, _) = run_timed(
        shoal().args(["make-model", "--preset", preset, "--out", out.to_str().unwrap()]),
        Duration::from_secs(120),
    );
    assert!(o.status.success(), "{}", text(&o));
}

fn pippy(n: usize, model: &Path, out: &Path, extra: &[&str], tag: &str) -> std::process::Output {
    let mut cmd = shoal();
    if n > 0 {
        cmd.args(["launch", "-n", &n.to_string(), "--grace-period", "2", "shoal"]);
    }
    cmd.arg("pippy")
        .args(["--model", model.to_str().unwrap(), "--reps", "1"])
        .args(["--out", out.to_str().unwrap()])
        .args(extra);
    if !extra.contains(&"--seq-len") {
        cmd.args(["--seq-len", "8"]);
    }
    let (k, v) = tag.split_once('=').unwrap();
    cmd.env(k, v).env("SHOAL_TIMEOUT", "60");
    run_timed(&mut cmd, Duration::from_secs(600)).0
}

/// `.npy` files of a folder: name → bytes.
fn npys(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "npy"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Logits on 2 stages (auto split) and 3 stages (named split points) equal one
/// process's, byte for byte, for every batch size 1..9 and chunk count 1..4,
/// for the LM head and the classification head; only the last stage holds them.
#[test]
fn r14_pippy_same_logits_on_2_and_3_stages_for_every_batch_and_chunk_count() {
    let tmp = tempfile::tempdir().unwrap();
    let tag = unique_tag("pippy");
    for preset in ["tiny-gpt2", "tiny-gpt2-cls"] {
        let m = tmp.path().join(preset);
        make(preset, &m);
        let one = tmp.path().join(format!("{preset}-one"));
        std::fs::create_dir_all(&one).unwrap();
        let o = pippy(
            0,
            &m,
            &one.join("l.npy"),
            &["--batch-size", BATCHES, "--num-chunks", "1"],
            &tag,
        );
        assert!(o.status.success(), "{}", text(&o));
        let reference = npys(&one);
        assert_eq!(reference.len(), 9);
        for (n, split) in [(2, "auto"), (3, "transformer.h.2,transformer.h.4")] {
            let dir = tmp.path().join(format!("{preset}-{n}"));
            std::fs::create_dir_all(&dir).unwrap();
            let args = [
                "--batch-size",
                BATCHES,
                "--num-chunks",
                CHUNKS,
                "--split-points",
                split,
            ];
            let o = pippy(n, &m, &dir.join("l.npy"), &args, &tag);
            let t = text(&o);
            assert!(o.status.success(), "{preset} {n}: {t}");
            assert!(
                t.contains(&format!("output: on rank {} (the last stage)", n - 1)),
                "{t}"
            );
            assert!(t.contains("the output is on rank"), "{t}");
            let got = npys(&dir);
            assert_eq!(got.len(), 36, "{preset} {n}: {:?}", got.keys());
            for b in 1..=9 {
                let want = &reference[&format!("l-b{b}-m1.npy")];
                for m in 1..=4 {
                    assert!(
                        &got[&format!("l-b{b}-m{m}.npy")] == want,
                        "{preset}, {n} stages, batch {b}, {m} chunks: logits differ from one process"
                    );
                }
            }
        }
    }
}

/// With --gather-output every rank holds the same logits as one process.
#[test]
fn r14_pippy_gather_output_puts_the_logits_on_every_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let tag = unique_tag("pippyg");
    let m = tmp.path().join("m");
    make("tiny-gpt2-cls", &m);
    let one = tmp.path().join("one.npy");
    let o = pippy(0, &m, &one, &["--batch-size", "5"], &tag);
    assert!(o.status.success(), "{}", text(&o));
    let out = tmp.path().join("g.npy");
    let o = pippy(
        3,
        &m,
        &out,
        &["--batch-size", "5", "--num-chunks", "2", "--gather-output"],
        &tag,
    );
    assert!(o.status.success(), "{}", text(&o));
    let want = std::fs::read(&one).unwrap();
    for r in 0..3 {
        let got = std::fs::read(tmp.path().join(format!("g.rank{r}.npy"))).unwrap();
        assert!(got == want, "rank {r}");
    }
}

#[test]
fn r14_pippy_bad_plans_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let tag = unique_tag("pippybad");
    let m = tmp.path().join("m");
    make("tiny-gpt2", &m);
    let out = tmp.path().join("x.npy");
    for (n, args, want) in [
        (
            2,
            vec!["--split-points", "transformer.h.9"],
            "valid ones: transformer.h.0",
        ),
        (
            3,
            vec!["--split-points", "transformer.h.4,transformer.h.2"],
            "model order",
        ),
        (
            2,
            vec!["--split-points", "transformer.h.1,transformer.h.2"],
            "3 stages, but the job has 2",
        ),
        (0, vec!["--num-chunks", "0"], "--num-chunks"),
        (0, vec!["--seq-len", "500"], "1 to 128 tokens"),
    ] {
        let o = pippy(n, &m, &out, &args, &tag);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(want), "{args:?}: {}", text(&o));
    }
    // 9 stages of an 8-block model.
    let o = shoal()
        .args([
            "pippy",
            "--model",
            m.to_str().unwrap(),
            "--split-points",
            "auto",
            "--seq-len",
            "8",
        ])
        .env("WORLD_SIZE", "9")
        .env("RANK", "0")
        .env("LOCAL_RANK", "0")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("at most one stage per block"), "{}", text(&o));
}

/// A stage that hangs: the next stage's receive times out within
/// SHOAL_TIMEOUT, naming the stage, the micro-batch and the rank it waited for;
/// the launcher ends the job.
#[test]
fn r14_pippy_a_hung_stage_is_named_by_the_next_one() {
    let tmp = tempfile::tempdir().unwrap();
    let tag = unique_tag("pippyhang");
    let m = tmp.path().join("m");
    make("tiny-gpt2", &m);
    let mut cmd = shoal();
    cmd.args(["launch", "-n", "3", "--grace-period", "1", "shoal", "pippy"])
        .args(["--model", m.to_str().unwrap(), "--seq-len", "8", "--reps", "1"])
        .args(["--num-chunks", "2", "--fault-stop-rank", "1"]);
    let (k, v) = tag.split_once('=').unwrap();
    cmd.env(k, v).env("SHOAL_TIMEOUT", "3");
    let (o, took) = run_timed(&mut cmd, Duration::from_secs(120));
    let t = text(&o);
    assert_ne!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("stage 2 (rank 2) waiting for micro-batch 0 of 2 from stage 1 (rank 1)"),
        "{t}"
    );
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

/// `shoal plan --pipeline-parallel N`: stages with bytes and FLOPs, for a
/// GPT-2 and a UNet; a bad split point is a usage error listing the valid ones.
#[test]
fn r14_plan_prints_the_pipeline_stages() {
    let tmp = tempfile::tempdir().unwrap();
    let g = tmp.path().join("g");
    make("tiny-gpt2", &g);
    let u = tmp.path().join("u");
    make("tiny", &u);
    for (model, want) in [(&g, "transformer.wte … transformer.h."), (&u, "head … ")] {
        let o = shoal()
            .args([
                "plan",
                "--model",
                model.to_str().unwrap(),
                "--pipeline-parallel",
                "2",
            ])
            .output()
            .unwrap();
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert!(
            t.contains("stage 1 (rank 1)") && t.contains("GFLOP") && t.contains(want),
            "{t}"
        );
    }
    let o = shoal()
        .args(["plan", "--model", u.to_str().unwrap(), "--pipeline-parallel", "2"])
        .args(["--split-points", "up_blocks.9"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("valid ones: down_blocks.0"), "{}", text(&o));
}

/// A stage process killed mid-run: the launcher names it as the root cause
/// (its signal) and ends the job with 128 + 9; nothing is left running.
#[test]
fn r14_pippy_a_killed_stage_is_named_by_the_launcher() {
    let tmp = tempfile::tempdir().unwrap();
    let tag = unique_tag("pippykill");
    let m = tmp.path().join("m");
    make("tiny-gpt2", &m);
    let mut cmd = shoal();
    cmd.args(["launch", "-n", "3", "--grace-period", "1", "shoal", "pippy"])
        .args(["--model", m.to_str().unwrap(), "--seq-len", "8", "--reps", "1"])
        .args(["--num-chunks", "2", "--fault-kill-rank", "1"]);
    let (k, v) = tag.split_once('=').unwrap();
    cmd.env(k, v).env("SHOAL_TIMEOUT", "30");
    let (o, took) = run_timed(&mut cmd, Duration::from_secs(120));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(137), "{t}");
    assert!(t.contains("root cause: rank 1") && t.contains("SIGKILL"), "{t}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    crate::util::assert_none_left(&tag);
}
