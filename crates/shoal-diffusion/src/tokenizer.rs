//! The CLIP BPE tokenizer, from a model's `tokenizer/` folder.
//!
//! Built with the `tokenizers` crate exactly as transformers' `CLIPConverter`
//! builds `CLIPTokenizerFast` (`transformers src/transformers/convert_slow_tokenizer.py`):
//! NFC → whitespace runs to one space → lowercase; an inverted split on CLIP's
//! pattern, then byte-level; BPE with the `</w>` suffix; BOS/EOS added by a
//! Roberta post-processor. Prompts are truncated to `model_max_length` (77)
//! with a warning, as diffusers does, and padded with the configured pad token.
//!
//! The embedded vocabulary (`assets/clip-merges.txt.gz`, see
//! `assets/LICENSE-CLIP-VOCAB`) is the real CLIP one; `vocab.json` is derived
//! from the merges as `open_clip`'s `SimpleTokenizer` does.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde_json::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormSeq};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Error, Result};

/// CLIP's pre-tokenization pattern (transformers' `CLIPConverter`).
const CLIP_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
/// Beginning of text.
pub const BOS: &str = "<|startoftext|>";
/// End of text.
pub const EOS: &str = "<|endoftext|>";

/// The largest tokenizer file read (CLIP's `tokenizer.json` is 3.6 MB).
const MAX_TOKENIZER_BYTES: u64 = 64 << 20;

const MERGES_GZ: &[u8] = include_bytes!("../assets/clip-merges.txt.gz");

/// The embedded CLIP merges, as `merges.txt` text (`#version: 0.2` header).
pub fn clip_merges_txt() -> Result<String> {
    let mut s = String::new();
    flate2::read::GzDecoder::new(MERGES_GZ)
        .read_to_string(&mut s)
        .map_err(|e| Error::Tokenizer(format!("embedded CLIP merges are corrupt: {e}")))?;
    Ok(s)
}

/// GPT-2's `bytes_to_unicode` values, in the dict's insertion order (the
/// printable bytes first), which is the order of CLIP's first 256 tokens.
fn bytes_to_unicode() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    cs.into_iter().map(|c| char::from_u32(c).unwrap_or(' ')).collect()
}

/// The CLIP `vocab.json` derived from merges (bytes, bytes + `</w>`, merges, BOS, EOS).
pub fn vocab_from_merges(merges_txt: &str) -> Vec<String> {
    let bytes = bytes_to_unicode();
    let mut vocab: Vec<String> = bytes.iter().map(|c| c.to_string()).collect();
    vocab.extend(bytes.iter().map(|c| format!("{c}</w>")));
    vocab.extend(
        merges_txt
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| l.replace(' ', "")),
    );
    vocab.push(BOS.into());
    vocab.push(EOS.into());
    vocab
}

/// A CLIP tokenizer with its padding and length.
pub struct ClipTokenizer {
    inner: Tokenizer,
    max_len: usize,
    pad_id: u32,
    eos_id: u32,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClipTokenizer(max_len {}, pad {})", self.max_len, self.pad_id)
    }
}

/// What tokenizing one prompt gives.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    /// Exactly `max_len` ids: BOS, tokens, EOS, padding.
    pub ids: Vec<u32>,
    /// Tokens the prompt had before truncation, BOS and EOS included.
    pub untruncated_len: usize,
}

