//! The Redis backend: shared state in Redis, messages over Redis pub/sub.
//!
//! Owns the node's handle ([`RedisCluster`]), the state its tasks and trait
//! impls share (`RedisNode`), its [`Membership`], and `flush`. Four tasks per
//! node, each in a module of its own:
//! - the `writer`: every state change and PUBLISH, queued in order (bounded)
//!   and sent as pipelines, so traffic never waits on a round trip;
//! - the `subscriber`: one dedicated pub/sub connection that follows the
//!   node's interest (its node channel, `control`, and the room and namespace
//!   channels it has local members of), reconnects by itself and resubscribes
//!   everything;
//! - the `heartbeat`, on a connection of its own: refreshes the node's
//!   registration (liveness is the record's expiry, on Redis's clock),
//!   purges an earlier incarnation of the same node id before this one writes
//!   anything, reconciles the node's state in Redis with what it holds after a
//!   lost write or when Redis lost it, and purges dead nodes in batches
//!   (`redis/beat.lua`, `reconcile_sockets.lua`, `purge_node.lua`);
//! - the `director`: emits and operations addressed to one socket, in order:
//!   it finds the owning node (cached) and publishes on that node's channel.
//!
//! The rest, by responsibility: what a received message does (`inbox`);
//! broadcasts and topics (`broker`), broadcasts with acks (`acks`); the
//! socket records (`sockets`), the service registry (`services`), instances
//! and the desired state (`deployments`), sessions
//! and lists (`store`); the client all connections are made from (TLS, CA
//! file, credentials) and the check at start (`connect`); other nodes'
//! advertised addresses, cached (`addresses`); every live node's record
//! read back (`nodes`); the deployment's summary from `INFO` and a bounded
//! `SCAN` (`info`). Every command goes through
//! `commands::Commands::run`, on one of two multiplexed connections: one for
//! traffic, one for the heartbeat.
//!
//! Does not own local delivery (received messages go to the [`LocalNode`]),
//! key and channel names ([`super::keys`]) nor the message format
//! ([`super::wire`]).

mod acks;
mod addresses;
mod broker;
mod commands;
mod connect;
mod deployments;
mod director;
mod heartbeat;
mod inbox;
mod info;
mod nodes;
mod reaper;
mod reconcile;
mod services;
mod sockets;
mod store;
mod subscriber;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use parking_lot::RwLock;

use super::keys::Keys;
use super::wire;
use super::{
    BackendInfo, ClusterError, LocalNode, Membership, MessageHandler, NodeRecord, NodeState,
    SessionLimits, StatsSource,
};
use crate::config::Settings;
use acks::Acks;
use addresses::Addresses;
use commands::Commands;
use director::Director;
use heartbeat::Heartbeat;
use services::ServiceState;
use subscriber::Subscriptions;
use writer::Writer;

/// How long one Redis operation may take before it counts as failed.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// The Redis-backed cluster.
pub struct RedisCluster {
    node: Arc<RedisNode>,
}

/// This node as the Redis backend sees it: its identity, its connections, and
/// the state of each task. Shared by the tasks (the writer and the director
/// hold it; the subscriber and the heartbeat hold a weak reference) and the
/// trait impls.
struct RedisNode {
    id: String,
    keys: Keys,
    /// Commands of client traffic (not pub/sub).
    commands: Commands,
    /// Commands of the heartbeat (registration, reaping), on a connection of
    /// their own.
    beat_commands: Commands,
    /// The sliding TTL of a session.
    session_ttl: Duration,
    /// How large a session may grow.
    session_limits: SessionLimits,
    local: OnceLock<Weak<dyn LocalNode>>,
    writer: Writer,
    subscriptions: Subscriptions,
    director: Director,
    heartbeat: Heartbeat,
    services: ServiceState,
    acks: Acks,
    /// Handlers of upper layers' messages, by topic.
    topics: RwLock<HashMap<String, Arc<dyn MessageHandler>>>,
    /// Counts changes to local sockets and rooms, so a reconcile can tell
    /// that one raced with it.
    local_changes: AtomicU64,
    /// Other nodes' advertised addresses, cached.
    addresses: Addresses,
}

