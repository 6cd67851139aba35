//! Shape arithmetic, shared by the kernels and their callers (pure).

/// The output side of a convolution: `(side + 2 pad − kernel) / stride + 1`,
/// `None` when the kernel does not fit or the stride is zero.
pub fn conv_out_side(side: usize, kernel: usize, pad: usize, stride: usize) -> Option<usize> {
    if stride == 0 {
        return None;
    }
    let padded = side.checked_add(pad.checked_mul(2)?)?;
    padded.checked_sub(kernel).map(|s| s / stride + 1)
}

/// A 2-D convolution's shape: input `(n, c, h, w)`, `k` filters of `r × s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvShape {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub k: usize,
    /// Filter height.
    pub r: usize,
    /// Filter width.
    pub s: usize,
    /// Zero padding on every side.
    pub pad: usize,
    /// Stride in both directions.
    pub stride: usize,
}

impl ConvShape {
    /// The output `(n, k, ho, wo)`, `None` when the filter does not fit.
    pub fn out_dims(&self) -> Option<(usize, usize, usize, usize)> {
        Some((
            self.n,
            self.k,
            conv_out_side(self.h, self.r, self.pad, self.stride)?,
            conv_out_side(self.w, self.s, self.pad, self.stride)?,
        ))
    }

    /// Multiply-adds × 2.
    pub fn flops(&self) -> f64 {
        let (n, k, ho, wo) = self.out_dims().unwrap_or_default();
        2.0 * (n * k * ho * wo) as f64 * (self.c * self.r * self.s) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_sides() {
        assert_eq!(conv_out_side(64, 3, 1, 1), Some(64));
        assert_eq!(conv_out_side(64, 3, 1, 2), Some(32));
        assert_eq!(conv_out_side(63, 3, 1, 2), Some(32));
        assert_eq!(conv_out_side(1, 3, 0, 1), None);
        assert_eq!(conv_out_side(8, 1, 0, 0), None);
        assert_eq!(conv_out_side(usize::MAX, 3, usize::MAX, 1), None);
    }

    #[test]
    fn flops_of_a_unet_conv() {
        let s = ConvShape {
            n: 2,
            c: 320,
            h: 64,
            w: 64,
            k: 320,
            r: 3,
            s: 3,
            pad: 1,
            stride: 1,
        };
        assert_eq!(s.out_dims(), Some((2, 320, 64, 64)));
        assert_eq!(s.flops(), 2.0 * 2.0 * 320.0 * 4096.0 * 320.0 * 9.0);
    }
}
