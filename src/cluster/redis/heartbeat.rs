//! The heartbeat: this node's registration, the re-registration of its local
//! state, the reaping of dead nodes, and deregistration.
//!
//! Owns the registration's state ([`Heartbeat`]: period, TTL, address, whether
//! the last beat succeeded) and the task ([`run`]) that, every period or when
//! woken (the address became known, a node died, services changed): refreshes
//! `node:{id}` and `nodes`; writes the node's whole local state again when
//! Redis lost it (first start, Redis restarted empty, or this node was purged
//! while cut off), through the writer so it stays ordered with later changes;
//! purges every node whose heartbeat lapsed (`redis/purge_node.lua`) and
//! announces it on `control`; and reads the service registry again. Also owns
//! [`deregister`] (clean shutdown). Does not own what the local state is (the
//! [`LocalNode`](crate::cluster::LocalNode) says) nor the commands that record
//! sockets and services (see `super::sockets` and `super::services`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use redis::AsyncCommands;
use tokio::sync::Notify;

use super::{OP_TIMEOUT, RedisNode, services, set_command, sockets};
use crate::cluster::wire::Message;
use crate::cluster::{ClusterError, now_millis};
use crate::config::Settings;

const PURGE_NODE: &str = include_str!("../../../redis/purge_node.lua");

/// The node's registration in Redis.
pub(super) struct Heartbeat {
    period: Duration,
    /// How long a node's registration lives without a beat.
    ttl: Duration,
    /// Milliseconds since the Unix epoch.
    started_at: u64,
    /// The address this node serves on.
    address: Mutex<String>,
    /// Whether the last beat succeeded (and no write failed since).
    ok: AtomicBool,
    /// Wakes the task early.
    wake: Notify,
    purge: redis::Script,
}

impl Heartbeat {
    pub(super) fn new(settings: &Settings) -> Heartbeat {
        Heartbeat {
            period: settings.heartbeat(),
            ttl: settings.node_ttl(),
            started_at: now_millis(),
            address: Mutex::new(String::new()),
            ok: AtomicBool::new(false),
            wake: Notify::new(),
            purge: redis::Script::new(PURGE_NODE),
        }
    }

    pub(super) fn is_ok(&self) -> bool {
        self.ok.load(Ordering::Acquire)
    }

    /// A write failed: the node is not ready until a beat succeeds.
    pub(super) fn failed(&self) {
        self.ok.store(false, Ordering::Release);
    }

    /// Beats now rather than after the period.
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }

    /// The node's address became known: registered at once.
    pub(super) fn set_address(&self, address: String) {
        *self.address.lock() = address;
        self.wake();
    }
}

/// Registers the node, re-registers its state when Redis lost it, and purges
/// dead nodes.
pub(super) async fn run(weak: Weak<RedisNode>) {
    loop {
        let Some(node) = weak.upgrade() else { return };
        let heartbeat = &node.heartbeat;
        // Bounds the re-registration too: it waits for room in the write queue.
        let beat = tokio::time::timeout(OP_TIMEOUT, beat(&node))
            .await
            .unwrap_or(Err(ClusterError::Timeout));
        // Failures are reported; timeouts are not (a beat that timed out still
        // marks the node not ready).
        if let Err(error) = &beat
            && !matches!(error, ClusterError::Timeout)
            && heartbeat.is_ok()
        {
            tracing::warn!(
                error = error as &dyn std::error::Error,
                "Redis heartbeat failed"
            );
        }
        let ok = beat.is_ok();
        heartbeat.ok.store(ok, Ordering::Release);
        if ok
            && let Err(error) = reap(&node).await
            && !matches!(error, ClusterError::Timeout)
        {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                "could not purge dead nodes"
            );
        }
        if ok
            && let Err(error) = services::refresh(&node).await
            && !matches!(error, ClusterError::Timeout)
        {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                "could not read the component registry"
            );
        }
        // Beat again after the period, or at once when woken.
        let _ = tokio::time::timeout(heartbeat.period, heartbeat.wake.notified()).await;
    }
}

