//! Stages and micro-batches: pure functions.

use std::ops::Range;

use crate::error::{Error, Result};

/// One block of a model, as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockCost {
    /// Its name (`transformer.h.6`, `down_blocks.2`).
    pub name: String,
    /// Weight parameters.
    pub params: u64,
    /// Counted FLOPs for the planned batch.
    pub flops: f64,
}

/// Where stages start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitPoints {
    /// Balance the counted FLOPs over the stages.
    Auto,
    /// Each name is the first block of a stage after the first (accelerate's
    /// `split_points`: the split is before the named layer).
    Names(Vec<String>),
}

impl SplitPoints {
    /// `auto`, or names separated by commas.
    pub fn parse(s: &str) -> SplitPoints {
        if s.trim() == "auto" {
            SplitPoints::Auto
        } else {
            SplitPoints::Names(
                s.split(',')
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .collect(),
            )
        }
    }
}

/// Cuts `blocks` into `stages` contiguous ranges.
pub fn plan_stages(blocks: &[BlockCost], split: &SplitPoints, stages: usize) -> Result<Vec<Range<usize>>> {
    let n = blocks.len();
    if stages == 0 {
        return Err(Error::Plan("a pipeline needs at least one stage".into()));
    }
    if stages > n {
        return Err(Error::Plan(format!(
            "{stages} stages but the model has {n} blocks: at most one stage per block"
        )));
    }
    let starts: Vec<usize> = match split {
        SplitPoints::Names(names) => {
            if names.len() + 1 != stages {
                return Err(Error::Plan(format!(
                    "{} split point(s) make {} stages, but the job has {stages} processes (one stage each): \
                     give {} split point(s) or `auto`",
                    names.len(),
                    names.len() + 1,
                    stages - 1
                )));
            }
            let mut starts = Vec::with_capacity(names.len());
            for name in names {
                let Some(i) = blocks.iter().position(|b| &b.name == name) else {
                    let valid: Vec<&str> = blocks.iter().skip(1).map(|b| b.name.as_str()).collect();
                    return Err(Error::Plan(format!(
                        "unknown split point {name:?}; valid ones: {}",
                        valid.join(", ")
                    )));
                };
                if i == 0 {
                    return Err(Error::Plan(format!(
                        "split point {name:?} is the first block: the stage before it would be empty"
                    )));
                }
                if starts.last().is_some_and(|&p| p >= i) {
                    return Err(Error::Plan(format!(
                        "split point {name:?} is not after the one before it: split points must be in model order, \
                         without repeats"
                    )));
                }
                starts.push(i);
            }
            starts
        }
        SplitPoints::Auto => balanced(blocks, stages),
    };
    let mut out = Vec::with_capacity(stages);
    let mut prev = 0;
    for s in starts.into_iter().chain([n]) {
        out.push(prev..s);
        prev = s;
    }
    Ok(out)
}

/// Stage starts minimizing the largest stage's FLOPs (dynamic programming over
/// contiguous cuts; ties go to the earlier cut).
fn balanced(blocks: &[BlockCost], stages: usize) -> Vec<usize> {
    let n = blocks.len();
    let mut prefix = vec![0.0f64; n + 1];
    for (i, b) in blocks.iter().enumerate() {
        prefix[i + 1] = prefix[i] + b.flops.max(0.0);
    }
    let cost = |a: usize, b: usize| prefix[b] - prefix[a];
    // best[k][i]: the least largest cost of the first i blocks in k stages.
    let inf = f64::INFINITY;
    let mut best = vec![vec![inf; n + 1]; stages + 1];
    let mut cut = vec![vec![0usize; n + 1]; stages + 1];
    best[0][0] = 0.0;
    for k in 1..=stages {
        for i in k..=n {
            for j in (k - 1)..i {
                let v = best[k - 1][j].max(cost(j, i));
                if v < best[k][i] {
                    best[k][i] = v;
                    cut[k][i] = j;
                }
            }
        }
    }
    let mut starts = Vec::with_capacity(stages - 1);
    let mut i = n;
    for k in (2..=stages).rev() {
        i = cut[k][i];
        starts.push(i);
    }
    starts.reverse();
    starts
}

