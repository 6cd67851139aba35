//! Device maps: which device each pipeline component lives on.
//!
//! The analog of diffusers' `device_map="balanced"` with accelerate's
//! `max_memory` (`diffusers src/diffusers/pipelines/pipeline_loading_utils.py`
//! `_assign_components_to_devices`, `shared/notes/semantics.md` §10), as a pure
//! function: component sizes and device capacities in, a [`Plan`] or a
//! [`PlanError`] out. It never touches a device.
//!
//! Unlike diffusers: when a component does not fit the GPU whose turn it is,
//! the other GPUs are tried before the CPU; every component that lands on the
//! CPU is recorded; CPU placement happens only when allowed (`cpu` in
//! `max_memory`; with no GPU at all, everything then goes to the host; an
//! explicit map may name `cpu` without a budget); an explicit map is checked
//! against the model's components before any device; and when nothing fits,
//! the error gives the shortfall on every device, weights and activation
//! allowance apart.

mod memory;

use std::collections::BTreeMap;

pub use memory::{format_bytes, parse_bytes, parse_max_memory};

/// A device in a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Dev {
    /// A GPU by index (as the user numbers them: within `CUDA_VISIBLE_DEVICES`).
    Gpu(usize),
    /// The host.
    Cpu,
}

impl std::fmt::Display for Dev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dev::Gpu(i) => write!(f, "{i}"),
            Dev::Cpu => write!(f, "cpu"),
        }
    }
}

impl std::str::FromStr for Dev {
    type Err = PlanError;
    fn from_str(s: &str) -> Result<Self, PlanError> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("cpu") {
            return Ok(Dev::Cpu);
        }
        let n = t.strip_prefix("cuda:").unwrap_or(t);
        n.parse()
            .map(Dev::Gpu)
            .map_err(|_| PlanError::BadDevice(s.to_string()))
    }
}

/// One component to place, with the bytes it needs (weights + activations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// Its name (`unet`, `vae`, `text_encoder`, ...).
    pub name: String,
    /// Weight bytes in the load dtype.
    pub weights: u64,
    /// Activation allowance for the requested resolution and batch.
    pub activations: u64,
}

impl Component {
    /// What it needs in all.
    pub fn bytes(&self) -> u64 {
        self.weights + self.activations
    }
}

/// How to place components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// diffusers' order: largest first, GPUs in a 0,1,…,1,0 cycle.
    Balanced,
    /// Fill GPU 0, then 1, … in the components' order.
    Sequential,
    /// The user's map (`unet=1,vae=1,text_encoder=0`).
    Explicit(BTreeMap<String, Dev>),
}

impl std::str::FromStr for Strategy {
    type Err = PlanError;
    /// `balanced`, `sequential`, or `name=device,...`.
    fn from_str(s: &str) -> Result<Self, PlanError> {
        match s.trim() {
            "balanced" => Ok(Strategy::Balanced),
            "sequential" => Ok(Strategy::Sequential),
            other if other.contains('=') => {
                let mut m = BTreeMap::new();
                for part in other.split(',') {
                    let (k, v) = part
                        .split_once('=')
                        .ok_or_else(|| PlanError::BadMap(part.to_string()))?;
                    if m.insert(k.trim().to_string(), v.parse()?).is_some() {
                        return Err(PlanError::BadMap(format!("{} is mapped twice", k.trim())));
                    }
                }
                Ok(Strategy::Explicit(m))
            }
            other => Err(PlanError::BadMap(format!(
                "{other:?}: expected balanced, sequential, or an explicit map such as unet=1,vae=1,text_encoder=0"
            ))),
        }
    }
}

/// The result: a device per component and the totals per device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    /// Component → device (the `hf_device_map` analog).
    pub map: BTreeMap<String, Dev>,
    /// Bytes placed on each device.
    pub used: BTreeMap<Dev, u64>,
    /// Capacity of each device considered.
    pub capacity: BTreeMap<Dev, u64>,
    /// Components that fell back to the CPU, in placement order.
    pub on_cpu: Vec<String>,
}

