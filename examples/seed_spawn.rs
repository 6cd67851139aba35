//! The seed's second program, the `torch.distributed` way: an explicit
//! `init_process_group` in each of two processes started by `spawn` (the
//! analog of `torch.multiprocessing.spawn`), rank 0 drawing a dog and rank 1 a cat.
//!
//! ```text
//! target/debug/examples/seed_spawn [--backend nccl]
//! ```

use anyhow::Result;
use candle_core::DType;
use shoal::diffusion::{Item, LoadOptions, Params, Pipeline};
use shoal::dist::DistributedState;

fn run_inference(rank: usize, world_size: usize, backend: &str) -> Result<()> {
    let pg = shoal::init_process_group(backend, rank, world_size)?;
    let state = DistributedState::from_parts(
        pg.env().clone(),
        shoal::dist::VisibleDevices::All,
        shoal::dist::cuda_device_count(),
    );
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("tiny");
    let preset =
        shoal::diffusion::presets::preset("tiny").ok_or_else(|| anyhow::anyhow!("no tiny preset"))?;
    shoal::diffusion::make_model(&preset, &dir, 0, DType::F32, &mut |_, _| {})?;
    // `sd.to(rank)`
    let sd = Pipeline::load(&dir, &state.device()?, DType::F32, &LoadOptions::default())?;
    let prompt = if pg.rank() == 0 { "a dog" } else { "a cat" };
    let item = Item {
        prompt: prompt.into(),
        negative_prompt: None,
        seed: rank as u64,
        latents: None,
        step_noise: None,
    };
    let params = Params {
        steps: 20,
        guidance: 7.5,
        height: sd.default_size(),
        width: sd.default_size(),
    };
    let image = sd.generate(&[item], &params, &mut |_, _| {})?;
    let name = format!("{}.png", shoal::jobs::slug(prompt));
    let rgb = &shoal::diffusion::image::to_rgb8(&image.images)?[0];
    shoal::engine::write_atomic(name.as_ref(), &shoal::diffusion::image::png_bytes(rgb)?)?;
    println!("rank {rank}: {prompt:?} -> {name}");
    pg.barrier()?;
    Ok(())
}

fn main() -> Result<()> {
    let backend = if std::env::args().any(|a| a == "nccl") {
        "nccl"
    } else {
        "cpu"
    };
    let world_size = 2;
    // `mp.spawn(run_inference, args=(world_size,), nprocs=world_size, join=True)`
    shoal::spawn(world_size, |rank, world| run_inference(rank, world, backend))?;
    Ok(())
}
