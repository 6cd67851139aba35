//! CLIP's text encoder (`CLIPTextModel`, `CLIPTextModelWithProjection`).
//!
//! Written from `transformers src/transformers/models/clip/modeling_clip.py`;
//! weight names are the PyTorch state-dict keys (`text_model.encoder.layers.N...`).
//! Unlike candle-transformers' SD copy, the config comes from `config.json`,
//! both `quick_gelu` (SD 1) and `gelu` (SD 2, SDXL) are supported, and the
//! penultimate hidden state and the projected pooled output (SDXL) are exposed.

use candle_core::{Device, IndexOp, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

use crate::config::ClipConfig;
use crate::error::Result;
use crate::nn::{self, AttentionOpts, Kernels};
use crate::weights::Part;

#[derive(Debug, Clone, Copy)]
enum Act {
    QuickGelu,
    Gelu,
}

impl Act {
    fn forward(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Act::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
            Act::Gelu => x.gelu_erf(),
        }
    }
}

#[derive(Debug)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    kernels: Kernels,
}

impl Attention {
    fn new(vb: VarBuilder, c: &ClipConfig) -> candle_core::Result<Self> {
        let h = c.hidden_size;
        Ok(Attention {
            kernels: Kernels::for_weights(vb.device(), vb.dtype()),
            q: candle_nn::linear(h, h, vb.pp("q_proj"))?,
            k: candle_nn::linear(h, h, vb.pp("k_proj"))?,
            v: candle_nn::linear(h, h, vb.pp("v_proj"))?,
            out: candle_nn::linear(h, h, vb.pp("out_proj"))?,
            heads: c.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (q, k, v) = (self.q.forward(x)?, self.k.forward(x)?, self.v.forward(x)?);
        let opts = AttentionOpts {
            heads: self.heads,
            mask: Some(mask),
            causal: true,
            upcast: false,
            kernels: self.kernels,
        };
        self.out.forward(&nn::attention(&q, &k, &v, &opts)?)
    }
}

#[derive(Debug)]
struct Layer {
    ln1: LayerNorm,
    attn: Attention,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Act,
}

impl Layer {
    fn new(vb: VarBuilder, c: &ClipConfig, act: Act) -> candle_core::Result<Self> {
        let h = c.hidden_size;
        Ok(Layer {
            ln1: candle_nn::layer_norm(h, c.layer_norm_eps, vb.pp("layer_norm1"))?,
            attn: Attention::new(vb.pp("self_attn"), c)?,
            ln2: candle_nn::layer_norm(h, c.layer_norm_eps, vb.pp("layer_norm2"))?,
            fc1: candle_nn::linear(h, c.intermediate_size, vb.pp("mlp").pp("fc1"))?,
            fc2: candle_nn::linear(c.intermediate_size, h, vb.pp("mlp").pp("fc2"))?,
            act,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let r = x;
        let x = (r + self.attn.forward(&self.ln1.forward(x)?, mask)?)?;
        let y = self
            .fc2
            .forward(&self.act.forward(&self.fc1.forward(&self.ln2.forward(&x)?)?)?)?;
        x + y
    }
}

/// The text encoder's outputs.
#[derive(Debug, Clone)]
pub struct ClipOutput {
    /// `last_hidden_state`: the last layer, after the final LayerNorm.
    pub last_hidden: Tensor,
    /// `hidden_states[-2]`: the second-to-last layer's output (SDXL's choice).
    pub penultimate: Tensor,
    /// The pooled output at the first EOS, projected when the model has
    /// `text_projection` (`text_embeds` of `CLIPTextModelWithProjection`).
    pub pooled: Tensor,
}

/// `CLIPTextModel` / `CLIPTextModelWithProjection`.
pub struct ClipTextModel {
    weights: Weights,
    eos_id: u32,
}

/// Where the encoder's weights are between calls (as the UNet's and the VAE
/// decoder's).
enum Weights {
    /// Every part built once and kept on its device.
    Held(Box<Layers>),
    /// Sequential offload: each part (the embeddings, one layer, the final
    /// norm, the projection) is built from the memory-mapped files onto the
    /// device right before it runs and freed right after.
    Streamed(Build),
}

struct Layers {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<Layer>,
    final_ln: LayerNorm,
    projection: Option<Linear>,
}

/// What builds each part: the weights (at the state dict's root), the
/// model's own root in them and the config.
struct Build {
    vb: VarBuilder<'static>,
    unprefixed: bool,
    config: ClipConfig,
    act: Act,
}

impl Build {
    fn new(vb: VarBuilder<'static>, c: &ClipConfig) -> Build {
        let act = if c.hidden_act == "gelu" {
            Act::Gelu
        } else {
            Act::QuickGelu
        };
        // transformers 5 saves `CLIPTextModel` without its base-model prefix
        // (`embeddings.*`, `encoder.*`, `final_layer_norm.*`): accept both layouts.
        let unprefixed = !vb.contains_tensor("text_model.embeddings.token_embedding.weight")
            && vb.contains_tensor("embeddings.token_embedding.weight");
        Build {
            vb,
            unprefixed,
            config: c.clone(),
            act,
        }
    }

    fn text_model(&self) -> VarBuilder<'static> {
        if self.unprefixed {
            self.vb.clone()
        } else {
            self.vb.pp("text_model")
        }
    }

    fn token_embedding(&self) -> candle_core::Result<Embedding> {
        let c = &self.config;
        candle_nn::embedding(
            c.vocab_size,
            c.hidden_size,
            self.text_model().pp("embeddings").pp("token_embedding"),
        )
    }

    fn position_embedding(&self) -> candle_core::Result<Embedding> {
        let c = &self.config;
        candle_nn::embedding(
            c.max_position_embeddings,
            c.hidden_size,
            self.text_model().pp("embeddings").pp("position_embedding"),
        )
    }

    fn layer(&self, i: usize) -> candle_core::Result<Layer> {
        Layer::new(
            self.text_model().pp("encoder").pp("layers").pp(i),
            &self.config,
            self.act,
        )
    }

    fn final_ln(&self) -> candle_core::Result<LayerNorm> {
        let c = &self.config;
        candle_nn::layer_norm(
            c.hidden_size,
            c.layer_norm_eps,
            self.text_model().pp("final_layer_norm"),
        )
    }

    fn projection(&self) -> candle_core::Result<Option<Linear>> {
        let c = &self.config;
        Ok(match (c.with_projection(), c.projection_dim) {
            (true, Some(p)) => Some(candle_nn::linear_no_bias(
                c.hidden_size,
                p,
                self.vb.pp("text_projection"),
            )?),
            _ => None,
        })
    }
}

impl std::fmt::Debug for ClipTextModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.weights {
            Weights::Held(l) => write!(f, "ClipTextModel({} layers)", l.layers.len()),
            Weights::Streamed(b) => write!(
                f,
                "ClipTextModel({} layers, streamed)",
                b.config.num_hidden_layers
            ),
        }
    }
}

impl ClipTextModel {
    /// Builds the model from its config; `vb` is rooted at the state dict.
    pub fn new(vb: VarBuilder<'static>, c: &ClipConfig, eos_id: u32) -> Result<Self> {
        let b = Build::new(vb, c);
        let layers = Layers {
            token_embedding: b.token_embedding()?,
            position_embedding: b.position_embedding()?,
            layers: (0..c.num_hidden_layers)
                .map(|i| b.layer(i))
                .collect::<candle_core::Result<Vec<_>>>()?,
            final_ln: b.final_ln()?,
            projection: b.projection()?,
        };
        Ok(ClipTextModel {
            weights: Weights::Held(Box::new(layers)),
            eos_id,
        })
    }

