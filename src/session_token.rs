//! Server-issued session tokens: `<id>.<mac>`, where `id` is 16 random bytes
//! and `mac` the HMAC-SHA256 of the id under `SESSION_SECRET`, both base64url
//! without padding. A client can hold and present a token, never make one up:
//! a token verifies only when a node minted it (with the current secret, or
//! with `SESSION_SECRET_PREVIOUS` during a rotation).
//!
//! Owns minting, verifying, the `rain_session` cookie's parsing and writing
//! (with the `cookie` crate) and [`parse_session_token`], the one pure entry
//! point from a client's text (a `Cookie` header or a bare token) to a session
//! id (the fuzz target's). Pure: no I/O, no logging. Does not own where the
//! token travels (see `crate::transport` and `crate::client`) nor the session's
//! data (see `crate::app_session`).
//!
//! A [`SessionId`] and a token never show in `Debug` output, so a stray `{:?}`
//! cannot write them to a log.

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{Secret, Settings};

/// The cookie that carries a client's session token.
pub const SESSION_COOKIE: &str = "rain_session";

/// Random bytes in a session id.
const ID_BYTES: usize = 16;
/// Length of an id as text (base64url of 16 bytes, no padding).
const ID_LEN: usize = 22;
/// Length of a MAC as text (base64url of 32 bytes, no padding).
const MAC_LEN: usize = 43;
/// Length of a whole token: id, `.`, MAC.
pub const TOKEN_LEN: usize = ID_LEN + 1 + MAC_LEN;

/// The id of a verified session: the key of its data in the cluster. Only a
/// node makes one (by minting, or by verifying a token it minted).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId(Arc<str>);

