//! The tensor collectives of a process group, behind one trait with one
//! implementation per backend, chosen once when the group is made.
//!
//! A communicator gets the group itself as its control plane: the store's
//! byte collectives (for shapes and dtypes, and for the whole data in the
//! cpu backend). `StoreComm` moves tensors as safetensors bytes through the
//! store; the NCCL one (`nccl.rs`, feature `nccl`) moves CUDA tensors with
//! NCCL and hands CPU tensors to `StoreComm`. The same test bodies run
//! against both (`tests/collectives.rs`).

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// The reduction of an all-reduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Element-wise sum.
    Sum,
    /// Element-wise maximum.
    Max,
}

/// What a communicator needs from its group: identity, errors that name the
/// rank, and the store's byte collectives. `ProcessGroup` implements it, so
/// this module and the backends never import the group.
pub trait ControlPlane {
    /// This rank.
    fn rank(&self) -> usize;
    /// All ranks.
    fn world_size(&self) -> usize;
    /// Whether collectives check shapes across ranks first (`SHOAL_DEBUG_MODE`).
    fn debug(&self) -> bool;
    /// A collective's error, naming the rank and the operation.
    fn coll_err(&self, op: &str, detail: String) -> Error;
    /// Every rank's bytes, in rank order.
    fn all_gather_bytes(&self, value: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// `src`'s bytes on every rank.
    fn broadcast_bytes(&self, value: Option<&[u8]>, src: usize) -> Result<Vec<u8>>;
    /// Bytes to `dst`.
    fn send_bytes(&self, value: &[u8], dst: usize) -> Result<()>;
    /// The next bytes `src` sent.
    fn recv_bytes(&self, src: usize) -> Result<Vec<u8>>;
}

/// The tensor collectives. `pg` is the group the communicator belongs to.
pub trait Communicator: Send + Sync + std::fmt::Debug {
    /// Every rank's tensor, in rank order.
    fn all_gather(&self, pg: &dyn ControlPlane, t: &Tensor) -> Result<Vec<Tensor>>;
    /// `src`'s tensor on every rank, on `device`.
    fn broadcast(
        &self,
        pg: &dyn ControlPlane,
        t: Option<&Tensor>,
        src: usize,
        device: &Device,
    ) -> Result<Tensor>;
    /// Sends `t` to `dst`.
    fn send(&self, pg: &dyn ControlPlane, t: &Tensor, dst: usize) -> Result<()>;
    /// The next tensor `src` sent, on `device`.
    fn recv(&self, pg: &dyn ControlPlane, src: usize, device: &Device) -> Result<Tensor>;
    /// Sends `t` to `dst`, which takes it with [`Communicator::recv_like`]: the
    /// receiver knows its shape and dtype, so only the data moves (on NCCL, no
    /// message through the store).
    fn send_known(&self, pg: &dyn ControlPlane, t: &Tensor, dst: usize) -> Result<()> {
        self.send(pg, t, dst)
    }
    /// The next tensor `src` sent with [`Communicator::send_known`], which has
    /// `like`'s shape and dtype, on `like`'s device. A tensor of another shape
    /// is an error where the backend can see it (the store always; NCCL in
    /// debug mode).
    fn recv_like(&self, pg: &dyn ControlPlane, src: usize, like: &Tensor) -> Result<Tensor> {
        let t = self.recv(pg, src, like.device())?;
        check_like(pg, src, t.dims(), t.dtype().as_str(), like)?;
        Ok(t)
    }
    /// The element-wise reduction of every rank's tensor.
    fn all_reduce(&self, pg: &dyn ControlPlane, t: &Tensor, op: ReduceOp) -> Result<Tensor>;
}

/// Tensors through the rendezvous store (the cpu backend, and CPU tensors in an NCCL group).
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreComm;

impl Communicator for StoreComm {
    fn all_gather(&self, pg: &dyn ControlPlane, t: &Tensor) -> Result<Vec<Tensor>> {
        let all = pg.all_gather_bytes(&encode_tensor(t)?)?;
        let ts: Vec<Tensor> = all
            .iter()
            .map(|b| decode_tensor(b, t.device()))
            .collect::<Result<_>>()?;
        let same = ts.iter().all(|x| x.dims() == t.dims() && x.dtype() == t.dtype());
        if !same {
            let per_rank: Vec<String> = ts
                .iter()
                .enumerate()
                .map(|(r, x)| format!("rank {r}: {:?} {:?}", x.dims(), x.dtype()))
                .collect();
            return Err(pg.coll_err(
                "all_gather",
                format!("shapes or dtypes differ across ranks: {}", per_rank.join("; ")),
            ));
        }
        Ok(ts)
    }

    fn broadcast(
        &self,
        pg: &dyn ControlPlane,
        t: Option<&Tensor>,
        src: usize,
        device: &Device,
    ) -> Result<Tensor> {
        let b = match t {
            Some(t) if pg.rank() == src => Some(encode_tensor(t)?),
            _ => None,
        };
        decode_tensor(&pg.broadcast_bytes(b.as_deref(), src)?, device)
    }

    fn send(&self, pg: &dyn ControlPlane, t: &Tensor, dst: usize) -> Result<()> {
        pg.send_bytes(&encode_tensor(t)?, dst)
    }

    fn recv(&self, pg: &dyn ControlPlane, src: usize, device: &Device) -> Result<Tensor> {
        decode_tensor(&pg.recv_bytes(src)?, device)
    }

    fn all_reduce(&self, pg: &dyn ControlPlane, t: &Tensor, op: ReduceOp) -> Result<Tensor> {
        let all = self.all_gather(pg, t)?;
        let mut acc = all[0].clone();
        for x in &all[1..] {
            acc = match op {
                ReduceOp::Sum => (acc + x)?,
                ReduceOp::Max => acc.maximum(x)?,
            };
        }
        Ok(acc)
    }
}

/// `src` sent a tensor of `dims` and `dtype` where one like `like` was expected.
pub(crate) fn check_like(
    pg: &dyn ControlPlane,
    src: usize,
    dims: &[usize],
    dtype: &str,
    like: &Tensor,
) -> Result<()> {
    if dims != like.dims() || dtype != like.dtype().as_str() {
        return Err(pg.coll_err(
            "recv",
            format!(
                "rank {src} sent {dims:?} {dtype} where {:?} {} was expected",
                like.dims(),
                like.dtype().as_str()
            ),
        ));
    }
    Ok(())
}

/// A tensor as safetensors bytes (one tensor named `t`).
pub(crate) fn encode_tensor(t: &Tensor) -> Result<Vec<u8>> {
    let t = t.to_device(&Device::Cpu)?.contiguous()?;
    safetensors::serialize([("t", &t)], None).map_err(|e| Error::Wire(format!("serializing a tensor: {e}")))
}

pub(crate) fn decode_tensor(b: &[u8], device: &Device) -> Result<Tensor> {
    let mut m = candle_core::safetensors::load_buffer(b, device)?;
    m.remove("t")
        .ok_or_else(|| Error::Wire("tensor message without its tensor".into()))
}