/// Why no plan exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A component fits nowhere.
    #[error(
        "{component} needs {} ({} of weights + {} activation allowance for this size and batch), more than any \
         device allows ({}); {}",
        format_bytes(weights + activations), format_bytes(*weights), format_bytes(*activations),
        shortfalls(free), hint(*cpu_allowed)
    )]
    DoesNotFit {
        /// The component.
        component: String,
        /// Its weight bytes.
        weights: u64,
        /// Its activation allowance.
        activations: u64,
        /// Free bytes per device at that point.
        free: Vec<(Dev, u64)>,
        /// Whether CPU placement was allowed.
        cpu_allowed: bool,
    },
    /// An explicit map overfills a device.
    #[error(
        "device {device} would hold {} but allows {} (short by {}): {}",
        format_bytes(*need), format_bytes(*cap), format_bytes(need.saturating_sub(*cap)),
        components.iter().map(|c| format!("{} ({} of weights + {} activation allowance)", c.name,
            format_bytes(c.weights), format_bytes(c.activations))).collect::<Vec<_>>().join(", ")
    )]
    Overfull {
        /// The device.
        device: Dev,
        /// Bytes mapped to it.
        need: u64,
        /// Its capacity.
        cap: u64,
        /// The components mapped to it.
        components: Vec<Component>,
    },
    /// An explicit map names a component the model lacks.
    #[error("unknown component {name:?} in the device map; the model has {}", known.join(", "))]
    UnknownComponent {
        /// The name given.
        name: String,
        /// The model's components.
        known: Vec<String>,
    },
    /// An explicit map leaves a component out.
    #[error("the device map does not place {name:?}; give every component: {}", known.join(", "))]
    Unplaced {
        /// The component left out.
        name: String,
        /// The model's components.
        known: Vec<String>,
    },
    /// A device that is not available (not listed in max_memory, or absent).
    #[error("device {device} is not available; available: {}", if available.is_empty() { "none (no GPU is visible)".to_string() } else { available.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ") })]
    UnknownDevice {
        /// The device.
        device: Dev,
        /// The devices that are.
        available: Vec<Dev>,
    },
    /// A malformed device.
    #[error("invalid device {0:?}: expected a GPU index (0, cuda:1) or cpu")]
    BadDevice(String),
    /// A malformed map or strategy.
    #[error("invalid --device-map {0}")]
    BadMap(String),
    /// A malformed memory size.
    #[error("invalid memory size {value:?}: {detail}")]
    BadSize {
        /// The text.
        value: String,
        /// What is wrong.
        detail: String,
    },
    /// No GPU to place on.
    #[error("no GPU is available for a device map (max_memory lists none, or none is visible)")]
    NoGpu,
}

