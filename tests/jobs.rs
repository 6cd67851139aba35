//! Issue 5: data-parallel generation through the real `shoal launch` and
//! `shoal generate`, on CPU with the embedded tiny model.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::util::{assert_none_left, run_timed, shoal, text, unique_tag};

const BASE: &[&str] = &[
    "--steps",
    "2",
    "--height",
    "32",
    "--width",
    "32",
    "--quiet",
    "--images-per-prompt",
    "2",
];
const PROMPTS: &[&str] = &[
    "-p",
    "a dog",
    "-p",
    "a cat",
    "-p",
    "a red fox",
    "-p",
    "a chicken",
    "-p",
    "a dog",
];

/// File name → bytes of every PNG in a folder.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn generate(n: usize, out: &Path, extra: &[&str], tag: &str) -> std::process::Output {
    generate_with_timeout(n, out, extra, tag, "60").0
}

fn generate_with_timeout(
    n: usize,
    out: &Path,
    extra: &[&str],
    tag: &str,
    timeout: &str,
) -> (std::process::Output, Duration) {
    let mut cmd = shoal();
    if n > 0 {
        cmd.args(["launch", "-n", &n.to_string(), "--grace-period", "2", "shoal"]);
    }
    cmd.arg("generate")
        .args(BASE)
        .args(PROMPTS)
        .args(["--out", out.to_str().unwrap()])
        .args(extra);
    let (k, v) = tag.split_once('=').unwrap();
    cmd.env(k, v).env("SHOAL_TIMEOUT", timeout);
    run_timed(&mut cmd, Duration::from_secs(600))
}

/// The rank of every record of the job's manifest, in order.
fn recorded_ranks(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["rank"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn r10_a_stopped_rank_ends_the_job_within_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let tag = unique_tag("stop");
    let out = tmp.path().join("job");
    let args = ["--fail-rank", "1", "--fail-after", "1", "--fail-mode", "stop"];
    let (o, took) = generate_with_timeout(2, &out, &args, &tag, "4");
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("rank 1/2 stopped: no heartbeat"), "{t}");
    // Rank 0's own share (5 images of 32², 2 steps) plus the 4 s timeout and the 2 s grace.
    assert!(took < Duration::from_secs(120), "took {took:?}: {t}");
    assert_none_left(&tag);
}

#[test]
fn r5_same_files_on_1_2_and_4_processes_and_both_schedules() {
    let tmp = tempfile::tempdir().unwrap();
    let tag = unique_tag("scale");
    let one = tmp.path().join("one");
    let o = generate(0, &one, &[], &tag);
    assert!(o.status.success(), "{}", text(&o));
    let reference = files(&one);
    assert_eq!(reference.len(), 10);
    for (n, schedule) in [(2, "static"), (4, "static"), (3, "dynamic")] {
        let out = tmp.path().join(format!("{n}-{schedule}"));
        let o = generate(n, &out, &["--schedule", schedule], &tag);
        assert!(o.status.success(), "{n} {schedule}: {}", text(&o));
        assert!(
            files(&out) == reference,
            "{n} processes, {schedule}: files differ from 1 process"
        );
        let manifest = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
        assert_eq!(manifest.lines().count(), 10, "one record per image");
        assert!(text(&o).contains(&format!("on {n} process(es)")), "{}", text(&o));
    }
    assert_none_left(&tag);
}

#[test]
fn r5_a_crash_mid_job_then_resume_completes_without_touching_finished_files() {
    let tmp = tempfile::tempdir().unwrap();
    let tag = unique_tag("crash");
    let reference = tmp.path().join("ref");
    assert!(generate(0, &reference, &[], &tag).status.success());
    let out = tmp.path().join("job");
    let o = generate(2, &out, &["--fail-rank", "1", "--fail-after", "2"], &tag);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(128 + 9), "{t}");
    assert!(t.contains("root cause: rank 1"), "{t}");
    assert_none_left(&tag);
    let before = files(&out);
    assert!(
        !before.is_empty() && before.len() < 10,
        "a partial job: {} files",
        before.len()
    );
    let mtimes: BTreeMap<String, std::time::SystemTime> = before
        .keys()
        .map(|k| {
            (
                k.clone(),
                std::fs::metadata(out.join(k)).unwrap().modified().unwrap(),
            )
        })
        .collect();
    let o = generate(2, &out, &["--resume"], &tag);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        files(&out) == files(&reference),
        "the resumed job must equal an uninterrupted one"
    );
    for (k, m) in mtimes {
        assert_eq!(
            std::fs::metadata(out.join(&k)).unwrap().modified().unwrap(),
            m,
            "{k} was rewritten"
        );
    }
    let manifest = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    let mut idx: Vec<u64> = manifest
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["index"]
                .as_u64()
                .unwrap()
        })
        .collect();
    idx.sort();
    idx.dedup();
    assert_eq!(idx, (0..10).collect::<Vec<_>>());
    // Resuming a finished job makes nothing.
    let o = generate(0, &out, &["--resume"], &tag);
    assert!(
        text(&o).contains("10 of 10 images done, 0 to make"),
        "{}",
        text(&o)
    );
}

