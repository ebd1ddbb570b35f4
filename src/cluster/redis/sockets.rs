//! The [`SocketRegistry`] of the Redis backend: where every socket is, its
//! session and its rooms, as Redis records them.
//!
//! Owns the commands that record a socket (`conn:{sid}`, `node-sockets:{id}`,
//! `ns-sockets:{ns}`, `room-sockets:{ns}:{room}`), queued to the writer, the
//! node's interest in the namespaces and rooms its sockets are in (counted by
//! `super::subscriber`), and reading the records back (`fetch_sockets`). Does
//! not own re-registering every socket after Redis lost them (see
//! `super::heartbeat`, which uses [`connect_commands`]).

use std::collections::HashMap;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use redis::AsyncCommands;

use super::{RedisCluster, RedisNode, set_command};
use crate::cluster::keys::Keys;
use crate::cluster::{ClusterError, SocketRecord, SocketRegistry};

/// Commands that record a socket of `node_id`: its hash, and its membership of
/// the node's and the namespace's sets.
pub(super) fn connect_commands(
    keys: &Keys,
    node_id: &str,
    record: &SocketRecord,
) -> [redis::Cmd; 3] {
    let rooms = serde_json::to_string(&record.rooms).unwrap_or_else(|_| "[]".into());
    [
        redis::cmd("HSET")
            .arg(keys.conn(&record.sid))
            .arg("node")
            .arg(node_id)
            .arg("namespace")
            .arg(&record.namespace)
            .arg("session")
            .arg(&record.session_id)
            .arg("rooms")
            .arg(rooms)
            .arg("connected_at")
            .arg(record.connected_at)
            .to_owned(),
        set_command("SADD", keys.node_sockets(node_id), &record.sid),
        set_command(
            "SADD",
            keys.namespace_sockets(&record.namespace),
            &record.sid,
        ),
    ]
}

/// Commands that forget a socket of `node_id`.
fn disconnect_commands(keys: &Keys, node_id: &str, namespace: &str, sid: &str) -> [redis::Cmd; 3] {
    [
        redis::cmd("DEL").arg(keys.conn(sid)).to_owned(),
        set_command("SREM", keys.node_sockets(node_id), sid),
        set_command("SREM", keys.namespace_sockets(namespace), sid),
    ]
}

/// Commands that record a socket joining (or leaving) a room: the room's set,
/// and the socket's list of its rooms.
fn room_commands(
    keys: &Keys,
    namespace: &str,
    room: &str,
    sid: &str,
    rooms: &[String],
    joined: bool,
) -> [redis::Cmd; 2] {
    let op = if joined { "SADD" } else { "SREM" };
    [
        set_command(op, keys.room_sockets(namespace, room), sid),
        redis::cmd("HSET")
            .arg(keys.conn(sid))
            .arg("rooms")
            .arg(serde_json::to_string(rooms).unwrap_or_else(|_| "[]".into()))
            .to_owned(),
    ]
}

/// A local socket joined (or left) a room: interest, the room's set, and the
/// socket's record of its rooms.
fn membership(
    node: &RedisNode,
    namespace: &str,
    room: &str,
    sid: &str,
    rooms: &[String],
    joined: bool,
) {
    node.local_changed();
    node.subscriptions
        .interest(node.keys.room_channel(namespace, room), joined);
    for command in room_commands(&node.keys, namespace, room, sid, rooms, joined) {
        node.writer.command(command);
    }
}

/// A socket record from its `conn:{sid}` hash.
fn record(namespace: &str, sid: String, hash: &HashMap<String, String>) -> SocketRecord {
    SocketRecord {
        namespace: namespace.to_string(),
        sid,
        node_id: hash.get("node").cloned().unwrap_or_default(),
        session_id: hash.get("session").cloned().unwrap_or_default(),
        rooms: hash
            .get("rooms")
            .and_then(|rooms| serde_json::from_str(rooms).ok())
            .unwrap_or_default(),
        connected_at: hash
            .get("connected_at")
            .and_then(|t| t.parse().ok())
            .unwrap_or_default(),
    }
}

impl SocketRegistry for RedisCluster {
    fn socket_connected(&self, record: SocketRecord) {
        let node = &self.node;
        node.local_changed();
        node.subscriptions
            .interest(node.keys.namespace_channel(&record.namespace), true);
        for command in connect_commands(&node.keys, &node.id, &record) {
            node.writer.command(command);
        }
    }

    fn socket_disconnected(&self, namespace: &str, sid: &str) {
        let node = &self.node;
        node.local_changed();
        node.subscriptions
            .interest(node.keys.namespace_channel(namespace), false);
        for command in disconnect_commands(&node.keys, &node.id, namespace, sid) {
            node.writer.command(command);
        }
    }

