//! The [`SessionStore`] and [`ListStore`] of the Redis backend: clients'
//! session data and upper layers' capped lists.
//!
//! Owns their layout: a session is a hash (`session:{id}`) whose TTL every
//! read, write and touch extends, written by `redis/session_store.lua`, which
//! refuses a write that would take it over `SESSION_MAX_BYTES`; a list (`list:{name}`) is kept newest first,
//! trimmed and given its TTL on every push, and read back oldest first. Reads
//! and writes that return a result run on a pooled connection; a touch is
//! queued to the writer. Does not own what sessions and lists hold.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use redis::AsyncCommands;

use super::RedisCluster;
use crate::cluster::{ClusterError, ListStore, SessionStore, SessionWriteError};

/// Checks a session's size and writes its fields in one step.
static SESSION_STORE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(include_str!("../../../redis/session_store.lua"))
});

impl SessionStore for RedisCluster {
    fn session_load(
        &self,
        id: &str,
    ) -> BoxFuture<'static, Result<HashMap<String, String>, ClusterError>> {
        let node = self.node.clone();
        let key = node.keys.session(id);
        async move {
            node.commands
                .run(async |connection| {
                    let (fields,): (HashMap<String, String>,) = redis::pipe()
                        .hgetall(&key)
                        .pexpire(&key, node.session_ttl.as_millis() as i64)
                        .ignore()
                        .query_async(connection)
                        .await?;
                    Ok(fields)
                })
                .await
        }
        .boxed()
    }

    fn session_store(
        &self,
        id: &str,
        fields: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<(), SessionWriteError>> {
        let node = self.node.clone();
        let key = node.keys.session(id);
        async move {
            if fields.is_empty() {
                return Ok(());
            }
            let limits = node.session_limits;
            limits.check_values(&fields)?;
            let stored: i64 = node
                .commands
                .run(async |connection| {
                    let mut call = SESSION_STORE.key(&key);
                    call.arg(node.session_ttl.as_millis() as u64)
                        .arg(limits.max_bytes);
                    for (field, value) in &fields {
                        call.arg(field).arg(value);
                    }
                    call.invoke_async(connection).await
                })
                .await?;
            if stored == 0 {
                return Err(SessionWriteError::TooLarge {
                    max: limits.max_bytes,
                });
            }
            Ok(())
        }
        .boxed()
    }

    fn session_touch(&self, id: &str) {
        let node = &self.node;
        node.writer.command(
            redis::cmd("PEXPIRE")
                .arg(node.keys.session(id))
                .arg(node.session_ttl.as_millis() as u64)
                .to_owned(),
        );
    }
}

impl ListStore for RedisCluster {
    fn list_push(
        &self,
        name: &str,
        entry: String,
        keep: usize,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<(), ClusterError>> {
        let node = self.node.clone();
        let key = node.keys.list(name);
        async move {
            node.commands
                .run(async |connection| {
                    redis::pipe()
                        .lpush(&key, entry)
                        .ignore()
                        .ltrim(&key, 0, keep as isize - 1)
                        .ignore()
                        .pexpire(&key, ttl.as_millis() as i64)
                        .ignore()
                        .query_async::<()>(connection)
                        .await
                })
                .await
        }
        .boxed()
    }

    fn list_read(&self, name: &str) -> BoxFuture<'static, Result<Vec<String>, ClusterError>> {
        let node = self.node.clone();
        let key = node.keys.list(name);
        async move {
            let mut entries: Vec<String> = node
                .commands
                .run(async |connection| connection.lrange(&key, 0, -1).await)
                .await?;
            entries.reverse();
            Ok(entries)
        }
        .boxed()
    }
}
