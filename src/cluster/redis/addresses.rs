//! Where other nodes are: a node's advertised address (`ADVERTISE_URL`, the
//! `address` field of its `node:{id}` record), for requests of a session that
//! landed on a node other than its owner (see `crate::transport::forward`).
//!
//! Owns a small local cache of those addresses, so a forwarded request costs
//! no Redis round trip but the first of a node every [`FRESH`]: a node's
//! address does not change during its life, and a node that died is noticed
//! by the forward itself failing (its record expires with `NODE_TTL_MS` and a
//! miss is cached only briefly). Does not own the record (written by
//! `super::heartbeat`) nor what a caller does with an unknown node.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::RedisNode;

/// How long a known address is used without asking Redis again.
const FRESH: Duration = Duration::from_secs(5);
/// How long "no such node" is believed (a node that is starting registers
/// within its first beat).
const MISS_FRESH: Duration = Duration::from_millis(500);
/// Entries kept at most: node ids come from client text (the sid), so the
/// cache must not grow with what clients make up.
const MAX_ENTRIES: usize = 1024;

/// The cache of other nodes' addresses.
#[derive(Default)]
pub(super) struct Addresses {
    known: Mutex<HashMap<String, (Instant, Option<String>)>>,
}

impl Addresses {
    fn cached(&self, node_id: &str) -> Option<Option<String>> {
        let known = self.known.lock();
        let (at, address) = known.get(node_id)?;
        let fresh = if address.is_some() { FRESH } else { MISS_FRESH };
        (at.elapsed() < fresh).then(|| address.clone())
    }

    /// Forgets every address (a reset of the node): each is asked again.
    pub(super) fn forget_all(&self) {
        self.known.lock().clear();
    }

    fn remember(&self, node_id: &str, address: Option<String>) {
        let mut known = self.known.lock();
        if known.len() >= MAX_ENTRIES {
            known.retain(|_, (at, address)| address.is_some() && at.elapsed() < FRESH);
            if known.len() >= MAX_ENTRIES {
                known.clear();
            }
        }
        known.insert(node_id.to_string(), (Instant::now(), address));
    }
}

/// The address a live node advertises, `None` when Redis knows no such node
/// (or cannot be asked: the request then fails as for an unknown session).
pub(super) async fn node_address(node: &RedisNode, node_id: &str) -> Option<String> {
    if let Some(address) = node.addresses.cached(node_id) {
        return address;
    }
    let key = node.keys.node(node_id);
    let found: Result<Option<String>, _> = node
        .commands
        .run(async |connection| {
            redis::cmd("HGET")
                .arg(&key)
                .arg("address")
                .query_async(connection)
                .await
        })
        .await;
    match found {
        Ok(address) => {
            let address = address.filter(|address| !address.is_empty());
            node.addresses.remember(node_id, address.clone());
            address
        }
        Err(error) => {
            tracing::debug!(
                error = &error as &dyn std::error::Error,
                "node address lookup failed"
            );
            None
        }
    }
}
