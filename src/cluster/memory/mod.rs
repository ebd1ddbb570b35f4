//! The embedded backend: the cluster in process, no Redis.
//!
//! A [`MemoryHub`] is what Redis is to the networked backend: the shared state
//! (sessions, lists, services, instances, round-robin cursors) and the way
//! between nodes. Each node holds a [`MemoryCluster`], its handle on a hub.
//! `cargo run` makes a hub of one node ([`MemoryCluster::new`]); tests put
//! several nodes on one hub ([`MemoryHub::join`]) to exercise routing,
//! round-robin and cross-node broadcasts without processes or Redis.
//!
//! The hub keeps no record per socket: where a socket is, and which sockets a
//! namespace or room has, are answered by asking each node's [`LocalNode`],
//! which for nodes in one process is the same answer Redis would give, and
//! keeps an idle client as small as it is without a cluster. The hub is also
//! its own node registry: each node's record (group, state, address, its
//! statistics source) is read live by [`Membership::nodes`]. Does not own the
//! storage of sessions, lists and services (see [`store`]).

mod store;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use parking_lot::{Mutex, RwLock};

use super::{
    AckBroadcast, BackendInfo, BroadcastMessage, Broker, ChannelGroups, ClusterError, Deployments,
    InstanceRecord, ListStore, LocalNode, Membership, MessageHandler, NodeRecord, NodeState,
    RemoteOp, ServiceRegistry, Services, SessionLimits, SessionStore, SessionWriteError,
    SocketRecord, SocketRegistry, StatsSource, Target, now_millis,
};
use crate::config::Settings;
use crate::protocol::engineio::Frame;
use crate::protocol::payload::Payload;
use store::Store;

/// The state and the nodes of one in-process cluster.
pub struct MemoryHub {
    store: Store,
    nodes: RwLock<HashMap<String, Arc<Endpoint>>>,
}

/// One node as the hub reaches it.
struct Endpoint {
    local: OnceLock<Weak<dyn LocalNode>>,
    topics: RwLock<HashMap<&'static str, Arc<dyn MessageHandler>>>,
    /// What a record of the node holds (the hub is its own registry).
    about: Mutex<About>,
}

/// A node's record in the hub, minus its id.
struct About {
    group: String,
    address: String,
    started_at: u64,
    state: NodeState,
    stats: Option<StatsSource>,
}

impl Endpoint {
    fn new(group: &str) -> Endpoint {
        Endpoint {
            local: OnceLock::new(),
            topics: RwLock::new(HashMap::new()),
            about: Mutex::new(About {
                group: group.to_string(),
                address: String::new(),
                started_at: now_millis(),
                state: NodeState::Running,
                stats: None,
            }),
        }
    }

    /// The node's record as of now (no beat: a node of the hub is live
    /// while it is in it).
    fn record(&self, id: &str) -> NodeRecord {
        let (group, address, started_at, state, source) = {
            let about = self.about.lock();
            (
                about.group.clone(),
                about.address.clone(),
                about.started_at,
                about.state,
                about.stats.clone(),
            )
        };
        NodeRecord {
            id: id.to_string(),
            address,
            group,
            state: state.as_str().to_string(),
            started_at,
            heartbeat: now_millis(),
            // Called outside the lock: the source may take its time.
            stats: source.map(|source| source()),
        }
    }

    fn local(&self) -> Option<Arc<dyn LocalNode>> {
        self.local.get().and_then(Weak::upgrade)
    }

    /// Hands a message to the node's handler of `topic` on a task of its own,
    /// as it would arrive from Redis; false when the node has no such handler.
    fn deliver(&self, topic: &str, body: Bytes) -> bool {
        let Some(handler) = self.topics.read().get(topic).cloned() else {
            return false;
        };
        tokio::spawn(async move { handler.on_message(body) });
        true
    }
}

impl MemoryHub {
    /// A hub keeping sessions `SESSION_TTL_MS` and instances `INSTANCE_TTL_MS`.
    pub fn new(settings: &Settings) -> Arc<MemoryHub> {
        Arc::new(MemoryHub {
            store: Store::with_limits(
                settings.session_ttl(),
                settings.instance_ttl(),
                SessionLimits::from_settings(settings),
            ),
            nodes: RwLock::new(HashMap::new()),
        })
    }

