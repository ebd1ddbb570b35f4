//! Reaping: purging dead nodes, an earlier incarnation of this node, or this
//! node as it leaves.
//!
//! Owns finding the nodes whose record expired (their liveness on Redis's
//! clock), purging an incarnation `PURGE_BATCH` sockets per call of
//! `redis/purge_node.lua` (which re-checks in every call that it still may),
//! announcing `NodeDown`, and deregistering on shutdown. Does not own the
//! heartbeat's schedule (see `super::heartbeat`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::AsyncCommands;

use super::{OP_TIMEOUT, RedisNode};
use crate::cluster::ClusterError;
use crate::cluster::wire::Message;

/// Purges every other node whose record expired, and announces each.
pub(super) async fn reap(node: &RedisNode) -> Result<(), ClusterError> {
    let epochs: HashMap<String, String> = node
        .beat_commands
        .run(async |connection| connection.hgetall(node.keys.node_epochs()).await)
        .await?;
    let others: Vec<(String, String)> = epochs
        .into_iter()
        .filter(|(id, _)| *id != node.id)
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    let alive: Vec<bool> = node
        .beat_commands
        .run(async |connection| {
            let mut pipe = redis::pipe();
            for (id, _) in &others {
                pipe.exists(node.keys.node(id));
            }
            pipe.query_async(connection).await
        })
        .await?;
    for ((dead, epoch), alive) in others.into_iter().zip(alive) {
        if alive {
            continue;
        }
        let Some(steps) = purge(node, &dead, &epoch, "dead").await? else {
            continue;
        };
        tracing::info!(node = dead, steps, "purged a node whose heartbeat lapsed");
        let down = Message::NodeDown { node: dead };
        node.beat_commands
            .run(async |connection| {
                connection
                    .publish::<_, _, ()>(node.keys.control_channel(), down.encode())
                    .await
            })
            .await?;
    }
    Ok(())
}

/// Purges one incarnation (`redis/purge_node.lua`), a batch per call, until
/// it is gone; the number of calls, or `None` when a call found the node alive
/// again (or another node finished first).
pub(super) async fn purge(
    node: &RedisNode,
    id: &str,
    epoch: &str,
    mode: &str,
) -> Result<Option<usize>, ClusterError> {
    let mut steps = 0;
    loop {
        let left: i64 = node
            .beat_commands
            .run(async |connection| {
                node.heartbeat
                    .purge
                    .arg(node.keys.prefix())
                    .arg(id)
                    .arg(epoch)
                    .arg(node.heartbeat.purge_batch)
                    .arg(mode)
                    .invoke_async(connection)
                    .await
            })
            .await?;
        steps += 1;
        metrics::counter!("rain_cluster_purge_steps_total").increment(1);
        match left {
            0 => return Ok(Some(steps)),
            left if left < 0 => return Ok(None),
            _ => {}
        }
    }
}

/// Purges this node from Redis and tells the others it is gone; it beats no
/// more.
pub(super) async fn deregister(node: Arc<RedisNode>) {
    node.heartbeat.leaving.store(true, Ordering::Release);
    let epoch = node.heartbeat.epoch.clone();
    let purged = async {
        purge(&node, &node.id, &epoch, "known").await?;
        let down = Message::NodeDown {
            node: node.id.clone(),
        };
        node.beat_commands
            .run(async |connection| {
                connection
                    .publish::<_, _, ()>(node.keys.control_channel(), down.encode())
                    .await
            })
            .await
    };
    if let Err(error) = tokio::time::timeout(OP_TIMEOUT, purged)
        .await
        .unwrap_or(Err(ClusterError::Timeout))
    {
        tracing::warn!(
            error = &error as &dyn std::error::Error,
            "could not deregister from Redis; the others will purge this node after its TTL"
        );
    }
}
