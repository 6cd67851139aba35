//! Work items: prompts (from flags, a text file or JSONL) expanded into one
//! item per image, each with its global index and seed.
//!
//! An item's seed is its own when the input gives one (image k of an entry
//! with seed S uses S + k), else `item_seed(base, index)`, a function of the
//! job's base seed and the item's global index, never of the rank or batch.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The longest prompt accepted, in bytes.
pub const MAX_PROMPT_BYTES: usize = 16 * 1024;
/// The most images one job may hold.
pub const MAX_ITEMS: usize = 10_000_000;

/// Generation parameters of one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenParams {
    /// Denoising steps.
    pub steps: usize,
    /// Guidance scale.
    pub guidance: f64,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
}

/// One input entry (a JSONL line, or a plain prompt).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The prompt.
    pub prompt: String,
    /// Its negative prompt.
    #[serde(default)]
    pub negative_prompt: Option<String>,
    /// Its seed (image k uses seed + k).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Steps for this entry.
    #[serde(default)]
    pub steps: Option<usize>,
    /// Guidance for this entry.
    #[serde(default)]
    pub guidance: Option<f64>,
    /// Height for this entry.
    #[serde(default)]
    pub height: Option<usize>,
    /// Width for this entry.
    #[serde(default)]
    pub width: Option<usize>,
    /// Images of this prompt.
    #[serde(default)]
    pub images: Option<usize>,
    /// Where it came from (`file:line`), for messages.
    #[serde(skip)]
    pub origin: Option<String>,
}

/// One image to make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkItem {
    /// Global index, from 0, in input order.
    pub index: usize,
    /// The prompt.
    pub prompt: String,
    /// The negative prompt.
    pub negative_prompt: Option<String>,
    /// The seed of this image's noise.
    pub seed: u64,
    /// Its parameters.
    pub params: GenParams,
}

/// Job-wide defaults, from the command line.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Parameters for entries that do not set them.
    pub params: GenParams,
    /// Negative prompt for entries that do not set one.
    pub negative_prompt: Option<String>,
    /// Images per prompt.
    pub images_per_prompt: usize,
    /// The base seed.
    pub seed: u64,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

/// The seed of item `index` of a job with base seed `base`.
pub fn item_seed(base: u64, index: u64) -> u64 {
    splitmix(base ^ splitmix(index.wrapping_add(0x5EED)))
}

/// Reads a prompts file: JSONL (one object per line, `.jsonl` or lines that
/// start with `{`) or plain text (one prompt per non-empty line).
pub fn parse_prompts_file(path: &Path, bytes: &[u8]) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let jsonl = path.extension().is_some_and(|e| e == "jsonl")
        || bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_err = |detail: String| Error::Line {
            path: path.to_path_buf(),
            line: i + 1,
            detail,
        };
        let line = std::str::from_utf8(raw).map_err(|e| line_err(format!("not valid UTF-8: {e}")))?;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let e = if jsonl {
            serde_json::from_str::<Entry>(line)
                .map_err(|e| line_err(format!("not a valid JSON item: {e}")))?
        } else if line.trim_start().starts_with('{')
            && serde_json::from_str::<serde_json::Value>(line).is_ok()
        {
            return Err(line_err(
                "a JSON item in a text prompts file (whose first line is plain text): every line of a file is \
                 one kind; name it .jsonl and make every line a JSON item, or write this prompt as plain text"
                    .into(),
            ));
        } else {
            Entry {
                prompt: line.to_string(),
                ..Default::default()
            }
        };
        check_entry(&e).map_err(|e| line_err(e.to_string()))?;
        let mut e = e;
        e.origin = Some(format!("{}:{}", path.display(), i + 1));
        out.push(e);
    }
    Ok(out)
}

fn check_entry(e: &Entry) -> Result<()> {
    if e.prompt.len() > MAX_PROMPT_BYTES {
        return Err(Error::invalid(
            "prompt",
            format!("{} bytes", e.prompt.len()),
            format!("at most {MAX_PROMPT_BYTES} bytes"),
        ));
    }
    if e.prompt.chars().any(|c| c == '\0') {
        return Err(Error::invalid("prompt", "…\\0…", "prompts may not contain NUL"));
    }
    if let Some(n) = e.images
        && !(1..=10_000).contains(&n)
    {
        return Err(Error::invalid("images", n, "between 1 and 10000"));
    }
    Ok(())
}

