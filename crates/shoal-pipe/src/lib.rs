//! Pipeline parallelism (GPipe) for shoal: a model cut into stages, one per
//! process, the batch cut into micro-batches that flow through the stages.
//!
//! `plan.rs` is pure: stages from named split points or balanced by counted
//! cost (never inside a block), micro-batches like `split_between_processes`
//! (no padding). `exec.rs` runs this process's stage on every micro-batch,
//! receiving from the previous rank and sending to the next through the
//! process group, every receive bounded by the group's timeout and named.

mod error;
mod exec;
mod plan;

pub use error::{Error, Result};
pub use exec::{Named, PipeOutput, decode_named, encode_named, run_stage_loop};
pub use plan::{BlockCost, SplitPoints, micro_batches, plan_stages};
