//! The NCCL backend of [`crate::ProcessGroup`] (feature `nccl`).
//!
//! The communicator is created through the rendezvous store: rank 0 makes the
//! 128-byte unique id and publishes it, the others read it (candle's example
//! polls a file forever; here every wait has the group's timeout). Collectives
//! run on the tensor's CUDA stream through candle custom ops and are
//! synchronized before returning.
//!
//! NCCL cannot be interrupted safely (`shared/notes/semantics.md` §12: abort
//! can hang, cudarc 0.19 exposes neither abort nor async errors), so a
//! watchdog thread times every call; past the timeout it prints the rank, the
//! operation, its sequence number and the last completed one, and ends the
//! process with code [`WATCHDOG_EXIT`]. The launcher's gang semantics then end
//! the job.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaContext, CudaEvent, CudaSlice, DeviceRepr, ValidAsZeroBits,
};
use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, NcclType, ReduceOp as NcclOp};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};

use crate::comm::{Communicator, ControlPlane, ReduceOp, StoreComm};
use crate::error::{Error, Result};

/// Runs `$body` with `T` bound to the element type of `$dtype`, for every dtype NCCL moves.
macro_rules! nccl_dtypes {
    ($dtype:expr, $what:literal, $t:ident => $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $t = f32;
                $body
            }
            DType::F16 => {
                type $t = half::f16;
                $body
            }
            DType::BF16 => {
                type $t = half::bf16;
                $body
            }
            DType::F64 => {
                type $t = f64;
                $body
            }
            DType::U8 => {
                type $t = u8;
                $body
            }
            DType::U32 => {
                type $t = u32;
                $body
            }
            DType::I64 => {
                type $t = i64;
                $body
            }
            d => candle_core::bail!("NCCL {} do not support {d:?}", $what),
        }
    };
}
use crate::store::StoreClient;

/// The exit code of a process whose collective outlived the timeout.
pub const WATCHDOG_EXIT: i32 = 124;

/// An NCCL communicator that may move between threads.
struct SendComm(Comm);

// SAFETY: an NCCL communicator may be used from any thread as long as no two
// threads call into it at once (NCCL user guide, "Thread Safety"). The only
// access is through `NcclGroup::comm`, a `Mutex`, which serializes every call.
unsafe impl Send for SendComm {}

#[derive(Default)]
struct InFlight {
    /// A host-side call in progress (the enqueue, or a synchronous wait).
    op: Option<(String, u64, Instant)>,
    /// Enqueued collectives not yet complete on the device, oldest first, each
    /// with the event recorded after it.
    pending: std::collections::VecDeque<(String, u64, Instant, CudaEvent)>,
    last_done: Option<(String, u64)>,
}

/// Times every NCCL call from a thread of its own.
struct Watchdog {
    state: Mutex<InFlight>,
    stop: AtomicBool,
}

/// One rank's NCCL communicator, its device and its watchdog.
pub(crate) struct NcclGroup {
    comm: Mutex<SendComm>,
    device: CudaDevice,
    watchdog: Arc<Watchdog>,
    seq: Mutex<u64>,
    /// Wait for the stream after every call (`SHOAL_NCCL_SYNC=1`); otherwise an
    /// event is recorded and the watchdog waits on it.
    sync: bool,
}

impl std::fmt::Debug for NcclGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NcclGroup")
    }
}

fn nccl_err(rank: usize, world: usize, op: &str, e: impl std::fmt::Debug) -> Error {
    Error::Collective {
        rank,
        world,
        op: op.to_string(),
        detail: format!("NCCL error {e:?}"),
    }
}

