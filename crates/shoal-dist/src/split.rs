//! `split_between_processes`, with Accelerate's semantics and explicit indices.
//!
//! Source: `huggingface/accelerate src/accelerate/state.py` L426-511
//! (`PartialState.split_between_processes`). Contiguous blocks; the first
//! `len % n` ranks get one item more; ranks past the end get nothing. With
//! padding every rank gets `ceil(len / n)` items, filled by repeating the last
//! item of the whole input. Unlike Accelerate, every result carries the global
//! index of each item and how many items are real, so a caller never guesses
//! which ones to drop, and nothing is mutated.

use std::collections::BTreeMap;
use std::ops::Range;

use candle_core::{IndexOp, Tensor};

use crate::error::{Error, Result};

/// The contiguous block of `len` items that `rank` of `world` owns.
///
/// ```
/// use shoal_dist::split_range;
/// assert_eq!(split_range(3, 0, 2), 0..2);
/// assert_eq!(split_range(3, 1, 2), 2..3);
/// assert_eq!(split_range(2, 3, 4), 2..2); // surplus ranks get nothing
/// ```
pub fn split_range(len: usize, rank: usize, world: usize) -> Range<usize> {
    let world = world.max(1);
    let (per, extra) = (len / world, len % world);
    let start = (rank * per + rank.min(extra)).min(len);
    let end = (start + per + usize::from(rank < extra)).min(len);
    start..end
}

/// The number of items each rank holds after padding: `ceil(len / world)`.
pub fn padded_len(len: usize, world: usize) -> usize {
    len.div_ceil(world.max(1))
}

/// The global indices of the items `rank` holds; padding repeats `len - 1`.
pub fn split_indices(len: usize, rank: usize, world: usize, apply_padding: bool) -> Vec<usize> {
    let mut idx: Vec<usize> = split_range(len, rank, world).collect();
    if apply_padding && len > 0 {
        idx.resize(padded_len(len, world), len - 1);
    }
    idx
}

/// One rank's share of a split.
#[derive(Debug, Clone, PartialEq)]
pub struct Split<T> {
    /// The items, padding included.
    pub items: Vec<T>,
    /// The global index of each item in the input; padding items repeat the
    /// index of the input's last item.
    pub indices: Vec<usize>,
    /// How many leading items are real (the rest are padding).
    pub real_len: usize,
}

impl<T> Split<T> {
    /// The real items with their global indices, padding left out.
    pub fn real(&self) -> impl Iterator<Item = (usize, &T)> {
        self.indices.iter().copied().zip(&self.items).take(self.real_len)
    }

    /// Whether this rank got nothing at all.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The number of items, padding included.
    pub fn len(&self) -> usize {
        self.items.len()
    }
}

impl<K: Ord, V> Split<(K, V)> {
    /// The real entries of a split map, as a map.
    pub fn into_map(self) -> BTreeMap<K, V> {
        let real = self.real_len;
        self.items.into_iter().take(real).collect()
    }
}

/// Splits a slice for `rank` of `world`.
///
/// ```
/// use shoal_dist::split_between_processes;
/// let prompts = ["a dog", "a cat", "a chicken"];
/// let s = split_between_processes(&prompts[..], 1, 2, true);
/// assert_eq!(s.items, ["a chicken", "a chicken"]);
/// assert_eq!(s.indices, [2, 2]);
/// assert_eq!(s.real_len, 1);
/// ```
pub fn split_between_processes<T: Clone>(
    items: &[T],
    rank: usize,
    world: usize,
    apply_padding: bool,
) -> Split<T> {
    let indices = split_indices(items.len(), rank, world, apply_padding);
    let real_len = split_range(items.len(), rank, world).len();
    Split {
        items: indices.iter().map(|&i| items[i].clone()).collect(),
        indices,
        real_len,
    }
}

/// A tensor's share of a split along dim 0.
#[derive(Debug, Clone)]
pub struct TensorSplit {
    /// The rows, padding included (padding repeats the input's last row).
    /// `None` when this rank got no rows.
    pub tensor: Option<Tensor>,
    /// The global row index of each row.
    pub indices: Vec<usize>,
    /// How many leading rows are real.
    pub real_len: usize,
}

/// Something `split_between_processes` can split: slices and vectors, ordered
/// maps (by key order), candle tensors (along dim 0) and strings (one item).
pub trait Splittable {
    /// What one rank receives.
    type Output;
    /// The share of `rank` of `world`.
    fn split_for(&self, rank: usize, world: usize, apply_padding: bool) -> Result<Self::Output>;
}

impl<T: Clone> Splittable for [T] {
    type Output = Split<T>;
    fn split_for(&self, rank: usize, world: usize, pad: bool) -> Result<Split<T>> {
        Ok(split_between_processes(self, rank, world, pad))
    }
}

impl<T: Clone> Splittable for Vec<T> {
    type Output = Split<T>;
    fn split_for(&self, rank: usize, world: usize, pad: bool) -> Result<Split<T>> {
        Ok(split_between_processes(self, rank, world, pad))
    }
}

impl<T: Clone, const N: usize> Splittable for [T; N] {
    type Output = Split<T>;
    fn split_for(&self, rank: usize, world: usize, pad: bool) -> Result<Split<T>> {
        Ok(split_between_processes(self, rank, world, pad))
    }
}

/// A string is one item, not a sequence of characters (Accelerate would hand
/// it whole to every rank; shoal gives it to rank 0, as any one-item list).
impl Splittable for str {
    type Output = Split<String>;
    fn split_for(&self, rank: usize, world: usize, pad: bool) -> Result<Split<String>> {
        Ok(split_between_processes(&[self.to_string()], rank, world, pad))
    }
}

