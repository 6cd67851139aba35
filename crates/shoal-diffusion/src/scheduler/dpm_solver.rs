//! `DPMSolverMultistepScheduler.step` as DPM-Solver++ 2M (diffusers `scheduling_dpmsolver_multistep.py`).

use candle_core::Tensor;

use super::{Prediction, Scheduler};
use crate::error::Result;

impl Scheduler {
    pub(super) fn step_dpm(&mut self, out: &Tensor, i: usize, x: &Tensor) -> Result<Tensor> {
        let alpha_sigma = |s: f64| {
            let a = 1.0 / (s * s + 1.0).sqrt();
            (a, s * a)
        };
        let s0 = self.sigmas[i];
        let (a0, sg0) = alpha_sigma(s0);
        let x0 = match self.cfg.prediction {
            Prediction::Epsilon => ((x - (out * sg0)?)? / a0)?,
            Prediction::V => ((x * a0)? - (out * sg0)?)?,
        };
        if self.outputs.len() >= 2 {
            self.outputs.remove(0);
        }
        self.outputs.push(x0.clone());
        let n = self.timesteps.len();
        let lower_final = i == n - 1;
        let st = self.sigmas[i + 1];
        let (at, sgt) = alpha_sigma(st);
        let lam = |a: f64, s: f64| a.ln() - s.ln();
        let first_order = self.lower_order_nums < 1 || lower_final;
        let prev = if st == 0.0 {
            // λ_t = +∞: the update is the predicted x0 itself.
            x0
        } else if first_order || self.outputs.len() < 2 {
            let h = lam(at, sgt) - lam(a0, sg0);
            ((x * (sgt / sg0))? - (&x0 * (at * ((-h).exp() - 1.0)))?)?
        } else {
            let s1 = self.sigmas[i - 1];
            let (a1, sg1) = alpha_sigma(s1);
            let (lt, l0, l1) = (lam(at, sgt), lam(a0, sg0), lam(a1, sg1));
            let (h, h0) = (lt - l0, l0 - l1);
            let r0 = h0 / h;
            let (m0, m1) = (&self.outputs[1], &self.outputs[0]);
            let d1 = ((m0 - m1)? * (1.0 / r0))?;
            let c = at * ((-h).exp() - 1.0);
            (((x * (sgt / sg0))? - (m0 * c)?)? - (d1 * (0.5 * c))?)?
        };
        self.lower_order_nums = (self.lower_order_nums + 1).min(2);
        Ok(prev)
    }
}
