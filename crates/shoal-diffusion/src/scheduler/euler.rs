//! `EulerDiscreteScheduler.step` and `EulerAncestralDiscreteScheduler.step`
//! (diffusers `scheduling_euler_discrete.py`, `scheduling_euler_ancestral_discrete.py`).

use candle_core::Tensor;

use super::{Prediction, Scheduler};
use crate::error::{Error, Result};

impl Scheduler {
    pub(super) fn step_euler(
        &mut self,
        out: &Tensor,
        i: usize,
        x: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (s, s_next) = (self.sigmas[i], self.sigmas[i + 1]);
        let x0 = match self.cfg.prediction {
            Prediction::Epsilon => (x - (out * s)?)?,
            Prediction::V => ((out * (-s / (s * s + 1.0).sqrt()))? + (x / (s * s + 1.0))?)?,
        };
        let deriv = ((x - &x0)? / s)?;
        if self.needs_noise() {
            let up = (s_next * s_next * (s * s - s_next * s_next) / (s * s)).sqrt();
            let down = (s_next * s_next - up * up).sqrt();
            let prev = (x + (deriv * (down - s))?)?;
            match noise {
                Some(n) if up > 0.0 => Ok((prev + (n * up)?)?),
                Some(_) => Ok(prev),
                None => Err(Error::invalid(
                    "noise",
                    "none",
                    "Euler ancestral needs noise at every step",
                )),
            }
        } else {
            Ok((x + (deriv * (s_next - s))?)?)
        }
    }
}
