//! Deterministic random weights for `shoal make-model`.
//!
//! A `VarBuilder` backend that, instead of reading tensors, generates each one
//! from `(seed, tensor name)` and records it. Building a model through it
//! yields exactly the names and shapes the loader reads, so a generated model
//! always loads, in shoal and in diffusers (same state-dict keys). Values depend
//! on the name only, never on construction order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// The tensors generated so far, by name.
#[derive(Debug, Default, Clone)]
pub struct Generated(Arc<Mutex<BTreeMap<String, Tensor>>>);

impl Generated {
    /// Takes the tensors out.
    pub fn take(&self) -> BTreeMap<String, Tensor> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

struct Backend {
    seed: u64,
    store: DType,
    out: Generated,
}

/// FNV-1a, stable across platforms and releases (unlike `DefaultHasher`).
fn fnv(seed: u64, name: &str) -> u64 {
    let mut h = 0xcbf29ce484222325u64 ^ seed.wrapping_mul(0x9E3779B97F4A7C15);
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn generate(seed: u64, name: &str, shape: &Shape, init: Init) -> Vec<f32> {
    let n = shape.elem_count();
    let mut rng = ChaCha8Rng::seed_from_u64(fnv(seed, name));
    let dims = shape.dims();
    let fan_in = if dims.len() >= 2 {
        dims[1..].iter().product::<usize>()
    } else {
        dims.first().copied().unwrap_or(1)
    };
    match init {
        Init::Const(v) => vec![v as f32; n],
        Init::Uniform { lo, up } => (0..n).map(|_| rng.random_range(lo as f32..=up as f32)).collect(),
        Init::Randn { mean, stdev } => {
            // Embeddings ask for N(0, 1); keep activations of a random model tame.
            let std = if stdev >= 1.0 { 0.02 } else { stdev };
            (0..n)
                .map(|_| mean as f32 + std as f32 * rng.sample::<f32, _>(StandardNormal))
                .collect()
        }
        Init::Kaiming { .. } => {
            let std = (1.0 / fan_in.max(1) as f64).sqrt() as f32;
            (0..n)
                .map(|_| std * rng.sample::<f32, _>(StandardNormal))
                .collect()
        }
    }
}

impl SimpleBackend for Backend {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let mut map = self.out.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = map.get(name) {
            if t.shape() != &s {
                candle_core::bail!("tensor {name} requested with shapes {:?} and {s:?}", t.shape());
            }
            return t.to_dtype(dtype)?.to_device(dev);
        }
        // Stored in the target dtype, so the model under construction shares
        // the storage instead of holding a second (f32) copy.
        let t = Tensor::from_vec(generate(self.seed, name, &s, h), s, &Device::Cpu)?.to_dtype(self.store)?;
        map.insert(name.to_string(), t.clone());
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape for {name}")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        // Choose the current attention names (`to_q`) over the legacy ones.
        name.ends_with("to_q.weight") || self.out.0.lock().is_ok_and(|m| m.contains_key(name))
    }
}

/// A `VarBuilder` that generates weights in `dtype`, and the handle to collect them.
pub fn var_builder(seed: u64, dtype: DType) -> (VarBuilder<'static>, Generated) {
    let out = Generated::default();
    let vb = VarBuilder::from_backend(
        Box::new(Backend {
            seed,
            store: dtype,
            out: out.clone(),
        }),
        dtype,
        Device::Cpu,
    );
    (vb, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_depend_on_name_and_seed_only() {
        let s = Shape::from((3, 4));
        let init = Init::Kaiming {
            dist: candle_nn::init::NormalOrUniform::Normal,
            fan: candle_nn::init::FanInOut::FanIn,
            non_linearity: candle_nn::init::NonLinearity::Linear,
        };
        assert_eq!(
            generate(1, "a.weight", &s, init),
            generate(1, "a.weight", &s, init)
        );
        assert_ne!(
            generate(1, "a.weight", &s, init),
            generate(2, "a.weight", &s, init)
        );
        assert_ne!(
            generate(1, "a.weight", &s, init),
            generate(1, "b.weight", &s, init)
        );
    }
}
