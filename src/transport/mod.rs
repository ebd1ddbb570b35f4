//! The HTTP face of Engine.IO: one axum handler for the Socket.IO path that checks
//! the query (`EIO`, `transport`, `sid`) and hands the request to long-polling
//! ([`polling`]) or websocket ([`websocket`]).
//!
//! Owns the request validation and the reference server's error answers
//! (`400 {"code":…,"message":…}`). Does not own sessions (see `crate::engine`).

pub mod address;
pub mod polling;
pub mod websocket;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo as AxumConnectInfo, FromRequestParts, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::engine::{Engine, TooManyConnections};
use crate::session::ConnectInfo;

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
        (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
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
    let query = match Query::<EngineQuery>::try_from_uri(&parts.uri) {
        Ok(Query(query)) => query,
        Err(_) => return EngineError::BadRequest.into_response(),
    };
    if query.eio.as_deref() != Some("4") {
        return EngineError::UnsupportedProtocolVersion.into_response();
    }
    let remote_addr = parts
        .extensions
        .get::<AxumConnectInfo<SocketAddr>>()
        .map(|AxumConnectInfo(addr)| *addr);
    // A handshake without a session cookie gets one, so a browser keeps its
    // session across reconnections to any node.
    let cookie = session_cookie(&parts.headers);
    let new_cookie = match (&cookie, &query.sid) {
        (None, None) => Some(uuid::Uuid::new_v4().simple().to_string()),
        _ => None,
    };
    let info = ConnectInfo {
        query: parts.uri.query().unwrap_or_default().to_string(),
        remote_addr,
        address: engine
            .config()
            .trusted_proxies
            .client_address(remote_addr, &parts.headers),
        session_cookie: cookie.or_else(|| new_cookie.clone()),
    };
    let mut response = route(engine, query, parts, body, info).await;
    if let Some(id) = new_cookie
        && (response.status().is_success() || response.status() == StatusCode::SWITCHING_PROTOCOLS)
        && let Ok(value) = HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax"
        ))
    {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// The cookie that carries a client's session id.
pub const SESSION_COOKIE: &str = "rain_session";

/// The longest session id accepted from a client.
const MAX_ID: usize = 128;

/// Whether a client-supplied session id is acceptable: 1–128 characters of
/// `A-Z a-z 0-9 - _`.
pub fn valid_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A well-formed session id from the request's cookies.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
        .find(|id| valid_session_id(id))
        .map(str::to_string)
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
