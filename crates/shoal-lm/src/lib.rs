//! Language models for shoal's pipeline parallelism: GPT-2 as transformers
//! writes it (`config.json`, `model.safetensors` with `transformer.*` names,
//! `Conv1D` weights stored `[in, out]`, the LM head tied to `wte`), with the
//! LM head (`GPT2LMHeadModel`) or the sequence-classification head
//! (`GPT2ForSequenceClassification`, the seed's example).
//!
//! The model is a list of named blocks (`transformer.wte`, `transformer.h.0`
//! …, `transformer.ln_f`) that run one range at a time on a [`Carry`], so a
//! process can hold and run one pipeline stage only.

mod config;
mod error;
mod gpt2;
mod make;

pub use config::{Gpt2Config, Head};
pub use error::{Error, Result};
pub use gpt2::{Carry, Gpt2};
pub use make::{PRESETS, make_gpt2};
