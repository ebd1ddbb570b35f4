//! The server the interop tests (`tests/interop.rs`, `tests/js`, `tests/python`)
//! drive with the official clients. Reads the node's settings from the
//! environment, prints the node's `listening on` and `api listening on` lines,
//! and serves `/`, `/custom` and `/dyn-<alnum>` with the same handlers:
//!
//! - connect with auth `{"token":"reject"}` → CONNECT_ERROR `rejected`; otherwise
//!   `welcome {sid, namespace, auth}` right after connecting;
//! - `echo(...args, ack?)` → ack with the args, or an `echo` event back;
//! - `join(room, ack)`, `leave(room, ack)`, `rooms(ack)` → ack(rooms);
//! - `to-room({room, event, data})`, `to-room-except({room, except, event, data})`,
//!   `broadcast({event, data})` (everyone but the sender) → ack(true);
//! - `ask({question}, ack)` → a server-to-client `question` with an ack (2 s);
//! - `disconnect-me()` → server-side namespace disconnect;
//! - `drop-transport()` → the whole connection is closed abruptly;
//! - `flood({count, size}, ack?)` → `count` `flood` events of `size` characters;
//!
//! and, across a cluster (`REDIS_SERVER` set):
//!
//! - `whoami(ack)` → `{sid, node, session, user}` (`session`: the session's
//!   token; `user`: who `AUTH_URL` said the client is);
//! - `session-get(ack)` → the session's fields; `session-set({field: value}, ack)`
//!   → stores them (any node reads them back), or `{error: "session too large"}`;
//! - `emit-all({event, data})` → everyone in the namespace, sender included;
//! - `emit-to({sid, event, data})` → one socket, on whatever node;
//! - `fetch-sockets({room?}, ack)` → `[{sid, node, rooms}]` from the shared state;
//! - `remote-join({sid?|room?, join})`, `remote-leave({sid?|room?, leave})`,
//!   `remote-disconnect({sid?|room?})` → applied wherever the sockets are;
//! - `broadcast-with-ack({room?, event, data, timeout}, ack)` → everyone else is
//!   asked; ack `{responses}` with the answers that came in time.
//!
//! Acks of `join`, `leave` and the remote operations, and the `welcome` event,
//! are sent once the cluster has applied the change.

use std::sync::Arc;
use std::time::Duration;

use rain_node::app_session::write_error_message;
use rain_node::broadcast::Broadcast;
use rain_node::cluster::{RemoteOp, Target};
use rain_node::config::Settings;
use rain_node::io::SocketIo;
use rain_node::namespace::NamespaceHandler;
use rain_node::server::{Server, shutdown_signal};
use rain_node::session_token::{SessionId, SessionKeys};
use rain_node::socket::{AckError, AckSender, Event, Payload, Socket};
use serde_json::{Value, json};

struct Testbed;

/// The node's session keys, for `whoami`'s token.
static KEYS: std::sync::OnceLock<SessionKeys> = std::sync::OnceLock::new();

impl NamespaceHandler for Testbed {
    fn authorize(&self, _socket: &Arc<Socket>, auth: &Value) -> Result<(), String> {
        if auth.get("token").and_then(Value::as_str) == Some("reject") {
            return Err("rejected".into());
        }
        Ok(())
    }

    fn on_connect(&self, socket: &Arc<Socket>) {
        let welcome = json!({
            "sid": socket.id(),
            "namespace": socket.namespace().name(),
            "auth": socket.auth(),
        });
        // Once the client is welcomed, the cluster knows of it and this node
        // hears its namespace's broadcasts.
        let socket = socket.clone();
        tokio::spawn(async move {
            // Welcomed all the same when it could not be confirmed: the node
            // repairs its state in Redis by itself.
            let _ = socket.namespace().cluster().flush().await;
            let _ = socket.emit("welcome", Payload::new(vec![welcome]));
        });
    }

