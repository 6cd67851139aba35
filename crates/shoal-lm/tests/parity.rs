//! GPT-2 logits against transformers 5.17 (CPU, f32) on the models `shoal
//! make-model` writes (presets tiny-gpt2 and tiny-gpt2-cls, seed 1; fixtures
//! and the script that made them in `tests/fixtures/gpt2*`). Tolerance 1e-4
//! absolute on logits (f32 with a different order of additions).
#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use shoal_lm::{Gpt2, make_gpt2};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gpt2")
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn r14_gpt2_logits_match_transformers() {
    let ids = Tensor::read_npy(fixtures().join("ids.npy")).unwrap();
    let t = tempfile::tempdir().unwrap();
    for (preset, fixture, pad) in [
        ("tiny-gpt2", "lm.npy", None),
        ("tiny-gpt2-cls", "cls.npy", None),
        ("tiny-gpt2-cls", "cls_pad.npy", Some(0)),
    ] {
        let dir = t.path().join(fixture);
        make_gpt2(preset, &dir, 1, DType::F32).unwrap();
        if let Some(p) = pad {
            let path = dir.join("config.json");
            let mut c: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            c["pad_token_id"] = p.into();
            std::fs::write(&path, c.to_string()).unwrap();
        }
        let want = Tensor::read_npy(fixtures().join(fixture)).unwrap();
        let model = Gpt2::load(&dir, &Device::Cpu, DType::F32, 0..8).unwrap();
        let got = model.forward(&ids).unwrap();
        let d = max_diff(&got, &want);
        let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        eprintln!("{preset} {fixture}: max |Δ| {d:.2e}, max |logit| {scale:.3}");
        assert!(scale > 0.0);
        assert!(d <= 1e-4, "{preset} {fixture}: max |Δ| {d} (max |logit| {scale})");
    }
}
