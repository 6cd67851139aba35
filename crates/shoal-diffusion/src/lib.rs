//! Stable Diffusion pipelines (SD 1.x, 2.x, XL) on candle, loaded from the
//! diffusers folder layout.

pub mod config;
mod error;
pub mod tokenizer;

pub use error::{Error, Result};
