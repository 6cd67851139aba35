//! `shoal image-diff A.png B.png`: the largest per-channel difference between
//! two images, in [0, 1] units; fails above `--max`. Used to compare a GPU
//! image with the CPU one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::UsageError;

#[derive(Debug, Args)]
pub struct ImageDiffCmd {
    a: PathBuf,
    b: PathBuf,
    /// Fail (exit 1) when the largest difference is above this.
    #[arg(long)]
    max: Option<f64>,
}

fn decode(p: &Path) -> Result<(u32, u32, Vec<u8>)> {
    let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut r = png::Decoder::new(std::io::BufReader::new(f))
        .read_info()
        .map_err(|e| UsageError(format!("{}: not a PNG: {e}", p.display())))?;
    let mut buf = vec![0; r.output_buffer_size().unwrap_or(0)];
    let info = r
        .next_frame(&mut buf)
        .map_err(|e| UsageError(format!("{}: {e}", p.display())))?;
    buf.truncate(info.buffer_size());
    Ok((info.width, info.height, buf))
}

pub fn run(c: ImageDiffCmd) -> Result<()> {
    let (wa, ha, a) = decode(&c.a)?;
    let (wb, hb, b) = decode(&c.b)?;
    if (wa, ha) != (wb, hb) || a.len() != b.len() {
        bail!(UsageError(format!("sizes differ: {wa}×{ha} vs {wb}×{hb}")));
    }
    let max = a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0) as f64 / 255.0;
    let mean =
        a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y) as f64).sum::<f64>() / a.len().max(1) as f64 / 255.0;
    println!("image-diff: max {max:.4}, mean {mean:.5} ({} values)", a.len());
    if let Some(m) = c.max
        && max > m
    {
        bail!("max difference {max:.4} is above --max {m}");
    }
    Ok(())
}
