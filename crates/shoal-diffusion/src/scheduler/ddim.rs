//! `DDIMScheduler.step` (diffusers `scheduling_ddim.py`, eta 0).

use candle_core::Tensor;

use super::{Prediction, Scheduler};
use crate::error::Result;

impl Scheduler {
    pub(super) fn step_ddim(&mut self, out: &Tensor, t: f64, ratio: f64, x: &Tensor) -> Result<Tensor> {
        let (a, a_prev) = (self.alpha_at(t), self.alpha_at(t - ratio));
        let b = 1.0 - a;
        let (mut x0, eps) = match self.cfg.prediction {
            Prediction::Epsilon => (((x - (out * b.sqrt())?)? / a.sqrt())?, out.clone()),
            Prediction::V => (
                ((x * a.sqrt())? - (out * b.sqrt())?)?,
                ((out * a.sqrt())? + (x * b.sqrt())?)?,
            ),
        };
        if self.cfg.clip_sample {
            let r = self.cfg.clip_sample_range;
            x0 = x0.clamp(-r, r)?;
        }
        Ok(((x0 * a_prev.sqrt())? + (eps * (1.0 - a_prev).sqrt())?)?)
    }
}
