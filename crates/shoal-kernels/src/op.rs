//! The candle op impls of the kernels here, written once: every op takes CUDA
//! tensors only (the callers' plain path covers the CPU), so its CPU arm is an
//! error, and its CUDA arm calls the op's own `typed::<T>(suffix, …)` for the
//! dtype of the first input.
//!
//! `cuda_only!(CustomOp3 for ConvOp, "shoal-cudnn-conv2d", "cuDNN convolution")`
//! implements `CustomOp3` for f16, bf16 and f32; a list after the description,
//! `[F16 => half::f16, "f16"; BF16 => half::bf16, "bf16"]`, narrows the dtypes
//! (any other is an error naming the op).

/// `$op.typed::<T>(suffix, args…)` for `$dtype` among the listed dtypes; the
/// arguments come as one parenthesized group.
macro_rules! dispatch {
    ($op:ident, $dtype:expr, $what:literal, [$($dt:ident => $t:ty, $sfx:literal);+], $args:tt) => {
        match $dtype {
            $(candle_core::DType::$dt => dispatch!(@call $op, $t, $sfx, $args),)+
            d => candle_core::bail!("{}: dtype {d:?}", $what),
        }
    };
    (@call $op:ident, $t:ty, $sfx:literal, ($($a:expr),*)) => {
        $op.typed::<$t>($sfx, $($a),*)
    };
}

/// The impl of one of candle's op traits (see the module's text).
macro_rules! cuda_only {
    (CustomOp1 for $ty:ty, $name:literal, $what:literal, $dts:tt) => {
        impl candle_core::CustomOp1 for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn cpu_fwd(
                &self,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                candle_core::bail!("the {} needs CUDA tensors", $what)
            }
            fn cuda_fwd(
                &self,
                s1: &candle_core::CudaStorage,
                l1: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
                dispatch!(self, s1.dtype(), $what, $dts, (s1, l1))
            }
        }
    };
    (CustomOp2 for $ty:ty, $name:literal, $what:literal, $dts:tt) => {
        impl candle_core::CustomOp2 for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn cpu_fwd(
                &self,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                candle_core::bail!("the {} needs CUDA tensors", $what)
            }
            fn cuda_fwd(
                &self,
                s1: &candle_core::CudaStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CudaStorage,
                l2: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
                dispatch!(self, s1.dtype(), $what, $dts, (s1, l1, s2, l2))
            }
        }
    };
    (CustomOp3 for $ty:ty, $name:literal, $what:literal, $dts:tt) => {
        impl candle_core::CustomOp3 for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn cpu_fwd(
                &self,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                candle_core::bail!("the {} needs CUDA tensors", $what)
            }
            fn cuda_fwd(
                &self,
                s1: &candle_core::CudaStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CudaStorage,
                l2: &candle_core::Layout,
                s3: &candle_core::CudaStorage,
                l3: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
                dispatch!(self, s1.dtype(), $what, $dts, (s1, l1, s2, l2, s3, l3))
            }
        }
    };
    (InplaceOp2 for $ty:ty, $name:literal, $what:literal, $dts:tt) => {
        impl candle_core::InplaceOp2 for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn cpu_fwd(
                &self,
                _: &mut candle_core::CpuStorage,
                _: &candle_core::Layout,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
            ) -> candle_core::Result<()> {
                candle_core::bail!("the {} needs CUDA tensors", $what)
            }
            fn cuda_fwd(
                &self,
                s1: &mut candle_core::CudaStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CudaStorage,
                l2: &candle_core::Layout,
            ) -> candle_core::Result<()> {
                dispatch!(self, s1.dtype(), $what, $dts, (s1, l1, s2, l2))
            }
        }
    };
    (InplaceOp3 for $ty:ty, $name:literal, $what:literal, $dts:tt) => {
        impl candle_core::InplaceOp3 for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn cpu_fwd(
                &self,
                _: &mut candle_core::CpuStorage,
                _: &candle_core::Layout,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
            ) -> candle_core::Result<()> {
                candle_core::bail!("the {} needs CUDA tensors", $what)
            }
            fn cuda_fwd(
                &self,
                s1: &mut candle_core::CudaStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CudaStorage,
                l2: &candle_core::Layout,
                s3: &candle_core::CudaStorage,
                l3: &candle_core::Layout,
            ) -> candle_core::Result<()> {
                dispatch!(self, s1.dtype(), $what, $dts, (s1, l1, s2, l2, s3, l3))
            }
        }
    };
    // f16, bf16 and f32.
    ($tr:ident for $ty:ty, $name:literal, $what:literal) => {
        cuda_only!(
            $tr for $ty,
            $name,
            $what,
            [F16 => half::f16, "f16"; BF16 => half::bf16, "bf16"; F32 => f32, "f32"]
        );
    };
}

/// Whether a strided view's elements, from its first to the furthest its strides
/// reach, lie inside a buffer of `len` elements (the kernels that read views
/// through their strides check this before they launch).
pub(crate) fn view_fits(l: &candle_core::Layout, len: usize) -> bool {
    let reach = l
        .dims()
        .iter()
        .zip(l.stride())
        .map(|(n, s)| n.saturating_sub(1).saturating_mul(*s))
        .fold(1usize, usize::saturating_add);
    l.start_offset().saturating_add(reach) <= len
}
