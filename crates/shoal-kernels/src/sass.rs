//! Kernel modules as SASS compiled at build time, so a fresh machine does not wait
//! for the driver's JIT (feature `sass`, GPU build only).
//!
//! candle-core loads its kernel modules (and shoal's fused ones) from PTX text; on a
//! machine whose driver compute cache is empty the driver compiles about 5 MB of PTX
//! before the first image, ~30 s on an H200 host (docs/PERFORMANCE.md). The GPU build
//! (`scripts/gpu/build.sh`) patches candle-core with one hook
//! (`scripts/gpu/patch-candle.py`), dumps every module's PTX from the binary
//! ([`ptx_modules`], `shoal kernel-ptx`), compiles each with `ptxas` for the PTX's own
//! target, and builds again with the images embedded (`SHOAL_SASS_DIR`). At run time
//! [`install`] hands candle the image whose PTX text matches exactly (FNV-1a of the
//! text and its length, from the dump); a module with no image, or an image the
//! driver refuses (another GPU), is loaded from its PTX as before and the miss is
//! listed by [`report`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::cuda_backend::kernels;

mod images {
    include!(concat!(env!("OUT_DIR"), "/sass_images.rs"));
}

/// One embedded image: the FNV-1a hash and length of the PTX it was compiled from.
struct Image {
    hash: u64,
    len: usize,
    bytes: &'static [u8],
}

static HANDED: AtomicU64 = AtomicU64::new(0);
static MISSED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// FNV-1a (64 bit) of a PTX text: the key that ties an image to its source.
pub fn ptx_hash(ptx: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ptx.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The file name the build gives a module's PTX and image: `HASH-LEN-NAME.ptx|cubin`.
pub fn file_stem(name: &str, ptx: &str) -> String {
    format!("{:016x}-{}-{name}", ptx_hash(ptx), ptx.len())
}

/// Every kernel module shoal's GPU path may load, by name: candle's (all but
/// `quantized`, which shoal never calls) and shoal's fused kernels.
pub fn ptx_modules() -> Vec<(&'static str, &'static str)> {
    vec![
        ("affine", kernels::AFFINE.ptx()),
        ("binary", kernels::BINARY.ptx()),
        ("cast", kernels::CAST.ptx()),
        ("conv", kernels::CONV.ptx()),
        ("fill", kernels::FILL.ptx()),
        ("indexing", kernels::INDEXING.ptx()),
        ("reduce", kernels::REDUCE.ptx()),
        ("sort", kernels::SORT.ptx()),
        ("ternary", kernels::TERNARY.ptx()),
        ("unary", kernels::UNARY.ptx()),
        ("shoal-fused", crate::fused::PTX),
    ]
}

fn embedded() -> impl Iterator<Item = Image> {
    images::CANDLE
        .iter()
        .map(|&(hash, len, bytes)| Image { hash, len, bytes })
        .chain(std::iter::once(Image {
            hash: ptx_hash(crate::fused::PTX),
            len: crate::fused::PTX.len(),
            bytes: images::FUSED,
        }))
}

/// The image compiled from exactly `ptx`, if this build embeds one.
fn image_for(ptx: &str) -> Option<&'static [u8]> {
    let hash = ptx_hash(ptx);
    let found = embedded()
        .find(|i| i.hash == hash && i.len == ptx.len())
        .map(|i| i.bytes);
    match found {
        Some(_) => {
            HANDED.fetch_add(1, Ordering::Relaxed);
        }
        None => {
            let name = ptx_modules()
                .into_iter()
                .find(|(_, p)| p.len() == ptx.len() && ptx_hash(p) == hash)
                .map_or("a module", |(n, _)| n);
            let mut m = MISSED.lock().unwrap_or_else(|p| p.into_inner());
            m.push(format!("{name} ({} kB of PTX)", ptx.len() / 1000));
        }
    }
    found
}

/// Hands candle the embedded images from now on (idempotent). Returns how many
/// images this build embeds; 0 with `SHOAL_SASS=0` in the environment, which leaves
/// every module to the driver's JIT (A/B runs).
pub fn install() -> usize {
    if std::env::var_os("SHOAL_SASS").is_some_and(|v| v == "0") {
        return 0;
    }
    candle_core::cuda_backend::set_module_image_hook(image_for);
    embedded().count()
}

/// What the hook did so far: images handed to candle, and the modules it had no
/// image for (JIT-compiled from PTX by the driver).
pub fn report() -> (u64, Vec<String>) {
    let m = MISSED.lock().unwrap_or_else(|p| p.into_inner());
    (HANDED.load(Ordering::Relaxed), m.clone())
}

/// The GPU architecture the images were built for (`CUDA_COMPUTE_CAP`, e.g. 90).
pub fn arch() -> u32 {
    images::ARCH
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_fnv1a() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(ptx_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(ptx_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(file_stem("x", "a"), "af63dc4c8601ec8c-1-x");
    }
}