    /// An encoder whose weights stay in `vb` (memory-mapped files) and move to
    /// `vb`'s device one part at a time, for each call: sequential offload. A
    /// weight that does not fit the config is reported when its part first runs
    /// (as the streamed UNet's).
    pub fn streamed(vb: VarBuilder<'static>, c: &ClipConfig, eos_id: u32) -> Self {
        ClipTextModel {
            weights: Weights::Streamed(Build::new(vb, c)),
            eos_id,
        }
    }

    /// A part: `held` of the held parts, or built by `build`.
    fn part<'a, T>(
        &'a self,
        held: impl FnOnce(&'a Layers) -> &'a T,
        build: impl FnOnce(&Build) -> candle_core::Result<T>,
    ) -> candle_core::Result<Part<'a, T>> {
        Ok(match &self.weights {
            Weights::Held(l) => Part::Borrowed(held(l)),
            Weights::Streamed(b) => {
                crate::nn::memory::settle(b.vb.device())?;
                Part::Owned(build(b)?)
            }
        })
    }

    fn layers(&self) -> usize {
        match &self.weights {
            Weights::Held(l) => l.layers.len(),
            Weights::Streamed(b) => b.config.num_hidden_layers,
        }
    }

    /// Encodes token ids `(batch, seq)` (given on the host, for the EOS position).
    pub fn forward(&self, ids: &[Vec<u32>], device: &Device) -> Result<ClipOutput> {
        let b = ids.len();
        let s = ids.first().map_or(0, Vec::len);
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let t = Tensor::from_vec(flat, (b, s), device)?;
        let pos = Tensor::arange(0u32, s as u32, device)?.unsqueeze(0)?;
        let tokens = self
            .part(|l| &l.token_embedding, Build::token_embedding)?
            .forward(&t)?;
        let positions = self
            .part(|l| &l.position_embedding, Build::position_embedding)?
            .forward(&pos)?;
        let mut x = tokens.broadcast_add(&positions)?;
        let mask = causal_mask(s, device)?;
        // hidden_states[-2]: the embeddings when there is a single layer.
        let mut penultimate = x.clone();
        let n = self.layers();
        for i in 0..n {
            x = self.part(|l| &l.layers[i], |b| b.layer(i))?.forward(&x, &mask)?;
            if i + 2 == n {
                penultimate = x.clone();
            }
        }
        let last_hidden = self.part(|l| &l.final_ln, Build::final_ln)?.forward(&x)?;
        let rows = ids
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let p = row
                    .iter()
                    .position(|&id| id == self.eos_id)
                    .unwrap_or(s.saturating_sub(1));
                last_hidden.i((i, p))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut pooled = Tensor::stack(&rows, 0)?;
        let projection = match &self.weights {
            Weights::Held(l) => l.projection.as_ref().map(Part::Borrowed),
            Weights::Streamed(b) => {
                crate::nn::memory::settle(b.vb.device())?;
                b.projection()?.map(Part::Owned)
            }
        };
        if let Some(p) = projection {
            pooled = p.forward(&pooled)?;
        }
        Ok(ClipOutput {
            last_hidden,
            penultimate,
            pooled,
        })
    }
}

