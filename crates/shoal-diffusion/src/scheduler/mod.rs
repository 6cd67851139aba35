//! Schedulers with diffusers' semantics: PNDM (PLMS), DDIM, Euler, Euler
//! ancestral and DPM-Solver++ 2M.
//!
//! Written from `huggingface/diffusers src/diffusers/schedulers/`
//! (`scheduling_pndm.py`, `scheduling_ddim.py`, `scheduling_euler_discrete.py`,
//! `scheduling_euler_ancestral_discrete.py`, `scheduling_dpmsolver_multistep.py`).
//! A config is read as diffusers' `from_config` reads it: the keys present in
//! `scheduler_config.json` override the chosen class's own defaults, so
//! `--scheduler` can swap the class and keep the model's betas and spacing.
//! Arithmetic on the schedule runs in f64 on the host; tensors see scalars.
//! One file per class's step (`ddim.rs`, `pndm.rs`, `euler.rs`, `dpm_solver.rs`);
//! this one parses configs, builds the schedules and dispatches on [`Kind`].

use candle_core::Tensor;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

mod ddim;
mod dpm_solver;
mod euler;
mod pndm;

/// The scheduler classes shoal implements.
pub const SUPPORTED: &[&str] = &[
    "PNDMScheduler",
    "DDIMScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
];

/// Short names accepted by `--scheduler`.
pub fn class_for(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "pndm" | "pndmscheduler" => "PNDMScheduler",
        "ddim" | "ddimscheduler" => "DDIMScheduler",
        "euler" | "eulerdiscretescheduler" => "EulerDiscreteScheduler",
        "euler-a" | "euler_a" | "euler-ancestral" | "eulerancestraldiscretescheduler" => {
            "EulerAncestralDiscreteScheduler"
        }
        "dpm++2m" | "dpmpp2m" | "dpm-solver++" | "dpmsolvermultistepscheduler" => {
            "DPMSolverMultistepScheduler"
        }
        _ => return None,
    })
}

/// A scheduler class, parsed once from its name; every dispatch matches on it
/// exhaustively, so a new class cannot fall into another's arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `PNDMScheduler` (PLMS steps).
    Pndm,
    /// `DDIMScheduler`.
    Ddim,
    /// `EulerDiscreteScheduler`.
    Euler,
    /// `EulerAncestralDiscreteScheduler`.
    EulerAncestral,
    /// `DPMSolverMultistepScheduler` (DPM-Solver++ 2M).
    DpmSolver,
}

impl Kind {
    /// The kind of a diffusers class name, `None` for a class shoal does not implement.
    pub fn from_class(class: &str) -> Option<Kind> {
        Some(match class {
            "PNDMScheduler" => Kind::Pndm,
            "DDIMScheduler" => Kind::Ddim,
            "EulerDiscreteScheduler" => Kind::Euler,
            "EulerAncestralDiscreteScheduler" => Kind::EulerAncestral,
            "DPMSolverMultistepScheduler" => Kind::DpmSolver,
            _ => return None,
        })
    }
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// The noise.
    Epsilon,
    /// The velocity (SD 2.x 768).
    V,
}

/// The shared part of every scheduler config.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// The class.
    pub class: String,
    /// The class, parsed.
    pub kind: Kind,
    /// Training steps.
    pub num_train_timesteps: usize,
    /// First beta.
    pub beta_start: f64,
    /// Last beta.
    pub beta_end: f64,
    /// `linear`, `scaled_linear` or `squaredcos_cap_v2`.
    pub beta_schedule: String,
    /// Epsilon or v.
    pub prediction: Prediction,
    /// `leading`, `trailing` or `linspace`.
    pub timestep_spacing: String,
    /// Added to leading timesteps.
    pub steps_offset: usize,
    /// DDIM: clip the predicted x0.
    pub clip_sample: bool,
    /// DDIM: the clip range.
    pub clip_sample_range: f64,
    /// DDIM / PNDM: the final alpha is 1 rather than `alphas_cumprod[0]`.
    pub set_alpha_to_one: bool,
    /// PNDM: PLMS only (`true`, as SD ships), or Runge-Kutta warm-up steps first
    /// (`false`, diffusers' default for `PNDMScheduler()`).
    pub skip_prk_steps: bool,
}