#[test]
fn r5_resume_refuses_changed_parameters_and_reuse_needs_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let tag = unique_tag("refuse");
    let out = tmp.path().join("job");
    assert!(generate(0, &out, &[], &tag).status.success());
    let o = generate(0, &out, &[], &tag);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--resume"), "{}", text(&o));
    let o = generate(0, &out, &["--resume", "--seed", "5"], &tag);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("refusing to resume"), "{}", text(&o));
    let o = generate(0, &out, &["--resume", "--scheduler", "ddim"], &tag);
    assert!(
        text(&o).contains("scheduler: PNDMScheduler → DDIMScheduler"),
        "{}",
        text(&o)
    );
}

#[test]
fn r5_bad_and_hostile_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o_ = out.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut cmd = shoal();
        cmd.arg("generate")
            .args([
                "--steps", "1", "--height", "32", "--width", "32", "--quiet", "--out", o_,
            ])
            .args(args);
        run_timed(&mut cmd, Duration::from_secs(300)).0
    };
    let write = |name: &str, body: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_string()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--prompts-file".into(), write("empty.txt", b"\n\n")],
            "holds no prompt",
        ),
        (
            vec![
                "--prompts-file".into(),
                tmp.path().join("missing.txt").to_str().unwrap().into(),
            ],
            "missing.txt",
        ),
        (
            vec![
                "--prompts-file".into(),
                write("bad.jsonl", b"{\"prompt\": \"ok\"}\n{\"prompt\": \n"),
            ],
            "bad.jsonl:2",
        ),
        (
            vec![
                "--prompts-file".into(),
                write("field.jsonl", b"{\"prompt\": \"ok\", \"height\": 30}\n"),
            ],
            "height",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(
            text(&o).contains(needle),
            "{args:?} should mention {needle:?}: {}",
            text(&o)
        );
    }
    // Hostile and duplicate prompts: safe, unique names, all inside --out.
    let long = "ü".repeat(3000);
    let file = write(
        "hostile.jsonl",
        format!(
            "{{\"prompt\": \"../../escape/me\"}}\n{{\"prompt\": \"/etc/passwd\"}}\n{{\"prompt\": \"{long}\"}}\n\
             {{\"prompt\": \"a dog\"}}\n{{\"prompt\": \"a dog\"}}\n"
        )
        .as_bytes(),
    );
    let o = run(&["--prompts-file", &file]);
    assert!(o.status.success(), "{}", text(&o));
    let names: Vec<String> = files(&out).into_keys().collect();
    assert_eq!(names.len(), 5, "{names:?}");
    for n in &names {
        assert!(n.len() < 100 && !n.contains('/') && !n.contains(".."), "{n}");
    }
    assert!(!tmp.path().join("escape").exists());
}

#[test]
fn r12_one_job_folder_one_run_and_no_resume_without_job_json() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("job");
    let o = out.to_str().unwrap().to_string();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "generate", "--steps", "8", "--height", "64", "--width", "64", "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(
            [
                "--images-per-prompt",
                "4",
                "-p",
                "a dog",
                "-p",
                "a cat",
                "--out",
                &o,
            ]
            .map(String::from),
        );
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let mut first = shoal().args(args(&[])).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !out.join("job.lock").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        out.join("job.lock").exists(),
        "the first run never took the folder"
    );
    let second = shoal().args(args(&["--resume"])).output().unwrap();
    let t = text(&second);
    assert_eq!(second.status.code(), Some(2), "{t}");
    assert!(t.contains("another shoal generate"), "{t}");
    assert!(first.wait().unwrap().success());
    assert!(!out.join("job.lock").exists(), "the lock outlived its run");
    let manifest = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    assert_eq!(manifest.lines().count(), 8, "one record per image");
    // Without job.json nothing can check what made the images: --resume is refused.
    std::fs::remove_file(out.join("job.json")).unwrap();
    let again = shoal().args(args(&["--resume"])).output().unwrap();
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(text(&again).contains("no job.json"), "{}", text(&again));
}

