//! The rendezvous store: a TCP key-value store, the analog of torch's `TCPStore`.
//!
//! Hosted by rank 0 (or by `shoal launch`) at `MASTER_ADDR:<store port>`. It
//! offers set / get / add / wait / delete / check, and every wait carries a
//! timeout, so no caller can block forever on a peer that never arrives. A
//! store with a secret closes every connection whose first frame is not a
//! `Hello` carrying it, before serving anything.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::wire::{Request, Response, read_frame, write_frame};

#[derive(Default)]
struct Shared {
    map: Mutex<HashMap<String, Vec<u8>>>,
    changed: Condvar,
    stop: AtomicBool,
    /// Clones of the open connections, by id, shut down when the server stops
    /// so that clients see a closed connection rather than a silent store; a
    /// connection removes its own entry when it ends (no descriptor is kept).
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: std::sync::atomic::AtomicU64,
    secret: Option<crate::secret::Secret>,
}

/// The most connections served at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 4096;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<u8>>> {
        // A poisoned lock only means a connection thread panicked mid-update of
        // an unrelated key; the map itself is still consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until every key is present, or returns the missing ones.
    fn wait_for(&self, keys: &[String], timeout: Duration) -> std::result::Result<(), Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut map = self.lock();
        loop {
            let missing: Vec<String> = keys.iter().filter(|k| !map.contains_key(*k)).cloned().collect();
            let now = Instant::now();
            if missing.is_empty() {
                return Ok(());
            }
            if now >= deadline || self.stop.load(Ordering::Relaxed) {
                return Err(missing);
            }
            map = self
                .changed
                .wait_timeout(map, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn handle(&self, req: Request, body: Vec<u8>) -> (Response, Vec<u8>) {
        match req {
            Request::Hello { .. } => (Response::Ok, Vec::new()),
            Request::Set { key } => {
                self.lock().insert(key, body);
                self.changed.notify_all();
                (Response::Ok, Vec::new())
            }
            Request::Get { key, timeout_ms } => {
                match self.wait_for(std::slice::from_ref(&key), Duration::from_millis(timeout_ms)) {
                    Ok(()) => {
                        let v = self.lock().get(&key).cloned().unwrap_or_default();
                        (Response::Ok, v)
                    }
                    Err(missing) => (Response::Timeout(missing), Vec::new()),
                }
            }
            Request::Add { key, delta } => {
                let mut map = self.lock();
                let cur = match map.get(&key) {
                    None => 0,
                    Some(v) => match std::str::from_utf8(v).ok().and_then(|s| s.parse::<i64>().ok()) {
                        Some(n) => n,
                        None => {
                            return (
                                Response::Invalid(format!("{key} does not hold an integer")),
                                Vec::new(),
                            );
                        }
                    },
                };
                let new = cur.saturating_add(delta);
                map.insert(key, new.to_string().into_bytes());
                drop(map);
                self.changed.notify_all();
                (Response::Int(new), Vec::new())
            }
            Request::Wait { keys, timeout_ms } => {
                match self.wait_for(&keys, Duration::from_millis(timeout_ms)) {
                    Ok(()) => (Response::Ok, Vec::new()),
                    Err(missing) => (Response::Timeout(missing), Vec::new()),
                }
            }
            Request::Delete { keys } => {
                let mut map = self.lock();
                for k in keys {
                    map.remove(&k);
                }
                (Response::Ok, Vec::new())
            }
            Request::Check { keys } => {
                let map = self.lock();
                (
                    Response::Present(keys.iter().map(|k| map.contains_key(k)).collect()),
                    Vec::new(),
                )
            }
        }
    }
}

/// A running store server; it stops when dropped.
pub struct StoreServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl StoreServer {
    /// Binds `addr` (port 0 picks a free port) and serves in background threads,
    /// to any client.
    pub fn bind(addr: impl ToSocketAddrs + std::fmt::Debug) -> Result<Self> {
        Self::bind_with_secret(addr, None)
    }

    /// Binds `addr`; with a secret, only clients that present it are served.
    pub fn bind_with_secret(
        addr: impl ToSocketAddrs + std::fmt::Debug,
        secret: Option<crate::secret::Secret>,
    ) -> Result<Self> {
        let what = format!("{addr:?}");
        let listener = TcpListener::bind(&addr).map_err(|e| {
            Error::io(
                format!("binding the rendezvous store to {what} (is the port in use?)"),
                e,
            )
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the store's address", e))?;
        let shared = Arc::new(Shared {
            secret,
            ..Shared::default()
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("shoal-store".into())
            .spawn(move || accept_loop(listener, s))
            .map_err(|e| Error::io("starting the store thread", e))?;
        Ok(StoreServer {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The address the server listens on (with the real port if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.changed.notify_all();
        // Wake the accept loop with one last connection.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        for (_, c) in self
            .shared
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            let _ = c.shutdown(Shutdown::Both);
        }
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(conn) = conn else { continue };
        let _ = conn.set_nodelay(true);
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        {
            let mut conns = shared.conns.lock().unwrap_or_else(|p| p.into_inner());
            if conns.len() >= MAX_CONNECTIONS {
                let _ = conn.shutdown(Shutdown::Both);
                continue;
            }
            if let Ok(c) = conn.try_clone() {
                conns.insert(id, c);
            }
        }
        let s = shared.clone();
        // A connection thread ends when its client disconnects, and forgets the connection.
        let spawned = std::thread::Builder::new()
            .name("shoal-store-conn".into())
            .spawn(move || {
                serve(conn, &s);
                s.conns.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            });
        if spawned.is_err() {
            shared.conns.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        }
    }
}

/// How long a new connection has to present the secret.
const HELLO_WITHIN: Duration = Duration::from_secs(30);

fn serve(conn: TcpStream, shared: &Shared) {
    let Ok(read_half) = conn.try_clone() else { return };
    let mut r = BufReader::new(read_half);
    let mut w = BufWriter::new(conn);
    if let Some(secret) = &shared.secret {
        let _ = r.get_ref().set_read_timeout(Some(HELLO_WITHIN));
        let ok = matches!(
            read_frame::<Request>(&mut r),
            Ok(Some((Request::Hello { token }, _))) if secret.matches(&token)
        );
        if !ok || write_frame(&mut w, &Response::Ok, &[]).is_err() {
            let _ = w.get_ref().shutdown(Shutdown::Both);
            return;
        }
        let _ = r.get_ref().set_read_timeout(None);
    }
    while let Ok(Some((req, body))) = read_frame::<Request>(&mut r) {
        let (resp, out) = shared.handle(req, body);
        if write_frame(&mut w, &resp, &out).is_err() {
            break;
        }
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
    }
    let _ = w.get_ref().shutdown(Shutdown::Both);
}

/// A connection to the store. Every call that waits takes a timeout.
pub struct StoreClient {
    addr: String,
    rank: usize,
    world: usize,
    r: BufReader<TcpStream>,
    w: BufWriter<TcpStream>,
}

impl std::fmt::Debug for StoreClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreClient({}, rank {}/{})", self.addr, self.rank, self.world)
    }
}

/// How often a client retries to connect while the store is not yet up.
const CONNECT_RETRY: Duration = Duration::from_millis(50);

impl StoreClient {
    /// Connects, retrying until `timeout` while the host is not listening yet.
    pub fn connect(addr: &str, rank: usize, world: usize, timeout: Duration) -> Result<Self> {
        Self::connect_with_secret(addr, rank, world, timeout, None)
    }

    /// Connects and, with a secret, presents it before anything else.
    pub fn connect_with_secret(
        addr: &str,
        rank: usize,
        world: usize,
        timeout: Duration,
        secret: Option<&crate::secret::Secret>,
    ) -> Result<Self> {
        let mut c = Self::connect_plain(addr, rank, world, timeout)?;
        if let Some(s) = secret {
            let refused = |why: String| Error::Store {
                rank,
                world,
                addr: addr.to_string(),
                detail: format!(
                    "the store refused this connection ({why}): every process of a job needs the same \
                     {} (shoal launch sets it for its workers)",
                    crate::secret::SHOAL_STORE_TOKEN
                ),
            };
            let _ =
                c.r.get_ref()
                    .set_read_timeout(Some(timeout.max(Duration::from_secs(1))));
            write_frame(
                &mut c.w,
                &Request::Hello {
                    token: s.expose().to_string(),
                },
                &[],
            )
            .map_err(|e| refused(e.to_string()))?;
            match read_frame::<Response>(&mut c.r) {
                Ok(Some((Response::Ok, _))) => {}
                Ok(Some((r, _))) => return Err(refused(format!("answer {r:?}"))),
                Ok(None) => return Err(refused("closed".into())),
                Err(e) => return Err(refused(e.to_string())),
            }
        }
        Ok(c)
    }

    fn connect_plain(addr: &str, rank: usize, world: usize, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let store_err = |detail: String| Error::Store {
            rank,
            world,
            addr: addr.to_string(),
            detail,
        };
        loop {
            let last = match addr.to_socket_addrs() {
                Err(e) => return Err(store_err(format!("cannot resolve the address: {e}"))),
                Ok(addrs) => {
                    let mut last = String::from("no address");
                    for a in addrs {
                        match TcpStream::connect_timeout(&a, CONNECT_RETRY.max(Duration::from_millis(500))) {
                            Ok(s) => return Self::from_stream(s, addr, rank, world),
                            Err(e) => last = e.to_string(),
                        }
                    }
                    last
                }
            };
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    rank,
                    world,
                    op: format!("connecting to the rendezvous store at {addr} ({last})"),
                    timeout,
                    missing: "rank 0 (the store's host)".into(),
                });
            }
            std::thread::sleep(CONNECT_RETRY);
        }
    }

    fn from_stream(s: TcpStream, addr: &str, rank: usize, world: usize) -> Result<Self> {
        let _ = s.set_nodelay(true);
        let r = s.try_clone().map_err(|e| Error::io("cloning a socket", e))?;
        Ok(StoreClient {
            addr: addr.to_string(),
            rank,
            world,
            r: BufReader::new(r),
            w: BufWriter::new(s),
        })
    }

    fn call(&mut self, req: Request, body: &[u8], timeout: Duration) -> Result<(Response, Vec<u8>)> {
        // The socket read waits a little longer than the server-side wait, so a
        // server-side timeout (which names the missing keys) arrives first.
        let _ = self
            .r
            .get_ref()
            .set_read_timeout(Some(timeout + Duration::from_secs(5)));
        let broken = |e: Error, addr: &str, rank, world| Error::Store {
            rank,
            world,
            addr: addr.to_string(),
            detail: format!(
                "connection lost ({e}); the store's host (rank 0 or the launcher) has probably exited"
            ),
        };
        write_frame(&mut self.w, &req, body)
            .map_err(|e| broken(Error::io("sending", e), &self.addr, self.rank, self.world))?;
        match read_frame::<Response>(&mut self.r) {
            Ok(Some(x)) => Ok(x),
            Ok(None) => Err(broken(
                Error::Wire("end of stream".into()),
                &self.addr,
                self.rank,
                self.world,
            )),
            Err(e) => Err(broken(e, &self.addr, self.rank, self.world)),
        }
    }

    fn unexpected(&self, op: &str, resp: Response) -> Error {
        Error::Store {
            rank: self.rank,
            world: self.world,
            addr: self.addr.clone(),
            detail: format!("{op}: unexpected answer {resp:?}"),
        }
    }

    /// Sets `key` to `value`.
    pub fn set(&mut self, key: &str, value: &[u8]) -> Result<()> {
        match self.call(Request::Set { key: key.into() }, value, Duration::from_secs(60))? {
            (Response::Ok, _) => Ok(()),
            (r, _) => Err(self.unexpected("set", r)),
        }
    }

    /// Gets `key`, waiting up to `timeout` for it to be set.
    pub fn get(&mut self, key: &str, timeout: Duration) -> Result<Vec<u8>> {
        let req = Request::Get {
            key: key.into(),
            timeout_ms: timeout.as_millis() as u64,
        };
        match self.call(req, &[], timeout)? {
            (Response::Ok, v) => Ok(v),
            (Response::Timeout(missing), _) => Err(self.timeout(format!("get {key}"), timeout, missing)),
            (r, _) => Err(self.unexpected("get", r)),
        }
    }

    /// Adds `delta` to the integer at `key` and returns the new value.
    pub fn add(&mut self, key: &str, delta: i64) -> Result<i64> {
        match self.call(
            Request::Add {
                key: key.into(),
                delta,
            },
            &[],
            Duration::from_secs(60),
        )? {
            (Response::Int(n), _) => Ok(n),
            (r, _) => Err(self.unexpected("add", r)),
        }
    }

    /// Waits until every key is set; the error lists the keys that never were.
    pub fn wait(&mut self, keys: &[String], timeout: Duration) -> Result<()> {
        match self.wait_missing(keys, timeout)? {
            missing if missing.is_empty() => Ok(()),
            missing => Err(self.timeout("wait".into(), timeout, missing)),
        }
    }

    /// Waits until every key is set and returns the keys that were still
    /// missing at the timeout (empty on success), for callers that name ranks.
    pub fn wait_missing(&mut self, keys: &[String], timeout: Duration) -> Result<Vec<String>> {
        let req = Request::Wait {
            keys: keys.to_vec(),
            timeout_ms: timeout.as_millis() as u64,
        };
        match self.call(req, &[], timeout)? {
            (Response::Ok, _) => Ok(Vec::new()),
            (Response::Timeout(missing), _) => Ok(missing),
            (r, _) => Err(self.unexpected("wait", r)),
        }
    }

    /// Removes keys.
    pub fn delete(&mut self, keys: &[String]) -> Result<()> {
        match self.call(
            Request::Delete { keys: keys.to_vec() },
            &[],
            Duration::from_secs(60),
        )? {
            (Response::Ok, _) => Ok(()),
            (r, _) => Err(self.unexpected("delete", r)),
        }
    }

    /// Which keys are set, without waiting.
    pub fn check(&mut self, keys: &[String]) -> Result<Vec<bool>> {
        match self.call(
            Request::Check { keys: keys.to_vec() },
            &[],
            Duration::from_secs(60),
        )? {
            (Response::Present(p), _) => Ok(p),
            (r, _) => Err(self.unexpected("check", r)),
        }
    }

    fn timeout(&self, op: String, timeout: Duration, missing: Vec<String>) -> Error {
        Error::Timeout {
            rank: self.rank,
            world: self.world,
            op,
            timeout,
            missing: missing.join(", "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (StoreServer, StoreClient) {
        let server = StoreServer::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().to_string();
        let client = StoreClient::connect(&addr, 0, 1, Duration::from_secs(5)).unwrap();
        (server, client)
    }

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
    }

    /// The process's virtual size: an allocation sized from an announced length shows here at once.
    fn vsize_bytes() -> u64 {
        let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        s.split_whitespace()
            .next()
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(0)
            * 4096
    }

    #[test]
    fn a_store_with_a_secret_serves_only_those_who_present_it() {
        use std::io::Write;
        let secret = crate::secret::Secret::parse("the-right-secret-value").unwrap();
        let server = StoreServer::bind_with_secret("127.0.0.1:0", Some(secret.clone())).unwrap();
        let addr = server.local_addr().to_string();
        let t = Duration::from_secs(2);
        // A raw client that sends a request first is cut off, and nothing is stored.
        let mut raw = TcpStream::connect(server.local_addr()).unwrap();
        let mut frame = Vec::new();
        write_frame(
            &mut frame,
            &Request::Set {
                key: "shoal/job/rec/0".into(),
            },
            b"INJECTED",
        )
        .unwrap();
        raw.write_all(&frame).unwrap();
        let _ = raw.set_read_timeout(Some(t));
        let mut r = BufReader::new(raw);
        assert!(matches!(read_frame::<Response>(&mut r), Ok(None) | Err(_)));
        // A wrong secret is refused with an error that says what to set.
        let wrong = crate::secret::Secret::parse("a-wrong-secret-value").unwrap();
        let e = StoreClient::connect_with_secret(&addr, 1, 2, t, Some(&wrong))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("SHOAL_STORE_TOKEN") && !e.contains("a-wrong-secret-value"),
            "{e}"
        );
        // No secret at all: the first request is not served.
        let mut none = StoreClient::connect(&addr, 1, 2, t).unwrap();
        assert!(none.set("k", b"v").is_err());
        // The right secret works, and the forged record never landed.
        let mut ok = StoreClient::connect_with_secret(&addr, 0, 2, t, Some(&secret)).unwrap();
        assert_eq!(ok.check(&["shoal/job/rec/0".to_string()]).unwrap(), vec![false]);
        ok.set("k", b"v").unwrap();
        assert_eq!(ok.get("k", t).unwrap(), b"v");
    }

    #[test]
    fn closed_connections_release_their_descriptors() {
        let (server, mut c) = pair();
        c.set("k", b"v").unwrap();
        let addr = server.local_addr().to_string();
        let before = open_fds();
        for _ in 0..300 {
            let mut x = StoreClient::connect(&addr, 1, 2, Duration::from_secs(5)).unwrap();
            x.set("k", b"w").unwrap();
        }
        // Connection threads forget their sockets as the clients go.
        let deadline = Instant::now() + Duration::from_secs(10);
        while open_fds() > before + 8 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            open_fds() <= before + 8,
            "{} descriptors open, {before} before",
            open_fds()
        );
        assert_eq!(c.get("k", Duration::from_secs(1)).unwrap(), b"w");
    }

    #[test]
    fn an_announced_huge_body_allocates_nothing() {
        use std::io::Write;
        let (server, mut c) = pair();
        let before = vsize_bytes();
        let mut raws = Vec::new();
        for _ in 0..8 {
            let mut raw = TcpStream::connect(server.local_addr()).unwrap();
            let header = serde_json::to_vec(&Request::Set { key: "big".into() }).unwrap();
            raw.write_all(&(header.len() as u32).to_le_bytes()).unwrap();
            raw.write_all(&(4u64 << 30).to_le_bytes()).unwrap();
            raw.write_all(&header).unwrap();
            raw.write_all(&[7u8; 1000]).unwrap();
            raws.push(raw);
        }
        std::thread::sleep(Duration::from_millis(300));
        let grown = vsize_bytes().saturating_sub(before);
        assert!(
            grown < 1 << 30,
            "8 clients announcing 4 GiB grew the store by {grown} bytes"
        );
        // The store still serves everyone else.
        c.set("small", b"ok").unwrap();
        assert_eq!(c.get("small", Duration::from_secs(1)).unwrap(), b"ok");
        drop(raws);
    }

    #[test]
    fn set_get_add_delete_check() {
        let (_s, mut c) = pair();
        c.set("a", b"1").unwrap();
        assert_eq!(c.get("a", Duration::from_secs(1)).unwrap(), b"1");
        assert_eq!(c.add("n", 2).unwrap(), 2);
        assert_eq!(c.add("n", 3).unwrap(), 5);
        assert_eq!(c.check(&["a".into(), "b".into()]).unwrap(), [true, false]);
        c.delete(&["a".into()]).unwrap();
        assert_eq!(c.check(&["a".into()]).unwrap(), [false]);
        // `add` on a non-integer is refused, not silently reset.
        c.set("s", b"text").unwrap();
        assert!(c.add("s", 1).is_err());
    }

    #[test]
    fn get_waits_for_a_later_set() {
        let (s, mut c) = pair();
        let addr = s.local_addr().to_string();
        let t = std::thread::spawn(move || {
            let mut c2 = StoreClient::connect(&addr, 1, 2, Duration::from_secs(5)).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            c2.set("late", b"v").unwrap();
        });
        assert_eq!(c.get("late", Duration::from_secs(5)).unwrap(), b"v");
        t.join().unwrap();
    }

    #[test]
    fn waits_time_out_naming_the_missing_keys() {
        let (_s, mut c) = pair();
        c.set("k0", b"").unwrap();
        let start = Instant::now();
        let err = c
            .wait(&["k0".into(), "k1".into()], Duration::from_millis(300))
            .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(3));
        let msg = err.to_string();
        assert!(msg.contains("k1") && !msg.contains("k0,"), "{msg}");
        assert!(matches!(err, Error::Timeout { .. }));
        let err = c.get("never", Duration::from_millis(100)).unwrap_err();
        assert!(err.to_string().contains("never"));
    }

    #[test]
    fn connect_times_out_when_nobody_listens() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err =
            StoreClient::connect(&format!("127.0.0.1:{port}"), 1, 2, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
    }

    #[test]
    fn a_dropped_server_breaks_clients_with_a_clear_error() {
        let (s, mut c) = pair();
        drop(s);
        let err = c.get("x", Duration::from_secs(2)).unwrap_err();
        assert!(
            matches!(err, Error::Store { .. } | Error::Timeout { .. }),
            "{err}"
        );
    }
}