impl RedisCluster {
    /// Connects (lazily: a Redis that is down now is retried in the background)
    /// and starts the node's cluster tasks.
    pub fn start(url: &str, settings: &Settings) -> Result<RedisCluster, ClusterError> {
        let client = connect::client(url, settings.redis_ca_file.as_deref())?;
        Ok(RedisCluster::start_with(client, settings))
    }

    /// [`Self::start`] after one connection that finds a mistake in the
    /// settings (see [`super::connect`]).
    pub async fn connect(url: &str, settings: &Settings) -> Result<RedisCluster, ClusterError> {
        let client = connect::client(url, settings.redis_ca_file.as_deref())?;
        connect::check(&client, url, &Keys::new(settings.key_prefix.clone())).await?;
        Ok(RedisCluster::start_with(client, settings))
    }

    /// Starts the node's tasks; every connection is made from `client`, so
    /// they all share its TLS and credentials.
    fn start_with(client: redis::Client, settings: &Settings) -> RedisCluster {
        let commands = Commands::new(client.clone());
        let beat_commands = Commands::new(client.clone());
        let (writer, write_queue) = Writer::new();
        let (director, directed_queue) = Director::new();
        let node = Arc::new(RedisNode {
            id: settings.node_id.clone(),
            keys: Keys::new(settings.key_prefix.clone()),
            commands,
            beat_commands,
            session_ttl: settings.session_ttl(),
            session_limits: SessionLimits::from_settings(settings),
            local: OnceLock::new(),
            writer,
            subscriptions: Subscriptions::new(client),
            director,
            heartbeat: Heartbeat::new(settings),
            services: ServiceState::new(),
            acks: Acks::default(),
            topics: RwLock::new(HashMap::new()),
            local_changes: AtomicU64::new(0),
            addresses: Addresses::default(),
        });
        tokio::spawn(writer::run(node.clone(), write_queue));
        tokio::spawn(director::run(node.clone(), directed_queue));
        tokio::spawn(subscriber::run(Arc::downgrade(&node)));
        tokio::spawn(heartbeat::run(Arc::downgrade(&node)));
        RedisCluster { node }
    }
}

impl RedisNode {
    fn local(&self) -> Option<Arc<dyn LocalNode>> {
        self.local.get().and_then(Weak::upgrade)
    }

    /// A local socket or room changed: counted before its writes are queued.
    fn local_changed(&self) {
        self.local_changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the pub/sub connection is up and the last heartbeat succeeded.
    fn ready(&self) -> bool {
        self.subscriptions.is_up() && self.heartbeat.is_ok()
    }
}

impl Membership for RedisCluster {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn node_id(&self) -> &str {
        &self.node.id
    }

    fn is_ready(&self) -> bool {
        self.node.ready()
    }

    fn attach(&self, local: Weak<dyn LocalNode>) {
        let _ = self.node.local.set(local);
    }

    fn set_address(&self, address: String) {
        self.node.heartbeat.set_address(address);
    }

    fn node_address(&self, node_id: &str) -> BoxFuture<'static, Option<String>> {
        let node = self.node.clone();
        let node_id = node_id.to_string();
        async move { addresses::node_address(&node, &node_id).await }.boxed()
    }

