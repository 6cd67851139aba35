//! `shoal image-diff A.png B.png`: the largest per-channel difference between
//! two images, in [0, 1] units; fails above `--max`. Used to compare a GPU
//! image with the CPU one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::UsageError;

#[derive(Debug, Args)]
pub struct ImageDiffCmd {
    /// The first PNG.
    a: PathBuf,
    /// The second PNG (same size).
    b: PathBuf,
    /// Fail (exit 1) when the largest difference is above this.
    #[arg(long)]
    max: Option<f64>,
    /// Fail (exit 1) when the PSNR (dB, 8-bit peak) is below this.
    #[arg(long)]
    min_psnr: Option<f64>,
}

/// Peak signal-to-noise ratio of two 8-bit images in dB (infinite when equal).
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let n = a.len().min(b.len()).max(1) as f64;
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        / n;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
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
    let db = psnr(&a, &b);
    println!(
        "image-diff: max {max:.4}, mean {mean:.5}, PSNR {db:.2} dB ({} values)",
        a.len()
    );
    if let Some(m) = c.min_psnr
        && db < m
    {
        bail!("PSNR {db:.2} dB is below --min-psnr {m}");
    }
    if let Some(m) = c.max
        && max > m
    {
        bail!("max difference {max:.4} is above --max {m}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn psnr_of_known_errors() {
        assert_eq!(super::psnr(&[1, 2, 3], &[1, 2, 3]), f64::INFINITY);
        // MSE 1 → 20·log10(255) ≈ 48.13 dB.
        let db = super::psnr(&[10, 10], &[11, 9]);
        assert!((db - 48.1308).abs() < 1e-3, "{db}");
    }
}
