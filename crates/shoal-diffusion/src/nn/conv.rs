//! 2-D convolution (`nn.Conv2d`, zero padding, square kernel and stride), in
//! either activation [`Layout`].

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use super::{Kernels, Layout};

/// A convolution layer with weight `(cout, cin, k, k)` and bias `(cout,)` in
/// the file. On the fast channels-last path the weight is kept as
/// `(cout, k, k, cin)` (cuDNN's KRSC), permuted once when the layer is built.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    padding: usize,
    stride: usize,
    kernels: Kernels,
    layout: Layout,
}

/// Loads `weight` and `bias` under `vb`: `cin → cout`, kernel `k × k`, NCHW.
pub fn conv2d(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
) -> candle_core::Result<Conv2d> {
    conv2d_in(vb, cin, cout, k, stride, padding, Layout::Nchw)
}

/// [`conv2d`] for activations in `layout`.
pub fn conv2d_in(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
    layout: Layout,
) -> candle_core::Result<Conv2d> {
    let kernels = Kernels::for_weights(vb.device(), vb.dtype());
    let init = candle_nn::init::DEFAULT_KAIMING_NORMAL;
    let weight = vb.get_with_hints((cout, cin, k, k), "weight", init)?;
    let bound = 1. / (cin as f64).sqrt();
    let bias = vb.get_with_hints(
        cout,
        "bias",
        candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )?;
    let weight = if kernels == Kernels::Fast && layout == Layout::Nhwc && cfg!(feature = "cudnn") {
        weight.permute((0, 2, 3, 1))?.contiguous()?
    } else {
        weight
    };
    Ok(Conv2d {
        weight,
        bias: Some(bias),
        padding,
        stride,
        kernels,
        layout,
    })
}

impl Conv2d {
    /// The zero padding on each side (a `k × k` stride-1 convolution with
    /// padding `p` reads `p` rows beyond each edge of its input).
    pub fn padding(&self) -> usize {
        self.padding
    }

    /// The stride.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The bias `(cout,)`, if the layer has one.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The same layer with `bias` `(cout,)` in place of its own (the weight shared).
    pub fn with_bias(&self, bias: Tensor) -> Conv2d {
        Conv2d {
            bias: Some(bias),
            ..self.clone()
        }
    }

    /// Whether the stored weight is KRSC (the fast channels-last path).
    fn krsc(&self) -> bool {
        self.kernels == Kernels::Fast && self.layout == Layout::Nhwc && cfg!(feature = "cudnn")
    }

    /// The weight as `(cout, cin, k, k)`.
    fn oihw(&self) -> candle_core::Result<Tensor> {
        if self.krsc() {
            self.weight.permute((0, 3, 1, 2))?.contiguous()
        } else {
            Ok(self.weight.clone())
        }
    }

    /// The plain path: candle's convolution on NCHW (channels-last input is
    /// permuted there and back), then the bias and the residual.
    fn forward_plain(&self, x: &Tensor, residual: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let xn = match self.layout {
            Layout::Nchw => x.clone(),
            Layout::Nhwc => x.permute((0, 3, 1, 2))?,
        };
        let mut y = xn.conv2d(&self.oihw()?, self.padding, self.stride, 1, 1)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?;
        }
        if self.layout == Layout::Nhwc {
            y = y.permute((0, 2, 3, 1))?.contiguous()?;
        }
        match residual {
            Some(r) => y + r,
            None => Ok(y),
        }
    }

    /// `conv(x) + residual`, in one kernel on the fast path (the sum is
    /// rounded once, from f32).
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        self.run(x, Some(residual))
    }

    fn run(&self, x: &Tensor, residual: Option<&Tensor>) -> candle_core::Result<Tensor> {
        super::profile::scope("conv2d", x.device(), || match self.kernels {
            Kernels::Plain => self.forward_plain(x, residual),
            Kernels::Fast => self.forward_cudnn(x, residual),
        })
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.run(x, None)
    }
}

/// Outputs of at most this many elements take a 3×3 convolution's residual as a
/// separate add (see [`fuses_residual`]).
const SMALL_OUT: usize = 1 << 18;

/// Outputs of at most this many positions (8 × 8) take it as a separate add at any
/// batch (see [`fuses_residual`]).
const SMALL_AREA: usize = 64;

/// Whether a channels-last convolution with a `kernel × kernel` window, whose
/// output has `out_area` positions (height × width) and `out_elements` elements,
/// adds its residual in the kernel (rounded once, from f32) rather than as an add
/// after it (rounded twice, as PyTorch's `conv + add`). cuDNN's residual-fusing
/// engine for a 3×3 window over a small output is slower than its bias-only one
/// plus an add: `bench ops` (session 9, call c, H200), 2×1280×8² → 1280: 0.046 ms
/// fused, 0.025 ms with the bias alone; at 8 × 8 the same holds at batch 16
/// (0.057 fused against 0.049 with the bias alone on the H200 in that call, 0.057
/// against 0.047 on the H100 in session 17's call A, where an add of that output
/// moves 7.9 MB). From 2×1280×16² on the fused one is within ±0.01 ms of bias + add,
/// and 1×1 windows are faster fused at every size measured.
pub fn fuses_residual(kernel: usize, out_area: usize, out_elements: usize) -> bool {
    kernel == 1 || (out_elements > SMALL_OUT && out_area > SMALL_AREA)
}

