//! The [`ServiceRegistry`] of the Redis backend: the services this node hosts,
//! the cluster's registry as last read, and dispatch to a live host.
//!
//! A draining node (see [`Membership::drain`](crate::cluster::Membership::drain))
//! leaves every host set and announces its services no more: registration,
//! the heartbeat's reconcile and its record all go through
//! [`ServiceState::with_announced`], which gives nothing once draining, under
//! the same lock that starts the drain, so none of them can put it back.
//!
//! A drain is undone by [`rejoin`] (an operator registers an unregistered
//! node again), under the same lock.
//!
//! Owns [`ServiceState`] (hosted services and the cached view, which always
//! includes this node's own services), the commands that announce hosted
//! services ([`service_commands`]: `services`, `service:{name}`,
//! `service:{name}:nodes`, `node-services:{id}`), reading the registry back
//! ([`refresh`], on every heartbeat and on a `ServicesChanged`), and dispatch
//! (`redis/dispatch.lua`: round-robin over the hosts that still listen, and
//! the PUBLISH, in one script). Does not own what a service's spec means (it
//! is opaque here) nor when the registry is read (see `super::heartbeat`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use redis::AsyncCommands;

use super::{RedisCluster, RedisNode, set_command};
use crate::cluster::keys::Keys;
use crate::cluster::wire::Message;
use crate::cluster::{ClusterError, ServiceRecord, ServiceRegistry, Services};

const DISPATCH: &str = include_str!("../../../redis/dispatch.lua");

/// The services this node hosts, and its view of the cluster's registry.
pub(super) struct ServiceState {
    /// The services this node hosts: (name, spec).
    hosted: Mutex<Vec<(String, String)>>,
    /// The cluster's services and their hosts, as last read from Redis.
    view: RwLock<Services>,
    /// Set once the node drains: its services are announced no more.
    draining: AtomicBool,
    dispatch: redis::Script,
}

impl ServiceState {
    pub(super) fn new() -> ServiceState {
        ServiceState {
            hosted: Mutex::new(Vec::new()),
            view: RwLock::new(Arc::new(Vec::new())),
            draining: AtomicBool::new(false),
            dispatch: redis::Script::new(DISPATCH),
        }
    }

    /// The services this node hosts: (name, spec).
    pub(super) fn hosted(&self) -> Vec<(String, String)> {
        self.hosted.lock().clone()
    }

    /// The names of the services this node announces: those it hosts, none
    /// once it drains.
    pub(super) fn announced_names(&self) -> Vec<String> {
        self.with_announced(|announced| announced.iter().map(|(name, _)| name.clone()).collect())
    }

    /// Runs `f` with the services this node announces (none once it drains),
    /// holding the lock [`Self::drain`] takes: what `f` queues to the writer
    /// is queued wholly before or wholly after the drain's removals.
    pub(super) fn with_announced<R>(&self, f: impl FnOnce(&[(String, String)]) -> R) -> R {
        let hosted = self.hosted.lock();
        if self.draining.load(Ordering::Acquire) {
            f(&[])
        } else {
            f(&hosted)
        }
    }

    /// Starts draining: runs `f` with the services hosted here (to queue
    /// their removal) under the lock, after which nothing announces them.
    fn drain(&self, f: impl FnOnce(&[(String, String)])) {
        let hosted = self.hosted.lock();
        self.draining.store(true, Ordering::Release);
        f(&hosted);
    }

    /// Stops draining: runs `f` with the services hosted here (to queue
    /// their announcement) under the lock, after which they are announced
    /// again.
    fn rejoin(&self, f: impl FnOnce(&[(String, String)])) {
        let hosted = self.hosted.lock();
        self.draining.store(false, Ordering::Release);
        f(&hosted);
    }

    /// Forgets the cluster's registry as last read: the view is this node's
    /// own services until the next read.
    pub(super) fn forget_view(&self, node_id: &str) {
        let mut view = Vec::new();
        include_hosted(&mut view, &self.hosted(), node_id);
        view.sort_by(|a, b| a.name.cmp(&b.name));
        *self.view.write() = Arc::new(view);
    }
}

