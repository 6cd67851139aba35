//! The cases of `shoal bench ops`, one function per kind of op: each makes the op's
//! random inputs and f32 reference, runs the plain and the fast path through
//! [`super::compare`] and returns how many of its rows failed.

use super::*;

#[allow(clippy::too_many_arguments)]
fn row(
    name: &str,
    shape: &str,
    plain_s: f64,
    fast_s: f64,
    flops: f64,
    plain_rel: f64,
    fast: (f64, f64),
    ok: bool,
) {
    println!(
        "| {name} | {shape} | {:.3} | {:.3} | {:.0} | {:.2}× | {plain_rel:.1e} | {:.1e} | {:.1e} | {} |",
        plain_s * 1e3,
        fast_s * 1e3,
        flops / fast_s / 1e12,
        plain_s / fast_s,
        fast.0,
        fast.1,
        if ok { "PASS" } else { "FAIL" }
    );
}

pub(super) fn conv_case(ctx: &Ctx, n: usize, c: &Conv) -> Result<usize> {
    let (device, dtype) = (ctx.device, ctx.dtype);
    let &Conv(name, cin, side, cout, k, stride, adds) = c;
    let pad = k / 2;
    let x = Tensor::randn(0f32, 1., (n, cin, side, side), device)?;
    let w = (Tensor::randn(0f32, 1., (cout, cin, k, k), device)? / ((cin * k * k) as f64).sqrt())?;
    let bias = Tensor::randn(0f32, 1., cout, device)?;
    let plain = |x: &Tensor, w: &Tensor, b: &Tensor| -> Result<Tensor> {
        Ok(x.conv2d(w, pad, stride, 1, 1)?
            .broadcast_add(&b.reshape((1, cout, 1, 1))?)?)
    };
    let reference = plain(&x, &w, &bias)?;
    let (xl, wl, bl) = (x.to_dtype(dtype)?, w.to_dtype(dtype)?, bias.to_dtype(dtype)?);
    let shape = format!("{n}×{cin}×{side}² → {cout}, {k}×{k}/{stride}");
    let flops = shoal_kernels_flops(n, cin, side, cout, k, stride);
    #[cfg(feature = "cudnn")]
    {
        use shoal_kernels::cudnn::{conv2d, conv2d_ex};
        let mut fails = compare(
            ctx,
            Peer::nchw("conv", &[n, cin, side, cout, k, stride]),
            name,
            &shape,
            flops,
            false,
            &reference,
            &mut || plain(&xl, &wl, &bl),
            &mut || Ok(conv2d(&xl, &wl, &bl, pad, stride)?),
        )?;
        // Channels-last with a residual (the ResNet's conv2 + skip), as the models add it.
        let r = Tensor::randn(0f32, 1., reference.dims(), device)?;
        let reference_r = (&reference + &r)?;
        let rl = r.to_dtype(dtype)?;
        let last = |t: &Tensor| -> Result<Tensor> { Ok(t.permute((0, 2, 3, 1))?.contiguous()?) };
        let (xn, wn, rn) = (last(&xl)?, last(&wl)?, last(&rl)?);
        let (_, oh, ow, _) = rn.dims4()?;
        let fused = shoal_diffusion::nn::fuses_residual(k, oh * ow, rn.elem_count());
        // The residual in cuDNN's kernel, or added after it.
        let with_residual = |in_kernel: bool| -> Result<Tensor> {
            let y = if in_kernel {
                conv2d_ex(&xn, &wn, Some(&bl), Some(&rn), pad, stride, true)?
            } else {
                (conv2d_ex(&xn, &wn, Some(&bl), None, pad, stride, true)? + &rn)?
            };
            Ok(y.permute((0, 3, 1, 2))?)
        };
        fails += compare(
            ctx,
            match adds {
                Adds::ZeroResidual => Peer::new("conv_cl", &[n, cin, side, cout, k, stride]),
                _ => Peer::run_if("conv_res", &[n, cin, side, cout, k, stride], adds == Adds::Either),
            },
            &format!("{name} nhwc+res"),
            &shape,
            flops,
            false,
            &reference_r,
            &mut || Ok((plain(&xl, &wl, &bl)? + &rl)?),
            // As the models run it: in the kernel, or added after it at small 3×3 outputs.
            &mut || with_residual(fused || adds == Adds::ZeroResidual),
        )?;
        // The other way of a 3×3 window's residual, which the models do not take at this
        // shape (`nn::fuses_residual`): the rule's evidence, against the same PyTorch op.
        if k == 3 && adds != Adds::ZeroResidual {
            fails += compare(
                ctx,
                Peer::run_if("conv_res", &[n, cin, side, cout, k, stride], false),
                &format!("{name} nhwc+res {}", if fused { "added after" } else { "fused" }),
                &shape,
                flops,
                false,
                &reference_r,
                &mut || Ok((plain(&xl, &wl, &bl)? + &rl)?),
                &mut || with_residual(!fused),
            )?;
        }
        // Channels-last with the bias alone (the ResNet's conv1), and with no bias at all
        // (a convolution graph cuDNN can serve with engines that fuse nothing).
        fails += compare(
            ctx,
            Peer::run_if(
                "conv_cl",
                &[n, cin, side, cout, k, stride],
                adds != Adds::ZeroResidual,
            ),
            &format!("{name} nhwc"),
            &shape,
            flops,
            false,
            &reference,
            &mut || plain(&xl, &wl, &bl),
            &mut || Ok(conv2d_ex(&xn, &wn, Some(&bl), None, pad, stride, true)?.permute((0, 3, 1, 2))?),
        )?;
        let zero = bias.zeros_like()?;
        let reference_0 = plain(&x, &w, &zero)?;
        let zl = zero.to_dtype(dtype)?;
        fails += compare(
            ctx,
            Peer::run_if("conv_cl_nobias", &[n, cin, side, cout, k, stride], false),
            &format!("{name} nhwc no bias"),
            &shape,
            flops,
            false,
            &reference_0,
            &mut || plain(&xl, &wl, &zl),
            &mut || Ok(conv2d_ex(&xn, &wn, None, None, pad, stride, true)?.permute((0, 3, 1, 2))?),
        )?;
        Ok(fails)
    }
    #[cfg(not(feature = "cudnn"))]
    {
        let _ = adds;
        compare(
            ctx,
            Peer::new("conv", &[n, cin, side, cout, k, stride]),
            name,
            &shape,
            flops,
            false,
            &reference,
            &mut || plain(&xl, &wl, &bl),
            &mut || plain(&xl, &wl, &bl),
        )
    }
}

