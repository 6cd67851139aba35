//! Finding, checking and memory-mapping a component's safetensors weights.
//!
//! The diffusers layout (`shared/notes/semantics.md` §7, §15): `unet/` and
//! `vae/` hold `diffusion_pytorch_model[.fp16].safetensors` (or a sharded
//! `.safetensors.index.json`), text encoders hold `model[.fp16].safetensors`.
//! Pickle files (`.bin`, `.ckpt`, `.pt`) are refused. Before mapping, each file
//! is pre-flighted: Git LFS pointers, HTML pages, truncated files and headers
//! whose offsets do not add up are reported with the file's name and the fix,
//! since a truncated mapped file would otherwise crash with SIGBUS.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde_json::Value;

use crate::error::{Error, Result};

/// The reference parser's header cap.
const MAX_HEADER: u64 = 100_000_000;

/// The weight files of one component, preferring `variant` (`fp16`) if given,
/// else the plain file, else the fp16 variant.
pub fn find_weights(dir: &Path, stem: &str, variant: Option<&str>) -> Result<Vec<PathBuf>> {
    let mut names = Vec::new();
    if let Some(v) = variant {
        names.push(format!("{stem}.{v}.safetensors"));
    }
    names.push(format!("{stem}.safetensors"));
    names.push(format!("{stem}.fp16.safetensors"));
    for n in &names {
        let p = dir.join(n);
        if p.is_file() {
            return Ok(vec![p]);
        }
        let idx = dir.join(format!("{n}.index.json"));
        if idx.is_file() {
            return shards(&idx);
        }
    }
    for pickle in ["bin", "ckpt", "pt", "pth"] {
        let p = dir.join(format!("{stem}.{pickle}"));
        if p.is_file() {
            return Err(Error::BadFile {
                path: p,
                detail: "pickle weights are refused (loading them can run code); \
                         convert them to safetensors, e.g. with diffusers' save_pretrained(safe_serialization=True)"
                    .into(),
            });
        }
    }
    Err(Error::MissingFile {
        path: dir.join(format!("{stem}.safetensors")),
        hint:
            "no safetensors weights for this component (also looked for the fp16 variant and a sharded index)"
                .into(),
    })
}

fn shards(index: &Path) -> Result<Vec<PathBuf>> {
    let text =
        std::fs::read_to_string(index).map_err(|e| Error::io(format!("reading {}", index.display()), e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::BadFile {
        path: index.to_path_buf(),
        detail: format!("not JSON: {e}"),
    })?;
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::BadFile {
            path: index.to_path_buf(),
            detail: "no weight_map".into(),
        })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let files: BTreeSet<&str> = map.values().filter_map(Value::as_str).collect();
    let mut out = Vec::new();
    for f in files {
        if f.contains('/') || f.contains("..") {
            return Err(Error::BadFile {
                path: index.to_path_buf(),
                detail: format!("shard name {f:?} leaves the component folder"),
            });
        }
        out.push(dir.join(f));
    }
    Ok(out)
}

fn dtype_size(d: &str) -> Option<u64> {
    Some(match d {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "U8" | "I8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
        _ => return None,
    })
}

