//! Where a rank's work comes from: blocks of the pending items.

use std::ops::Range;

use shoal_dist::ProcessGroup;

use crate::error::Result;

/// A supply of blocks (ranges into the pending items) for one rank.
pub trait Source {
    /// The next block, `None` when this rank's work is done.
    fn next_block(&mut self) -> Result<Option<Range<usize>>>;
}

/// `--schedule static`: this rank's share of the blocks, split like `split_between_processes`.
#[derive(Debug)]
pub struct StaticSource(std::vec::IntoIter<Range<usize>>);

impl StaticSource {
    /// Rank `rank`'s share of `blocks` among `world` ranks.
    pub fn new(blocks: &[Range<usize>], rank: usize, world: usize) -> Self {
        StaticSource(shoal_jobs::schedule::static_share(blocks, rank, world).into_iter())
    }
}

impl Source for StaticSource {
    fn next_block(&mut self) -> Result<Option<Range<usize>>> {
        Ok(self.0.next())
    }
}

/// The store key of the dynamic schedule's counter.
pub const NEXT_BLOCK: &str = "shoal/job/next_block";

/// `--schedule dynamic`: blocks claimed one at a time from a counter in the store.
#[derive(Debug)]
pub struct StoreCounter<'a> {
    pg: &'a ProcessGroup,
    blocks: Vec<Range<usize>>,
}

impl<'a> StoreCounter<'a> {
    /// Claims from `blocks` through `pg`'s store.
    pub fn new(pg: &'a ProcessGroup, blocks: Vec<Range<usize>>) -> Self {
        StoreCounter { pg, blocks }
    }
}

impl Source for StoreCounter<'_> {
    fn next_block(&mut self) -> Result<Option<Range<usize>>> {
        let k = self.pg.kv_add(NEXT_BLOCK, 1)? - 1;
        Ok(usize::try_from(k).ok().and_then(|k| self.blocks.get(k).cloned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_shares_cover_every_block_once() {
        let blocks: Vec<Range<usize>> = (0..7).map(|i| i * 2..i * 2 + 2).collect();
        let mut seen = Vec::new();
        for rank in 0..3 {
            let mut s = StaticSource::new(&blocks, rank, 3);
            while let Some(b) = s.next_block().unwrap() {
                seen.push(b.start);
            }
        }
        seen.sort();
        assert_eq!(seen, (0..7).map(|i| i * 2).collect::<Vec<_>>());
    }
}
