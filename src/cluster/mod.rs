//! The cluster: the one trait through which a node shares state and messages with
//! the other nodes, and its backends.
//!
//! Owns the contract, one trait per responsibility ([`Membership`],
//! [`Broker`], [`SocketRegistry`], [`SessionStore`], [`ServiceRegistry`],
//! [`ListStore`], [`Deployments`]; [`Cluster`] is all of them), and what the cluster hands back
//! to the node ([`LocalNode`], and a [`MessageHandler`] per topic of the upper
//! layers' node-to-node messages, which are opaque bytes here). Imports
//! nothing from the layers above it (`socketio`, `component`, `mothership`). Local delivery is never the cluster's job: a node delivers to
//! its own sockets directly and gives the cluster only what other nodes need, so
//! the embedded backend ([`memory`]) is the Redis one ([`redis`]) minus the
//! network. Calls that carry traffic are synchronous and cheap on purpose: a
//! networked backend queues them to one writer task that pipelines them in order
//! (one PUBLISH per broadcast and room, no round trip per delivered message). Key and channel names live in [`keys`]; the messages nodes
//! exchange in [`wire`].

pub mod backend_info;
pub mod keys;
pub mod memory;
pub mod redis;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use thiserror::Error;

use bytes::Bytes;

use crate::config::Settings;
use crate::protocol::engineio::Frame;
use crate::protocol::payload::Payload;
pub use backend_info::{BACKEND_ID, BackendInfo};
pub use keys::ChannelGroups;

/// A broadcast as it leaves this node: encoded once per namespace, with its
/// audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastMessage {
    /// The namespaces it is for, each with the packet and its binary
    /// attachments encoded for it, ready to write. Several only when they
    /// share their channels (see [`Broker::group_channels`]): the broadcast
    /// then travels once for all of them.
    pub targets: Vec<(String, Vec<Frame>)>,
    /// Empty → every socket of the namespaces.
    pub rooms: Vec<String>,
    /// Sockets in these rooms (or with these ids) are skipped.
    pub except: Vec<String>,
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

/// A service as the registry knows it: its name, the specification its hosts
/// registered (opaque to the cluster: the Mothership stores a component's
/// descriptor there) and its live hosts, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    pub name: String,
    pub spec: Arc<str>,
    pub hosts: Vec<String>,
}

/// A snapshot of the service registry. A new snapshot is a new `Arc`, so a
/// reader can cache what it derives from one with `Arc::ptr_eq`.
pub type Services = Arc<Vec<ServiceRecord>>;

/// Where a node is in its life, as its record tells the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Serving, and in the host sets of what it hosts.
    Running,
    /// Stopping: out of every host set, its clients being moved away.
    Draining,
    /// Drained by an operator but up, for inspection.
    Unregistered,
}

