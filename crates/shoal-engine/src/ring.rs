//! The UNet pipeline's transport: carries (activations, skip connections,
//! time embedding, context) from stage to stage and predictions from the last
//! stage back to rank 0, as named tensors through the process group.

use candle_core::{Device, Tensor};
use shoal_diffusion::StageRing;
use shoal_diffusion::unet::{AddedCond, Carry};
use shoal_dist::ProcessGroup;

/// This rank's place in a pipeline of `world` stages (rank = stage).
#[derive(Debug)]
pub struct Ring<'a> {
    pg: &'a ProcessGroup,
    rank: usize,
    world: usize,
    device: Device,
}

impl<'a> Ring<'a> {
    /// The ring through `pg`, tensors received onto `device`.
    pub fn new(pg: &'a ProcessGroup, device: Device) -> Self {
        Ring {
            rank: pg.rank(),
            world: pg.world_size(),
            pg,
            device,
        }
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
            Some(c) => to_named(c)?,
            None => vec![(
                "end".to_string(),
                Tensor::new(&[0u8], &Device::Cpu).map_err(shoal_diffusion::Error::Candle)?,
            )],
        };
        let bytes = shoal_pipe::encode_named(&named).map_err(|e| err(e.to_string()))?;
        self.pg.send_bytes(&bytes, self.rank + 1).map_err(|e| {
            err(format!(
                "stage {} sending to rank {}: {e}",
                self.rank,
                self.rank + 1
            ))
        })
    }

    fn recv_prev(&self) -> shoal_diffusion::Result<Option<Carry>> {
        let from = self.rank - 1;
        let bytes = self.pg.recv_bytes(from).map_err(|e| {
            err(format!(
                "stage {} (rank {}) waiting for a carry from rank {from}: {e}",
                self.rank, self.rank
            ))
        })?;
        let named = shoal_pipe::decode_named(&bytes, &self.device).map_err(|e| err(e.to_string()))?;
        if named.iter().any(|(k, _)| k == "end") {
            return Ok(None);
        }
        from_named(named).map(Some)
    }

    fn send_first(&self, pred: &Tensor) -> shoal_diffusion::Result<()> {
        self.pg
            .send(pred, 0)
            .map_err(|e| err(format!("the last stage sending a prediction to rank 0: {e}")))
    }

    fn recv_last(&self) -> shoal_diffusion::Result<Tensor> {
        let last = self.world - 1;
        self.pg.recv(last, &self.device).map_err(|e| {
            err(format!(
                "rank 0 waiting for a prediction from the last stage (rank {last}): {e}"
            ))
        })
    }

    fn is_last(&self) -> bool {
        self.rank + 1 == self.world
    }
}