/// Commands that take `node_id` out of the host sets of `services`.
pub(super) fn leave_commands(
    keys: &Keys,
    node_id: &str,
    services: &[(String, String)],
) -> Vec<redis::Cmd> {
    let mut commands: Vec<redis::Cmd> = services
        .iter()
        .map(|(name, _)| set_command("SREM", keys.service_nodes(name), node_id))
        .collect();
    commands.push(
        redis::cmd("DEL")
            .arg(keys.node_services(node_id))
            .to_owned(),
    );
    commands
}

/// Takes this node out of every host set, for good (it drains); resolves
/// once Redis has it. The other nodes are told to read the registry again.
pub(super) async fn drain(node: Arc<RedisNode>) -> Result<(), ClusterError> {
    node.services.drain(|hosted| {
        node.writer
            .commands_now(leave_commands(&node.keys, &node.id, hosted));
    });
    announce_change(&node);
    super::flush(node).await
}

/// Announces this node's services again after a drain; resolves once Redis
/// has them. The other nodes are told to read the registry again.
pub(super) async fn rejoin(node: Arc<RedisNode>) -> Result<(), ClusterError> {
    node.services.rejoin(|hosted| {
        node.writer
            .commands_now(service_commands(&node.keys, &node.id, hosted));
    });
    announce_change(&node);
    // Its record lists them again at once, not a period later.
    node.heartbeat.wake();
    super::flush(node).await
}

/// Commands that announce services hosted by `node_id`.
pub(super) fn service_commands(
    keys: &Keys,
    node_id: &str,
    services: &[(String, String)],
) -> Vec<redis::Cmd> {
    let mut commands = Vec::new();
    for (name, spec) in services {
        commands.push(set_command("SADD", keys.services(), name));
        commands.push(
            redis::cmd("HSET")
                .arg(keys.service(name))
                .arg("spec")
                .arg(spec)
                .to_owned(),
        );
        commands.push(set_command("SADD", keys.service_nodes(name), node_id));
        commands.push(set_command("SADD", keys.node_services(node_id), name));
    }
    commands
}

/// Reads the cluster's services and their hosts into the cached view.
pub(super) async fn refresh(node: &RedisNode) -> Result<(), ClusterError> {
    let (names, answers) = node
        .commands
        .run(async |connection| {
            let names: Vec<String> = connection.smembers(node.keys.services()).await?;
            let mut pipe = redis::pipe();
            for name in &names {
                pipe.hget(node.keys.service(name), "spec");
                pipe.smembers(node.keys.service_nodes(name));
            }
            let answers: Vec<redis::Value> = pipe.query_async(connection).await?;
            Ok((names, answers))
        })
        .await?;
    let mut registry = Vec::new();
    for (name, pair) in names.into_iter().zip(answers.chunks(2)) {
        let [spec, hosts] = pair else { continue };
        let spec: Option<String> = redis::from_redis_value(spec).ok();
        let mut hosts: Vec<String> = redis::from_redis_value(hosts).unwrap_or_default();
        if let Some(spec) = spec {
            hosts.sort();
            registry.push(ServiceRecord {
                name,
                spec: spec.into(),
                hosts,
            });
        }
    }
    include_hosted(&mut registry, &node.services.hosted(), &node.id);
    registry.sort_by(|a, b| a.name.cmp(&b.name));
    *node.services.view.write() = Arc::new(registry);
    Ok(())
}

/// Tells the other nodes to read the registry again.
fn announce_change(node: &RedisNode) {
    let changed = Message::ServicesChanged {
        node: node.id.clone(),
    };
    node.writer
        .publish(node.keys.control_channel(), &changed, "node");
}

/// Changes this node's view of the registry at once (without waiting for
/// the next read) and tells the other nodes to read it again.
fn change_view(node: &RedisNode, change: impl FnOnce(&mut Vec<ServiceRecord>)) {
    let mut view = node.services.view.read().as_ref().clone();
    change(&mut view);
    *node.services.view.write() = Arc::new(view);
    announce_change(node);
}

