//! The shoal launcher: the analog of `accelerate launch` and `torchrun`.
//!
//! - [`config`]: accelerate-compatible config files;
//! - [`plan`]: flags + config + parent environment → a [`LaunchPlan`] (pure);
//! - [`supervise`]: gang supervision of worker processes;
//! - [`launch()`] and [`spawn`]: the thin layer that binds the store and starts
//!   the workers.

pub mod bar;
pub mod config;
mod error;
mod launch;
pub mod plan;
pub mod supervise;

pub use bar::{JobBar, LineReporter};
pub use config::{LaunchConfig, default_config_path};
pub use error::{Error, Exit, Result, signal_name};
pub use launch::{SHOAL_SPAWN_CHILD, launch, resolve_program, spawn};
pub use plan::{LaunchArgs, LaunchPlan, ParentEnv, plan};
pub use supervise::{NoPeers, Outcome, Peers, SuperviseOptions, WorkerSpec, hostname, supervise};
