//! The embedded backend: a cluster of exactly this node, in process.
//!
//! Owns what a one-node cluster keeps in Redis besides sockets: sessions,
//! histories, the components it hosts, instances. Cluster-wide socket queries
//! are answered from the node's own namespaces, which for one node is the same
//! answer Redis would give. There are no other nodes, so a broadcast or a remote
//! operation has nowhere else to go.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use std::time::{Duration, Instant};

use super::{
    AckBroadcast, BroadcastMessage, Cluster, ClusterError, ComponentInfo, LocalNode, RemoteOp,
    Routed, SocketRecord, Target,
};
use crate::component::Descriptor;
use crate::protocol::engineio::Frame;
use crate::protocol::payload::Payload;
use std::sync::OnceLock;

/// The in-process cluster of one node.
#[derive(Debug)]
pub struct MemoryCluster {
    node_id: String,
    sessions: Mutex<Sessions>,
    session_ttl: Duration,
    histories: Mutex<HashMap<String, VecDeque<String>>>,
    components: RwLock<Arc<Vec<ComponentInfo>>>,
    instances: Mutex<HashMap<String, Vec<(String, String)>>>,
    local: OnceLock<Weak<dyn LocalNode>>,
}

#[derive(Debug, Default)]
struct Sessions {
    /// id → (fields, expiry)
    data: HashMap<String, (HashMap<String, String>, Instant)>,
    /// Size after the last sweep of expired sessions; the next sweep runs when
    /// the map has doubled, so sweeping costs O(1) per write on average.
    swept_at: usize,
}

impl Sessions {
    fn live(&mut self, id: &str, ttl: Duration) -> &mut HashMap<String, String> {
        let now = Instant::now();
        if self.data.len() >= 2 * self.swept_at.max(64) {
            self.data.retain(|_, (_, expiry)| *expiry > now);
            self.swept_at = self.data.len();
        }
        let entry = self
            .data
            .entry(id.to_string())
            .or_insert_with(|| (HashMap::new(), now + ttl));
        if entry.1 <= now {
            entry.0.clear();
        }
        entry.1 = now + ttl;
        &mut entry.0
    }
}

impl MemoryCluster {
    pub fn new(node_id: String) -> Self {
        Self::with_session_ttl(node_id, Duration::from_secs(86_400))
    }

    pub fn with_session_ttl(node_id: String, session_ttl: Duration) -> Self {
        MemoryCluster {
            node_id,
            sessions: Mutex::new(Sessions::default()),
            session_ttl,
            histories: Mutex::new(HashMap::new()),
            components: RwLock::new(Arc::new(Vec::new())),
            instances: Mutex::new(HashMap::new()),
            local: OnceLock::new(),
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

    fn attach(&self, local: Weak<dyn LocalNode>) {
        let _ = self.local.set(local);
    }

    fn publish_broadcast(&self, _message: BroadcastMessage) {}

    fn publish_broadcast_with_ack(
        &self,
        _broadcast: AckBroadcast,
    ) -> BoxFuture<'static, Vec<Payload>> {
        async { Vec::new() }.boxed()
    }

    // A socket that is not local does not exist.
    fn emit_to_socket(&self, _namespace: &str, _sid: &str, _frames: Vec<Frame>) {}

    fn remote(&self, _namespace: &str, _target: Target, _op: RemoteOp) {}

    // The node's own namespaces are the only record there is: fetches read them.
    fn socket_connected(&self, _record: SocketRecord) {}

    fn socket_disconnected(&self, _namespace: &str, _sid: &str) {}

    fn room_joined(&self, _namespace: &str, _room: &str, _sid: &str, _rooms: &[String]) {}

    fn room_left(&self, _namespace: &str, _room: &str, _sid: &str, _rooms: &[String]) {}

    fn fetch_sockets(
        &self,
        namespace: &str,
        room: Option<&str>,
    ) -> BoxFuture<'static, Result<Vec<SocketRecord>, ClusterError>> {
        let records: Vec<SocketRecord> = self
            .local
            .get()
            .and_then(Weak::upgrade)
            .map(|local| local.snapshot())
            .unwrap_or_default()
            .into_iter()
            .filter(|r| {
                r.namespace == namespace
                    && room.is_none_or(|room| r.rooms.iter().any(|x| x == room))
            })
            .collect();
        async move { Ok(records) }.boxed()
    }