    /// A new node on this hub, in group `default`.
    pub fn join(self: &Arc<Self>, node_id: &str) -> MemoryCluster {
        self.join_group(node_id, "default")
    }

    /// A new node on this hub, in `group` (its `NODE_GROUP`).
    pub fn join_group(self: &Arc<Self>, node_id: &str, group: &str) -> MemoryCluster {
        let endpoint = Arc::new(Endpoint::new(group));
        self.nodes
            .write()
            .insert(node_id.to_string(), endpoint.clone());
        MemoryCluster {
            node_id: node_id.to_string(),
            hub: self.clone(),
            endpoint,
        }
    }

    /// Every node but `node_id`, as the nodes' own delivery targets.
    fn others(&self, node_id: &str) -> Vec<Arc<dyn LocalNode>> {
        self.nodes
            .read()
            .iter()
            .filter(|(id, _)| *id != node_id)
            .filter_map(|(_, endpoint)| endpoint.local())
            .collect()
    }

    fn endpoint(&self, node_id: &str) -> Option<Arc<Endpoint>> {
        self.nodes.read().get(node_id).cloned()
    }
}

/// One node's handle on a [`MemoryHub`].
pub struct MemoryCluster {
    node_id: String,
    hub: Arc<MemoryHub>,
    endpoint: Arc<Endpoint>,
}

impl MemoryCluster {
    /// A cluster of exactly this node, with the default settings.
    pub fn new(node_id: String) -> Self {
        MemoryHub::new(&Settings::default()).join(&node_id)
    }

    /// A cluster of exactly the node the settings name.
    pub fn from_settings(settings: &Settings) -> Self {
        MemoryHub::new(settings).join_group(&settings.node_id, &settings.node_group)
    }
}

impl Membership for MemoryCluster {
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
        let _ = self.endpoint.local.set(local);
    }

    // Never used to reach the node (see `node_address`); kept for its record.
    fn set_address(&self, address: String) {
        self.endpoint.about.lock().address = address;
    }

    // Nodes of one hub share a process: a session is always asked of the node
    // that holds it, so no request is ever forwarded.
    fn node_address(&self, _node_id: &str) -> BoxFuture<'static, Option<String>> {
        async { None }.boxed()
    }

    // Every call takes effect before it returns: there is nothing to wait for.
    fn flush(&self) -> BoxFuture<'static, Result<(), ClusterError>> {
        async { Ok(()) }.boxed()
    }

    fn drain(&self) -> BoxFuture<'static, Result<(), ClusterError>> {
        // Under the hub's service lock: a registration is either before (and
        // forgotten here) or after (and refused by the flag).
        self.hub.store.drain_host(&self.node_id);
        self.set_state(NodeState::Draining);
        async { Ok(()) }.boxed()
    }

    // The hub is the backend: it knows what it holds, nothing else (no
    // server, memory or traffic figures of its own).
    fn backend_info(&self) -> BoxFuture<'static, Result<BackendInfo, ClusterError>> {
        let mut info = BackendInfo::unknown(self.backend(), self.is_ready());
        info.keys = Some(self.hub.store.entry_count() as u64);
        async move { Ok(info) }.boxed()
    }

    fn rejoin(&self) -> BoxFuture<'static, Result<(), ClusterError>> {
        self.hub.store.announce_host(&self.node_id, true);
        async { Ok(()) }.boxed()
    }

    // The hub keeps no cache and no subscription per node: what is left to
    // write again is this node's place in its host sets.
    fn reset(&self) -> BoxFuture<'static, Result<(), ClusterError>> {
        self.hub.store.announce_host(&self.node_id, false);
        async { Ok(()) }.boxed()
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        self.hub.nodes.write().remove(&self.node_id);
        self.hub.store.forget_host(&self.node_id);
        async {}.boxed()
    }

    fn set_state(&self, state: NodeState) {
        self.endpoint.about.lock().state = state;
    }

    // The hub's records are the endpoints themselves: set is written.
    fn confirm_state(&self) -> BoxFuture<'static, Result<(), ClusterError>> {
        async { Ok(()) }.boxed()
    }

    fn set_stats_source(&self, source: StatsSource) {
        self.endpoint.about.lock().stats = Some(source);
    }

    fn nodes(&self) -> BoxFuture<'static, Result<Vec<NodeRecord>, ClusterError>> {
        let endpoints: Vec<(String, Arc<Endpoint>)> = self
            .hub
            .nodes
            .read()
            .iter()
            .map(|(id, endpoint)| (id.clone(), endpoint.clone()))
            .collect();
        let mut records: Vec<NodeRecord> = endpoints
            .iter()
            .map(|(id, endpoint)| endpoint.record(id))
            .collect();
        records.sort_by(|a, b| a.id.cmp(&b.id));
        async move { Ok(records) }.boxed()
    }
}