fn get_f(m: &Map<String, Value>, k: &str, d: f64) -> f64 {
    m.get(k).and_then(crate::config::json_f64).unwrap_or(d)
}
fn get_b(m: &Map<String, Value>, k: &str, d: bool) -> bool {
    m.get(k).and_then(Value::as_bool).unwrap_or(d)
}
fn get_s(m: &Map<String, Value>, k: &str, d: &str) -> String {
    m.get(k).and_then(Value::as_str).unwrap_or(d).to_string()
}

impl SchedulerConfig {
    /// Reads a `scheduler_config.json` map as class `class` (the file's own
    /// `_class_name` unless overridden); unsupported settings are errors.
    pub fn from_map(m: &Map<String, Value>, class: Option<&str>, path: &std::path::Path) -> Result<Self> {
        let bad = |field: &str, detail: String| Error::Config {
            path: path.to_path_buf(),
            field: field.into(),
            detail,
        };
        let class = match class {
            Some(c) => c.to_string(),
            None => get_s(m, "_class_name", ""),
        };
        let Some(kind) = Kind::from_class(&class) else {
            return Err(bad(
                "_class_name",
                format!("{class:?} is not supported; supported: {}", SUPPORTED.join(", ")),
            ));
        };
        let default_spacing = match kind {
            Kind::Pndm | Kind::Ddim => "leading",
            Kind::Euler | Kind::EulerAncestral | Kind::DpmSolver => "linspace",
        };
        let prediction = match get_s(m, "prediction_type", "epsilon").as_str() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::V,
            other => {
                return Err(bad(
                    "prediction_type",
                    format!("{other:?}; supported: epsilon, v_prediction"),
                ));
            }
        };
        let c = SchedulerConfig {
            num_train_timesteps: m
                .get("num_train_timesteps")
                .and_then(Value::as_u64)
                .unwrap_or(1000) as usize,
            beta_start: get_f(m, "beta_start", 0.0001),
            beta_end: get_f(m, "beta_end", 0.02),
            beta_schedule: get_s(m, "beta_schedule", "linear"),
            prediction,
            timestep_spacing: get_s(m, "timestep_spacing", default_spacing),
            steps_offset: m.get("steps_offset").and_then(Value::as_u64).unwrap_or(0) as usize,
            clip_sample: get_b(m, "clip_sample", kind == Kind::Ddim),
            clip_sample_range: get_f(m, "clip_sample_range", 1.0),
            set_alpha_to_one: get_b(m, "set_alpha_to_one", kind == Kind::Ddim),
            skip_prk_steps: get_b(m, "skip_prk_steps", false),
            class,
            kind,
        };
        if !["linear", "scaled_linear", "squaredcos_cap_v2"].contains(&c.beta_schedule.as_str()) {
            return Err(bad(
                "beta_schedule",
                format!(
                    "{:?}; supported: linear, scaled_linear, squaredcos_cap_v2",
                    c.beta_schedule
                ),
            ));
        }
        if !["leading", "trailing", "linspace"].contains(&c.timestep_spacing.as_str()) {
            return Err(bad(
                "timestep_spacing",
                format!("{:?}; supported: leading, trailing, linspace", c.timestep_spacing),
            ));
        }
        if c.num_train_timesteps < 2 {
            return Err(bad("num_train_timesteps", "must be at least 2".into()));
        }
        for (k, ok) in [
            ("trained_betas", m.get("trained_betas").is_none_or(Value::is_null)),
            ("thresholding", !get_b(m, "thresholding", false)),
            (
                "rescale_betas_zero_snr",
                !get_b(m, "rescale_betas_zero_snr", false),
            ),
            ("use_karras_sigmas", !get_b(m, "use_karras_sigmas", false)),
            (
                "use_exponential_sigmas",
                !get_b(m, "use_exponential_sigmas", false),
            ),
            ("use_beta_sigmas", !get_b(m, "use_beta_sigmas", false)),
        ] {
            if !ok {
                return Err(bad(k, "is not supported by shoal's schedulers".into()));
            }
        }
        match c.kind {
            Kind::Euler if get_s(m, "interpolation_type", "linear") != "linear" => {
                return Err(bad("interpolation_type", "only linear is supported".into()));
            }
            Kind::DpmSolver => {
                for (k, want, d) in [
                    ("algorithm_type", "dpmsolver++", "dpmsolver++"),
                    ("solver_type", "midpoint", "midpoint"),
                    ("final_sigmas_type", "zero", "zero"),
                ] {
                    if get_s(m, k, d) != want {
                        return Err(bad(k, format!("only {want} is supported")));
                    }
                }
                if m.get("solver_order").and_then(Value::as_u64).unwrap_or(2) != 2 {
                    return Err(bad("solver_order", "only 2 is supported".into()));
                }
                if !get_b(m, "lower_order_final", true) || get_b(m, "euler_at_final", false) {
                    return Err(bad(
                        "lower_order_final",
                        "only lower_order_final: true, euler_at_final: false".into(),
                    ));
                }
            }
            Kind::Pndm | Kind::Ddim | Kind::Euler | Kind::EulerAncestral => {}
        }
        Ok(c)
    }

    /// `alphas_cumprod` for the training schedule.
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        let t = self.num_train_timesteps;
        let betas: Vec<f64> = match self.beta_schedule.as_str() {
            "scaled_linear" => linspace(self.beta_start.sqrt(), self.beta_end.sqrt(), t)
                .iter()
                .map(|b| b * b)
                .collect(),
            "squaredcos_cap_v2" => {
                let ab = |x: f64| ((x + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
                (0..t)
                    .map(|i| (1.0 - ab((i + 1) as f64 / t as f64) / ab(i as f64 / t as f64)).min(0.999))
                    .collect()
            }
            _ => linspace(self.beta_start, self.beta_end, t),
        };
        let mut acc = 1.0;
        betas
            .iter()
            .map(|b| {
                // diffusers keeps betas and their cumulative product in f32.
                acc = ((acc * (1.0 - b)) as f32) as f64;
                acc
            })
            .collect()
    }
}

fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    (0..n)
        .map(|i| ((a + (b - a) * i as f64 / (n - 1) as f64) as f32) as f64)
        .collect()
}

/// numpy's round-half-to-even.
fn round_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

/// The spaced timesteps for `n` inference steps, descending. DDIM rounds
/// `linspace` timesteps to integers; Euler keeps them fractional.
fn spaced(c: &SchedulerConfig, n: usize, round_linspace: bool) -> Vec<f64> {
    let t = c.num_train_timesteps;
    match c.timestep_spacing.as_str() {
        "linspace" => {
            let step = (t - 1) as f64 / (n.max(2) - 1) as f64;
            (0..n)
                .rev()
                .map(|i| if n == 1 { 0.0 } else { i as f64 * step })
                .map(|x| {
                    if round_linspace {
                        round_even(x)
                    } else {
                        (x as f32) as f64
                    }
                })
                .collect()
        }
        "trailing" => {
            let ratio = t as f64 / n as f64;
            let mut v = Vec::new();
            let mut x = t as f64;
            while x > 0.0 && v.len() < n {
                v.push(round_even(x) - 1.0);
                x -= ratio;
            }
            v
        }
        _ => {
            let ratio = t / n;
            (0..n)
                .rev()
                .map(|i| (i * ratio + c.steps_offset) as f64)
                .collect()
        }
    }
}

