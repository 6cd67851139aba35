//! Model presets for `shoal make-model`: the real SD 1.5, 2.1 and XL
//! architectures (configs as published in the diffusers repositories
//! `stable-diffusion-v1-5/stable-diffusion-v1-5`, `stabilityai/stable-diffusion-2-1`,
//! `stabilityai/stable-diffusion-xl-base-1.0`) and tiny models of each shape
//! for tests. Configs are data; the writer is in `make_model.rs`.

use serde_json::{Value, json};

/// A preset's configs, one per component.
#[derive(Debug, Clone)]
pub struct Preset {
    /// The preset's name.
    pub name: &'static str,
    /// `model_index.json`.
    pub model_index: Value,
    /// `unet/config.json`.
    pub unet: Value,
    /// `vae/config.json`.
    pub vae: Value,
    /// `text_encoder/config.json`.
    pub text_encoder: Value,
    /// `text_encoder_2/config.json` (SDXL).
    pub text_encoder_2: Option<Value>,
    /// `scheduler/scheduler_config.json`.
    pub scheduler: Value,
    /// Pad tokens of `tokenizer/` and `tokenizer_2/`.
    pub pad: (&'static str, &'static str),
}

/// The preset names `make-model` accepts.
pub const NAMES: &[&str] = &["tiny", "tiny-sd2", "tiny-sdxl", "sd15", "sd21", "sdxl"];

const VERSION: &str = "0.42.1";

fn clip(hidden: usize, inter: usize, layers: usize, heads: usize, act: &str, proj: Option<usize>) -> Value {
    let arch = if proj.is_some() {
        "CLIPTextModelWithProjection"
    } else {
        "CLIPTextModel"
    };
    json!({
        "architectures": [arch],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": act,
        "hidden_size": hidden,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": inter,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "model_type": "clip_text_model",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "pad_token_id": 1,
        "projection_dim": proj.unwrap_or(hidden),
        "torch_dtype": "float32",
        "vocab_size": 49408
    })
}

fn vae(channels: &[usize], layers: usize, groups: usize, sample: usize, scaling: f64, upcast: bool) -> Value {
    json!({
        "_class_name": "AutoencoderKL",
        "_diffusers_version": VERSION,
        "act_fn": "silu",
        "block_out_channels": channels,
        "down_block_types": vec!["DownEncoderBlock2D"; channels.len()],
        "force_upcast": upcast,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": layers,
        "norm_num_groups": groups,
        "out_channels": 3,
        "sample_size": sample,
        "scaling_factor": scaling,
        "up_block_types": vec!["UpDecoderBlock2D"; channels.len()]
    })
}

fn sd_index(xl: bool) -> Value {
    let mut v = json!({
        "_class_name": if xl { "StableDiffusionXLPipeline" } else { "StableDiffusionPipeline" },
        "_diffusers_version": VERSION,
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]
    });
    if xl {
        v["text_encoder_2"] = json!(["transformers", "CLIPTextModelWithProjection"]);
        v["tokenizer_2"] = json!(["transformers", "CLIPTokenizer"]);
        v["force_zeros_for_empty_prompt"] = json!(true);
    } else {
        v["safety_checker"] = json!([null, null]);
        v["feature_extractor"] = json!([null, null]);
        v["requires_safety_checker"] = json!(false);
    }
    v
}

fn with_scheduler(mut index: Value, sched: &Value) -> Value {
    index["scheduler"] = json!(["diffusers", sched["_class_name"].clone()]);
    index
}

fn sd15_scheduler() -> Value {
    json!({
        "_class_name": "PNDMScheduler",
        "_diffusers_version": VERSION,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": false,
        "num_train_timesteps": 1000,
        "set_alpha_to_one": false,
        "skip_prk_steps": true,
        "steps_offset": 1,
        "trained_betas": null
    })
}

fn sd21_scheduler() -> Value {
    json!({
        "_class_name": "DDIMScheduler",
        "_diffusers_version": VERSION,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": false,
        "num_train_timesteps": 1000,
        "prediction_type": "v_prediction",
        "set_alpha_to_one": false,
        "skip_prk_steps": true,
        "steps_offset": 1,
        "trained_betas": null
    })
}

fn sdxl_scheduler() -> Value {
    json!({
        "_class_name": "EulerDiscreteScheduler",
        "_diffusers_version": VERSION,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": false,
        "interpolation_type": "linear",
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "sample_max_value": 1.0,
        "set_alpha_to_one": false,
        "skip_prk_steps": true,
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "trained_betas": null,
        "use_karras_sigmas": false
    })
}

#[allow(clippy::too_many_arguments)]
fn unet(
    channels: &[usize],
    down: &[&str],
    up: &[&str],
    layers: usize,
    heads: Value,
    cross: usize,
    groups: usize,
    sample: usize,
    linear: bool,
) -> Value {
    json!({
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": VERSION,
        "act_fn": "silu",
        "attention_head_dim": heads,
        "block_out_channels": channels,
        "center_input_sample": false,
        "cross_attention_dim": cross,
        "down_block_types": down,
        "downsample_padding": 1,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": layers,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": groups,
        "out_channels": 4,
        "sample_size": sample,
        "up_block_types": up,
        "use_linear_projection": linear
    })
}

