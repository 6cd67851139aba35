//! 2-D convolution (`nn.Conv2d`, zero padding, square kernel and stride).

use candle_core::{Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use super::Kernels;

/// A convolution layer with weight `(cout, cin, k, k)` and bias `(cout,)`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    plain: candle_nn::Conv2d,
    #[cfg_attr(not(feature = "cudnn"), allow(dead_code))]
    padding: usize,
    #[cfg_attr(not(feature = "cudnn"), allow(dead_code))]
    stride: usize,
    kernels: Kernels,
}

/// Loads `weight` and `bias` under `vb`: `cin → cout`, kernel `k × k`.
pub fn conv2d(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
) -> candle_core::Result<Conv2d> {
    let kernels = Kernels::for_weights(vb.device(), vb.dtype());
    let cfg = Conv2dConfig {
        padding,
        stride,
        ..Default::default()
    };
    Ok(Conv2d {
        plain: candle_nn::conv2d(cin, cout, k, cfg, vb)?,
        padding,
        stride,
        kernels,
    })
}

impl Conv2d {
    /// The plain path.
    fn forward_plain(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.plain.forward(x)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        super::profile::scope("conv2d", x.device(), || match self.kernels {
            Kernels::Plain => self.forward_plain(x),
            Kernels::Fast => self.forward_cudnn(x),
        })
    }
}

#[cfg(feature = "cudnn")]
impl Conv2d {
    fn forward_cudnn(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let Some(bias) = self.plain.bias() else {
            return self.forward_plain(x);
        };
        match shoal_kernels::cudnn::conv2d(x, self.plain.weight(), bias, self.padding, self.stride) {
            Ok(y) => Ok(y),
            Err(shoal_kernels::Error::Unsupported { why, .. }) => {
                super::fell_back(
                    || {
                        format!(
                            "conv2d {:?} {:?} w{:?}",
                            x.dtype(),
                            x.dims(),
                            self.plain.weight().dims()
                        )
                    },
                    &why,
                );
                self.forward_plain(x)
            }
            Err(e) => Err(candle_core::Error::Msg(e.to_string())),
        }
    }
}

#[cfg(not(feature = "cudnn"))]
impl Conv2d {
    fn forward_cudnn(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_plain(x)
    }
}