    fn room_joined(&self, namespace: &str, room: &str, sid: &str, rooms: &[String]) {
        membership(&self.node, namespace, room, sid, rooms, true);
    }

    fn room_left(&self, namespace: &str, room: &str, sid: &str, rooms: &[String]) {
        membership(&self.node, namespace, room, sid, rooms, false);
    }

    fn fetch_sockets(
        &self,
        namespace: &str,
        room: Option<&str>,
    ) -> BoxFuture<'static, Result<Vec<SocketRecord>, ClusterError>> {
        let node = self.node.clone();
        let namespace = namespace.to_string();
        let set = match room {
            Some(room) => node.keys.room_sockets(&namespace, room),
            None => node.keys.namespace_sockets(&namespace),
        };
        async move {
            let (sids, hashes) = node
                .commands
                .run(async |connection| {
                    let sids: Vec<String> = connection.smembers(&set).await?;
                    let mut pipe = redis::pipe();
                    for sid in &sids {
                        pipe.hgetall(node.keys.conn(sid));
                    }
                    let hashes: Vec<HashMap<String, String>> = pipe.query_async(connection).await?;
                    Ok((sids, hashes))
                })
                .await?;
            Ok(sids
                .into_iter()
                .zip(hashes)
                // A record without its node is a leftover, not a socket.
                .filter(|(_, hash)| hash.contains_key("node"))
                .map(|(sid, hash)| record(&namespace, sid, &hash))
                .collect())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::redis::words;

    fn socket() -> SocketRecord {
        SocketRecord {
            namespace: "/chat".into(),
            sid: "s1".into(),
            node_id: "n1".into(),
            session_id: "sess".into(),
            rooms: vec!["s1".into(), "lobby".into()],
            connected_at: 42,
        }
    }

    #[test]
    fn a_connected_socket_is_recorded_under_its_keys() {
        let keys = Keys::new("rain:");
        let commands: Vec<Vec<String>> = connect_commands(&keys, "n1", &socket())
            .iter()
            .map(words)
            .collect();
        assert_eq!(
            commands,
            [
                vec![
                    "HSET",
                    "rain:conn:s1",
                    "node",
                    "n1",
                    "namespace",
                    "/chat",
                    "session",
                    "sess",
                    "rooms",
                    r#"["s1","lobby"]"#,
                    "connected_at",
                    "42",
                ],
                vec!["SADD", "rain:node-sockets:n1", "s1"],
                vec!["SADD", "rain:ns-sockets:/chat", "s1"],
            ]
        );
    }

    #[test]
    fn a_disconnected_socket_is_forgotten_under_the_same_keys() {
        let keys = Keys::new("rain:");
        let commands: Vec<Vec<String>> = disconnect_commands(&keys, "n1", "/chat", "s1")
            .iter()
            .map(words)
            .collect();
        assert_eq!(
            commands,
            [
                vec!["DEL", "rain:conn:s1"],
                vec!["SREM", "rain:node-sockets:n1", "s1"],
                vec!["SREM", "rain:ns-sockets:/chat", "s1"],
            ]
        );
    }

    #[test]
    fn joining_and_leaving_a_room_update_its_set_and_the_socket_s_rooms() {
        let keys = Keys::new("rain:");
        let rooms = vec!["s1".to_string(), "lobby".to_string()];
        let joined: Vec<Vec<String>> = room_commands(&keys, "/", "lobby", "s1", &rooms, true)
            .iter()
            .map(words)
            .collect();
        assert_eq!(
            joined,
            [
                vec!["SADD", "rain:room-sockets:/:lobby", "s1"],
                vec!["HSET", "rain:conn:s1", "rooms", r#"["s1","lobby"]"#],
            ]
        );
        let left = room_commands(&keys, "/", "lobby", "s1", &rooms[..1], false);
        assert_eq!(words(&left[0]), ["SREM", "rain:room-sockets:/:lobby", "s1"]);
        assert_eq!(
            words(&left[1]),
            ["HSET", "rain:conn:s1", "rooms", r#"["s1"]"#]
        );
    }

    #[test]
    fn a_record_reads_back_what_was_written() {
        let written = socket();
        let hash: HashMap<String, String> = [
            ("node", "n1"),
            ("namespace", "/chat"),
            ("session", "sess"),
            ("rooms", r#"["s1","lobby"]"#),
            ("connected_at", "42"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(record("/chat", "s1".into(), &hash), written);
        let damaged: HashMap<String, String> =
            [("rooms".to_string(), "not json".to_string())].into();
        let read = record("/chat", "s1".into(), &damaged);
        assert!(read.rooms.is_empty() && read.node_id.is_empty() && read.connected_at == 0);
    }
}
