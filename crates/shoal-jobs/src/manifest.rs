//! The job folder: `job.json` (what the job is) and `manifest.jsonl` (what is
//! done), and the resume decision.
//!
//! `job.json` holds a fingerprint of everything that decides the images (the
//! model, scheduler, dtype and every item). `--resume` refuses a job whose
//! fingerprint changed, naming the fields. An item counts as done only when its
//! file exists and matches the manifest's sha256, or, when the manifest never
//! heard of it (a crash between the file's rename and its record), when the file
//! is a complete PNG (files are published by rename, so a present file is whole).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::items::WorkItem;
use crate::naming::file_name;

/// The job description file.
pub const JOB_FILE: &str = "job.json";
/// The manifest file.
pub const MANIFEST_FILE: &str = "manifest.jsonl";

/// What decides a job's images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Format version.
    pub version: u32,
    /// The model: its folder's content identity (`sha256:…`, see
    /// [`crate::identity`]), or `embedded:tiny-v1`.
    pub model: String,
    /// The scheduler class.
    pub scheduler: String,
    /// The compute dtype.
    pub dtype: String,
    /// How many items.
    pub items: usize,
    /// sha256 of every item (index, prompt, negative prompt, seed, parameters).
    pub items_sha256: String,
}

impl JobSpec {
    /// The spec of a job.
    pub fn new(model: &str, scheduler: &str, dtype: &str, items: &[WorkItem]) -> Self {
        let mut h = Sha256::new();
        for it in items {
            h.update(serde_json::to_vec(it).unwrap_or_default());
            h.update(b"\n");
        }
        JobSpec {
            version: 1,
            model: model.into(),
            scheduler: scheduler.into(),
            dtype: dtype.into(),
            items: items.len(),
            items_sha256: format!("{:x}", h.finalize()),
        }
    }

    /// The fields in which `other` differs from `self`.
    pub fn differences(&self, other: &JobSpec) -> Vec<String> {
        let mut d = Vec::new();
        let mut cmp = |name: &str, a: String, b: String| {
            if a != b {
                d.push(format!("{name}: {a} → {b}"));
            }
        };
        cmp("model", self.model.clone(), other.model.clone());
        cmp("scheduler", self.scheduler.clone(), other.scheduler.clone());
        cmp("dtype", self.dtype.clone(), other.dtype.clone());
        cmp("items", self.items.to_string(), other.items.to_string());
        if self.items == other.items {
            cmp(
                "prompts, seeds or parameters (items_sha256)",
                self.items_sha256.clone(),
                other.items_sha256.clone(),
            );
        }
        d
    }
}

/// One finished item, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Global index.
    pub index: usize,
    /// The prompt.
    pub prompt: String,
    /// The negative prompt.
    pub negative_prompt: Option<String>,
    /// The seed.
    pub seed: u64,
    /// Steps.
    pub steps: usize,
    /// Guidance.
    pub guidance: f64,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// The file name in the output folder.
    pub file: String,
    /// sha256 of the file.
    pub sha256: String,
    /// The file's size in bytes.
    pub bytes: u64,
    /// The rank that made it; `None` for a file found on disk after a crash
    /// (published, never recorded) and recorded on resume.
    #[serde(default)]
    pub rank: Option<usize>,
    /// Seconds this image took (its batch's time divided by the batch size).
    pub duration_s: f64,
    /// Prompt tokens before truncation (77 are read).
    pub prompt_tokens: usize,
}

impl Record {
    /// The record of `item`'s image, whose file holds `bytes`.
    pub fn new(item: &WorkItem, bytes: &[u8], rank: usize, duration_s: f64, prompt_tokens: usize) -> Self {
        Record {
            index: item.index,
            prompt: item.prompt.clone(),
            negative_prompt: item.negative_prompt.clone(),
            seed: item.seed,
            steps: item.params.steps,
            guidance: item.params.guidance,
            height: item.params.height,
            width: item.params.width,
            file: file_name(item),
            sha256: sha256_hex(bytes),
            bytes: bytes.len() as u64,
            rank: Some(rank),
            duration_s,
            prompt_tokens,
        }
    }
}

/// The sha256 of bytes, as hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Reads the manifest; a torn last line (a crash mid-write) is ignored.
pub fn read_manifest(path: &Path) -> Result<BTreeMap<usize, Record>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let mut out = BTreeMap::new();
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(line) {
            Ok(r) => {
                out.insert(r.index, r);
            }
            // Only the last line may be torn.
            Err(_) if i + 1 == lines.len() => {}
            Err(e) => {
                return Err(Error::Line {
                    path: path.to_path_buf(),
                    line: i + 1,
                    detail: format!("not a manifest record: {e}"),
                });
            }
        }
    }
    Ok(out)
}

