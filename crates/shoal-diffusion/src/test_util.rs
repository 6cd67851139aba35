//! Helpers of the unit tests.
#![allow(clippy::unwrap_used, reason = "tests")]

use candle_core::Tensor;

/// The largest |x| of a tensor.
pub(crate) fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

/// The largest |a − b| of two tensors of one shape.
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}
