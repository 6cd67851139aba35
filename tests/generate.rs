//! Issue 3: `shoal make-model` and `shoal generate` through the real binary,
//! including every bad input the issue lists.

use std::path::Path;
use std::time::Duration;

use crate::util::{run_timed, shoal, text};

fn make(preset: &str, out: &Path) {
    let (o, _) = run_timed(
        shoal().args(["make-model", "--preset", preset, "--out", out.to_str().unwrap()]),
        Duration::from_secs(120),
    );
    assert!(o.status.success(), "{}", text(&o));
}

fn generate(args: &[&str]) -> std::process::Output {
    let mut cmd = shoal();
    cmd.arg("generate")
        .args(["--steps", "2", "--height", "32", "--width", "32", "--quiet"])
        .args(args);
    run_timed(&mut cmd, Duration::from_secs(300)).0
}

fn pngs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn r3_generate_without_a_model_writes_a_png() {
    let out = tempfile::tempdir().unwrap();
    let o = generate(&["a red fox", "--out", out.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let files = pngs(out.path());
    assert_eq!(files.len(), 1);
    assert!(files[0].0.ends_with("-a-red-fox.png"), "{}", files[0].0);
    assert!(files[0].1.starts_with(b"\x89PNG\r\n\x1a\n"));
}

#[test]
fn r3_batching_does_not_change_any_image() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    make("tiny", &model);
    let m = model.to_str().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let args = [
        "--model",
        m,
        "-p",
        "a dog",
        "-p",
        "a cat",
        "--images-per-prompt",
        "2",
        "--scheduler",
        "euler-a",
    ];
    let o = generate(&[&args[..], &["--out", a.to_str().unwrap(), "--batch-size", "1"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    let o = generate(&[&args[..], &["--out", b.to_str().unwrap(), "--batch-size", "3"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    let (fa, fb) = (pngs(&a), pngs(&b));
    assert_eq!(fa.len(), 4);
    assert_eq!(fa, fb, "images must not depend on the batch size");
}

#[test]
fn r3_bad_inputs_are_clear_errors_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    make("tiny", &model);
    let m = model.to_str().unwrap();
    let out = tmp.path().join("out");
    let o_ = out.to_str().unwrap();
    let expect = |args: &[&str], needle: &str| {
        let o = generate(&[args, &["--out", o_]].concat());
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {t}");
        assert!(t.contains(needle), "{args:?} should mention {needle:?}: {t}");
        assert!(!t.contains("panicked"), "{t}");
    };
    expect(&["x", "--model", "/nonexistent/model"], "/nonexistent/model");
    expect(&["x", "--model", m, "--height", "30"], "height");
    expect(&["x", "--model", m, "--width", "0"], "width");
    expect(&["x", "--model", m, "--steps", "0"], "steps");
    expect(&["x", "--model", m, "--dtype", "f8"], "--dtype");
    expect(&["x", "--model", m, "--guidance", "NaN"], "guidance");
    expect(&["x", "--model", m, "--scheduler", "lms"], "dpm++2m");
    expect(&["--model", m], "no prompt");

    // A weight file cut in half.
    let broken = tmp.path().join("broken");
    make("tiny", &broken);
    let w = broken.join("unet/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    expect(&["x", "--model", broken.to_str().unwrap()], "truncated");
    // A Git LFS pointer instead of weights.
    std::fs::write(
        &w,
        "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n",
    )
    .unwrap();
    expect(&["x", "--model", broken.to_str().unwrap()], "Git LFS pointer");
    // No weights at all.
    std::fs::remove_file(&w).unwrap();
    expect(
        &["x", "--model", broken.to_str().unwrap()],
        "diffusion_pytorch_model.safetensors",
    );
    // A config that does not match the weights: wrong shapes, named with the file.
    let other = tmp.path().join("other");
    make("tiny", &other);
    let cfg = other.join("unet/config.json");
    let text_cfg = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"cross_attention_dim\": 32", "\"cross_attention_dim\": 48");
    std::fs::write(&cfg, text_cfg).unwrap();
    expect(&["x", "--model", other.to_str().unwrap()], "cross_attention_dim");
    let text_cfg = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"cross_attention_dim\": 48", "\"cross_attention_dim\": 32")
        .replace("\"layers_per_block\": 1", "\"layers_per_block\": 2");
    std::fs::write(&cfg, text_cfg).unwrap();
    expect(
        &["x", "--model", other.to_str().unwrap()],
        "unet/diffusion_pytorch_model.safetensors",
    );
    assert!(
        !out.exists() || pngs(&out).is_empty(),
        "nothing may be written on bad input"
    );
}

#[test]
fn r3_make_model_refuses_to_overwrite_and_unknown_presets() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    make("tiny", &m);
    let (o, _) = run_timed(
        shoal().args(["make-model", "--preset", "tiny", "--out", m.to_str().unwrap()]),
        Duration::from_secs(60),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("not empty"));
    let (o, _) = run_timed(
        shoal().args(["make-model", "--preset", "sd3", "--out", "/tmp/x"]),
        Duration::from_secs(60),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("sd15"));
}

/// Issue 12: inputs that used to panic, abort or allocate without bound are clear
/// errors (exit 2) before any work, and nothing is left in `--out`.
#[test]
fn r12_hostile_inputs_are_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    make("tiny", &m);
    let out = tmp.path().join("out");
    let o_s = out.to_str().unwrap();
    // A 16-byte .npy whose header claims 1e9 latents.
    let npy = tmp.path().join("huge.npy");
    let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 4, 64, 64), }";
    let h = format!("{h}{}\n", " ".repeat((64 - (10 + h.len() + 1) % 64) % 64));
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(h.len() as u16).to_le_bytes());
    bytes.extend_from_slice(h.as_bytes());
    bytes.extend_from_slice(&[0u8; 16]);
    std::fs::write(&npy, bytes).unwrap();
    let model = m.to_str().unwrap();
    let big = tmp.path().join("big.jsonl");
    std::fs::write(
        &big,
        "{\"prompt\": \"a\"}\n{\"prompt\": \"b\", \"height\": 4096, \"width\": 4096}\n",
    )
    .unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["a", "--model", model, "--latents", npy.to_str().unwrap()],
            "claims shape",
        ),
        (
            vec!["--model", model, "--prompts-file", "/dev/zero"],
            "not a regular file",
        ),
        // Activations far beyond the machine (the tiny model's 4096² VAE decode:
        // hundreds of GiB) are refused from the size estimate, not by the allocator.
        (
            vec!["--model", model, "--prompts-file", big.to_str().unwrap()],
            "GiB of activations",
        ),
    ];
    for (args, needle) in cases {
        let t0 = std::time::Instant::now();
        let o = generate(&[&args[..], &["--out", o_s]].concat());
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {t}");
        assert!(t.contains(needle), "{args:?}: {t}");
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{args:?} took {:?}",
            t0.elapsed()
        );
        assert!(!out.exists(), "{args:?} left {}", out.display());
    }
    // A config linked to /dev/zero, and a GroupNorm of zero groups (a remainder by zero before).
    for (comp, edit) in [
        ("unet", "zero groups"),
        ("vae", "zero groups"),
        ("unet", "dev zero"),
    ] {
        let bad = tmp.path().join(format!("bad-{comp}-{}", edit.replace(' ', "-")));
        make("tiny", &bad);
        let cfg = bad.join(comp).join("config.json");
        if edit == "dev zero" {
            std::fs::remove_file(&cfg).unwrap();
            std::os::unix::fs::symlink("/dev/zero", &cfg).unwrap();
        } else {
            let mut v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
            v["norm_num_groups"] = 0.into();
            std::fs::write(&cfg, v.to_string()).unwrap();
        }
        let o = generate(&["a", "--model", bad.to_str().unwrap(), "--out", o_s]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{comp} {edit}: {t}");
        let needle = if edit == "dev zero" {
            "not a regular file"
        } else {
            "norm_num_groups"
        };
        assert!(
            t.contains(needle) && t.contains("config.json"),
            "{comp} {edit}: {t}"
        );
        assert!(!t.contains("panicked"), "{t}");
        assert!(!out.exists());
        let plan = shoal()
            .args([
                "plan",
                "--model",
                bad.to_str().unwrap(),
                "--device-map",
                "balanced",
            ])
            .args(["--max-memory", "cpu=64GB"])
            .output()
            .unwrap();
        assert!(!text(&plan).contains("panicked"), "plan: {}", text(&plan));
        assert_ne!(plan.status.code(), Some(101), "plan: {}", text(&plan));
    }
    // Process counts.
    for args in [
        vec!["launch", "-n", "100000", "--", "true"],
        vec!["demo", "--spawn", "100000"],
    ] {
        let o = shoal().args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("1024"), "{args:?}: {}", text(&o));
    }
}

