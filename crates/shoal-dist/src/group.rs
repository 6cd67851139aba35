//! Process groups: barrier, broadcast, gather and all-gather of objects and
//! tensors, send / recv, all-reduce; the analog of `torch.distributed`.
//!
//! The CPU backend moves everything through the rendezvous store (like torch's
//! store-based fallbacks); the NCCL backend (issue 4) keeps the same API.
//! Every collective has a sequence number and every wait a timeout; a timeout
//! names the ranks that never arrived. Object collectives return results in
//! rank order and never flatten them (unlike accelerate's `gather_object`).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use candle_core::{Device, Tensor};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::comm::{Communicator, ControlPlane, ReduceOp, StoreComm};
use crate::env::DistEnv;
use crate::error::{Error, Result};
pub use crate::options::{Backend, DEFAULT_TIMEOUT, GroupOptions, SHOAL_TIMEOUT, explicit_env};
use crate::store::{StoreClient, StoreServer};

struct Inner {
    store: StoreClient,
    seq: u64,
    sent: BTreeMap<usize, u64>,
    received: BTreeMap<usize, u64>,
}

/// A group of processes that run collectives together.
pub struct ProcessGroup {
    env: DistEnv,
    backend: Backend,
    opts: GroupOptions,
    inner: Option<Mutex<Inner>>,
    /// The tensor collectives, chosen once here: the store for the cpu backend,
    /// NCCL (with the store for CPU tensors) for nccl.
    comm: Box<dyn Communicator>,
    // Dropped last: the store must outlive this rank's own client.
    _server: Option<StoreServer>,
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ProcessGroup({:?}, rank {}/{})",
            self.backend, self.env.rank, self.env.world_size
        )
    }
}

/// `torch.distributed.init_process_group(backend, rank=, world_size=)`: ranks
/// given explicitly; the store address comes from `MASTER_ADDR`/`MASTER_PORT`
/// (default `127.0.0.1:29500`) and the timeout from `SHOAL_TIMEOUT`.
pub fn init_process_group(backend: &str, rank: usize, world_size: usize) -> Result<ProcessGroup> {
    let vars: BTreeMap<String, String> = std::env::vars().collect();
    let backend: Backend = backend.parse()?;
    let env = explicit_env(&vars, rank, world_size)?;
    ProcessGroup::new(env, backend, GroupOptions::from_env(&vars)?)
}

impl ProcessGroup {
    /// Joins the group described by `env`: rank 0 hosts the store unless the
    /// launcher does, everyone connects and waits for everyone else.
    pub fn new(env: DistEnv, backend: Backend, opts: GroupOptions) -> Result<Self> {
        let device = match backend {
            Backend::Nccl => Some(crate::device::local_cuda_device(&env)?),
            Backend::Cpu => None,
        };
        Self::with_device(env, backend, opts, device)
    }

    /// Joins the group with the CUDA device the caller chose for this rank
    /// (required for NCCL, ignored for the cpu backend).
    pub fn with_device(
        env: DistEnv,
        backend: Backend,
        opts: GroupOptions,
        device: Option<Device>,
    ) -> Result<Self> {
        #[cfg(not(feature = "nccl"))]
        if backend == Backend::Nccl {
            let _ = device;
            return Err(Error::Backend {
                backend: "nccl".into(),
                detail: "this build has no NCCL support; rebuild with `--features nccl` \
                         (scripts/gpu/build.sh) or use the cpu backend"
                    .into(),
            });
        }
        if env.world_size == 1 && backend == Backend::Cpu {
            return Ok(ProcessGroup {
                env,
                backend,
                opts,
                inner: None,
                comm: Box::new(StoreComm),
                _server: None,
            });
        }
        let server = if env.rank == 0 && !env.store_hosted {
            Some(bind_store(&env, opts.token.clone())?)
        } else {
            None
        };
        let addr = match &server {
            Some(s) => format!("127.0.0.1:{}", s.local_addr().port()),
            None => env.store_addr(),
        };
        #[allow(unused_mut, reason = "mutated only by the NCCL build")]
        let mut store = StoreClient::connect_with_secret(
            &addr,
            env.rank,
            env.world_size,
            opts.timeout,
            opts.token.as_ref(),
        )?;
        let comm: Box<dyn Communicator> = match backend {
            Backend::Cpu => Box::new(StoreComm),
            #[cfg(feature = "nccl")]
            Backend::Nccl => {
                let device = match device {
                    Some(Device::Cuda(d)) => d,
                    other => {
                        return Err(Error::Backend {
                            backend: "nccl".into(),
                            detail: format!(
                                "rank {}/{}: NCCL needs a CUDA device, got {other:?}",
                                env.rank, env.world_size
                            ),
                        });
                    }
                };
                Box::new(crate::nccl::NcclComm::new(
                    &mut store,
                    env.rank,
                    env.world_size,
                    device,
                    opts.timeout,
                )?)
            }
            #[cfg(not(feature = "nccl"))]
            Backend::Nccl => Box::new(StoreComm),
        };
        let pg = ProcessGroup {
            env,
            backend,
            opts,
            inner: Some(Mutex::new(Inner {
                store,
                seq: 0,
                sent: BTreeMap::new(),
                received: BTreeMap::new(),
            })),
            comm,
            _server: server,
        };
        pg.barrier_named("init_process_group")?;
        Ok(pg)
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.env.rank
    }

