//! The UNet pipeline's transport: carries (activations, skip connections,
//! time embedding, context) from stage to stage and predictions from the last
//! stage back to rank 0, as named tensors through the process group.
//!
//! The text context is the same for every step of an item: it crosses each
//! link once, with a key; later carries name the key (`ctx.ref`). Sender and
//! receiver keep the same first-in-first-out record of the last
//! [`CTX_KEPT`] keys (the receiver sees exactly the sender's sequence), so a
//! key is only named while the next stage still holds its tensor.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use candle_core::{Device, Tensor, TensorId};
use shoal_diffusion::StageRing;
use shoal_diffusion::unet::{AddedCond, Carry};
use shoal_dist::ProcessGroup;

/// How many text contexts each link remembers (more than a block's
/// micro-batches × guidance halves).
pub const CTX_KEPT: usize = 256;

/// The context bookkeeping of one rank.
#[derive(Debug, Default)]
struct Contexts {
    /// Local tensor → its key (rank 0 makes keys; the others keep the sender's).
    keys: HashMap<TensorId, u64>,
    next_key: u64,
    /// Keys the next stage holds, oldest first.
    sent: VecDeque<u64>,
    /// Contexts received, oldest first.
    held: VecDeque<(u64, Tensor)>,
    /// Contexts sent whole, and carries sent.
    sent_whole: usize,
    carries: usize,
}

impl Contexts {
    fn forget(&mut self, t: &Tensor) {
        self.keys.remove(&t.id());
    }
}

/// This rank's place in its pipeline: the ranks are cut into pipelines of
/// `stages` consecutive ranks (ranks `g·stages … g·stages + stages − 1` are
/// pipeline g; stage = rank mod stages).
#[derive(Debug)]
pub struct Ring<'a> {
    pg: &'a ProcessGroup,
    rank: usize,
    /// The pipeline's first and last rank.
    first: usize,
    last: usize,
    device: Device,
    ctx: Mutex<Contexts>,
}

impl<'a> Ring<'a> {
    /// This rank's pipeline of `stages` ranks through `pg`, tensors received onto `device`.
    pub fn new(pg: &'a ProcessGroup, stages: usize, device: Device) -> Self {
        let rank = pg.rank();
        let stages = stages.max(1);
        let first = rank / stages * stages;
        Ring {
            rank,
            first,
            last: (first + stages - 1).min(pg.world_size().saturating_sub(1)),
            pg,
            device,
            ctx: Mutex::new(Contexts::default()),
        }
    }

    /// This rank's stage in its pipeline.
    pub fn stage(&self) -> usize {
        self.rank - self.first
    }

    /// Text contexts sent whole, and carries sent, by this rank so far.
    pub fn sent(&self) -> (usize, usize) {
        let c = self.ctx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (c.sent_whole, c.carries)
    }

    /// The carry's tensors, its context whole (with its key) or by key.
    fn outgoing(&self, c: &Carry) -> shoal_diffusion::Result<shoal_pipe::Named> {
        let mut named = to_named(c)?;
        let mut g = self.ctx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let g = &mut *g;
        g.carries += 1;
        let key = match g.keys.get(&c.ctx.id()) {
            Some(k) => *k,
            None => {
                g.next_key += 1;
                let k = ((self.rank as u64) << 48) | g.next_key;
                g.keys.insert(c.ctx.id(), k);
                k
            }
        };
        let key_t = Tensor::new(&[key as i64], &Device::Cpu)?;
        if g.sent.contains(&key) {
            named.retain(|(k, _)| k != "ctx");
            named.push(("ctx.ref".into(), key_t));
        } else {
            named.push(("ctx.key".into(), key_t));
            g.sent.push_back(key);
            g.sent_whole += 1;
            if g.sent.len() > CTX_KEPT {
                g.sent.pop_front();
            }
        }
        // Rank 0 forgets contexts the next stage no longer holds (a later
        // stage forgets them as they leave its `held`).
        if self.rank == self.first && g.keys.len() > 2 * CTX_KEPT {
            let live: std::collections::HashSet<u64> = g.sent.iter().copied().collect();
            g.keys.retain(|_, k| live.contains(k));
        }
        Ok(named)
    }

    /// The context of an incoming carry: the tensor sent whole (kept under its
    /// key), or the one kept under the key it names.
    fn incoming_ctx(&self, named: &mut shoal_pipe::Named, from: usize) -> shoal_diffusion::Result<()> {
        let take = |named: &mut shoal_pipe::Named, k: &str| -> Option<Tensor> {
            let i = named.iter().position(|(n, _)| n == k)?;
            Some(named.remove(i).1)
        };
        let key_of = |t: Tensor| -> shoal_diffusion::Result<u64> {
            t.to_vec1::<i64>()
                .ok()
                .and_then(|v| v.first().copied())
                .map(|k| k as u64)
                .ok_or_else(|| err(format!("rank {from} sent a malformed context key")))
        };
        let mut g = self.ctx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(r) = take(named, "ctx.ref") {
            let key = key_of(r)?;
            let t = g
                .held
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| {
                    err(format!(
                        "rank {from} named text context {key}, which it never sent"
                    ))
                })?;
            named.push(("ctx".into(), t));
            return Ok(());
        }
        let key = key_of(
            take(named, "ctx.key").ok_or_else(|| err(format!("rank {from} sent a context without a key")))?,
        )?;
        let t = named
            .iter()
            .find(|(n, _)| n == "ctx")
            .map(|(_, t)| t.clone())
            .ok_or_else(|| err(format!("rank {from} sent a carry without ctx")))?;
        g.keys.insert(t.id(), key);
        g.held.push_back((key, t));
        if g.held.len() > CTX_KEPT
            && let Some((_, old)) = g.held.pop_front()
        {
            g.forget(&old);
        }
        Ok(())
    }
}

