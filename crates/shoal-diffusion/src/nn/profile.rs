//! Time per kind of op, for finding where a GPU step goes (`SHOAL_PROFILE=1`).
//!
//! On a CUDA device each scope records a timing event on the device's stream before
//! and after its op and nothing waits: the run keeps its overlap of host and device
//! work, and [`take`] (which synchronizes once) sums the device time between each
//! pair of events. On the CPU each scope is timed on the host. A scope opened inside
//! another is kept under that scope ([`Row::outer`]), so an outer scope's time minus
//! its direct inner ones is what ran between them. Off, a scope is one branch on a
//! flag read once.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use candle_core::Device;

static ENABLED: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os("SHOAL_PROFILE").is_some_and(|v| v != "0"));

/// (outer scope, scope) → (seconds, calls).
type Totals = BTreeMap<(Option<&'static str>, &'static str), (f64, u64)>;
static TOTALS: Mutex<Totals> = Mutex::new(BTreeMap::new());

#[cfg(feature = "cuda")]
struct Pending {
    key: (Option<&'static str>, &'static str),
    start: candle_core::cuda_backend::cudarc::driver::CudaEvent,
    end: candle_core::cuda_backend::cudarc::driver::CudaEvent,
}

#[cfg(feature = "cuda")]
static PENDING: Mutex<Vec<Pending>> = Mutex::new(Vec::new());

thread_local! {
    static OPEN: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
}

/// Whether `SHOAL_PROFILE` is set.
pub fn enabled() -> bool {
    *ENABLED
}

/// One kind of op in a [`take`].
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The scope this one ran directly inside (`None`: none was open).
    pub outer: Option<&'static str>,
    /// The scope's name.
    pub name: &'static str,
    /// Its time summed over its calls.
    pub seconds: f64,
    /// How many times it ran.
    pub calls: u64,
}

fn add(key: (Option<&'static str>, &'static str), s: f64) {
    let mut m = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
    let e = m.entry(key).or_insert((0.0, 0));
    e.0 += s;
    e.1 += 1;
}

/// Runs `f`, adding its time to `name` when profiling.
pub fn scope<T>(
    name: &'static str,
    device: &Device,
    f: impl FnOnce() -> candle_core::Result<T>,
) -> candle_core::Result<T> {
    scope_if(enabled(), name, device, f)
}

fn scope_if<T>(
    on: bool,
    name: &'static str,
    device: &Device,
    f: impl FnOnce() -> candle_core::Result<T>,
) -> candle_core::Result<T> {
    if !on {
        return f();
    }
    let outer = OPEN.with(|o| {
        let mut o = o.borrow_mut();
        let outer = o.last().copied();
        o.push(name);
        outer
    });
    let r = timed((outer, name), device, f);
    OPEN.with(|o| o.borrow_mut().pop());
    r
}

fn timed<T>(
    key: (Option<&'static str>, &'static str),
    device: &Device,
    f: impl FnOnce() -> candle_core::Result<T>,
) -> candle_core::Result<T> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
        let stream = d.cuda_stream();
        let ev = || {
            stream
                .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| candle_core::Error::Msg(format!("profile event: {e}")))
        };
        let start = ev()?;
        let r = f()?;
        let end = ev()?;
        PENDING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Pending { key, start, end });
        return Ok(r);
    }
    let _ = device;
    let t = Instant::now();
    let r = f()?;
    add(key, t.elapsed().as_secs_f64());
    Ok(r)
}

/// Every kind of op since the last `take`, and resets them (waits for the device's
/// recorded events first).
pub fn take() -> Vec<Row> {
    #[cfg(feature = "cuda")]
    {
        let pending = std::mem::take(&mut *PENDING.lock().unwrap_or_else(|p| p.into_inner()));
        for p in pending {
            let s = p
                .end
                .synchronize()
                .and_then(|()| p.start.elapsed_ms(&p.end))
                .map_or(f64::NAN, |ms| f64::from(ms) / 1e3);
            add(p.key, s);
        }
    }
    let mut m = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
    let out = m
        .iter()
        .map(|(&(outer, name), &(seconds, calls))| Row {
            outer,
            name,
            seconds,
            calls,
        })
        .collect();
    m.clear();
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn inner_scopes_are_kept_under_their_outer_scope() {
        let d = Device::Cpu;
        let r = scope_if(true, "t-outer", &d, || {
            let a = scope_if(true, "t-inner", &d, || Ok(1))?;
            let b = scope_if(true, "t-mid", &d, || scope_if(true, "t-inner", &d, || Ok(2)))?;
            Ok(a + b)
        })
        .unwrap();
        assert_eq!(r, 3);
        let rows: Vec<Row> = take().into_iter().filter(|r| r.name.starts_with("t-")).collect();
        let key = |r: &Row| (r.outer, r.name, r.calls);
        let mut keys: Vec<_> = rows.iter().map(key).collect();
        keys.sort();
        assert_eq!(
            keys,
            vec![
                (None, "t-outer", 1),
                (Some("t-mid"), "t-inner", 1),
                (Some("t-outer"), "t-inner", 1),
                (Some("t-outer"), "t-mid", 1)
            ]
        );
        // Host timing: an outer window holds its direct inner ones.
        let outer = rows.iter().find(|r| r.name == "t-outer").unwrap();
        let direct: f64 = rows
            .iter()
            .filter(|r| r.outer == Some("t-outer"))
            .map(|r| r.seconds)
            .sum();
        assert!(outer.seconds >= direct, "{rows:?}");
        assert!(take().iter().all(|r| !r.name.starts_with("t-")));
        // Off: nothing is recorded.
        scope_if(false, "t-off", &d, || Ok(())).unwrap();
        assert!(take().iter().all(|r| r.name != "t-off"));
    }
}
