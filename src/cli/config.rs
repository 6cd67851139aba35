//! `shoal config default` and `shoal config show`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use shoal_launch::LaunchConfig;

use super::UsageError;

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Write a default config (never overwrites an existing file).
    Default {
        /// Where to write (default: $SHOAL_CONFIG_FILE or ~/.config/shoal/default_config.yaml).
        #[arg(long = "config-file", alias = "config_file")]
        config_file: Option<PathBuf>,
        /// Processes in total (default: unset, decided at launch).
        #[arg(long = "num-processes", alias = "num_processes")]
        num_processes: Option<usize>,
        /// `all` or e.g. `0,1`.
        #[arg(long = "gpu-ids", alias = "gpu_ids")]
        gpu_ids: Option<String>,
    },
    /// Show the config a launch would use.
    Show {
        /// The file to show (default: shoal's default file).
        #[arg(long = "config-file", alias = "config_file")]
        config_file: Option<PathBuf>,
    },
}

fn default_path() -> Result<PathBuf> {
    let vars = |k: &str| std::env::var(k).ok();
    shoal_launch::default_config_path(&vars).ok_or_else(|| {
        UsageError("cannot find a default config location: set HOME or pass --config-file".into()).into()
    })
}

pub fn run(c: ConfigCmd) -> Result<()> {
    match c {
        ConfigCmd::Default {
            config_file,
            num_processes,
            gpu_ids,
        } => {
            if num_processes == Some(0) {
                return Err(UsageError("invalid --num-processes: must be at least 1".into()).into());
            }
            if let Some(ids) = &gpu_ids {
                shoal_launch::config::check_gpu_ids(ids)?;
            }
            let path = match config_file {
                Some(p) => p,
                None => default_path()?,
            };
            let cfg = LaunchConfig {
                num_processes,
                gpu_ids,
                ..Default::default()
            };
            // Validate what we are about to write by reading it back.
            let text = cfg.to_yaml();
            LaunchConfig::parse(&text, &path)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let mut f = match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(UsageError(format!(
                        "{} already exists; shoal never overwrites a config: remove it or pass another --config-file",
                        path.display()
                    ))
                    .into());
                }
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            };
            f.write_all(text.as_bytes())
                .and_then(|_| f.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
            Ok(())
        }
        ConfigCmd::Show { config_file } => {
            let path = match config_file {
                Some(p) => p,
                None => default_path()?,
            };
            if !path.is_file() {
                return Err(UsageError(format!(
                    "{} does not exist; create it with `shoal config default`",
                    path.display()
                ))
                .into());
            }
            let cfg = LaunchConfig::load(&path)?;
            println!("# {}", path.display());
            print!("{}", cfg.to_yaml());
            Ok(())
        }
    }
}
