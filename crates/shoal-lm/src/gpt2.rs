//! GPT-2 (transformers `models/gpt2/modeling_gpt2.py`: `GPT2Model`,
//! `GPT2LMHeadModel`, `GPT2ForSequenceClassification`) as named blocks.

use std::ops::Range;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{LayerNorm, Module, VarBuilder};

use crate::config::{Gpt2Config, Head};
use crate::error::{Error, Result};

/// What passes between blocks: the token ids `(b, L)` (i64; the classification
/// head reads them to find each sequence's last token) and, after the
/// embeddings, the hidden states `(b, L, n_embd)`; after the last block `x`
/// holds the logits (`(b, L, vocab)` or `(b, num_labels)`).
#[derive(Debug, Clone)]
pub struct Carry {
    /// Token ids.
    pub ids: Tensor,
    /// Hidden states, then logits; `None` before the embeddings.
    pub x: Option<Tensor>,
}

/// A `Conv1D` (weight `[in, out]`): `x · W + b`.
#[derive(Debug)]
struct Conv1D {
    w: Tensor,
    b: Tensor,
}

impl Conv1D {
    fn new(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        Ok(Conv1D {
            w: vb.get((cin, cout), "weight")?,
            b: vb.get(cout, "bias")?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, c) = x.dims3()?;
        let y = x.reshape((b * l, c))?.matmul(&self.w)?.broadcast_add(&self.b)?;
        Ok(y.reshape((b, l, ()))?)
    }
}

#[derive(Debug)]
struct Block {
    ln_1: LayerNorm,
    c_attn: Conv1D,
    attn_proj: Conv1D,
    ln_2: LayerNorm,
    c_fc: Conv1D,
    mlp_proj: Conv1D,
    index: usize,
}

#[derive(Debug)]
enum HeadWeights {
    /// Tied to `wte` (`lm_head.weight` when the file holds it).
    Lm(Tensor),
    Classify(Tensor),
}

#[derive(Debug)]
struct Final {
    ln_f: LayerNorm,
    head: HeadWeights,
}

/// A GPT-2, or the blocks of one pipeline stage of it.
#[derive(Debug)]
pub struct Gpt2 {
    config: Gpt2Config,
    /// `wte`, `wpe` (block 0).
    embeddings: Option<(Tensor, Tensor)>,
    blocks: Vec<Option<Block>>,
    last: Option<Final>,
    held: Range<usize>,
    batch_invariant: bool,
}

fn layer_norm(vb: VarBuilder, n: usize, eps: f64) -> Result<LayerNorm> {
    Ok(candle_nn::layer_norm(n, eps, vb)?)
}

impl Gpt2 {
    /// The block names, in order: `transformer.wte` (token and position
    /// embeddings), `transformer.h.0` …, `transformer.ln_f` (with the head).
    pub fn block_names(config: &Gpt2Config) -> Vec<String> {
        let mut v = vec!["transformer.wte".to_string()];
        v.extend((0..config.n_layer).map(|i| format!("transformer.h.{i}")));
        v.push("transformer.ln_f".into());
        v
    }

    /// Parameters of each block (for planning: bytes = params × dtype size).
    pub fn block_params(config: &Gpt2Config) -> Vec<u64> {
        let d = config.n_embd as u64;
        let inner = config.inner() as u64;
        let emb = (config.vocab_size as u64 + config.n_positions as u64) * d;
        let block = 4 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * inner + inner) + (inner * d + d);
        let head = match config.head() {
            Head::Lm => 0,
            Head::Classify => config.num_labels() as u64 * d,
        };
        let mut v = vec![emb];
        v.extend(std::iter::repeat_n(block, config.n_layer));
        v.push(2 * d + head);
        v
    }