fn err(what: String) -> shoal_diffusion::Error {
    shoal_diffusion::Error::Partner(what)
}

fn to_named(c: &Carry) -> shoal_diffusion::Result<shoal_pipe::Named> {
    let mut v = vec![
        ("x".to_string(), c.x.clone()),
        ("ctx".to_string(), c.ctx.clone()),
        ("t".to_string(), Tensor::new(&[c.t], &Device::Cpu)?),
    ];
    if let Some(e) = &c.emb {
        v.push(("emb".into(), e.clone()));
    }
    if let Some(a) = &c.added {
        v.push(("added.text_embeds".into(), a.text_embeds.clone()));
        v.push(("added.time_ids".into(), a.time_ids.clone()));
    }
    for (i, s) in c.skips.iter().enumerate() {
        v.push((format!("skip.{i:04}"), s.clone()));
    }
    Ok(v)
}

fn from_named(named: shoal_pipe::Named) -> shoal_diffusion::Result<Carry> {
    let mut map: std::collections::BTreeMap<String, Tensor> = named.into_iter().collect();
    let mut take = |k: &str| map.remove(k);
    let x = take("x").ok_or_else(|| err("a carry without x".into()))?;
    let ctx = take("ctx").ok_or_else(|| err("a carry without ctx".into()))?;
    let t = take("t")
        .ok_or_else(|| err("a carry without t".into()))?
        .to_vec1::<f64>()
        .map_err(|e| err(format!("t: {e}")))?
        .first()
        .copied()
        .ok_or_else(|| err("an empty t".into()))?;
    let emb = take("emb");
    let added = match (take("added.text_embeds"), take("added.time_ids")) {
        (Some(text_embeds), Some(time_ids)) => Some(AddedCond {
            text_embeds,
            time_ids,
        }),
        (None, None) => None,
        _ => return Err(err("a carry with half of SDXL's added conditioning".into())),
    };
    // The rest are the skips, in name order (skip.0000, skip.0001, …).
    let mut skips = Vec::new();
    for (k, v) in map {
        if !k.starts_with("skip.") {
            return Err(err(format!("a carry with an unknown tensor {k:?}")));
        }
        skips.push(v);
    }
    Ok(Carry {
        x,
        skips,
        emb,
        ctx,
        t,
        added,
    })
}

impl StageRing for Ring<'_> {
    fn send_next(&self, c: Option<&Carry>) -> shoal_diffusion::Result<()> {
        let named = match c {
            Some(c) => self.outgoing(c)?,
            None => vec![(
                "end".to_string(),
                Tensor::new(&[0u8], &Device::Cpu).map_err(shoal_diffusion::Error::Candle)?,
            )],
        };
        let bytes = shoal_pipe::encode_named(&named).map_err(|e| err(e.to_string()))?;
        self.pg.send_bytes(&bytes, self.rank + 1).map_err(|e| {
            err(format!(
                "stage {} (rank {}) sending to rank {}: {e}",
                self.stage(),
                self.rank,
                self.rank + 1
            ))
        })
    }

    fn recv_prev(&self) -> shoal_diffusion::Result<Option<Carry>> {
        let from = self.rank.saturating_sub(1);
        let bytes = self.pg.recv_bytes(from).map_err(|e| {
            err(format!(
                "stage {} (rank {}) waiting for a carry from rank {from}: {e}",
                self.stage(),
                self.rank
            ))
        })?;
        let mut named = shoal_pipe::decode_named(&bytes, &self.device).map_err(|e| err(e.to_string()))?;
        if named.iter().any(|(k, _)| k == "end") {
            return Ok(None);
        }
        self.incoming_ctx(&mut named, from)?;
        from_named(named).map(Some)
    }

    fn send_first(&self, pred: &Tensor) -> shoal_diffusion::Result<()> {
        self.pg.send(pred, self.first).map_err(|e| {
            err(format!(
                "the last stage (rank {}) sending a prediction to rank {}: {e}",
                self.rank, self.first
            ))
        })
    }

    fn recv_last(&self) -> shoal_diffusion::Result<Tensor> {
        let last = self.last;
        self.pg.recv(last, &self.device).map_err(|e| {
            err(format!(
                "rank {} waiting for a prediction from the last stage (rank {last}): {e}",
                self.rank
            ))
        })
    }

    fn is_last(&self) -> bool {
        self.rank == self.last
    }
}
