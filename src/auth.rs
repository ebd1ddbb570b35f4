//! Who the client is: the connect-auth hook asked on every namespace CONNECT.
//!
//! Owns the [`ConnectAuth`] trait (an embedder installs one with
//! `SocketIo::set_connect_auth`), what it is asked ([`AuthRequest`]) and what it
//! answers ([`AuthDecision`]), and [`HttpAuth`], the hook behind `AUTH_URL`:
//! it POSTs the request as JSON (signed per `crate::backend_signature` when
//! `BACKEND_SECRET` is set) within `AUTH_TIMEOUT_MS`, and reads
//!
//! - `200 {"user": "<id>"}` → accepted as that user (1 to [`USER_MAX_LEN`] bytes);
//! - `200 {"error": "<message>"}` → refused; the client's `connect_error`
//!   carries the message (cut to [`MESSAGE_MAX_LEN`] bytes);
//! - anything else (timeout, no connection, another status, a redirect, which
//!   is not followed, an answer over [`ANSWER_MAX_BYTES`] or not one of those
//!   two) → refused as `auth unavailable`, the detail in the node's log only.
//!
//! Does not own when the hook runs nor what is done with the user (see
//! `crate::client`: the socket and the session get it, and through them
//! components and HTTP backends).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;

use crate::backend_signature::BackendSigner;
use crate::config::Settings;

/// The longest user id accepted from a hook, in bytes.
pub const USER_MAX_LEN: usize = 256;
/// The longest refusal message passed on to the client, in bytes.
pub const MESSAGE_MAX_LEN: usize = 200;
/// The largest `AUTH_URL` answer read, in bytes.
pub const ANSWER_MAX_BYTES: usize = 16 * 1024;
/// The refusal when the hook could not decide.
pub const UNAVAILABLE: &str = "auth unavailable";

/// What a hook is asked about one namespace CONNECT. Serialized as the body
/// `AUTH_URL` receives: `{namespace, auth, headers, address}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuthRequest {
    /// The namespace the client connects to.
    pub namespace: String,
    /// The CONNECT packet's auth payload (`{}` when none), without the
    /// session token (`sessionId`), which is the node's business.
    pub auth: Value,
    /// From the Engine.IO handshake: `user-agent`, `origin`,
    /// `accept-language`, and `cookie` without `rain_session`, when present.
    pub headers: BTreeMap<String, String>,
    /// The client's address (behind `TRUSTED_PROXIES`), when known.
    pub address: Option<IpAddr>,
}

/// A hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDecision {
    /// The client may connect, as `user` when given.
    Accept { user: Option<String> },
    /// The client is refused; `message` is its `connect_error`'s.
    Refuse { message: String },
}

impl AuthDecision {
    /// Refused because the hook could not decide.
    pub fn unavailable() -> AuthDecision {
        AuthDecision::Refuse {
            message: UNAVAILABLE.to_string(),
        }
    }
}

/// Decides who may connect to a namespace, and as whom. Asked once per
/// namespace CONNECT, before the namespace's own `authorize`'s socket is
/// admitted; the connect waits for the answer (the node takes other work
/// meanwhile).
pub trait ConnectAuth: Send + Sync + 'static {
    fn authorize(&self, request: AuthRequest) -> BoxFuture<'static, AuthDecision>;
}

/// The hook behind `AUTH_URL`.
pub struct HttpAuth {
    url: String,
    client: reqwest::Client,
    signer: Option<BackendSigner>,
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAuth")
            .field("url", &self.url)
            .field("signed", &self.signer.is_some())
            .finish()
    }
}