fn shortfalls(free: &[(Dev, u64)]) -> String {
    free.iter()
        .map(|(d, f)| format!("device {d}: {} free", format_bytes(*f)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn hint(cpu: bool) -> &'static str {
    if cpu {
        "raise max_memory, or use more devices"
    } else {
        "raise max_memory, use more devices, or allow CPU placement (list cpu in --max-memory)"
    }
}

/// Places `components` on `capacity` (GPUs, and `Dev::Cpu` if CPU placement is allowed).
pub fn plan(
    components: &[Component],
    capacity: &[(Dev, u64)],
    strategy: &Strategy,
) -> Result<Plan, PlanError> {
    let caps: BTreeMap<Dev, u64> = capacity.iter().copied().collect();
    let cpu_allowed = caps.contains_key(&Dev::Cpu);
    // GPUs by capacity, largest first (ties by index), as accelerate sorts them.
    let mut gpus: Vec<Dev> = caps.keys().copied().filter(|d| *d != Dev::Cpu).collect();
    gpus.sort_by_key(|d| (std::cmp::Reverse(caps[d]), *d));
    // An explicit map is checked against the model first; a strategy needs a
    // GPU, or a CPU budget to put everything on the host.
    if gpus.is_empty() && !cpu_allowed && !matches!(strategy, Strategy::Explicit(_)) {
        return Err(PlanError::NoGpu);
    }
    let mut free = caps.clone();
    let mut out = Plan {
        map: BTreeMap::new(),
        used: caps.keys().map(|d| (*d, 0)).collect(),
        capacity: caps.clone(),
        on_cpu: Vec::new(),
    };
    let place = |out: &mut Plan, free: &mut BTreeMap<Dev, u64>, c: &Component, d: Dev| {
        let f = free.entry(d).or_default();
        *f = f.saturating_sub(c.bytes());
        *out.used.entry(d).or_default() += c.bytes();
        out.map.insert(c.name.clone(), d);
        if d == Dev::Cpu {
            out.on_cpu.push(c.name.clone());
        }
    };
    let fits =
        |free: &BTreeMap<Dev, u64>, c: &Component, d: Dev| free.get(&d).is_some_and(|f| *f >= c.bytes());
    let nowhere = |free: &BTreeMap<Dev, u64>, c: &Component| PlanError::DoesNotFit {
        component: c.name.clone(),
        weights: c.weights,
        activations: c.activations,
        free: free.iter().map(|(d, f)| (*d, *f)).collect(),
        cpu_allowed,
    };
    match strategy {
        Strategy::Balanced => {
            let mut order: Vec<&Component> = components.iter().collect();
            order.sort_by_key(|c| std::cmp::Reverse(c.bytes()));
            let cycle: Vec<Dev> = gpus.iter().chain(gpus.iter().rev()).copied().collect();
            let mut turn = 0usize;
            for c in order {
                let choice = cycle.get(turn % cycle.len().max(1)).copied().and_then(|mine| {
                    std::iter::once(mine)
                        .chain(gpus.iter().copied().filter(|d| *d != mine))
                        .find(|d| fits(&free, c, *d))
                        .map(|d| (d, d == mine))
                });
                match choice {
                    Some((d, was_turn)) => {
                        place(&mut out, &mut free, c, d);
                        if was_turn {
                            turn += 1;
                        }
                    }
                    None if cpu_allowed && fits(&free, c, Dev::Cpu) => {
                        place(&mut out, &mut free, c, Dev::Cpu)
                    }
                    None => return Err(nowhere(&free, c)),
                }
            }
        }
        Strategy::Sequential => {
            let mut by_index = gpus.clone();
            by_index.sort();
            for c in components {
                match by_index.iter().copied().find(|d| fits(&free, c, *d)) {
                    Some(d) => place(&mut out, &mut free, c, d),
                    None if cpu_allowed && fits(&free, c, Dev::Cpu) => {
                        place(&mut out, &mut free, c, Dev::Cpu)
                    }
                    None => return Err(nowhere(&free, c)),
                }
            }
        }
        Strategy::Explicit(m) => {
            let known: Vec<String> = components.iter().map(|c| c.name.clone()).collect();
            if let Some(k) = m.keys().find(|k| !known.contains(k)) {
                return Err(PlanError::UnknownComponent {
                    name: k.clone(),
                    known,
                });
            }
            for c in components {
                let d = *m.get(&c.name).ok_or_else(|| PlanError::Unplaced {
                    name: c.name.clone(),
                    known: known.clone(),
                })?;
                // The host needs no budget when the map names it.
                if d != Dev::Cpu && !caps.contains_key(&d) {
                    return Err(PlanError::UnknownDevice {
                        device: d,
                        available: caps.keys().copied().collect(),
                    });
                }
                place(&mut out, &mut free, c, d);
            }
            for (d, used) in &out.used {
                let Some(&cap) = caps.get(d) else { continue };
                if *used > cap {
                    return Err(PlanError::Overfull {
                        device: *d,
                        need: *used,
                        cap,
                        components: components
                            .iter()
                            .filter(|c| out.map.get(&c.name) == Some(d))
                            .cloned()
                            .collect(),
                    });
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
