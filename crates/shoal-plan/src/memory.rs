//! Memory sizes: `20GiB`, `1.5GB`, `512MiB`; GB = 10^9, GiB = 2^30.
//!
//! Accelerate reads `"16Gb"` as 16 giga*bits* (2 GB); shoal refuses a
//! lowercase `b` and bare `G` as ambiguous rather than guess.

use crate::{Dev, PlanError};

const UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

/// Parses a size such as `20GiB` or `1.5GB` (a plain number is bytes).
pub fn parse_bytes(s: &str) -> Result<u64, PlanError> {
    let bad = |detail: &str| PlanError::BadSize {
        value: s.to_string(),
        detail: detail.to_string(),
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let n: f64 = num
        .parse()
        .map_err(|_| bad("expected a number followed by a unit, e.g. 20GiB"))?;
    let mult = if unit.is_empty() {
        1
    } else {
        UNITS.iter().find(|(u, _)| *u == unit).map(|(_, m)| *m).ok_or_else(|| {
            if unit.ends_with('b') {
                bad("a lowercase b means bits; write GB (10^9 bytes) or GiB (2^30 bytes)")
            } else {
                bad("unknown unit; use B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)")
            }
        })?
    };
    let v = n * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(bad("out of range"));
    }
    Ok(v.round() as u64)
}

/// Parses `--max-memory 0=20GiB,1=20GiB,cpu=64GiB`.
pub fn parse_max_memory(s: &str) -> Result<Vec<(Dev, u64)>, PlanError> {
    let mut out: Vec<(Dev, u64)> = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (d, v) = part.split_once('=').ok_or_else(|| PlanError::BadSize {
            value: part.to_string(),
            detail: "expected device=size, e.g. 0=20GiB or cpu=64GiB".into(),
        })?;
        let dev: Dev = d.parse()?;
        if out.iter().any(|(x, _)| *x == dev) {
            return Err(PlanError::BadMap(format!(
                "device {dev} is listed twice in --max-memory"
            )));
        }
        out.push((dev, parse_bytes(v)?));
    }
    if out.is_empty() {
        return Err(PlanError::BadSize {
            value: s.to_string(),
            detail: "lists no device".into(),
        });
    }
    Ok(out)
}

/// `1.72 GB`-style text (powers of 1000, as the error messages use).
pub fn format_bytes(b: u64) -> String {
    const K: f64 = 1000.0;
    let f = b as f64;
    if f >= K * K * K {
        format!("{:.2} GB", f / (K * K * K))
    } else if f >= K * K {
        format!("{:.1} MB", f / (K * K))
    } else {
        format!("{b} B")
    }
}
