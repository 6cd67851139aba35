//! Rank 0's monitor, on its own thread: records into the manifest, the bar,
//! and the bounded wait for every rank's end. Other ranks report through the
//! store and keep a heartbeat there.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shoal_dist::ProcessGroup;
use shoal_jobs::Record;
use shoal_jobs::manifest::append_records;

use crate::error::{Error, Result};

/// Where rank 0 shows the job's progress: the monitor reports the items
/// recorded (every rank's), rank 0's block loop its model calls.
pub trait Progress: Sync {
    /// `done` of `total` items of this run recorded.
    fn images(&self, done: usize, total: usize);
    /// Model call `step` of `steps` of rank 0's current block.
    fn step(&self, step: usize, steps: usize);
}

impl std::fmt::Debug for dyn Progress + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// Store key prefix of a record (`…/{index}`).
pub const REC: &str = "shoal/job/rec/";
/// Store key prefix of a rank's end (`…/{rank}`).
pub const FINISHED: &str = "shoal/job/finished/";
/// Store key prefix of a rank's heartbeat counter (`…/{rank}`).
pub const ALIVE: &str = "shoal/job/alive/";
/// How often a rank beats, and how often rank 0 looks.
pub const BEAT: Duration = Duration::from_millis(500);

/// What a rank says when its share is done.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Finished {
    /// Images made.
    pub made: usize,
    /// Seconds spent generating and writing (not waiting).
    pub busy_s: f64,
}

/// From rank 0's worker thread to its monitor.
pub enum Msg {
    /// Records of images just written.
    Records(Vec<Record>),
    /// Rank 0's own share is done.
    Done(Finished),
}

/// What the monitor found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Records written.
    pub done: usize,
    /// Records per rank.
    pub per_rank: Vec<usize>,
    /// Busy seconds per rank.
    pub busy_s: Vec<f64>,
}

/// Rank 0's monitor state.
pub struct Monitor<'a> {
    /// Item → the rank that must record it (the static schedule); `None` when
    /// blocks are claimed at run time.
    pub(crate) owner: Option<std::collections::HashMap<usize, usize>>,
    pub(crate) pg: Option<&'a ProcessGroup>,
    pub(crate) world: usize,
    pub(crate) manifest: PathBuf,
    pub(crate) outstanding: BTreeSet<usize>,
    pub(crate) total: usize,
    pub(crate) progress: Option<&'a dyn Progress>,
    pub(crate) timeout: Duration,
    pub(crate) done: usize,
    pub(crate) per_rank: Vec<usize>,
    pub(crate) busy_s: Vec<f64>,
}

