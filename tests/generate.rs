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