#[test]
fn r12_an_image_of_nan_is_an_error_naming_the_item() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = generate(&["a red fox", "--guidance", "1e39", "--out", out.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("item 0") && t.contains("NaN or infinity") && t.contains("guidance"),
        "{t}"
    );
    assert!(pngs(&out).is_empty(), "a PNG of NaN was written");
}

/// Issue 13 item 3: diffusers saves `"lambda_min_clipped": -Infinity` in every
/// DPM-Solver config (Python's json); such a folder loads.
#[test]
fn r13_python_json_numbers_in_a_saved_scheduler_config() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    make("tiny", &m);
    let cfg = m.join("scheduler").join("scheduler_config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v["_class_name"] = "DPMSolverMultistepScheduler".into();
    v["lambda_min_clipped"] = "@@".into();
    let saved = v.to_string().replace("\"@@\"", "-Infinity");
    assert!(saved.contains("-Infinity"));
    std::fs::write(&cfg, saved).unwrap();
    let out = tmp.path().join("out");
    let o = generate(&[
        "a red fox",
        "--model",
        m.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(pngs(&out).len(), 1);
}

/// Issue 13 item 2: text-encoder weights saved without the `text_model.` prefix
/// (transformers 5) load and give the same image, for SD and SDXL's two encoders.
#[test]
fn r13_text_encoder_weights_without_the_base_model_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    for preset in ["tiny", "tiny-sdxl"] {
        let a = tmp.path().join(format!("{preset}-a"));
        make(preset, &a);
        let b = tmp.path().join(format!("{preset}-b"));
        make(preset, &b);
        for enc in ["text_encoder", "text_encoder_2"] {
            let f = b.join(enc).join("model.safetensors");
            if !f.exists() {
                continue;
            }
            let m = candle_core::safetensors::load(&f, &candle_core::Device::Cpu).unwrap();
            let renamed: std::collections::HashMap<String, candle_core::Tensor> = m
                .into_iter()
                .map(|(k, v)| (k.strip_prefix("text_model.").unwrap_or(&k).to_string(), v))
                .collect();
            assert!(renamed.keys().all(|k| !k.starts_with("text_model.")));
            candle_core::safetensors::save(&renamed, &f).unwrap();
        }
        let run = |m: &Path, out: &Path| {
            let o = generate(&[
                "a red fox",
                "--seed",
                "5",
                "--model",
                m.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ]);
            assert!(o.status.success(), "{preset}: {}", text(&o));
            pngs(out)
        };
        let (pa, pb) = (
            run(&a, &tmp.path().join(format!("{preset}-oa"))),
            run(&b, &tmp.path().join(format!("{preset}-ob"))),
        );
        assert_eq!(pa.len(), 1);
        assert!(pa == pb, "{preset}: unprefixed weights gave another image");
    }
}

/// Issue 12: the job fingerprint holds the model by content. Other weights
/// written at the same path refuse `--resume` (naming the model); the same
/// files copied elsewhere resume the job; the per-file hashes are cached in the
/// job folder.
#[test]
fn r12_resume_knows_the_model_by_content_not_by_path() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    make("tiny", &m);
    let out = tmp.path().join("out");
    let o_s = out.to_str().unwrap();
    let o = generate(&["-p", "a", "-p", "b", "--model", m.to_str().unwrap(), "--out", o_s]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.join(".model-identity.json").is_file());
    // The same model, copied: resuming from the copy is the same job.
    let copy = tmp.path().join("copy");
    let cp = std::process::Command::new("cp")
        .args(["-r", m.to_str().unwrap(), copy.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(cp.success());
    let o = generate(&[
        "-p",
        "a",
        "-p",
        "b",
        "--model",
        copy.to_str().unwrap(),
        "--out",
        o_s,
        "--resume",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("2 of 2 images done, 0 to make"), "{}", text(&o));
    // Other weights (another seed) at the original path: refused.
    std::fs::remove_dir_all(&m).unwrap();
    let (o, _) = run_timed(
        shoal().args([
            "make-model",
            "--preset",
            "tiny",
            "--seed",
            "7",
            "--out",
            m.to_str().unwrap(),
        ]),
        Duration::from_secs(120),
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = generate(&[
        "-p",
        "a",
        "-p",
        "b",
        "--model",
        m.to_str().unwrap(),
        "--out",
        o_s,
        "--resume",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("model: sha256:"), "{}", text(&o));
}

/// Issue 13: a model whose tokenizer folder holds only `tokenizer.json` and
/// `tokenizer_config.json` (as transformers 5 saves it) makes the same image as
/// with vocab.json + merges.txt.
#[test]
fn r13_a_tokenizer_json_only_folder_makes_the_same_image() {
    use std::io::Read;
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    make("tiny", &m);
    let a = tmp.path().join("a");
    let o = generate(&[
        "a red fox",
        "--model",
        m.to_str().unwrap(),
        "--out",
        a.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let tok = m.join("tokenizer");
    for f in std::fs::read_dir(&tok).unwrap().flatten() {
        std::fs::remove_file(f.path()).unwrap();
    }
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer-t5");
    let mut json = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(fx.join("tokenizer.json.gz")).unwrap())
        .read_to_string(&mut json)
        .unwrap();
    std::fs::write(tok.join("tokenizer.json"), json).unwrap();
    std::fs::copy(
        fx.join("tokenizer_config.json"),
        tok.join("tokenizer_config.json"),
    )
    .unwrap();
    let b = tmp.path().join("b");
    let o = generate(&[
        "a red fox",
        "--model",
        m.to_str().unwrap(),
        "--out",
        b.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(pngs(&a), pngs(&b));
}

/// Issue 13: messages name where the problem is.
#[test]
fn r13_messages_name_the_line_and_the_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o_s = out.to_str().unwrap();
    let jsonl = tmp.path().join("p.jsonl");
    std::fs::write(
        &jsonl,
        "{\"prompt\": \"a\"}\n{\"prompt\": \"b\", \"height\": 65}\n",
    )
    .unwrap();
    let mixed = tmp.path().join("p.txt");
    std::fs::write(&mixed, "a fox\n{\"prompt\": \"b\"}\n").unwrap();
    for (file, want) in [
        (&jsonl, "p.jsonl:2: invalid height = 65"),
        (&mixed, "p.txt:2: a JSON item in a text prompts file"),
    ] {
        let o = generate(&["--prompts-file", file.to_str().unwrap(), "--out", o_s]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(want), "{}", text(&o));
        assert!(!out.exists());
    }
    let long = "fox ".repeat(100);
    let o = generate(&["a", "--negative-prompt", &long, "--out", o_s]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("warning: the negative prompt \"fox fox"),
        "{}",
        text(&o)
    );
}

/// Issue 13: a folder saved by diffusers 0.42.1 + transformers 5 (rebuilt byte
/// for byte from tests/fixtures/current) generates through the binary with its
/// own DPM-Solver++ config (`-Infinity` inside) and with diffusers' default
/// PNDM (Runge-Kutta warm-up), which needs 4 steps: fewer is a usage error.
#[test]
fn r13_a_folder_saved_by_current_diffusers_generates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = crate::current::rebuild("tiny", tmp.path(), |preset, out| {
        let (o, _) = run_timed(
            shoal()
                .args(["make-model", "--preset", preset, "--seed", "0", "--out"])
                .arg(out),
            Duration::from_secs(120),
        );
        assert!(o.status.success(), "{}", text(&o));
    });
    let m = dir.to_str().unwrap();
    let dpm = tmp.path().join("dpm");
    let o = generate(&["a red fox", "--model", m, "--out", dpm.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(pngs(&dpm).len(), 1);
    std::fs::copy(
        crate::current::fixtures().join("pndm-prk/scheduler_config.json"),
        dir.join("scheduler/scheduler_config.json"),
    )
    .unwrap();
    let few = tmp.path().join("few");
    let o = generate(&["a red fox", "--model", m, "--out", few.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("steps") && text(&o).contains("at least 4 steps"),
        "{}",
        text(&o)
    );
    assert!(
        !few.join("job.json").exists(),
        "a refused job leaves nothing behind"
    );
    let prk = tmp.path().join("prk");
    let mut cmd = shoal();
    cmd.args([
        "generate",
        "a red fox",
        "--model",
        m,
        "--steps",
        "4",
        "--height",
        "32",
        "--width",
        "32",
    ])
    .args(["--quiet", "--out", prk.to_str().unwrap()]);
    let (o, _) = run_timed(&mut cmd, Duration::from_secs(300));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(pngs(&prk).len(), 1);
    assert_ne!(pngs(&prk)[0].1, pngs(&dpm)[0].1);
}

/// Issue 13: plain `generate` in a terminal draws a bar over images and steps;
/// `--quiet` draws none.
#[test]
fn r13_generate_draws_a_bar_in_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let job = |extra: &[&str], out: &Path| {
        let mut cmd = shoal();
        cmd.args([
            "generate",
            "-p",
            "a fox",
            "--images-per-prompt",
            "2",
            "--batch-size",
            "1",
        ])
        .args(["--steps", "3", "--height", "32", "--width", "32"])
        .args(extra)
        .arg("--out")
        .arg(out);
        cmd
    };
    let (status, drawn) =
        crate::util::run_in_pty(&mut job(&[], &tmp.path().join("a")), Duration::from_secs(300));
    let text = String::from_utf8_lossy(&drawn);
    assert!(status.success(), "{text}");
    assert!(text.contains("2/2 images") && text.contains("img/s"), "{text}");
    // Rank 0's model calls (PLMS makes 4 of 3 steps); frames are drawn at most 10 times a second.
    assert!(text.contains("step ") && text.contains("/4"), "{text}");
    let (status, drawn) = crate::util::run_in_pty(
        &mut job(&["--quiet"], &tmp.path().join("b")),
        Duration::from_secs(300),
    );
    let text = String::from_utf8_lossy(&drawn);
    assert!(status.success(), "{text}");
    assert!(!text.contains("images  "), "{text}");
}

/// Issue 11 (first image after start): a new job on a model hashed before
/// reads no weight for its identity — the per-file hashes are kept per user
/// (`SHOAL_CACHE_DIR`, private folder); replaced weights are hashed again and
/// still refuse a resume of the old job.
#[test]
fn r11_a_new_job_on_a_known_model_hashes_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    make("tiny", &m);
    let cache = tmp.path().join("cache");
    let job = |out: &str, extra: &[&str]| {
        let mut cmd = shoal();
        cmd.env("SHOAL_CACHE_DIR", &cache)
            .args([
                "-v", "generate", "-p", "a", "--steps", "1", "--height", "32", "--width", "32", "--quiet",
            ])
            .arg("--model")
            .arg(&m)
            .arg("--out")
            .arg(tmp.path().join(out))
            .args(extra);
        let (o, _) = run_timed(&mut cmd, Duration::from_secs(120));
        (o.status.code(), text(&o))
    };
    let (code, first) = job("one", &[]);
    assert_eq!(code, Some(0), "{first}");
    assert!(first.contains("model identity: hashed 12 file(s)"), "{first}");
    let meta = std::fs::metadata(&cache).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o700,
        "the cache folder is the user's alone"
    );
    let (code, second) = job("two", &[]);
    assert_eq!(code, Some(0), "{second}");
    assert!(
        second.contains("model identity: hashed 0 file(s)") && second.contains("12 unchanged"),
        "{second}"
    );
    // Other weights at the same path: hashed again, and the first job knows it is another model.
    let w = m.join("unet/diffusion_pytorch_model.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&w, bytes).unwrap();
    let (code, resumed) = job("one", &["--resume"]);
    assert_eq!(code, Some(2), "{resumed}");
    assert!(resumed.contains("model identity: hashed 1 file(s)"), "{resumed}");
}

/// Issue 11 (first image after start, CUDA graphs): `SHOAL_CUDNN_PREBUILD` and
/// `SHOAL_CUDA_GRAPHS` are read and checked before any weight is read (a bad
/// value is a usage error naming it); on a machine without the GPU kernels they
/// change nothing, so the image is the same bytes either way.
#[test]
fn r11_plan_prebuild_setting_is_checked_and_changes_no_image() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |out: &str, var: &str, v: Option<&str>| {
        let mut cmd = shoal();
        cmd.args([
            "generate", "-p", "a", "--steps", "2", "--height", "32", "--width", "32", "--quiet", "--out",
        ])
        .arg(tmp.path().join(out));
        if let Some(v) = v {
            cmd.env(var, v);
        }
        let (o, _) = run_timed(&mut cmd, Duration::from_secs(120));
        o
    };
    // Both GPU settings are read and checked wherever the job runs: a bad value is a
    // usage error naming the variable, and nothing is written.
    for (var, bad_value, out) in [
        ("SHOAL_CUDNN_PREBUILD", "lots", "bad"),
        ("SHOAL_CUDA_GRAPHS", "yes", "bad-graphs"),
    ] {
        let bad = run(out, var, Some(bad_value));
        assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
        assert!(
            text(&bad).contains(&format!("{var}=\"{bad_value}\"")),
            "{}",
            text(&bad)
        );
        assert!(!tmp.path().join(out).exists(), "nothing is written");
    }
    let a = run("a", "SHOAL_CUDNN_PREBUILD", None);
    let b = run("b", "SHOAL_CUDNN_PREBUILD", Some("0"));
    let c = run("c", "SHOAL_CUDA_GRAPHS", Some("0"));
    for o in [&a, &b, &c] {
        assert!(o.status.success(), "{}", text(o));
    }
    assert_eq!(pngs(&tmp.path().join("a")), pngs(&tmp.path().join("b")));
    assert_eq!(pngs(&tmp.path().join("a")), pngs(&tmp.path().join("c")));
}
