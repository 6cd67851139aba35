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
#[derive(Debug)]
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<Layer>,
    final_ln: LayerNorm,
    projection: Option<Linear>,
    eos_id: u32,
}

impl ClipTextModel {
    /// Builds the model from its config; `vb` is rooted at the state dict.
    pub fn new(vb: VarBuilder, c: &ClipConfig, eos_id: u32) -> Result<Self> {
        let act = if c.hidden_act == "gelu" {
            Act::Gelu
        } else {
            Act::QuickGelu
        };
        // transformers 5 saves `CLIPTextModel` without its base-model prefix
        // (`embeddings.*`, `encoder.*`, `final_layer_norm.*`): accept both layouts.
        let unprefixed = !vb.contains_tensor("text_model.embeddings.token_embedding.weight")
            && vb.contains_tensor("embeddings.token_embedding.weight");
        let tm = if unprefixed {
            vb.clone()
        } else {
            vb.pp("text_model")
        };
        let emb = tm.pp("embeddings");
        let layers = (0..c.num_hidden_layers)
            .map(|i| Layer::new(tm.pp("encoder").pp("layers").pp(i), c, act))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let projection = match (c.with_projection(), c.projection_dim) {
            (true, Some(p)) => Some(candle_nn::linear_no_bias(
                c.hidden_size,
                p,
                vb.pp("text_projection"),
            )?),
            _ => None,
        };
        Ok(ClipTextModel {
            token_embedding: candle_nn::embedding(c.vocab_size, c.hidden_size, emb.pp("token_embedding"))?,
            position_embedding: candle_nn::embedding(
                c.max_position_embeddings,
                c.hidden_size,
                emb.pp("position_embedding"),
            )?,
            layers,
            final_ln: candle_nn::layer_norm(c.hidden_size, c.layer_norm_eps, tm.pp("final_layer_norm"))?,
            projection,
            eos_id,
        })
    }

    /// Encodes token ids `(batch, seq)` (given on the host, for the EOS position).
    pub fn forward(&self, ids: &[Vec<u32>], device: &Device) -> Result<ClipOutput> {
        let b = ids.len();
        let s = ids.first().map_or(0, Vec::len);
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let t = Tensor::from_vec(flat, (b, s), device)?;
        let pos = Tensor::arange(0u32, s as u32, device)?.unsqueeze(0)?;
        let mut x = self
            .token_embedding
            .forward(&t)?
            .broadcast_add(&self.position_embedding.forward(&pos)?)?;
        let mask = causal_mask(s, device)?;
        // hidden_states[-2]: the embeddings when there is a single layer.
        let mut penultimate = x.clone();
        let n = self.layers.len();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, &mask)?;
            if i + 2 == n {
                penultimate = x.clone();
            }
        }
        let last_hidden = self.final_ln.forward(&x)?;
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
        if let Some(p) = &self.projection {
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