impl Broker for MemoryCluster {
    fn publish_broadcast(&self, message: BroadcastMessage) {
        for node in self.hub.others(&self.node_id) {
            for (namespace, frames) in &message.targets {
                node.deliver(namespace, &message.rooms, &message.except, frames);
            }
        }
    }

    fn publish_broadcast_with_ack(
        &self,
        broadcast: AckBroadcast,
    ) -> BoxFuture<'static, Vec<Payload>> {
        let asks: Vec<_> = self
            .hub
            .others(&self.node_id)
            .iter()
            .map(|node| node.deliver_with_ack(&broadcast).1)
            .collect();
        async move {
            futures_util::future::join_all(asks)
                .await
                .into_iter()
                .flatten()
                .collect()
        }
        .boxed()
    }

    fn emit_to_socket(&self, namespace: &str, sid: &str, frames: Vec<Frame>) {
        // A socket is on one node at most: the first that has it takes it.
        for node in self.hub.others(&self.node_id) {
            if node.deliver_to_socket(namespace, sid, &frames) {
                return;
            }
        }
    }

    fn remote(&self, namespace: &str, target: Target, op: RemoteOp) {
        for node in self.hub.others(&self.node_id) {
            node.apply(namespace, &target, &op);
        }
    }

    // Nodes in one process are reached directly, without channels: there is
    // nothing to share.
    fn group_channels(&self, _groups: ChannelGroups) {}

    fn on_topic(&self, topic: &'static str, handler: Arc<dyn MessageHandler>) {
        self.endpoint.topics.write().insert(topic, handler);
    }

    fn send(&self, node: &str, topic: &'static str, body: Bytes) {
        match self.hub.endpoint(node) {
            Some(endpoint) => {
                endpoint.deliver(topic, body);
            }
            None => tracing::debug!(node, topic, "a message for a node that is not here"),
        }
    }
}

impl SocketRegistry for MemoryCluster {
    // These four keep nothing: the nodes' own namespaces are the only record
    // there is, and fetches read them.
    fn socket_connected(&self, _record: SocketRecord) {}

    fn socket_disconnected(&self, _namespace: &str, _sid: &str) {}

    fn room_joined(&self, _namespace: &str, _room: &str, _sid: &str, _rooms: &[String]) {}

    fn room_left(&self, _namespace: &str, _room: &str, _sid: &str, _rooms: &[String]) {}

    fn fetch_sockets(
        &self,
        namespace: &str,
        room: Option<&str>,
    ) -> BoxFuture<'static, Result<Vec<SocketRecord>, ClusterError>> {
        let nodes: Vec<Arc<dyn LocalNode>> = self
            .hub
            .nodes
            .read()
            .values()
            .filter_map(|endpoint| endpoint.local())
            .collect();
        let records: Vec<SocketRecord> = nodes
            .iter()
            .flat_map(|node| node.snapshot())
            .filter(|r| {
                r.namespace == namespace
                    && room.is_none_or(|room| r.rooms.iter().any(|x| x == room))
            })
            .collect();
        async move { Ok(records) }.boxed()
    }
}

impl SessionStore for MemoryCluster {
    fn session_load(
        &self,
        id: &str,
    ) -> BoxFuture<'static, Result<HashMap<String, String>, ClusterError>> {
        let fields = self.hub.store.session_load(id);
        async move { Ok(fields) }.boxed()
    }

    fn session_store(
        &self,
        id: &str,
        fields: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<(), SessionWriteError>> {
        let stored = self.hub.store.session_store(id, fields);
        async { stored }.boxed()
    }

    fn session_touch(&self, id: &str) {
        self.hub.store.session_touch(id);
    }
}

impl ServiceRegistry for MemoryCluster {
    fn register_services(&self, services: Vec<(String, String)>) {
        self.hub.store.register_services(&self.node_id, services);
    }

