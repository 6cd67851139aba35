//! Files the engine writes and checks (the model crate writes none).

use std::io::Write;
use std::path::Path;

use shoal_jobs::OnDisk;
use shoal_jobs::manifest::sha256_hex;

use crate::error::{Error, Result};

/// Writes bytes atomically: a temporary file in the same folder, fsync,
/// rename, fsync of the folder. A reader never sees a partial file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.partial-{}", std::process::id()));
    let io = |op: &'static str, e| Error::Io {
        op,
        path: path.to_path_buf(),
        source: e,
    };
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("creating a temporary file for", e))?;
    f.write_all(bytes).map_err(|e| io("writing", e))?;
    f.sync_all().map_err(|e| io("syncing", e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| io("publishing", e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What is on disk at `path`: missing, or a file with its sha256 and whether it decodes as a PNG.
pub fn on_disk(path: &Path) -> OnDisk {
    match std::fs::read(path) {
        Err(_) => OnDisk::Missing,
        Ok(bytes) => OnDisk::File {
            sha256: sha256_hex(&bytes),
            valid_png: png::Decoder::new(std::io::Cursor::new(&bytes))
                .read_info()
                .and_then(|mut r| {
                    let mut buf = vec![0; r.output_buffer_size().unwrap_or(0)];
                    r.next_frame(&mut buf).map(|_| ())
                })
                .is_ok(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_publishes_whole_files_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.png");
        write_atomic(&p, b"not a png").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"not a png");
        let leftovers: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("partial"))
            .collect();
        assert!(leftovers.is_empty());
        assert!(matches!(on_disk(&p), OnDisk::File { valid_png: false, .. }));
        assert!(matches!(on_disk(&d.path().join("b.png")), OnDisk::Missing));
        let e = write_atomic(&d.path().join("no/such/dir/x.png"), b"x").unwrap_err();
        assert!(e.to_string().contains("no/such/dir/x.png"), "{e}");
    }
}