fn causal_mask(s: usize, device: &Device) -> candle_core::Result<Tensor> {
    let m: Vec<f32> = (0..s)
        .flat_map(|i| (0..s).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(m, (s, s), device)?
        .unsqueeze(0)?
        .unsqueeze(0)?
        .contiguous()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    /// The streamed encoder computes the held one's bits, for each preset's
    /// text encoders (SD 1's quick GELU, SD 2's GELU, SDXL's projected second
    /// encoder).
    #[test]
    fn streamed_encoder_equals_the_held_one() {
        for preset in ["tiny", "tiny-sd2", "tiny-sdxl"] {
            let p = crate::presets::preset(preset).unwrap();
            let configs = std::iter::once(&p.text_encoder).chain(p.text_encoder_2.as_ref());
            for (k, cfg) in configs.enumerate() {
                let cfg: ClipConfig = serde_json::from_value(cfg.clone()).unwrap();
                let (vb, _) = crate::random::var_builder(11 + k as u64, candle_core::DType::F32);
                let held = ClipTextModel::new(vb.clone(), &cfg, 2).unwrap();
                let streamed = ClipTextModel::streamed(vb, &cfg, 2);
                let n = cfg.num_hidden_layers;
                assert_eq!(format!("{held:?}"), format!("ClipTextModel({n} layers)"));
                assert_eq!(
                    format!("{streamed:?}"),
                    format!("ClipTextModel({n} layers, streamed)")
                );
                let ids = vec![vec![0, 5, 9, 2, 1, 1, 1], vec![0, 7, 2, 1, 1, 1, 1]];
                let a = held.forward(&ids, &Device::Cpu).unwrap();
                let b = streamed.forward(&ids, &Device::Cpu).unwrap();
                for (what, x, y) in [
                    ("last", &a.last_hidden, &b.last_hidden),
                    ("penultimate", &a.penultimate, &b.penultimate),
                    ("pooled", &a.pooled, &b.pooled),
                ] {
                    assert!(
                        crate::test_util::max_abs(x) > 0.0,
                        "{preset} {k} {what}: zeros prove nothing"
                    );
                    assert_eq!(
                        crate::test_util::max_abs_diff(x, y),
                        0.0,
                        "{preset} encoder {k}: {what}"
                    );
                }
            }
        }
    }
}