/// Issue 15: CFG parallelism makes the same files as one process (byte for
/// byte on the CPU: the pipeline computes the two halves as separate UNet
/// calls whenever it is batch-invariant), on 2 and 4 processes and under both
/// schedules; only the unconditional rank of a pair writes and records.
#[test]
fn r15_cfg_parallel_same_files_on_2_and_4_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let tag = unique_tag("cfgpar");
    let one = tmp.path().join("one");
    let o = generate(0, &one, &[], &tag);
    assert!(o.status.success(), "{}", text(&o));
    let reference = files(&one);
    assert_eq!(reference.len(), 10);
    for (n, schedule) in [(2, "static"), (4, "static"), (4, "dynamic")] {
        let out = tmp.path().join(format!("{n}-{schedule}"));
        let o = generate(n, &out, &["--cfg-parallel", "--schedule", schedule], &tag);
        assert!(o.status.success(), "{n} {schedule}: {}", text(&o));
        assert!(
            files(&out) == reference,
            "--cfg-parallel on {n} processes ({schedule}): files differ from 1 process"
        );
        let ranks = recorded_ranks(&out);
        assert_eq!(ranks.len(), 10, "one record per image");
        assert!(
            ranks.iter().all(|r| r % 2 == 0),
            "records from odd ranks: {ranks:?}"
        );
        if n == 4 && schedule == "static" {
            assert!(ranks.contains(&2), "both pairs work: {ranks:?}");
        }
    }
    assert_none_left(&tag);
}

#[test]
fn r15_cfg_parallel_bad_combinations_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let tag = unique_tag("cfgbad");
    for (n, extra, want) in [
        (3, vec!["--cfg-parallel"], "even number of processes, not 3"),
        (0, vec!["--cfg-parallel"], "even number of processes, not 1"),
        (2, vec!["--cfg-parallel", "--guidance", "1"], "guidance 1"),
        (3, vec!["--vae-parallel"], "even number of processes, not 3"),
        (0, vec!["--vae-parallel"], "even number of processes, not 1"),
        (
            2,
            vec!["--vae-parallel", "--pipeline-parallel", "2"],
            "cannot be combined with --vae-parallel",
        ),
    ] {
        let out = tmp.path().join(format!("bad{n}-{}", extra.join("")));
        let o = generate(n, &out, &extra, &tag);
        assert_eq!(o.status.code(), Some(2), "{n} {extra:?}: {}", text(&o));
        assert!(text(&o).contains(want), "{n} {extra:?}: {}", text(&o));
        assert!(
            !out.join("job.json").exists(),
            "a refused job leaves no job behind"
        );
    }
    // A CFG-parallel job killed mid-way resumes, under CFG parallelism, to the same files.
    let reference = tmp.path().join("ref");
    assert!(generate(0, &reference, &[], &tag).status.success());
    let out = tmp.path().join("job");
    let o = generate(
        4,
        &out,
        &["--cfg-parallel", "--fail-rank", "2", "--fail-after", "1"],
        &tag,
    );
    assert_eq!(o.status.code(), Some(128 + 9), "{}", text(&o));
    let partial = files(&out).len();
    assert!(partial < 10, "a partial job: {partial} files");
    let o = generate(2, &out, &["--cfg-parallel", "--resume"], &tag);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        files(&out) == files(&reference),
        "the resumed job must equal an uninterrupted one"
    );
    assert_none_left(&tag);
}