    fn on_event(&self, socket: &Arc<Socket>, event: Event) {
        let Event { name, payload, ack } = event;
        let first = payload.args.first().cloned().unwrap_or(Value::Null);
        let field = |key: &str| first.get(key).cloned().unwrap_or(Value::Null);
        let text = |key: &str| {
            first
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        match name.as_str() {
            "echo" => match ack {
                Some(ack) => reply(ack, payload),
                None => {
                    let _ = socket.emit("echo", payload);
                }
            },
            "join" | "leave" | "rooms" => {
                if let Some(room) = first.as_str() {
                    if name == "join" {
                        socket.join(room);
                    } else if name == "leave" {
                        socket.leave(room);
                    }
                }
                if let Some(ack) = ack {
                    let rooms = json!(socket.rooms());
                    after_flush(socket, ack, Payload::new(vec![rooms]));
                }
            }
            "whoami" => {
                if let Some(ack) = ack {
                    let node = socket.namespace().cluster().node_id().to_string();
                    // The client may know its token (a node gives it out), not
                    // the bare id.
                    let id = SessionId::trusted(socket.session_id());
                    let token = KEYS.get().map(|keys| keys.token(&id));
                    let me = json!({ "sid": socket.id(), "node": node, "session": token, "user": socket.user() });
                    reply(ack, Payload::new(vec![me]));
                }
            }
            "session-get" => {
                let session = socket.session();
                tokio::spawn(async move {
                    let answer = match session.get_all().await {
                        Ok(fields) => json!(fields),
                        Err(error) => json!({ "error": error.to_string() }),
                    };
                    if let Some(ack) = ack {
                        reply(ack, Payload::new(vec![answer]));
                    }
                });
            }
            "session-set" => {
                let session = socket.session();
                let fields: Vec<(String, String)> = first
                    .as_object()
                    .map(|object| {
                        object
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.clone(),
                                    v.as_str().map_or_else(|| v.to_string(), str::to_string),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                tokio::spawn(async move {
                    let answer = match session.set(fields).await {
                        Ok(()) => json!(true),
                        Err(error) => json!({ "error": write_error_message(&error) }),
                    };
                    if let Some(ack) = ack {
                        reply(ack, Payload::new(vec![answer]));
                    }
                });
            }
            "emit-all" => {
                let data =
                    Payload::with_attachments(vec![field("data")], payload.attachments.clone());
                Broadcast::new(socket.namespace().clone()).emit(&text("event"), data);
                if let Some(ack) = ack {
                    reply(ack, Payload::new(vec![json!(true)]));
                }
            }
            "emit-to" => {
                let data =
                    Payload::with_attachments(vec![field("data")], payload.attachments.clone());
                socket
                    .namespace()
                    .emit_to(&text("sid"), &text("event"), data);
                if let Some(ack) = ack {
                    reply(ack, Payload::new(vec![json!(true)]));
                }
            }
            "fetch-sockets" => {
                let namespace = socket.namespace().clone();
                let room = first
                    .get("room")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                tokio::spawn(async move {
                    let answer = match namespace.fetch_sockets(room.as_deref()).await {
                        Ok(records) => json!(
                            records
                                .iter()
                                .map(
                                    |r| json!({ "sid": r.sid, "node": r.node_id, "rooms": r.rooms })
                                )
                                .collect::<Vec<_>>()
                        ),
                        Err(error) => json!({ "error": error.to_string() }),
                    };
                    if let Some(ack) = ack {
                        reply(ack, Payload::new(vec![answer]));
                    }
                });
            }
            "remote-join" | "remote-leave" | "remote-disconnect" => {
                let target = match first.get("sid").and_then(Value::as_str) {
                    Some(sid) => Target::Socket(sid.to_string()),
                    None => Target::Room(text("room")),
                };
                let op = match name.as_str() {
                    "remote-join" => RemoteOp::Join(text("join")),
                    "remote-leave" => RemoteOp::Leave(text("leave")),
                    _ => RemoteOp::Disconnect,
                };
                socket.namespace().apply_everywhere(target, op);
                if let Some(ack) = ack {
                    after_flush(socket, ack, Payload::new(vec![json!(true)]));
                }
            }
            "broadcast-with-ack" => {
                let mut audience = socket.broadcast();
                if let Some(room) = first.get("room").and_then(Value::as_str) {
                    audience = audience.to(room);
                }
                let event = text("event");
                let data = Payload::new(vec![field("data")]);
                let timeout = Duration::from_millis(field("timeout").as_u64().unwrap_or(1000));
                tokio::spawn(async move {
                    let answers = audience.emit_with_ack(&event, data, timeout).await;
                    let responses: Vec<Value> = answers
                        .into_iter()
                        .map(|answer| answer.args.into_iter().next().unwrap_or(Value::Null))
                        .collect();
                    if let Some(ack) = ack {
                        reply(ack, Payload::new(vec![json!({ "responses": responses })]));
                    }
                });
            }
            "to-room" | "to-room-except" | "broadcast" => {
                let namespace = socket.namespace().clone();
                let audience = match name.as_str() {
                    "broadcast" => socket.broadcast(),
                    "to-room" => Broadcast::new(namespace).to(&text("room")),
                    _ => Broadcast::new(namespace)
                        .to(&text("room"))
                        .except(&text("except")),
                };
                // Attachments keep their order, so the placeholders in `data` still
                // point at the right ones.
                let data =
                    Payload::with_attachments(vec![field("data")], payload.attachments.clone());
                audience.emit(&text("event"), data);
                if let Some(ack) = ack {
                    reply(ack, Payload::new(vec![json!(true)]));
                }
            }
            "ask" => {
                let socket = socket.clone();
                let question = field("question");
                tokio::spawn(async move {
                    let outcome = socket
                        .emit_with_ack(
                            "question",
                            Payload::new(vec![question]),
                            Duration::from_secs(2),
                        )
                        .await;
                    let answer = match outcome {
                        Ok(answer) => {
                            json!({ "answer": answer.args.first().cloned().unwrap_or(Value::Null) })
                        }
                        Err(AckError::Timeout) => json!({ "error": "timeout" }),
                        Err(error) => json!({ "error": error.to_string() }),
                    };
                    if let Some(ack) = ack {
                        reply(ack, Payload::new(vec![answer]));
                    }
                });
            }
            "disconnect-me" => socket.disconnect(),
            "drop-transport" => socket.close_connection(),
            "flood" => {
                let count = field("count").as_u64().unwrap_or(0);
                let size = field("size").as_u64().unwrap_or(0) as usize;
                let body = Value::String("x".repeat(size));
                for _ in 0..count {
                    if socket
                        .emit("flood", Payload::new(vec![body.clone()]))
                        .is_err()
                    {
                        break;
                    }
                }
                if let Some(ack) = ack {
                    reply(ack, Payload::new(vec![json!(true)]));
                }
            }
            _ => {
                if let Some(ack) = ack {
                    reply(
                        ack,
                        Payload::new(vec![json!({ "error": format!("unknown event {name}") })]),
                    );
                }
            }
        }
    }
}

fn reply(ack: AckSender, payload: Payload) {
    let _ = ack.send(payload);
}

/// Acks once the cluster has taken in what the handler did (room subscriptions
/// and records), so the client can count on it when the ack arrives; acks
/// `{error}` when that could not be confirmed.
fn after_flush(socket: &Arc<Socket>, ack: AckSender, payload: Payload) {
    let flushed = socket.namespace().cluster().flush();
    tokio::spawn(async move {
        match flushed.await {
            Ok(()) => reply(ack, payload),
            Err(error) => reply(
                ack,
                Payload::new(vec![json!({ "error": error.to_string() })]),
            ),
        }
    });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load_or_exit();
    rain_node::logs::init(&settings);
    // Before anything else: a SIGTERM while starting drains, never kills.
    let signal = shutdown_signal();
    let _ = KEYS.set(SessionKeys::from_settings(&settings));
    let io = SocketIo::new(&settings, rain_node::cluster::connect(&settings).await?);
    io.namespace("/", Testbed);
    io.namespace("/custom", Testbed);
    io.dynamic_namespace(
        |name| {
            name.strip_prefix("/dyn-").is_some_and(|rest| {
                !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric())
            })
        },
        Testbed,
    );
    let server = Server::bind(&settings, io).await?;
    println!("rain-node listening on http://{}", server.local_addr());
    println!("rain-node api listening on http://{}", server.api_addr());
    server.run(signal).await?;
    Ok(())
}
