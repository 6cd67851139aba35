//! A model folder's identity by content, for the job fingerprint: replaced
//! weights at the same path are a different model, the same files moved
//! elsewhere are the same one.
//!
//! The identity is the sha256 over, for every config, tokenizer and weight
//! file (`*.json`, `*.txt`, `*.model`, `*.safetensors`; names starting with a
//! dot skipped; symlinks followed, as in a Hugging Face snapshot), its path
//! relative to the folder, its length and the sha256 of its bytes. Hashing
//! reads every byte once (about 1–2 GB/s per core with the SHA extensions;
//! files are spread over the cores), so the per-file hashes are cached by
//! (path, length, mtime, ctime, inode, device): a file rewritten or replaced
//! changes its ctime, which no user can set back.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// At most this many files are hashed (a model folder has tens).
const MAX_FILES: usize = 10_000;
/// The deepest folder level read below the model folder.
const MAX_DEPTH: usize = 4;
/// The largest cache file read.
const MAX_CACHE_BYTES: u64 = 4 << 20;

/// Per-file hashes from an earlier run, keyed by the file's absolute path.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdentityCache {
    entries: BTreeMap<String, CacheEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CacheEntry {
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
    sha256: String,
}

impl CacheEntry {
    fn stamp(m: &std::fs::Metadata) -> CacheEntry {
        CacheEntry {
            len: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            ino: m.ino(),
            dev: m.dev(),
            sha256: String::new(),
        }
    }
}

impl IdentityCache {
    /// The cache in `path`; empty when missing, too large or unreadable (it is
    /// only a cache: a bad one costs a rehash, never a wrong identity).
    pub fn read(path: &Path) -> IdentityCache {
        let ok = std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() <= MAX_CACHE_BYTES);
        ok.then(|| std::fs::read(path).ok())
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Writes the cache to `path` (whole or not at all; a temporary file of
    /// this process's own, renamed over it, so that two jobs writing the same
    /// cache never mix their bytes).
    pub fn write(&self, path: &Path) -> Result<()> {
        let body = serde_json::to_vec_pretty(self).map_err(|e| Error::Job {
            path: path.to_path_buf(),
            detail: format!("encoding the identity cache: {e}"),
        })?;
        let tmp = path.with_extension(format!("partial-{}", std::process::id()));
        std::fs::write(&tmp, body).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }
}

impl IdentityCache {
    /// Adds the entries of `other` that this cache lacks.
    pub fn absorb(&mut self, other: IdentityCache) {
        for (k, v) in other.entries {
            self.entries.entry(k).or_insert(v);
        }
    }

    /// Takes every entry of `newer`, replacing this cache's for the same file.
    pub fn update(&mut self, newer: IdentityCache) {
        self.entries.extend(newer.entries);
    }

    /// The entries of `keys` only.
    pub fn only(&self, keys: &[String]) -> IdentityCache {
        IdentityCache {
            entries: keys
                .iter()
                .filter_map(|k| self.entries.get(k).map(|v| (k.clone(), v.clone())))
                .collect(),
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps at most `max` entries: those of `keep` first, then others.
    pub fn bound(&mut self, max: usize, keep: &[String]) {
        if self.entries.len() <= max {
            return;
        }
        let mut kept = self.only(keep).entries;
        let room = max.saturating_sub(kept.len());
        let others: Vec<(String, CacheEntry)> = std::mem::take(&mut self.entries)
            .into_iter()
            .filter(|(k, _)| !kept.contains_key(k))
            .take(room)
            .collect();
        kept.extend(others);
        self.entries = kept;
    }
}

/// The per-user cache of file hashes, shared by every job of this user (so a
/// new job on a model hashed before reads no weight): `$SHOAL_CACHE_DIR/`,
/// else `$XDG_CACHE_HOME/shoal/`, else `$HOME/.cache/shoal/`, file
/// `model-identity.json`; `None` when `SHOAL_CACHE_DIR` is set empty (off) or
/// nothing is set. `var` reads the environment.
pub fn user_cache_path(var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let dir = match var("SHOAL_CACHE_DIR") {
        Some(d) if d.is_empty() => return None,
        Some(d) => PathBuf::from(d),
        None => match var("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            Some(x) => PathBuf::from(x).join("shoal"),
            None => PathBuf::from(var("HOME").filter(|h| !h.is_empty())?)
                .join(".cache")
                .join("shoal"),
        },
    };
    Some(dir.join("model-identity.json"))
}

/// Most entries kept in the per-user cache (about 1 MB of JSON).
pub const USER_CACHE_ENTRIES: usize = 4096;

/// Writes the per-user cache: its folder made private to the user (0700) when
/// missing; the entries of this model kept first under [`USER_CACHE_ENTRIES`].
pub fn write_user_cache(path: &Path, mut cache: IdentityCache, keep: &[String]) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(d) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(d)
            .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
    }
    cache.bound(USER_CACHE_ENTRIES, keep);
    cache.write(path)
}

/// What hashing a folder did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashStats {
    /// Files hashed now (not found in the cache).
    pub hashed_files: usize,
    /// Their bytes.
    pub hashed_bytes: u64,
    /// Files whose hash came from the cache.
    pub cached_files: usize,
    /// The cache keys of the folder's files.
    pub keys: Vec<String>,
}