/// The preset called `name`.
pub fn preset(name: &str) -> Option<Preset> {
    const CA: &str = "CrossAttnDownBlock2D";
    const D: &str = "DownBlock2D";
    const CU: &str = "CrossAttnUpBlock2D";
    const U: &str = "UpBlock2D";
    let tiny_vae = || vae(&[32, 32, 32, 32], 1, 8, 64, 0.18215, false);
    Some(match name {
        // SD 1.x-shaped: 8 groups (not 32), a block without attention, 64×64 images.
        "tiny" => Preset {
            name: "tiny",
            model_index: with_scheduler(sd_index(false), &sd15_scheduler()),
            unet: unet(&[32, 64], &[D, CA], &[CU, U], 1, json!(2), 32, 8, 8, false),
            vae: tiny_vae(),
            text_encoder: clip(32, 64, 2, 2, "quick_gelu", None),
            text_encoder_2: None,
            scheduler: sd15_scheduler(),
            pad: ("<|endoftext|>", "!"),
        },
        // SD 2.x-shaped: linear projections, per-block heads, gelu, v-prediction.
        "tiny-sd2" => Preset {
            name: "tiny-sd2",
            model_index: with_scheduler(sd_index(false), &sd21_scheduler()),
            unet: unet(&[32, 64], &[CA, CA], &[CU, CU], 1, json!([2, 4]), 32, 8, 8, true),
            vae: tiny_vae(),
            text_encoder: clip(32, 64, 2, 2, "gelu", None),
            text_encoder_2: None,
            scheduler: sd21_scheduler(),
            pad: ("!", "!"),
        },
        // SDXL-shaped: two text encoders, pooled embeddings, add_embedding.
        "tiny-sdxl" => {
            let mut u = unet(&[32, 64], &[D, CA], &[CU, U], 1, json!([2, 4]), 64, 8, 8, true);
            u["transformer_layers_per_block"] = json!([1, 2]);
            u["addition_embed_type"] = json!("text_time");
            u["addition_time_embed_dim"] = json!(8);
            u["projection_class_embeddings_input_dim"] = json!(32 + 6 * 8);
            Preset {
                name: "tiny-sdxl",
                model_index: with_scheduler(sd_index(true), &sdxl_scheduler()),
                unet: u,
                vae: vae(&[32, 32, 32, 32], 1, 8, 64, 0.13025, true),
                text_encoder: clip(32, 64, 2, 2, "quick_gelu", None),
                text_encoder_2: Some(clip(32, 64, 2, 2, "gelu", Some(32))),
                scheduler: sdxl_scheduler(),
                pad: ("<|endoftext|>", "!"),
            }
        }
        "sd15" => Preset {
            name: "sd15",
            model_index: with_scheduler(sd_index(false), &sd15_scheduler()),
            unet: unet(
                &[320, 640, 1280, 1280],
                &[CA, CA, CA, D],
                &[U, CU, CU, CU],
                2,
                json!(8),
                768,
                32,
                64,
                false,
            ),
            vae: vae(&[128, 256, 512, 512], 2, 32, 512, 0.18215, false),
            text_encoder: clip(768, 3072, 12, 12, "quick_gelu", None),
            text_encoder_2: None,
            scheduler: sd15_scheduler(),
            pad: ("<|endoftext|>", "!"),
        },
        "sd21" => {
            let mut u = unet(
                &[320, 640, 1280, 1280],
                &[CA, CA, CA, D],
                &[U, CU, CU, CU],
                2,
                json!([5, 10, 20, 20]),
                1024,
                32,
                96,
                true,
            );
            u["upcast_attention"] = json!(true);
            Preset {
                name: "sd21",
                model_index: with_scheduler(sd_index(false), &sd21_scheduler()),
                unet: u,
                vae: vae(&[128, 256, 512, 512], 2, 32, 768, 0.18215, false),
                text_encoder: clip(1024, 4096, 23, 16, "gelu", Some(512)),
                text_encoder_2: None,
                scheduler: sd21_scheduler(),
                pad: ("!", "!"),
            }
        }
        "sdxl" => {
            let mut u = unet(
                &[320, 640, 1280],
                &[D, CA, CA],
                &[CU, CU, U],
                2,
                json!([5, 10, 20]),
                2048,
                32,
                128,
                true,
            );
            u["transformer_layers_per_block"] = json!([1, 2, 10]);
            u["addition_embed_type"] = json!("text_time");
            u["addition_embed_type_num_heads"] = json!(64);
            u["addition_time_embed_dim"] = json!(256);
            u["projection_class_embeddings_input_dim"] = json!(2816);
            Preset {
                name: "sdxl",
                model_index: with_scheduler(sd_index(true), &sdxl_scheduler()),
                unet: u,
                vae: vae(&[128, 256, 512, 512], 2, 32, 1024, 0.13025, true),
                text_encoder: clip(768, 3072, 12, 12, "quick_gelu", None),
                text_encoder_2: Some(clip(1280, 5120, 32, 20, "gelu", Some(1280))),
                scheduler: sdxl_scheduler(),
                pad: ("<|endoftext|>", "!"),
            }
        }
        _ => return None,
    })
}
