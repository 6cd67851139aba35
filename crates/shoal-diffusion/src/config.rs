//! Serde structs of the diffusers `config.json` files, and their validation.
//!
//! Sources: `huggingface/diffusers src/diffusers/models/unets/unet_2d_condition.py`
//! (`UNet2DConditionModel.__init__`), `models/autoencoders/autoencoder_kl.py`,
//! `transformers src/transformers/models/clip/configuration_clip.py`. Field
//! names are the upstream ones; defaults are upstream's. Values shoal does not
//! implement are rejected with the field's name, never silently ignored.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The largest config file read (diffusers' are a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Reads a file of at most `limit` bytes (a larger one, or a device such as
/// `/dev/zero`, is an error naming the limit, read no further than it).
pub fn read_limited(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let kind = f.metadata()?.file_type();
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_char_device() || kind.is_block_device() || kind.is_dir() {
            return Err(std::io::Error::other("not a regular file"));
        }
    }
    let mut buf = Vec::new();
    f.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "larger than the limit of {limit} bytes"
        )));
    }
    Ok(buf)
}

/// Python's `json` writes `Infinity`, `-Infinity` and `NaN` (diffusers saves
/// `"lambda_min_clipped": -Infinity` in every DPM-Solver config), which JSON
/// does not allow: outside strings they become the strings `"Infinity"`,
/// `"-Infinity"` and `"NaN"`, which [`json_f64`] reads back as numbers.
pub fn python_json(text: &str) -> std::borrow::Cow<'_, str> {
    if !(text.contains("Infinity") || text.contains("NaN")) {
        return std::borrow::Cow::Borrowed(text);
    }
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let (mut i, mut in_str, mut esc) = (0, false, false);
    while i < b.len() {
        let c = b[i];
        if in_str {
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
        } else {
            let boundary = i == 0 || !b[i - 1].is_ascii_alphanumeric();
            let word = ["-Infinity", "Infinity", "NaN"].into_iter().find(|w| {
                boundary
                    && text[i..].starts_with(w)
                    && !b.get(i + w.len()).is_some_and(u8::is_ascii_alphanumeric)
            });
            if let Some(w) = word {
                out.push('"');
                out.push_str(w);
                out.push('"');
                i += w.len();
                continue;
            }
        }
        // Copy whole UTF-8 sequences.
        let len = text[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&text[i..i + len]);
        i += len;
    }
    std::borrow::Cow::Owned(out)
}

/// A config number, including Python's `Infinity`, `-Infinity` and `NaN` (see [`python_json`]).
pub fn json_f64(v: &serde_json::Value) -> Option<f64> {
    match v.as_str() {
        Some("Infinity") => Some(f64::INFINITY),
        Some("-Infinity") => Some(f64::NEG_INFINITY),
        Some("NaN") => Some(f64::NAN),
        Some(_) => None,
        None => v.as_f64(),
    }
}

/// Reads and parses a JSON config, naming the file on failure.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = read_limited(path, MAX_CONFIG_BYTES)
        .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other))
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile {
                path: path.to_path_buf(),
                hint: "a diffusers model folder has one config per component".into(),
            },
            _ => Error::BadFile {
                path: path.to_path_buf(),
                detail: format!("cannot read: {e}"),
            },
        })?;
    serde_json::from_str(&python_json(&text)).map_err(|e| Error::BadFile {
        path: path.to_path_buf(),
        detail: format!("not a valid config: {e}"),
    })
}

/// An int that diffusers also accepts as a per-block list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    /// One value for every block.
    One(usize),
    /// One value per block.
    Each(Vec<usize>),
}

impl PerBlock {
    /// The per-block values for `n` blocks.
    pub fn expand(&self, n: usize, path: &Path, field: &str) -> Result<Vec<usize>> {
        match self {
            PerBlock::One(v) => Ok(vec![*v; n]),
            PerBlock::Each(v) if v.len() == n => Ok(v.clone()),
            PerBlock::Each(v) => Err(Error::Config {
                path: path.to_path_buf(),
                field: field.into(),
                detail: format!("has {} entries for {n} blocks", v.len()),
            }),
        }
    }
}