    fn session_load(
        &self,
        id: &str,
    ) -> BoxFuture<'static, Result<HashMap<String, String>, ClusterError>> {
        let fields = self.sessions.lock().live(id, self.session_ttl).clone();
        async move { Ok(fields) }.boxed()
    }

    fn session_store(
        &self,
        id: &str,
        fields: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<(), ClusterError>> {
        self.sessions
            .lock()
            .live(id, self.session_ttl)
            .extend(fields);
        async { Ok(()) }.boxed()
    }

    fn session_touch(&self, id: &str) {
        let mut sessions = self.sessions.lock();
        if sessions.data.contains_key(id) {
            sessions.live(id, self.session_ttl);
        }
    }

    fn history_append(
        &self,
        name: &str,
        entry: String,
        keep: usize,
    ) -> BoxFuture<'static, Result<(), ClusterError>> {
        let mut histories = self.histories.lock();
        let history = histories.entry(name.to_string()).or_default();
        history.push_back(entry);
        while history.len() > keep {
            history.pop_front();
        }
        async { Ok(()) }.boxed()
    }

    fn history(&self, name: &str) -> BoxFuture<'static, Result<Vec<String>, ClusterError>> {
        let entries: Vec<String> = self
            .histories
            .lock()
            .get(name)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default();
        async move { Ok(entries) }.boxed()
    }

    fn register_components(&self, descriptors: Vec<Descriptor>) {
        let mut components = self.components.write();
        let mut view = components.as_ref().clone();
        view.extend(descriptors.into_iter().map(|descriptor| ComponentInfo {
            descriptor,
            hosts: vec![self.node_id.clone()],
        }));
        *components = Arc::new(view);
    }

    fn components(&self) -> Arc<Vec<ComponentInfo>> {
        self.components.read().clone()
    }

    fn dispatch(&self, component: &str, message: Routed) -> BoxFuture<'static, Option<String>> {
        let hosted = self
            .components
            .read()
            .iter()
            .any(|info| info.descriptor.key() == component);
        if hosted {
            self.route(&self.node_id, message);
        }
        let node = hosted.then(|| self.node_id.clone());
        async move { node }.boxed()
    }

    // There is only this node: the message is delivered here, on its own task
    // as it would be coming from Redis.
    fn route(&self, _node: &str, message: Routed) {
        if let Some(local) = self.local.get().and_then(Weak::upgrade) {
            tokio::spawn(async move { local.routed(message) });
        }
    }

    fn record_instance(&self, instance_id: &str, fields: Vec<(String, String)>) {
        self.instances
            .lock()
            .insert(instance_id.to_string(), fields);
    }

    fn flush(&self) -> BoxFuture<'static, ()> {
        async {}.boxed()
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        async {}.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_keep_fields_until_they_expire() {
        let cluster = MemoryCluster::with_session_ttl("n1".into(), Duration::from_millis(50));
        cluster
            .session_store("s", vec![("language".into(), "fr".into())])
            .await
            .unwrap();
        cluster
            .session_store("s", vec![("user".into(), "ann".into())])
            .await
            .unwrap();
        let fields = cluster.session_load("s").await.unwrap();
        assert_eq!(fields.get("language").map(String::as_str), Some("fr"));
        assert_eq!(fields.get("user").map(String::as_str), Some("ann"));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(
            cluster.session_load("s").await.unwrap().is_empty(),
            "expired"
        );
    }
}