fn counted(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.')
        && ["json", "txt", "model", "safetensors"]
            .iter()
            .any(|e| path.extension().is_some_and(|x| x == *e))
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
        {
            continue;
        }
        let Ok(m) = std::fs::metadata(&p) else { continue };
        if m.is_dir() && depth < MAX_DEPTH {
            walk(&p, depth + 1, out)?;
        } else if m.is_file() && counted(&p) {
            out.push(p);
            if out.len() > MAX_FILES {
                return Err(Error::invalid(
                    "model",
                    dir.display(),
                    format!("more than {MAX_FILES} config and weight files"),
                ));
            }
        }
    }
    Ok(())
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The identity of the model folder `dir` (`sha256:…`), with per-file hashes
/// taken from `cache` where a file is unchanged and added to it otherwise.
pub fn folder_identity(dir: &Path, cache: &mut IdentityCache) -> Result<(String, HashStats)> {
    let mut files = Vec::new();
    walk(dir, 0, &mut files)?;
    if files.is_empty() {
        return Err(Error::invalid(
            "model",
            dir.display(),
            "holds no config or weight file",
        ));
    }
    let mut stamps = Vec::with_capacity(files.len());
    for f in &files {
        let m = std::fs::metadata(f).map_err(|e| Error::io(format!("reading {}", f.display()), e))?;
        let key = std::fs::canonicalize(f)
            .unwrap_or(f.clone())
            .display()
            .to_string();
        stamps.push((key, CacheEntry::stamp(&m)));
    }
    // Files not in the cache, largest first, spread over the cores.
    let mut todo: Vec<usize> = (0..files.len())
        .filter(|&i| {
            let (key, stamp) = &stamps[i];
            !cache.entries.get(key).is_some_and(|c| {
                CacheEntry {
                    sha256: String::new(),
                    ..c.clone()
                } == *stamp
            })
        })
        .collect();
    todo.sort_by_key(|&i| std::cmp::Reverse(stamps[i].1.len));
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<Vec<(usize, String)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.min(todo.len()).max(1))
            .map(|_| {
                s.spawn(|| -> Result<Vec<(usize, String)>> {
                    let mut done = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&i) = todo.get(k) else { break };
                        done.push((i, sha256_file(&files[i])?));
                    }
                    Ok(done)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::invalid(
                        "model",
                        dir.display(),
                        "a hashing thread panicked",
                    ))
                })
            })
            .collect()
    });
    let stats = HashStats {
        hashed_files: todo.len(),
        hashed_bytes: todo.iter().map(|&i| stamps[i].1.len).sum(),
        cached_files: files.len() - todo.len(),
        keys: stamps.iter().map(|(k, _)| k.clone()).collect(),
    };
    for r in results {
        for (i, sha) in r? {
            let (key, stamp) = &stamps[i];
            cache.entries.insert(
                key.clone(),
                CacheEntry {
                    sha256: sha,
                    ..stamp.clone()
                },
            );
        }
    }
    let mut h = Sha256::new();
    for (f, (key, stamp)) in files.iter().zip(&stamps) {
        let rel = f.strip_prefix(dir).unwrap_or(f);
        let sha = cache.entries.get(key).map(|c| c.sha256.as_str()).unwrap_or("");
        h.update(format!("{}\t{}\t{sha}\n", rel.display(), stamp.len).as_bytes());
    }
    Ok((format!("sha256:{:x}", h.finalize()), stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_cache_lives_in_the_users_cache_folder_and_stays_bounded() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let p = |pairs| user_cache_path(env(pairs));
        assert_eq!(
            p(&[("HOME", "/h")]),
            Some("/h/.cache/shoal/model-identity.json".into())
        );
        assert_eq!(
            p(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]),
            Some("/x/shoal/model-identity.json".into())
        );
        assert_eq!(
            p(&[("HOME", "/h"), ("SHOAL_CACHE_DIR", "/c")]),
            Some("/c/model-identity.json".into())
        );
        assert_eq!(p(&[("HOME", "/h"), ("SHOAL_CACHE_DIR", "")]), None);
        assert_eq!(p(&[]), None);
        let entry = |i: u64| CacheEntry {
            len: i,
            mtime_ns: 0,
            ctime_ns: 0,
            ino: i,
            dev: 0,
            sha256: format!("{i}"),
        };
        let mut c = IdentityCache {
            entries: (0..100).map(|i| (format!("/f{i}"), entry(i))).collect(),
        };
        let keep = vec!["/f99".to_string(), "/f98".to_string()];
        c.bound(10, &keep);
        assert_eq!(c.len(), 10);
        assert_eq!(c.only(&keep).len(), 2, "the current model's entries stay");
        let mut newer = IdentityCache::default();
        newer.entries.insert("/f99".into(), entry(7));
        c.update(newer);
        assert_eq!(c.entries["/f99"].sha256, "7");
        let mut fresh = IdentityCache::default();
        fresh.absorb(c.clone());
        assert_eq!(fresh.len(), 10);
    }

    fn folder(d: &Path, weights: &[u8]) {
        std::fs::create_dir_all(d.join("unet")).unwrap();
        std::fs::write(d.join("model_index.json"), b"{}").unwrap();
        std::fs::write(d.join("unet/config.json"), b"{\"a\": 1}").unwrap();
        std::fs::write(d.join("unet/diffusion_pytorch_model.safetensors"), weights).unwrap();
        std::fs::write(d.join("README.md"), b"not counted").unwrap();
    }

    #[test]
    fn content_decides_not_the_path_and_the_cache_follows_changes() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        folder(&a, b"weights one");
        folder(&b, b"weights one");
        let mut cache = IdentityCache::default();
        let (ia, s1) = folder_identity(&a, &mut cache).unwrap();
        assert_eq!(s1.hashed_files, 3);
        let (ib, _) = folder_identity(&b, &mut cache).unwrap();
        assert_eq!(ia, ib, "the same files elsewhere are the same model");
        let (again, s2) = folder_identity(&a, &mut cache).unwrap();
        assert_eq!(
            (again.as_str(), s2.hashed_files, s2.cached_files),
            (ia.as_str(), 0, 3)
        );
        // Other weights of the same length at the same path: a new identity, found
        // although the cache holds the old file's hash. (File times tick with the
        // kernel's coarse clock, up to 10 ms: wait past one tick.)
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::write(a.join("unet/diffusion_pytorch_model.safetensors"), b"weights two").unwrap();
        let (changed, s3) = folder_identity(&a, &mut cache).unwrap();
        assert_ne!(changed, ia);
        assert_eq!(s3.hashed_files, 1);
        // Files that do not count change nothing; a renamed config does.
        std::fs::write(b.join("README.md"), b"edited").unwrap();
        assert_eq!(folder_identity(&b, &mut cache).unwrap().0, ib);
        std::fs::rename(b.join("unet/config.json"), b.join("unet/config2.json")).unwrap();
        assert_ne!(folder_identity(&b, &mut cache).unwrap().0, ib);
        // The cache survives a round trip; a corrupt cache is an empty one.
        let p = t.path().join("cache.json");
        cache.write(&p).unwrap();
        assert_eq!(IdentityCache::read(&p).entries, cache.entries);
        std::fs::write(&p, b"not json").unwrap();
        assert!(IdentityCache::read(&p).entries.is_empty());
        let empty = t.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert!(folder_identity(&empty, &mut cache).is_err());
    }
}
