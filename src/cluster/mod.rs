//! The cluster: the one trait through which a node shares state and messages with
//! the other nodes, and its backends.
//!
//! Owns the contract: what a node tells the cluster (sockets, rooms, broadcasts) and
//! what must reach other nodes. Local delivery is never the cluster's job: a node
//! delivers to its own sockets directly and hands the cluster only what other nodes
//! need, so the embedded backend ([`memory`]) is the Redis one minus the network.
//! Calls are synchronous and cheap on purpose: a networked backend queues them to
//! one writer task that pipelines them in order (one PUBLISH per broadcast, no
//! round trip per delivered message; DESIGN.md §7). Key and channel names live in
//! [`keys`].

pub mod keys;
pub mod memory;

use std::sync::Arc;

use thiserror::Error;

use crate::config::Settings;
use crate::protocol::engineio::Frame;

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

/// What the cluster keeps about one connected socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketRecord {
    pub namespace: String,
    pub sid: String,
    pub node_id: String,
    /// Milliseconds since the Unix epoch.
    pub connected_at: u64,
}

/// Errors of the cluster layer.
#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("the cluster backend for {0} is not available in this build")]
    Unsupported(String),
}

/// Shared state and messaging between nodes.
pub trait Cluster: Send + Sync + 'static {
    /// `"embedded"` or `"redis"`.
    fn backend(&self) -> &'static str;
    fn node_id(&self) -> &str;
    /// Whether the backend can currently reach the rest of the cluster.
    fn is_ready(&self) -> bool;
    /// Carries a broadcast to the other nodes that have members of its audience.
    fn publish_broadcast(&self, message: BroadcastMessage);
    fn socket_connected(&self, record: SocketRecord);
    fn socket_disconnected(&self, namespace: &str, sid: &str);
    /// A local socket joined a room; the first local member makes this node
    /// interested in the room's broadcasts.
    fn room_joined(&self, namespace: &str, room: &str, sid: &str);
    fn room_left(&self, namespace: &str, room: &str, sid: &str);
    /// The sockets the cluster knows of in a namespace (all nodes).
    fn sockets(&self, namespace: &str) -> Vec<SocketRecord>;
}

/// The backend the settings ask for.
pub fn from_settings(settings: &Settings) -> Result<Arc<dyn Cluster>, ClusterError> {
    match &settings.redis_server {
        None => Ok(Arc::new(memory::MemoryCluster::new(
            settings.node_id.clone(),
        ))),
        Some(url) => Err(ClusterError::Unsupported(url.clone())),
    }
}
