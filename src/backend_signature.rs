//! Signatures on what a node sends to a backend (the `AUTH_URL` call, HTTP
//! components' events), so a backend can tell a node from anyone else who can
//! reach it.
//!
//! Every such request carries `X-Rain-Timestamp: <unix seconds>` and
//! `X-Rain-Signature: sha256=<hex HMAC-SHA256(BACKEND_SECRET, timestamp + "." + body)>`.
//! A backend recomputes the HMAC over the exact body bytes it received,
//! compares in constant time, and refuses a timestamp far from its clock (a
//! replay). With `BACKEND_SECRET` unset the headers are not sent.
//!
//! Owns the header names and the computation. Pure: no I/O. Does not own the
//! HTTP clients that send the headers (see `crate::auth` and
//! `crate::component::http`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{Secret, Settings};

/// The header with the request's time, in seconds since the Unix epoch.
pub const TIMESTAMP_HEADER: &str = "x-rain-timestamp";
/// The header with `sha256=<hex HMAC>`.
pub const SIGNATURE_HEADER: &str = "x-rain-signature";

/// Signs request bodies with `BACKEND_SECRET`. Its `Debug` shows no secret.
#[derive(Clone)]
pub struct BackendSigner {
    secret: Secret,
}

impl std::fmt::Debug for BackendSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackendSigner(<redacted>)")
    }
}

impl BackendSigner {
    pub fn new(secret: Secret) -> BackendSigner {
        BackendSigner { secret }
    }

    /// The signer of these settings; `None` when `BACKEND_SECRET` is unset.
    pub fn from_settings(settings: &Settings) -> Option<BackendSigner> {
        settings.backend_secret.clone().map(BackendSigner::new)
    }

    /// The two headers (name, value) for `body` sent now.
    pub fn headers(&self, body: &[u8]) -> [(&'static str, String); 2] {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        self.headers_at(timestamp, body)
    }

    /// The headers for `body` sent at `timestamp`.
    pub fn headers_at(&self, timestamp: u64, body: &[u8]) -> [(&'static str, String); 2] {
        let timestamp = timestamp.to_string();
        [
            (TIMESTAMP_HEADER, timestamp.clone()),
            (
                SIGNATURE_HEADER,
                format!("sha256={}", sign(self.secret.as_bytes(), &timestamp, body)),
            ),
        ]
    }
}

/// Hex HMAC-SHA256 of `timestamp + "." + body` under `secret`: what a backend
/// recomputes.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_documented_hmac() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            expected,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // timestamp "what do ya want", separator ".", body: not the same text.
        assert_ne!(sign(b"Jefe", "what do ya want", b" for nothing?"), expected);
        let signer = BackendSigner::new(Secret::new("s3cret"));
        let [(t, ts), (s, sig)] = signer.headers_at(1700000000, b"{}");
        assert_eq!((t, ts.as_str()), (TIMESTAMP_HEADER, "1700000000"));
        assert_eq!(s, SIGNATURE_HEADER);
        assert_eq!(
            sig,
            format!("sha256={}", sign(b"s3cret", "1700000000", b"{}"))
        );
        assert!(!format!("{signer:?}").contains("s3cret"));
    }
}
