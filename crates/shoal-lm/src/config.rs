//! `config.json` of a GPT-2 (transformers' `GPT2Config`), validated.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The largest config read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Which head the model has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// `GPT2LMHeadModel`: logits over the vocabulary at every position, the
    /// projection tied to `wte`.
    Lm,
    /// `GPT2ForSequenceClassification`: `score` (no bias) at each sequence's last
    /// non-padding token, `num_labels` logits.
    Classify,
}

/// The fields of transformers' `GPT2Config` that shape the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    /// Vocabulary size.
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// Longest sequence (learned position embeddings).
    #[serde(default = "d_positions")]
    pub n_positions: usize,
    /// Hidden width.
    #[serde(default = "d_embd")]
    pub n_embd: usize,
    /// Blocks.
    #[serde(default = "d_layer")]
    pub n_layer: usize,
    /// Attention heads.
    #[serde(default = "d_head")]
    pub n_head: usize,
    /// Inner width of the MLP (`None`: 4 × `n_embd`).
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// LayerNorm epsilon.
    #[serde(default = "d_eps")]
    pub layer_norm_epsilon: f64,
    /// The MLP activation (`gelu_new` is GPT-2's).
    #[serde(default = "d_act")]
    pub activation_function: String,
    /// Scores divided by √(head dim).
    #[serde(default = "d_true")]
    pub scale_attn_weights: bool,
    /// Scores also divided by the layer index + 1.
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// The padding token (sequence classification pools the last other token).
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    /// Labels of the classification head (their count is `num_labels`).
    #[serde(default)]
    pub id2label: Option<std::collections::BTreeMap<String, String>>,
    /// The model classes (`GPT2LMHeadModel`, `GPT2ForSequenceClassification`).
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    /// `gpt2`.
    #[serde(default = "d_type")]
    pub model_type: String,
}

fn d_vocab() -> usize {
    50257
}
fn d_positions() -> usize {
    1024
}
fn d_embd() -> usize {
    768
}
fn d_layer() -> usize {
    12
}
fn d_head() -> usize {
    12
}
fn d_eps() -> f64 {
    1e-5
}
fn d_act() -> String {
    "gelu_new".into()
}
fn d_true() -> bool {
    true
}
fn d_type() -> String {
    "gpt2".into()
}

/// Limits on sizes a config may ask for (a GPT-2 XL is 1600 wide, 48 deep).
const MAX_WIDTH: usize = 1 << 16;
const MAX_LAYERS: usize = 1024;
const MAX_VOCAB: usize = 1 << 22;
const MAX_POSITIONS: usize = 1 << 20;

impl Gpt2Config {
    /// Reads and validates `config.json`.
    pub fn read(path: &Path) -> Result<Gpt2Config> {
        let bad = |detail: String| Error::BadFile {
            path: path.to_path_buf(),
            detail,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        if !meta.is_file() {
            return Err(bad("not a regular file".into()));
        }
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(bad(format!(
                "{} bytes; a config is at most {MAX_CONFIG_BYTES}",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let c: Gpt2Config =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a GPT-2 config: {e}")))?;
        c.validate(path)?;
        Ok(c)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let field = |f: &str, d: String| Error::Config {
            path: path.to_path_buf(),
            field: f.into(),
            detail: d,
        };
        if self.model_type != "gpt2" {
            return Err(field(
                "model_type",
                format!("{:?}; shoal reads gpt2", self.model_type),
            ));
        }
        for (name, v, max) in [
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("n_positions", self.n_positions, MAX_POSITIONS),
            ("n_embd", self.n_embd, MAX_WIDTH),
            ("n_layer", self.n_layer, MAX_LAYERS),
            ("n_head", self.n_head, MAX_WIDTH),
            ("n_inner", self.inner(), 4 * MAX_WIDTH),
        ] {
            if v == 0 || v > max {
                return Err(field(name, format!("{v}; must be 1 to {max}")));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(field(
                "n_head",
                format!("{} heads do not divide n_embd {}", self.n_head, self.n_embd),
            ));
        }
        if !(self.layer_norm_epsilon > 0.0 && self.layer_norm_epsilon < 1.0) {
            return Err(field(
                "layer_norm_epsilon",
                format!("{}", self.layer_norm_epsilon),
            ));
        }
        if !["gelu_new", "gelu", "gelu_pytorch_tanh", "relu"].contains(&self.activation_function.as_str()) {
            return Err(field(
                "activation_function",
                format!(
                    "{:?}; shoal runs gelu_new, gelu, gelu_pytorch_tanh and relu",
                    self.activation_function
                ),
            ));
        }
        if self.head() == Head::Classify && self.num_labels() == 0 {
            return Err(field(
                "id2label",
                "a classification head needs at least one label".into(),
            ));
        }
        Ok(())
    }

    /// The MLP's inner width.
    pub fn inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// Labels of the classification head (transformers' default is 2).
    pub fn num_labels(&self) -> usize {
        self.id2label.as_ref().map_or(2, |m| m.len())
    }

    /// The head named by `architectures` (the LM head when none is named).
    pub fn head(&self) -> Head {
        let classify = self
            .architectures
            .as_ref()
            .is_some_and(|a| a.iter().any(|n| n.contains("SequenceClassification")));
        if classify { Head::Classify } else { Head::Lm }
    }
}
