//! `shoal make-model`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use super::UsageError;
use super::args::parse_dtype;

#[derive(Debug, Args)]
pub struct MakeModelCmd {
    /// tiny, tiny-sd2, tiny-sdxl (small, for tests) or sd15, sd21, sdxl (real architectures);
    /// GPT-2: tiny-gpt2, tiny-gpt2-cls, gpt2, gpt2-cls.
    #[arg(long)]
    preset: String,
    /// The folder to create (must not exist or be empty).
    #[arg(long)]
    out: PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Weight dtype on disk: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

pub fn run(c: MakeModelCmd) -> Result<()> {
    if shoal_lm::PRESETS.iter().any(|(n, _)| *n == c.preset) {
        let dtype = parse_dtype(&c.dtype)?;
        if c.out.exists()
            && std::fs::read_dir(&c.out)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            anyhow::bail!(UsageError(format!(
                "--out {}: exists and is not empty; shoal does not overwrite a model",
                c.out.display()
            )));
        }
        let start = Instant::now();
        shoal_lm::make_gpt2(&c.preset, &c.out, c.seed, dtype)?;
        plain_modes(&c.out)?;
        println!(
            "wrote {} ({} preset, {dtype:?}) in {:.1} s",
            c.out.display(),
            c.preset,
            start.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let preset = shoal_diffusion::presets::preset(&c.preset).ok_or_else(|| {
        UsageError(format!(
            "invalid --preset {:?}: expected one of {}, {}",
            c.preset,
            shoal_diffusion::presets::NAMES.join(", "),
            shoal_lm::PRESETS
                .iter()
                .map(|p| p.0)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let dtype = parse_dtype(&c.dtype)?;
    let start = Instant::now();
    let mut total = 0usize;
    shoal_diffusion::make_model(&preset, &c.out, c.seed, dtype, &mut |name, n| {
        total += n;
        tracing::info!("make-model: {name}: {:.1} M parameters", n as f64 / 1e6);
    })?;
    plain_modes(&c.out)?;
    println!(
        "wrote {} ({} preset, {:.1} M parameters, {:?}) in {:.1} s",
        c.out.display(),
        preset.name,
        total as f64 / 1e6,
        dtype,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The process's umask (`/proc/self/status`, read without changing it), 022 if unknown.
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Every file of the new model gets the mode a plain file gets here
/// (0666 less the umask): the weights are written through temporary files,
/// which are 0600.
fn plain_modes(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = 0o666 & !umask();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(mode))?;
            }
        }
    }
    Ok(())
}
