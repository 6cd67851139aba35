//! The split VAE decode's exchanges between processes: edge rows to the
//! neighbouring bands and the GroupNorm sums, through the process group. Every
//! message has the shape of the receiver's own tensor (`send_known` /
//! `recv_like`), so on NCCL only the data moves: the hundreds of exchanges of a
//! decode never wait on the store.

use candle_core::Tensor;
use shoal_diffusion::vae::BandComm;
use shoal_dist::ProcessGroup;

/// The processes `members` (ranks, top band first) decoding one latent; this
/// process is band `index`. Tensors go by point-to-point messages, so a band
/// group may be part of a larger job (a CFG pair).
#[derive(Debug)]
pub struct Bands<'a> {
    pg: &'a ProcessGroup,
    members: Vec<usize>,
    index: usize,
}

impl<'a> Bands<'a> {
    /// The band of `pg`'s rank among `members`; `None` when it is not one of them.
    pub fn new(pg: &'a ProcessGroup, members: Vec<usize>) -> Option<Self> {
        let index = members.iter().position(|&m| m == pg.rank())?;
        Some(Bands { pg, members, index })
    }

    fn send(&self, to: usize, t: &Tensor) -> candle_core::Result<()> {
        let rank = self.members[to];
        self.pg
            .send_known(t, rank)
            .map_err(|e| candle_core::Error::Msg(format!("split decode: sending to rank {rank}: {e}")))
    }

    /// Sends `t` to band `other` and returns what it sent: the upper band sends first.
    fn swap(&self, other: usize, t: &Tensor) -> candle_core::Result<Tensor> {
        if self.index < other {
            self.send(other, t)?;
            self.recv(other, t)
        } else {
            let r = self.recv(other, t)?;
            self.send(other, t)?;
            Ok(r)
        }
    }

    fn recv(&self, from: usize, like: &Tensor) -> candle_core::Result<Tensor> {
        let rank = self.members[from];
        self.pg
            .recv_like(rank, like)
            .map_err(|e| candle_core::Error::Msg(format!("split decode: receiving from rank {rank}: {e}")))
    }
}

impl BandComm for Bands<'_> {
    fn band(&self) -> (usize, usize) {
        (self.index, self.members.len())
    }

    fn halo(&self, first: &Tensor, last: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let up = self.index.checked_sub(1);
        let down = (self.index + 1 < self.members.len()).then_some(self.index + 1);
        // Each neighbouring pair exchanges with the upper band sending first, the
        // pairs taken top to bottom: an order that cannot deadlock even where a
        // send waits for its receive (NCCL).
        let above = up.map(|u| self.swap(u, first)).transpose()?;
        let below = down.map(|d| self.swap(d, last)).transpose()?;
        for (t, edge, what) in [(&above, first, "above"), (&below, last, "below")] {
            if let Some(t) = t
                && t.dims() != edge.dims()
            {
                candle_core::bail!(
                    "split decode: the band {what} sent rows {:?} for {:?}",
                    t.dims(),
                    edge.dims()
                )
            }
        }
        Ok((above, below))
    }

    fn sum(&self, t: &Tensor) -> candle_core::Result<Tensor> {
        // Every pair (a < b) exchanges once, pairs in one global order.
        let mut got: Vec<Option<Tensor>> = vec![None; self.members.len()];
        for o in (0..self.members.len()).filter(|&o| o != self.index) {
            got[o] = Some(self.swap(o, t)?);
        }
        // Added in band order on every band, so every band holds the same bits.
        let mut acc: Option<Tensor> = None;
        for (o, g) in got.into_iter().enumerate() {
            let v = g.unwrap_or_else(|| t.clone());
            if v.dims() != t.dims() {
                candle_core::bail!(
                    "split decode: rank {} sent a sum of {:?} for {:?}",
                    self.members[o],
                    v.dims(),
                    t.dims()
                )
            }
            acc = Some(match acc {
                None => v,
                Some(a) => (a + v)?,
            });
        }
        acc.ok_or_else(|| candle_core::Error::Msg("split decode: no bands".into()))
    }
}
