//! The seed's program ("Distributed inference with multiple GPUs", diffusers
//! docs) in shoal: a full pipeline per process, the prompts split between the
//! processes, each process saving its own result.
//!
//! ```text
//! cargo build --examples
//! target/debug/shoal launch --num-processes 2 target/debug/examples/seed_distributed [MODEL_DIR]
//! ```
//!
//! Without MODEL_DIR it uses shoal's tiny model with random weights.

use anyhow::Result;
use candle_core::DType;
use shoal::diffusion::{Item, LoadOptions, Params, Pipeline};
use shoal::dist::DistributedState;

fn main() -> Result<()> {
    // `PartialState()`: who am I, and which device is mine.
    let distributed_state = DistributedState::new()?;
    let tmp = tempfile::tempdir()?;
    let model = match std::env::args().nth(1) {
        Some(dir) => dir.into(),
        None => {
            let dir = tmp.path().join("tiny");
            let preset =
                shoal::diffusion::presets::preset("tiny").ok_or_else(|| anyhow::anyhow!("no tiny preset"))?;
            shoal::diffusion::make_model(&preset, &dir, 0, DType::F32, &mut |_, _| {})?;
            dir
        }
    };
    // `DiffusionPipeline.from_pretrained(...)` then `.to(distributed_state.device)`.
    let pipe = Pipeline::load(
        &model,
        &distributed_state.device()?,
        DType::F32,
        &LoadOptions::default(),
    )?;
    let params = Params {
        steps: 20,
        guidance: 7.5,
        height: pipe.default_size(),
        width: pipe.default_size(),
    };
    // `with distributed_state.split_between_processes(["a dog", "a cat"]) as prompt:`
    distributed_state.with_split(&["a dog", "a cat"][..], false, |part| -> Result<()> {
        for (index, prompt) in part.real() {
            let item = Item {
                prompt: prompt.to_string(),
                negative_prompt: None,
                seed: index as u64,
                latents: None,
                step_noise: None,
            };
            let result = pipe.generate(&[item], &params, &mut |_, _| {})?;
            let image = &shoal::diffusion::image::to_rgb8(&result.images)?[0];
            let name = format!("result_{}.png", distributed_state.process_index());
            shoal::engine::write_atomic(name.as_ref(), &shoal::diffusion::image::png_bytes(image)?)?;
            println!("rank {}: {prompt:?} -> {name}", distributed_state.process_index());
        }
        Ok(())
    })??;
    Ok(())
}