fn d_true() -> bool {
    true
}
fn d_one() -> usize {
    1
}
fn d_f1() -> f64 {
    1.0
}
fn d_groups() -> usize {
    32
}
fn d_eps() -> f64 {
    1e-5
}
fn d_four() -> usize {
    4
}
fn d_silu() -> String {
    "silu".into()
}
fn d_heads8() -> PerBlock {
    PerBlock::One(8)
}
fn d_cross() -> PerBlock {
    PerBlock::One(1280)
}
fn d_mid() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn d_default() -> String {
    "default".into()
}
fn d_three() -> usize {
    3
}
fn d_positional() -> String {
    "positional".into()
}

/// `unet/config.json` (`UNet2DConditionModel`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Latent size the model was trained at (`sample_size × vae factor` = default resolution).
    #[serde(default)]
    pub sample_size: Option<usize>,
    /// Latent channels in.
    #[serde(default = "d_four")]
    pub in_channels: usize,
    /// Latent channels out.
    #[serde(default = "d_four")]
    pub out_channels: usize,
    /// Center the input to [-1, 1].
    #[serde(default)]
    pub center_input_sample: bool,
    /// Order of the sinusoidal embedding halves.
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    /// Frequency shift of the sinusoidal embedding.
    #[serde(default)]
    pub freq_shift: usize,
    /// `CrossAttnDownBlock2D` or `DownBlock2D`, per block.
    pub down_block_types: Vec<String>,
    /// `UNetMidBlock2DCrossAttn` (others are rejected).
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<String>,
    /// `CrossAttnUpBlock2D` or `UpBlock2D`, per block.
    pub up_block_types: Vec<String>,
    /// Channels per block.
    pub block_out_channels: Vec<usize>,
    /// ResNet layers per down block (up blocks have one more).
    #[serde(default = "d_heads_lpb")]
    pub layers_per_block: PerBlock,
    /// Padding of the downsampling convolutions.
    #[serde(default = "d_one")]
    pub downsample_padding: usize,
    /// Output scale of the mid block's ResNets.
    #[serde(default = "d_f1")]
    pub mid_block_scale_factor: f64,
    /// Activation (`silu` only).
    #[serde(default = "d_silu")]
    pub act_fn: String,
    /// Groups of every GroupNorm.
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    /// Epsilon of the ResNet GroupNorms.
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    /// Width of the text embeddings.
    #[serde(default = "d_cross")]
    pub cross_attention_dim: PerBlock,
    /// Transformer blocks per attention, per block.
    #[serde(default = "d_one_per_block")]
    pub transformer_layers_per_block: PerBlock,
    /// In SD 1/2 configs this is the **number of heads** (diffusers' naming).
    #[serde(default = "d_heads8")]
    pub attention_head_dim: PerBlock,
    /// The number of heads, when given (preferred over `attention_head_dim`).
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock>,
    /// Linear rather than 1×1-conv projections in the transformers (SD 2, SDXL).
    #[serde(default)]
    pub use_linear_projection: bool,
    /// Attention in f32 (SD 2.1); shoal always accumulates softmax in f32.
    #[serde(default)]
    pub upcast_attention: bool,
    /// `text_time` for SDXL, else none.
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    /// SDXL: width of each time-id embedding.
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    /// SDXL: input width of `add_embedding`.
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// Rejected unless null.
    #[serde(default)]
    pub class_embed_type: Option<String>,
    /// Rejected unless null.
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    /// Rejected unless false.
    #[serde(default)]
    pub only_cross_attention: Value,
    /// Rejected unless false.
    #[serde(default)]
    pub dual_cross_attention: bool,
    /// Rejected unless `default`.
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    /// Rejected unless 3.
    #[serde(default = "d_three")]
    pub conv_in_kernel: usize,
    /// Rejected unless 3.
    #[serde(default = "d_three")]
    pub conv_out_kernel: usize,
    /// Rejected unless `positional`.
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
}

fn d_heads_lpb() -> PerBlock {
    PerBlock::One(2)
}

fn d_one_per_block() -> PerBlock {
    PerBlock::One(1)
}

/// One level of the UNet, with everything resolved per block.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockSpec {
    /// Output channels.
    pub channels: usize,
    /// Whether the block has cross-attention transformers.
    pub cross_attn: bool,
    /// ResNet layers (down block count; up blocks add one).
    pub layers: usize,
    /// Transformer blocks per attention.
    pub transformer_layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Text embedding width.
    pub cross_attention_dim: usize,
}