    /// Multiply-adds ×2 of each block for `batch` sequences of `len` tokens
    /// (for planning: the matrix products; the LM head's projection counted).
    pub fn block_flops(config: &Gpt2Config, batch: usize, len: usize) -> Vec<f64> {
        let (d, inner, t) = (config.n_embd as f64, config.inner() as f64, (batch * len) as f64);
        let block =
            2.0 * t * (3.0 * d * d + d * d + 2.0 * d * inner) + 4.0 * batch as f64 * (len as f64).powi(2) * d;
        let head = match config.head() {
            Head::Lm => 2.0 * t * d * config.vocab_size as f64,
            Head::Classify => 2.0 * t * d * config.num_labels() as f64,
        };
        let mut v = vec![t * d];
        v.extend(std::iter::repeat_n(block, config.n_layer));
        v.push(head);
        v
    }

    /// Loads blocks `held` of the model in `dir` (`config.json`,
    /// `model.safetensors`) onto `device`; weights of other blocks are never
    /// read from the memory-mapped file.
    pub fn load(dir: &Path, device: &Device, dtype: DType, held: Range<usize>) -> Result<Gpt2> {
        let config = Gpt2Config::read(&dir.join("config.json"))?;
        let n = config.n_layer + 2;
        if held.start >= held.end || held.end > n {
            return Err(Error::invalid(
                "blocks",
                format!("{held:?}"),
                format!("this GPT-2 has {n} blocks"),
            ));
        }
        let file = dir.join("model.safetensors");
        let names = tensor_names(&file)?;
        let prefix = if names.iter().any(|n| n == "transformer.wte.weight") {
            "transformer."
        } else if names.iter().any(|n| n == "wte.weight") {
            ""
        } else {
            return Err(Error::BadFile {
                path: file,
                detail: "holds neither transformer.wte.weight nor wte.weight: not a GPT-2".into(),
            });
        };
        // SAFETY: the file is memory-mapped read-only; shoal never writes model files.
        let root = unsafe { VarBuilder::from_mmaped_safetensors(&[&file], dtype, device) }
            .map_err(|e| in_file(&file, e.into()))?;
        let tvb = if prefix.is_empty() {
            root.clone()
        } else {
            root.pp("transformer")
        };
        let (d, eps, inner) = (config.n_embd, config.layer_norm_epsilon, config.inner());
        let wte = |vb: &VarBuilder| vb.get((config.vocab_size, d), "wte.weight");
        let embeddings = if held.contains(&0) {
            Some((
                wte(&tvb).map_err(|e| in_file(&file, e.into()))?,
                tvb.get((config.n_positions, d), "wpe.weight")
                    .map_err(|e| in_file(&file, e.into()))?,
            ))
        } else {
            None
        };
        let mut blocks = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            if !held.contains(&(i + 1)) {
                blocks.push(None);
                continue;
            }
            let vb = tvb.pp("h").pp(i);
            let b = (|| -> Result<Block> {
                Ok(Block {
                    ln_1: layer_norm(vb.pp("ln_1"), d, eps)?,
                    c_attn: Conv1D::new(vb.pp("attn").pp("c_attn"), d, 3 * d)?,
                    attn_proj: Conv1D::new(vb.pp("attn").pp("c_proj"), d, d)?,
                    ln_2: layer_norm(vb.pp("ln_2"), d, eps)?,
                    c_fc: Conv1D::new(vb.pp("mlp").pp("c_fc"), d, inner)?,
                    mlp_proj: Conv1D::new(vb.pp("mlp").pp("c_proj"), inner, d)?,
                    index: i,
                })
            })()
            .map_err(|e| in_file(&file, e))?;
            blocks.push(Some(b));
        }
        let last = if held.contains(&(n - 1)) {
            let head = match config.head() {
                Head::Lm => HeadWeights::Lm(
                    if names.iter().any(|n| n == "lm_head.weight") {
                        root.get((config.vocab_size, d), "lm_head.weight")
                    } else {
                        wte(&tvb)
                    }
                    .map_err(|e| in_file(&file, e.into()))?,
                ),
                Head::Classify => HeadWeights::Classify(
                    root.get((config.num_labels(), d), "score.weight")
                        .map_err(|e| in_file(&file, e.into()))?,
                ),
            };
            Some(Final {
                ln_f: layer_norm(tvb.pp("ln_f"), d, eps).map_err(|e| in_file(&file, e))?,
                head,
            })
        } else {
            None
        };
        Ok(Gpt2 {
            config,
            embeddings,
            blocks,
            last,
            held,
            batch_invariant: device.is_cpu(),
        })
    }

    /// The config.
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// The blocks this instance holds.
    pub fn held(&self) -> Range<usize> {
        self.held.clone()
    }

    /// The carry before block 0: token ids `(b, L)`, checked against the vocabulary
    /// and the position table.
    pub fn start(&self, ids: &Tensor) -> Result<Carry> {
        let (b, l) = ids.dims2()?;
        if b == 0 || l == 0 || l > self.config.n_positions {
            return Err(Error::invalid(
                "input_ids",
                format!("{:?}", ids.dims()),
                format!("(batch ≥ 1, 1 ≤ length ≤ {}) token ids", self.config.n_positions),
            ));
        }
        let ids = ids.to_dtype(DType::I64)?;
        let v: Vec<i64> = ids.flatten_all()?.to_vec1()?;
        if let Some(bad) = v.iter().find(|&&t| t < 0 || t as usize >= self.config.vocab_size) {
            return Err(Error::invalid(
                "input_ids",
                bad,
                format!("token ids must be in 0..{}", self.config.vocab_size),
            ));
        }
        Ok(Carry { ids, x: None })
    }

    /// Runs blocks `range` (all held) on `c`. On a batch-invariant instance (the
    /// CPU) each sequence runs alone, so that a sequence's logits do not depend
    /// on the batch or micro-batch it came in.
    pub fn run(&self, range: Range<usize>, c: Carry) -> Result<Carry> {
        if range.start < self.held.start || range.end > self.held.end || range.start >= range.end {
            return Err(Error::invalid(
                "blocks",
                format!("{range:?}"),
                format!("this instance holds blocks {:?}", self.held),
            ));
        }
        let b = c.ids.dim(0)?;
        if self.batch_invariant && b > 1 {
            let rows = (0..b)
                .map(|i| {
                    let one = Carry {
                        ids: c.ids.narrow(0, i, 1)?,
                        x: c.x.as_ref().map(|x| x.narrow(0, i, 1)).transpose()?,
                    };
                    self.run_rows(range.clone(), one)
                })
                .collect::<Result<Vec<_>>>()?;
            let xs: Vec<Tensor> = rows.iter().filter_map(|r| r.x.clone()).collect();
            return Ok(Carry {
                ids: c.ids,
                x: Some(Tensor::cat(&xs, 0)?),
            });
        }
        self.run_rows(range, c)
    }

    fn run_rows(&self, range: Range<usize>, mut c: Carry) -> Result<Carry> {
        let n = self.config.n_layer + 2;
        for k in range {
            c.x = Some(if k == 0 {
                let (wte, wpe) = self.embeddings.as_ref().ok_or_else(|| missing(k))?;
                let (b, l) = c.ids.dims2()?;
                let tok = wte.index_select(&c.ids.flatten_all()?, 0)?.reshape((b, l, ()))?;
                tok.broadcast_add(&wpe.i(0..l)?.unsqueeze(0)?)?
            } else if k == n - 1 {
                let f = self.last.as_ref().ok_or_else(|| missing(k))?;
                let x = c.x.take().ok_or_else(|| missing(0))?;
                self.head(f, &c.ids, &f.ln_f.forward(&x)?)?
            } else {
                let blk = self.blocks[k - 1].as_ref().ok_or_else(|| missing(k))?;
                let x = c.x.take().ok_or_else(|| missing(0))?;
                self.block(blk, &x)?
            });
        }
        Ok(c)
    }

    fn block(&self, blk: &Block, x: &Tensor) -> Result<Tensor> {
        let (b, l, d) = x.dims3()?;
        let h = self.config.n_head;
        let hd = d / h;
        let qkv = blk.c_attn.forward(&blk.ln_1.forward(x)?)?;
        let split = |i: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(2, i * d, d)?
                .reshape((b, l, h, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let dtype = q.dtype();
        let mut scale = 1.0;
        if self.config.scale_attn_weights {
            scale /= (hd as f64).sqrt();
        }
        if self.config.scale_attn_by_inverse_layer_idx {
            scale /= (blk.index + 1) as f64;
        }
        let scores = (q.to_dtype(DType::F32)?.matmul(&k.to_dtype(DType::F32)?.t()?)? * scale)?;
        let mask: Vec<f32> = (0..l)
            .flat_map(|i| (0..l).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (l, l), x.device())?;
        let p = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&mask)?)?.to_dtype(dtype)?;
        let a = p.matmul(&v)?.transpose(1, 2)?.reshape((b, l, d))?;
        let x = (x + blk.attn_proj.forward(&a)?)?;
        let m = blk.c_fc.forward(&blk.ln_2.forward(&x)?)?;
        let m = match self.config.activation_function.as_str() {
            "gelu" => m.gelu_erf()?,
            "relu" => m.relu()?,
            _ => m.gelu()?, // gelu_new and gelu_pytorch_tanh: the tanh approximation
        };
        Ok((x + blk.mlp_proj.forward(&m)?)?)
    }

    fn head(&self, f: &Final, ids: &Tensor, x: &Tensor) -> Result<Tensor> {
        let (b, l, d) = x.dims3()?;
        let flat = x.reshape((b * l, d))?;
        match &f.head {
            HeadWeights::Lm(w) => Ok(flat.matmul(&w.t()?)?.reshape((b, l, ()))?),
            HeadWeights::Classify(w) => {
                let logits = flat.matmul(&w.t()?)?.reshape((b, l, ()))?;
                // transformers: the last token that is not padding (the last
                // token when no pad token is set; position 0 when all are padding).
                let ids: Vec<Vec<i64>> = ids.to_vec2()?;
                let rows = ids
                    .iter()
                    .enumerate()
                    .map(|(i, row)| {
                        let last = match self.config.pad_token_id {
                            None => l - 1,
                            Some(p) => row.iter().rposition(|&t| t != p).unwrap_or(0),
                        };
                        logits.i((i, last))
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Ok(Tensor::stack(&rows, 0)?)
            }
        }
    }

    /// The logits for token ids `(b, L)`: every block in turn (all held).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let c = self.run(0..self.config.n_layer + 2, self.start(ids)?)?;
        c.x.ok_or_else(|| missing(0))
    }
}

fn missing(block: usize) -> Error {
    Error::invalid("blocks", block, "this block is not held by this instance")
}

fn in_file(path: &Path, e: Error) -> Error {
    match e {
        Error::Candle(c) => Error::BadFile {
            path: PathBuf::from(path),
            detail: c.to_string(),
        },
        other => other,
    }
}

/// The tensor names in a safetensors file (its header only).
fn tensor_names(path: &Path) -> Result<Vec<String>> {
    use std::io::Read;
    let bad = |d: String| Error::BadFile {
        path: path.to_path_buf(),
        detail: d,
    };
    let mut f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let len = f.metadata().map_err(|e| bad(e.to_string()))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| bad("too short for a safetensors file".into()))?;
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 || n + 8 > len {
        return Err(bad(format!("a header of {n} bytes in a file of {len}")));
    }
    let mut h = vec![0u8; n as usize];
    f.read_exact(&mut h).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(&h).map_err(|e| bad(format!("header: {e}")))?;
    Ok(v.as_object()
        .map(|o| o.keys().filter(|k| *k != "__metadata__").cloned().collect())
        .unwrap_or_default())
}
