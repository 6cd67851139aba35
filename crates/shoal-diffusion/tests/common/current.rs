//! Rebuilds a model folder of `tests/fixtures/current/` (saved by diffusers
//! 0.42.1 + transformers 5, see `tests/fixtures/make_current.py`) byte for
//! byte: small files are kept verbatim, large ones gzipped under `blobs/`, and
//! of every `*.safetensors` the header; its tensors' bytes come from
//! `make-model --seed 0` (the folder diffusers loaded and saved again), found
//! by name with or without transformers' `text_model.` prefix. Every rebuilt
//! file must have the sha256 the script recorded, or the test stops there.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// `tests/fixtures/current`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("tests/fixtures/current/meta.json").is_file())
        .expect("tests/fixtures/current above the crate")
        .join("tests/fixtures/current")
}

/// `meta.json`: the cases and every original file's sha256.
pub fn meta() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("meta.json")).unwrap()).unwrap()
}

/// A safetensors file's header (JSON) and the offset of its data section.
fn header(bytes: &[u8]) -> (BTreeMap<String, Value>, usize) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let h: BTreeMap<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (h, 8 + n)
}

fn offsets(info: &Value) -> (usize, usize) {
    let o = info["data_offsets"].as_array().unwrap();
    (o[0].as_u64().unwrap() as usize, o[1].as_u64().unwrap() as usize)
}

/// The saved file from its header and the made file's tensors.
fn safetensors(head: &[u8], made: &Path) -> Vec<u8> {
    let (want, _) = header(head);
    let src = std::fs::read(made).unwrap();
    let (have, base) = header(&src);
    let size = want
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, v)| offsets(v).1)
        .max()
        .unwrap_or(0);
    let mut data = vec![0u8; size];
    for (name, info) in want.iter().filter(|(k, _)| *k != "__metadata__") {
        let candidates = [
            name.clone(),
            format!("text_model.{name}"),
            name.strip_prefix("text_model.").unwrap_or(name).to_string(),
        ];
        let Some(h) = candidates.iter().find_map(|c| have.get(c)) else {
            panic!("{}: no tensor {name} in make-model's file", made.display());
        };
        assert_eq!(
            (&h["dtype"], &h["shape"]),
            (&info["dtype"], &info["shape"]),
            "{name}: dtype/shape differ from make-model's"
        );
        let ((a, b), (c, d)) = (offsets(info), offsets(h));
        data[a..b].copy_from_slice(&src[base + c..base + d]);
    }
    [head, &data].concat()
}

/// Rebuilds `preset`'s saved folder under `out`; `make(preset, dir)` writes
/// `make-model --preset preset --seed 0` (f32) into `dir`.
pub fn rebuild(preset: &str, out: &Path, make: impl Fn(&str, &Path)) -> PathBuf {
    let fx = fixtures();
    let made = out.join(format!("made-{preset}"));
    make(preset, &made);
    let m = meta();
    let mut n = 0;
    for (rel, sha) in m["files"].as_object().unwrap() {
        let Some(inner) = rel.strip_prefix(&format!("{preset}/")) else {
            continue;
        };
        let dst = out.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        let kept = fx.join(rel);
        let head = fx.join(format!("{rel}.header"));
        let bytes = if kept.is_file() {
            std::fs::read(&kept).unwrap()
        } else if head.is_file() {
            safetensors(&std::fs::read(&head).unwrap(), &made.join(inner))
        } else {
            let blob = fx.join("blobs").join(format!("{}.gz", sha.as_str().unwrap()));
            let mut v = Vec::new();
            flate2::read::GzDecoder::new(std::fs::File::open(&blob).unwrap())
                .read_to_end(&mut v)
                .unwrap();
            v
        };
        let got = format!("{:x}", Sha256::digest(&bytes));
        assert_eq!(
            &got,
            sha.as_str().unwrap(),
            "{rel}: the rebuilt file is not the one diffusers saved (make-model's weights changed? \
             regenerate with tests/fixtures/make_current.py)"
        );
        std::fs::write(&dst, bytes).unwrap();
        n += 1;
    }
    assert!(n > 5, "{preset}: only {n} files in the fixture");
    out.join(preset)
}
