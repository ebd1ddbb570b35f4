//! What the cluster tells about the deployment it runs on: [`BackendInfo`],
//! the summary behind the Cloud API's `GET /mothership/{id}`.
//!
//! Owns the summary's shape only; each backend fills it in
//! (`super::redis` from `INFO` and a bounded `SCAN`, `super::memory` from its
//! store). Never holds where the backend is (the `REDIS_SERVER` URL may carry
//! a user name and password), only what it is like. Does not own the HTTP
//! side (`crate::api`).

use serde::{Deserialize, Serialize};

/// The one id a cluster's backend answers to: a cluster has exactly one Redis
/// deployment (or none, embedded), and its URL must not be an id.
pub const BACKEND_ID: &str = "default";

/// A summary of the cluster's backend as this node sees it. Every figure is
/// `None` when the backend does not know it or the Redis user may not read it
/// (its ACL refuses `INFO`, a section of it, or `SCAN`); `not_permitted` then
/// names the commands refused, so a null is never a mystery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackendInfo {
    /// Always [`BACKEND_ID`].
    pub id: String,
    /// `"redis"` or `"embedded"`.
    pub kind: String,
    /// Whether this node can use the backend now (`Membership::is_ready`).
    pub ready: bool,
    /// The prefix `keys` counts under (`KEY_PREFIX`); `None` when embedded.
    pub key_prefix: Option<String>,
    /// The server's version (`redis_version`).
    pub version: Option<String>,
    /// `master` or `slave` (Redis's words, `INFO replication`).
    pub role: Option<String>,
    pub used_memory_bytes: Option<u64>,
    /// Clients connected to the server, every tenant's and every node's.
    pub connected_clients: Option<u64>,
    /// Commands per second the server handles now (`instantaneous_ops_per_sec`).
    pub ops_per_second: Option<u64>,
    /// Channels with at least one subscriber, on the whole server.
    pub pubsub_channels: Option<u64>,
    /// Keys under `key_prefix` (the embedded backend: entries it holds).
    pub keys: Option<u64>,
    /// `keys` is a lower bound: counting stopped at its bound before it saw
    /// the whole keyspace.
    pub keys_approximate: bool,
    /// Commands the Redis user may not run (`INFO`, `INFO <section>`, `SCAN`),
    /// whose figures are `None` for that reason.
    pub not_permitted: Vec<String>,
}

impl BackendInfo {
    /// A summary with nothing known yet.
    pub fn unknown(kind: &str, ready: bool) -> BackendInfo {
        BackendInfo {
            id: BACKEND_ID.to_string(),
            kind: kind.to_string(),
            ready,
            key_prefix: None,
            version: None,
            role: None,
            used_memory_bytes: None,
            connected_clients: None,
            ops_per_second: None,
            pubsub_channels: None,
            keys: None,
            keys_approximate: false,
            not_permitted: Vec::new(),
        }
    }
}
