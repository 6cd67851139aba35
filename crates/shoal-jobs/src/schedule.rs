//! Who makes which items.
//!
//! Pending items are cut into blocks: consecutive items with equal parameters,
//! at most `batch` long. Blocks, not items, are split between processes
//! (`--schedule static`, with `split_between_processes` semantics) or claimed
//! one at a time from a counter in the store (`--schedule dynamic`), so a
//! block's composition is the same at any world size.

use std::ops::Range;

use crate::items::WorkItem;

/// Cuts pending items into blocks of equal parameters, at most `batch` long.
pub fn blocks(items: &[&WorkItem], batch: usize) -> Vec<Range<usize>> {
    let batch = batch.max(1);
    let mut out: Vec<Range<usize>> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        match out.last_mut() {
            Some(r) if r.len() < batch && items[r.start].params == it.params => r.end = i + 1,
            _ => out.push(i..i + 1),
        }
    }
    out
}

/// The blocks of `rank` under the static schedule.
pub fn static_share(blocks: &[Range<usize>], rank: usize, world: usize) -> Vec<Range<usize>> {
    shoal_dist::split_between_processes(blocks, rank, world, false).items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::GenParams;
    use proptest::prelude::*;

    fn item(index: usize, steps: usize) -> WorkItem {
        WorkItem {
            index,
            prompt: "p".into(),
            negative_prompt: None,
            seed: 0,
            params: GenParams {
                steps,
                guidance: 1.0,
                height: 8,
                width: 8,
            },
        }
    }

    #[test]
    fn blocks_break_on_parameter_changes() {
        let items: Vec<_> = [1, 1, 1, 2, 2, 1]
            .iter()
            .enumerate()
            .map(|(i, s)| item(i, *s))
            .collect();
        let refs: Vec<&WorkItem> = items.iter().collect();
        assert_eq!(blocks(&refs, 2), [0..2, 2..3, 3..5, 5..6]);
    }

    proptest! {
        #[test]
        fn every_item_in_exactly_one_rank(n in 0usize..60, batch in 1usize..6, world in 1usize..9) {
            let items: Vec<_> = (0..n).map(|i| item(i, 1 + i / 7)).collect();
            let refs: Vec<&WorkItem> = items.iter().collect();
            let b = blocks(&refs, batch);
            let mut seen: Vec<usize> = (0..world).flat_map(|r| static_share(&b, r, world)).flatten().collect();
            seen.sort();
            prop_assert_eq!(seen, (0..n).collect::<Vec<_>>());
        }
    }
}
