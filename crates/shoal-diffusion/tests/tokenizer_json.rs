//! Issue 13: a tokenizer folder as transformers 5.17 saves it (`tokenizer.json`
//! and `tokenizer_config.json` only; fixture made by `scripts/gpu/final4.sh`
//! from shoal's sd15 tokenizer) loads, and gives transformers' ids for every
//! prompt of the fixture (truncation to 77 with EOS kept, padding), the same
//! ids as the vocab.json + merges.txt folder it was saved from.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::io::Read;
use std::path::Path;

use shoal_diffusion::tokenizer::ClipTokenizer;

#[test]
fn r13_tokenizer_json_gives_transformers_ids() {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizer-t5");
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("tokenizer");
    std::fs::create_dir_all(&dir).unwrap();
    let mut json = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(fx.join("tokenizer.json.gz")).unwrap())
        .read_to_string(&mut json)
        .unwrap();
    std::fs::write(dir.join("tokenizer.json"), json).unwrap();
    std::fs::copy(
        fx.join("tokenizer_config.json"),
        dir.join("tokenizer_config.json"),
    )
    .unwrap();
    assert!(!dir.join("vocab.json").exists());
    let tok = ClipTokenizer::from_dir(&dir).unwrap();
    let embedded = ClipTokenizer::embedded("<|endoftext|>").unwrap();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("ids.json")).unwrap()).unwrap();
    let prompts = want["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 7);
    for (p, ids) in prompts.iter().zip(want["input_ids"].as_array().unwrap()) {
        let p = p.as_str().unwrap();
        let ids: Vec<u32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.encode(p).unwrap().ids, ids, "{p:?} via tokenizer.json");
        assert_eq!(
            embedded.encode(p).unwrap().ids,
            ids,
            "{p:?} via the vocab and merges"
        );
    }
    // A tokenizer.json that is not one is named.
    std::fs::write(dir.join("tokenizer.json"), "{\"no\": 1}").unwrap();
    let e = ClipTokenizer::from_dir(&dir).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
}
