//! The node's HTTP API for backends: the emit API, through which an HTTP
//! backend component (or anything else trusted) pushes events to sockets and
//! rooms anywhere in the cluster.
//!
//! `POST /api/emit` with a JSON body `{namespace, event, args?, socket? | room?
//! | rooms?, except?}`: to one socket by id, to rooms, or (neither) to the whole
//! namespace. Answers `202 {"ok": true}`, or `400 {"error": …}` for a bad body.
//! Owns validation of that body only; delivery is `crate::io`'s. The Cloud API
//! (nodes, components, the map) will join it here.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::io::SocketIo;
use crate::protocol::payload::is_reserved_event;
use crate::socket::Payload;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmitRequest {
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
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return bad_request(rejection.body_text()),
    };
    if !request.namespace.starts_with('/') {
        return bad_request("namespace must start with '/'");
    }
    if request.event.is_empty() {
        return bad_request("event must not be empty");
    }
    if is_reserved_event(&request.event) {
        return bad_request(format!(
            "event name {:?} is reserved by Socket.IO",
            request.event
        ));
    }
    let mut rooms = request.rooms;
    rooms.extend(request.room);
    let payload = Payload::new(request.args);
    match request.socket {
        Some(_) if !rooms.is_empty() => return bad_request("give socket or rooms, not both"),
        Some(sid) => io.emit_to(&request.namespace, &sid, &request.event, payload),
        None => io.broadcast_to(
            &request.namespace,
            &rooms,
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
