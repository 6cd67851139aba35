//! `PNDMScheduler.step_plms` (diffusers `scheduling_pndm.py`, `skip_prk_steps`).

use candle_core::Tensor;

use super::{Prediction, Scheduler};
use crate::error::Result;

impl Scheduler {
    pub(super) fn step_plms(&mut self, out: &Tensor, t: f64, ratio: f64, x: &Tensor) -> Result<Tensor> {
        let (mut t, mut prev_t) = (t, t - ratio);
        if self.counter != 1 {
            if self.ets.len() > 3 {
                self.ets.remove(0);
            }
            self.ets.push(out.clone());
        } else {
            prev_t = t;
            t += ratio;
        }
        let e = &self.ets;
        let k = e.len();
        let mut sample = x.clone();
        let m = if k == 1 && self.counter == 0 {
            self.cur_sample = Some(x.clone());
            out.clone()
        } else if k == 1 && self.counter == 1 {
            sample = self.cur_sample.take().unwrap_or_else(|| x.clone());
            ((out + &e[0])? / 2.0)?
        } else if k == 2 {
            (((&e[1] * 3.0)? - &e[0])? / 2.0)?
        } else if k == 3 {
            ((((&e[2] * 23.0)? - (&e[1] * 16.0)?)? + (&e[0] * 5.0)?)? / 12.0)?
        } else {
            ((((((&e[k - 1] * 55.0)? - (&e[k - 2] * 59.0)?)? + (&e[k - 3] * 37.0)?)? - (&e[k - 4] * 9.0)?)?)
                / 24.0)?
        };
        let (a, a_prev) = (self.alpha_at(t), self.alpha_at(prev_t));
        let (b, b_prev) = (1.0 - a, 1.0 - a_prev);
        let m = match self.cfg.prediction {
            Prediction::V => ((m * a.sqrt())? + (&sample * b.sqrt())?)?,
            Prediction::Epsilon => m,
        };
        let coeff = (a_prev / a).sqrt();
        let denom = a * b_prev.sqrt() + (a * b * a_prev).sqrt();
        self.counter += 1;
        Ok(((&sample * coeff)? - (m * ((a_prev - a) / denom))?)?)
    }
}
