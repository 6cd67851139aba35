//! Issue 3: shoal's pipeline against diffusers, on tiny SD1-, SD2- and
//! SDXL-shaped models written by `make-model`, for every scheduler.
//!
//! The expected arrays were made by `tests/fixtures/make_fixtures.py`
//! (diffusers 0.42.1, torch 2.15.0, f32 on CPU; regenerate with the command in
//! its docstring). Tolerance: max |Δ| < 1e-3 on latents and on images in [0, 1].
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on a broken precondition"
)]

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde_json::Value;
use sha2::{Digest, Sha256};
use shoal_diffusion::tokenizer::ClipTokenizer;
use shoal_diffusion::{Item, LoadOptions, Pipeline};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/parity")
}

fn meta() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("meta.json")).unwrap()).unwrap()
}

/// Writes a preset with seed 0 and checks its weights are the ones the fixtures used.
fn model(preset: &str, dir: &Path) -> PathBuf {
    let out = dir.join(preset);
    let p = shoal_diffusion::presets::preset(preset).unwrap();
    shoal_diffusion::make_model(&p, &out, 0, DType::F32, &mut |_, _| {}).unwrap();
    for (key, want) in meta()["weights"].as_object().unwrap() {
        let Some(rel) = key.strip_prefix(&format!("{preset}/")) else {
            continue;
        };
        let got = format!("{:x}", Sha256::digest(std::fs::read(out.join(rel)).unwrap()));
        assert_eq!(
            &got,
            want.as_str().unwrap(),
            "{key}: make-model's weights changed since the fixtures were made; \
             regenerate them with tests/fixtures/make_fixtures.py"
        );
    }
    out
}

fn check_preset(preset: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(preset, tmp.path());
    let m = meta();
    let f = fixtures();
    let (latents, noise, params) = common::inputs(&f, &m);
    let mut ran = 0;
    for case in m["cases"].as_array().unwrap() {
        if case["preset"] != preset {
            continue;
        }
        let sched = case["scheduler"].as_str().unwrap();
        let opts = LoadOptions {
            scheduler: Some(sched.to_string()),
            variant: None,
            batch_invariant: None,
            ..Default::default()
        };
        let pipe = Pipeline::load(&dir, &Device::Cpu, DType::F32, &opts).unwrap();
        let item = Item {
            prompt: m["prompt"].as_str().unwrap().to_string(),
            negative_prompt: None,
            seed: 0,
            latents: Some(latents.clone()),
            step_noise: Some(noise.clone()),
        };
        let out = pipe.generate(&[item], &params, &mut |_, _| {}).unwrap();
        let name = case["name"].as_str().unwrap();
        common::assert_matches(&f, name, &out.latents, &out.images);
        ran += 1;
    }
    assert!(ran > 0, "no fixture for {preset}");
}

#[test]
fn r3_parity_sd1_shaped_every_scheduler() {
    check_preset("tiny");
}

#[test]
fn r3_parity_sd2_shaped_v_prediction() {
    check_preset("tiny-sd2");
}

#[test]
fn r3_parity_sdxl_shaped() {
    check_preset("tiny-sdxl");
}

#[test]
fn r3_tokenizer_matches_transformers_clip_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("t");
    let p = shoal_diffusion::presets::preset("tiny").unwrap();
    shoal_diffusion::make_model(&p, &out, 0, DType::F32, &mut |_, _| {}).unwrap();
    let tok = ClipTokenizer::from_dir(&out.join("tokenizer")).unwrap();
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokens.json")).unwrap()).unwrap();
    for (prompt, ids) in v["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(v["ids"].as_array().unwrap())
    {
        let want: Vec<u32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            tok.encode(prompt.as_str().unwrap()).unwrap().ids,
            want,
            "{prompt}"
        );
    }
}
