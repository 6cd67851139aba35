//! Multi-head scaled-dot-product attention, on the `(batch, seq, heads·d)` rows
//! that the projections produce.

use candle_core::{DType, Tensor};

use super::Kernels;

/// How the scores are formed.
#[derive(Debug, Clone, Copy)]
pub struct AttentionOpts<'a> {
    /// Heads; the width must be a multiple of it.
    pub heads: usize,
    /// An additive mask broadcast to `(b, heads, sq, skv)`, applied in f32
    /// (CLIP's causal mask). On the fast path it must be the causal mask, and
    /// `causal` says so.
    pub mask: Option<&'a Tensor>,
    /// The mask is the causal one (key j > query i is masked).
    pub causal: bool,
    /// f16 scores in f32 (diffusers' `upcast_attention`, SD 2.1). The fast
    /// kernels always form scores and softmax in f32.
    pub upcast: bool,
    /// The kernels chosen when the layer was built.
    pub kernels: Kernels,
}

/// `softmax(q kᵀ / √d + mask) v` per head: `q` `(b, sq, heads·d)`, `k`, `v`
/// `(b, skv, heads·d)`, result `(b, sq, heads·d)`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, o: &AttentionOpts) -> candle_core::Result<Tensor> {
    super::profile::scope("attention", q.device(), || match o.kernels {
        Kernels::Fast => fast(q, k, v, o),
        Kernels::Plain => plain(q, k, v, o),
    })
}

/// The most scores the materialized path forms at once. Past it, the queries
/// go in blocks of rows (each row's softmax is its own, so the blocks give the
/// rows' values, in f16 up to the last bit where a block's GEMM takes another
/// path): that keeps the score matrix below 2^31 elements, which
/// candle's kernels index with 32 bits, and bounds its memory (the VAE's
/// one-head attention over every latent pixel has 16384² scores per image at
/// 1024², 1 GiB in f32, where cuDNN's attention does not take its head width).
const MAX_SCORES: usize = 1 << 27;

/// The materialized path: the score matrix in the model dtype (f32 with a mask
/// or `upcast`), softmax, then the values; in blocks of query rows past
/// [`MAX_SCORES`] scores.
fn plain(q: &Tensor, k: &Tensor, v: &Tensor, o: &AttentionOpts) -> candle_core::Result<Tensor> {
    plain_in_blocks(q, k, v, o, MAX_SCORES)
}

fn plain_in_blocks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    o: &AttentionOpts,
    max_scores: usize,
) -> candle_core::Result<Tensor> {
    let (b, sq, dim) = q.dims3()?;
    let d = dim / o.heads;
    let split = |t: &Tensor| -> candle_core::Result<Tensor> {
        let n = t.dim(1)?;
        t.reshape((b, n, o.heads, d))?.transpose(1, 2)?.contiguous()
    };
    let (k, v) = (split(k)?, split(v)?);
    let per_row = b * o.heads * k.dim(2)?;
    let rows = (max_scores / per_row.max(1)).max(1);
    // A mask (CLIP's causal one, over 77 tokens) spans every query row: never in blocks.
    if rows >= sq || o.mask.is_some() {
        return plain_rows(&split(q)?, &k, &v, o, (b, sq, dim));
    }
    let mut out = Vec::with_capacity(sq.div_ceil(rows));
    for start in (0..sq).step_by(rows) {
        let len = rows.min(sq - start);
        out.push(plain_rows(
            &split(&q.narrow(1, start, len)?)?,
            &k,
            &v,
            o,
            (b, len, dim),
        )?);
    }
    Tensor::cat(&out, 1)
}

/// [`plain`] on split heads: `q` `(b, heads, rows, d)`, `k` and `v` `(b, heads,
/// skv, d)`; the result `out` = `(b, rows, heads·d)`.
fn plain_rows(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    o: &AttentionOpts,
    out: (usize, usize, usize),
) -> candle_core::Result<Tensor> {
    let d = q.dim(3)?;
    let q = (q * (d as f64).powf(-0.5))?;
    let dtype = q.dtype();
    // Scores in the model dtype, as diffusers' SDPA; in f32 when the config
    // asks (`upcast_attention`, SD 2.1), where f16 scores can overflow.
    let mut w = if o.upcast && dtype == DType::F16 {
        q.to_dtype(DType::F32)?.matmul(&k.to_dtype(DType::F32)?.t()?)?
    } else {
        q.matmul(&k.t()?)?
    };
    if let Some(mask) = o.mask {
        w = w.to_dtype(DType::F32)?.broadcast_add(mask)?;
    }
    let w = candle_nn::ops::softmax_last_dim(&w)?.to_dtype(dtype)?;
    w.matmul(v)?.transpose(1, 2)?.reshape(out)
}