/// This node's own services belong in its view even before Redis has them.
fn include_hosted(registry: &mut Vec<ServiceRecord>, hosted: &[(String, String)], node_id: &str) {
    for (name, spec) in hosted {
        match registry.iter_mut().find(|record| record.name == *name) {
            Some(record) if !record.hosts.iter().any(|host| host == node_id) => {
                record.hosts.push(node_id.to_string());
                record.hosts.sort();
            }
            Some(_) => {}
            None => registry.push(ServiceRecord {
                name: name.clone(),
                spec: spec.as_str().into(),
                hosts: vec![node_id.to_string()],
            }),
        }
    }
}

impl ServiceRegistry for RedisCluster {
    fn register_services(&self, services: Vec<(String, String)>) {
        let node = &self.node;
        {
            let mut hosted = node.services.hosted.lock();
            // A draining node hosts them for its own clients, announced to no one.
            if !node.services.draining.load(Ordering::Acquire) {
                for command in service_commands(&node.keys, &node.id, &services) {
                    node.writer.command(command);
                }
            }
            hosted.extend(services);
        }
        change_view(node, |view| {
            include_hosted(view, &node.services.hosted(), &node.id);
            view.sort_by(|a, b| a.name.cmp(&b.name));
        });
    }

    fn services(&self) -> Services {
        self.node.services.view.read().clone()
    }

    fn unregister_services(&self, names: &[String]) {
        let node = &self.node;
        {
            let mut hosted = node.services.hosted.lock();
            let leaving: Vec<(String, String)> = hosted
                .iter()
                .filter(|(name, _)| names.contains(name))
                .cloned()
                .collect();
            hosted.retain(|(name, _)| !names.contains(name));
            for (name, _) in &leaving {
                node.writer
                    .command(set_command("SREM", node.keys.service_nodes(name), &node.id));
                node.writer
                    .command(set_command("SREM", node.keys.node_services(&node.id), name));
            }
        }
        change_view(node, |view| {
            for record in view.iter_mut().filter(|r| names.contains(&r.name)) {
                record.hosts.retain(|host| *host != node.id);
            }
        });
    }