impl UNetConfig {
    /// Checks the config and resolves every per-block value; `path` names errors.
    pub fn blocks(&self, path: &Path) -> Result<Vec<BlockSpec>> {
        let bad = |field: &str, detail: String| Error::Config {
            path: path.to_path_buf(),
            field: field.into(),
            detail,
        };
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(bad("block_out_channels", "is empty".into()));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(bad(
                "down_block_types",
                format!(
                    "down_block_types, up_block_types and block_out_channels must have the same length ({n})"
                ),
            ));
        }
        if self.mid_block_type.as_deref() != Some("UNetMidBlock2DCrossAttn") {
            return Err(bad(
                "mid_block_type",
                format!(
                    "{:?} is not supported; UNetMidBlock2DCrossAttn is",
                    self.mid_block_type
                ),
            ));
        }
        if self.downsample_padding != 1 {
            return Err(bad(
                "downsample_padding",
                format!("{} is not supported; 1 is", self.downsample_padding),
            ));
        }
        if self.act_fn != "silu" {
            return Err(bad(
                "act_fn",
                format!("{:?} is not supported; silu is", self.act_fn),
            ));
        }
        for (field, ok) in [
            ("class_embed_type", self.class_embed_type.is_none()),
            ("time_cond_proj_dim", self.time_cond_proj_dim.is_none()),
            (
                "only_cross_attention",
                matches!(self.only_cross_attention, Value::Null | Value::Bool(false)),
            ),
            ("dual_cross_attention", !self.dual_cross_attention),
            (
                "resnet_time_scale_shift",
                self.resnet_time_scale_shift == "default",
            ),
            ("conv_in_kernel", self.conv_in_kernel == 3),
            ("conv_out_kernel", self.conv_out_kernel == 3),
            ("time_embedding_type", self.time_embedding_type == "positional"),
        ] {
            if !ok {
                return Err(bad(
                    field,
                    "this variant of UNet2DConditionModel is not supported".into(),
                ));
            }
        }
        match self.addition_embed_type.as_deref() {
            None => {}
            Some("text_time")
                if self.addition_time_embed_dim.is_none()
                    || self.projection_class_embeddings_input_dim.is_none() =>
            {
                return Err(bad(
                    "addition_embed_type",
                    "text_time needs addition_time_embed_dim and projection_class_embeddings_input_dim"
                        .into(),
                ));
            }
            Some("text_time") => {}
            Some(other) => {
                return Err(bad(
                    "addition_embed_type",
                    format!("{other:?} is not supported; text_time (SDXL) is"),
                ));
            }
        }
        if self.norm_num_groups == 0 {
            return Err(bad("norm_num_groups", "must be at least 1".into()));
        }
        for (i, c) in self.block_out_channels.iter().enumerate() {
            if *c == 0 || c % self.norm_num_groups != 0 {
                return Err(bad(
                    "norm_num_groups",
                    format!(
                        "{} does not divide block_out_channels[{i}] = {c}",
                        self.norm_num_groups
                    ),
                ));
            }
        }
        let layers = self.layers_per_block.expand(n, path, "layers_per_block")?;
        let tl = self
            .transformer_layers_per_block
            .expand(n, path, "transformer_layers_per_block")?;
        let heads = match &self.num_attention_heads {
            Some(h) => h.expand(n, path, "num_attention_heads")?,
            None => self.attention_head_dim.expand(n, path, "attention_head_dim")?,
        };
        let cross = self.cross_attention_dim.expand(n, path, "cross_attention_dim")?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let cross_attn = match (
                self.down_block_types[i].as_str(),
                self.up_block_types[n - 1 - i].as_str(),
            ) {
                ("CrossAttnDownBlock2D", "CrossAttnUpBlock2D") => true,
                ("DownBlock2D", "UpBlock2D") => false,
                (d, u) => {
                    return Err(bad(
                        "down_block_types",
                        format!(
                            "block {i}: {d:?} with up block {u:?} is not supported; \
                             CrossAttnDownBlock2D/CrossAttnUpBlock2D and DownBlock2D/UpBlock2D are"
                        ),
                    ));
                }
            };
            let ch = self.block_out_channels[i];
            if cross_attn && (heads[i] == 0 || !ch.is_multiple_of(heads[i])) {
                return Err(bad(
                    "attention_head_dim",
                    format!("{} heads do not divide {ch} channels", heads[i]),
                ));
            }
            out.push(BlockSpec {
                channels: ch,
                cross_attn,
                layers: layers[i],
                transformer_layers: tl[i],
                heads: heads[i],
                cross_attention_dim: cross[i],
            });
        }
        Ok(out)
    }
}

