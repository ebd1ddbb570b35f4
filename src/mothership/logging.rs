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
//! `LOG_LINE_MAX_LENGTH` bytes; a socket sends at most `LOG_LINES_PER_MINUTE`
//! lines a minute (a token bucket per socket, [`LogRates`], forgotten when the
//! socket leaves; past it: `too many requests`, counted); the session id is
//! neither sent with the line nor written.
//!
//! Does not own how the line travels between nodes (see `super::router` and
//! `super::messages`) or which namespace is a component's logging channel (see
//! `super::channel`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde_json::{Value, json};

use super::messages::{Routed, TOPIC};
use super::router::{Router, ack_payload, error_ack};
use crate::limits::TokenBucket;
use crate::namespace::NamespaceHandler;
use crate::socket::{DisconnectReason, Event, Socket};

/// The logging channel's name, under `/core` and under every component.
pub(super) const LOGGING: &str = "logging";

/// `/core/logging`.
pub(super) struct LoggingChannel(pub(super) Arc<Router>);

impl NamespaceHandler for LoggingChannel {
    fn on_event(&self, socket: &Arc<Socket>, event: Event) {
        on_log_event(&self.0, socket, event);
    }

    fn on_disconnect(&self, socket: &Arc<Socket>, _reason: DisconnectReason) {
        self.0.log_rates.forget(socket);
    }
}

/// Each logging socket's bucket of lines (`LOG_LINES_PER_MINUTE`): one entry
/// per socket that has logged, removed when it disconnects, so the map holds
/// no more entries than the node has sockets.
pub(super) struct LogRates {
    per_minute: usize,
    buckets: Mutex<HashMap<Arc<str>, TokenBucket>>,
}

impl LogRates {
    pub(super) fn new(per_minute: usize) -> LogRates {
        LogRates {
            per_minute: per_minute.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one line of the socket's allowance; false when it is spent.
    fn take(&self, socket: &Socket) -> bool {
        let now = Instant::now();
        let per_minute = self.per_minute;
        let mut buckets = self.buckets.lock();
        // A socket that already left logs nothing and leaves no entry: checked
        // under the lock its `forget` (which follows the disconnect) takes.
        if !socket.is_connected() {
            return false;
        }
        buckets
            .entry(socket.id().into())
            .or_insert_with(|| {
                let burst = u32::try_from(per_minute).unwrap_or(u32::MAX);
                TokenBucket::new(per_minute as f64 / 60.0, burst, now)
            })
            .take(now)
    }

    /// Drops a socket's bucket (it disconnected).
    pub(super) fn forget(&self, socket: &Socket) {
        self.buckets.lock().remove(socket.id());
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
    if !router.log_rates.take(socket) {
        return socket.refuse("log_lines_per_minute", event.ack);
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