/// Refreshes the node's registration; writes its local state again when the
/// registration was missing.
async fn beat(node: &RedisNode) -> Result<(), ClusterError> {
    let heartbeat = &node.heartbeat;
    let key = node.keys.node(&node.id);
    let now = now_millis();
    let sockets = node
        .local()
        .map(|local| local.socket_count())
        .unwrap_or_default();
    let address = heartbeat.address.lock().clone();
    let components = {
        let hosted = node.services.hosted_names();
        serde_json::to_string(&hosted).unwrap_or_else(|_| "[]".into())
    };
    let fields = [
        ("address", address),
        ("started_at", heartbeat.started_at.to_string()),
        ("heartbeat", now.to_string()),
        ("sockets", sockets.to_string()),
        ("services", components),
    ];
    let existed = node
        .beat_commands
        .run(async |connection| {
            let (existed,): (bool,) = redis::pipe()
                .exists(&key)
                .hset_multiple(&key, &fields)
                .ignore()
                .pexpire(&key, heartbeat.ttl.as_millis() as i64)
                .ignore()
                .zadd(node.keys.nodes(), &node.id, now)
                .ignore()
                .query_async(connection)
                .await?;
            Ok(existed)
        })
        .await?;
    if !existed {
        // First beat, Redis restarted empty, or this node was purged while it
        // could not reach Redis: write everything the node holds again.
        register_local_state(node).await;
    }
    Ok(())
}

/// Writes the node's whole local state again, in order with every other write.
async fn register_local_state(node: &RedisNode) {
    let writer = &node.writer;
    let hosted = node.services.hosted();
    for command in services::service_commands(&node.keys, &node.id, &hosted) {
        if !writer.command_waiting(command).await {
            return;
        }
    }
    let Some(local) = node.local() else { return };
    let records = local.snapshot();
    tracing::info!(sockets = records.len(), "registering local state in Redis");
    for record in records {
        for command in sockets::connect_commands(&node.keys, &node.id, &record) {
            if !writer.command_waiting(command).await {
                return;
            }
        }
        for room in &record.rooms {
            let command = set_command(
                "SADD",
                node.keys.room_sockets(&record.namespace, room),
                &record.sid,
            );
            if !writer.command_waiting(command).await {
                return;
            }
        }
    }
}

/// Purges every other node whose heartbeat lapsed, and announces each.
async fn reap(node: &RedisNode) -> Result<(), ClusterError> {
    let cutoff = now_millis().saturating_sub(node.heartbeat.ttl.as_millis() as u64);
    node.beat_commands
        .run(async |connection| {
            let dead: Vec<String> = connection
                .zrangebyscore(node.keys.nodes(), "-inf", cutoff)
                .await?;
            for dead in dead.into_iter().filter(|dead| *dead != node.id) {
                let purged: i64 = node
                    .heartbeat
                    .purge
                    .arg(node.keys.prefix())
                    .arg(&dead)
                    .invoke_async(connection)
                    .await?;
                tracing::info!(
                    node = dead,
                    sockets = purged,
                    "purged a node whose heartbeat lapsed"
                );
                let down = Message::NodeDown { node: dead };
                let _: () = connection
                    .publish(node.keys.control_channel(), down.encode())
                    .await?;
            }
            Ok(())
        })
        .await
}

/// Purges this node from Redis and tells the others it is gone.
pub(super) async fn deregister(node: Arc<RedisNode>) {
    let purged = node
        .beat_commands
        .run(async |connection| {
            let _: i64 = node
                .heartbeat
                .purge
                .arg(node.keys.prefix())
                .arg(&node.id)
                .invoke_async(connection)
                .await?;
            let down = Message::NodeDown {
                node: node.id.clone(),
            };
            connection
                .publish::<_, _, ()>(node.keys.control_channel(), down.encode())
                .await
        })
        .await;
    if let Err(error) = purged {
        tracing::warn!(
            error = &error as &dyn std::error::Error,
            "could not deregister from Redis; the others will purge this node after its TTL"
        );
    }
}
