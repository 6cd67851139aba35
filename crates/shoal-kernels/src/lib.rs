//! Fast GPU kernels for shoal, each behind a cargo feature.
//!
//! - `cudnn`: convolutions and scaled-dot-product attention through cuDNN's
//!   graph API (a host-only C++ shim over the header-only cudnn-frontend, in
//!   `csrc/shim.cpp`). One execution plan per shape, built on first use and
//!   cached per device; one workspace per device that only grows; cuDNN is
//!   loaded at run time.
//!
//! - `fused`: GroupNorm (+SiLU), bias adds and bias + GEGLU as single kernels
//!   (`csrc/fused.cu`, PTX from nvcc at build time).
//!
//! - `gemm`: the GEGLU projection as one CUTLASS GEMM for sm_90a with the GEGLU in its
//!   epilogue (`csrc/geglu_gemm.cu`, a static library from nvcc at build time; [`gemm`]).
//!
//! - `sass`: every kernel module (candle's and the fused ones) embedded as SASS
//!   compiled at build time, handed to a patched candle-core ([`sass`]).
//!
//! Without features this crate holds only the pure parts (shape arithmetic,
//! the fallback report), so the CPU build compiles no C++.
//!
//! A shape or dtype a kernel does not cover is an [`Error::Unsupported`]; the
//! caller runs its plain path and the fallback is counted in [`fallbacks`]
//! (`shoal bench` prints it), so nothing changes results silently.

#[cfg(any(feature = "cudnn", feature = "fused"))]
#[macro_use]
mod op;

mod error;
mod report;
mod shape;

#[cfg(feature = "cudnn")]
pub mod cudnn;
#[cfg(feature = "fused")]
pub mod fused;
#[cfg(feature = "gemm")]
pub mod gemm;
#[cfg(feature = "sass")]
pub mod sass;

pub use error::{Error, Result};
pub use report::{Fallback, fallbacks, note_fallback};
pub use shape::{ConvShape, conv_out_side};
