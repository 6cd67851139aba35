//! Helpers shared by the parity tests.
#![allow(dead_code, reason = "each test crate uses its own part")]

#[allow(clippy::panic, reason = "a fixture that cannot be rebuilt stops the test")]
pub mod current;

use std::path::Path;

use candle_core::Tensor;
use shoal_diffusion::Params;

/// Tolerance of every parity test: max |Δ| on latents and on images in [0, 1].
pub const TOLERANCE: f32 = 1e-3;

/// The largest absolute difference between two tensors of one shape.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Compares a run's final latents and images with the fixture `name` in `dir`
/// (`{name}-latents.npy`, `{name}-image.npy`) within [`TOLERANCE`].
pub fn assert_matches(dir: &Path, name: &str, latents: &Tensor, images: &Tensor) {
    let want_l = Tensor::read_npy(dir.join(format!("{name}-latents.npy"))).unwrap();
    let want_i = Tensor::read_npy(dir.join(format!("{name}-image.npy"))).unwrap();
    let (dl, di) = (max_diff(latents, &want_l), max_diff(images, &want_i));
    eprintln!("{name}: max |Δ| latents {dl:e}, image {di:e}");
    assert!(
        dl < TOLERANCE && di < TOLERANCE,
        "{name}: max |Δ| latents {dl:e}, image {di:e}"
    );
}

/// A fixture folder's inputs shared by its cases: the initial latents
/// (`latents.npy`), the ancestral schedulers' per-step noise
/// (`step_noise.npy`) and the parameters of `meta` (`steps`, `guidance`, a
/// square `size`).
pub fn inputs(dir: &Path, meta: &serde_json::Value) -> (Tensor, Tensor, Params) {
    let latents = Tensor::read_npy(dir.join("latents.npy")).unwrap().get(0).unwrap();
    let noise = Tensor::read_npy(dir.join("step_noise.npy"))
        .unwrap()
        .squeeze(1)
        .unwrap();
    let size = meta["size"].as_u64().unwrap() as usize;
    let params = Params {
        steps: meta["steps"].as_u64().unwrap() as usize,
        guidance: meta["guidance"].as_f64().unwrap(),
        height: size,
        width: size,
    };
    (latents, noise, params)
}
