//! `shoal generate`: text to image with one process.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use shoal_diffusion::{Item, LoadOptions, Params, Pipeline, item_seed};

use super::UsageError;

#[derive(Debug, Args)]
pub struct GenerateCmd {
    /// Prompts (positional), in addition to any --prompt.
    #[arg(value_name = "PROMPT")]
    positional: Vec<String>,
    /// A prompt; repeat for several.
    #[arg(long = "prompt", short = 'p')]
    prompts: Vec<String>,
    /// A diffusers model folder; without it, shoal's embedded tiny model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The negative prompt, for every prompt.
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Denoising steps.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Classifier-free guidance scale (guidance runs when above 1).
    #[arg(long, default_value_t = 7.5)]
    guidance: f64,
    /// Image height (default: the model's).
    #[arg(long)]
    height: Option<usize>,
    /// Image width (default: the model's).
    #[arg(long)]
    width: Option<usize>,
    /// Base seed; item i's seed derives from (seed, i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Scheduler: pndm, ddim, euler, euler-a, dpm++2m (default: the model's).
    #[arg(long)]
    scheduler: Option<String>,
    /// Compute dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Images per prompt.
    #[arg(long, default_value_t = 1)]
    images_per_prompt: usize,
    /// Items run together in one batch.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Initial latents (.npy, shape (c, h/8, w/8) or (n, c, h/8, w/8)), used exactly.
    #[arg(long)]
    latents: Option<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "outputs")]
    out: PathBuf,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// `auto` (this process's GPU when built with CUDA, else the CPU), `cpu`, or `cuda[:N]`.
    #[arg(long, default_value = "auto")]
    device: String,
}

/// Resolves `--device`.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "auto" => Ok(shoal_dist::DistributedState::new()?.device()?),
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::new_cuda(0).map_err(|e| UsageError(format!("--device cuda: {e}")))?),
        _ => match s.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => Ok(Device::new_cuda(n).map_err(|e| UsageError(format!("--device {s}: {e}")))?),
            None => Err(UsageError(format!(
                "invalid --device {s:?}: expected auto, cpu, cuda or cuda:N"
            ))
            .into()),
        },
    }
}

pub fn parse_dtype(s: &str) -> Result<DType> {
    match s.to_ascii_lowercase().as_str() {
        "f32" | "fp32" | "float32" => Ok(DType::F32),
        "f16" | "fp16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        _ => Err(UsageError(format!("invalid --dtype {s:?}: expected f32, f16 or bf16")).into()),
    }
}

/// A file-name-safe slug of a prompt: `[a-z0-9-]`, at most 48 bytes.
pub fn slug(prompt: &str) -> String {
    let mut s = String::new();
    for ch in prompt.chars().flat_map(char::to_lowercase) {
        if s.len() >= 48 {
            break;
        }
        if ch.is_ascii_alphanumeric() {
            s.push(ch);
        } else if !s.ends_with('-') && !s.is_empty() {
            s.push('-');
        }
    }
    let s = s.trim_end_matches('-').to_string();
    if s.is_empty() { "image".into() } else { s }
}

fn load_latents(path: &Path, n: usize) -> Result<Vec<Tensor>> {
    let t = Tensor::read_npy(path).map_err(|e| UsageError(format!("--latents {}: {e}", path.display())))?;
    let t = t.to_dtype(DType::F32)?;
    let all: Vec<Tensor> = match t.rank() {
        3 => vec![t],
        4 => (0..t.dim(0)?)
            .map(|i| t.get(i))
            .collect::<candle_core::Result<_>>()?,
        r => {
            return Err(
                UsageError(format!("--latents {}: rank {r}, expected 3 or 4", path.display())).into(),
            );
        }
    };
    if all.len() != n && all.len() != 1 {
        return Err(UsageError(format!(
            "--latents {}: holds {} latents for {n} images",
            path.display(),
            all.len()
        ))
        .into());
    }
    Ok((0..n).map(|i| all[i.min(all.len() - 1)].clone()).collect())
}

