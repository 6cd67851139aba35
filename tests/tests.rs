#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on a broken precondition"
)]

//! The integration suite: one binary that runs the real `shoal` executable
//! (ripgrep's layout). Regression tests are named after their issue.

mod util;

mod cli;
mod generate;
mod jobs;
mod launch;
mod pippy;
mod plan;