/// PNDM's timesteps (diffusers `PNDMScheduler.set_timesteps`): the Runge-Kutta
/// warm-up's (empty with `skip_prk_steps`) and the PLMS ones, both descending.
fn pndm_timesteps(cfg: &SchedulerConfig, steps: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let t = cfg.num_train_timesteps;
    let asc: Vec<f64> = match cfg.timestep_spacing.as_str() {
        "linspace" => (0..steps)
            .map(|i| {
                let x = if steps == 1 {
                    0.0
                } else {
                    (t - 1) as f64 * i as f64 / (steps - 1) as f64
                };
                round_even(x)
            })
            .collect(),
        "trailing" => {
            let ratio = t as f64 / steps as f64;
            let n = (t as f64 / ratio).ceil() as usize;
            let mut v: Vec<f64> = (0..n)
                .map(|i| round_even(t as f64 - i as f64 * ratio) - 1.0)
                .collect();
            v.reverse();
            v
        }
        _ => (0..steps)
            .map(|i| (i * (t / steps) + cfg.steps_offset) as f64)
            .collect(),
    };
    let k = asc.len();
    if cfg.skip_prk_steps {
        // PLMS: [:-1] + [-2] + [-1], reversed (one timestep is run twice).
        let mut plms = asc[..k.saturating_sub(1)].to_vec();
        if k >= 2 {
            plms.push(asc[k - 2]);
        }
        plms.extend(asc.last());
        plms.reverse();
        return Ok((Vec::new(), plms));
    }
    if k < 4 {
        return Err(Error::invalid(
            "steps",
            steps,
            "PNDM with Runge-Kutta warm-up steps (skip_prk_steps: false) needs at least 4 steps".to_string(),
        ));
    }
    // The last four timesteps, each followed by its half step, drop the final
    // one, every entry twice, drop the first and the last: 12 timesteps.
    let half = (t / steps / 2) as f64;
    let pairs: Vec<f64> = asc[k - 4..].iter().flat_map(|&x| [x, x + half]).collect();
    let twice: Vec<f64> = pairs[..pairs.len() - 1].iter().flat_map(|&x| [x, x]).collect();
    let mut prk = twice[1..twice.len() - 1].to_vec();
    prk.reverse();
    let mut plms = asc[..k - 3].to_vec();
    plms.reverse();
    Ok((prk, plms))
}

/// A scheduler in the middle of a run: timesteps, and the state the
/// multistep methods carry between steps.
#[derive(Debug, Clone)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    ac: Vec<f64>,
    n: usize,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    init_sigma: f64,
    // PNDM
    ets: Vec<Tensor>,
    counter: usize,
    cur_sample: Option<Tensor>,
    /// The Runge-Kutta warm-up's timesteps (empty with `skip_prk_steps`).
    prk_timesteps: Vec<f64>,
    /// The Runge-Kutta sum of the model outputs so far in this warm-up step.
    cur_model_output: Option<Tensor>,
    // DPM-Solver++
    outputs: Vec<Tensor>,
    lower_order_nums: usize,
}

fn interp(x: f64, table: &[f64]) -> f64 {
    let i = x.floor().clamp(0.0, (table.len() - 1) as f64) as usize;
    let j = (i + 1).min(table.len() - 1);
    let f = x - i as f64;
    table[i] * (1.0 - f) + table[j] * f
}