fn token_name(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl ClipTokenizer {
    /// Loads a diffusers `tokenizer/` folder: `tokenizer.json` (the fast
    /// tokenizer file; all transformers 5 writes) when present, else `vocab.json`
    /// and `merges.txt`; the pad token and length from `tokenizer_config.json`
    /// and `special_tokens_map.json` when present.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let p = dir.join(name);
            crate::config::read_limited(&p, MAX_TOKENIZER_BYTES)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Error::MissingFile {
                        path: p.clone(),
                        hint: "a CLIP tokenizer folder holds tokenizer.json, or vocab.json and merges.txt"
                            .into(),
                    },
                    _ => Error::BadFile {
                        path: p.clone(),
                        detail: format!("cannot read: {e}"),
                    },
                })
                .and_then(|b| {
                    String::from_utf8(b).map_err(|_| Error::BadFile {
                        path: p.clone(),
                        detail: "not UTF-8 text".into(),
                    })
                })
        };
        let mut pad = None;
        let mut max_len = 77;
        for name in ["special_tokens_map.json", "tokenizer_config.json"] {
            let p = dir.join(name);
            if !p.exists() {
                continue;
            }
            let text = read(name)?;
            let v: Value = serde_json::from_str(&text).map_err(|e| Error::BadFile {
                path: p.clone(),
                detail: format!("not JSON: {e}"),
            })?;
            if pad.is_none() {
                pad = v.get("pad_token").and_then(token_name);
            }
            if let Some(n) = v.get("model_max_length").and_then(Value::as_u64) {
                // transformers writes a huge sentinel for "no limit".
                if n < 100_000 {
                    max_len = n as usize;
                }
            }
        }
        let pad = pad.unwrap_or_else(|| EOS.to_string());
        if dir.join("tokenizer.json").exists() {
            return Self::from_tokenizer_json(
                &dir.join("tokenizer.json"),
                &read("tokenizer.json")?,
                &pad,
                max_len,
            );
        }
        let vocab_text = read("vocab.json")?;
        let vocab: HashMap<String, u32> = serde_json::from_str(&vocab_text).map_err(|e| Error::BadFile {
            path: dir.join("vocab.json"),
            detail: format!("not a token → id map: {e}"),
        })?;
        let merges = read("merges.txt")?;
        Self::new(vocab, &merges, &pad, max_len, dir)
    }

    /// A `tokenizer.json` (`text`, read from `path`): its own normalizer,
    /// pre-tokenizer, BPE and post-processor (BOS and EOS); its truncation and
    /// padding settings are replaced by CLIP's (`max_len`, `pad`, EOS kept).
    fn from_tokenizer_json(path: &Path, text: &str, pad: &str, max_len: usize) -> Result<Self> {
        let bad = |detail: String| Error::BadFile {
            path: path.to_path_buf(),
            detail,
        };
        let mut inner: Tokenizer = text
            .parse()
            .map_err(|e| bad(format!("not a tokenizers file: {e}")))?;
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| bad(format!("the vocabulary lacks {t:?}")))
        };
        let (bos, eos, pad_id) = (id(BOS)?, id(EOS)?, id(pad)?);
        if max_len < 2 {
            return Err(bad(format!(
                "model_max_length {max_len} leaves no room for BOS and EOS"
            )));
        }
        // The ids must start with BOS and end with EOS, as CLIP's post-processor makes them.
        let probe = inner
            .encode("a", true)
            .map_err(|e| bad(format!("cannot tokenize: {e}")))?;
        if probe.get_ids().first() != Some(&bos) || probe.get_ids().last() != Some(&eos) {
            return Err(bad(format!(
                "its post-processor does not add {BOS} and {EOS} (\"a\" gives {:?}); not a CLIP tokenizer",
                probe.get_ids()
            )));
        }
        let _ = inner.with_truncation(None);
        inner.with_padding(None);
        Ok(ClipTokenizer {
            inner,
            max_len,
            pad_id,
            eos_id: eos,
        })
    }

    /// The real CLIP vocabulary, embedded in shoal, with `pad` as padding.
    pub fn embedded(pad: &str) -> Result<Self> {
        let merges = clip_merges_txt()?;
        let vocab = vocab_from_merges(&merges)
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, i as u32))
            .collect();
        Self::new(vocab, &merges, pad, 77, Path::new("<embedded CLIP vocabulary>"))
    }

    fn new(
        vocab: HashMap<String, u32>,
        merges_txt: &str,
        pad: &str,
        max_len: usize,
        origin: &Path,
    ) -> Result<Self> {
        let bad = |detail: String| Error::BadFile {
            path: origin.to_path_buf(),
            detail,
        };
        let id = |t: &str| {
            vocab
                .get(t)
                .copied()
                .ok_or_else(|| bad(format!("the vocabulary lacks {t:?}")))
        };
        let (bos, eos, pad_id) = (id(BOS)?, id(EOS)?, id(pad)?);
        if max_len < 2 {
            return Err(bad(format!(
                "model_max_length {max_len} leaves no room for BOS and EOS"
            )));
        }
        let merges: Vec<(String, String)> = merges_txt
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
            .map(|l| {
                l.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| bad(format!("merges.txt line {l:?} is not a pair")))
            })
            .collect::<Result<_>>()?;
        let model = BPE::builder()
            .vocab_and_merges(
                vocab.into_iter().collect::<tokenizers::models::bpe::Vocab>(),
                merges,
            )
            .unk_token(EOS.into())
            .end_of_word_suffix("</w>".into())
            .fuse_unk(false)
            .build()
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut tk = Tokenizer::new(model);
        let replace = Replace::new(
            tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
            " ",
        )
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let _ = tk.with_normalizer(Some(NormSeq::new(vec![
            NFC.into(),
            replace.into(),
            Lowercase.into(),
        ])));
        let split = Split::new(
            SplitPattern::Regex(CLIP_PATTERN.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
        tk.with_pre_tokenizer(Some(PreSeq::new(vec![
            split.into(),
            ByteLevel::new(false, true, false).into(),
        ])));
        tk.with_post_processor(Some(
            RobertaProcessing::new((EOS.into(), eos), (BOS.into(), bos))
                .trim_offsets(false)
                .add_prefix_space(false),
        ));
        tk.with_decoder(Some(ByteLevel::default()));
        let _ = tk.add_special_tokens([AddedToken::from(BOS, true), AddedToken::from(EOS, true)]);
        Ok(ClipTokenizer {
            inner: tk,
            max_len,
            pad_id,
            eos_id: eos,
        })
    }

    /// The id of `<|endoftext|>`.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// The fixed sequence length (77).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Tokenizes a prompt: BOS, tokens, EOS, truncated to `max_len` (EOS kept)
    /// and padded with the pad token.
    pub fn encode(&self, prompt: &str) -> Result<Tokens> {
        let enc = self
            .inner
            .encode(prompt, true)
            .map_err(|e| Error::Tokenizer(format!("cannot tokenize {prompt:?}: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        let untruncated_len = ids.len();
        if ids.len() > self.max_len {
            let eos = ids[ids.len() - 1];
            ids.truncate(self.max_len - 1);
            ids.push(eos);
        }
        ids.resize(self.max_len, self.pad_id);
        Ok(Tokens { ids, untruncated_len })
    }

    /// The text of ids (for the truncation warning).
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, true).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_clip_vocabulary_token_ids() {
        let tk = ClipTokenizer::embedded(EOS).unwrap();
        let t = tk.encode("a photo of a cat").unwrap();
        assert_eq!(&t.ids[..7], &[49406, 320, 1125, 539, 320, 2368, 49407]);
        assert!(t.ids[7..].iter().all(|&i| i == 49407));
        assert_eq!(t.ids.len(), 77);
        assert_eq!(t.untruncated_len, 7);
    }

    #[test]
    fn vocabulary_layout() {
        let merges = clip_merges_txt().unwrap();
        let v = vocab_from_merges(&merges);
        assert_eq!(v.len(), 49408);
        assert_eq!(v[49406], BOS);
        assert_eq!(v[256], "!</w>");
    }

    #[test]
    fn long_prompts_truncate_keeping_eos() {
        let tk = ClipTokenizer::embedded("!").unwrap();
        let t = tk.encode(&"fox ".repeat(100)).unwrap();
        assert_eq!(t.ids.len(), 77);
        assert_eq!(t.ids[76], 49407);
        assert_eq!(t.untruncated_len, 102);
    }
}