#[cfg(feature = "cudnn")]
impl Conv2d {
    fn forward_cudnn(&self, x: &Tensor, residual: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let Some(bias) = &self.bias else {
            return self.forward_plain(x, residual);
        };
        let nhwc = self.layout == Layout::Nhwc;
        // With fewer than 8 output channels (the UNet's and the VAE's conv_out: 4 and 3),
        // cuDNN's heuristic serves conv + bias with an engine 1.3–4× slower than the one
        // it picks when a residual is added too (`bench ops`, session 8): such a layer
        // adds a zero residual, which changes no value.
        // The weight is (cout, k, k, cin) here when channels-last, the only case
        // that reads `window`.
        let (k, window, _, _) = self.weight.dims4()?;
        let zeros;
        let (residual, zero) = match residual {
            None if nhwc && k < 8 => {
                let (n, h, w, _) = x.dims4()?;
                let out = |side: usize| (side + 2 * self.padding).saturating_sub(window) / self.stride + 1;
                zeros = Tensor::zeros((n, out(h), out(w), k), x.dtype(), x.device())?;
                (Some(&zeros), true)
            }
            r => (r, false),
        };
        // cuDNN fuses the residual only in channels-last (no NCHW engine takes it),
        // and there only where that measures faster (the zero residual always).
        // The residual is (n, h, w, k) when channels-last, the only case that reads its dims.
        let fuse = nhwc
            && residual.is_some_and(|r| {
                let area = r.dims().get(1..3).map_or(0, |hw| hw[0] * hw[1]);
                zero || fuses_residual(window, area, r.elem_count())
            });
        let fused = if fuse { residual } else { None };
        match shoal_kernels::cudnn::conv2d_ex(
            x,
            &self.weight,
            Some(bias),
            fused,
            self.padding,
            self.stride,
            nhwc,
        ) {
            Ok(y) => match residual {
                Some(r) if !fuse => y + r,
                _ => Ok(y),
            },
            Err(shoal_kernels::Error::Unsupported { why, .. }) => {
                super::fell_back(
                    || {
                        format!(
                            "conv2d {:?} {:?} w{:?} {:?}",
                            x.dtype(),
                            x.dims(),
                            self.weight.dims(),
                            self.layout
                        )
                    },
                    &why,
                );
                self.forward_plain(x, residual)
            }
            Err(e) => Err(candle_core::Error::Msg(e.to_string())),
        }
    }
}

#[cfg(not(feature = "cudnn"))]
impl Conv2d {
    fn forward_cudnn(&self, x: &Tensor, residual: Option<&Tensor>) -> candle_core::Result<Tensor> {
        self.forward_plain(x, residual)
    }
}

#[cfg(test)]
mod tests {
    use super::{conv2d_in, fuses_residual};
    use crate::nn::Layout;
    use candle_core::{DType, Device, Module, Tensor};

    /// `with_bias(b + t)` is the convolution with its own bias, plus `t` per channel:
    /// what the UNet's ResNets rely on when the time embedding goes into conv1's bias.
    #[test]
    fn a_bias_in_place_of_the_layers_adds_per_channel() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let vb = candle_nn::VarBuilder::from_tensors(
                [
                    (
                        "weight".to_string(),
                        Tensor::randn(0f32, 0.2, (6, 4, 3, 3), &dev)?,
                    ),
                    ("bias".to_string(), Tensor::randn(0f32, 1.0, 6, &dev)?),
                ]
                .into_iter()
                .collect(),
                DType::F32,
                &dev,
            );
            let conv = conv2d_in(vb, 4, 6, 3, 1, 1, layout)?;
            let x = layout.from_nchw(&Tensor::randn(0f32, 1.0, (2, 4, 5, 7), &dev)?)?;
            let t = Tensor::randn(0f32, 1.0, 6, &dev)?;
            let bias = conv.bias().expect("the layer has a bias");
            let moved = layout.to_nchw(&conv.with_bias((bias + &t)?).forward(&x)?)?;
            let added = layout
                .to_nchw(&conv.forward(&x)?)?
                .broadcast_add(&t.reshape((1, 6, 1, 1))?)?;
            let err = (moved - added)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(err < 1e-5, "{layout:?}: {err}");
            // The layer itself keeps its bias.
            assert_eq!(
                conv.bias().expect("bias").to_vec1::<f32>()?,
                bias.to_vec1::<f32>()?
            );
        }
        Ok(())
    }

    #[test]
    fn the_residual_is_fused_except_at_small_3x3_outputs() {
        // The shapes `bench ops` measured (session 9, call c), output elements.
        // The shapes `bench ops` measured (sessions 9 and 17): area and elements of the output.
        let fuses = |kernel: usize, n: usize, k: usize, side: usize| {
            fuses_residual(kernel, side * side, n * k * side * side)
        };
        assert!(!fuses(3, 2, 1280, 8));
        assert!(!fuses(3, 1, 1280, 8));
        assert!(!fuses(3, 16, 1280, 8));
        assert!(fuses(3, 2, 1280, 16));
        assert!(fuses(3, 16, 1280, 16));
        assert!(fuses(3, 2, 320, 64));
        assert!(fuses(3, 16, 320, 64));
        assert!(fuses(1, 2, 1280, 8));
        assert!(fuses(1, 16, 2560, 8));
    }
}