    fn services(&self) -> Services {
        self.hub.store.services()
    }

    fn dispatch(
        &self,
        service: &str,
        topic: &'static str,
        body: Bytes,
    ) -> BoxFuture<'static, Result<Option<String>, ClusterError>> {
        // Round-robin over the hosts that listen on the topic, as the Redis
        // backend skips hosts that no longer listen.
        let hub = self.hub.clone();
        let host = hub.store.pick_host(service, |host| {
            hub.endpoint(host)
                .is_some_and(|endpoint| endpoint.topics.read().contains_key(topic))
        });
        if let Some(endpoint) = host.as_deref().and_then(|host| hub.endpoint(host)) {
            endpoint.deliver(topic, body);
        }
        async move { Ok(host) }.boxed()
    }

    // An instance here expires INSTANCE_TTL_MS after it was rendered, without
    // refreshes: one process has no use for longer-lived ones, and nothing a
    // client creates may stay for ever.
    fn record_instance(&self, instance_id: &str, socket: &str, fields: Vec<(String, String)>) {
        self.hub.store.record_instance(instance_id, socket, fields);
    }

    fn unregister_services(&self, names: &[String]) {
        self.hub.store.unregister_services(&self.node_id, names);
    }

    fn forget_service(&self, name: &str) -> BoxFuture<'static, Result<(), ClusterError>> {
        self.hub.store.forget_service(name);
        async { Ok(()) }.boxed()
    }
}

impl Deployments for MemoryCluster {
    fn instances(
        &self,
        limit: usize,
    ) -> BoxFuture<'static, Result<(Vec<InstanceRecord>, usize), ClusterError>> {
        let found = self.hub.store.instances(limit);
        async move { Ok(found) }.boxed()
    }

    fn instance(
        &self,
        id: &str,
    ) -> BoxFuture<'static, Result<Option<InstanceRecord>, ClusterError>> {
        let found = self.hub.store.instance(id);
        async move { Ok(found) }.boxed()
    }

    fn update_instance(
        &self,
        id: &str,
        fields: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<bool, ClusterError>> {
        let updated = self.hub.store.update_instance(id, fields);
        async move { Ok(updated) }.boxed()
    }

    fn remove_instance(&self, id: &str) -> BoxFuture<'static, Result<bool, ClusterError>> {
        let removed = self.hub.store.remove_instance(id);
        async move { Ok(removed) }.boxed()
    }

    fn desired(&self) -> BoxFuture<'static, Result<HashMap<String, String>, ClusterError>> {
        let desired = self.hub.store.desired();
        async move { Ok(desired) }.boxed()
    }

    fn set_desired(
        &self,
        changes: Vec<(String, Option<String>)>,
    ) -> BoxFuture<'static, Result<(), ClusterError>> {
        self.hub.store.set_desired(changes);
        async { Ok(()) }.boxed()
    }
}

impl ListStore for MemoryCluster {
    fn list_push(
        &self,
        name: &str,
        entry: String,
        keep: usize,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<(), ClusterError>> {
        self.hub.store.list_push(name, entry, keep, ttl);
        async { Ok(()) }.boxed()
    }

    fn list_read(&self, name: &str) -> BoxFuture<'static, Result<Vec<String>, ClusterError>> {
        let entries = self.hub.store.list_read(name);
        async move { Ok(entries) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_hub_lists_its_nodes_with_state_group_and_stats() {
        let hub = MemoryHub::new(&Settings::default());
        let a = hub.join_group("a", "edge");
        let b = hub.join("b");
        a.set_address("http://a:3000".into());
        a.set_stats_source(Arc::new(|| "{}".to_string()));
        b.set_state(NodeState::Unregistered);
        let records = b.nodes().await.unwrap();
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(
            (records[0].group.as_str(), records[0].state.as_str()),
            ("edge", "running")
        );
        assert_eq!(records[0].address, "http://a:3000");
        assert_eq!(records[0].stats.as_deref(), Some("{}"));
        assert_eq!(records[1].state, "unregistered");
        assert_eq!(records[1].stats, None);
        a.drain().await.unwrap();
        assert_eq!(b.nodes().await.unwrap()[0].state, "draining");
        a.shutdown().await;
        assert_eq!(b.nodes().await.unwrap().len(), 1);
    }
}
