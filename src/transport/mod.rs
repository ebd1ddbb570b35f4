//! The HTTP face of Engine.IO: one axum handler for the Socket.IO path that checks
//! the query (`EIO`, `transport`, `sid`) and hands the request to long-polling
//! ([`polling`]) or websocket ([`websocket`]).
//!
//! Owns the request validation and the reference server's error answers
//! (`400 {"code":…,"message":…}`). Does not own sessions (see `crate::engine`).

pub mod polling;
pub mod websocket;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo as AxumConnectInfo, FromRequestParts, Query, State};
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::engine::Engine;
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

#[derive(Debug, Deserialize)]
pub struct EngineQuery {
    #[serde(rename = "EIO")]
    eio: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
}

/// The single entry point for `GET|POST {path}?EIO=4&transport=…`.
pub async fn handle(State(engine): State<Engine>, request: Request<Body>) -> Response {
    let (mut parts, body) = request.into_parts();
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
    let info = ConnectInfo {
        query: parts.uri.query().unwrap_or_default().to_string(),
        remote_addr,
    };
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