/// Checks a safetensors file before it is mapped.
pub fn preflight(path: &Path) -> Result<()> {
    let bad = |detail: String| Error::BadFile {
        path: path.to_path_buf(),
        detail,
    };
    let mut f = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingFile {
            path: path.to_path_buf(),
            hint: "listed weight file is missing".into(),
        },
        _ => bad(format!("cannot open: {e}")),
    })?;
    let len = f.metadata().map_err(|e| bad(format!("cannot stat: {e}")))?.len();
    let mut head = vec![0u8; 64.min(len as usize)];
    f.read_exact(&mut head)
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    if head.starts_with(b"version https://git-lfs") {
        return Err(bad(
            "is a Git LFS pointer, not the weights; run `git lfs pull` in the model repository".into(),
        ));
    }
    let lower = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if lower.trim_start().starts_with("<html") || lower.trim_start().starts_with("<!doctype") {
        return Err(bad(
            "is an HTML page, not weights (a failed download?); download the file again".into(),
        ));
    }
    if len < 8 {
        return Err(bad(format!(
            "is {len} bytes long: not a safetensors file (truncated?)"
        )));
    }
    let n = u64::from_le_bytes([
        head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
    ]);
    if n > MAX_HEADER {
        return Err(bad(format!(
            "header length {n} is implausible: not a safetensors file"
        )));
    }
    if 8 + n > len {
        return Err(bad(format!(
            "is truncated: the header needs {} bytes but the file has {len}; download it again",
            8 + n
        )));
    }
    let mut header = vec![0u8; n as usize];
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(8)).map_err(|e| bad(format!("cannot seek: {e}")))?;
    f.read_exact(&mut header)
        .map_err(|e| bad(format!("cannot read the header: {e}")))?;
    let v: Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("the header is not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("the header is not a JSON object".into()))?;
    let data_len = len - 8 - n;
    for (name, t) in obj {
        if name == "__metadata__" {
            continue;
        }
        let tbad = |detail: String| Error::Weight {
            path: path.to_path_buf(),
            tensor: name.clone(),
            detail,
        };
        let dtype = t.get("dtype").and_then(Value::as_str).unwrap_or("?");
        let size = dtype_size(dtype).ok_or_else(|| tbad(format!("unknown dtype {dtype}")))?;
        let shape: Vec<u64> = t
            .get("shape")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .ok_or_else(|| tbad("no shape".into()))?;
        let offs: Vec<u64> = t
            .get("data_offsets")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .ok_or_else(|| tbad("no data_offsets".into()))?;
        let [begin, end] = offs[..] else {
            return Err(tbad("data_offsets must be two numbers".into()));
        };
        let numel = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let want = numel.and_then(|n| n.checked_mul(size));
        if end < begin || Some(end - begin) != want {
            return Err(tbad(format!(
                "holds {} bytes but shape {shape:?} of {dtype} needs {}",
                end.saturating_sub(begin),
                want.map_or("more than 2^64".to_string(), |w| w.to_string())
            )));
        }
        if end > data_len {
            return Err(tbad(format!(
                "ends at byte {end} of the data, past its end ({data_len}): the file is truncated; download it again"
            )));
        }
    }
    Ok(())
}

/// The tensors a checked safetensors file declares: `(name, dtype, shape)`.
pub fn header_tensors(path: &Path) -> Result<Vec<(String, String, Vec<u64>)>> {
    preflight(path)?;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let mut header = vec![0u8; u64::from_le_bytes(len) as usize];
    f.read_exact(&mut header)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let v: Value = serde_json::from_slice(&header).map_err(|e| Error::BadFile {
        path: path.to_path_buf(),
        detail: format!("the header is not JSON: {e}"),
    })?;
    Ok(v.as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| *k != "__metadata__")
                .map(|(k, t)| {
                    let dt = t.get("dtype").and_then(Value::as_str).unwrap_or("?").to_string();
                    let shape = t
                        .get("shape")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_u64).collect())
                        .unwrap_or_default();
                    (k.clone(), dt, shape)
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Pre-flights and memory-maps weight files into a `VarBuilder` of `dtype`.
pub fn load(paths: &[PathBuf], dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
    for p in paths {
        preflight(p)?;
    }
    // SAFETY: the files were checked above; a file truncated by another process
    // while mapped would raise SIGBUS, which is the documented risk of mmap.
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(paths, dtype, device) }.map_err(|e| Error::BadFile {
            path: paths.first().cloned().unwrap_or_default(),
            detail: format!("cannot map the weights: {e}"),
        })?;
    Ok(vb)
}

/// Turns a model-construction error into one that names the weight file.
pub fn in_file(paths: &[PathBuf]) -> impl Fn(Error) -> Error + '_ {
    move |e| match e {
        Error::Candle(c) => {
            let path = paths.first().cloned().unwrap_or_default();
            let msg = c.to_string();
            // candle names the tensor in its message; say which one up front.
            let name = ["cannot find tensor ", "shape mismatch for "]
                .iter()
                .find_map(|p| {
                    let rest = msg.split_once(p)?.1;
                    let n: String = rest
                        .chars()
                        .take_while(|ch| !ch.is_whitespace() && *ch != ',')
                        .collect();
                    (!n.is_empty()).then_some(n)
                });
            match name {
                Some(tensor) => Error::Weight {
                    path,
                    tensor,
                    detail: format!("{msg} (does the weight file match config.json?)"),
                },
                None => Error::BadFile {
                    path,
                    detail: format!("{msg} (does the weight file match config.json?)"),
                },
            }
        }
        other => other,
    }
}

/// A model part held by its model, or built from the mapped weights for one use
/// and dropped after it (the streamed UNet and VAE decoder of sequential offload).
pub(crate) enum Part<'a, T> {
    Borrowed(&'a T),
    Owned(T),
}

impl<T> std::ops::Deref for Part<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            Part::Borrowed(t) => t,
            Part::Owned(t) => t,
        }
    }
}
