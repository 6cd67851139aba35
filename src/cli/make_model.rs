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
