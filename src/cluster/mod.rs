//! The cluster: the one trait through which a node shares state and messages with
//! the other nodes, and its backends.
//!
//! Owns the contract: what a node tells the cluster (sockets, rooms, broadcasts,
//! operations on remote sockets) and what the cluster hands back to the node
//! ([`LocalNode`]). Local delivery is never the cluster's job: a node delivers to
//! its own sockets directly and gives the cluster only what other nodes need, so
//! the embedded backend ([`memory`]) is the Redis one ([`redis`]) minus the
//! network. Calls that carry traffic are synchronous and cheap on purpose: a
//! networked backend queues them to one writer task that pipelines them in order
//! (one PUBLISH per broadcast and room, no round trip per delivered message;
//! DESIGN.md §7). Key and channel names live in [`keys`]; the messages nodes
//! exchange in [`wire`].

pub mod keys;
pub mod memory;
pub mod redis;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use thiserror::Error;

use crate::component::{Descriptor, Effects};
use crate::config::Settings;
use crate::protocol::engineio::Frame;
use crate::protocol::payload::Payload;

/// A broadcast as it leaves this node: encoded once, with its audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastMessage {
    pub namespace: String,
    /// Empty → every socket of the namespace.
    pub rooms: Vec<String>,
    /// Sockets in these rooms (or with these ids) are skipped.
    pub except: Vec<String>,
    /// The packet and its binary attachments, ready to write.
    pub frames: Vec<Frame>,
}

/// A broadcast whose receivers are asked for an ack: each receiver needs its own
/// packet (the ack id differs), so the event travels unencoded.
#[derive(Debug, Clone, PartialEq)]
pub struct AckBroadcast {
    pub namespace: String,
    pub rooms: Vec<String>,
    pub except: Vec<String>,
    pub event: String,
    pub payload: Payload,
    pub timeout: Duration,
}

/// What the cluster keeps about one connected socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketRecord {
    pub namespace: String,
    pub sid: String,
    pub node_id: String,
    /// The client's session (see `crate::app_session`).
    pub session_id: String,
    pub rooms: Vec<String>,
    /// Milliseconds since the Unix epoch.
    pub connected_at: u64,
}

/// Whom a remote operation is for: one socket, or every member of a room.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Target {
    Socket(String),
    Room(String),
}

/// An operation on sockets that may live on other nodes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RemoteOp {
    Join(String),
    Leave(String),
    Disconnect,
}

/// A component as the cluster knows it: its descriptor and its live hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    pub descriptor: Descriptor,
    pub hosts: Vec<String>,
}

/// Messages of the Mothership between the node holding a client's socket and
/// the node running a component's handler.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Routed {
    /// An event for a component's handler; the answer goes back to `from`.
    Request {
        request: u64,
        from: String,
        component: String,
        namespace: String,
        channel: String,
        event: String,
        args_json: String,
        socket: String,
        session: String,
        instance: Option<String>,
        /// Create an instance on the handling node first (a `render`).
        create_instance: bool,
    },
    /// A handler's answer: `ok` → `value_json` is the ack's data, else its error.
    Reply {
        request: u64,
        ok: bool,
        value_json: String,
        effects: Effects,
    },
    /// A client connected to (or left) one of a component's channels.
    Lifecycle {
        connected: bool,
        from: String,
        component: String,
        namespace: String,
        channel: String,
        socket: String,
        session: String,
    },
    /// A client's log line, for the node that rendered its instance.
    Log {
        level: String,
        message: String,
        error: Option<String>,
        instance: Option<String>,
        namespace: String,
        socket: String,
        session: String,
    },
}

/// Errors of the cluster layer.
#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("invalid REDIS_SERVER {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("redis: {0}")]
    Redis(String),
    #[error("the cluster backend is not ready (Redis unreachable)")]
    NotReady,
}

/// What the cluster needs from the node it serves: delivery to local sockets, and
/// a picture of local state to re-register after Redis lost it.
pub trait LocalNode: Send + Sync + 'static {
    /// Writes frames to local sockets of `namespace` in `rooms` (all when empty),
    /// skipping members of `except`; returns how many got them.
    fn deliver(
        &self,
        namespace: &str,
        rooms: &[String],
        except: &[String],
        frames: &[Frame],
    ) -> usize;
    /// Writes frames to one local socket; false when it is not here.
    fn deliver_to_socket(&self, namespace: &str, sid: &str, frames: &[Frame]) -> bool;
    /// Emits to local targets with an ack each; resolves to (how many targets,
    /// a stream of their answers as they come, until the timeout).
    fn deliver_with_ack(
        &self,
        broadcast: &AckBroadcast,
    ) -> (usize, BoxFuture<'static, Vec<Payload>>);
    /// Applies a remote operation to local sockets.
    fn apply(&self, namespace: &str, target: &Target, op: &RemoteOp);
    /// Every local socket, with its rooms.
    fn snapshot(&self) -> Vec<SocketRecord>;
    /// How many sockets this node holds (cheap: no records built).
    fn socket_count(&self) -> usize;
    /// A Mothership message for this node.
    fn routed(&self, message: Routed);
}