impl NcclGroup {
    /// Creates the communicator of `rank` of `world` on `device`, exchanging
    /// the unique id through the store.
    pub(crate) fn new(
        store: &mut StoreClient,
        rank: usize,
        world: usize,
        device: &Device,
        timeout: Duration,
    ) -> Result<Self> {
        let Device::Cuda(dev) = device else {
            return Err(Error::Backend {
                backend: "nccl".into(),
                detail: format!("rank {rank}/{world}: the NCCL backend needs a CUDA device, got {device:?}"),
            });
        };
        let key = "shoal/nccl/unique_id";
        let id = if rank == 0 {
            let id = Id::new().map_err(|e| nccl_err(rank, world, "ncclGetUniqueId", e))?;
            let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
            store.set(key, &bytes)?;
            id
        } else {
            let bytes = store.get(key, timeout)?;
            if bytes.len() != 128 {
                return Err(Error::Wire(format!(
                    "NCCL unique id of {} bytes, expected 128",
                    bytes.len()
                )));
            }
            let mut raw = [0 as std::ffi::c_char; 128];
            for (d, s) in raw.iter_mut().zip(&bytes) {
                *d = *s as std::ffi::c_char;
            }
            Id::uninit(raw)
        };
        let watchdog = Arc::new(Watchdog {
            state: Mutex::new(InFlight::default()),
            stop: AtomicBool::new(false),
        });
        spawn_watchdog(
            watchdog.clone(),
            rank,
            world,
            timeout,
            dev.cuda_stream().context().clone(),
        );
        arm(&watchdog, "ncclCommInitRank", 0);
        let comm = Comm::from_rank(dev.cuda_stream(), rank, world, id)
            .map_err(|e| nccl_err(rank, world, "ncclCommInitRank", e))?;
        disarm(&watchdog);
        Ok(NcclGroup {
            comm: Mutex::new(SendComm(comm)),
            device: dev.clone(),
            watchdog,
            seq: Mutex::new(0),
            sync: std::env::var_os("SHOAL_NCCL_SYNC").is_some_and(|v| v != "0"),
        })
    }

    fn next_seq(&self) -> u64 {
        let mut s = self.seq.lock().unwrap_or_else(|p| p.into_inner());
        *s += 1;
        *s
    }

    /// Runs `f` with the communicator under the watchdog. The call only
    /// enqueues work on the stream: an event recorded after it goes to the
    /// watchdog, which ends the process if it has not completed within the
    /// timeout. With `SHOAL_NCCL_SYNC=1` the stream is waited for instead.
    fn run<T>(&self, op: &str, f: impl FnOnce(&Comm) -> candle_core::Result<T>) -> candle_core::Result<T> {
        let seq = self.next_seq();
        arm(&self.watchdog, op, seq);
        let out = {
            let comm = self.comm.lock().unwrap_or_else(|p| p.into_inner());
            f(&comm.0)
        };
        let stream = self.device.cuda_stream();
        if self.sync {
            let synced = stream.synchronize();
            disarm(&self.watchdog);
            synced.map_err(|e| candle_core::Error::Msg(format!("{op}: stream synchronize: {e:?}")))?;
            return out;
        }
        let event = stream.record_event(None);
        let mut st = self.watchdog.state.lock().unwrap_or_else(|p| p.into_inner());
        st.op = None;
        match event {
            Ok(ev) => st.pending.push_back((op.to_string(), seq, Instant::now(), ev)),
            Err(e) => {
                return Err(candle_core::Error::Msg(format!(
                    "{op}: recording an event: {e:?}"
                )));
            }
        }
        drop(st);
        out
    }

    /// The element-wise reduction over all ranks.
    pub(crate) fn all_reduce(&self, t: &Tensor, op: ReduceOp) -> candle_core::Result<Tensor> {
        t.contiguous()?.apply_op1_no_bwd(&Coll {
            g: self,
            kind: Kind::AllReduce(op),
        })
    }

    /// Every rank's tensor, concatenated along a new leading dim of size `world`.
    pub(crate) fn all_gather(&self, t: &Tensor, world: usize) -> candle_core::Result<Tensor> {
        t.contiguous()?.apply_op1_no_bwd(&Coll {
            g: self,
            kind: Kind::AllGather(world),
        })
    }

    /// `src`'s tensor, on every rank; `t` gives shape and dtype (and data on `src`).
    pub(crate) fn broadcast(&self, t: &Tensor, src: usize) -> candle_core::Result<Tensor> {
        t.contiguous()?.apply_op1_no_bwd(&Coll {
            g: self,
            kind: Kind::Broadcast(src),
        })
    }

    /// Sends `t` to `peer` (no buffer is allocated).
    pub(crate) fn send(&self, t: &Tensor, peer: usize) -> candle_core::Result<()> {
        t.contiguous()?.inplace_op1(&P2p {
            g: self,
            peer,
            recv: false,
        })
    }

    /// Receives from `peer` into `buf` (a fresh tensor of the right shape and dtype) and returns it.
    pub(crate) fn recv(&self, buf: &Tensor, peer: usize) -> candle_core::Result<Tensor> {
        buf.inplace_op1(&P2p {
            g: self,
            peer,
            recv: true,
        })?;
        Ok(buf.clone())
    }
}

