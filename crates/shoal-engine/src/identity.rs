//! The model folder's identity by content, for the job's fingerprint, hashed on
//! a thread of its own so that it runs beside the model's load
//! ([`ModelIdentity::start`]) instead of after it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Instant;

use shoal_jobs::identity::{IdentityCache, folder_identity, write_user_cache};

use crate::error::Result;

/// The per-file hash cache of the model's identity, in the job folder.
pub const IDENTITY_CACHE: &str = ".model-identity.json";

/// A model folder's identity, computed on a thread of its own from the moment
/// it is started; the job waits for it when it opens its folder.
///
/// Hashing only reads: the model's files, the job folder's cache and the
/// per-user one (which it updates); the job folder's cache is written by the
/// job once the folder is its own (after `job.lock`).
#[derive(Debug)]
pub struct ModelIdentity {
    dir: PathBuf,
    out: PathBuf,
    user: Option<PathBuf>,
    started: Instant,
    thread: Mutex<Option<JoinHandle<Result<Hashed>>>>,
}

/// What hashing found.
#[derive(Debug)]
pub(crate) struct Hashed {
    /// `sha256:…` of the folder.
    pub id: String,
    /// The per-file hashes of the folder's files, for the job folder.
    pub cache: IdentityCache,
    /// Where that cache goes.
    pub cache_path: PathBuf,
}

impl ModelIdentity {
    /// Starts hashing `dir` for the job folder `out`, with the per-user cache
    /// `user` (`shoal_jobs::identity::user_cache_path`; `None`: none). Where no
    /// thread can be made, the hash is taken when the job asks for it.
    pub fn start(dir: &Path, out: &Path, user: Option<PathBuf>) -> ModelIdentity {
        let (d, o, u) = (dir.to_path_buf(), out.to_path_buf(), user.clone());
        let thread = std::thread::Builder::new()
            .name("shoal-model-identity".into())
            .spawn(move || hash(&d, &o, u.as_deref()))
            .ok();
        ModelIdentity {
            dir: dir.to_path_buf(),
            out: out.to_path_buf(),
            user,
            started: Instant::now(),
            thread: Mutex::new(thread),
        }
    }

    /// The model folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The identity: waits for the thread (or hashes now, if it never ran or
    /// was waited for already).
    pub(crate) fn wait(&self) -> Result<Hashed> {
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        let waiting = Instant::now();
        let got = match thread.map(JoinHandle::join) {
            Some(Ok(r)) => r,
            // A panic in the hash (it has none by design) costs a second try here.
            Some(Err(_)) | None => hash(&self.dir, &self.out, self.user.as_deref()),
        };
        let (waited, since) = (
            waiting.elapsed().as_secs_f64(),
            self.started.elapsed().as_secs_f64(),
        );
        let line = format!(
            "model identity: the job waited {waited:.2} s for it ({since:.2} s after it was started)"
        );
        // Only worth saying where the hash outlasted the load.
        if waited > 0.5 {
            tracing::info!("{line}");
        } else {
            tracing::debug!("{line}");
        }
        got
    }
}

/// Hashes `dir` with the caches of the job folder `out` and of the user.
fn hash(dir: &Path, out: &Path, user: Option<&Path>) -> Result<Hashed> {
    let cache_path = out.join(IDENTITY_CACHE);
    let mut cache = IdentityCache::read(&cache_path);
    let mut shared = user.map(IdentityCache::read).unwrap_or_default();
    cache.absorb(shared.clone());
    let t = Instant::now();
    let (id, st) = folder_identity(dir, &mut cache)?;
    if let Some(u) = user
        && st.hashed_files > 0
    {
        shared.update(cache.only(&st.keys));
        // Only a cache: a failure costs a rehash in the next job.
        if let Err(e) = write_user_cache(u, shared, &st.keys) {
            tracing::debug!("{e} (the per-user identity cache is not updated)");
        }
    }
    let line = format!(
        "model identity: hashed {} file(s), {:.2} GB, in {:.1} s ({} unchanged, from the cache)",
        st.hashed_files,
        st.hashed_bytes as f64 / 1e9,
        t.elapsed().as_secs_f64(),
        st.cached_files
    );
    if st.hashed_bytes > 256 << 20 {
        tracing::info!("{line}");
    } else {
        tracing::debug!("{line}");
    }
    Ok(Hashed {
        id,
        cache: cache.only(&st.keys),
        cache_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_gives_the_folder_identity_and_a_second_wait_hashes_again() {
        let d = tempfile::tempdir().unwrap();
        let (model, out) = (d.path().join("model"), d.path().join("job"));
        std::fs::create_dir_all(model.join("unet")).unwrap();
        std::fs::write(model.join("model_index.json"), b"{}").unwrap();
        std::fs::write(
            model.join("unet/diffusion_pytorch_model.safetensors"),
            vec![7u8; 3 << 20],
        )
        .unwrap();
        let direct = folder_identity(&model, &mut IdentityCache::default()).unwrap().0;
        let user = d.path().join("user/model-identity.json");
        let m = ModelIdentity::start(&model, &out, Some(user.clone()));
        let first = m.wait().unwrap();
        assert_eq!(first.id, direct);
        assert_eq!(first.cache.len(), 2);
        assert_eq!(first.cache_path, out.join(IDENTITY_CACHE));
        // The job folder is not touched by the hash.
        assert!(!out.exists());
        // The per-user cache holds both files' hashes.
        assert_eq!(IdentityCache::read(&user).len(), 2);
        // A second wait has no thread left: it hashes now, to the same identity.
        assert_eq!(m.wait().unwrap().id, direct);
        // A changed file is a changed identity.
        std::fs::write(model.join("model_index.json"), b"{ }").unwrap();
        assert_ne!(
            ModelIdentity::start(&model, &out, None).wait().unwrap().id,
            direct
        );
    }

    #[test]
    fn a_missing_folder_is_an_error_at_the_wait() {
        let d = tempfile::tempdir().unwrap();
        let m = ModelIdentity::start(&d.path().join("nope"), d.path(), None);
        let e = m.wait().unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }
}
