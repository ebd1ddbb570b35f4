//! Client logging: the `log` event of `/core/logging` and of every component's
//! `/{id}/{version}/logging`, and where the line is written.
//!
//! Owns reading a client's log line (`{level, message, error?, instanceId?}`),
//! choosing the node that writes it (the node named in the instance id, which
//! rendered the instance, when it is still a live host; else this node, so a
//! line for a node that is gone is not published to nobody), and writing it
//! through `tracing` (target `rain_node::client`) with its namespace, socket,
//! instance and error. The client's text is written as quoted fields (escaped,
//! so a line break cannot forge a line of its own) and is at most
//! `LOG_LINE_MAX_LENGTH` bytes; the session id is neither sent with the line
//! nor written.
//!
//! Does not own how the line travels between nodes (see `super::router` and
//! `super::messages`) or which namespace is a component's logging channel (see
//! `super::channel`).

use std::sync::Arc;

use serde_json::{Value, json};

use super::messages::{Routed, TOPIC};
use super::router::{Router, ack_payload, error_ack};
use crate::namespace::NamespaceHandler;
use crate::socket::{Event, Socket};

/// The logging channel's name, under `/core` and under every component.
pub(super) const LOGGING: &str = "logging";

/// `/core/logging`.
pub(super) struct LoggingChannel(pub(super) Arc<Router>);

impl NamespaceHandler for LoggingChannel {
    fn on_event(&self, socket: &Arc<Socket>, event: Event) {
        on_log_event(&self.0, socket, event);
    }
}

/// An event on a logging channel: `log(line)` is acked `true` once the line is
/// on its way; anything else gets an error ack.
pub(super) fn on_log_event(router: &Router, socket: &Arc<Socket>, event: Event) {
    if event.name != "log" {
        return error_ack(
            event.ack,
            &format!("unknown event {:?} (logging takes \"log\")", event.name),
        );
    }
    let line = event.payload.args.first().cloned().unwrap_or(Value::Null);
    match route(router, socket, &line) {
        Ok(()) => {
            if let Some(ack) = event.ack {
                let _ = ack.send(ack_payload(Ok(json!(true))));
            }
        }
        Err(message) => error_ack(event.ack, &message),
    }
}

/// Sends a client's log line to the node that writes it.
fn route(router: &Router, socket: &Arc<Socket>, line: &Value) -> Result<(), String> {
    let text = |key: &str| line.get(key).and_then(Value::as_str).map(str::to_string);
    let message = text("message").ok_or("log needs a string message")?;
    let error_len = line.get("error").map_or(0, |e| match e {
        Value::String(text) => text.len(),
        other => other.to_string().len(),
    });
    if message.len() + error_len > router.log_line_max_length {
        metrics::counter!("rain_refused_total", "limit" => "log_line_max_length").increment(1);
        return Err(format!(
            "log line longer than {} bytes",
            router.log_line_max_length
        ));
    }
    let level = text("level").unwrap_or_else(|| "info".into());
    let instance = text("instanceId");
    let node = writer(router, instance.as_deref());
    let routed = Routed::Log {
        level,
        message,
        error: line.get("error").filter(|e| !e.is_null()).map(|e| match e {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        }),
        instance,
        namespace: socket.namespace().name().to_string(),
        socket: socket.id().to_string(),
    };
    router.io.cluster().send(&node, TOPIC, routed.encode());
    Ok(())
}

/// The node that writes a line about `instance` (`{node}:{id}`): the rendering
/// node while the registry lists it as a host (it hosts the rendered
/// component, so a live one is listed), else this node.
fn writer(router: &Router, instance: Option<&str>) -> String {
    instance
        .and_then(|id| id.rsplit_once(':'))
        .map(|(node, _)| node)
        .filter(|node| *node == router.node_id || router.catalog.is_host(node))
        .unwrap_or(&router.node_id)
        .to_string()
}

/// Writes a log line that reached this node.
pub(super) fn write(routed: Routed) {
    let Routed::Log {
        level,
        message,
        error,
        instance,
        namespace,
        socket,
    } = routed
    else {
        return;
    };
    // No session id here (the message has none); the client's text is quoted
    // and escaped (`?`), so it cannot break the line.
    let error = error.unwrap_or_default();
    let instance = instance.unwrap_or_default();
    macro_rules! client_log {
        ($level:ident) => {
            tracing::$level!(
                target: "rain_node::client",
                %namespace,
                %socket,
                %instance,
                text = ?message,
                error = ?error,
                "client log"
            )
        };
    }
    match level.as_str() {
        "error" => client_log!(error),
        "warn" | "warning" => client_log!(warn),
        "debug" => client_log!(debug),
        "trace" => client_log!(trace),
        _ => client_log!(info),
    }
}
