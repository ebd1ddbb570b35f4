//! Every Redis key and pub/sub channel name, in one place.
//!
//! Owns naming only: the prefix (`KEY_PREFIX`) and the layout below, which the
//! Lua scripts under `redis/` follow too. Keys carry no hash tags: the scripts
//! touch keys of many sockets and rooms at once, so the layout assumes one
//! Redis, not Redis Cluster (see `docs/architecture.md`). Does not talk to
//! Redis.

use std::sync::{Arc, OnceLock};

/// The version of the key layout below, recorded in every node's record
/// (`node:{id}` field `schema`) so nodes of different builds can tell whether
/// they share one. 3: node epochs and batched purges; channel groups.
pub const SCHEMA: u32 = 3;

/// Which group of namespaces shares a namespace's broadcast channels, if any
/// (see [`Keys::group_channels`]).
pub type ChannelGroups = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Builds prefixed names for one cluster.
#[derive(Clone)]
pub struct Keys {
    prefix: String,
    groups: Arc<OnceLock<ChannelGroups>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
            groups: Arc::new(OnceLock::new()),
        }
    }

    /// Lets namespaces share their room and namespace channels: `groups`
    /// names the group of a namespace (the same for every namespace of the
    /// group, and for a namespace always the same), or `None` for a namespace
    /// of its own. One PUBLISH then reaches every node with members in any
    /// namespace of the group. Set once, before any socket connects; later
    /// calls are ignored.
    pub fn group_channels(&self, groups: ChannelGroups) {
        let _ = self.groups.set(groups);
    }

    /// The name a namespace's channels are built from: its group's, or its own.
    fn channel_scope<'a>(&self, namespace: &'a str) -> std::borrow::Cow<'a, str> {
        match self.groups.get().and_then(|groups| groups(namespace)) {
            Some(group) => std::borrow::Cow::Owned(format!("@{group}")),
            None => std::borrow::Cow::Borrowed(namespace),
        }
    }

    /// Hash of one node's registration (address, start, services, group, state,
    /// stats); has a TTL.
    pub fn node(&self, node_id: &str) -> String {
        format!("{}node:{node_id}", self.prefix)
    }

    /// Hash of node id → the start epoch of its incarnation whose state is in
    /// Redis (what a purge checks it removes the right one).
    pub fn node_epochs(&self) -> String {
        format!("{}node-epochs", self.prefix)
    }

    /// Set of the instances a node rendered (purged with the node).
    pub fn node_instances(&self, node_id: &str) -> String {
        format!("{}node-instances:{node_id}", self.prefix)
    }

    /// Sorted set of node ids by last heartbeat.
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// Hash of one connected socket (owner node, session, rooms, connected-at).
    pub fn conn(&self, sid: &str) -> String {
        format!("{}conn:{sid}", self.prefix)
    }

    /// Set of the socket ids one node holds (purged with the node).
    pub fn node_sockets(&self, node_id: &str) -> String {
        format!("{}node-sockets:{node_id}", self.prefix)
    }

    /// Set of the socket ids of a namespace, cluster-wide.
    pub fn namespace_sockets(&self, namespace: &str) -> String {
        format!("{}ns-sockets:{namespace}", self.prefix)
    }

    /// Set of the socket ids in a room, cluster-wide.
    pub fn room_sockets(&self, namespace: &str, room: &str) -> String {
        format!("{}room-sockets:{namespace}:{room}", self.prefix)
    }

    /// The prefix itself, for scripts that build names of their own (see
    /// `purge_node.lua`, which follows the names above).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A named capped list of an upper layer (a chat room's recent messages),
    /// newest first; expires after its last write.
    pub fn list(&self, name: &str) -> String {
        format!("{}list:{name}", self.prefix)
    }

    /// Set of every registered service's name (a component's `id@version`).
    pub fn services(&self) -> String {
        format!("{}services", self.prefix)
    }

    /// Hash of a service's specification (`spec`: opaque to the cluster).
    pub fn service(&self, name: &str) -> String {
        format!("{}service:{name}", self.prefix)
    }

    /// Set of the live hosts (node ids) of a service.
    pub fn service_nodes(&self, name: &str) -> String {
        format!("{}service:{name}:nodes", self.prefix)
    }

    /// The round-robin cursor of a service.
    pub fn round_robin(&self, name: &str) -> String {
        format!("{}rr:{name}", self.prefix)
    }

    /// Set of the services a node hosts (purged with the node).
    pub fn node_services(&self, node_id: &str) -> String {
        format!("{}node-services:{node_id}", self.prefix)
    }

    /// Hash of one rendered instance (component, version, node, created, state).
    pub fn instance(&self, instance_id: &str) -> String {
        format!("{}instance:{instance_id}", self.prefix)
    }

    /// Hash of the desired state operators set through the API (which
    /// components a node or group hosts, run-time descriptors, undeployed
    /// components), by name; no TTL.
    pub fn desired(&self) -> String {
        format!("{}desired", self.prefix)
    }

    /// Hash of one session's data; sliding TTL.
    pub fn session(&self, session_id: &str) -> String {
        format!("{}session:{session_id}", self.prefix)
    }

    /// The pub/sub channel one node listens on for messages addressed to it.
    pub fn node_channel(&self, node_id: &str) -> String {
        format!("{}node:{node_id}", self.prefix)
    }

    /// The pub/sub channel of a room's broadcasts (shared by the namespace's
    /// group, if it has one: `room:@{group}:{room}`).
    pub fn room_channel(&self, namespace: &str, room: &str) -> String {
        format!(
            "{}room:{}:{room}",
            self.prefix,
            self.channel_scope(namespace)
        )
    }

    /// The pub/sub channel of a namespace's broadcasts (shared by its group,
    /// if it has one: `ns:@{group}`).
    pub fn namespace_channel(&self, namespace: &str) -> String {
        format!("{}ns:{}", self.prefix, self.channel_scope(namespace))
    }

    /// The channel every node listens on (node up/down, deploys, map changes).
    pub fn control_channel(&self) -> String {
        format!("{}control", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix() {
        let keys = Keys::new("rain:");
        assert_eq!(keys.conn("abc"), "rain:conn:abc");
        assert_eq!(keys.room_channel("/chat", "lobby"), "rain:room:/chat:lobby");
        assert_eq!(keys.namespace_channel("/"), "rain:ns:/");
        assert_eq!(keys.control_channel(), "rain:control");
    }
}
