//! `shoal make-model`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use super::UsageError;
use super::args::parse_dtype;

#[derive(Debug, Args)]
pub struct MakeModelCmd {
    /// tiny, tiny-sd2, tiny-sdxl (small, for tests) or sd15, sd21, sdxl (real architectures).
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
    let preset = shoal_diffusion::presets::preset(&c.preset).ok_or_else(|| {
        UsageError(format!(
            "invalid --preset {:?}: expected one of {}",
            c.preset,
            shoal_diffusion::presets::NAMES.join(", ")
        ))
    })?;
    let dtype = parse_dtype(&c.dtype)?;
    let start = Instant::now();
    let mut total = 0usize;
    shoal_diffusion::make_model(&preset, &c.out, c.seed, dtype, &mut |name, n| {
        total += n;
        eprintln!("make-model: {name}: {:.1} M parameters", n as f64 / 1e6);
    })?;
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