fn d_latent() -> usize {
    4
}
fn d_scaling() -> f64 {
    0.18215
}
fn d_vae_channels() -> Vec<usize> {
    vec![64]
}

/// `vae/config.json` (`AutoencoderKL`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    /// Channels per block.
    #[serde(default = "d_vae_channels")]
    pub block_out_channels: Vec<usize>,
    /// ResNet layers per block.
    #[serde(default = "d_one")]
    pub layers_per_block: usize,
    /// Latent channels.
    #[serde(default = "d_latent")]
    pub latent_channels: usize,
    /// GroupNorm groups.
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    /// Image channels.
    #[serde(default = "d_three")]
    pub in_channels: usize,
    /// Image channels out.
    #[serde(default = "d_three")]
    pub out_channels: usize,
    /// Latents are divided by this before decoding.
    #[serde(default = "d_scaling")]
    pub scaling_factor: f64,
    /// Whether the quantization convs exist.
    #[serde(default = "d_true")]
    pub use_quant_conv: bool,
    /// Whether the post-quantization conv exists.
    #[serde(default = "d_true")]
    pub use_post_quant_conv: bool,
    /// SDXL: decode in f32 (diffusers upcasts); honoured by the pipeline.
    #[serde(default)]
    pub force_upcast: bool,
    /// Must be true (the mid block's attention).
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
    /// Must be null: shoal's VAE has no shift.
    #[serde(default)]
    pub shift_factor: Option<f64>,
}

/// The most VAE blocks accepted (SD's VAEs have 4).
pub const MAX_VAE_BLOCKS: usize = 8;

impl VaeConfig {
    /// The spatial factor between image and latents: `2^(blocks - 1)`.
    pub fn scale_factor(&self) -> usize {
        1usize
            .checked_shl(self.block_out_channels.len().saturating_sub(1) as u32)
            .unwrap_or(usize::MAX)
    }

    /// Checks what shoal's VAE supports.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |field: &str, detail: String| Error::Config {
            path: path.to_path_buf(),
            field: field.into(),
            detail,
        };
        if self.block_out_channels.is_empty() {
            return Err(bad("block_out_channels", "is empty".into()));
        }
        if self.block_out_channels.len() > MAX_VAE_BLOCKS {
            return Err(bad(
                "block_out_channels",
                format!(
                    "{} blocks (a latent 2^{} times smaller than the image); at most {MAX_VAE_BLOCKS}",
                    self.block_out_channels.len(),
                    self.block_out_channels.len() - 1
                ),
            ));
        }
        if self.norm_num_groups == 0 {
            return Err(bad("norm_num_groups", "must be at least 1".into()));
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|c| **c == 0 || *c % self.norm_num_groups != 0)
        {
            return Err(bad(
                "norm_num_groups",
                format!("{} does not divide {c}", self.norm_num_groups),
            ));
        }
        if !self.mid_block_add_attention {
            return Err(bad("mid_block_add_attention", "false is not supported".into()));
        }
        if self.shift_factor.is_some() {
            return Err(bad(
                "shift_factor",
                "is not supported (SD 1/2/XL VAEs have none)".into(),
            ));
        }
        if self.in_channels != 3 || self.out_channels != 3 {
            return Err(bad(
                "in_channels",
                "only RGB (3-channel) VAEs are supported".into(),
            ));
        }
        Ok(())
    }
}

fn d_clip_act() -> String {
    "quick_gelu".into()
}
fn d_ln_eps() -> f64 {
    1e-5
}
fn d_pos() -> usize {
    77
}

/// `text_encoder/config.json` (`CLIPTextModel` / `CLIPTextModelWithProjection`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    /// Token vocabulary.
    pub vocab_size: usize,
    /// Width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// Positions (77).
    #[serde(default = "d_pos")]
    pub max_position_embeddings: usize,
    /// `quick_gelu` (SD 1) or `gelu` (SD 2, SDXL's second encoder).
    #[serde(default = "d_clip_act")]
    pub hidden_act: String,
    /// LayerNorm epsilon.
    #[serde(default = "d_ln_eps")]
    pub layer_norm_eps: f64,
    /// Width of `text_projection` (SDXL's second encoder).
    #[serde(default)]
    pub projection_dim: Option<usize>,
    /// The model class (`CLIPTextModel` or `CLIPTextModelWithProjection`).
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
}

