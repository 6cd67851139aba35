//! The job's store secret: made by the launcher (or given as
//! `SHOAL_STORE_TOKEN`), handed to workers through the environment, presented
//! by every store connection before its first request. It never prints.

use std::io::Read;

use crate::error::{Error, Result};

/// The variable that carries the job's store secret.
pub const SHOAL_STORE_TOKEN: &str = "SHOAL_STORE_TOKEN";

/// A store secret. `Debug` and `Display` print `<secret>`, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

impl Secret {
    /// 32 random bytes from the kernel, as hex.
    pub fn generate() -> Result<Secret> {
        let mut b = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(|e| Error::io("reading /dev/urandom for the store secret", e))?;
        Ok(Secret(b.iter().map(|x| format!("{x:02x}")).collect()))
    }

    /// A secret given by the user; at least 16 characters, no whitespace.
    pub fn parse(value: &str) -> Result<Secret> {
        if value.len() < 16 || value.len() > 1024 || value.chars().any(char::is_whitespace) {
            return Err(Error::InvalidArgument {
                field: SHOAL_STORE_TOKEN,
                value: "<secret>".into(),
                detail: "must be 16 to 1024 characters without whitespace (e.g. `openssl rand -hex 32`)"
                    .into(),
            });
        }
        Ok(Secret(value.to_string()))
    }

    /// The value, to hand to a worker's environment or a handshake.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares without an early exit on the first differing byte.
    pub fn matches(&self, other: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), other.as_bytes());
        let mut diff = a.len() ^ b.len();
        for i in 0..a.len().max(b.len()) {
            diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_and_compare_exactly() {
        let s = Secret::generate().unwrap();
        assert_eq!(s.expose().len(), 64);
        assert_eq!(format!("{s} {s:?}"), "<secret> <secret>");
        assert!(s.matches(s.expose()));
        assert!(!s.matches(&s.expose()[1..]));
        assert!(!s.matches(""));
        assert_ne!(Secret::generate().unwrap(), s);
        assert!(Secret::parse("short").is_err());
        assert!(Secret::parse("has white space in it").is_err());
        assert!(Secret::parse("0123456789abcdef").is_ok());
    }
}