/// `batch` rows in `chunks` micro-batches (`chunks` above `batch` is clamped;
/// the first `batch % chunks` are one row longer), in order, without padding.
pub fn micro_batches(batch: usize, chunks: usize) -> Result<Vec<Range<usize>>> {
    if chunks == 0 {
        return Err(Error::Plan("--num-chunks must be at least 1".into()));
    }
    if batch == 0 {
        return Err(Error::Plan("an empty batch".into()));
    }
    let m = chunks.min(batch);
    Ok((0..m).map(|r| shoal_dist::split_range(batch, r, m)).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use proptest::prelude::*;

    fn blocks(costs: &[f64]) -> Vec<BlockCost> {
        costs
            .iter()
            .enumerate()
            .map(|(i, &f)| BlockCost {
                name: format!("b.{i}"),
                params: 1,
                flops: f,
            })
            .collect()
    }

    #[test]
    fn named_split_points_and_their_errors() {
        let b = blocks(&[1.0; 6]);
        let names = |v: &[&str]| SplitPoints::Names(v.iter().map(|s| s.to_string()).collect());
        assert_eq!(plan_stages(&b, &names(&["b.2"]), 2).unwrap(), vec![0..2, 2..6]);
        assert_eq!(
            plan_stages(&b, &names(&["b.1", "b.5"]), 3).unwrap(),
            vec![0..1, 1..5, 5..6]
        );
        let e = |sp: SplitPoints, k| plan_stages(&b, &sp, k).unwrap_err().to_string();
        assert!(e(names(&["b.9"]), 2).contains("valid ones: b.1, b.2"));
        assert!(e(names(&["b.3", "b.2"]), 3).contains("model order"));
        assert!(e(names(&["b.3", "b.3"]), 3).contains("without repeats"));
        assert!(e(names(&["b.0"]), 2).contains("first block"));
        assert!(e(names(&["b.3"]), 3).contains("2 stages, but the job has 3"));
        assert!(e(SplitPoints::Auto, 7).contains("at most one stage per block"));
        assert!(e(SplitPoints::Auto, 0).contains("at least one"));
        assert_eq!(SplitPoints::parse(" auto "), SplitPoints::Auto);
        assert_eq!(SplitPoints::parse("a, b"), names(&["a", "b"]));
    }

    #[test]
    fn auto_balances_the_counted_cost() {
        // An embedding, 4 equal blocks, a head.
        let b = blocks(&[0.1, 4.0, 4.0, 4.0, 4.0, 1.0]);
        assert_eq!(plan_stages(&b, &SplitPoints::Auto, 2).unwrap(), vec![0..3, 3..6]);
        let b = blocks(&[10.0, 1.0, 1.0, 1.0]);
        assert_eq!(plan_stages(&b, &SplitPoints::Auto, 2).unwrap(), vec![0..1, 1..4]);
    }

    #[test]
    fn micro_batches_without_padding() {
        assert_eq!(micro_batches(7, 3).unwrap(), vec![0..3, 3..5, 5..7]);
        assert_eq!(micro_batches(2, 4).unwrap(), vec![0..1, 1..2]);
        assert!(micro_batches(3, 0).is_err());
    }

    proptest! {
        /// Every plan covers the blocks once, in order, with no empty stage; auto's
        /// largest stage is no costlier than an even split by count.
        #[test]
        fn plans_cover_every_block(costs in proptest::collection::vec(0.0f64..100.0, 1..30), k in 1usize..8) {
            let b = blocks(&costs);
            prop_assume!(k <= b.len());
            let p = plan_stages(&b, &SplitPoints::Auto, k).unwrap();
            prop_assert_eq!(p.len(), k);
            prop_assert_eq!(p[0].start, 0);
            prop_assert_eq!(p[k - 1].end, b.len());
            for w in p.windows(2) {
                prop_assert_eq!(w[0].end, w[1].start);
            }
            prop_assert!(p.iter().all(|r| !r.is_empty()));
            let worst = |p: &[Range<usize>]| p.iter().map(|r| costs[r.clone()].iter().sum::<f64>()).fold(0.0, f64::max);
            let even: Vec<Range<usize>> = (0..k).map(|r| shoal_dist::split_range(b.len(), r, k)).collect();
            prop_assert!(worst(&p) <= worst(&even) + 1e-9);
        }

        #[test]
        fn micro_batches_cover_the_batch(b in 1usize..50, m in 1usize..60) {
            let c = micro_batches(b, m).unwrap();
            prop_assert_eq!(c.len(), m.min(b));
            prop_assert_eq!(c.iter().map(|r| r.len()).sum::<usize>(), b);
            prop_assert!(c.iter().all(|r| !r.is_empty()));
        }
    }
}