    fn forget_service(&self, name: &str) -> BoxFuture<'static, Result<(), ClusterError>> {
        let node = self.node.clone();
        let name = name.to_string();
        async move {
            node.commands
                .run(async |connection| {
                    redis::pipe()
                        .atomic()
                        .srem(node.keys.services(), &name)
                        .del(node.keys.service(&name))
                        .del(node.keys.service_nodes(&name))
                        .del(node.keys.round_robin(&name))
                        .query_async::<()>(connection)
                        .await
                })
                .await?;
            change_view(&node, |view| view.retain(|record| record.name != name));
            Ok(())
        }
        .boxed()
    }

    fn dispatch(
        &self,
        service: &str,
        topic: &'static str,
        body: Bytes,
    ) -> BoxFuture<'static, Result<Option<String>, ClusterError>> {
        let node = &self.node;
        let payload = Message::Topic {
            topic: topic.to_string(),
            body,
        }
        .encode();
        // Queued with every other write and sent in the same pipelines: no
        // round trip of its own per event, and the pick stays atomic.
        let mut pick = redis::cmd("EVALSHA");
        pick.arg(node.services.dispatch.get_hash())
            .arg(2)
            .arg(node.keys.service_nodes(service))
            .arg(node.keys.round_robin(service))
            .arg(node.keys.node_channel(""))
            .arg(payload);
        let host = node.writer.dispatch(pick, DISPATCH);
        async move {
            match host {
                Some(picked) => picked.await.unwrap_or(Err(ClusterError::Lost)),
                None => Err(ClusterError::Lost),
            }
        }
        .boxed()
    }

    fn record_instance(&self, instance_id: &str, socket: &str, fields: Vec<(String, String)>) {
        let node = &self.node;
        let key = node.keys.instance(instance_id);
        let mut command = redis::cmd("HSET");
        command.arg(&key).arg("socket").arg(socket);
        for (field, value) in fields {
            command.arg(field).arg(value);
        }
        node.writer.command(command);
        // Alive while the socket is: the heartbeat refreshes it until then.
        node.writer.command(
            redis::cmd("PEXPIRE")
                .arg(&key)
                .arg(node.heartbeat.instance_ttl_ms())
                .to_owned(),
        );
        node.writer.command(set_command(
            "SADD",
            node.keys.node_instances(&node.id),
            instance_id,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::redis::words;

    #[test]
    fn a_hosted_service_is_announced_under_its_keys() {
        let keys = Keys::new("rain:");
        let services = [("chat@1.0.0".to_string(), "{}".to_string())];
        let commands: Vec<Vec<String>> = service_commands(&keys, "n1", &services)
            .iter()
            .map(words)
            .collect();
        assert_eq!(
            commands,
            [
                vec!["SADD", "rain:services", "chat@1.0.0"],
                vec!["HSET", "rain:service:chat@1.0.0", "spec", "{}"],
                vec!["SADD", "rain:service:chat@1.0.0:nodes", "n1"],
                vec!["SADD", "rain:node-services:n1", "chat@1.0.0"],
            ]
        );
    }

    #[test]
    fn a_draining_node_leaves_every_host_set_and_announces_nothing_more() {
        let keys = Keys::new("rain:");
        let state = ServiceState::new();
        state.hosted.lock().push(("chat@1.0.0".into(), "{}".into()));
        let mut queued = Vec::new();
        state.drain(|hosted| queued = leave_commands(&keys, "n1", hosted));
        let queued: Vec<Vec<String>> = queued.iter().map(words).collect();
        assert_eq!(
            queued,
            [
                vec!["SREM", "rain:service:chat@1.0.0:nodes", "n1"],
                vec!["DEL", "rain:node-services:n1"],
            ]
        );
        assert!(state.with_announced(|announced| announced.is_empty()));
        assert!(state.announced_names().is_empty());
        assert_eq!(state.hosted().len(), 1, "still served to its own clients");

        let mut queued = Vec::new();
        state.rejoin(|hosted| queued = service_commands(&keys, "n1", hosted));
        assert_eq!(queued.len(), 4, "announced again");
        assert_eq!(state.announced_names(), ["chat@1.0.0"]);
    }

    #[test]
    fn a_forgotten_view_holds_only_this_node_s_services() {
        let state = ServiceState::new();
        state.hosted.lock().push(("chat@1.0.0".into(), "{}".into()));
        *state.view.write() = Arc::new(vec![record("other@1", &["n2"])]);
        state.forget_view("n1");
        let view = state.view.read().clone();
        assert_eq!(view.len(), 1);
        assert_eq!(view[0].name, "chat@1.0.0");
        assert_eq!(view[0].hosts, ["n1"]);
    }

    fn record(name: &str, hosts: &[&str]) -> ServiceRecord {
        ServiceRecord {
            name: name.to_string(),
            spec: "{}".into(),
            hosts: hosts.iter().map(|host| host.to_string()).collect(),
        }
    }

    #[test]
    fn the_view_always_includes_this_node_s_services() {
        let mut registry = vec![record("a", &["n3", "n1"]), record("b", &["n2", "n3"])];
        let hosted = [
            ("a".to_string(), "{}".to_string()),
            ("b".to_string(), "{}".to_string()),
            ("c".to_string(), "{\"new\":1}".to_string()),
        ];
        include_hosted(&mut registry, &hosted, "n1");
        assert_eq!(registry[0], record("a", &["n3", "n1"]), "already listed");
        assert_eq!(
            registry[1],
            record("b", &["n1", "n2", "n3"]),
            "added, sorted"
        );
        assert_eq!(registry[2].name, "c");
        assert_eq!(&*registry[2].spec, "{\"new\":1}");
        assert_eq!(registry[2].hosts, ["n1"]);
    }
}
