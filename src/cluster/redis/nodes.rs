//! The node registry read back: every live node's record, for the Cloud API.
//!
//! Owns reading the `nodes` sorted set and each member's `node:{id}` hash in
//! one pipeline, and turning a hash into a [`NodeRecord`]. A member whose
//! hash is gone expired (its node stopped beating and is not purged yet) and
//! is left out: liveness is the record's existence, as everywhere. Does not
//! own writing the records (see `super::heartbeat`) nor what the `stats`
//! text means (the edge layer's).

use std::collections::HashMap;

use redis::AsyncCommands;

use super::RedisNode;
use crate::cluster::{ClusterError, NodeRecord, NodeState};

/// Every live node's record, sorted by id.
pub(super) async fn read(node: &RedisNode) -> Result<Vec<NodeRecord>, ClusterError> {
    let ids: Vec<String> = node
        .commands
        .run(async |connection| connection.zrange(node.keys.nodes(), 0, -1).await)
        .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let hashes: Vec<HashMap<String, String>> = node
        .commands
        .run(async |connection| {
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.hgetall(node.keys.node(id));
            }
            pipe.query_async(connection).await
        })
        .await?;
    let mut records: Vec<NodeRecord> = ids
        .into_iter()
        .zip(hashes)
        .filter_map(|(id, hash)| record(id, hash))
        .collect();
    records.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(records)
}

/// A node's record from its hash; `None` when the hash is gone (expired).
/// Fields a node of an older build did not write read as their defaults.
fn record(id: String, mut hash: HashMap<String, String>) -> Option<NodeRecord> {
    if hash.is_empty() {
        return None;
    }
    let number = |text: Option<String>| text.and_then(|t| t.parse().ok()).unwrap_or_default();
    Some(NodeRecord {
        id,
        address: hash.remove("address").unwrap_or_default(),
        group: hash.remove("group").unwrap_or_else(|| "default".into()),
        state: hash
            .remove("state")
            .unwrap_or_else(|| NodeState::Running.as_str().into()),
        started_at: number(hash.remove("started_at")),
        heartbeat: number(hash.remove("heartbeat")),
        stats: hash.remove("stats"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_record_is_left_out_and_old_ones_read_with_defaults() {
        assert_eq!(record("gone".into(), HashMap::new()), None);
        let old: HashMap<String, String> = [
            ("address", "http://a:3000"),
            ("started_at", "17"),
            ("heartbeat", "42"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let read = record("a".into(), old).unwrap();
        assert_eq!(read.group, "default");
        assert_eq!(read.state, "running");
        assert_eq!((read.started_at, read.heartbeat), (17, 42));
        assert_eq!(read.stats, None);
    }
}
