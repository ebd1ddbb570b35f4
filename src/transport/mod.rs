//! The HTTP face of Engine.IO: one axum handler for the Socket.IO path that checks
//! the query (`EIO`, `transport`, `sid`) and hands the request to long-polling
//! ([`polling`]) or websocket ([`websocket`]).
//!
//! Owns the request validation, the `Origin` check ([`origin`]), the reference
//! server's error answers (`400 {"code":…,"message":…}`, `403` for a refused
//! origin), and what a handshake learns of its client: its session from the
//! `rain_session` cookie (or a fresh one, given in a `Set-Cookie` that is
//! `Secure` per `COOKIE_SECURE`), its address, and the few headers a
//! connect-auth hook is shown; handing a request of another node's session
//! to [`forward`]. Does not own Engine.IO sessions (see
//! `crate::engine`) nor what a token is (see `crate::session_token`).

pub mod address;
pub mod forward;
pub mod origin;
pub mod polling;
pub mod websocket;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo as AxumConnectInfo, FromRequestParts, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::config::CookieSecure;
use crate::engine::{Engine, TooManyConnections};
use crate::session::ConnectInfo;
use crate::session_token::{other_cookies, parse_session_token};

/// The Engine.IO error codes, as the reference server sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineError {
    UnknownTransport = 0,
    UnknownSid = 1,
    BadHandshakeMethod = 2,
    BadRequest = 3,
    Forbidden = 4,
    UnsupportedProtocolVersion = 5,
}

impl EngineError {
    fn message(self) -> &'static str {
        match self {
            EngineError::UnknownTransport => "Transport unknown",
            EngineError::UnknownSid => "Session ID unknown",
            EngineError::BadHandshakeMethod => "Bad handshake method",
            EngineError::BadRequest => "Bad request",
            EngineError::Forbidden => "Forbidden",
            EngineError::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }
}

