//! `POST /emit`: a backend pushes an event to sockets and rooms anywhere in the
//! cluster.
//!
//! The body is `{namespace, event, args?, socket? | room? | rooms?, except?}`:
//! to one socket by id, to rooms, or (neither) to the whole namespace. Owns the
//! body's validation ([`EmitRequest::parse`], pure and fuzzed) and the log line naming the token that asked; delivery is
//! `crate::io`'s.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ApiError;
use super::auth::Caller;
use crate::io::SocketIo;
use crate::protocol::payload::is_reserved_event;
use crate::socket::Payload;

/// The body of an emit request. [`EmitRequest::parse`] (or the handler's JSON
/// extractor, then [`EmitRequest::validate`]) gives only valid ones: the
/// namespace starts with `/`, the event is named and not reserved, and `socket`
/// comes without rooms; `room` is merged into `rooms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmitRequest {
    pub namespace: String,
    pub event: String,
    #[serde(default)]
    pub args: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default)]
    pub rooms: Vec<String>,
    #[serde(default)]
    pub except: Vec<String>,
}

impl EmitRequest {
    /// Reads a body: JSON, then [`validate`](Self::validate). Pure, so the body
    /// a backend sends can be fuzzed without a server.
    pub fn parse(body: &[u8]) -> Result<EmitRequest, String> {
        serde_json::from_slice::<EmitRequest>(body)
            .map_err(|error| error.to_string())?
            .validate()
    }

    /// The checks on a decoded body; the error is the `400` answer's message.
    pub fn validate(mut self) -> Result<EmitRequest, String> {
        if !self.namespace.starts_with('/') {
            return Err("namespace must start with '/'".into());
        }
        if self.event.is_empty() {
            return Err("event must not be empty".into());
        }
        if is_reserved_event(&self.event) {
            return Err(format!(
                "event name {:?} is reserved by Socket.IO",
                self.event
            ));
        }
        self.rooms.extend(self.room.take());
        if self.socket.is_some() && !self.rooms.is_empty() {
            return Err("give socket or rooms, not both".into());
        }
        Ok(self)
    }
}

/// Answers `202 {"ok": true}`, or `400 {"error": …}` for a bad body.
pub(super) async fn emit(
    State(io): State<SocketIo>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<EmitRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = match body.map(|Json(request)| request.validate()) {
        Ok(Ok(request)) => request,
        Ok(Err(message)) => return Err(ApiError::BadRequest(message)),
        Err(rejection) => return Err(ApiError::BadRequest(rejection.body_text())),
    };
    let rooms = request.rooms;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_checks_the_body_and_merges_room_into_rooms() {
        let request =
            EmitRequest::parse(br#"{"namespace":"/","event":"news","room":"a","rooms":["b"]}"#)
                .unwrap();
        assert_eq!(
            (request.room, request.rooms),
            (None, vec!["b".into(), "a".into()])
        );
        for (body, error) in [
            (
                &br#"{"namespace":"x","event":"e"}"#[..],
                "namespace must start with '/'",
            ),
            (
                br#"{"namespace":"/","event":""}"#,
                "event must not be empty",
            ),
            (
                br#"{"namespace":"/","event":"e","socket":"s","room":"r"}"#,
                "give socket or rooms, not both",
            ),
            (
                br#"{"namespace":"/","event":"connect"}"#,
                "event name \"connect\" is reserved by Socket.IO",
            ),
        ] {
            assert_eq!(EmitRequest::parse(body), Err(error.to_string()));
        }
        let unknown = EmitRequest::parse(br#"{"namespace":"/","event":"e","to":"x"}"#);
        assert!(unknown.unwrap_err().contains("unknown field"));
    }
}