impl HttpAuth {
    /// A hook POSTing to `url` within `timeout`; requests signed when a signer
    /// is given.
    pub fn new(
        url: String,
        timeout: Duration,
        signer: Option<BackendSigner>,
    ) -> Result<HttpAuth, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(HttpAuth {
            url,
            client,
            signer,
        })
    }

    /// The hook of `AUTH_URL`, when set.
    pub fn from_settings(settings: &Settings) -> Option<HttpAuth> {
        let url = settings.auth_url.clone()?;
        match HttpAuth::new(
            url,
            settings.auth_timeout(),
            BackendSigner::from_settings(settings),
        ) {
            Ok(hook) => Some(hook),
            Err(error) => {
                // Refusing everyone beats accepting everyone: a hook that
                // cannot be built answers "auth unavailable".
                tracing::error!(%error, "AUTH_URL: cannot build the HTTP client");
                Some(HttpAuth {
                    url: String::new(),
                    client: reqwest::Client::new(),
                    signer: None,
                })
            }
        }
    }

    async fn ask(
        url: String,
        client: reqwest::Client,
        signer: Option<BackendSigner>,
        request: AuthRequest,
    ) -> Result<AuthDecision, String> {
        if url.is_empty() {
            return Err("no HTTP client".into());
        }
        let body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        let mut post = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(signer) = &signer {
            for (name, value) in signer.headers(&body) {
                post = post.header(name, value);
            }
        }
        let mut response = post.body(body).send().await.map_err(|e| {
            if e.is_timeout() {
                "timed out".to_string()
            } else {
                format!("request failed: {e}")
            }
        })?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(format!("answered {}", response.status().as_u16()));
        }
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            if e.is_timeout() {
                "timed out".to_string()
            } else {
                format!("answer unreadable: {e}")
            }
        })? {
            if answer.len() + chunk.len() > ANSWER_MAX_BYTES {
                return Err(format!("answer over {ANSWER_MAX_BYTES} bytes"));
            }
            answer.extend_from_slice(&chunk);
        }
        decide(&answer)
    }
}

/// The decision an `AUTH_URL` answer body (of a 200) means, or why it means
/// none.
pub fn decide(answer: &[u8]) -> Result<AuthDecision, String> {
    let value: Value =
        serde_json::from_slice(answer).map_err(|e| format!("answer is not JSON: {e}"))?;
    match (value.get("user"), value.get("error")) {
        (Some(Value::String(user)), None) if (1..=USER_MAX_LEN).contains(&user.len()) => {
            Ok(AuthDecision::Accept {
                user: Some(user.clone()),
            })
        }
        (Some(Value::String(user)), None) => Err(format!(
            "user id of {} bytes (1 to {USER_MAX_LEN} allowed)",
            user.len()
        )),
        (None, Some(Value::String(message))) => Ok(AuthDecision::Refuse {
            message: cut(message, MESSAGE_MAX_LEN),
        }),
        _ => Err("answer is neither {\"user\": string} nor {\"error\": string}".into()),
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

impl ConnectAuth for HttpAuth {
    fn authorize(&self, request: AuthRequest) -> BoxFuture<'static, AuthDecision> {
        let (url, client, signer) = (self.url.clone(), self.client.clone(), self.signer.clone());
        async move {
            let namespace = request.namespace.clone();
            match HttpAuth::ask(url, client, signer, request).await {
                Ok(decision) => decision,
                Err(detail) => {
                    metrics::counter!("rain_auth_unavailable_total").increment(1);
                    tracing::warn!(%namespace, %detail, "AUTH_URL gave no decision: connect refused");
                    AuthDecision::unavailable()
                }
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_strictly() {
        assert_eq!(
            decide(br#"{"user": "ann"}"#),
            Ok(AuthDecision::Accept {
                user: Some("ann".into())
            })
        );
        assert_eq!(
            decide(br#"{"error": "bad token"}"#),
            Ok(AuthDecision::Refuse {
                message: "bad token".into()
            })
        );
        let long = format!(r#"{{"error": "{}"}}"#, "é".repeat(300));
        let Ok(AuthDecision::Refuse { message }) = decide(long.as_bytes()) else {
            panic!("not a refusal")
        };
        assert!(message.len() <= MESSAGE_MAX_LEN && message.starts_with("éé"));
        for bad in [
            &br#"{"user": ""}"#[..],
            br#"{"user": 7}"#,
            br#"{"user": "a", "error": "b"}"#,
            br#"{}"#,
            br#"[]"#,
            b"not json",
            b"",
        ] {
            assert!(decide(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let too_long = format!(r#"{{"user": "{}"}}"#, "u".repeat(USER_MAX_LEN + 1));
        assert!(decide(too_long.as_bytes()).is_err());
    }
}
