//! shoal: distributed inference for diffusion models, on candle.
//!
//! This facade re-exports the library crates so that programs (and the
//! examples) read like the seed documents:
//!
//! ```no_run
//! use shoal::dist::DistributedState;
//! let state = DistributedState::new()?;
//! let part = state.split_between_processes(&["a dog", "a cat"][..], false)?;
//! println!("rank {} got {:?}", state.process_index(), part.items);
//! # Ok::<(), shoal::dist::Error>(())
//! ```

pub mod inference;

pub use shoal_diffusion as diffusion;
pub use shoal_dist as dist;
pub use shoal_engine as engine;
pub use shoal_jobs as jobs;
pub use shoal_launch as launch;
pub use shoal_lm as lm;
pub use shoal_pipe as pipe;

pub use shoal_dist::{DistributedState, ProcessGroup, init_process_group, split_between_processes};
pub use shoal_launch::spawn;

/// README's Rust examples are compiled as doc tests, so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
