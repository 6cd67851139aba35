//! Writes a model with random weights in the exact diffusers layout.
//!
//! Each component is built through [`crate::random`]'s generating
//! `VarBuilder`, so the files hold exactly the tensors the loader reads, under
//! the PyTorch state-dict names diffusers and transformers read too. The
//! folder is written under a temporary name and renamed when complete, so a
//! crash never leaves a half-written model that looks whole.

use std::collections::HashMap;
use std::path::Path;

use candle_core::DType;
use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};
use serde_json::{Value, json};

use crate::clip::ClipTextModel;
use crate::config::{ClipConfig, UNetConfig, VaeConfig};
use crate::error::{Error, Result};
use crate::presets::Preset;
use crate::random::{self, Generated};
use crate::tokenizer::{BOS, EOS, clip_merges_txt, vocab_from_merges};
use crate::unet::UNet;

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let mut s = serde_json::to_string_pretty(v).map_err(|e| Error::BadFile {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    s.push('\n');
    write(path, s.as_bytes())
}

fn parse<T: serde::de::DeserializeOwned>(v: &Value, path: &Path) -> Result<T> {
    serde_json::from_value(v.clone()).map_err(|e| Error::BadFile {
        path: path.to_path_buf(),
        detail: format!("preset config: {e}"),
    })
}

fn save(weights: &Generated, path: &Path, dtype: DType) -> Result<usize> {
    let tensors = weights.take();
    let mut params = 0;
    let mut out = HashMap::new();
    for (k, t) in tensors {
        params += t.elem_count();
        out.insert(k, t.to_dtype(dtype)?);
    }
    candle_core::safetensors::save(&out, path)?;
    Ok(params)
}

fn component_seed(seed: u64, name: &str) -> u64 {
    name.bytes()
        .fold(seed ^ 0x51EED, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
}

fn write_tokenizer(dir: &Path, pad: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let merges = clip_merges_txt()?;
    let vocab = vocab_from_merges(&merges);
    let mut json = String::from("{");
    for (i, tok) in vocab.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&serde_json::to_string(tok).unwrap_or_default());
        json.push_str(&format!(": {i}"));
    }
    json.push_str("}\n");
    write(&dir.join("vocab.json"), json.as_bytes())?;
    write(&dir.join("merges.txt"), merges.as_bytes())?;
    let tok = |c: &str| json!({"content": c, "lstrip": false, "normalized": true, "rstrip": false, "single_word": false});
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({
            "add_prefix_space": false,
            "bos_token": tok(BOS),
            "clean_up_tokenization_spaces": true,
            "do_lower_case": true,
            "eos_token": tok(EOS),
            "errors": "replace",
            "model_max_length": 77,
            "pad_token": pad,
            "tokenizer_class": "CLIPTokenizer",
            "unk_token": tok(EOS)
        }),
    )?;
    write_json(
        &dir.join("special_tokens_map.json"),
        &json!({"bos_token": BOS, "eos_token": EOS, "pad_token": pad, "unk_token": EOS}),
    )
}

/// Writes `preset` with random weights of `dtype` to `out`; `on_component`
/// hears each component's name and parameter count as it is written.
pub fn make_model(
    preset: &Preset,
    out: &Path,
    seed: u64,
    dtype: DType,
    on_component: &mut dyn FnMut(&str, usize),
) -> Result<()> {
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::invalid("dtype", format!("{dtype:?}"), "f32, f16 or bf16"));
    }
    if out.exists() {
        let empty = out.is_dir()
            && std::fs::read_dir(out)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !empty {
            return Err(Error::invalid(
                "out",
                out.display(),
                "exists and is not empty; shoal never overwrites a model: choose another --out",
            ));
        }
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = write_all(preset, &tmp, seed, dtype, on_component);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if out.exists() {
        let _ = std::fs::remove_dir(out);
    }
    std::fs::rename(&tmp, out)
        .map_err(|e| Error::io(format!("renaming {} to {}", tmp.display(), out.display()), e))
}

fn write_all(
    p: &Preset,
    dir: &Path,
    seed: u64,
    dtype: DType,
    on_component: &mut dyn FnMut(&str, usize),
) -> Result<()> {
    let mkdir =
        |d: &Path| std::fs::create_dir_all(d).map_err(|e| Error::io(format!("creating {}", d.display()), e));
    mkdir(dir)?;
    write_json(&dir.join("model_index.json"), &p.model_index)?;
    mkdir(&dir.join("scheduler"))?;
    write_json(&dir.join("scheduler").join("scheduler_config.json"), &p.scheduler)?;
    write_tokenizer(&dir.join("tokenizer"), p.pad.0)?;

    let mut encoders = vec![("text_encoder", &p.text_encoder)];
    if let Some(t2) = &p.text_encoder_2 {
        write_tokenizer(&dir.join("tokenizer_2"), p.pad.1)?;
        encoders.push(("text_encoder_2", t2));
    }
    for (name, cfg_v) in encoders {
        let d = dir.join(name);
        mkdir(&d)?;
        let cfg_path = d.join("config.json");
        write_json(&cfg_path, cfg_v)?;
        let cfg: ClipConfig = parse(cfg_v, &cfg_path)?;
        let (vb, weights) = random::var_builder(component_seed(seed, name), dtype);
        ClipTextModel::new(vb, &cfg, 49407)?;
        let n = save(&weights, &d.join("model.safetensors"), dtype)?;
        on_component(name, n);
    }

    let d = dir.join("unet");
    mkdir(&d)?;
    let cfg_path = d.join("config.json");
    write_json(&cfg_path, &p.unet)?;
    let cfg: UNetConfig = parse(&p.unet, &cfg_path)?;
    let blocks = cfg.blocks(&cfg_path)?;
    let (vb, weights) = random::var_builder(component_seed(seed, "unet"), dtype);
    let unet = UNet::new(vb, &cfg, &blocks)?;
    drop(unet);
    let n = save(&weights, &d.join("diffusion_pytorch_model.safetensors"), dtype)?;
    on_component("unet", n);

    let d = dir.join("vae");
    mkdir(&d)?;
    let cfg_path = d.join("config.json");
    write_json(&cfg_path, &p.vae)?;
    let cfg: VaeConfig = parse(&p.vae, &cfg_path)?;
    cfg.validate(&cfg_path)?;
    let (vb, weights) = random::var_builder(component_seed(seed, "vae"), dtype);
    AutoEncoderKL::new(
        vb,
        3,
        3,
        AutoEncoderKLConfig {
            block_out_channels: cfg.block_out_channels.clone(),
            layers_per_block: cfg.layers_per_block,
            latent_channels: cfg.latent_channels,
            norm_num_groups: cfg.norm_num_groups,
            use_quant_conv: cfg.use_quant_conv,
            use_post_quant_conv: cfg.use_post_quant_conv,
        },
    )?;
    let n = save(&weights, &d.join("diffusion_pytorch_model.safetensors"), dtype)?;
    on_component("vae", n);
    Ok(())
}