/// Shared state and messaging between nodes.
pub trait Cluster: Send + Sync + 'static {
    /// `"embedded"` or `"redis"`.
    fn backend(&self) -> &'static str;
    fn node_id(&self) -> &str;
    /// Whether the backend can currently reach the rest of the cluster.
    fn is_ready(&self) -> bool;
    /// Gives the backend the node it delivers to; called once, at start.
    fn attach(&self, local: Weak<dyn LocalNode>);
    /// The address this node serves on, for the node registry.
    fn set_address(&self, _address: String) {}
    /// Carries a broadcast to the other nodes that have members of its audience.
    fn publish_broadcast(&self, message: BroadcastMessage);
    /// Carries a broadcast with acks to the other nodes and collects their
    /// receivers' answers until `timeout`.
    fn publish_broadcast_with_ack(
        &self,
        broadcast: AckBroadcast,
    ) -> BoxFuture<'static, Vec<Payload>>;
    /// Carries frames to a socket that is not on this node.
    fn emit_to_socket(&self, namespace: &str, sid: &str, frames: Vec<Frame>);
    /// Carries an operation to the other nodes' sockets (the caller applies it
    /// to its own).
    fn remote(&self, namespace: &str, target: Target, op: RemoteOp);
    fn socket_connected(&self, record: SocketRecord);
    fn socket_disconnected(&self, namespace: &str, sid: &str);
    /// A local socket joined a room; `rooms` are all its rooms now. The first
    /// local member makes this node interested in the room's broadcasts.
    fn room_joined(&self, namespace: &str, room: &str, sid: &str, rooms: &[String]);
    fn room_left(&self, namespace: &str, room: &str, sid: &str, rooms: &[String]);
    /// Every socket of a namespace on every node (in `room`, if given), from the
    /// shared state: no node is asked.
    fn fetch_sockets(
        &self,
        namespace: &str,
        room: Option<&str>,
    ) -> BoxFuture<'static, Result<Vec<SocketRecord>, ClusterError>>;
    /// A session's fields (empty when it does not exist); extends its TTL.
    fn session_load(
        &self,
        id: &str,
    ) -> BoxFuture<'static, Result<HashMap<String, String>, ClusterError>>;
    /// Sets some of a session's fields; extends its TTL.
    fn session_store(
        &self,
        id: &str,
        fields: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<(), ClusterError>>;
    /// Extends a session's TTL (a socket using it connected).
    fn session_touch(&self, id: &str);
    /// Appends an entry to a named history (a list), keeping the newest `keep`.
    fn history_append(
        &self,
        name: &str,
        entry: String,
        keep: usize,
    ) -> BoxFuture<'static, Result<(), ClusterError>>;
    /// A named history, oldest first.
    fn history(&self, name: &str) -> BoxFuture<'static, Result<Vec<String>, ClusterError>>;
    /// This node hosts these components: announce them (and their intents).
    fn register_components(&self, descriptors: Vec<Descriptor>);
    /// Every component known in the cluster, with its live hosts (a cached view,
    /// refreshed on changes and on every heartbeat; this node's own components
    /// are in it from the start).
    fn components(&self) -> Arc<Vec<ComponentInfo>>;
    /// Hands a Mothership message to a live host of a component (`id@version`),
    /// round-robin cluster-wide, skipping hosts that no longer listen; resolves
    /// to the host, or `None` when no host is live.
    fn dispatch(&self, component: &str, message: Routed) -> BoxFuture<'static, Option<String>>;
    /// Sends a Mothership message to a node (this one included).
    fn route(&self, node: &str, message: Routed);
    /// Records an instance (`instance:{id}`).
    fn record_instance(&self, instance_id: &str, fields: Vec<(String, String)>);
    /// Resolves once everything asked of the cluster so far has taken effect
    /// (subscriptions made, state written).
    fn flush(&self) -> BoxFuture<'static, ()>;
    /// Deregisters this node (clean shutdown).
    fn shutdown(&self) -> BoxFuture<'static, ()>;
}

/// The backend the settings ask for: Redis when `REDIS_SERVER` is set, else the
/// embedded one. Must be called inside a tokio runtime (the Redis backend starts
/// its tasks).
pub fn from_settings(settings: &Settings) -> Result<Arc<dyn Cluster>, ClusterError> {
    match &settings.redis_server {
        None => Ok(Arc::new(memory::MemoryCluster::new(
            settings.node_id.clone(),
        ))),
        Some(url) => Ok(Arc::new(redis::RedisCluster::start(url, settings)?)),
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
