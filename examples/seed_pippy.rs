//! The seed's pipeline-parallel example (accelerate's `prepare_pippy` on
//! GPT-2), with shoal: a `GPT2ForSequenceClassification` cut into one stage per
//! process, random token ids, the output on the last process.
//!
//! ```text
//! shoal launch -n 2 target/debug/examples/seed_pippy          # tiny GPT-2, 128 tokens
//! shoal launch -n 2 target/release/examples/seed_pippy --full # GPT2Config(), batch 2 × 1024 (the seed's)
//! ```

use anyhow::Result;
use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use shoal::DistributedState;
use shoal::inference::{PippyOptions, prepare_pippy};

fn main() -> Result<()> {
    let full = std::env::args().any(|a| a == "--full");
    let (preset, seq_len) = if full {
        ("gpt2-cls", 1024)
    } else {
        ("tiny-gpt2-cls", 128)
    };
    // `model = GPT2ForSequenceClassification(GPT2Config())` (every process writes
    // the same seeded weights into its own folder).
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("gpt2");
    shoal::lm::make_gpt2(preset, &dir, 0, DType::F32)?;
    let state = DistributedState::new()?;
    // `model = prepare_pippy(model, example_args=(input,))`
    let model = prepare_pippy(
        &state,
        &dir,
        &PippyOptions {
            example_shape: (2, seq_len),
            ..PippyOptions::default()
        },
    )?;
    // `input = torch.randint(low=0, high=config.vocab_size, size=(2, 1024))`
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let vocab = model.config().vocab_size as i64;
    let ids: Vec<i64> = (0..2 * seq_len).map(|_| rng.random_range(0..vocab)).collect();
    let input = Tensor::from_vec(ids, (2, seq_len), &model.device())?;
    // `output = model(*args)`; the data is on the last process only.
    let output = model.call(&input)?;
    if state.is_last_process() {
        let output = output.ok_or_else(|| anyhow::anyhow!("the last process has no output"))?;
        println!("{output}");
    } else {
        assert!(output.is_none(), "only the last process holds the output");
    }
    Ok(())
}
