#![allow(clippy::unwrap_used, reason = "a test fails loudly on a broken precondition")]

//! Issue 12: no config value makes the loader panic. Each field of the tiny
//! presets' UNet and VAE configs is set to values around every edge (0, 1, huge,
//! negative, the wrong type); parsing, validation and the derived sizes must
//! return a value or an error, never panic.

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Value, json};
use shoal_diffusion::config::{UNetConfig, VaeConfig};

fn edge() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(3)),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        Just(json!(1u64 << 40)),
        Just(json!(65)),
        Just(json!(2.5)),
        Just(json!("x")),
        Just(json!(null)),
        Just(json!([])),
        Just(json!([0, 0])),
        Just(json!([32u64, 64, 1u64 << 40])),
        Just(json!(vec![32; 70])),
        (0u64..5000).prop_map(|n| json!(n)),
    ]
}

const UNET_FIELDS: &[&str] = &[
    "block_out_channels",
    "layers_per_block",
    "norm_num_groups",
    "attention_head_dim",
    "num_attention_heads",
    "cross_attention_dim",
    "transformer_layers_per_block",
    "in_channels",
    "out_channels",
    "sample_size",
    "down_block_types",
    "up_block_types",
    "addition_time_embed_dim",
    "projection_class_embeddings_input_dim",
    "norm_eps",
    "freq_shift",
];

const VAE_FIELDS: &[&str] = &[
    "block_out_channels",
    "layers_per_block",
    "norm_num_groups",
    "latent_channels",
    "in_channels",
    "out_channels",
    "sample_size",
    "scaling_factor",
];

fn preset(name: &str) -> shoal_diffusion::presets::Preset {
    shoal_diffusion::presets::preset(name).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn no_unet_config_value_panics(
        preset_name in prop_oneof![Just("tiny"), Just("tiny-sdxl"), Just("tiny-sd2")],
        field in 0..UNET_FIELDS.len(),
        value in edge(),
        second in 0..UNET_FIELDS.len(),
        value2 in edge(),
    ) {
        let mut v = preset(preset_name).unet;
        v[UNET_FIELDS[field]] = value;
        v[UNET_FIELDS[second]] = value2;
        if let Ok(c) = serde_json::from_value::<UNetConfig>(v) {
            let _ = c.blocks(Path::new("unet/config.json"));
        }
    }

    #[test]
    fn no_vae_config_value_panics(field in 0..VAE_FIELDS.len(), value in edge()) {
        let mut v = preset("tiny").vae;
        v[VAE_FIELDS[field]] = value;
        if let Ok(c) = serde_json::from_value::<VaeConfig>(v)
            && c.validate(Path::new("vae/config.json")).is_ok()
        {
            let _ = c.scale_factor();
        }
    }
}