/// Appends records to the manifest with one write each, then syncs.
pub fn append_records(path: &Path, records: &[Record]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    for r in records {
        let mut line =
            serde_json::to_vec(r).map_err(|e| Error::io("encoding a record", std::io::Error::other(e)))?;
        line.push(b'\n');
        f.write_all(&line)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    }
    f.sync_data()
        .map_err(|e| Error::io(format!("syncing {}", path.display()), e))
}

/// What is on disk for one item, as the edge finds it.
#[derive(Debug, Clone, PartialEq)]
pub enum OnDisk {
    /// No file.
    Missing,
    /// A file with this sha256 that is (or is not) a complete PNG.
    File {
        /// Its sha256.
        sha256: String,
        /// Whether it decodes as a PNG.
        valid_png: bool,
    },
}

/// The resume decision for every item: done (with its record, possibly
/// recovered) or to do.
#[derive(Debug, Clone, Default)]
pub struct ResumePlan {
    /// Indices already done.
    pub done: Vec<usize>,
    /// Records for files the manifest did not know but that are complete.
    pub recovered: Vec<usize>,
    /// Indices to generate.
    pub todo: Vec<usize>,
    /// Files present but wrong (hash mismatch, broken PNG): regenerated.
    pub damaged: Vec<String>,
}

/// Decides, per item, whether its output can be trusted.
pub fn plan_resume(
    items: &[WorkItem],
    manifest: &BTreeMap<usize, Record>,
    disk: impl Fn(&str) -> OnDisk,
) -> ResumePlan {
    let mut p = ResumePlan::default();
    for it in items {
        let name = file_name(it);
        match (disk(&name), manifest.get(&it.index)) {
            (OnDisk::Missing, _) => p.todo.push(it.index),
            (OnDisk::File { sha256, .. }, Some(r)) if r.sha256 == sha256 && r.file == name => {
                p.done.push(it.index)
            }
            (OnDisk::File { valid_png: true, .. }, None) => {
                p.done.push(it.index);
                p.recovered.push(it.index);
            }
            _ => {
                p.damaged.push(name);
                p.todo.push(it.index);
            }
        }
    }
    p
}

/// Prepares the output folder: a new job writes `job.json`; an existing job
/// is resumed only with `resume` and an unchanged spec.
pub fn open_job(out: &Path, spec: &JobSpec, resume: bool) -> Result<PathBuf> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(format!("creating {}", out.display()), e))?;
    let path = out.join(JOB_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let old: JobSpec = serde_json::from_str(&text).map_err(|e| Error::Job {
                path: path.clone(),
                detail: format!("not a shoal job file: {e}"),
            })?;
            if !resume {
                return Err(Error::Job {
                    path,
                    detail:
                        "this folder holds a job already; pass --resume to finish it, or choose another --out"
                            .into(),
                });
            }
            let diff = old.differences(spec);
            if !diff.is_empty() {
                return Err(Error::Job {
                    path,
                    detail: format!(
                        "refusing to resume: the job's parameters changed ({}); use a new --out for a new job",
                        diff.join("; ")
                    ),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if resume && has_job_files(out) {
                return Err(Error::Job {
                    path,
                    detail:
                        "--resume: this folder has images or a manifest but no job.json, so what made them \
                             cannot be checked; remove the folder or choose another --out"
                            .into(),
                });
            }
            let text = serde_json::to_string_pretty(spec).unwrap_or_default();
            std::fs::write(&path, text + "\n")
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    }
    Ok(out.join(MANIFEST_FILE))
}

/// Whether `out` holds a manifest or any PNG (the traces of a job).
fn has_job_files(out: &Path) -> bool {
    out.join(MANIFEST_FILE).exists()
        || std::fs::read_dir(out).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "png"))
        })
}

/// The lock file of a job folder.
pub const LOCK_FILE: &str = "job.lock";

/// A job folder held by this process; the lock file goes when this is dropped.
#[derive(Debug)]
pub struct JobLock {
    path: PathBuf,
}

