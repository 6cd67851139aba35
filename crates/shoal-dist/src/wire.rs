//! The rendezvous store's wire format.
//!
//! One frame is `u32 LE header length`, `u64 LE body length`, a JSON header,
//! then the raw body. JSON keeps the protocol readable in a capture; the body
//! carries values (tensors, serialized objects) without re-encoding. Both
//! lengths are capped, so a stray client cannot make the store allocate
//! without bound. Nothing in a frame is ever executed (no pickle).

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The largest header accepted.
const MAX_HEADER: u32 = 1 << 20;
/// The largest body accepted (values are tensors or objects, never whole models).
pub const MAX_BODY: u64 = 4 << 30;

/// A request to the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Request {
    /// The first frame of a connection to a store with a secret: the secret.
    Hello {
        /// The job's secret.
        token: String,
    },
    /// Stores the body under `key`, replacing any value.
    Set {
        /// The key.
        key: String,
    },
    /// Returns the value of `key`, waiting up to `timeout_ms` for it to be set.
    Get {
        /// The key.
        key: String,
        /// How long to wait.
        timeout_ms: u64,
    },
    /// Adds `delta` to the integer under `key` (0 if unset) and returns it.
    Add {
        /// The key.
        key: String,
        /// The increment.
        delta: i64,
    },
    /// Waits until every key is set, up to `timeout_ms`.
    Wait {
        /// The keys.
        keys: Vec<String>,
        /// How long to wait.
        timeout_ms: u64,
    },
    /// Removes the keys.
    Delete {
        /// The keys.
        keys: Vec<String>,
    },
    /// Which of the keys are set, without waiting.
    Check {
        /// The keys.
        keys: Vec<String>,
    },
}

/// The store's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Response {
    /// Done; a value, if any, is in the body.
    Ok,
    /// The integer after an `Add`.
    Int(i64),
    /// Which keys are set (answer to `Check`).
    Present(Vec<bool>),
    /// A wait ran out; these keys never arrived.
    Timeout(Vec<String>),
    /// The request was malformed.
    Invalid(String),
}

/// Writes one frame.
pub fn write_frame<H: Serialize>(w: &mut impl Write, header: &H, body: &[u8]) -> std::io::Result<()> {
    let h = serde_json::to_vec(header).map_err(std::io::Error::other)?;
    let mut prefix = [0u8; 12];
    prefix[..4].copy_from_slice(&(h.len() as u32).to_le_bytes());
    prefix[4..].copy_from_slice(&(body.len() as u64).to_le_bytes());
    w.write_all(&prefix)?;
    w.write_all(&h)?;
    w.write_all(body)?;
    w.flush()
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame.
pub fn read_frame<H: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<Option<(H, Vec<u8>)>> {
    let mut prefix = [0u8; 12];
    match r.read_exact(&mut prefix[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Error::io("reading a frame", e)),
    }
    r.read_exact(&mut prefix[1..])
        .map_err(|e| Error::io("reading a frame", e))?;
    let hlen = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let mut blen_bytes = [0u8; 8];
    blen_bytes.copy_from_slice(&prefix[4..]);
    let blen = u64::from_le_bytes(blen_bytes);
    if hlen > MAX_HEADER {
        return Err(Error::Wire(format!(
            "header of {hlen} bytes exceeds {MAX_HEADER}"
        )));
    }
    if blen > MAX_BODY {
        return Err(Error::Wire(format!("body of {blen} bytes exceeds {MAX_BODY}")));
    }
    let h = read_bounded(r, u64::from(hlen), "reading a frame header")?;
    let header = serde_json::from_slice(&h).map_err(|e| Error::Wire(e.to_string()))?;
    let body = read_bounded(r, blen, "reading a frame body")?;
    Ok(Some((header, body)))
}

/// Reads exactly `n` bytes in chunks, so memory grows with the bytes that
/// arrive, never with the length a peer announced.
fn read_bounded(r: &mut impl Read, n: u64, what: &'static str) -> Result<Vec<u8>> {
    const CHUNK: u64 = 1 << 20;
    let mut out = Vec::with_capacity(n.min(CHUNK) as usize);
    let got = r.take(n).read_to_end(&mut out).map_err(|e| Error::io(what, e))?;
    if got as u64 != n {
        return Err(Error::io(
            what,
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("{got} of {n} bytes")),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        let req = Request::Get {
            key: "k".into(),
            timeout_ms: 5,
        };
        write_frame(&mut buf, &req, b"body").unwrap();
        let (h, b): (Request, Vec<u8>) = read_frame(&mut buf.as_slice()).unwrap().unwrap();
        assert_eq!(h, req);
        assert_eq!(b, b"body");
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&(MAX_HEADER + 1).to_le_bytes());
        buf.extend_from_slice(&0u64.to_le_bytes());
        assert!(read_frame::<Request>(&mut buf.as_slice()).is_err());
        let mut ok = Vec::new();
        write_frame(&mut ok, &Response::Ok, b"xyz").unwrap();
        ok.pop();
        assert!(read_frame::<Response>(&mut ok.as_slice()).is_err());
        assert!(read_frame::<Response>(&mut &b""[..]).unwrap().is_none());
    }
}
