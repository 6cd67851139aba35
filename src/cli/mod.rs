//! Command-line parsing and dispatch.
//!
//! Raw flags are clap structs; each subcommand validates them into the
//! libraries' typed arguments (ripgrep's lowargs → hiargs split). Exit codes:
//! 0 success, 1 failure, 2 usage or config error (clap's own errors too); a
//! failed `launch` exits with the root-cause worker's code (128 + signal for a
//! signal). See README.md.

mod args;
mod bench;
mod bench_ops;
mod bench_ops_peer;
mod bench_peer;
mod bench_vae;
mod config;
mod demo;
mod env;
mod generate;
mod image_diff;
mod launch;
mod make_model;
mod pippy;
mod plan;

use clap::{Parser, Subcommand};

/// Distributed inference for diffusion models.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, propagate_version = true)]
pub struct Cli {
    /// More diagnostics: -v debug, -vv trace (SHOAL_LOG, an env-filter, overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a distributed job: N processes of PROGRAM with the launcher environment.
    Launch(launch::LaunchCmd),
    /// Write or show the launch configuration (accelerate-compatible).
    #[command(subcommand)]
    Config(config::ConfigCmd),
    /// Print version, build features, devices and the detected launcher environment.
    Env(env::EnvCmd),
    /// A small distributed demo: splits prompts and checks every collective.
    Demo(demo::DemoCmd),
    /// Generate images from prompts with a Stable Diffusion model.
    Generate(Box<generate::GenerateCmd>),
    /// Write a model with random weights in the diffusers layout.
    MakeModel(make_model::MakeModelCmd),
    /// Benchmarks that print tables: `sd` (the pipeline), `comm` (collectives), `ops` (each GPU
    /// kernel against the plain path and PyTorch), `vae` (the split decode).
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Compare two PNG images (largest per-channel difference in [0, 1]).
    ImageDiff(image_diff::ImageDiffCmd),
    /// Print a device map for a model without loading weights.
    Plan(plan::PlanCmd),
    /// Pipeline parallelism on GPT-2 (the seed's `prepare_pippy` example): one
    /// stage per process under `shoal launch`.
    Pippy(pippy::PippyCmd),
    /// Writes every kernel module's PTX as HASH-LEN-NAME.ptx into a folder (the GPU
    /// build compiles them to SASS and embeds them: scripts/gpu/build.sh).
    #[cfg(feature = "sass")]
    #[command(hide = true)]
    KernelPtx {
        /// The folder to write to (created).
        out: std::path::PathBuf,
    },
}

/// An error that is the user's to fix: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs the command line and returns the process exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap exits 2 on usage errors and 0 for --help / --version.
            let _ = e.print();
            return e.exit_code();
        }
    };
    crate::log::init(cli.verbose, matches!(cli.command, Command::Launch(_)));
    #[cfg(feature = "sass")]
    shoal_kernels::sass::install();
    let result = match cli.command {
        Command::Launch(c) => launch::run(c),
        Command::Config(c) => config::run(c),
        Command::Env(c) => env::run(c),
        Command::Demo(c) => demo::run(c),
        Command::Generate(c) => generate::run(*c),
        Command::MakeModel(c) => make_model::run(c),
        Command::Bench(c) => bench::run(c),
        Command::ImageDiff(c) => image_diff::run(c),
        Command::Plan(c) => plan::run(c),
        Command::Pippy(c) => pippy::run(c),
        #[cfg(feature = "sass")]
        Command::KernelPtx { out } => write_kernel_ptx(&out),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            // Always shown, whatever SHOAL_LOG says.
            eprintln!(
                "shoal[{}] error: {}",
                crate::log::who(),
                crate::log::error_line(&e)
            );
            exit_code(&e)
        }
    }
}

#[cfg(feature = "sass")]
fn write_kernel_ptx(out: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, ptx) in shoal_kernels::sass::ptx_modules() {
        let path = out.join(format!("{}.ptx", shoal_kernels::sass::file_stem(name, ptx)));
        std::fs::write(&path, ptx).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

fn exit_code(e: &anyhow::Error) -> i32 {
    if let Some(l) = e.downcast_ref::<shoal_launch::Error>() {
        return l.exit_code();
    }
    if e.downcast_ref::<UsageError>().is_some() {
        return 2;
    }
    if let Some(g) = e.downcast_ref::<shoal_engine::Error>() {
        return match g {
            shoal_engine::Error::Model(d) => diffusion_code(d),
            shoal_engine::Error::Dist(d) => dist_code(d),
            g if g.is_usage() => 2,
            _ => 1,
        };
    }
    if let Some(d) = e.downcast_ref::<shoal_diffusion::Error>() {
        return diffusion_code(d);
    }
    if let Some(p) = e.downcast_ref::<shoal_pipe::Error>() {
        return match p {
            shoal_pipe::Error::Plan(_) => 2,
            shoal_pipe::Error::Dist(d) => dist_code(d),
            _ => 1,
        };
    }
    match e.downcast_ref::<shoal_dist::Error>() {
        Some(d) => dist_code(d),
        None => 1,
    }
}

/// A bad model folder or argument is the user's to fix (2); the rest failed (1).
fn diffusion_code(d: &shoal_diffusion::Error) -> i32 {
    use shoal_diffusion::Error as D;
    match d {
        D::MissingFile { .. }
        | D::BadFile { .. }
        | D::Config { .. }
        | D::Weight { .. }
        | D::InvalidArgument { .. } => 2,
        _ => 1,
    }
}

fn dist_code(d: &shoal_dist::Error) -> i32 {
    match d {
        shoal_dist::Error::Env { .. } | shoal_dist::Error::InvalidArgument { .. } => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod help_tests {
    use clap::CommandFactory;

    /// Every visible flag and argument of every subcommand has a description
    /// (issue 13: `shoal <cmd> --help` explains each flag).
    #[test]
    fn every_flag_is_described() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if a.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for s in cmd.get_subcommands() {
                if s.get_about().is_none() && s.get_name() != "help" {
                    missing.push(format!("{path} {} (no description)", s.get_name()));
                }
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "shoal", &mut missing);
        assert!(missing.is_empty(), "undescribed: {missing:#?}");
    }
}