impl Drop for NcclGroup {
    fn drop(&mut self) {
        self.watchdog.stop.store(true, Ordering::Relaxed);
    }
}

fn arm(w: &Watchdog, op: &str, seq: u64) {
    w.state.lock().unwrap_or_else(|p| p.into_inner()).op = Some((op.to_string(), seq, Instant::now()));
}

fn disarm(w: &Watchdog) {
    let mut s = w.state.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((op, seq, _)) = s.op.take() {
        s.last_done = Some((op, seq));
    }
}

fn spawn_watchdog(w: Arc<Watchdog>, rank: usize, world: usize, timeout: Duration, ctx: Arc<CudaContext>) {
    let _ = std::thread::Builder::new().name("shoal-nccl-watchdog".into()).spawn(move || {
        let _ = ctx.bind_to_thread();
        while !w.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            let mut s = w.state.lock().unwrap_or_else(|p| p.into_inner());
            while let Some((op, seq, _, ev)) = s.pending.front() {
                if !ev.is_complete() {
                    break;
                }
                let done = (op.clone(), *seq);
                s.pending.pop_front();
                s.last_done = Some(done);
            }
            let stuck = s
                .op
                .as_ref()
                .map(|(op, seq, start)| (op.clone(), *seq, *start))
                .or_else(|| s.pending.front().map(|(op, seq, start, _)| (op.clone(), *seq, *start)));
            if let Some((op, seq, start)) = stuck
                && start.elapsed() > timeout
            {
                let last = match &s.last_done {
                    Some((o, n)) => format!("{o} #{n}"),
                    None => "none".into(),
                };
                tracing::error!(
                    "[rank {rank}/{world}] watchdog: collective {op} (seq {seq}) did not complete within {timeout:?} \
                     (ran {:?}); last completed: {last}. A peer has probably died; ending this process \
                     (exit {WATCHDOG_EXIT}).",
                    start.elapsed()
                );
                // `exit` could block in CUDA's teardown behind the stuck stream.
                // SAFETY: `_exit` ends the process without running any Rust code.
                unsafe { libc::_exit(WATCHDOG_EXIT) };
            }
        }
    });
}

/// NCCL send or receive on a tensor's own buffer.
struct P2p<'a> {
    g: &'a NcclGroup,
    peer: usize,
    recv: bool,
}

impl P2p<'_> {
    fn typed<T>(&self, s: &mut CudaStorage, l: &Layout) -> candle_core::Result<()>
    where
        T: CudaDType + NcclType + DeviceRepr,
    {
        let (a, b) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("NCCL send/recv need contiguous tensors".into()))?;
        let err = |op: &str, e: candle_core::cuda_backend::cudarc::nccl::result::NcclError| {
            candle_core::Error::Msg(format!("{op}: NCCL error {e:?}"))
        };
        let peer = self.peer as i32;
        if self.recv {
            let mut dst = s.as_cuda_slice_mut::<T>()?.slice_mut(a..b);
            self.g.run("RECV", |c| {
                c.recv(&mut dst, peer).map(|_| ()).map_err(|e| err("RECV", e))
            })
        } else {
            let src = s.as_cuda_slice::<T>()?.slice(a..b);
            self.g
                .run("SEND", |c| c.send(&src, peer).map_err(|e| err("SEND", e)))
        }
    }
}

impl candle_core::InplaceOp1 for P2p<'_> {
    fn name(&self) -> &'static str {
        "shoal-nccl-p2p"
    }

    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout) -> candle_core::Result<()> {
        candle_core::bail!("NCCL send/recv need CUDA tensors; use the cpu backend for CPU tensors")
    }

    fn cuda_fwd(&self, s: &mut CudaStorage, l: &Layout) -> candle_core::Result<()> {
        nccl_dtypes!(s.dtype(), "send/recv", T => self.typed::<T>(s, l))
    }
}

enum Kind {
    AllReduce(ReduceOp),
    AllGather(usize),
    Broadcast(usize),
}

struct Coll<'a> {
    g: &'a NcclGroup,
    kind: Kind,
}

