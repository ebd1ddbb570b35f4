//! `POST /emit`: a backend pushes an event to sockets and rooms anywhere in the
//! cluster.
//!
//! The body is `{namespace, event, args?, socket? | room? | rooms?, except?}`:
//! to one socket by id, to rooms, or (neither) to the whole namespace. Owns the
//! body's validation ([`EmitRequest::parse`], pure and fuzzed) and the log line naming the token that asked; delivery is
//! `crate::io`'s.

use std::borrow::Cow;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema, Type,
};
use utoipa::{PartialSchema, ToSchema};

use super::ApiError;
use super::auth::Caller;
use super::body::ApiJson;
use crate::io::SocketIo;
use crate::protocol::payload::is_reserved_event;
use crate::socket::Payload;

/// The body of an emit: `socket`, or `room`/`rooms`, or neither (the whole
/// namespace).
// `EmitRequest::parse` (or the handler's JSON extractor, then `validate`)
// gives only valid ones: the namespace starts with `/`, the event is named and
// not reserved, and `socket` comes without rooms; `room` is merged into `rooms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmitRequest {
    /// The namespace, e.g. `/` or `/chat`.
    #[schema(pattern = "^/")]
    pub namespace: String,
    /// The event's name; not one Socket.IO reserves (`connect`, `disconnect`, …).
    #[schema(min_length = 1)]
    pub event: String,
    /// The event's arguments, any JSON values.
    #[serde(default)]
    pub args: Vec<Value>,
    /// To this one socket id (not with `room` or `rooms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    /// To this room (joins `rooms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// To these rooms; neither these nor `socket`: the whole namespace.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// Not to the sockets in these rooms.
    #[serde(default)]
    pub except: Vec<String>,
}

/// The document's schema of an emit body: [`EmitRequest`]'s own (derived, so
/// it follows the type) with the one rule an object schema cannot say,
/// `socket` comes without `room` or `rooms`, as an `anyOf`; without it a
/// schema-valid body could be refused.
pub struct EmitSchema;

impl PartialSchema for EmitSchema {
    fn schema() -> RefOr<Schema> {
        let null = || ObjectBuilder::new().schema_type(Type::Null);
        let to_one_socket_or_rooms = AnyOfBuilder::new()
            .item(ObjectBuilder::new().property("socket", null()))
            .item(
                ObjectBuilder::new().property("room", null()).property(
                    "rooms",
                    ArrayBuilder::new()
                        .items(ObjectBuilder::new().schema_type(Type::String))
                        .max_items(Some(0)),
                ),
            )
            .description(Some("`socket`, or `room`/`rooms`, not both"));
        AllOfBuilder::new()
            .item(<EmitRequest as PartialSchema>::schema())
            .item(to_one_socket_or_rooms)
            .into()
    }
}

impl ToSchema for EmitSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("EmitRequest")
    }
}

/// The answer to an accepted emit.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// Always `true`.
    pub ok: bool,
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

/// Pushes an event to sockets anywhere in the cluster.
///
/// To one socket, to rooms or to a whole namespace, on whichever nodes hold
/// them; accepted once handed to the cluster, not once delivered.
#[utoipa::path(
    post,
    path = "/emit",
    tag = "sockets",
    request_body = EmitSchema,
    responses(
        (status = 202, description = "Handed to the cluster for delivery", body = Accepted),
        (status = 400, description = "Not a valid emit: the message says which field (a reserved event name, `socket` with rooms, …)", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn emit(
    State(io): State<SocketIo>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<EmitRequest>,
) -> Result<Response, ApiError> {
    let request = request.validate().map_err(ApiError::BadRequest)?;
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
    Ok((StatusCode::ACCEPTED, Json(Accepted { ok: true })).into_response())
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
