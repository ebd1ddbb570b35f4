//! `POST /emit`: a backend pushes an event to sockets and rooms anywhere in the
//! cluster.
//!
//! The body is `{namespace, event, args?, socket? | room? | rooms?, except?}`:
//! to one socket by id, to rooms, or (neither) to the whole namespace. Owns the
//! body's validation and the log line naming the token that asked; delivery is
//! `crate::io`'s.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use super::auth::Caller;
use crate::io::SocketIo;
use crate::protocol::payload::is_reserved_event;
use crate::socket::Payload;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EmitRequest {
    namespace: String,
    event: String,
    #[serde(default)]
    args: Vec<Value>,
    socket: Option<String>,
    room: Option<String>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
}

/// Answers `202 {"ok": true}`, or `400 {"error": …}` for a bad body.
pub(super) async fn emit(
    State(io): State<SocketIo>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<EmitRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return Err(ApiError::BadRequest(rejection.body_text())),
    };
    if !request.namespace.starts_with('/') {
        return Err(ApiError::BadRequest("namespace must start with '/'".into()));
    }
    if request.event.is_empty() {
        return Err(ApiError::BadRequest("event must not be empty".into()));
    }
    if is_reserved_event(&request.event) {
        return Err(ApiError::BadRequest(format!(
            "event name {:?} is reserved by Socket.IO",
            request.event
        )));
    }
    let mut rooms = request.rooms;
    rooms.extend(request.room);
    if request.socket.is_some() && !rooms.is_empty() {
        return Err(ApiError::BadRequest(
            "give socket or rooms, not both".into(),
        ));
    }
    tracing::info!(
        token = %caller.name,
        namespace = ?request.namespace,
        event = ?request.event,
        socket = ?request.socket,
        rooms = ?rooms,
        "api: emit"
    );
    let payload = Payload::new(request.args);
    match request.socket {
        Some(sid) => io.emit_to(&request.namespace, &sid, &request.event, payload),
        None => io.broadcast_to(
            &request.namespace,
            &rooms,
            &request.except,
            &request.event,
            payload,
        ),
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "ok": true }))).into_response())
}