impl NodeState {
    /// The word recorded in `node:{id}` field `state`.
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeState::Running => "running",
            NodeState::Draining => "draining",
            NodeState::Unregistered => "unregistered",
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A live node as its record in the cluster describes it (`node:{id}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeRecord {
    pub id: String,
    /// The URL other nodes reach its public listener at (`ADVERTISE_URL`);
    /// empty until the node has bound it.
    pub address: String,
    /// Its `NODE_GROUP`.
    pub group: String,
    /// A [`NodeState`] word; kept as text so a record written by a newer
    /// build with a state this one does not know still reads.
    pub state: String,
    /// Milliseconds since the Unix epoch.
    pub started_at: u64,
    /// Its last beat, milliseconds since the Unix epoch (Redis's clock).
    pub heartbeat: u64,
    /// Its statistics as of that beat: JSON text, opaque here (the edge
    /// layer's `NodeStats`); `None` before the node has a source of them.
    pub stats: Option<String>,
}

/// Produces a node's statistics, as JSON text, each time its record is
/// written (see [`Membership::set_stats_source`]).
pub type StatsSource = Arc<dyn Fn() -> String + Send + Sync>;

/// Receives the node-to-node messages of one topic (see [`Broker::send`]). The
/// bodies are opaque to the cluster: the layer that registered the topic
/// encodes and decodes them.
pub trait MessageHandler: Send + Sync + 'static {
    fn on_message(&self, body: Bytes);
}

/// Errors of the cluster layer.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// `REDIS_SERVER` is not a Redis URL the client accepts. `url` is shown
    /// with its password hidden ([`crate::config::redact_url`]).
    #[error("invalid REDIS_SERVER {url:?}")]
    InvalidUrl {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `REDIS_CA_FILE` cannot be read or holds no PEM certificate.
    #[error("cannot use REDIS_CA_FILE {path:?}: {reason}")]
    CaFile { path: String, reason: String },
    /// Redis refused the user name or password of `REDIS_SERVER` (found at
    /// start; `url` redacted).
    #[error(
        "Redis at {url} refused the user name or password of REDIS_SERVER (authentication failed)"
    )]
    AuthenticationFailed { url: String },
    /// The TLS handshake with Redis failed: its certificate is not signed by a
    /// CA the node trusts or does not name the host, or it does not speak TLS.
    #[error(
        "TLS with Redis at {url} failed; check REDIS_CA_FILE, the server's certificate and its host names"
    )]
    Tls {
        url: String,
        #[source]
        source: rustls::Error,
    },
    /// The Redis user may not use the node's keys (its ACL does not cover
    /// `KEY_PREFIX`).
    #[error(
        "the Redis user of REDIS_SERVER at {url} may not use keys under KEY_PREFIX {prefix:?} (see the README's recommended ACL)"
    )]
    NoPermission {
        url: String,
        prefix: String,
        #[source]
        source: ::redis::RedisError,
    },
    /// Redis answered with an error, or the connection failed mid-command.
    #[error("redis command failed")]
    Redis(#[from] ::redis::RedisError),
    /// A write to Redis was lost (the node is repairing its state).
    #[error("a write to Redis was lost")]
    Lost,
    /// The operation did not complete within the operation timeout.
    #[error("redis did not answer in time")]
    Timeout,
    #[error("the cluster backend is not ready (Redis unreachable)")]
    NotReady,
}

/// Why session fields were not written.
#[derive(Debug, thiserror::Error)]
pub enum SessionWriteError {
    /// A value is over `SESSION_VALUE_MAX_BYTES`.
    #[error("a session value is over {max} bytes")]
    ValueTooLarge { max: usize },
    /// The session would be over `SESSION_MAX_BYTES`.
    #[error("the session would be over {max} bytes")]
    TooLarge { max: usize },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// The sizes a session may grow to (`SESSION_VALUE_MAX_BYTES`,
/// `SESSION_MAX_BYTES`), enforced by both backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub value_max_bytes: usize,
    pub max_bytes: usize,
}

impl SessionLimits {
    pub fn from_settings(settings: &Settings) -> SessionLimits {
        SessionLimits {
            value_max_bytes: settings.session_value_max_bytes,
            max_bytes: settings.session_max_bytes,
        }
    }

    /// Refuses a write with a value over the limit, or one that is over the
    /// total limit by itself.
    pub fn check_values(&self, fields: &[(String, String)]) -> Result<(), SessionWriteError> {
        if fields.iter().any(|(_, v)| v.len() > self.value_max_bytes) {
            return Err(SessionWriteError::ValueTooLarge {
                max: self.value_max_bytes,
            });
        }
        Ok(())
    }
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
}

/// This node's membership of the cluster: identity, readiness, registration
/// and deregistration.
pub trait Membership: Send + Sync + 'static {
    /// `"embedded"` or `"redis"`.
    fn backend(&self) -> &'static str;
    fn node_id(&self) -> &str;
    /// Whether the backend can currently reach the rest of the cluster.
    fn is_ready(&self) -> bool;
    /// Gives the backend the node it delivers to; called once, at start.
    fn attach(&self, local: Weak<dyn LocalNode>);
    /// The address this node serves on, for the node registry: the URL
    /// other nodes reach its public listener at (`ADVERTISE_URL`).
    fn set_address(&self, address: String);
    /// The address a live node advertises (cached: cheap after the first
    /// call for a node); `None` when no such node is known.
    fn node_address(&self, node_id: &str) -> BoxFuture<'static, Option<String>>;
    /// Resolves once everything asked of the cluster so far has taken effect
    /// (subscriptions made, state written); an error when some of it did not
    /// (the node then repairs its state, but the caller must not say it is
    /// done).
    fn flush(&self) -> BoxFuture<'static, Result<(), ClusterError>>;
    /// Starts this node's drain: it leaves the host set of every service it
    /// hosts, and no heartbeat, reconcile or later registration puts it back
    /// (the services still run here for the node's own clients; nobody else
    /// routes to it). Resolves once that has taken effect, like
    /// [`Membership::flush`]. Undone only by [`Membership::rejoin`] (a node
    /// an operator unregistered and registers again); a node that was told
    /// to stop shuts down drained.
    fn drain(&self) -> BoxFuture<'static, Result<(), ClusterError>>;
    /// A summary of the backend ([`BackendInfo`]): what it is, its figures,
    /// and whether this node can use it now; never where it is. A figure the
    /// Redis user may not read is `None`, not an error; an error only when
    /// Redis failed or did not answer.
    fn backend_info(&self) -> BoxFuture<'static, Result<BackendInfo, ClusterError>>;
    /// Undoes [`Membership::drain`]: the services this node hosts are
    /// announced again (host sets, its record), and the heartbeat and
    /// reconciles keep them announced. Resolves once that has taken effect,
    /// like [`Membership::flush`].
    fn rejoin(&self) -> BoxFuture<'static, Result<(), ClusterError>>;
    /// Rebuilds what this node holds of the cluster from its own state: drops
    /// its caches (other nodes' addresses, socket owners, the services view)
    /// and reads them again, subscribes to every channel anew, and writes its
    /// sockets, rooms and announced services again (a drained node still
    /// announces none). Resolves once all of that has taken effect, like
    /// [`Membership::flush`]. Broadcasts published while the subscriptions
    /// are made again may be missed, as on a reconnect to Redis.
    fn reset(&self) -> BoxFuture<'static, Result<(), ClusterError>>;
    /// Deregisters this node (clean shutdown).
    fn shutdown(&self) -> BoxFuture<'static, ()>;
    /// Records where this node is in its life (`node:{id}` field `state`,
    /// written at once and on every beat). [`Membership::drain`] sets
    /// [`NodeState::Draining`] itself.
    fn set_state(&self, state: NodeState);
    /// Writes the state set last into this node's record now, rather than
    /// with the next beat (woken, but not awaited), so whoever reads the
    /// record after this resolves sees it. Nothing is written when the
    /// record is gone (an expired node is not brought back without its TTL).
    fn confirm_state(&self) -> BoxFuture<'static, Result<(), ClusterError>>;
    /// What writes this node's `stats` field: called on every beat, its text
    /// recorded as is.
    fn set_stats_source(&self, source: StatsSource);
    /// Every live node's record, sorted by id (a node whose record expired is
    /// not in it). The embedded backend knows the nodes of its hub only.
    fn nodes(&self) -> BoxFuture<'static, Result<Vec<NodeRecord>, ClusterError>>;
}

/// Messages between nodes: broadcasts to the nodes with members of an
/// audience, frames and operations for sockets on other nodes, and opaque
/// messages of upper layers, by topic.
pub trait Broker: Send + Sync + 'static {
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
    /// Lets groups of namespaces share their broadcast channels (`groups`
    /// names a namespace's group, or `None`; it must always name the same
    /// group for a namespace): a broadcast to several namespaces of a group
    /// then travels once. Called once, before any socket connects.
    fn group_channels(&self, groups: ChannelGroups);
    /// Hands this node's messages of `topic` to `handler` (one per topic).
    fn on_topic(&self, topic: &'static str, handler: Arc<dyn MessageHandler>);
    /// Sends a message of `topic` to a node (this one included: then it is
    /// handed over on a task of its own, as if it came from another node).
    fn send(&self, node: &str, topic: &'static str, body: Bytes);
}

/// Where every socket is: which node holds it, its session and its rooms.
pub trait SocketRegistry: Send + Sync + 'static {
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
}

/// Clients' session data, shared by every node, with a sliding TTL.
pub trait SessionStore: Send + Sync + 'static {
    /// A session's fields (empty when it does not exist); extends its TTL.
    fn session_load(
        &self,
        id: &str,
    ) -> BoxFuture<'static, Result<HashMap<String, String>, ClusterError>>;
    /// Sets some of a session's fields; extends its TTL. Refused, with
    /// nothing written, when a value is over `SESSION_VALUE_MAX_BYTES` or the
    /// session would be over `SESSION_MAX_BYTES` (checked and written in one
    /// step, whichever node writes).
    fn session_store(
        &self,
        id: &str,
        fields: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<(), SessionWriteError>>;
    /// Extends a session's TTL (a socket using it connected).
    fn session_touch(&self, id: &str);
}

/// Named services, the nodes that host them, and round-robin delivery to a
/// live host. The Mothership's components and their intents live here.
pub trait ServiceRegistry: Send + Sync + 'static {
    /// This node hosts these services: `(name, spec)` pairs.
    fn register_services(&self, services: Vec<(String, String)>);
    /// Every service known in the cluster, with its live hosts (a cached
    /// view, refreshed on changes and on every heartbeat; this node's own
    /// services are in it from the start).
    fn services(&self) -> Services;
    /// Sends a message of `topic` to a live host of `service`, round-robin
    /// cluster-wide, skipping hosts that no longer listen; resolves to the
    /// host, `None` when no host is live, or an error when the message could
    /// not be handed over (Redis away or far behind).
    fn dispatch(
        &self,
        service: &str,
        topic: &'static str,
        body: Bytes,
    ) -> BoxFuture<'static, Result<Option<String>, ClusterError>>;
    /// Records an instance of a service (`instance:{id}`) that this node
    /// rendered for `socket`: it belongs to this node (gone with it) and
    /// expires `INSTANCE_TTL_MS` after the socket left (at once expiring
    /// unless refreshed when `socket` is empty: made through the API).
    fn record_instance(&self, instance_id: &str, socket: &str, fields: Vec<(String, String)>);
    /// This node hosts these services no more (a run-time undeploy or a new
    /// wiring): it leaves their host sets; the records stay for other hosts.
    fn unregister_services(&self, names: &[String]);
    /// Removes a service from the registry altogether, whoever hosts it
    /// (after every host was told to stop): its record, host set and cursor.
    fn forget_service(&self, name: &str) -> BoxFuture<'static, Result<(), ClusterError>>;
}

/// One instance of a service as the registry holds it: the fields it was
/// recorded with (`component`, `version`, `node`, `created`, `state`,
/// `socket`, and whatever was set since).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    pub id: String,
    pub fields: std::collections::BTreeMap<String, String>,
}

/// Reading and changing instances after they were made (the operators' API),
/// and the desired state operators set: small named values every node can
/// read at start (which components a node or group hosts, run-time
/// descriptors, undeployed components), opaque to the cluster.
pub trait Deployments: Send + Sync + 'static {
    /// Live instances, at most `limit` of them, and how many there are.
    fn instances(
        &self,
        limit: usize,
    ) -> BoxFuture<'static, Result<(Vec<InstanceRecord>, usize), ClusterError>>;
    /// One live instance.
    fn instance(
        &self,
        id: &str,
    ) -> BoxFuture<'static, Result<Option<InstanceRecord>, ClusterError>>;
    /// Sets fields of a live instance and starts its TTL again; false when it
    /// does not exist (nothing is written then).
    fn update_instance(
        &self,
        id: &str,
        fields: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<bool, ClusterError>>;
    /// Removes an instance; false when it did not exist.
    fn remove_instance(&self, id: &str) -> BoxFuture<'static, Result<bool, ClusterError>>;
    /// Every desired-state value, by name.
    fn desired(&self) -> BoxFuture<'static, Result<HashMap<String, String>, ClusterError>>;
    /// Sets (`Some`) or removes (`None`) desired-state values, all at once.
    fn set_desired(
        &self,
        changes: Vec<(String, Option<String>)>,
    ) -> BoxFuture<'static, Result<(), ClusterError>>;
}

/// Small shared lists for upper layers' data (a chat room's recent messages):
/// capped in length, expiring `ttl` after their last write.
pub trait ListStore: Send + Sync + 'static {
    /// Appends an entry to a named list, keeping the newest `keep`.
    fn list_push(
        &self,
        name: &str,
        entry: String,
        keep: usize,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<(), ClusterError>>;
    /// A named list, oldest first.
    fn list_read(&self, name: &str) -> BoxFuture<'static, Result<Vec<String>, ClusterError>>;
}

/// Everything a node shares with the others, one trait per responsibility.
/// Both backends implement each; a node holds one `Arc<dyn Cluster>`.
pub trait Cluster:
    Membership + Broker + SocketRegistry + SessionStore + ServiceRegistry + ListStore + Deployments
{
}

impl<T> Cluster for T where
    T: Membership
        + Broker
        + SocketRegistry
        + SessionStore
        + ServiceRegistry
        + ListStore
        + Deployments
{
}

/// The backend the settings ask for: Redis when `REDIS_SERVER` is set, else the
/// embedded one. Must be called inside a tokio runtime (the Redis backend starts
/// its tasks). Connects lazily: a wrong password or an untrusted certificate
/// shows only as a node that never gets ready; [`connect`] finds those at start.
pub fn from_settings(settings: &Settings) -> Result<Arc<dyn Cluster>, ClusterError> {
    // Before any task of the backend counts anything, so no early figure is lost.
    crate::metrics::install();
    match &settings.redis_server {
        None => Ok(Arc::new(memory::MemoryCluster::from_settings(settings))),
        Some(url) => Ok(Arc::new(redis::RedisCluster::start(url, settings)?)),
    }
}

/// [`from_settings`], checked: with Redis, connects once before returning, so
/// that a mistake in the settings (credentials refused, TLS certificate not
/// trusted, an ACL that does not cover `KEY_PREFIX`) stops the node at start
/// with an error saying so. Redis merely unreachable is not an error: the node
/// starts, is not ready, and keeps retrying. What the binary uses.
pub async fn connect(settings: &Settings) -> Result<Arc<dyn Cluster>, ClusterError> {
    match &settings.redis_server {
        None => from_settings(settings),
        Some(url) => {
            crate::metrics::install();
            Ok(Arc::new(redis::RedisCluster::connect(url, settings).await?))
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