/// Issue 15: the split VAE decode. Through `shoal launch`: `bench vae` on 2
/// and 3 processes stacks its bands to the whole decode (bound 1e-5 here, on
/// images in [0, 1]; the tiny model's differences are ~1e-6, from the order of
/// additions in the GroupNorm sums), and `generate --cfg-parallel
/// --vae-parallel` writes images within one 8-bit level of one process's.
#[test]
fn r15_split_vae_decode_equals_the_whole_decode() {
    let tag = unique_tag("vaesplit");
    for (n, h) in [(2, "64"), (3, "72")] {
        let mut cmd = shoal();
        cmd.args(["launch", "-n", &n.to_string(), "shoal", "bench", "vae"])
            .args([
                "--height",
                h,
                "--width",
                "40",
                "--reps",
                "1",
                "--batch",
                "2",
                "--max-diff",
                "1e-5",
            ]);
        let (k, v) = tag.split_once('=').unwrap();
        cmd.env(k, v);
        let (o, _) = run_timed(&mut cmd, Duration::from_secs(300));
        assert!(o.status.success(), "{n} bands: {}", text(&o));
        assert!(
            text(&o).contains(&format!("{n} band(s)")) && text(&o).contains("PASS"),
            "{}",
            text(&o)
        );
    }
    // More bands than latent rows: a usage error.
    let mut cmd = shoal();
    cmd.args([
        "launch", "-n", "3", "shoal", "bench", "vae", "--height", "16", "--width", "16",
    ]);
    let (k, v) = tag.split_once('=').unwrap();
    cmd.env(k, v);
    let (o, _) = run_timed(&mut cmd, Duration::from_secs(120));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("at least one latent row per process"),
        "{}",
        text(&o)
    );

    let tmp = tempfile::tempdir().unwrap();
    let one = tmp.path().join("one");
    assert!(generate(0, &one, &[], &tag).status.success());
    // With CFG parallelism, and on its own (the even process denoises, its
    // partner only decodes), on 2 processes and on 4 (two pairs), both schedules.
    let runs: [(usize, &[&str]); 5] = [
        (2, &["--cfg-parallel", "--vae-parallel"]),
        (4, &["--cfg-parallel", "--vae-parallel"]),
        (2, &["--vae-parallel"]),
        (4, &["--vae-parallel"]),
        (4, &["--vae-parallel", "--schedule", "dynamic"]),
    ];
    for (k, (n, extra)) in runs.iter().enumerate() {
        let out = tmp.path().join(format!("vp{k}"));
        let o = generate(*n, &out, extra, &tag);
        assert!(o.status.success(), "{n} {extra:?}: {}", text(&o));
        let (a, b) = (files(&one), files(&out));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for name in a.keys() {
            let o = shoal()
                .args(["image-diff", "--max", "0.004"])
                .arg(one.join(name))
                .arg(out.join(name))
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{n} processes {extra:?}, {name}: {}",
                text(&o)
            );
        }
        // The manifest records every image once, each by an even rank.
        let ranks = recorded_ranks(&out);
        assert_eq!(ranks.len(), a.len(), "{ranks:?}");
        assert!(ranks.iter().all(|r| r % 2 == 0), "{n} {extra:?}: {ranks:?}");
    }
    assert_none_left(&tag);
}

