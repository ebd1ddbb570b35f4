//! The node's HTTP API for backends: the emit API, through which an HTTP
//! backend component (or anything else trusted) pushes events to sockets and
//! rooms anywhere in the cluster.
//!
//! `POST /api/emit` with a JSON body `{namespace, event, args?, socket? | room?
//! | rooms?, except?}`: to one socket by id, to rooms, or (neither) to the whole
//! namespace. Answers `202 {"ok": true}`, or `400 {"error": …}` for a bad body.
//! Owns validation of that body only ([`EmitRequest::parse`], pure and fuzzed);
//! delivery is `crate::io`'s. The Cloud API
//! (nodes, components, the map) will join it here.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

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

/// The API's routes.
pub fn routes(io: SocketIo) -> Router {
    Router::new().route("/api/emit", post(emit)).with_state(io)
}

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": message.into() })),
    )
        .into_response()
}

async fn emit(
    State(io): State<SocketIo>,
    body: Result<Json<EmitRequest>, JsonRejection>,
) -> Response {
    let request = match body.map(|Json(request)| request.validate()) {
        Ok(Ok(request)) => request,
        Ok(Err(message)) => return bad_request(message),
        Err(rejection) => return bad_request(rejection.body_text()),
    };
    let payload = Payload::new(request.args);
    match request.socket {
        Some(sid) => io.emit_to(&request.namespace, &sid, &request.event, payload),
        None => io.broadcast_to(
            &request.namespace,
            &request.rooms,
            &request.except,
            &request.event,
            payload,
        ),
    }
    (StatusCode::ACCEPTED, Json(json!({ "ok": true }))).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cluster::memory::MemoryCluster;
    use crate::config::Settings;

    async fn serve() -> String {
        let settings = Settings::default();
        let io = SocketIo::new(&settings, Arc::new(MemoryCluster::new("n".into())));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, routes(io)).await });
        format!("http://{address}/api/emit")
    }

    async fn post(url: &str, body: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

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

    #[tokio::test]
    async fn names_reserved_by_socket_io_are_refused() {
        let url = serve().await;
        for event in crate::protocol::socketio::RESERVED_EVENTS {
            let (status, body) = post(&url, json!({ "namespace": "/", "event": event })).await;
            assert_eq!(status, 400, "{event}: {body}");
            assert!(
                body["error"].as_str().unwrap().contains("reserved"),
                "{body}"
            );
        }
        let (status, _) = post(&url, json!({ "namespace": "/", "event": "news" })).await;
        assert_eq!(status, 202);
    }
}
