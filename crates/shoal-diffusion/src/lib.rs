//! Stable Diffusion pipelines (SD 1.x, 2.x, XL) on candle, loaded from the
//! diffusers folder layout.
//!
//! ```no_run
//! use shoal_diffusion::{Item, Params, Pipeline, LoadOptions};
//! let pipe = Pipeline::load("models/sd15".as_ref(), &candle_core::Device::Cpu,
//!                           candle_core::DType::F32, &LoadOptions::default())?;
//! let items = [Item { prompt: "a red fox".into(), negative_prompt: None, seed: 0,
//!                     latents: None, step_noise: None }];
//! let params = Params { steps: 30, guidance: 7.5, height: 512, width: 512 };
//! let out = pipe.generate(&items, &params, &mut |_, _| {})?;
//! # Ok::<(), shoal_diffusion::Error>(())
//! ```

pub mod clip;
pub mod config;
mod error;
pub mod image;
pub mod make_model;
pub mod nn;
pub mod pipeline;
pub mod presets;
pub mod random;
pub mod scheduler;
pub mod sizes;
#[cfg(test)]
mod test_util;
pub mod tokenizer;
pub mod unet;
pub mod vae;
pub mod weights;

pub use error::{Error, Result};
pub use make_model::make_model;
pub use pipeline::{
    CfgHalf, CfgPartner, Denoised, Item, LoadOptions, ModelInfo, Output, Params, Pipeline, StageRing,
};