    fn flush(&self) -> BoxFuture<'static, Result<(), ClusterError>> {
        flush(self.node.clone()).boxed()
    }

    fn drain(&self) -> BoxFuture<'static, Result<(), ClusterError>> {
        self.node.heartbeat.set_state(NodeState::Draining);
        services::drain(self.node.clone()).boxed()
    }

    fn backend_info(&self) -> BoxFuture<'static, Result<BackendInfo, ClusterError>> {
        info::backend_info(self.node.clone()).boxed()
    }

    fn rejoin(&self) -> BoxFuture<'static, Result<(), ClusterError>> {
        services::rejoin(self.node.clone()).boxed()
    }

    fn reset(&self) -> BoxFuture<'static, Result<(), ClusterError>> {
        reset(self.node.clone()).boxed()
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        reaper::deregister(self.node.clone()).boxed()
    }

    fn set_state(&self, state: NodeState) {
        self.node.heartbeat.set_state(state);
    }

    fn confirm_state(&self) -> BoxFuture<'static, Result<(), ClusterError>> {
        let node = self.node.clone();
        async move {
            let state = node.heartbeat.state();
            let script = redis::Script::new(
                "if redis.call('EXISTS', KEYS[1]) == 1 then \
                 redis.call('HSET', KEYS[1], 'state', ARGV[1]) end return 0",
            );
            let mut invocation = script.key(node.keys.node(&node.id));
            invocation.arg(state.as_str());
            node.commands
                .run(async |connection| invocation.invoke_async::<()>(connection).await)
                .await
        }
        .boxed()
    }

    fn set_stats_source(&self, source: StatsSource) {
        self.node.heartbeat.set_stats_source(source);
    }

    fn nodes(&self) -> BoxFuture<'static, Result<Vec<NodeRecord>, ClusterError>> {
        let node = self.node.clone();
        async move { nodes::read(&node).await }.boxed()
    }
}

/// Resolves once every write queued so far is sent and every subscription
/// change made (bounded by the operation timeout), to an error when any of it
/// was lost.
async fn flush(node: Arc<RedisNode>) -> Result<(), ClusterError> {
    if !node.ready() {
        return Err(ClusterError::NotReady);
    }
    let writes_done = node.writer.barrier().ok_or(ClusterError::Lost)?;
    let subscriptions_done = node.subscriptions.barrier();
    let done = tokio::time::timeout(OP_TIMEOUT, async {
        (writes_done.await, subscriptions_done.await)
    })
    .await;
    match done {
        Ok((Ok(true), Ok(()))) => Ok(()),
        Ok(_) => Err(ClusterError::Lost),
        Err(_) => Err(ClusterError::Timeout),
    }
}

/// Reconciles a reset may try before it gives up on a quiet one (local
/// changes racing with each).
const RESET_RECONCILES: usize = 3;

/// Rebuilds what this node holds of the cluster from its own state (see
/// [`Membership::reset`]): caches dropped and read again, every channel
/// subscribed anew, its sockets, rooms and services written again.
async fn reset(node: Arc<RedisNode>) -> Result<(), ClusterError> {
    tracing::info!("reset: dropping caches and subscriptions, writing this node's state again");
    node.addresses.forget_all();
    node.director.forget_all();
    node.services.forget_view(&node.id);
    let resubscribed = node.subscriptions.resubscribe();
    match tokio::time::timeout(OP_TIMEOUT, resubscribed).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err(ClusterError::Lost),
        Err(_) => return Err(ClusterError::Timeout),
    }
    let mut quiet = false;
    for _ in 0..RESET_RECONCILES {
        if reconcile::reconcile(&node).await? {
            quiet = true;
            break;
        }
    }
    if !quiet {
        // The next beats reconcile until one is quiet.
        node.heartbeat.owe_repairs();
    }
    services::refresh(&node).await?;
    // The others read the registry again too: this node's services are in it.
    let changed = wire::Message::ServicesChanged {
        node: node.id.clone(),
    };
    node.writer
        .publish(node.keys.control_channel(), &changed, "node");
    node.heartbeat.wake();
    flush(node).await?;
    tracing::info!("reset done");
    Ok(())
}

/// `SADD` or `SREM` of one member.
fn set_command(
    op: &str,
    key: impl redis::ToRedisArgs,
    member: impl redis::ToRedisArgs,
) -> redis::Cmd {
    redis::cmd(op).arg(key).arg(member).to_owned()
}

/// A command's words, for tests of what the node writes where.
#[cfg(test)]
fn words(command: &redis::Cmd) -> Vec<String> {
    command
        .args_iter()
        .map(|arg| match arg {
            redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            redis::Arg::Cursor => "<cursor>".to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_command_names_its_key_and_member() {
        assert_eq!(
            words(&set_command("SADD", "rain:room-sockets:/:lobby", "sid1")),
            ["SADD", "rain:room-sockets:/:lobby", "sid1"]
        );
    }
}
