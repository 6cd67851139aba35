//! An item's result must not depend on the batch it runs in (issues 3 and 5):
//! the same item alone and next to others gives bit-identical latents and images.
#![allow(clippy::unwrap_used, reason = "a test fails loudly on a broken precondition")]

use candle_core::{DType, Device};
use shoal_diffusion::{Item, LoadOptions, Params, Pipeline};

fn item(prompt: &str, seed: u64) -> Item {
    Item {
        prompt: prompt.into(),
        negative_prompt: None,
        seed,
        latents: None,
        step_noise: None,
    }
}

fn check(preset: &str, scheduler: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(preset);
    let p = shoal_diffusion::presets::preset(preset).unwrap();
    shoal_diffusion::make_model(&p, &dir, 0, DType::F32, &mut |_, _| {}).unwrap();
    let opts = LoadOptions {
        scheduler: Some(scheduler.into()),
        variant: None,
        batch_invariant: None,
        ..Default::default()
    };
    let pipe = Pipeline::load(&dir, &Device::Cpu, DType::F32, &opts).unwrap();
    let params = Params {
        steps: 3,
        guidance: 7.5,
        height: 32,
        width: 32,
    };
    let alone = pipe
        .generate(&[item("a cat", 7)], &params, &mut |_, _| {})
        .unwrap();
    let batch = [
        item("a dog", 3),
        item("a cat", 7),
        item("a very long prompt about a chicken", 9),
    ];
    let together = pipe.generate(&batch, &params, &mut |_, _| {}).unwrap();
    let a: Vec<f32> = alone.images.flatten_all().unwrap().to_vec1().unwrap();
    let t: Vec<f32> = together
        .images
        .get(1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(a == t, "{preset}/{scheduler}: the image changed with the batch");
    let a: Vec<f32> = alone.latents.flatten_all().unwrap().to_vec1().unwrap();
    let t: Vec<f32> = together
        .latents
        .get(1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(a == t, "{preset}/{scheduler}: the latents changed with the batch");
}

#[test]
fn r3_sd1_results_do_not_depend_on_the_batch() {
    check("tiny", "euler-a");
}

#[test]
fn r3_sdxl_results_do_not_depend_on_the_batch() {
    check("tiny-sdxl", "dpm++2m");
}