/// Expands entries into one work item per image.
pub fn expand(entries: &[Entry], d: &Defaults) -> Result<Vec<WorkItem>> {
    if entries.is_empty() {
        return Err(Error::invalid(
            "prompts",
            "none",
            "give at least one prompt (--prompt or --prompts-file)",
        ));
    }
    let mut items = Vec::new();
    for e in entries {
        check_entry(e)?;
        let n = e.images.unwrap_or(d.images_per_prompt);
        let params = GenParams {
            steps: e.steps.unwrap_or(d.params.steps),
            guidance: e.guidance.unwrap_or(d.params.guidance),
            height: e.height.unwrap_or(d.params.height),
            width: e.width.unwrap_or(d.params.width),
        };
        for k in 0..n {
            let index = items.len();
            if index >= MAX_ITEMS {
                return Err(Error::invalid(
                    "images",
                    format!("over {MAX_ITEMS} in all"),
                    format!("a job holds at most {MAX_ITEMS} images; split it into several jobs"),
                ));
            }
            items.push(WorkItem {
                index,
                prompt: e.prompt.clone(),
                negative_prompt: e.negative_prompt.clone().or_else(|| d.negative_prompt.clone()),
                seed: match e.seed {
                    Some(s) => s.wrapping_add(k as u64),
                    None => item_seed(d.seed, index as u64),
                },
                params: params.clone(),
            });
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            params: GenParams {
                steps: 30,
                guidance: 7.5,
                height: 512,
                width: 512,
            },
            negative_prompt: None,
            images_per_prompt: 2,
            seed: 42,
        }
    }

    #[test]
    fn plain_text_skips_blank_lines_and_crlf() {
        let e = parse_prompts_file(Path::new("p.txt"), b"a dog\r\n\n  \na cat\n").unwrap();
        assert_eq!(
            e.iter().map(|e| e.prompt.as_str()).collect::<Vec<_>>(),
            ["a dog", "a cat"]
        );
    }

    #[test]
    fn jsonl_items_override_defaults_and_name_bad_lines() {
        let text = br#"{"prompt": "a dog", "seed": 7, "images": 3, "steps": 10}
{"prompt": "a cat", "negative_prompt": "blurry", "height": 256}
"#;
        let items = expand(
            &parse_prompts_file(Path::new("p.jsonl"), text).unwrap(),
            &defaults(),
        )
        .unwrap();
        assert_eq!(items.len(), 5);
        assert_eq!(
            items.iter().map(|i| i.seed).take(3).collect::<Vec<_>>(),
            [7, 8, 9]
        );
        assert_eq!(items[0].params.steps, 10);
        assert_eq!(items[3].negative_prompt.as_deref(), Some("blurry"));
        assert_eq!(items[3].params.height, 256);
        assert_eq!(items[4].seed, item_seed(42, 4));
        let err =
            parse_prompts_file(Path::new("p.jsonl"), b"{\"prompt\": \"ok\"}\n{\"prompt\": 3}\n").unwrap_err();
        assert!(err.to_string().contains("p.jsonl:2"), "{err}");
        let err =
            parse_prompts_file(Path::new("p.jsonl"), b"{\"prompt\": \"x\", \"stpes\": 3}\n").unwrap_err();
        assert!(err.to_string().contains("stpes"), "{err}");
        let err = parse_prompts_file(Path::new("p.txt"), b"ok\n\xff\xfe\n").unwrap_err();
        assert!(
            err.to_string().contains("p.txt:2") && err.to_string().contains("UTF-8"),
            "{err}"
        );
    }

    #[test]
    fn empty_inputs_are_errors() {
        assert!(expand(&[], &defaults()).is_err());
        assert!(
            parse_prompts_file(Path::new("p.txt"), b"\n\n")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn seeds_depend_on_index_only() {
        let e = vec![
            Entry {
                prompt: "a".into(),
                ..Default::default()
            };
            3
        ];
        let a = expand(&e, &defaults()).unwrap();
        let b = expand(&e, &defaults()).unwrap();
        assert_eq!(a, b);
        let mut seeds: Vec<u64> = a.iter().map(|i| i.seed).collect();
        seeds.sort();
        seeds.dedup();
        assert_eq!(seeds.len(), 6);
    }
}