/// Whether shoal's few-keys kernel (`shoal_kernels::fused::attention_few_keys`)
/// takes an attention of head width `d` over `keys` keys with `rows` query rows
/// in all (images · heads · queries), by session 12's measurements beside cuDNN's
/// SDPA on one H200 (docs/KERNELS.md, "Attention over few keys"): at most 80 keys;
/// width 40 at every size (it does not pad the width to 64 as cuDNN does: 0.065
/// against 0.084 ms at 16×8 heads × 4096 queries); width 80 up to 32768 rows
/// (0.010 against 0.014 ms at 16 384 rows, 0.034 against 0.031 at 131 072);
/// never width 64, where cuDNN was level or faster. Width 160 is built (session 18) and not
/// taken until a GPU has timed it (`bench ops` times it beside cuDNN's on the d160 rows).
pub fn few_keys_kernel(d: usize, keys: usize, rows: usize) -> bool {
    (1..=80).contains(&keys) && (d == 40 || (d == 80 && rows <= 32_768))
}

/// Whether shoal's many-keys kernel on the copy engine
/// (`shoal_kernels::fused::attention_tma`, compute capability 9.0 only) takes an
/// attention of head width `d` over `keys` keys (the self-attention over the latent's
/// tokens) rather than cuDNN's SDPA, by session 15's measurements beside it on one H100
/// (docs/KERNELS.md, "Attention over many keys on the copy engine"): width 40 over more
/// keys than the few-keys kernel takes (it does not pad the width to 64 as cuDNN does:
/// 1.116 against 1.151 ms at 16×8 heads × 4096², 0.145 against 0.156 at 2×8); never
/// width 64, where cuDNN was faster (1.53 against 1.41 ms at 16×10 heads × 4096²).
/// f16 only: the bf16 kernel was not yet run on a GPU.
pub fn many_keys_kernel(d: usize, keys: usize, dtype: DType) -> bool {
    dtype == DType::F16 && keys > 80 && d == 40
}

#[cfg(feature = "cudnn")]
fn fast(q: &Tensor, k: &Tensor, v: &Tensor, o: &AttentionOpts) -> candle_core::Result<Tensor> {
    if q.dtype() == candle_core::DType::F32 {
        // cuDNN's SDPA takes f16/bf16: f32 attention is the plain path by design, not a fallback.
        return plain(q, k, v, o);
    }
    let why = if o.mask.is_some() && !o.causal {
        Some("a mask other than the causal one".to_string())
    } else {
        let d = q.dim(2)? / o.heads.max(1);
        let scale = (d as f64).powf(-0.5) as f32;
        // Few keys (cross-attention over the text tokens): shoal's own kernel where
        // it measured faster than cuDNN's; else cuDNN's.
        #[cfg(feature = "fused")]
        if !o.causal && few_keys_kernel(d, k.dim(1)?, q.dim(0)? * o.heads * q.dim(1)?) {
            match shoal_kernels::fused::attention_few_keys(q, k, v, o.heads, scale) {
                Ok(y) => return Ok(y),
                Err(shoal_kernels::Error::Unsupported { .. }) => {}
                Err(e) => return Err(candle_core::Error::Msg(e.to_string())),
            }
        }
        // Many keys: shoal's copy-engine kernel where it measured faster (Hopper only: it
        // says Unsupported elsewhere, and cuDNN's runs).
        #[cfg(feature = "fused")]
        if !o.causal && many_keys_kernel(d, k.dim(1)?, q.dtype()) {
            match shoal_kernels::fused::attention_tma(q, k, v, o.heads, scale) {
                Ok(y) => return Ok(y),
                Err(shoal_kernels::Error::Unsupported { .. }) => {}
                Err(e) => return Err(candle_core::Error::Msg(e.to_string())),
            }
        }
        match shoal_kernels::cudnn::sdpa(q, k, v, o.heads, scale, o.causal) {
            Ok(y) => return Ok(y),
            Err(shoal_kernels::Error::Unsupported { why, .. }) => Some(why),
            Err(e) => return Err(candle_core::Error::Msg(e.to_string())),
        }
    };
    if let Some(why) = why {
        super::fell_back(
            || {
                format!(
                    "sdpa {:?} q{:?} k{:?} heads {}",
                    q.dtype(),
                    q.dims(),
                    k.dims(),
                    o.heads
                )
            },
            &why,
        );
    }
    plain(q, k, v, o)
}

