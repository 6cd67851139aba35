//! The job engine: the only driver of jobs.
//!
//! The binary parses flags and calls [`run_job`]; the engine takes the work
//! items, asks rank 0 what is left (opening or resuming the job folder), takes
//! blocks from a [`Source`] (the static split, or a counter in the store),
//! runs the pipeline on each, and hands the images to a sink that writes them
//! atomically and reports a record. Rank 0's monitor runs on its own thread:
//! it moves records into `manifest.jsonl`, draws the bar, and waits for every
//! rank's end with a bound (heartbeats; `SHOAL_TIMEOUT`), never from inside a
//! denoising step.
//!
//! [`placement::resolve`] is the one pure function from placement flags to a
//! placement choice, shared by `generate` and `bench`.

mod bands;
mod error;
pub mod files;
mod identity;
mod job;
mod monitor;
pub mod placement;
mod ring;
mod source;

pub use bands::Bands;
pub use error::{Error, Result};
pub use files::write_atomic;
pub use identity::{IDENTITY_CACHE, ModelIdentity};
pub use job::{JobConfig, Made, Ranks, Sink, Summary, check_cfg_parallel, check_pairs, run_job};
pub use monitor::Progress;
pub use ring::Ring;
pub use source::{Source, StaticSource, StoreCounter};
