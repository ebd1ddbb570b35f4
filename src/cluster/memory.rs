//! The embedded backend: a cluster of exactly this node, in process.
//!
//! Owns the socket records a one-node cluster would keep in Redis, so that
//! cluster-wide queries answer the same way with or without Redis. There are no
//! other nodes, so a broadcast has nowhere else to go.

use std::collections::HashMap;

use parking_lot::RwLock;

use super::{BroadcastMessage, Cluster, SocketRecord};

/// The in-process cluster of one node.
#[derive(Debug)]
pub struct MemoryCluster {
    node_id: String,
    /// namespace → sid → record
    sockets: RwLock<HashMap<String, HashMap<String, SocketRecord>>>,
}

impl MemoryCluster {
    pub fn new(node_id: String) -> Self {
        MemoryCluster {
            node_id,
            sockets: RwLock::new(HashMap::new()),
        }
    }
}

impl Cluster for MemoryCluster {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn publish_broadcast(&self, _message: BroadcastMessage) {}

    fn socket_connected(&self, record: SocketRecord) {
        self.sockets
            .write()
            .entry(record.namespace.clone())
            .or_default()
            .insert(record.sid.clone(), record);
    }

    fn socket_disconnected(&self, namespace: &str, sid: &str) {
        let mut sockets = self.sockets.write();
        if let Some(in_namespace) = sockets.get_mut(namespace) {
            in_namespace.remove(sid);
            if in_namespace.is_empty() {
                sockets.remove(namespace);
            }
        }
    }

    // Room membership of local sockets is already known to the namespace; with no
    // other node there is no interest to announce.
    fn room_joined(&self, _namespace: &str, _room: &str, _sid: &str) {}

    fn room_left(&self, _namespace: &str, _room: &str, _sid: &str) {}

    fn sockets(&self, namespace: &str) -> Vec<SocketRecord> {
        self.sockets
            .read()
            .get(namespace)
            .map(|in_namespace| in_namespace.values().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_and_go() {
        let cluster = MemoryCluster::new("n1".into());
        let record = SocketRecord {
            namespace: "/".into(),
            sid: "s1".into(),
            node_id: "n1".into(),
            connected_at: 1,
        };
        cluster.socket_connected(record.clone());
        assert_eq!(cluster.sockets("/"), vec![record]);
        cluster.socket_disconnected("/", "s1");
        assert!(cluster.sockets("/").is_empty());
    }
}
