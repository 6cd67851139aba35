//! Time per kind of op, for finding where a GPU step goes (`SHOAL_PROFILE=1`).
//!
//! When enabled, each scope synchronizes the device before and after its op, so
//! the times are exact per op but the whole run is slower (no overlap of host
//! and device work). Off, a scope is one branch on a flag read once.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use candle_core::Device;

static ENABLED: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os("SHOAL_PROFILE").is_some_and(|v| v != "0"));
static TOTALS: Mutex<BTreeMap<&'static str, (f64, u64)>> = Mutex::new(BTreeMap::new());

/// Whether `SHOAL_PROFILE` is set.
pub fn enabled() -> bool {
    *ENABLED
}

/// Runs `f`, adding its time to `name` when profiling.
pub fn scope<T>(
    name: &'static str,
    device: &Device,
    f: impl FnOnce() -> candle_core::Result<T>,
) -> candle_core::Result<T> {
    if !enabled() {
        return f();
    }
    device.synchronize()?;
    let t = Instant::now();
    let r = f()?;
    device.synchronize()?;
    let mut m = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
    let e = m.entry(name).or_insert((0.0, 0));
    e.0 += t.elapsed().as_secs_f64();
    e.1 += 1;
    Ok(r)
}

/// Seconds and calls per kind since the last [`take`], and resets them.
pub fn take() -> Vec<(&'static str, f64, u64)> {
    let mut m = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
    let out = m.iter().map(|(k, (s, n))| (*k, *s, *n)).collect();
    m.clear();
    out
}
