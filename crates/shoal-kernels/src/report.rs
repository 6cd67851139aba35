//! Which operations fell back to the plain path, and why (process-wide).

use std::collections::BTreeMap;
use std::sync::Mutex;

/// One kind of fallback: an operation and shape the fast kernel did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// The operation and its shape, e.g. `sdpa f16 b2 h1 q4096 k4096 d512`.
    pub what: String,
    /// Why the fast kernel did not run it.
    pub why: String,
    /// How many calls fell back.
    pub calls: u64,
}

static FALLBACKS: Mutex<BTreeMap<String, (String, u64)>> = Mutex::new(BTreeMap::new());

/// Records that `what` ran on the plain path because of `why`.
pub fn note_fallback(what: &str, why: &str) {
    let mut map = FALLBACKS.lock().unwrap_or_else(|p| p.into_inner());
    let e = map
        .entry(what.to_string())
        .or_insert_with(|| (why.to_string(), 0));
    e.1 += 1;
}

/// Every fallback so far, by operation and shape.
pub fn fallbacks() -> Vec<Fallback> {
    let map = FALLBACKS.lock().unwrap_or_else(|p| p.into_inner());
    map.iter()
        .map(|(what, (why, calls))| Fallback {
            what: what.clone(),
            why: why.clone(),
            calls: *calls,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_shape() {
        note_fallback("test-op a", "too big");
        note_fallback("test-op a", "too big");
        note_fallback("test-op b", "odd");
        let f: Vec<_> = fallbacks()
            .into_iter()
            .filter(|f| f.what.starts_with("test-op"))
            .collect();
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].what.as_str(), f[0].calls), ("test-op a", 2));
        assert_eq!((f[1].why.as_str(), f[1].calls), ("odd", 1));
    }
}
