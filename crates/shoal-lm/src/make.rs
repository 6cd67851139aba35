//! `shoal make-model --preset tiny-gpt2|gpt2|…`: a GPT-2 with random weights in
//! transformers' layout (its `from_pretrained` loads it with no missing or
//! unused weight).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::config::{Gpt2Config, Head};
use crate::error::{Error, Result};

/// The GPT-2 presets: name, what it is.
pub const PRESETS: &[(&str, &str)] = &[
    (
        "tiny-gpt2",
        "GPT2LMHeadModel, 6 blocks of width 64, 1000-token vocabulary (tests)",
    ),
    (
        "tiny-gpt2-cls",
        "GPT2ForSequenceClassification of the same size, 2 labels (tests)",
    ),
    ("gpt2", "GPT2LMHeadModel with GPT2Config() (124 M parameters)"),
    (
        "gpt2-cls",
        "GPT2ForSequenceClassification with GPT2Config(), the seed's pipeline example",
    ),
];

fn config(preset: &str) -> Option<Gpt2Config> {
    let mut c: Gpt2Config = serde_json::from_str("{}").ok()?;
    let tiny = preset.starts_with("tiny-");
    if tiny {
        (c.vocab_size, c.n_positions, c.n_embd, c.n_layer, c.n_head) = (1000, 128, 64, 6, 4);
    }
    let (arch, known) = match preset {
        "tiny-gpt2" | "gpt2" => ("GPT2LMHeadModel", true),
        "tiny-gpt2-cls" | "gpt2-cls" => ("GPT2ForSequenceClassification", true),
        _ => ("", false),
    };
    known.then(|| {
        c.architectures = Some(vec![arch.into()]);
        c
    })
}

/// Writes the preset `preset` with weights drawn from `seed` into `out`
/// (`config.json`, `model.safetensors`), in `dtype`. `out` must not exist.
pub fn make_gpt2(preset: &str, out: &Path, seed: u64, dtype: DType) -> Result<()> {
    let c = config(preset).ok_or_else(|| {
        let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
        Error::invalid("preset", preset, format!("GPT-2 presets: {}", names.join(", ")))
    })?;
    let io = |e: std::io::Error, what: &str| Error::BadFile {
        path: out.to_path_buf(),
        detail: format!("{what}: {e}"),
    };
    std::fs::create_dir_all(out).map_err(|e| io(e, "creating the folder"))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 0.02).map_err(|e| Error::invalid("std", 0.02, e.to_string()))?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut put = |name: String, shape: &[usize], kind: u8, rng: &mut ChaCha8Rng| -> Result<()> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = match kind {
            0 => (0..n).map(|_| normal.sample(rng)).collect(),
            1 => vec![1.0; n],
            _ => vec![0.0; n],
        };
        let t = Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)?;
        tensors.insert(name, t);
        Ok(())
    };
    let (d, inner) = (c.n_embd, c.inner());
    put("transformer.wte.weight".into(), &[c.vocab_size, d], 0, &mut rng)?;
    put("transformer.wpe.weight".into(), &[c.n_positions, d], 0, &mut rng)?;
    for i in 0..c.n_layer {
        let p = |s: &str| format!("transformer.h.{i}.{s}");
        for ln in ["ln_1", "ln_2"] {
            put(p(&format!("{ln}.weight")), &[d], 1, &mut rng)?;
            put(p(&format!("{ln}.bias")), &[d], 2, &mut rng)?;
        }
        for (name, cin, cout) in [
            ("attn.c_attn", d, 3 * d),
            ("attn.c_proj", d, d),
            ("mlp.c_fc", d, inner),
            ("mlp.c_proj", inner, d),
        ] {
            put(p(&format!("{name}.weight")), &[cin, cout], 0, &mut rng)?;
            // Small non-zero biases, so a test sees them.
            put(p(&format!("{name}.bias")), &[cout], 0, &mut rng)?;
        }
    }
    put("transformer.ln_f.weight".into(), &[d], 1, &mut rng)?;
    put("transformer.ln_f.bias".into(), &[d], 2, &mut rng)?;
    if c.head() == Head::Classify {
        put("score.weight".into(), &[c.num_labels(), d], 0, &mut rng)?;
    }
    let mut cfg = serde_json::to_value(&c).map_err(|e| Error::invalid("config", preset, e.to_string()))?;
    if let Some(o) = cfg.as_object_mut() {
        o.retain(|_, v| !v.is_null());
        o.insert(
            "torch_dtype".into(),
            format!("{dtype:?}").to_lowercase().replace("f", "float").into(),
        );
    }
    let text =
        serde_json::to_string_pretty(&cfg).map_err(|e| Error::invalid("config", preset, e.to_string()))?;
    std::fs::write(out.join("config.json"), text).map_err(|e| io(e, "writing config.json"))?;
    candle_core::safetensors::save(&tensors, out.join("model.safetensors"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::Gpt2;

    /// A generated model loads whole and in stages; running the stages in turn
    /// gives the whole model's logits bit for bit; the heads have their shapes.
    #[test]
    fn stages_compose_to_the_whole_model() {
        for (preset, want) in [("tiny-gpt2", vec![3, 5, 1000]), ("tiny-gpt2-cls", vec![3, 2])] {
            let t = tempfile::tempdir().unwrap();
            let dir = t.path().join("m");
            make_gpt2(preset, &dir, 1, DType::F32).unwrap();
            let whole = Gpt2::load(&dir, &Device::Cpu, DType::F32, 0..8).unwrap();
            let ids = Tensor::new(
                &[[1i64, 7, 9, 3, 999], [0, 0, 5, 2, 1], [4, 4, 4, 4, 4]],
                &Device::Cpu,
            )
            .unwrap();
            let want_logits = whole.forward(&ids).unwrap();
            assert_eq!(want_logits.dims(), &want[..], "{preset}");
            let a = Gpt2::load(&dir, &Device::Cpu, DType::F32, 0..3).unwrap();
            let b = Gpt2::load(&dir, &Device::Cpu, DType::F32, 3..8).unwrap();
            let c = a.run(0..3, a.start(&ids).unwrap()).unwrap();
            let got = b.run(3..8, c).unwrap().x.unwrap();
            let d = (got - &want_logits)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(d, 0.0, "{preset}");
            // A stage runs only its own blocks; bad ids are refused.
            assert!(a.run(3..4, a.start(&ids).unwrap()).is_err());
            let bad = Tensor::new(&[[1000i64]], &Device::Cpu).unwrap();
            assert!(whole.start(&bad).unwrap_err().to_string().contains("0..1000"));
        }
        assert!(make_gpt2("gpt3", std::path::Path::new("/nonexistent/x"), 0, DType::F32).is_err());
    }
}