    /// The number of processes.
    pub fn world_size(&self) -> usize {
        self.env.world_size
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The environment this group was built from.
    pub fn env(&self) -> &DistEnv {
        &self.env
    }

    /// Leaves the group. The rank that hosts the store waits (up to the
    /// timeout) until every other rank has left, so that no peer loses the
    /// store in the middle of its last collective. Dropping the group does the
    /// same, ignoring errors.
    pub fn destroy(mut self) -> Result<()> {
        self.leave()
    }

    fn leave(&mut self) -> Result<()> {
        let Some(m) = self.inner.take() else { return Ok(()) };
        let mut inner = m.into_inner().unwrap_or_else(|p| p.into_inner());
        inner.store.set(&format!("leave/{}", self.env.rank), &[])?;
        if self._server.is_some() {
            let keys: Vec<String> = (0..self.env.world_size).map(|r| format!("leave/{r}")).collect();
            let missing = inner.store.wait_missing(&keys, self.opts.timeout)?;
            if !missing.is_empty() {
                let ranks: Vec<usize> = missing
                    .iter()
                    .filter_map(|k| k.rsplit('/').next()?.parse().ok())
                    .collect();
                return Err(self.timeout_err("destroy_process_group", &ranks));
            }
        }
        Ok(())
    }

    fn lock(&self) -> Option<MutexGuard<'_, Inner>> {
        self.inner
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn timeout_err(&self, op: &str, missing: &[usize]) -> Error {
        Error::Timeout {
            rank: self.env.rank,
            world: self.env.world_size,
            op: op.to_string(),
            timeout: self.opts.timeout,
            missing: missing
                .iter()
                .map(|r| format!("rank {r}"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// Posts `value` as this rank's part of collective `seq`, waits until the
    /// ranks in `wait_for` posted theirs, and returns the op's key prefix.
    fn post_and_wait(
        &self,
        inner: &mut Inner,
        op: &str,
        value: Option<&[u8]>,
        wait_for: &[usize],
    ) -> Result<String> {
        inner.seq += 1;
        let prefix = format!("c{}", inner.seq);
        if let Some(v) = value {
            inner.store.set(&format!("{prefix}/{}", self.env.rank), v)?;
        }
        let keys: Vec<String> = wait_for.iter().map(|r| format!("{prefix}/{r}")).collect();
        let missing = inner.store.wait_missing(&keys, self.opts.timeout)?;
        if !missing.is_empty() {
            let ranks: Vec<usize> = missing
                .iter()
                .filter_map(|k| k.rsplit('/').next()?.parse().ok())
                .collect();
            return Err(self.timeout_err(&format!("{op} (collective #{})", inner.seq), &ranks));
        }
        Ok(prefix)
    }

    /// Counts this rank out of collective `prefix`; the last one deletes its keys.
    fn finish(&self, inner: &mut Inner, prefix: &str, participants: usize, keys: Vec<String>) -> Result<()> {
        let n = inner.store.add(&format!("{prefix}/done"), 1)?;
        if n as usize == participants {
            let mut keys = keys;
            keys.push(format!("{prefix}/done"));
            inner.store.delete(&keys)?;
        }
        Ok(())
    }

    fn all_ranks(&self) -> Vec<usize> {
        (0..self.env.world_size).collect()
    }

    fn barrier_named(&self, op: &str) -> Result<()> {
        let Some(mut inner) = self.lock() else {
            return Ok(());
        };
        let ranks = self.all_ranks();
        let prefix = self.post_and_wait(&mut inner, op, Some(&[]), &ranks)?;
        let keys = ranks.iter().map(|r| format!("{prefix}/{r}")).collect();
        self.finish(&mut inner, &prefix, ranks.len(), keys)
    }

    /// Blocks until every rank has called `barrier`.
    pub fn barrier(&self) -> Result<()> {
        self.barrier_named("barrier")
    }

    /// Every rank's bytes, in rank order.
    pub fn all_gather_bytes(&self, value: &[u8]) -> Result<Vec<Vec<u8>>> {
        let Some(mut inner) = self.lock() else {
            return Ok(vec![value.to_vec()]);
        };
        let ranks = self.all_ranks();
        let prefix = self.post_and_wait(&mut inner, "all_gather", Some(value), &ranks)?;
        let keys: Vec<String> = ranks.iter().map(|r| format!("{prefix}/{r}")).collect();
        let mut out = Vec::with_capacity(ranks.len());
        for k in &keys {
            out.push(inner.store.get(k, self.opts.timeout)?);
        }
        self.finish(&mut inner, &prefix, ranks.len(), keys)?;
        Ok(out)
    }

    /// `src`'s bytes on every rank; `value` is read on `src` only.
    pub fn broadcast_bytes(&self, value: Option<&[u8]>, src: usize) -> Result<Vec<u8>> {
        self.check_rank("broadcast", "src", src)?;
        let Some(mut inner) = self.lock() else {
            return value
                .map(<[u8]>::to_vec)
                .ok_or_else(|| self.missing_value("broadcast"));
        };
        let mine = if self.env.rank == src {
            Some(value.ok_or_else(|| self.missing_value("broadcast"))?)
        } else {
            None
        };
        let prefix = self.post_and_wait(&mut inner, "broadcast", mine, &[src])?;
        let key = format!("{prefix}/{src}");
        let out = inner.store.get(&key, self.opts.timeout)?;
        self.finish(&mut inner, &prefix, self.env.world_size, vec![key])?;
        Ok(out)
    }

    /// Every rank's bytes on `dst` (in rank order); `None` on the other ranks.
    pub fn gather_bytes(&self, value: &[u8], dst: usize) -> Result<Option<Vec<Vec<u8>>>> {
        self.check_rank("gather", "dst", dst)?;
        let Some(mut inner) = self.lock() else {
            return Ok(Some(vec![value.to_vec()]));
        };
        let ranks = self.all_ranks();
        let wait: &[usize] = if self.env.rank == dst { &ranks } else { &[] };
        let prefix = self.post_and_wait(&mut inner, "gather", Some(value), wait)?;
        if self.env.rank != dst {
            return Ok(None);
        }
        let keys: Vec<String> = ranks.iter().map(|r| format!("{prefix}/{r}")).collect();
        let mut out = Vec::with_capacity(ranks.len());
        for k in &keys {
            out.push(inner.store.get(k, self.opts.timeout)?);
        }
        inner.store.delete(&keys)?;
        Ok(Some(out))
    }

    /// Sends bytes to `dst`; they wait in the store until `dst` receives them.
    pub fn send_bytes(&self, value: &[u8], dst: usize) -> Result<()> {
        self.check_peer("send", "dst", dst)?;
        let Some(mut inner) = self.lock() else {
            return Ok(());
        };
        let n = inner.sent.entry(dst).or_default();
        *n += 1;
        let key = format!("p2p/{}/{dst}/{n}", self.env.rank);
        inner.store.set(&key, value)
    }

    /// Receives the next bytes `src` sent to this rank.
    pub fn recv_bytes(&self, src: usize) -> Result<Vec<u8>> {
        self.check_peer("recv", "src", src)?;
        let Some(mut inner) = self.lock() else {
            return Err(self.missing_value("recv"));
        };
        let n = inner.received.entry(src).or_default();
        *n += 1;
        let key = format!("p2p/{src}/{}/{n}", self.env.rank);
        let missing = inner
            .store
            .wait_missing(std::slice::from_ref(&key), self.opts.timeout)?;
        if !missing.is_empty() {
            return Err(self.timeout_err(&format!("recv from rank {src}"), &[src]));
        }
        let v = inner.store.get(&key, self.opts.timeout)?;
        inner.store.delete(&[key])?;
        Ok(v)
    }

    // ---- the store, for coordination that is not a collective ------------

    fn kv<T>(&self, f: impl FnOnce(&mut StoreClient) -> Result<T>) -> Result<T> {
        let mut inner = self.lock().ok_or_else(|| Error::Backend {
            backend: "store".into(),
            detail: "a single-process group has no rendezvous store".into(),
        })?;
        f(&mut inner.store)
    }

    /// Sets a key in the job's store (world size > 1).
    pub fn kv_set(&self, key: &str, value: &[u8]) -> Result<()> {
        self.kv(|s| s.set(key, value))
    }

    /// Gets a key, waiting up to the group's timeout.
    pub fn kv_get(&self, key: &str) -> Result<Vec<u8>> {
        let t = self.opts.timeout;
        self.kv(|s| s.get(key, t))
    }

    /// Adds to the integer at a key and returns the new value (a shared counter).
    pub fn kv_add(&self, key: &str, delta: i64) -> Result<i64> {
        self.kv(|s| s.add(key, delta))
    }

    /// Which keys are set, without waiting.
    pub fn kv_check(&self, keys: &[String]) -> Result<Vec<bool>> {
        self.kv(|s| s.check(keys))
    }

    /// Removes keys.
    pub fn kv_delete(&self, keys: &[String]) -> Result<()> {
        self.kv(|s| s.delete(keys))
    }

    fn check_rank(&self, op: &str, field: &'static str, r: usize) -> Result<()> {
        if r >= self.env.world_size {
            return Err(Error::InvalidArgument {
                field,
                value: r.to_string(),
                detail: format!("{op}: ranks go from 0 to {}", self.env.world_size - 1),
            });
        }
        Ok(())
    }

    fn check_peer(&self, op: &str, field: &'static str, r: usize) -> Result<()> {
        self.check_rank(op, field, r)?;
        if r == self.env.rank {
            return Err(Error::InvalidArgument {
                field,
                value: r.to_string(),
                detail: format!("{op}: a rank cannot {op} to or from itself"),
            });
        }
        Ok(())
    }

    pub(crate) fn missing_value(&self, op: &str) -> Error {
        Error::Collective {
            rank: self.env.rank,
            world: self.env.world_size,
            op: op.into(),
            detail: "the source rank must pass a value".into(),
        }
    }

    pub(crate) fn coll_err(&self, op: &str, detail: String) -> Error {
        Error::Collective {
            rank: self.env.rank,
            world: self.env.world_size,
            op: op.into(),
            detail,
        }
    }

    // ---- objects -------------------------------------------------------

    fn encode<T: Serialize>(&self, op: &str, v: &T) -> Result<Vec<u8>> {
        serde_json::to_vec(v).map_err(|e| self.coll_err(op, format!("cannot serialize: {e}")))
    }

    pub(crate) fn decode<T: DeserializeOwned>(&self, op: &str, b: &[u8]) -> Result<T> {
        serde_json::from_slice(b)
            .map_err(|e| self.coll_err(op, format!("cannot deserialize a peer's value: {e}")))
    }

    /// Every rank's object, in rank order, on every rank (not flattened).
    pub fn all_gather_object<T: Serialize + DeserializeOwned>(&self, v: &T) -> Result<Vec<T>> {
        let b = self.encode("all_gather_object", v)?;
        self.all_gather_bytes(&b)?
            .iter()
            .map(|b| self.decode("all_gather_object", b))
            .collect()
    }

    /// Every rank's object on `dst`, in rank order; `None` elsewhere.
    pub fn gather_object<T: Serialize + DeserializeOwned>(
        &self,
        v: &T,
        dst: usize,
    ) -> Result<Option<Vec<T>>> {
        let b = self.encode("gather_object", v)?;
        match self.gather_bytes(&b, dst)? {
            None => Ok(None),
            Some(all) => all
                .iter()
                .map(|b| self.decode("gather_object", b))
                .collect::<Result<_>>()
                .map(Some),
        }
    }

    /// `src`'s object on every rank; `v` is read on `src` only.
    pub fn broadcast_object<T: Serialize + DeserializeOwned>(&self, v: Option<&T>, src: usize) -> Result<T> {
        let b = match v {
            Some(v) if self.env.rank == src => Some(self.encode("broadcast_object", v)?),
            _ => None,
        };
        let out = self.broadcast_bytes(b.as_deref(), src)?;
        self.decode("broadcast_object", &out)
    }

    // ---- tensors -------------------------------------------------------

    /// Every rank's tensor, in rank order. Shapes and dtypes must agree; the
    /// error lists them per rank when they do not.
    pub fn all_gather(&self, t: &Tensor) -> Result<Vec<Tensor>> {
        self.comm.all_gather(self, t)
    }

    /// `src`'s tensor on every rank; `t` is read on `src` only.
    pub fn broadcast(&self, t: Option<&Tensor>, src: usize, device: &Device) -> Result<Tensor> {
        self.comm.broadcast(self, t, src, device)
    }

    /// Sends a tensor to `dst`.
    pub fn send(&self, t: &Tensor, dst: usize) -> Result<()> {
        self.comm.send(self, t, dst)
    }

    /// Receives the next tensor `src` sent.
    pub fn recv(&self, src: usize, device: &Device) -> Result<Tensor> {
        self.comm.recv(self, src, device)
    }

    /// Sends `t` to `dst`, which knows its shape and dtype and takes it with
    /// [`ProcessGroup::recv_like`]: on NCCL only the data moves (no message
    /// through the store), so a per-step exchange never waits on the host.
    pub fn send_known(&self, t: &Tensor, dst: usize) -> Result<()> {
        self.check_peer("send", "dst", dst)?;
        self.comm.send_known(self, t, dst)
    }

    /// The next tensor `src` sent with [`ProcessGroup::send_known`], of
    /// `like`'s shape and dtype, on its device.
    pub fn recv_like(&self, src: usize, like: &Tensor) -> Result<Tensor> {
        self.check_peer("recv", "src", src)?;
        self.comm.recv_like(self, src, like)
    }

    /// The element-wise reduction of every rank's tensor.
    pub fn all_reduce(&self, t: &Tensor, op: ReduceOp) -> Result<Tensor> {
        self.comm.all_reduce(self, t, op)
    }
}

impl ControlPlane for ProcessGroup {
    fn rank(&self) -> usize {
        self.env.rank
    }
    fn world_size(&self) -> usize {
        self.env.world_size
    }
    fn debug(&self) -> bool {
        self.opts.debug
    }
    fn coll_err(&self, op: &str, detail: String) -> Error {
        ProcessGroup::coll_err(self, op, detail)
    }
    fn all_gather_bytes(&self, value: &[u8]) -> Result<Vec<Vec<u8>>> {
        ProcessGroup::all_gather_bytes(self, value)
    }
    fn broadcast_bytes(&self, value: Option<&[u8]>, src: usize) -> Result<Vec<u8>> {
        ProcessGroup::broadcast_bytes(self, value, src)
    }
    fn send_bytes(&self, value: &[u8], dst: usize) -> Result<()> {
        ProcessGroup::send_bytes(self, value, dst)
    }
    fn recv_bytes(&self, src: usize) -> Result<Vec<u8>> {
        ProcessGroup::recv_bytes(self, src)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let _ = self.leave();
    }
}

fn bind_store(env: &DistEnv, secret: Option<crate::secret::Secret>) -> Result<StoreServer> {
    // Bind every interface when the master address is not a local one; the
    // port is what other machines were told.
    match StoreServer::bind_with_secret((env.master_addr.as_str(), env.store_port), secret.clone()) {
        Ok(s) => Ok(s),
        Err(_) => StoreServer::bind_with_secret(("0.0.0.0", env.store_port), secret),
    }
}