/// Issue 14: the SD UNet as pipeline stages (`generate --pipeline-parallel`):
/// the same files as one process on 2 stages (auto split) and 3 stages (named
/// split points, 2 items per block), with the ancestral scheduler's per-step
/// noise, and on an SDXL-shaped model (added conditioning in the carry).
#[test]
fn r14_unet_pipeline_same_files_as_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let tag = unique_tag("unetpipe");
    let one = tmp.path().join("one");
    assert!(
        generate(0, &one, &["--scheduler", "euler-a"], &tag)
            .status
            .success()
    );
    let reference = files(&one);
    for (n, extra) in [
        (2, vec!["--pipeline-parallel"]),
        (
            3,
            vec![
                "--pipeline-parallel",
                "--split-points",
                "down_blocks.1,up_blocks.0",
                "--batch-size",
                "2",
                "-v",
            ],
        ),
    ] {
        let out = tmp.path().join(format!("p{n}"));
        let mut args = extra.clone();
        args.extend(["--scheduler", "euler-a"]);
        let o = generate(n, &out, &args, &tag);
        let t = text(&o);
        assert!(o.status.success(), "{n}: {t}");
        assert!(t.contains("stage 1 (rank 1)"), "{t}");
        if n == 3 {
            // 10 items × 2 guidance halves × 2 model calls cross each link; each
            // half's text context crosses it once.
            for s in [0, 1] {
                assert!(
                    t.contains(&format!(
                        "stage {s}: 40 carries sent on, the text context whole 20 times"
                    )),
                    "{t}"
                );
            }
        }
        assert!(
            files(&out) == reference,
            "{n} stages: files differ from one process"
        );
    }
    // Other block sizes and micro-batch counts (on the CPU each item is its own
    // unit of the ring, so the chunk count cannot change a bit either).
    for (b, m) in [("4", "3"), ("9", "2")] {
        let out = tmp.path().join(format!("b{b}m{m}"));
        let args = [
            "--pipeline-parallel",
            "--batch-size",
            b,
            "--num-chunks",
            m,
            "--scheduler",
            "euler-a",
        ];
        let o = generate(2, &out, &args, &tag);
        assert!(o.status.success(), "{b} {m}: {}", text(&o));
        assert!(
            files(&out) == reference,
            "batch {b}, {m} chunks: files differ from one process"
        );
    }
    // Data parallelism across pipelines: 4 processes as 2 pipelines of 2
    // stages, each pipeline's first rank writing its share.
    let dp = tmp.path().join("dp");
    let args = ["--pipeline-parallel=2", "--scheduler", "euler-a"];
    let o = generate(4, &dp, &args, &tag);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("2 pipelines of 2 stages") && t.contains("per rank: [5, 0, 5, 0]"),
        "{t}"
    );
    assert!(
        files(&dp) == reference,
        "2 pipelines: files differ from one process"
    );
    // The pipelines' first ranks claiming blocks from the store's counter.
    let dyn_dir = tmp.path().join("dp-dynamic");
    let args = [
        "--pipeline-parallel=2",
        "--schedule",
        "dynamic",
        "--scheduler",
        "euler-a",
    ];
    let o = generate(4, &dyn_dir, &args, &tag);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        files(&dyn_dir) == reference,
        "2 pipelines, dynamic: files differ from one process"
    );
    for (n, bad, needle) in [
        (4, vec!["--pipeline-parallel=3"], "whole pipelines"),
        (2, vec!["--pipeline-parallel=1"], "at least 2 stages"),
        (2, vec!["--pipeline-parallel=x"], "--pipeline-parallel"),
    ] {
        let o = generate(n, &tmp.path().join("bad"), &bad, &tag);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", text(&o));
        assert!(text(&o).contains(needle), "{bad:?}: {}", text(&o));
    }
    // SDXL-shaped.
    let xl = tmp.path().join("xl");
    let (o, _) = run_timed(
        shoal().args([
            "make-model",
            "--preset",
            "tiny-sdxl",
            "--out",
            xl.to_str().unwrap(),
        ]),
        Duration::from_secs(120),
    );
    assert!(o.status.success(), "{}", text(&o));
    let model = ["--model", xl.to_str().unwrap()];
    let a = tmp.path().join("xl-one");
    assert!(generate(0, &a, &model, &tag).status.success());
    let b = tmp.path().join("xl-two");
    let o = generate(2, &b, &[&model[..], &["--pipeline-parallel"]].concat(), &tag);
    assert!(o.status.success(), "{}", text(&o));
    assert!(files(&a) == files(&b), "SDXL-shaped: files differ");
    // Bad combinations.
    for (n, extra, want) in [
        (0, vec!["--pipeline-parallel"], "at least 2 processes"),
        (
            2,
            vec!["--pipeline-parallel", "--cfg-parallel"],
            "cannot be combined with --cfg-parallel",
        ),
        (
            2,
            vec!["--pipeline-parallel", "--split-points", "mid"],
            "valid ones: down_blocks.0",
        ),
    ] {
        let out = tmp.path().join(format!("bad{n}"));
        let o = generate(n, &out, &extra, &tag);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", text(&o));
        assert!(text(&o).contains(want), "{extra:?}: {}", text(&o));
    }
    assert_none_left(&tag);
}

/// Issue 12: rank 0 checks what other ranks record: the file's sha256 itself
/// (the job folder is shared here), and under the static schedule that the
/// item was given to that rank. A rank sending dishonest records ends the job.
#[test]
fn r12_dishonest_records_end_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let tag = unique_tag("forge");
    for (mode, want) in [
        ("forge-sha", "but the file holds"),
        ("forge-item", "was given to rank 0"),
    ] {
        let out = tmp.path().join(mode);
        let o = generate(2, &out, &["--fail-rank", "1", "--fail-mode", mode], &tag);
        let t = text(&o);
        assert_ne!(o.status.code(), Some(0), "{mode}: {t}");
        assert!(t.contains(want) || t.contains("never recorded"), "{mode}: {t}");
        let manifest = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap_or_default();
        assert!(
            !manifest.contains(&"0".repeat(64)),
            "{mode}: a forged hash entered the manifest"
        );
    }
    assert_none_left(&tag);
}