/// The embedded default model: the tiny preset, written into a temporary folder.
pub fn default_model() -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("shoal-default-model-")
        .tempdir()?;
    let preset = shoal_diffusion::presets::preset("tiny").context("the tiny preset")?;
    let path = dir.path().join("tiny");
    shoal_diffusion::make_model(&preset, &path, 0, DType::F32, &mut |_, _| {})?;
    Ok(dir)
}

pub fn run(c: GenerateCmd) -> Result<()> {
    let prompts: Vec<String> = c.positional.iter().chain(&c.prompts).cloned().collect();
    if prompts.is_empty() {
        return Err(UsageError("no prompt: give one, e.g. `shoal generate \"a red fox\"`".into()).into());
    }
    if c.images_per_prompt == 0 || c.batch_size == 0 {
        return Err(UsageError("--images-per-prompt and --batch-size must be at least 1".into()).into());
    }
    let dtype = parse_dtype(&c.dtype)?;
    let _default;
    let model = match &c.model {
        Some(m) => m.clone(),
        None => {
            _default = default_model()?;
            eprintln!("generate: no --model given; using shoal's embedded tiny model (random weights)");
            _default.path().join("tiny")
        }
    };
    let device = parse_device(&c.device)?;
    let t0 = Instant::now();
    let opts = LoadOptions {
        scheduler: c.scheduler.clone(),
        variant: None,
        batch_invariant: None,
    };
    let pipe = Pipeline::load(&model, &device, dtype, &opts)?;
    let params = Params {
        steps: c.steps,
        guidance: c.guidance,
        height: c.height.unwrap_or(pipe.default_size()),
        width: c.width.unwrap_or(pipe.default_size()),
    };
    pipe.check(&params)?;
    let n = prompts.len() * c.images_per_prompt;
    let latents = match &c.latents {
        Some(p) => Some(load_latents(p, n)?),
        None => None,
    };
    let items: Vec<Item> = (0..n)
        .map(|i| Item {
            prompt: prompts[i / c.images_per_prompt].clone(),
            negative_prompt: c.negative_prompt.clone(),
            seed: item_seed(c.seed, i as u64),
            latents: latents.as_ref().map(|l| l[i].clone()),
            step_noise: None,
        })
        .collect();
    std::fs::create_dir_all(&c.out).with_context(|| format!("creating {}", c.out.display()))?;
    let load_s = t0.elapsed().as_secs_f64();
    let bar = !c.quiet && std::io::stderr().is_terminal();
    let t1 = Instant::now();
    for (b, chunk) in items.chunks(c.batch_size).enumerate() {
        let first = b * c.batch_size;
        let out = pipe.generate(chunk, &params, &mut |s, total| {
            if bar {
                let w = 30;
                let fill = s * w / total.max(1);
                eprint!(
                    "\r[{}{}] step {s}/{total}, images {}-{} of {n}",
                    "#".repeat(fill),
                    " ".repeat(w - fill),
                    first + 1,
                    first + chunk.len()
                );
                let _ = std::io::stderr().flush();
            }
        })?;
        if bar {
            eprintln!();
        }
        for (k, img) in shoal_diffusion::image::to_rgb8(&out.images)?.iter().enumerate() {
            let i = first + k;
            let it = &items[i];
            let path = c.out.join(format!("{i:05}-{}-{}.png", it.seed, slug(&it.prompt)));
            shoal_diffusion::image::write_atomic(&path, &shoal_diffusion::image::png_bytes(img)?)?;
            println!("{}", path.display());
        }
    }
    let gen_s = t1.elapsed().as_secs_f64();
    eprintln!(
        "generate: {n} image(s) {}×{}, {} steps, {}, load {load_s:.2} s, generation {gen_s:.2} s ({:.2} img/s)",
        params.width,
        params.height,
        params.steps,
        pipe.scheduler_class(),
        n as f64 / gen_s.max(1e-9)
    );
    Ok(())
}
