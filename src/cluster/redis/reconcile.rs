//! Reconciling: making Redis hold exactly the sockets, rooms and services this
//! node holds, after writes were lost or Redis lost the node's record.
//!
//! Owns the snapshot-and-queue step (`redis/reconcile_sockets.lua` in batches)
//! and telling whether a local change raced with it. Does not own when it runs
//! (the heartbeat decides, see `super::heartbeat`) nor the commands that record
//! sockets as they change (see `super::sockets`).

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use redis::AsyncCommands;
use serde_json::json;

use super::{RedisNode, services};
use crate::cluster::{ClusterError, SocketRecord};

const RECONCILE_SOCKETS: &str = include_str!("../../../redis/reconcile_sockets.lua");

/// Sockets written by one reconcile script call.
const RECONCILE_BATCH: usize = 200;

/// Queues what makes Redis hold exactly this node's sockets, rooms and
/// services; true when it was queued whole and no local change raced with it.
pub(super) async fn reconcile(node: &RedisNode) -> Result<bool, ClusterError> {
    let Some(local) = node.local() else {
        return Ok(true);
    };
    let listed: Vec<String> = node
        .beat_commands
        .run(async |connection| connection.smembers(node.keys.node_sockets(&node.id)).await)
        .await?;
    // From the snapshot to the last queued command nothing awaits, so only a
    // change on another thread can slip in between: then the counter moved.
    let changes = node.local_changes.load(Ordering::SeqCst);
    let records = local.snapshot();
    let held: HashSet<&str> = records.iter().map(|r| r.sid.as_str()).collect();
    let gone: Vec<&String> = listed
        .iter()
        .filter(|sid| !held.contains(sid.as_str()))
        .collect();
    // A draining node announces no service (and a drain that starts now
    // queues its removals after these).
    let queued = node.services.with_announced(|announced| {
        let mut commands = services::service_commands(&node.keys, &node.id, announced);
        for batch in records.chunks(RECONCILE_BATCH) {
            commands.push(reconcile_command(node, batch, &[]));
        }
        for batch in gone.chunks(RECONCILE_BATCH) {
            commands.push(reconcile_command(node, &[], batch));
        }
        node.writer.commands_now(commands)
    });
    let quiet = node.local_changes.load(Ordering::SeqCst) == changes;
    tracing::info!(
        sockets = records.len(),
        removed = gone.len(),
        "reconciled this node's state in Redis"
    );
    Ok(queued && quiet)
}

/// One `redis/reconcile_sockets.lua` call: sockets to write whole, and socket
/// ids to remove.
fn reconcile_command(node: &RedisNode, held: &[SocketRecord], gone: &[&String]) -> redis::Cmd {
    let held: Vec<serde_json::Value> = held
        .iter()
        .map(|record| {
            json!({
                "sid": record.sid,
                "namespace": record.namespace,
                "session": record.session_id,
                "rooms": record.rooms,
                "connected_at": record.connected_at,
            })
        })
        .collect();
    redis::cmd("EVAL")
        .arg(RECONCILE_SOCKETS)
        .arg(0)
        .arg(node.keys.prefix())
        .arg(&node.id)
        .arg(serde_json::Value::Array(held).to_string())
        .arg(json!(gone).to_string())
        .to_owned()
}