fn shoal_kernels_flops(n: usize, c: usize, side: usize, k: usize, r: usize, stride: usize) -> f64 {
    let out = (side + 2 * (r / 2) - r) / stride + 1;
    2.0 * (n * k * out * out) as f64 * (c * r * r) as f64
}

/// One attention row; `plain_expected`: the fast path runs the plain one at this
/// shape by design (cuDNN does not take the head width), so its fallback is not
/// a failure.
pub(super) fn attn_case(ctx: &Ctx, n: usize, a: &Attn, plain_expected: bool) -> Result<usize> {
    let (device, dtype, iters) = (ctx.device, ctx.dtype, ctx.iters);
    use shoal_diffusion::nn::{AttentionOpts, Kernels, attention};
    let &Attn(name, sq, skv, dim, heads) = a;
    let q = Tensor::randn(0f32, 1., (n, sq, dim), device)?;
    let k = Tensor::randn(0f32, 1., (n, skv, dim), device)?;
    let v = Tensor::randn(0f32, 1., (n, skv, dim), device)?;
    let opts = |kernels| AttentionOpts {
        heads,
        mask: None,
        causal: false,
        upcast: false,
        kernels,
    };
    // The plain path forms its scores in blocks of query rows (at most 2^27 at
    // once), so the largest shapes (16 × 8 heads × 4096², over 2^31 scores) have
    // their reference too.
    let reference = attention(&q, &k, &v, &opts(Kernels::Plain))?;
    let (ql, kl, vl) = (q.to_dtype(dtype)?, k.to_dtype(dtype)?, v.to_dtype(dtype)?);
    let plain_out = attention(&ql, &kl, &vl, &opts(Kernels::Plain))?;
    let plain_s = time(device, iters, &mut || {
        Ok(attention(&ql, &kl, &vl, &opts(Kernels::Plain))?)
    })?;
    let (plain_rel, _) = errors(&plain_out, &reference)?;
    let d = dim / heads;
    let shape = format!("{n}×{heads} heads, q {sq}, k {skv}, d {d}");
    let flops = 4.0 * (n * heads * sq * skv * d) as f64;
    #[cfg(feature = "cudnn")]
    {
        let before = shoal_kernels::fallbacks().iter().map(|f| f.calls).sum::<u64>();
        let out = attention(&ql, &kl, &vl, &opts(Kernels::Fast))?;
        let fell = shoal_kernels::fallbacks().iter().map(|f| f.calls).sum::<u64>() > before;
        let fast_s = time_fast(ctx, name, &mut || {
            Ok(attention(&ql, &kl, &vl, &opts(Kernels::Fast))?)
        })?;
        let errs = errors(&out, &reference)?;
        let ok = (!fell || plain_expected) && errs.0 <= bound(dtype, plain_rel);
        row(name, &shape, plain_s, fast_s, flops, plain_rel, errs, ok);
        ctx.ran(Peer::new("attn", &[n, sq, skv, dim, heads]), name, &shape, fast_s);
        let mut failed = usize::from(!ok);
        // Where shoal's own kernel took the row, cuDNN's SDPA on the same inputs beside it; where
        // one of shoal's kernels is built for the shape and not taken (the few-keys kernel past
        // its rule's rows, the copy-engine kernel over many keys), that kernel beside it: each
        // rule's evidence, measured again in every table.
        #[cfg(feature = "fused")]
        if dtype != DType::F32 {
            let scale = (d as f64).powf(-0.5) as f32;
            let rows = n * heads * sq;
            let own = shoal_diffusion::nn::few_keys_kernel(d, skv, rows);
            let few = (1..=shoal_kernels::fused::FEW_KEYS_MAX).contains(&skv)
                && shoal_kernels::fused::FEW_KEYS_DIMS.contains(&d);
            let many =
                skv > shoal_kernels::fused::FEW_KEYS_MAX && shoal_kernels::fused::TMA_DIMS.contains(&d);
            let own_many = many && shoal_diffusion::nn::many_keys_kernel(d, skv, dtype);
            type Alt<'a> = Box<dyn FnMut() -> Result<Tensor> + 'a>;
            let mut alts: Vec<(String, Alt)> = Vec::new();
            if own || own_many {
                alts.push((
                    format!("{name} cudnn"),
                    Box::new(|| Ok(shoal_kernels::cudnn::sdpa(&ql, &kl, &vl, heads, scale, false)?)),
                ));
            }
            if few && !own {
                alts.push((
                    format!("{name} few-keys"),
                    Box::new(|| {
                        Ok(shoal_kernels::fused::attention_few_keys(
                            &ql, &kl, &vl, heads, scale,
                        )?)
                    }),
                ));
            }
            if many && !own_many {
                alts.push((
                    format!("{name} tma"),
                    Box::new(|| Ok(shoal_kernels::fused::attention_tma(&ql, &kl, &vl, heads, scale)?)),
                ));
            }
            for (label, mut alt) in alts {
                let out = alt()?;
                let alt_s = time_fast(ctx, &label, &mut *alt)?;
                let errs = errors(&out, &reference)?;
                let ok = errs.0 <= bound(dtype, plain_rel);
                row(&label, &shape, plain_s, alt_s, flops, plain_rel, errs, ok);
                failed += usize::from(!ok);
            }
        }
        Ok(failed)
    }
    #[cfg(not(feature = "cudnn"))]
    {
        let _ = plain_expected;
        row(
            name,
            &shape,
            plain_s,
            plain_s,
            flops,
            plain_rel,
            (plain_rel, 0.0),
            true,
        );
        ctx.ran(
            Peer::new("attn", &[n, sq, skv, dim, heads]),
            name,
            &shape,
            plain_s,
        );
        Ok(0)
    }
}