impl Coll<'_> {
    fn typed<T>(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)>
    where
        T: CudaDType + NcclType + DeviceRepr + ValidAsZeroBits,
    {
        let dev = s.device.clone();
        let src = s.as_cuda_slice::<T>()?;
        let (a, b) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("NCCL collectives need contiguous tensors".into()))?;
        let src = src.slice(a..b);
        let n = b - a;
        let shape = l.shape().clone();
        let err = |op: &str, e: candle_core::cuda_backend::cudarc::nccl::result::NcclError| {
            candle_core::Error::Msg(format!("{op}: NCCL error {e:?}"))
        };
        match self.kind {
            Kind::AllReduce(op) => {
                let mut dst: CudaSlice<T> = dev.alloc_zeros(n)?;
                let nop = match op {
                    ReduceOp::Sum => NcclOp::Sum,
                    ReduceOp::Max => NcclOp::Max,
                };
                self.g.run("ALLREDUCE", |c| {
                    c.all_reduce(&src, &mut dst, &nop)
                        .map(|_| ())
                        .map_err(|e| err("ALLREDUCE", e))
                })?;
                Ok((CudaStorage::wrap_cuda_slice(dst, dev), shape))
            }
            Kind::AllGather(world) => {
                let mut dst: CudaSlice<T> = dev.alloc_zeros(n * world)?;
                self.g.run("ALLGATHER", |c| {
                    c.all_gather(&src, &mut dst)
                        .map(|_| ())
                        .map_err(|e| err("ALLGATHER", e))
                })?;
                let mut dims = vec![world];
                dims.extend_from_slice(shape.dims());
                Ok((CudaStorage::wrap_cuda_slice(dst, dev), Shape::from(dims)))
            }
            Kind::Broadcast(root) => {
                let mut dst: CudaSlice<T> = dev.alloc_zeros(n)?;
                self.g.run("BROADCAST", |c| {
                    c.broadcast(Some(&src), &mut dst, root as i32)
                        .map(|_| ())
                        .map_err(|e| err("BROADCAST", e))
                })?;
                Ok((CudaStorage::wrap_cuda_slice(dst, dev), shape))
            }
        }
    }
}

impl CustomOp1 for Coll<'_> {
    fn name(&self) -> &'static str {
        "shoal-nccl"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("NCCL collectives need CUDA tensors; use the cpu backend for CPU tensors")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        nccl_dtypes!(s.dtype(), "collectives", T => self.typed::<T>(s, l))
    }
}

/// The NCCL backend of the [`Communicator`] seam: CUDA tensors through NCCL (shapes
/// and dtypes through the store first where a receiver needs them), CPU tensors
/// through [`StoreComm`].
#[derive(Debug)]
pub(crate) struct NcclComm {
    group: NcclGroup,
}

impl NcclComm {
    /// The communicator of `rank` of `world` on the caller's `device`.
    pub(crate) fn new(
        store: &mut StoreClient,
        rank: usize,
        world: usize,
        device: CudaDevice,
        timeout: Duration,
    ) -> Result<Self> {
        Ok(NcclComm {
            group: NcclGroup::new(store, rank, world, &Device::Cuda(device), timeout)?,
        })
    }

    fn for_tensor(&self, t: &Tensor) -> Option<&NcclGroup> {
        t.device().is_cuda().then_some(&self.group)
    }

    /// Checks that every rank passes the same shape and dtype (debug mode).
    fn verify(&self, pg: &dyn ControlPlane, op: &str, t: &Tensor) -> Result<()> {
        if !pg.debug() {
            return Ok(());
        }
        let me = (t.dims().to_vec(), t.dtype().as_str().to_string());
        let mine = serde_json::to_vec(&me).map_err(|e| Error::Wire(e.to_string()))?;
        let all: Vec<(Vec<usize>, String)> = pg
            .all_gather_bytes(&mine)?
            .iter()
            .map(|b| serde_json::from_slice(b).map_err(|e| pg.coll_err(op, format!("malformed shape: {e}"))))
            .collect::<Result<_>>()?;
        if all.iter().any(|x| x != &me) {
            let per_rank: Vec<String> = all
                .iter()
                .enumerate()
                .map(|(r, (d, t))| format!("rank {r}: {d:?} {t}"))
                .collect();
            return Err(pg.coll_err(
                op,
                format!("shapes or dtypes differ across ranks: {}", per_rank.join("; ")),
            ));
        }
        Ok(())
    }
}

