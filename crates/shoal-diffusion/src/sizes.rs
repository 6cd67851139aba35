//! How much memory each component needs: weights from the safetensors headers
//! (in the dtype they will be loaded in) plus an activation allowance for the
//! requested resolution and batch. Used by the device-map planner; reads no
//! tensor data.
//!
//! Allowance formulas (s = bytes per element of the compute dtype, B = batch,
//! 2B with classifier-free guidance, h·w = latent pixels at the level named):
//! - UNet: 2B × (heads × (h·w at its first attention level)² + 16 × C0 × h·w) × s,
//!   the materialized attention scores of the largest attention plus feature maps;
//! - VAE decode: B × (4 × C0 × H × W + (h·w)²) × s_vae, full-resolution feature
//!   maps and the mid-block attention (s_vae is 4 when `force_upcast`);
//! - text encoders: 2B × (heads × 77² + 4 × hidden × 77) × s.
//!
//! With fused attention (cuDNN SDPA on CUDA) the UNet's score term is dropped.

use std::path::Path;

use candle_core::DType;

use crate::config::{ClipConfig, ModelIndex, UNetConfig, VaeConfig, read_json};
use crate::error::Result;
use crate::weights::{find_weights, header_tensors};

/// One component's needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentSize {
    /// The component (folder) name.
    pub name: String,
    /// Weight bytes in the load dtype.
    pub weights: u64,
    /// Activation allowance.
    pub activations: u64,
}

fn weight_bytes(dir: &Path, stem: &str, dtype: DType) -> Result<u64> {
    let mut total = 0u64;
    for f in find_weights(dir, stem, None)? {
        for (_, dt, shape) in header_tensors(&f)? {
            let n: u64 = shape.iter().product();
            let size = match dt.as_str() {
                "F32" | "F16" | "BF16" | "F64" => dtype.size_in_bytes() as u64,
                "I64" | "U64" => 8,
                "I32" | "U32" => 4,
                "I16" | "U16" => 2,
                _ => 1,
            };
            total += n * size;
        }
    }
    Ok(total)
}

/// The components of the model in `dir` with their needs for images of
/// `height × width`, `batch` at a time, computed in `dtype`, with the UNet's
/// attention scores materialized (the plain path; an upper bound).
pub fn component_sizes(
    dir: &Path,
    dtype: DType,
    height: usize,
    width: usize,
    batch: usize,
) -> Result<Vec<ComponentSize>> {
    component_sizes_for(dir, dtype, height, width, batch, false)
}

/// [`component_sizes`]; with `fused_attention` the UNet's attention never
/// holds its score matrix (cuDNN's flash SDPA), so only its feature maps
/// count. The VAE's single-head attention is counted materialized either way.
pub fn component_sizes_for(
    dir: &Path,
    dtype: DType,
    height: usize,
    width: usize,
    batch: usize,
    fused_attention: bool,
) -> Result<Vec<ComponentSize>> {
    let index = ModelIndex::load(dir)?;
    let s = dtype.size_in_bytes() as u64;
    let b2 = 2 * batch as u64;
    let unet_path = dir.join("unet").join("config.json");
    let unet: UNetConfig = read_json(&unet_path)?;
    let blocks = unet.blocks(&unet_path)?;
    let vae: VaeConfig = read_json(&dir.join("vae").join("config.json"))?;
    let f = vae.scale_factor();
    let hw = ((height / f) * (width / f)) as u64;
    let mut out = Vec::new();
    for te in ["text_encoder", "text_encoder_2"] {
        if index.component(te).is_none() {
            continue;
        }
        let d = dir.join(te);
        let c: ClipConfig = read_json(&d.join("config.json"))?;
        let act = b2 * (c.num_attention_heads as u64 * 77 * 77 + 4 * c.hidden_size as u64 * 77) * s;
        out.push(ComponentSize {
            name: te.into(),
            weights: weight_bytes(&d, "model", dtype)?,
            activations: act,
        });
    }
    let first_attn = blocks
        .iter()
        .position(|b| b.cross_attn)
        .unwrap_or(blocks.len() - 1);
    let hw_attn = hw >> (2 * first_attn);
    let heads = blocks[first_attn].heads as u64;
    let scores = if fused_attention {
        0
    } else {
        heads.saturating_mul(hw_attn).saturating_mul(hw_attn)
    };
    let unet_act = b2
        .saturating_mul(scores.saturating_add(16 * blocks[0].channels as u64 * hw))
        .saturating_mul(s);
    out.push(ComponentSize {
        name: "unet".into(),
        weights: weight_bytes(&dir.join("unet"), "diffusion_pytorch_model", dtype)?,
        activations: unet_act,
    });
    let vae_dtype = if vae.force_upcast { DType::F32 } else { dtype };
    let sv = vae_dtype.size_in_bytes() as u64;
    let c0 = vae.block_out_channels.first().copied().unwrap_or(128) as u64;
    let vae_act = (batch as u64)
        .saturating_mul((4 * c0 * (height * width) as u64).saturating_add(hw.saturating_mul(hw)))
        .saturating_mul(sv);
    out.push(ComponentSize {
        name: "vae".into(),
        weights: weight_bytes(&dir.join("vae"), "diffusion_pytorch_model", vae_dtype)?,
        activations: vae_act,
    });
    Ok(out)
}