impl Drop for JobLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Takes the job folder for this process: `job.lock` holds the owner's pid and
/// host. A lock whose owner is gone (same host, no such process) is taken
/// over; a live one is an error naming its owner.
pub fn lock_job(out: &Path) -> Result<JobLock> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(format!("creating {}", out.display()), e))?;
    let path = out.join(LOCK_FILE);
    let me = format!("{} {}", std::process::id(), this_host());
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                use std::io::Write;
                f.write_all(me.as_bytes())
                    .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
                return Ok(JobLock { path });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = std::fs::read_to_string(&path).unwrap_or_default();
                let mut it = owner.split_whitespace();
                let (pid, host) = (
                    it.next().and_then(|p| p.parse::<u32>().ok()),
                    it.next().unwrap_or(""),
                );
                let stale =
                    host == this_host() && pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists());
                if stale {
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                return Err(Error::Job {
                    path,
                    detail: format!(
                        "another shoal generate (pid {}, host {host}) is using this folder; wait for it to end, \
                         or remove the lock file if that process is gone",
                        pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
                    ),
                });
            }
            Err(e) => return Err(Error::io(format!("creating {}", path.display()), e)),
        }
    }
    Err(Error::Job {
        path,
        detail: "could not take the job lock".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::GenParams;

    #[test]
    fn a_job_folder_is_held_by_one_process() {
        let d = tempfile::tempdir().unwrap();
        let lock = lock_job(d.path()).unwrap();
        let e = lock_job(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("another shoal generate") && e.contains(&std::process::id().to_string()),
            "{e}"
        );
        drop(lock);
        assert!(!d.path().join(LOCK_FILE).exists());
        // A lock left by a process that is gone is taken over.
        std::fs::write(d.path().join(LOCK_FILE), format!("4000000000 {}", this_host())).unwrap();
        let _l = lock_job(d.path()).unwrap();
        // One from another host is respected.
        drop(_l);
        std::fs::write(d.path().join(LOCK_FILE), "1 some-other-host").unwrap();
        assert!(lock_job(d.path()).is_err());
    }

    #[test]
    fn resume_without_job_json_is_refused_when_images_exist() {
        let d = tempfile::tempdir().unwrap();
        let spec = JobSpec::new("m", "PNDMScheduler", "F32", &[item(0)]);
        std::fs::write(d.path().join("00000-0-p0.png"), b"x").unwrap();
        let e = open_job(d.path(), &spec, true).unwrap_err().to_string();
        assert!(e.contains("no job.json"), "{e}");
        // A fresh folder with --resume simply starts.
        let fresh = d.path().join("fresh");
        assert!(open_job(&fresh, &spec, true).is_ok());
    }

    fn item(index: usize) -> WorkItem {
        WorkItem {
            index,
            prompt: format!("p{index}"),
            negative_prompt: None,
            seed: index as u64,
            params: GenParams {
                steps: 2,
                guidance: 7.5,
                height: 32,
                width: 32,
            },
        }
    }

    fn record(it: &WorkItem, sha: &str) -> Record {
        Record {
            index: it.index,
            prompt: it.prompt.clone(),
            negative_prompt: None,
            seed: it.seed,
            steps: 2,
            guidance: 7.5,
            height: 32,
            width: 32,
            file: file_name(it),
            sha256: sha.into(),
            bytes: 1,
            rank: Some(0),
            duration_s: 0.1,
            prompt_tokens: 3,
        }
    }

    #[test]
    fn resume_trusts_only_matching_or_complete_files() {
        let items: Vec<_> = (0..5).map(item).collect();
        let mut m = BTreeMap::new();
        m.insert(0, record(&items[0], "aa"));
        m.insert(1, record(&items[1], "bb"));
        let disk = |name: &str| match &name[..5] {
            "00000" => OnDisk::File {
                sha256: "aa".into(),
                valid_png: true,
            },
            "00001" => OnDisk::File {
                sha256: "zz".into(),
                valid_png: true,
            },
            "00002" => OnDisk::File {
                sha256: "cc".into(),
                valid_png: true,
            },
            "00003" => OnDisk::File {
                sha256: "dd".into(),
                valid_png: false,
            },
            _ => OnDisk::Missing,
        };
        let p = plan_resume(&items, &m, disk);
        assert_eq!(p.done, [0, 2]);
        assert_eq!(p.recovered, [2]);
        assert_eq!(p.todo, [1, 3, 4]);
        assert_eq!(p.damaged.len(), 2);
    }

    #[test]
    fn jobs_refuse_changed_parameters_and_unasked_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let items: Vec<_> = (0..3).map(item).collect();
        let spec = JobSpec::new("m", "PNDMScheduler", "f32", &items);
        open_job(dir.path(), &spec, false).unwrap();
        assert!(
            open_job(dir.path(), &spec, false)
                .unwrap_err()
                .to_string()
                .contains("--resume")
        );
        open_job(dir.path(), &spec, true).unwrap();
        let mut changed = items.clone();
        changed[1].params.steps = 3;
        let e = open_job(
            dir.path(),
            &JobSpec::new("m", "PNDMScheduler", "f32", &changed),
            true,
        )
        .unwrap_err();
        assert!(e.to_string().contains("items_sha256"), "{e}");
        let e = open_job(
            dir.path(),
            &JobSpec::new("m", "DDIMScheduler", "f32", &items),
            true,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("scheduler: PNDMScheduler → DDIMScheduler"),
            "{e}"
        );
    }

    #[test]
    fn torn_last_lines_are_ignored_but_corruption_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(MANIFEST_FILE);
        let it = item(0);
        append_records(&p, &[record(&it, "aa")]).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"index\": 1, \"pro")
            .unwrap();
        assert_eq!(read_manifest(&p).unwrap().len(), 1);
        std::fs::write(&p, "garbage\n{}\n").unwrap();
        assert!(read_manifest(&p).is_err());
    }
}