fn var_builder(
    tensors: Vec<(&str, Tensor)>,
    dtype: DType,
    device: &Device,
) -> candle_nn::VarBuilder<'static> {
    let map = tensors.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    candle_nn::VarBuilder::from_tensors(map, dtype, device)
}

pub(super) fn norm_case(ctx: &Ctx, n: usize, (c, side): (usize, usize)) -> Result<usize> {
    let (device, dtype) = (ctx.device, ctx.dtype);
    use candle_core::Module;
    let x = (Tensor::randn(0f32, 1., (n, c, side, side), device)? + 0.5)?;
    let w = (Tensor::randn(0f32, 0.2, c, device)? + 1.0)?;
    let bias = Tensor::randn(0f32, 0.2, c, device)?;
    let plain_of = |x: &Tensor, w: &Tensor, b: &Tensor| -> Result<Tensor> {
        let gn = candle_nn::GroupNorm::new(w.clone(), b.clone(), c, 32, 1e-5)?;
        Ok(gn.forward(x)?.silu()?)
    };
    let reference = plain_of(&x, &w, &bias)?;
    let (xl, wl, bl) = (x.to_dtype(dtype)?, w.to_dtype(dtype)?, bias.to_dtype(dtype)?);
    let vb = var_builder(vec![("weight", wl.clone()), ("bias", bl.clone())], dtype, device);
    let gn = shoal_diffusion::nn::group_norm(32, c, 1e-5, vb.clone())?;
    let bytes = 2.0 * x.elem_count() as f64 * dtype.size_in_bytes() as f64;
    let shape = format!("{n}×{c}×{side}²");
    let fails = compare(
        ctx,
        Peer::nchw("group_norm_silu", &[n, c, side]),
        "group_norm+silu",
        &shape,
        bytes,
        true,
        &reference,
        &mut || plain_of(&xl, &wl, &bl),
        &mut || Ok(gn.forward_silu(&xl)?),
    )?;
    let nhwc = shoal_diffusion::nn::Layout::Nhwc;
    let gn = shoal_diffusion::nn::group_norm_in(32, c, 1e-5, vb, nhwc)?;
    let xn = nhwc.from_nchw(&xl)?;
    let fails = fails + in_place_norm(&xn, &wl, &bl, &shape)?;
    let fails = fails
        + compare(
            ctx,
            Peer::new("group_norm_silu", &[n, c, side]),
            "group_norm+silu nhwc",
            &shape,
            bytes,
            true,
            &reference,
            &mut || plain_of(&xl, &wl, &bl),
            &mut || Ok(gn.forward_silu(&xn)?.permute((0, 3, 1, 2))?),
        )?;
    // The channels-last form the models do not take at this shape (one launch or three,
    // by `group_norm_one_pass`), set apart.
    #[cfg(feature = "fused")]
    let fails = {
        let one = shoal_diffusion::nn::group_norm_one_pass(c, side * side, 32);
        let name = if one {
            "group_norm+silu nhwc three launches"
        } else {
            "group_norm+silu nhwc one pass"
        };
        let other = if one {
            shoal_kernels::fused::group_norm_nhwc
        } else {
            shoal_kernels::fused::group_norm_nhwc_one_pass
        };
        fails
            + compare(
                ctx,
                Peer::run_if("group_norm_silu", &[n, c, side], false),
                name,
                &shape,
                bytes,
                true,
                &reference,
                &mut || plain_of(&xl, &wl, &bl),
                &mut || Ok(other(&xn, &wl, &bl, 32, 1e-5, true)?.permute((0, 3, 1, 2))?),
            )?
    };
    Ok(fails)
}