/// `None` when the largest activation allowance of `sizes` fits in
/// `available` bytes, else what does not fit (the component, both sizes in GiB).
pub fn activation_shortfall(sizes: &[ComponentSize], available: u64) -> Option<String> {
    let big = sizes.iter().max_by_key(|c| c.activations)?;
    (big.activations > available).then(|| {
        format!(
            "the {} needs about {:.1} GiB of activations and the device has {:.1} GiB available",
            big.name,
            big.activations as f64 / (1u64 << 30) as f64,
            available as f64 / (1u64 << 30) as f64
        )
    })
}

/// The UNet's stages (`UNet::stages()` order) with their weight parameters and
/// counted FLOPs for `batch` images of `height × width` with guidance (2 ×
/// batch rows): 2 × parameters × latent pixels at the stage's resolution,
/// the matrix products of its convolutions and projections; attention's own
/// products and the context projections (77 tokens) are not counted.
pub fn unet_stage_costs(
    dir: &Path,
    height: usize,
    width: usize,
    batch: usize,
) -> Result<Vec<(String, u64, f64)>> {
    let unet_path = dir.join("unet").join("config.json");
    let unet: UNetConfig = read_json(&unet_path)?;
    let blocks = unet.blocks(&unet_path)?;
    let vae: VaeConfig = read_json(&dir.join("vae").join("config.json"))?;
    let f = vae.scale_factor();
    let hw = ((height / f) * (width / f)) as f64;
    let n = blocks.len();
    let mut params: Vec<u64> = vec![0; 2 * n + 3];
    let index = |name: &str| -> Option<usize> {
        let num = |p: &str| name.strip_prefix(p)?.split('.').next()?.parse::<usize>().ok();
        if ["time_embedding.", "add_embedding.", "conv_in."]
            .iter()
            .any(|p| name.starts_with(p))
        {
            Some(0)
        } else if let Some(i) = num("down_blocks.") {
            (i < n).then_some(1 + i)
        } else if name.starts_with("mid_block.") {
            Some(1 + n)
        } else if let Some(i) = num("up_blocks.") {
            (i < n).then_some(2 + n + i)
        } else if name.starts_with("conv_norm_out.") || name.starts_with("conv_out.") {
            Some(2 + 2 * n)
        } else {
            None
        }
    };
    for file in find_weights(&dir.join("unet"), "diffusion_pytorch_model", None)? {
        for (name, _, shape) in header_tensors(&file)? {
            if let Some(k) = index(&name) {
                params[k] += shape.iter().product::<u64>();
            }
        }
    }
    let pixels = |k: usize| -> f64 {
        let level = if k == 0 || k == 2 + 2 * n {
            0
        } else if k <= n {
            k - 1
        } else if k == n + 1 {
            n - 1
        } else {
            n - 1 - (k - 2 - n)
        };
        hw / 4f64.powi(level as i32)
    };
    let rows = 2.0 * batch as f64;
    let mut names = vec!["head".to_string()];
    names.extend((0..n).map(|i| format!("down_blocks.{i}")));
    names.push("mid_block".into());
    names.extend((0..n).map(|i| format!("up_blocks.{i}")));
    names.push("tail".into());
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(k, name)| (name, params[k], 2.0 * params[k] as f64 * pixels(k) * rows))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_activation_decides() {
        let c = |name: &str, activations: u64| ComponentSize {
            name: name.into(),
            weights: 0,
            activations,
        };
        let sizes = [c("unet", 10 << 30), c("vae", 3 << 30)];
        assert_eq!(activation_shortfall(&sizes, 12 << 30), None);
        let e = activation_shortfall(&sizes, 4 << 30).unwrap();
        assert!(
            e.contains("unet") && e.contains("10.0 GiB") && e.contains("4.0 GiB"),
            "{e}"
        );
        assert_eq!(activation_shortfall(&[], 0), None);
    }
}