impl IntoResponse for EngineError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self as u8, "message": self.message() }).to_string();
        let status = match self {
            EngineError::Forbidden => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// A handshake refused for its address's connection count: 429 with the
/// reference server's error body (code 4, `Forbidden`) and a message saying why.
fn too_many_connections(refused: TooManyConnections) -> Response {
    let body = serde_json::json!({
        "code": EngineError::Forbidden as u8,
        "message": refused.to_string(),
    })
    .to_string();
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub struct EngineQuery {
    #[serde(rename = "EIO")]
    eio: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
}

/// The single entry point for `GET|POST {path}?EIO=4&transport=…`.
pub async fn handle(State(engine): State<Engine>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    // A request another node forwarded (its mark verified): that node made
    // the Origin check; it is never forwarded again.
    let forwarded = engine
        .forwarder()
        .is_some_and(|forwarder| forwarder.is_marked(&parts));
    // Before anything else, so a refused page learns nothing, not even whether
    // a session id exists.
    if !forwarded
        && !origin::allowed(
            &parts.headers,
            parts.uri.authority(),
            &engine.config().allowed_origins,
        )
    {
        tracing::debug!(origin = ?parts.headers.get(header::ORIGIN), "origin refused");
        return EngineError::Forbidden.into_response();
    }
    let query = match Query::<EngineQuery>::try_from_uri(&parts.uri) {
        Ok(Query(query)) => query,
        Err(_) => return EngineError::BadRequest.into_response(),
    };
    if query.eio.as_deref() != Some("4") {
        return EngineError::UnsupportedProtocolVersion.into_response();
    }
    // A session of another node: served by its owner, whichever node the
    // balancer picked (no sticky sessions).
    if !forwarded
        && let Some(sid) = &query.sid
        && let Some(forwarder) = engine.forwarder()
        && let Some(owner) = forwarder.owner(sid)
        && engine.get(sid).is_none()
    {
        return match (query.transport.as_deref(), &parts.method) {
            (Some("polling"), &Method::GET | &Method::POST) => {
                forward::polling(&engine, forwarder, &owner, parts, body).await
            }
            (Some("polling"), _) => EngineError::BadHandshakeMethod.into_response(),
            (Some("websocket"), _) => forward::websocket(&engine, forwarder, &owner, parts).await,
            _ => EngineError::UnknownTransport.into_response(),
        };
    }
    let remote_addr = parts
        .extensions
        .get::<AxumConnectInfo<SocketAddr>>()
        .map(|AxumConnectInfo(addr)| *addr);
    let config = engine.config();
    // A handshake without a valid session cookie gets a fresh session and its
    // token in a cookie, so a browser keeps its session across reconnections
    // to any node. A forged or foreign cookie is not an error: it is replaced.
    // Only a handshake (no `sid`) opens a session: later requests skip this.
    let cookies = query
        .sid
        .is_none()
        .then(|| cookie_header(&parts.headers))
        .flatten();
    let verified = cookies
        .as_deref()
        .and_then(|header| parse_session_token(&config.session_keys, header));
    let minted = match (&verified, &query.sid) {
        (None, None) => Some(config.session_keys.mint()),
        _ => None,
    };
    let headers = if config.auth_headers && query.sid.is_none() {
        auth_headers(&parts.headers, cookies.as_deref())
    } else {
        Vec::new()
    };
    let info = ConnectInfo {
        query: parts.uri.query().unwrap_or_default().to_string(),
        remote_addr,
        address: config
            .trusted_proxies
            .client_address(remote_addr, &parts.headers),
        session: verified.or_else(|| minted.as_ref().map(|(id, _)| id.clone())),
        headers,
    };
    let set_cookie = minted.map(|(_, token)| {
        let secure = match config.cookie_secure {
            CookieSecure::Always => true,
            CookieSecure::Never => false,
            CookieSecure::Auto => config
                .trusted_proxies
                .forwarded_https(remote_addr, &parts.headers),
        };
        config.session_keys.set_cookie(&token, secure)
    });
    let mut response = route(engine, query, parts, body, info).await;
    if let Some(cookie) = set_cookie
        && (response.status().is_success() || response.status() == StatusCode::SWITCHING_PROTOCOLS)
        && let Ok(value) = HeaderValue::from_str(&cookie)
    {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// Every `Cookie` header of the request, as one (`a=1; b=2`).
fn cookie_header(headers: &HeaderMap) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join("; "))
}

/// The longest header value a connect-auth hook is shown; a longer one is left
/// out rather than cut.
const AUTH_HEADER_MAX: usize = 4096;

/// The handshake headers a connect-auth hook sees: `user-agent`, `origin`,
/// `accept-language`, and the cookies other than `rain_session` (the session
/// token is the node's, not the backend's). Nothing else: `authorization` and
/// the like are the client's `auth` payload's job.
fn auth_headers(headers: &HeaderMap, cookies: Option<&str>) -> Vec<(&'static str, String)> {
    let mut kept = Vec::new();
    for name in ["user-agent", "origin", "accept-language"] {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok())
            && value.len() <= AUTH_HEADER_MAX
        {
            kept.push((name, value.to_string()));
        }
    }
    if let Some(cookies) = cookies {
        let others = other_cookies(cookies);
        if !others.is_empty() && others.len() <= AUTH_HEADER_MAX {
            kept.push(("cookie", others));
        }
    }
    kept
}

async fn route(
    engine: Engine,
    query: EngineQuery,
    mut parts: axum::http::request::Parts,
    body: Body,
    info: ConnectInfo,
) -> Response {
    match query.transport.as_deref() {
        Some("polling") => match (query.sid, &parts.method) {
            (None, &Method::GET) => polling::open(&engine, info),
            (None, _) => EngineError::BadHandshakeMethod.into_response(),
            (Some(sid), method) => {
                let Some((session, handler)) = engine.get(&sid) else {
                    return EngineError::UnknownSid.into_response();
                };
                match *method {
                    Method::GET => polling::poll(&engine, &session).await,
                    Method::POST => polling::post(&engine, &session, handler.as_ref(), body).await,
                    _ => EngineError::BadHandshakeMethod.into_response(),
                }
            }
        },
        Some("websocket") => {
            let Ok(upgrade) = WebSocketUpgrade::from_request_parts(&mut parts, &()).await else {
                return EngineError::BadRequest.into_response();
            };
            websocket::accept(engine, upgrade, query.sid, info)
        }
        _ => EngineError::UnknownTransport.into_response(),
    }
}