impl ClipConfig {
    /// Whether the encoder has a `text_projection` (SDXL's second encoder).
    pub fn with_projection(&self) -> bool {
        self.architectures
            .as_ref()
            .is_some_and(|a| a.iter().any(|s| s == "CLIPTextModelWithProjection"))
    }

    /// Checks what shoal's CLIP supports.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |field: &str, detail: String| Error::Config {
            path: path.to_path_buf(),
            field: field.into(),
            detail,
        };
        if !["quick_gelu", "gelu"].contains(&self.hidden_act.as_str()) {
            return Err(bad(
                "hidden_act",
                format!("{:?} is not supported; quick_gelu and gelu are", self.hidden_act),
            ));
        }
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(bad("num_attention_heads", "must divide hidden_size".into()));
        }
        if self.with_projection() && self.projection_dim.is_none() {
            return Err(bad(
                "projection_dim",
                "CLIPTextModelWithProjection needs projection_dim".into(),
            ));
        }
        Ok(())
    }
}

/// `model_index.json`: which components a pipeline has.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelIndex {
    /// The pipeline class.
    pub class_name: String,
    /// SDXL: negative embeddings are zeros when no negative prompt is given.
    pub force_zeros_for_empty_prompt: bool,
    /// Component folder → `[library, class]`, absent ones left out.
    pub components: Vec<(String, String, String)>,
    /// The file.
    pub path: PathBuf,
}

impl ModelIndex {
    /// Reads `model_index.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("model_index.json");
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir.to_path_buf(),
                hint: "expected a diffusers model folder (with model_index.json); \
                       `shoal make-model --preset tiny --out DIR` writes one"
                    .into(),
            });
        }
        let v: Value = read_json(&path)?;
        let obj = v.as_object().ok_or_else(|| Error::BadFile {
            path: path.clone(),
            detail: "expected a JSON object".into(),
        })?;
        let class_name = obj
            .get("_class_name")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Config {
                path: path.clone(),
                field: "_class_name".into(),
                detail: "missing".into(),
            })?
            .to_string();
        let mut components = Vec::new();
        for (k, v) in obj {
            if k.starts_with('_') {
                continue;
            }
            if let Some([lib, class]) = v.as_array().map(Vec::as_slice)
                && let (Some(lib), Some(class)) = (lib.as_str(), class.as_str())
            {
                components.push((k.clone(), lib.to_string(), class.to_string()));
            }
        }
        Ok(ModelIndex {
            class_name,
            force_zeros_for_empty_prompt: obj
                .get("force_zeros_for_empty_prompt")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            components,
            path,
        })
    }

    /// The class of a component, if present.
    pub fn component(&self, name: &str) -> Option<&str> {
        self.components
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, c)| c.as_str())
    }
}

#[cfg(test)]
mod python_json_tests {
    use super::*;

    #[test]
    fn pythons_special_numbers_are_read() {
        let t = r#"{"lambda_min_clipped": -Infinity, "a": Infinity, "b": NaN, "s": "NaN -Infinity", "c": 1.5, "d": [NaN]}"#;
        let v: serde_json::Value = serde_json::from_str(&python_json(t)).unwrap();
        assert_eq!(json_f64(&v["lambda_min_clipped"]), Some(f64::NEG_INFINITY));
        assert_eq!(json_f64(&v["a"]), Some(f64::INFINITY));
        assert!(json_f64(&v["b"]).is_some_and(f64::is_nan));
        assert_eq!(v["s"], "NaN -Infinity", "strings are left alone");
        assert_eq!(json_f64(&v["c"]), Some(1.5));
        assert!(json_f64(&v["d"][0]).is_some_and(f64::is_nan));
        assert!(matches!(
            python_json(r#"{"x": 1}"#),
            std::borrow::Cow::Borrowed(_)
        ));
        assert!(serde_json::from_str::<serde_json::Value>(&python_json(r#"{"x": NaNo}"#)).is_err());
    }
}
