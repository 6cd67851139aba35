//! `shoal bench vae`: the split VAE decode under a launcher, against the whole
//! decode on rank 0: each of the N processes decodes one band of rows
//! (`Pipeline::decode_band`), rank 0 stacks the bands, compares them with its
//! own whole decode of the same latents and prints both times and the largest
//! difference. Exit 1 when the difference exceeds the bound.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use candle_core::{DType, Tensor};
use clap::Args;
use shoal_diffusion::{LoadOptions, Pipeline};

use super::UsageError;
use super::args::{parse_device, parse_dtype};

#[derive(Debug, Args)]
pub struct VaeBench {
    /// A diffusers model folder (default: shoal's embedded tiny model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Image height in pixels.
    #[arg(long)]
    height: Option<usize>,
    /// Image width in pixels.
    #[arg(long)]
    width: Option<usize>,
    /// Images decoded per call.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Data type (f32, f16 or bf16).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Timed repetitions.
    #[arg(long, default_value_t = 2)]
    reps: usize,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Largest difference allowed between the stacked bands and the whole decode
    /// (images in [0, 1]).
    #[arg(long, default_value_t = 1e-3)]
    max_diff: f64,
}

pub fn run(b: VaeBench) -> Result<()> {
    let dtype = parse_dtype(&b.dtype)?;
    if b.reps == 0 || b.batch == 0 {
        bail!(UsageError("--reps and --batch must be at least 1".into()));
    }
    let state = shoal_dist::DistributedState::new()?;
    let (rank, world) = (state.process_index(), state.num_processes());
    let device = match b.device.as_str() {
        "auto" => state.device()?,
        d => parse_device(d)?,
    };
    let _default;
    let model = match &b.model {
        Some(m) => m.clone(),
        None => {
            _default = super::generate::default_model()?;
            _default.path().join("tiny")
        }
    };
    let opts = LoadOptions::default();
    let info = shoal_diffusion::ModelInfo::read(&model, &opts)?;
    let (h, w) = (
        b.height.unwrap_or(info.default_size),
        b.width.unwrap_or(info.default_size),
    );
    let f = info.vae_scale_factor;
    if h == 0 || w == 0 || h % f != 0 || w % f != 0 || h / f < world {
        bail!(UsageError(format!(
            "--height {h} --width {w}: sides must be multiples of {f}, with at least one latent row per process ({world})"
        )));
    }
    let pg = if world > 1 {
        Some(state.process_group(
            shoal_dist::Backend::Cpu,
            shoal_dist::GroupOptions::from_env(&std::env::vars().collect())?,
        )?)
    } else {
        None
    };
    let pipe = Pipeline::load(&model, &device, dtype, &opts)?;
    // The same latents on every rank: seeded noise, as a denoised latent's scale.
    let p = shoal_diffusion::Params {
        steps: 1,
        guidance: 1.0,
        height: h,
        width: w,
    };
    let per = (0..b.batch as u64)
        .map(|s| pipe.noise(s, &p))
        .collect::<shoal_diffusion::Result<Vec<_>>>()?;
    let latents = Tensor::stack(&per, 0)?;
    let members: Vec<usize> = (0..world).collect();
    let bands = pg.as_ref().and_then(|pg| shoal_engine::Bands::new(pg, members));
    let single;
    let comm: &dyn shoal_diffusion::vae::BandComm = match &bands {
        Some(b) => b,
        None => {
            single = OneBand;
            &single
        }
    };
    let time = |f: &mut dyn FnMut() -> Result<Tensor>| -> Result<(Tensor, f64)> {
        let mut out = f()?; // warm-up
        let t = Instant::now();
        for _ in 0..b.reps {
            out = f()?;
        }
        Ok((out, t.elapsed().as_secs_f64() / b.reps as f64))
    };
    let (band, split_s) = time(&mut || Ok(pipe.decode_band(&latents, comm)?))?;
    let Some(pg) = &pg else {
        let (whole, whole_s) = time(&mut || Ok(pipe.decode_items(&latents)?))?;
        return report(&band, &whole, whole_s, split_s, 1, &b, dtype);
    };
    if rank != 0 {
        pg.send(&band, 0)?;
        return Ok(());
    }
    let mut parts = vec![band];
    for r in 1..world {
        parts.push(pg.recv(r, &candle_core::Device::Cpu)?);
    }
    let stacked = Tensor::cat(&parts, 2)?;
    let (whole, whole_s) = time(&mut || Ok(pipe.decode_items(&latents)?))?;
    report(&stacked, &whole, whole_s, split_s, world, &b, dtype)
}

/// A decode of one band: the whole image, nothing exchanged.
struct OneBand;

impl shoal_diffusion::vae::BandComm for OneBand {
    fn band(&self) -> (usize, usize) {
        (0, 1)
    }
    fn halo(&self, _: &Tensor, _: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((None, None))
    }
    fn sum(&self, t: &Tensor) -> candle_core::Result<Tensor> {
        Ok(t.clone())
    }
}

fn report(
    stacked: &Tensor,
    whole: &Tensor,
    whole_s: f64,
    split_s: f64,
    bands: usize,
    b: &VaeBench,
    dtype: DType,
) -> Result<()> {
    if stacked.dims() != whole.dims() {
        bail!(
            "the bands stack to {:?}, the whole decode is {:?}",
            stacked.dims(),
            whole.dims()
        );
    }
    let diff = (stacked - whole)?.abs()?.max_all()?.to_scalar::<f32>()? as f64;
    let (_, _, h, w) = whole.dims4()?;
    println!(
        "shoal bench vae: {bands} band(s), {} image(s) {h}×{w}, {dtype:?}, {} reps",
        b.batch, b.reps
    );
    println!("| decode | s per call |");
    println!("| --- | --- |");
    println!("| whole, rank 0 | {whole_s:.4} |");
    println!("| split, {bands} band(s) (rank 0's time) | {split_s:.4} |");
    let ok = diff <= b.max_diff;
    println!(
        "max |stacked − whole| = {diff:.2e} (bound {:.1e}): {}",
        b.max_diff,
        if ok { "PASS" } else { "FAIL" }
    );
    if !ok {
        bail!("the split decode differs from the whole decode by {diff:.2e}");
    }
    Ok(())
}