impl Splittable for String {
    type Output = Split<String>;
    fn split_for(&self, rank: usize, world: usize, pad: bool) -> Result<Split<String>> {
        self.as_str().split_for(rank, world, pad)
    }
}

impl<K: Ord + Clone, V: Clone> Splittable for BTreeMap<K, V> {
    type Output = Split<(K, V)>;
    fn split_for(&self, rank: usize, world: usize, pad: bool) -> Result<Split<(K, V)>> {
        let entries: Vec<(K, V)> = self.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Ok(split_between_processes(&entries, rank, world, pad))
    }
}

impl Splittable for Tensor {
    type Output = TensorSplit;
    fn split_for(&self, rank: usize, world: usize, pad: bool) -> Result<TensorSplit> {
        let len = *self.dims().first().ok_or_else(|| Error::InvalidArgument {
            field: "tensor",
            value: format!("{:?}", self.shape()),
            detail: "a scalar has no dim 0 to split along".into(),
        })?;
        let range = split_range(len, rank, world);
        let indices = split_indices(len, rank, world, pad);
        let real_len = range.len();
        if indices.is_empty() {
            return Ok(TensorSplit {
                tensor: None,
                indices,
                real_len,
            });
        }
        let mut parts = Vec::with_capacity(2);
        if !range.is_empty() {
            parts.push(self.i(range.clone())?);
        }
        let pad_rows = indices.len() - real_len;
        if pad_rows > 0 {
            let last = self.i(len - 1..len)?;
            let mut reps = vec![1usize; self.rank()];
            reps[0] = pad_rows;
            parts.push(last.repeat(reps)?);
        }
        let tensor = if parts.len() == 1 {
            parts.swap_remove(0)
        } else {
            Tensor::cat(&parts, 0)?
        };
        Ok(TensorSplit {
            tensor: Some(tensor),
            indices,
            real_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seed_example_with_padding() {
        let p = vec!["a dog", "a cat", "a chicken"];
        let r0 = p.split_for(0, 2, true).unwrap();
        let r1 = p.split_for(1, 2, true).unwrap();
        assert_eq!(r0.items, ["a dog", "a cat"]);
        assert_eq!(r1.items, ["a chicken", "a chicken"]);
        assert_eq!((r0.real_len, r1.real_len), (2, 1));
        assert_eq!(
            r1.real().map(|(i, s)| (i, *s)).collect::<Vec<_>>(),
            [(2, "a chicken")]
        );
    }

    #[test]
    fn surplus_ranks_get_nothing_and_padding_fills_them() {
        let p = vec!["a", "b"];
        assert!(p.split_for(3, 4, false).unwrap().is_empty());
        let padded = p.split_for(3, 4, true).unwrap();
        assert_eq!(padded.items, ["b"]);
        assert_eq!(padded.real_len, 0);
    }

    #[test]
    fn a_string_is_one_item() {
        let s = "a red fox";
        assert_eq!(s.split_for(0, 2, false).unwrap().items, ["a red fox"]);
        assert!(s.split_for(1, 2, false).unwrap().is_empty());
    }

    #[test]
    fn maps_split_by_key_order() {
        let m: BTreeMap<_, _> = [("c", 3), ("a", 1), ("b", 2)].into_iter().collect();
        let r0 = m.split_for(0, 2, false).unwrap().into_map();
        let r1 = m.split_for(1, 2, false).unwrap().into_map();
        assert_eq!(r0.keys().copied().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(r1.keys().copied().collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn tensors_split_along_dim0_with_padding() {
        let t = Tensor::arange(0f32, 10., &candle_core::Device::Cpu)
            .unwrap()
            .reshape((5, 2))
            .unwrap();
        let r1 = t.split_for(1, 2, true).unwrap();
        let v: Vec<Vec<f32>> = r1.tensor.unwrap().to_vec2().unwrap();
        assert_eq!(v, [[6., 7.], [8., 9.], [8., 9.]]);
        assert_eq!(r1.indices, [3, 4, 4]);
        assert_eq!(r1.real_len, 2);
        let r3 = t.split_for(3, 4, true).unwrap();
        assert_eq!(r3.real_len, 1);
        let r5 = t.split_for(5, 6, false).unwrap();
        assert!(r5.tensor.is_none());
        let s = Tensor::new(1f32, &candle_core::Device::Cpu).unwrap();
        assert!(s.split_for(0, 2, false).is_err());
    }

    proptest! {
        #[test]
        fn every_item_once_in_order_sizes_within_one(len in 0usize..200, world in 1usize..17) {
            let items: Vec<usize> = (0..len).collect();
            let mut seen = Vec::new();
            let mut sizes = Vec::new();
            for rank in 0..world {
                let s = split_between_processes(&items, rank, world, false);
                prop_assert_eq!(s.real_len, s.items.len());
                prop_assert_eq!(&s.items, &s.indices);
                sizes.push(s.items.len());
                seen.extend(s.items);
            }
            prop_assert_eq!(seen, items);
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            prop_assert!(hi - lo <= 1);
            // The larger blocks come first.
            prop_assert!(sizes.windows(2).all(|w| w[0] >= w[1]));
        }

        #[test]
        fn padding_gives_everyone_ceil_and_repeats_the_last(len in 1usize..200, world in 1usize..17) {
            let items: Vec<usize> = (0..len).collect();
            let mut real = Vec::new();
            for rank in 0..world {
                let s = split_between_processes(&items, rank, world, true);
                prop_assert_eq!(s.items.len(), len.div_ceil(world));
                prop_assert!(s.items[s.real_len..].iter().all(|&x| x == len - 1));
                real.extend(s.real().map(|(i, &x)| { assert_eq!(i, x); x }));
            }
            prop_assert_eq!(real, items);
        }
    }
}
