//! `PNDMScheduler` (diffusers `scheduling_pndm.py`): the Runge-Kutta warm-up
//! (`step_prk`, unless `skip_prk_steps`) and the linear multistep (`step_plms`).

use candle_core::Tensor;

use super::{Prediction, Scheduler};
use crate::error::Result;

impl Scheduler {
    /// One of the 12 Runge-Kutta model calls: four per warm-up step, the
    /// outputs weighted 1/6, 1/3, 1/3, 1/6, every call moving from the step's
    /// first sample.
    pub(super) fn step_prk(&mut self, out: &Tensor, t: f64, x: &Tensor) -> Result<Tensor> {
        let half = (self.cfg.num_train_timesteps / self.n / 2) as f64;
        let prev_t = if self.counter % 2 == 1 { t } else { t - half };
        let t = self.prk_timesteps[self.counter / 4 * 4];
        let m = match self.counter % 4 {
            0 => {
                self.cur_model_output = Some((out * (1.0 / 6.0))?);
                self.ets.push(out.clone());
                self.cur_sample = Some(x.clone());
                out.clone()
            }
            1 | 2 => {
                let add = (out * (1.0 / 3.0))?;
                self.cur_model_output = Some(match self.cur_model_output.take() {
                    Some(c) => (c + add)?,
                    None => add,
                });
                out.clone()
            }
            _ => {
                let last = (out * (1.0 / 6.0))?;
                match self.cur_model_output.take() {
                    Some(c) => (c + last)?,
                    None => last,
                }
            }
        };
        let sample = self.cur_sample.clone().unwrap_or_else(|| x.clone());
        self.counter += 1;
        self.prev_sample(&sample, t, prev_t, m)
    }

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
        self.counter += 1;
        self.prev_sample(&sample, t, prev_t, m)
    }

    /// `_get_prev_sample`: formula (9) of the PNDM paper, from `t` to `prev_t`.
    fn prev_sample(&self, sample: &Tensor, t: f64, prev_t: f64, m: Tensor) -> Result<Tensor> {
        let (a, a_prev) = (self.alpha_at(t), self.alpha_at(prev_t));
        let (b, b_prev) = (1.0 - a, 1.0 - a_prev);
        let m = match self.cfg.prediction {
            Prediction::V => ((m * a.sqrt())? + (sample * b.sqrt())?)?,
            Prediction::Epsilon => m,
        };
        let coeff = (a_prev / a).sqrt();
        let denom = a * b_prev.sqrt() + (a * b * a_prev).sqrt();
        Ok(((sample * coeff)? - (m * ((a_prev - a) / denom))?)?)
    }
}