impl Scheduler {
    /// Prepares `steps` inference steps.
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        if steps == 0 || steps > cfg.num_train_timesteps {
            return Err(Error::invalid(
                "steps",
                steps,
                format!(
                    "must be between 1 and num_train_timesteps ({})",
                    cfg.num_train_timesteps
                ),
            ));
        }
        let ac = cfg.alphas_cumprod();
        let t = cfg.num_train_timesteps;
        let mut sigmas = Vec::new();
        let mut init_sigma = 1.0;
        let mut prk_timesteps = Vec::new();
        let timesteps = match cfg.kind {
            Kind::Pndm => {
                let (prk, plms) = pndm_timesteps(cfg, steps)?;
                prk_timesteps = prk;
                [prk_timesteps.clone(), plms].concat()
            }
            Kind::DpmSolver => {
                let ts: Vec<f64> = match cfg.timestep_spacing.as_str() {
                    "linspace" => linspace(0.0, (t - 1) as f64, steps + 1)
                        .into_iter()
                        .map(round_even)
                        .rev()
                        .take(steps)
                        .collect(),
                    "leading" => {
                        let ratio = t / (steps + 1);
                        (0..=steps)
                            .rev()
                            .take(steps)
                            .map(|i| (i * ratio + cfg.steps_offset) as f64)
                            .collect()
                    }
                    _ => spaced(cfg, steps, true),
                };
                let full: Vec<f64> = ac.iter().map(|a| ((1.0 - a) / a).sqrt()).collect();
                sigmas = ts.iter().map(|&x| interp(x, &full)).collect();
                sigmas.push(0.0);
                ts
            }
            Kind::Euler | Kind::EulerAncestral => {
                let ts = spaced(cfg, steps, false);
                let full: Vec<f64> = ac.iter().map(|a| ((1.0 - a) / a).sqrt()).collect();
                sigmas = ts.iter().map(|&x| (interp(x, &full) as f32) as f64).collect();
                sigmas.push(0.0);
                let max = sigmas.iter().cloned().fold(0.0, f64::max);
                init_sigma = if ["linspace", "trailing"].contains(&cfg.timestep_spacing.as_str()) {
                    max
                } else {
                    (max * max + 1.0).sqrt()
                };
                ts
            }
            Kind::Ddim => spaced(cfg, steps, true),
        };
        Ok(Scheduler {
            cfg: cfg.clone(),
            ac,
            n: steps,
            timesteps,
            sigmas,
            init_sigma,
            ets: Vec::new(),
            counter: 0,
            cur_sample: None,
            prk_timesteps,
            cur_model_output: None,
            outputs: Vec::new(),
            lower_order_nums: 0,
        })
    }

    /// The timesteps the UNet sees, one per model call.
    pub fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// Initial latents are `noise × init_noise_sigma`.
    pub fn init_noise_sigma(&self) -> f64 {
        self.init_sigma
    }

    /// Whether `step` takes fresh noise (ancestral sampling).
    pub fn needs_noise(&self) -> bool {
        self.cfg.kind == Kind::EulerAncestral
    }

    /// `scale_model_input` for step `i`.
    pub fn scale_model_input(&self, x: &Tensor, i: usize) -> Result<Tensor> {
        self.check_step(i)?;
        match self.cfg.kind {
            Kind::Euler | Kind::EulerAncestral => {
                let s = self.sigmas[i];
                Ok((x / (s * s + 1.0).sqrt())?)
            }
            Kind::Pndm | Kind::Ddim | Kind::DpmSolver => Ok(x.clone()),
        }
    }

    /// `i` must index a model call of this schedule (a step past the end is an error, not a panic).
    fn check_step(&self, i: usize) -> Result<()> {
        if i < self.timesteps.len() {
            Ok(())
        } else {
            Err(Error::invalid(
                "step",
                i,
                format!("the schedule has {} model calls", self.timesteps.len()),
            ))
        }
    }

    fn final_alpha(&self) -> f64 {
        if self.cfg.set_alpha_to_one {
            1.0
        } else {
            self.ac[0]
        }
    }

    fn alpha_at(&self, t: f64) -> f64 {
        if t >= 0.0 {
            self.ac[t as usize]
        } else {
            self.final_alpha()
        }
    }

    /// One denoising step: the sample at step `i + 1` from the model output at step `i`.
    pub fn step(&mut self, out: &Tensor, i: usize, x: &Tensor, noise: Option<&Tensor>) -> Result<Tensor> {
        self.check_step(i)?;
        let t = self.timesteps[i];
        let ratio = (self.cfg.num_train_timesteps / self.n) as f64;
        match self.cfg.kind {
            Kind::Ddim => self.step_ddim(out, t, ratio, x),
            Kind::Pndm if self.counter < self.prk_timesteps.len() => self.step_prk(out, t, x),
            Kind::Pndm => self.step_plms(out, t, ratio, x),
            Kind::Euler | Kind::EulerAncestral => self.step_euler(out, i, x, noise),
            Kind::DpmSolver => self.step_dpm(out, i, x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str, class: Option<&str>) -> SchedulerConfig {
        let v: Value = serde_json::from_str(json).unwrap();
        SchedulerConfig::from_map(v.as_object().unwrap(), class, std::path::Path::new("s.json")).unwrap()
    }

    const SD15: &str = r#"{"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "beta_start": 0.00085, "clip_sample": false, "num_train_timesteps": 1000, "set_alpha_to_one": false,
        "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null}"#;

    #[test]
    fn pndm_plms_timesteps_repeat_one() {
        let s = Scheduler::new(&cfg(SD15, None), 5).unwrap();
        // diffusers: PNDMScheduler.from_config(sd15).set_timesteps(5) → [801, 601, 601, 401, 201, 1]
        assert_eq!(s.timesteps(), &[801.0, 601.0, 601.0, 401.0, 201.0, 1.0]);
    }

    #[test]
    fn pndm_prk_timesteps_are_diffusers() {
        let c = cfg(SD15, None);
        let c = SchedulerConfig {
            skip_prk_steps: false,
            ..c
        };
        let s = Scheduler::new(&c, 5).unwrap();
        // numpy, as in diffusers' set_timesteps: leading, offset 1, 5 steps.
        let want = [
            801., 701., 701., 601., 601., 501., 501., 401., 401., 301., 301., 201., 201., 1.,
        ];
        assert_eq!(s.timesteps(), &want);
        for n in 1..4 {
            let e = Scheduler::new(&c, n).unwrap_err().to_string();
            assert!(e.contains("at least 4 steps"), "{e}");
        }
        let trailing = SchedulerConfig {
            timestep_spacing: "trailing".into(),
            ..c
        };
        // The half step after the last timestep is dropped: nothing past 999.
        let s = Scheduler::new(&trailing, 10).unwrap();
        assert_eq!(s.timesteps().len(), 19);
        assert_eq!(s.timesteps()[..3], [999., 949., 949.]);
        assert_eq!(s.timesteps()[12..], [699., 599., 499., 399., 299., 199., 99.]);
    }

    #[test]
    fn ddim_leading_with_offset() {
        let s = Scheduler::new(&cfg(SD15, Some("DDIMScheduler")), 4).unwrap();
        assert_eq!(s.timesteps(), &[751.0, 501.0, 251.0, 1.0]);
    }

    #[test]
    fn unknown_classes_list_the_supported_ones() {
        let v: Value = serde_json::from_str(r#"{"_class_name": "LMSDiscreteScheduler"}"#).unwrap();
        let e = SchedulerConfig::from_map(v.as_object().unwrap(), None, std::path::Path::new("s.json"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("LMSDiscreteScheduler") && e.contains("DDIMScheduler"),
            "{e}"
        );
    }

    #[test]
    fn zero_steps_are_rejected() {
        assert!(Scheduler::new(&cfg(SD15, None), 0).is_err());
    }

    #[test]
    fn a_step_past_the_schedule_is_an_error_for_every_class() {
        let x = Tensor::zeros((1, 4, 2, 2), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        for class in SUPPORTED {
            let mut s = Scheduler::new(&cfg(SD15, Some(class)), 3).unwrap();
            let n = s.timesteps().len();
            let e = s.step(&x, n, &x, Some(&x)).unwrap_err().to_string();
            assert!(e.contains("step") && e.contains(&n.to_string()), "{class}: {e}");
            assert!(s.scale_model_input(&x, n).is_err(), "{class}");
        }
    }

    #[test]
    fn every_supported_class_has_a_kind() {
        for class in SUPPORTED {
            assert!(Kind::from_class(class).is_some(), "{class}");
        }
        assert_eq!(Kind::from_class("LMSDiscreteScheduler"), None);
        assert_eq!(
            cfg(SD15, Some("EulerAncestralDiscreteScheduler")).kind,
            Kind::EulerAncestral
        );
    }
}