impl Communicator for NcclComm {
    fn all_gather(&self, pg: &dyn ControlPlane, t: &Tensor) -> Result<Vec<Tensor>> {
        let Some(n) = self.for_tensor(t) else {
            return StoreComm.all_gather(pg, t);
        };
        self.verify(pg, "all_gather", t)?;
        let world = pg.world_size();
        let stacked = n.all_gather(t, world)?;
        (0..world).map(|r| stacked.get(r).map_err(Error::from)).collect()
    }

    fn broadcast(
        &self,
        pg: &dyn ControlPlane,
        t: Option<&Tensor>,
        src: usize,
        device: &Device,
    ) -> Result<Tensor> {
        if !device.is_cuda() {
            return StoreComm.broadcast(pg, t, src, device);
        }
        // Receivers learn the shape and dtype through the store first.
        let meta = t
            .filter(|_| pg.rank() == src)
            .map(|t| (t.dims().to_vec(), t.dtype().as_str().to_string()));
        let mine = match &meta {
            Some(m) => Some(serde_json::to_vec(m).map_err(|e| Error::Wire(e.to_string()))?),
            None => None,
        };
        let got = pg.broadcast_bytes(mine.as_deref(), src)?;
        let (dims, dtype): (Vec<usize>, String) = serde_json::from_slice(&got)
            .map_err(|e| pg.coll_err("broadcast", format!("malformed shape: {e}")))?;
        let dtype = dtype
            .parse()
            .map_err(|_| pg.coll_err("broadcast", format!("unknown dtype {dtype}")))?;
        let buf = match t {
            Some(t) if pg.rank() == src => t.to_device(device)?,
            _ => Tensor::zeros(dims, dtype, device)?,
        };
        Ok(self.group.broadcast(&buf, src)?)
    }

    fn send(&self, pg: &dyn ControlPlane, t: &Tensor, dst: usize) -> Result<()> {
        let Some(n) = self.for_tensor(t) else {
            return StoreComm.send(pg, t, dst);
        };
        let meta = serde_json::to_vec(&(t.dims().to_vec(), t.dtype().as_str()))
            .map_err(|e| Error::Wire(e.to_string()))?;
        pg.send_bytes(&meta, dst)?;
        Ok(n.send(t, dst)?)
    }

    fn recv(&self, pg: &dyn ControlPlane, src: usize, device: &Device) -> Result<Tensor> {
        if !device.is_cuda() {
            return StoreComm.recv(pg, src, device);
        }
        let (dims, dtype): (Vec<usize>, String) = serde_json::from_slice(&pg.recv_bytes(src)?)
            .map_err(|e| pg.coll_err("recv", format!("malformed shape: {e}")))?;
        let dtype = dtype
            .parse()
            .map_err(|_| pg.coll_err("recv", format!("unknown dtype {dtype}")))?;
        let like = Tensor::zeros(dims, dtype, device)?;
        Ok(self.group.recv(&like, src)?)
    }

    fn send_known(&self, pg: &dyn ControlPlane, t: &Tensor, dst: usize) -> Result<()> {
        let Some(n) = self.for_tensor(t) else {
            return StoreComm.send_known(pg, t, dst);
        };
        // Only in debug mode does the shape travel, for the receiver to check.
        if pg.debug() {
            let meta = serde_json::to_vec(&(t.dims().to_vec(), t.dtype().as_str()))
                .map_err(|e| Error::Wire(e.to_string()))?;
            pg.send_bytes(&meta, dst)?;
        }
        Ok(n.send(t, dst)?)
    }

    fn recv_like(&self, pg: &dyn ControlPlane, src: usize, like: &Tensor) -> Result<Tensor> {
        if !like.device().is_cuda() {
            return StoreComm.recv_like(pg, src, like);
        }
        if pg.debug() {
            let (dims, dtype): (Vec<usize>, String) = serde_json::from_slice(&pg.recv_bytes(src)?)
                .map_err(|e| pg.coll_err("recv", format!("malformed shape: {e}")))?;
            crate::comm::check_like(pg, src, &dims, &dtype, like)?;
        }
        let buf = Tensor::zeros(like.dims(), like.dtype(), like.device())?;
        Ok(self.group.recv(&buf, src)?)
    }

    fn all_reduce(&self, pg: &dyn ControlPlane, t: &Tensor, op: ReduceOp) -> Result<Tensor> {
        let Some(n) = self.for_tensor(t) else {
            return StoreComm.all_reduce(pg, t, op);
        };
        self.verify(pg, "all_reduce", t)?;
        Ok(n.all_reduce(t, op)?)
    }
}
