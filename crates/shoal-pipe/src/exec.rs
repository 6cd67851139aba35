//! The GPipe loop of one stage: micro-batches in order, each received from the
//! previous stage's rank (or made, on stage 0), run, and sent to the next.
//! Sends do not wait for the receiver (the store holds them), so stage s works
//! on micro-batch k + 1 while stage s + 1 works on k.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use shoal_dist::ProcessGroup;

use crate::error::{Error, Result};

/// Named tensors: what one stage hands the next for one micro-batch.
pub type Named = Vec<(String, Tensor)>;

/// The outputs of the last stage, per micro-batch in order; or where they are.
#[derive(Debug)]
pub enum PipeOutput {
    /// This rank holds them.
    Here(Vec<Named>),
    /// Only the last stage's rank holds them (`gather_output` was not asked).
    NotHere {
        /// The rank that has them.
        last_rank: usize,
    },
}

/// `tensors` as one safetensors blob (host copies).
pub fn encode_named(tensors: &Named) -> Result<Vec<u8>> {
    let host: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    safetensors::serialize(host.iter().map(|(n, t)| (n.as_str(), t)), None)
        .map_err(|e| Error::Peer(format!("serializing a carry: {e}")))
}

/// A blob from [`encode_named`], on `device`, sorted by name.
pub fn decode_named(bytes: &[u8], device: &Device) -> Result<Named> {
    let map = candle_core::safetensors::load_buffer(bytes, device)?;
    let sorted: BTreeMap<String, Tensor> = map.into_iter().collect();
    Ok(sorted.into_iter().collect())
}

/// Runs this process's stage (`stage` of `stages`; rank = stage) on `n`
/// micro-batches. `input(k)` makes micro-batch k's carry (stage 0 only);
/// `run(k, carry)` runs the stage. The last stage's outputs come back to it, or
/// to every rank with `gather`.
#[allow(clippy::too_many_arguments)]
pub fn run_stage_loop(
    pg: Option<&ProcessGroup>,
    stage: usize,
    stages: usize,
    n: usize,
    input: &mut dyn FnMut(usize) -> Result<Named>,
    run: &mut dyn FnMut(usize, Named) -> Result<Named>,
    gather: bool,
    device: &Device,
) -> Result<PipeOutput> {
    if stages > 1 && pg.is_none_or(|p| p.world_size() != stages) {
        return Err(Error::Plan(format!(
            "{stages} stages need {stages} processes (one stage each); this job has {}",
            pg.map_or(1, |p| p.world_size())
        )));
    }
    let last = stages - 1;
    let mut outs = Vec::new();
    for k in 0..n {
        let carry = if stage == 0 {
            input(k)?
        } else {
            let pg = pg.ok_or_else(|| Error::Plan("no process group".into()))?;
            let bytes = pg.recv_bytes(stage - 1).map_err(|e| {
                Error::Peer(format!(
                    "stage {stage} (rank {stage}) waiting for micro-batch {k} of {n} from stage {} (rank {}): {e}",
                    stage - 1,
                    stage - 1
                ))
            })?;
            decode_named(&bytes, device)?
        };
        let out = run(k, carry)?;
        if stage < last {
            let pg = pg.ok_or_else(|| Error::Plan("no process group".into()))?;
            pg.send_bytes(&encode_named(&out)?, stage + 1)?;
        } else {
            outs.push(out);
        }
    }
    if !gather || stages == 1 {
        return Ok(if stage == last {
            PipeOutput::Here(outs)
        } else {
            PipeOutput::NotHere { last_rank: last }
        });
    }
    let pg = pg.ok_or_else(|| Error::Plan("no process group".into()))?;
    // Every micro-batch's output in one blob, names prefixed by the index.
    let blob = if stage == last {
        let all: Named = outs
            .iter()
            .enumerate()
            .flat_map(|(k, o)| {
                o.iter()
                    .map(move |(name, t)| (format!("{k:06}/{name}"), t.clone()))
            })
            .collect();
        Some(encode_named(&all)?)
    } else {
        None
    };
    let bytes = pg.broadcast_bytes(blob.as_deref(), last)?;
    if stage == last {
        return Ok(PipeOutput::Here(outs));
    }
    let mut per: Vec<Named> = vec![Vec::new(); n];
    for (key, t) in decode_named(&bytes, device)? {
        let (k, name) = key
            .split_once('/')
            .and_then(|(k, n)| Some((k.parse::<usize>().ok()?, n.to_string())))
            .ok_or_else(|| Error::Peer(format!("the last stage sent an output named {key:?}")))?;
        per.get_mut(k)
            .ok_or_else(|| Error::Peer(format!("the last stage sent micro-batch {k} of {n}")))?
            .push((name, t));
    }
    Ok(PipeOutput::Here(per))
}
