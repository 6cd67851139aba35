#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on a broken precondition"
)]

//! The integration suite: one binary that runs the real `shoal` executable
//! (ripgrep's layout). Regression tests are named after their issue.

/// Model folders as current diffusers + transformers save them (issue 13).
#[allow(clippy::panic, reason = "a fixture that cannot be rebuilt stops the test")]
#[path = "../crates/shoal-diffusion/tests/common/current.rs"]
mod current;
mod util;

mod cli;
mod generate;
mod jobs;
mod launch;
mod pippy;
mod plan;