impl SessionId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }

    /// A session id the cluster already vouched for (a node put it in a
    /// routed message): not for text from a client.
    pub fn trusted(id: impl Into<Arc<str>>) -> SessionId {
        SessionId(id.into())
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// The keys that mint and verify tokens: the current one, and the previous one
/// during a rotation (verifies, never mints).
#[derive(Clone)]
pub struct SessionKeys {
    current: Arc<[u8]>,
    previous: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// Keys from secrets (the settings have checked their length).
    pub fn new(current: &[u8], previous: Option<&[u8]>) -> SessionKeys {
        SessionKeys {
            current: current.into(),
            previous: previous.map(Into::into),
        }
    }

    /// `SESSION_SECRET` (and `SESSION_SECRET_PREVIOUS`); unset, a random
    /// secret drawn once per process: tokens then verify on this process only,
    /// which is all the embedded backend serves (`Settings::validate` requires
    /// the secret with Redis).
    pub fn from_settings(settings: &Settings) -> SessionKeys {
        let previous = settings
            .session_secret_previous
            .as_ref()
            .map(Secret::as_bytes);
        match &settings.session_secret {
            Some(secret) => SessionKeys::new(secret.as_bytes(), previous),
            None => SessionKeys::new(process_secret(), previous),
        }
    }

    /// A fresh session: a random id and its token.
    pub fn mint(&self) -> (SessionId, String) {
        let id = URL_SAFE_NO_PAD.encode(rand::random::<[u8; ID_BYTES]>());
        let token = self.token_for_str(&id);
        (SessionId(id.into()), token)
    }

    /// The token of a session (with the current key).
    pub fn token(&self, id: &SessionId) -> String {
        self.token_for_str(id.as_str())
    }

    fn token_for_str(&self, id: &str) -> String {
        let mac = mac(&self.current, id).finalize().into_bytes();
        format!("{id}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    /// The session a token names, when a node minted it; `None` for anything
    /// else (malformed, forged, made with an unknown key). Compares in
    /// constant time.
    pub fn verify(&self, token: &str) -> Option<SessionId> {
        if token.len() != TOKEN_LEN {
            return None;
        }
        let (id, tag) = token.split_once('.')?;
        if id.len() != ID_LEN || !id.bytes().all(is_base64url) {
            return None;
        }
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let keys = std::iter::once(&self.current).chain(self.previous.as_ref());
        for key in keys {
            if mac(key, id).verify_slice(&tag).is_ok() {
                return Some(SessionId(id.into()));
            }
        }
        None
    }

    /// A MAC of `message` under the current key, for a purpose other than a
    /// session token (`domain` keeps the purposes apart: a signature of one
    /// is never a token or a signature of another), base64url.
    pub fn sign(&self, domain: &str, message: &str) -> String {
        URL_SAFE_NO_PAD.encode(
            domain_mac(&self.current, domain, message)
                .finalize()
                .into_bytes(),
        )
    }

    /// Whether `signature` is [`Self::sign`]'s for `message`, under the
    /// current or the previous key (during a rotation nodes differ). Compares
    /// in constant time.
    pub fn verify_signed(&self, domain: &str, message: &str, signature: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .any(|key| domain_mac(key, domain, message).verify_slice(&tag).is_ok())
    }

    /// The `Set-Cookie` value that gives a client its token: `HttpOnly`,
    /// `SameSite=Lax`, `Path=/`, and `Secure` when `secure`.
    pub fn set_cookie(&self, token: &str, secure: bool) -> String {
        cookie::Cookie::build((SESSION_COOKIE, token))
            .path("/")
            .http_only(true)
            .same_site(cookie::SameSite::Lax)
            .secure(secure)
            .build()
            .to_string()
    }
}

/// The one entry point from a client's text to a session: `input` is either a
/// `Cookie` header (`a=1; rain_session=<token>; b=2`) or a bare token (as
/// `auth.sessionId`). The first `rain_session` cookie that verifies wins.
/// Never panics, whatever the input.
pub fn parse_session_token(keys: &SessionKeys, input: &str) -> Option<SessionId> {
    if !input.contains('=') {
        return keys.verify(input.trim());
    }
    cookie::Cookie::split_parse(input)
        .filter_map(Result::ok)
        .filter(|c| c.name() == SESSION_COOKIE)
        .find_map(|c| keys.verify(c.value()))
}

/// The cookies of a `Cookie` header other than `rain_session`, as
/// `name=value; …` (what an auth backend may see of them).
pub fn other_cookies(header: &str) -> String {
    cookie::Cookie::split_parse(header)
        .filter_map(Result::ok)
        .filter(|c| c.name() != SESSION_COOKIE)
        .map(|c| format!("{}={}", c.name(), c.value()))
        .collect::<Vec<_>>()
        .join("; ")
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn mac(key: &[u8], id: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(b"rain-session:");
    mac.update(id.as_bytes());
    mac
}

fn domain_mac(key: &[u8], domain: &str, message: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(domain.as_bytes());
    mac.update(b":");
    mac.update(message.as_bytes());
    mac
}

/// This process's random secret, drawn on first use.
fn process_secret() -> &'static [u8] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(rand::random)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys() -> SessionKeys {
        SessionKeys::new(&[7u8; 32], None)
    }

    #[test]
    fn minted_tokens_verify_to_their_id() {
        let keys = keys();
        let (id, token) = keys.mint();
        assert_eq!(token.len(), TOKEN_LEN);
        assert_eq!(keys.verify(&token), Some(id.clone()));
        assert_eq!(keys.token(&id), token);
        assert!(token.starts_with(id.as_str()));
        // Two mints are two sessions.
        assert_ne!(keys.mint().0, id);
    }

    #[test]
    fn forged_and_foreign_tokens_do_not_verify() {
        let keys = keys();
        let (id, token) = keys.mint();
        // Same id, another MAC; another id, the same MAC.
        let mut forged = token.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(keys.verify(&forged), None);
        let (other, _) = keys.mint();
        let swapped = format!("{}{}", other.as_str(), &token[ID_LEN..]);
        assert_eq!(keys.verify(&swapped), None);
        // A made-up id, as clients used to send.
        assert_eq!(keys.verify("my-session"), None);
        assert_eq!(keys.verify(id.as_str()), None);
        // Minted under another secret.
        let other_keys = SessionKeys::new(&[8u8; 32], None);
        assert_eq!(keys.verify(&other_keys.mint().1), None);
    }

    #[test]
    fn the_previous_secret_verifies_but_never_mints() {
        let old = SessionKeys::new(&[1u8; 32], None);
        let (id, old_token) = old.mint();
        let rotated = SessionKeys::new(&[2u8; 32], Some(&[1u8; 32]));
        assert_eq!(rotated.verify(&old_token), Some(id.clone()));
        let new_token = rotated.token(&id);
        assert_ne!(new_token, old_token);
        assert_eq!(rotated.verify(&new_token), Some(id));
        // Once the rotation is over, the old token is refused.
        let after = SessionKeys::new(&[2u8; 32], None);
        assert_eq!(after.verify(&old_token), None);
    }

    #[test]
    fn cookies_are_parsed_and_written_with_the_cookie_crate() {
        let keys = keys();
        let (id, token) = keys.mint();
        let header = format!("theme=dark; {SESSION_COOKIE}=forged.x; {SESSION_COOKIE}={token}");
        assert_eq!(parse_session_token(&keys, &header), Some(id.clone()));
        assert_eq!(parse_session_token(&keys, &token), Some(id));
        assert_eq!(parse_session_token(&keys, "theme=dark"), None);
        assert_eq!(other_cookies(&header), "theme=dark");
        let set = keys.set_cookie(&token, false);
        assert!(
            set.starts_with(&format!("{SESSION_COOKIE}={token}")),
            "{set}"
        );
        for part in ["HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(set.contains(part), "{set}");
        }
        assert!(!set.contains("Secure"), "{set}");
        assert!(keys.set_cookie(&token, true).contains("Secure"));
    }

    #[test]
    fn debug_output_shows_no_id_and_no_secret() {
        let keys = keys();
        let (id, _) = keys.mint();
        let shown = format!("{id:?} {keys:?}");
        assert!(!shown.contains(id.as_str()), "{shown}");
        assert!(!shown.contains("7, 7"), "{shown}");
    }

    proptest! {
        /// Random text never verifies (only minted tokens do) and never panics,
        /// as a token or as a cookie header.
        #[test]
        fn random_text_never_verifies(text in ".{0,120}") {
            let keys = keys();
            prop_assert_eq!(parse_session_token(&keys, &text), None);
            prop_assert_eq!(keys.verify(&text), None);
            let _ = other_cookies(&text);
        }

        /// Well-shaped tokens that a node did not mint never verify.
        #[test]
        fn well_shaped_forgeries_never_verify(
            id in "[A-Za-z0-9_-]{22}",
            tag in "[A-Za-z0-9_-]{43}",
        ) {
            let keys = keys();
            let token = format!("{id}.{tag}");
            prop_assert_eq!(parse_session_token(&keys, &token), None);
            let header = format!("{SESSION_COOKIE}={token}");
            prop_assert_eq!(parse_session_token(&keys, &header), None);
        }

        /// A minted token survives any cookie header around it.
        #[test]
        fn a_minted_token_is_found_among_other_cookies(
            before in "[a-z]{1,8}=[a-z0-9]{0,8}",
            after in "[a-z]{1,8}=[a-z0-9]{0,8}",
        ) {
            let keys = keys();
            let (id, token) = keys.mint();
            let header = format!("{before}; {SESSION_COOKIE}={token}; {after}");
            prop_assert_eq!(parse_session_token(&keys, &header), Some(id));
        }
    }
}
