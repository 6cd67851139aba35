//! Issue 13: model folders as current diffusers (0.42.1) + transformers (5.17)
//! save them (`tokenizer.json` only, DPM-Solver++'s config with
//! `"lambda_min_clipped": -Infinity`) load, and give diffusers' latents and
//! images for every scheduler: DPM-Solver++ with the saved config, PNDM with
//! Runge-Kutta warm-up steps (`skip_prk_steps: false`), and PNDM (PLMS),
//! DDIM, Euler and Euler ancestral built from the saved config (SDXL-shaped:
//! DPM-Solver++ and Euler). Fixtures: `tests/fixtures/make_current.py` (f32, CPU).
//! Tolerance: max |Δ| < 1e-3 on latents and on images in [0, 1].
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on a broken precondition"
)]

mod common;

use std::path::Path;

use candle_core::{DType, Device};
use common::current;
use shoal_diffusion::{Item, LoadOptions, Pipeline};

fn make(preset: &str, dir: &Path) {
    let p = shoal_diffusion::presets::preset(preset).unwrap();
    shoal_diffusion::make_model(&p, dir, 0, DType::F32, &mut |_, _| {}).unwrap();
}

fn check(preset: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = current::rebuild(preset, tmp.path(), make);
    // What makes the folder "current": no vocab.json/merges.txt, Python's -Infinity.
    assert!(dir.join("tokenizer/tokenizer.json").is_file());
    assert!(!dir.join("tokenizer/vocab.json").exists());
    let sched_file = dir.join("scheduler/scheduler_config.json");
    let saved = std::fs::read_to_string(&sched_file).unwrap();
    assert!(saved.contains("-Infinity"), "{saved}");
    let m = current::meta();
    let fx = current::fixtures();
    let (latents, noise, params) = common::inputs(&fx, &m);
    let mut ran = 0;
    for case in m["cases"].as_array().unwrap() {
        if case["preset"] != preset {
            continue;
        }
        let source = case["scheduler"].as_str().unwrap();
        let mut opts = LoadOptions::default();
        if source.contains('/') {
            std::fs::copy(fx.join(source), &sched_file).unwrap();
        } else {
            std::fs::write(&sched_file, &saved).unwrap();
            if source != "folder" {
                opts.scheduler = Some(source.to_string());
            }
        }
        let pipe = Pipeline::load(&dir, &Device::Cpu, DType::F32, &opts).unwrap();
        assert_eq!(pipe.info().scheduler_class, case["class"].as_str().unwrap());
        let item = Item {
            prompt: m["prompt"].as_str().unwrap().to_string(),
            negative_prompt: None,
            seed: 0,
            latents: Some(latents.clone()),
            step_noise: Some(noise.clone()),
        };
        let mut calls = 0;
        let out = pipe.generate(&[item], &params, &mut |_, _| calls += 1).unwrap();
        let name = case["name"].as_str().unwrap();
        assert_eq!(
            calls,
            case["model_calls"].as_u64().unwrap() as usize,
            "{name}: model calls"
        );
        common::assert_matches(&fx, name, &out.latents, &out.images);
        ran += 1;
    }
    assert!(ran > 0, "no fixture for {preset}");
}

#[test]
fn r13_current_sd1_folder_every_scheduler() {
    check("tiny");
}

#[test]
fn r13_current_sdxl_folder_dpm_and_euler() {
    check("tiny-sdxl");
}
