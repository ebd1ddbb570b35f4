//! The [`Deployments`] of the Redis backend: instances read and changed after
//! they were made, and the operators' desired state (`desired`, one hash).
//!
//! Owns the commands for both. Instances are found through each known node's
//! `node-instances:{id}` set (the nodes of the `nodes` zset), so listing them
//! touches no key outside the node's prefix and never runs a `KEYS`. Does not
//! own what an instance or a desired value means (upper layers), nor how
//! instances are made and kept alive (see `super::services`,
//! `super::heartbeat`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use redis::AsyncCommands;

use super::{RedisCluster, RedisNode};
use crate::cluster::{ClusterError, Deployments, InstanceRecord};

/// Instances' fields are read in pipelines of this many.
const READ_BATCH: usize = 500;

impl Deployments for RedisCluster {
    fn instances(
        &self,
        limit: usize,
    ) -> BoxFuture<'static, Result<(Vec<InstanceRecord>, usize), ClusterError>> {
        let node = self.node.clone();
        async move { instances(&node, limit).await }.boxed()
    }

    fn instance(
        &self,
        id: &str,
    ) -> BoxFuture<'static, Result<Option<InstanceRecord>, ClusterError>> {
        let node = self.node.clone();
        let id = id.to_string();
        async move {
            let fields: BTreeMap<String, String> = node
                .commands
                .run(async |connection| connection.hgetall(node.keys.instance(&id)).await)
                .await?;
            Ok((!fields.is_empty()).then_some(InstanceRecord { id, fields }))
        }
        .boxed()
    }

    fn update_instance(
        &self,
        id: &str,
        fields: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<bool, ClusterError>> {
        let node = self.node.clone();
        let id = id.to_string();
        async move {
            let key = node.keys.instance(&id);
            let ttl = node.heartbeat.instance_ttl_ms();
            // Checked and written in one step: an instance that expired or
            // was stopped meanwhile is not brought back as a stub.
            let script = redis::Script::new(
                "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end \
                 if #ARGV > 1 then redis.call('HSET', KEYS[1], unpack(ARGV, 2)) end \
                 redis.call('PEXPIRE', KEYS[1], ARGV[1]) return 1",
            );
            let mut invocation = script.key(&key);
            invocation.arg(ttl);
            for (field, value) in &fields {
                invocation.arg(field).arg(value);
            }
            let updated: i64 = node
                .commands
                .run(async |connection| invocation.invoke_async(connection).await)
                .await?;
            Ok(updated == 1)
        }
        .boxed()
    }

    fn remove_instance(&self, id: &str) -> BoxFuture<'static, Result<bool, ClusterError>> {
        let node = self.node.clone();
        let id = id.to_string();
        async move {
            let key = node.keys.instance(&id);
            let owner: Option<String> = node
                .commands
                .run(async |connection| connection.hget(&key, "node").await)
                .await?;
            let Some(owner) = owner else {
                return Ok(false);
            };
            let removed: (i64, i64) = node
                .commands
                .run(async |connection| {
                    redis::pipe()
                        .atomic()
                        .del(&key)
                        .srem(node.keys.node_instances(&owner), &id)
                        .query_async(connection)
                        .await
                })
                .await?;
            Ok(removed.0 == 1)
        }
        .boxed()
    }

    fn desired(&self) -> BoxFuture<'static, Result<HashMap<String, String>, ClusterError>> {
        let node = self.node.clone();
        async move {
            node.commands
                .run(async |connection| connection.hgetall(node.keys.desired()).await)
                .await
        }
        .boxed()
    }

    fn set_desired(
        &self,
        changes: Vec<(String, Option<String>)>,
    ) -> BoxFuture<'static, Result<(), ClusterError>> {
        let node = self.node.clone();
        async move {
            let key = node.keys.desired();
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (name, value) in &changes {
                match value {
                    Some(value) => pipe.hset(&key, name, value).ignore(),
                    None => pipe.hdel(&key, name).ignore(),
                };
            }
            node.commands
                .run(async |connection| pipe.query_async::<()>(connection).await)
                .await
        }
        .boxed()
    }
}

/// Every live instance of every known node, sorted by id, at most `limit`.
async fn instances(
    node: &Arc<RedisNode>,
    limit: usize,
) -> Result<(Vec<InstanceRecord>, usize), ClusterError> {
    let nodes: Vec<String> = node
        .commands
        .run(async |connection| connection.zrange(node.keys.nodes(), 0, -1).await)
        .await?;
    if nodes.is_empty() {
        return Ok((Vec::new(), 0));
    }
    // One round trip for every node's set.
    let mut pipe = redis::pipe();
    for owner in &nodes {
        pipe.smembers(node.keys.node_instances(owner));
    }
    let owned: Vec<Vec<String>> = node
        .commands
        .run(async |connection| pipe.query_async(connection).await)
        .await?;
    let mut ids: Vec<String> = owned.into_iter().flatten().collect();
    ids.sort();
    ids.dedup();
    let mut found = Vec::new();
    let mut total = 0;
    for batch in ids.chunks(READ_BATCH) {
        let mut pipe = redis::pipe();
        for id in batch {
            pipe.hgetall(node.keys.instance(id));
        }
        let answers: Vec<BTreeMap<String, String>> = node
            .commands
            .run(async |connection| pipe.query_async(connection).await)
            .await?;
        for (id, fields) in batch.iter().zip(answers) {
            // Expired, but not yet out of its node's set.
            if fields.is_empty() {
                continue;
            }
            total += 1;
            if found.len() < limit {
                found.push(InstanceRecord {
                    id: id.clone(),
                    fields,
                });
            }
        }
    }
    Ok((found, total))
}