#[cfg(not(feature = "cudnn"))]
fn fast(q: &Tensor, k: &Tensor, v: &Tensor, o: &AttentionOpts) -> candle_core::Result<Tensor> {
    plain(q, k, v, o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The few-keys kernel's rule: widths 40 and (small) 80, at most 80 keys.
    #[test]
    fn few_keys_kernel_takes_what_it_measured_faster_on() {
        assert!(few_keys_kernel(40, 77, 16 * 8 * 4096));
        assert!(few_keys_kernel(80, 77, 2 * 8 * 1024));
        assert!(!few_keys_kernel(80, 77, 16 * 8 * 1024));
        assert!(!few_keys_kernel(64, 77, 2 * 10 * 1024));
        assert!(!few_keys_kernel(40, 81, 1));
        assert!(!few_keys_kernel(40, 0, 1));
        assert!(!few_keys_kernel(160, 77, 1));
    }

    /// The many-keys kernel's rule: width 40 over more than 80 keys, f16.
    #[test]
    fn many_keys_kernel_takes_what_it_measured_faster_on() {
        let f16 = DType::F16;
        assert!(many_keys_kernel(40, 4096, f16));
        assert!(many_keys_kernel(40, 81, f16));
        assert!(!many_keys_kernel(40, 4096, DType::BF16));
        assert!(!many_keys_kernel(40, 4096, DType::F32));
        assert!(!many_keys_kernel(64, 4096, f16));
        assert!(!many_keys_kernel(64, 1024, f16));
        assert!(!many_keys_kernel(40, 80, f16));
        assert!(!many_keys_kernel(40, 77, f16));
        assert!(!many_keys_kernel(80, 1024, f16));
        assert!(!many_keys_kernel(160, 256, f16));
    }

    /// The unified path equals the per-head loop written out by hand.
    #[test]
    fn plain_matches_per_head_reference() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (b, sq, skv, heads, d) = (2, 5, 3, 2, 4);
        let q = Tensor::randn(0f32, 1., (b, sq, heads * d), &dev)?;
        let k = Tensor::randn(0f32, 1., (b, skv, heads * d), &dev)?;
        let v = Tensor::randn(0f32, 1., (b, skv, heads * d), &dev)?;
        let opts = AttentionOpts {
            heads,
            mask: None,
            causal: false,
            upcast: false,
            kernels: Kernels::Plain,
        };
        let got = attention(&q, &k, &v, &opts)?;
        assert_eq!(got.dims(), &[b, sq, heads * d]);
        for h in 0..heads {
            let qh = q.narrow(2, h * d, d)?;
            let kh = k.narrow(2, h * d, d)?;
            let vh = v.narrow(2, h * d, d)?;
            let s = (qh.matmul(&kh.t()?)? / (d as f64).sqrt())?;
            let want = candle_nn::ops::softmax_last_dim(&s)?.matmul(&vh)?;
            let diff = (got.narrow(2, h * d, d)? - want)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(diff < 1e-5, "head {h}: {diff}");
        }
        Ok(())
    }

    /// Queries in blocks of rows give what one block gives, for every block
    /// size (down to one row, and blocks that do not divide the rows): the same
    /// bits in f32, within one f16 step (values below 4) in f16 with `upcast`.
    #[test]
    fn plain_in_blocks_of_rows_equals_one_block() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (b, sq, skv, heads, d) = (2, 11, 7, 2, 4);
        let q = Tensor::randn(0f32, 1., (b, sq, heads * d), &dev)?;
        let k = Tensor::randn(0f32, 1., (b, skv, heads * d), &dev)?;
        let v = Tensor::randn(0f32, 1., (b, skv, heads * d), &dev)?;
        for (dtype, upcast) in [(DType::F32, false), (DType::F16, true)] {
            let (q, k, v) = (q.to_dtype(dtype)?, k.to_dtype(dtype)?, v.to_dtype(dtype)?);
            let opts = AttentionOpts {
                heads,
                mask: None,
                causal: false,
                upcast,
                kernels: Kernels::Plain,
            };
            let whole = plain_in_blocks(&q, &k, &v, &opts, usize::MAX)?;
            let per_row = b * heads * skv;
            for rows in [1, 2, 3, 5, 10] {
                let got = plain_in_blocks(&q, &k, &v, &opts, rows * per_row)?;
                assert_eq!(got.dims(), whole.dims());
                let diff = (got.to_dtype(DType::F32)? - whole.to_dtype(DType::F32)?)?
                    .abs()?
                    .max_all()?
                    .to_scalar::<f32>()?;
                let bound = if dtype == DType::F32 { 0.0 } else { 1.0 / 512.0 };
                assert!(diff <= bound, "{dtype:?}, blocks of {rows} rows: {diff}");
            }
        }
        Ok(())
    }
}
