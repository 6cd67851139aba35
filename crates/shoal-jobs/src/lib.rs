//! Batch image jobs: work items from prompts, safe output names, the job
//! fingerprint and manifest for `--resume`, and the static / dynamic schedules.
//! Everything here is pure or touches only the job folder; the pipeline and
//! the process group are driven by the `shoal` binary.

mod error;
pub mod identity;
pub mod items;
pub mod manifest;
pub mod naming;
pub mod schedule;

pub use error::{Error, Result};
pub use items::{Defaults, Entry, GenParams, WorkItem, expand, item_seed, parse_prompts_file};
pub use manifest::{
    JobLock, JobSpec, LOCK_FILE, OnDisk, Record, ResumePlan, lock_job, open_job, plan_resume, read_manifest,
};
pub use naming::{file_name, slug};