/// The channels-last GroupNorm + SiLU written over its input against the same
/// kernels writing a new tensor: the same bits, or a failure (a row of its own).
fn in_place_norm(xn: &Tensor, w: &Tensor, b: &Tensor, shape: &str) -> Result<usize> {
    #[cfg(feature = "fused")]
    {
        use shoal_kernels::fused::{group_norm_nhwc, group_norm_nhwc_};
        let (out, inplace) = match group_norm_nhwc(xn, w, b, 32, 1e-5, true) {
            Ok(out) => {
                let y = xn.copy()?;
                group_norm_nhwc_(&y, w, b, 32, 1e-5, true)?;
                (out, y)
            }
            // A shape the kernel does not take (its row above says it fell back).
            Err(shoal_kernels::Error::Unsupported { .. }) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let same = (out.to_dtype(DType::F32)? - inplace.to_dtype(DType::F32)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?
            == 0.0;
        println!(
            "| group_norm+silu nhwc in place | {shape} | same bits as writing a new tensor: {} | | | | | | | {} |",
            if same { "yes" } else { "no" },
            if same { "PASS" } else { "FAIL" }
        );
        return Ok(usize::from(!same));
    }
    #[allow(unreachable_code, reason = "the return above exists only with feature fused")]
    {
        let _ = (xn, w, b, shape);
        Ok(0)
    }
}

/// The channels-last 2× upsample and skip concatenation against candle's copies
/// (exact: both only move values).
pub(super) fn copy_case(ctx: &Ctx, n: usize, (side, c, c2): (usize, usize, usize)) -> Result<usize> {
    let (device, dtype) = (ctx.device, ctx.dtype);
    use shoal_diffusion::nn::{Kernels, Layout, cat_channels, upsample_nearest};
    let x = Tensor::randn(0f32, 1., (n, side, side, c), device)?;
    let s = Tensor::randn(0f32, 1., (n, side, side, c2), device)?;
    let (xl, sl) = (x.to_dtype(dtype)?, s.to_dtype(dtype)?);
    let nhwc = Layout::Nhwc;
    let up =
        |x: &Tensor, k: Kernels| -> Result<Tensor> { Ok(upsample_nearest(x, 2 * side, 2 * side, nhwc, k)?) };
    let bytes = 5.0 * x.elem_count() as f64 * dtype.size_in_bytes() as f64;
    let fails = compare(
        ctx,
        Peer::new("upsample2x", &[n, side, c]),
        "upsample2x nhwc copies",
        &format!("{n}×{side}²×{c}"),
        bytes,
        true,
        &up(&x, Kernels::Plain)?,
        &mut || up(&xl, Kernels::Plain),
        &mut || up(&xl, Kernels::Fast),
    )?;
    let cat = |a: &Tensor, b: &Tensor, k: Kernels| -> Result<Tensor> { Ok(cat_channels(a, b, nhwc, k)?) };
    let bytes = 2.0 * (x.elem_count() + s.elem_count()) as f64 * dtype.size_in_bytes() as f64;
    Ok(fails
        + compare(
            ctx,
            Peer::new("cat_channels", &[n, side, c, c2]),
            "skip concat nhwc copies",
            &format!("{n}×{side}²×({c}+{c2})"),
            bytes,
            true,
            &cat(&x, &s, Kernels::Plain)?,
            &mut || cat(&xl, &sl, Kernels::Plain),
            &mut || cat(&xl, &sl, Kernels::Fast),
        )?)
}

/// LayerNorm alone, and with the residual add before it (both outputs checked).
pub(super) fn layer_norm_case(ctx: &Ctx, n: usize, (tokens, dim): (usize, usize)) -> Result<usize> {
    let (device, dtype) = (ctx.device, ctx.dtype);
    use candle_core::Module;
    let a = (Tensor::randn(0f32, 1., (n, tokens, dim), device)? + 0.5)?;
    let r = Tensor::randn(0f32, 1., (n, tokens, dim), device)?;
    let w = (Tensor::randn(0f32, 0.2, dim, device)? + 1.0)?;
    let bias = Tensor::randn(0f32, 0.2, dim, device)?;
    let plain_of = |x: &Tensor, w: &Tensor, b: &Tensor| -> Result<Tensor> {
        Ok(candle_nn::LayerNorm::new(w.clone(), b.clone(), 1e-5).forward(x)?)
    };
    let (al, rl, wl, bl) = (
        a.to_dtype(dtype)?,
        r.to_dtype(dtype)?,
        w.to_dtype(dtype)?,
        bias.to_dtype(dtype)?,
    );
    let vb = var_builder(vec![("weight", wl.clone()), ("bias", bl.clone())], dtype, device);
    let ln = shoal_diffusion::nn::layer_norm(dim, 1e-5, vb)?;
    let shape = format!("{n}×{tokens}×{dim}");
    let el = (n * tokens * dim) as f64 * dtype.size_in_bytes() as f64;
    let reference = plain_of(&a, &w, &bias)?;
    let fails = compare(
        ctx,
        Peer::new("layer_norm", &[n, tokens, dim]),
        "layer_norm",
        &shape,
        2.0 * el,
        true,
        &reference,
        &mut || plain_of(&al, &wl, &bl),
        &mut || Ok(ln.forward(&al)?),
    )?;
    // The sum the fused kernel also returns is checked apart (it must round like a
    // separate add), so that the timed calls are the op alone, as in PyTorch's row.
    let sum = (&a + &r)?;
    let (s_fast, _) = ln.forward_add(&al, &rl)?;
    let (s_rel, _) = errors(&s_fast, &(&al + &rl)?)?;
    let sum_fail = s_rel > bound(dtype, 0.0);
    if sum_fail {
        println!("| add + layer_norm (its sum) | {shape} | | | | | | {s_rel:.1e} | | FAIL |");
    }
    let reference = plain_of(&sum, &w, &bias)?;
    Ok(fails
        + usize::from(sum_fail)
        + compare(
            ctx,
            Peer::new("add_layer_norm", &[n, tokens, dim]),
            "add + layer_norm",
            &shape,
            4.0 * el,
            true,
            &reference,
            &mut || plain_of(&(&al + &rl)?, &wl, &bl),
            &mut || Ok(ln.forward_add(&al, &rl)?.1),
        )?)
}

pub(super) fn linear_case(ctx: &Ctx, n: usize, l: &Lin) -> Result<usize> {
    let (device, dtype) = (ctx.device, ctx.dtype);
    use candle_core::Module;
    let &Lin(name, tokens, cin, cout, after) = l;
    let geglu = after == After::Geglu;
    let x = Tensor::randn(0f32, 1., (n, tokens, cin), device)?;
    let w = (Tensor::randn(0f32, 1., (cout, cin), device)? / (cin as f64).sqrt())?;
    let bias = Tensor::randn(0f32, 1., cout, device)?;
    let plain_of = |x: &Tensor, w: &Tensor, b: &Tensor| -> Result<Tensor> {
        let h = candle_nn::Linear::new(w.clone(), Some(b.clone())).forward(x)?;
        if !geglu {
            return Ok(h);
        }
        let half = cout / 2;
        Ok((h.narrow(2, 0, half)? * h.narrow(2, half, half)?.gelu_erf()?)?)
    };
    let reference = plain_of(&x, &w, &bias)?;
    let (xl, wl, bl) = (x.to_dtype(dtype)?, w.to_dtype(dtype)?, bias.to_dtype(dtype)?);
    let vb = var_builder(vec![("weight", wl.clone()), ("bias", bl.clone())], dtype, device);
    let lin = shoal_diffusion::nn::linear(cin, cout, vb.clone())?;
    let ff_in = shoal_diffusion::nn::geglu(cin, cout / 2, vb)?;
    let flops = 2.0 * (n * tokens * cin * cout) as f64;
    let mut fails = 0;
    if !geglu {
        // With the residual add after it (the feed-forward output): both sides copy the
        // residual first, since the fast path accumulates into it.
        let r = Tensor::randn(0f32, 1., (n, tokens, cout), device)?;
        let rl = r.to_dtype(dtype)?;
        let reference = (plain_of(&x, &w, &bias)? + &r)?;
        fails += compare(
            ctx,
            Peer::new("linear_res", &[n, tokens, cin, cout]),
            &format!("{name} + residual"),
            &format!("{n}×{tokens} × {cin} → {cout}"),
            flops,
            false,
            &reference,
            &mut || Ok((plain_of(&xl, &wl, &bl)? + rl.copy()?)?),
            &mut || Ok(lin.forward_add(&xl, rl.copy()?)?),
        )?;
    }
    Ok(fails
        + compare(
            ctx,
            Peer::run_if(
                if geglu { "linear_geglu" } else { "linear" },
                &[n, tokens, cin, cout],
                after != After::Residual,
            ),
            name,
            &format!("{n}×{tokens} × {cin} → {cout}"),
            flops,
            false,
            &reference,
            &mut || plain_of(&xl, &wl, &bl),
            &mut || {
                Ok(if geglu {
                    ff_in.forward(&xl)?
                } else {
                    lin.forward(&xl)?
                })
            },
        )?)
}