impl Monitor<'_> {
    /// Runs until every rank has finished and every item is recorded, or a rank
    /// stops beating for the timeout, or the worker thread hangs up.
    pub fn run(mut self, rx: Receiver<Msg>) -> Result<Outcome> {
        let mut own: Option<Finished> = None;
        let mut finished: Vec<Option<Finished>> = vec![None; self.world];
        // Last heartbeat value seen, and when it changed.
        let mut beats: Vec<(Option<Vec<u8>>, Instant)> = vec![(None, Instant::now()); self.world];
        loop {
            match rx.recv_timeout(BEAT) {
                Ok(Msg::Records(r)) => self.record(r)?,
                Ok(Msg::Done(f)) => own = Some(f),
                Err(RecvTimeoutError::Timeout) => {}
                // The worker failed; its error is the one to report.
                Err(RecvTimeoutError::Disconnected) if own.is_none() => {
                    return Ok(self.outcome());
                }
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(BEAT),
            }
            self.collect()?;
            self.draw();
            let Some(own) = own else { continue };
            finished[0] = Some(own);
            let Some(pg) = self.pg else { break };
            for r in 1..self.world {
                if finished[r].is_some() {
                    continue;
                }
                let key = format!("{FINISHED}{r}");
                if pg.kv_check(std::slice::from_ref(&key))?.first() == Some(&true) {
                    let v = pg.kv_get(&key)?;
                    let f: Finished = serde_json::from_slice(&v)
                        .map_err(|e| Error::Peer(format!("{key} from rank {r}: malformed: {e}")))?;
                    finished[r] = Some(f);
                    continue;
                }
                let alive = format!("{ALIVE}{r}");
                let beat = if pg.kv_check(std::slice::from_ref(&alive))?.first() == Some(&true) {
                    Some(pg.kv_get(&alive)?)
                } else {
                    None
                };
                let (last, since) = &mut beats[r];
                if beat.is_some() && beat != *last {
                    *last = beat;
                    *since = Instant::now();
                } else if since.elapsed() > self.timeout {
                    return Err(Error::Peer(format!(
                        "rank {r}/{} stopped: no heartbeat for {:.0} s (SHOAL_TIMEOUT {:.0} s) while rank 0 waited \
                         for it to finish its share",
                        self.world,
                        since.elapsed().as_secs_f64(),
                        self.timeout.as_secs_f64()
                    )));
                }
            }
            if finished.iter().all(Option::is_some) {
                self.collect()?;
                break;
            }
        }
        for (r, f) in finished.iter().enumerate() {
            if let (Some(f), Some(b)) = (f, self.busy_s.get_mut(r)) {
                *b = f.busy_s;
            }
        }
        if let Some(f) = own
            && let Some(b) = self.busy_s.first_mut()
        {
            *b = f.busy_s;
        }
        if !self.outstanding.is_empty() {
            let missing: Vec<usize> = self.outstanding.iter().take(20).copied().collect();
            return Err(Error::Peer(format!(
                "{} item(s) were never recorded although every rank finished (first: {missing:?}); \
                 run again with --resume to make them",
                self.outstanding.len()
            )));
        }
        self.draw();
        Ok(self.outcome())
    }

    fn outcome(&self) -> Outcome {
        Outcome {
            done: self.done,
            per_rank: self.per_rank.clone(),
            busy_s: self.busy_s.clone(),
        }
    }

    fn record(&mut self, records: Vec<Record>) -> Result<()> {
        for r in &records {
            self.outstanding.remove(&r.index);
            self.done += 1;
            if let Some(n) = r.rank.and_then(|rk| self.per_rank.get_mut(rk)) {
                *n += 1;
            }
        }
        append_records(&self.manifest, &records)?;
        Ok(())
    }

    /// Moves other ranks' records from the store into the manifest. Only
    /// outstanding items are looked up, so a record for anything else never enters.
    fn collect(&mut self) -> Result<()> {
        let Some(pg) = self.pg else { return Ok(()) };
        let keys: Vec<(usize, String)> = self
            .outstanding
            .iter()
            .map(|i| (*i, format!("{REC}{i}")))
            .collect();
        for chunk in keys.chunks(1024) {
            let names: Vec<String> = chunk.iter().map(|(_, k)| k.clone()).collect();
            let present = pg.kv_check(&names)?;
            let mut got = Vec::new();
            for ((i, k), p) in chunk.iter().zip(present) {
                if p {
                    let r: Record = serde_json::from_slice(&pg.kv_get(k)?)
                        .map_err(|e| Error::Peer(format!("{k}: malformed record: {e}")))?;
                    if r.index != *i || r.rank.is_none_or(|rk| rk >= self.world) {
                        return Err(Error::Peer(format!(
                            "{k}: record claims item {} from rank {:?} in a job of {} ranks",
                            r.index, r.rank, self.world
                        )));
                    }
                    if let Some(o) = self.owner.as_ref().and_then(|m| m.get(i))
                        && r.rank != Some(*o)
                    {
                        return Err(Error::Peer(format!(
                            "{k}: a record of item {i} from rank {:?}, but the item was given to rank {o}",
                            r.rank
                        )));
                    }
                    if r.file.contains('/') || r.file.starts_with('.') || r.file.is_empty() {
                        return Err(Error::Peer(format!(
                            "{k}: rank {:?} recorded a file name {:?} that is not a plain name in the job folder",
                            r.rank, r.file
                        )));
                    }
                    // The file itself, where rank 0 sees it (a shared job folder): its
                    // hash must be the record's. (On a folder that is not shared, rank 0
                    // cannot see it; the resume re-hashes it on the machine that has it.)
                    if let Some(dir) = self.manifest.parent()
                        && let shoal_jobs::OnDisk::File { sha256, .. } =
                            crate::files::on_disk(&dir.join(&r.file))
                        && sha256 != r.sha256
                    {
                        return Err(Error::Peer(format!(
                            "{k}: rank {:?} recorded {} with sha256 {}, but the file holds {sha256}",
                            r.rank, r.file, r.sha256
                        )));
                    }
                    got.push((*i, k.clone(), r));
                }
            }
            if !got.is_empty() {
                pg.kv_delete(&got.iter().map(|(_, k, _)| k.clone()).collect::<Vec<_>>())?;
                for (i, _, _) in &got {
                    self.outstanding.remove(i);
                }
                self.record(got.into_iter().map(|(_, _, r)| r).collect())?;
            }
        }
        Ok(())
    }

    fn draw(&self) {
        if let Some(p) = self.progress {
            p.images(self.done.min(self.total), self.total);
        }
    }
}

/// A non-zero rank's heartbeat: a counter in the store, bumped every [`BEAT`]
/// until `stop` is set. A stopped process stops beating; rank 0 notices.
pub fn heartbeat(pg: &ProcessGroup, rank: usize, stop: &AtomicBool) {
    let key = format!("{ALIVE}{rank}");
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        if pg.kv_set(&key, n.to_string().as_bytes()).is_err() {
            return;
        }
        let t = Instant::now();
        while t.elapsed() < BEAT && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
