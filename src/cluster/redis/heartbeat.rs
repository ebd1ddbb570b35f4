//! The heartbeat: this node's registration, the repair of its state in Redis,
//! the reaping of dead nodes, and deregistration.
//!
//! Owns the registration's state ([`Heartbeat`]: period, TTL, this
//! incarnation's epoch, whether the last beat succeeded, repairs owed) and the
//! task ([`run`]) that, every period or when woken, on a connection of its own
//! (client traffic cannot delay it):
//! - beats (`redis/beat.lua`): refreshes `node:{id}`, whose expiry on Redis's
//!   clock is the node's liveness, so no node compares clocks with another,
//!   and records in it the node's group, state and statistics (a state change
//!   wakes the task, so it is recorded at once);
//! - purges the state of an earlier incarnation of the same node id (a node
//!   restarted within its TTL inherits none of its sockets) before this one
//!   writes anything: the writer waits for the first beat;
//! - reconciles: after a lost write (a failed pipeline, a full queue) or when
//!   Redis lost the node's record (restart, or a purge while this node was
//!   stopped), makes Redis hold exactly the sockets and rooms the node holds
//!   (`redis/reconcile_sockets.lua`), twice, since a write that timed out here
//!   may still be executed by Redis later;
//! - reaps nodes whose record expired, `PURGE_BATCH` sockets per script call
//!   (`redis/purge_node.lua`, which re-checks in every call that the node is
//!   still dead with the same epoch), and announces each on `control`;
//! - reads the service registry again and keeps its rendered instances alive.
//!
//! Does not own how a reconcile or a purge is done (see `super::reconcile`,
//! `super::reaper`, which also deregisters on shutdown), what the local state
//! is (the [`LocalNode`](crate::cluster::LocalNode) says) nor the commands that
//! record sockets and services as they change (see `super::sockets`,
//! `super::services`).

use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use super::reaper::{purge, reap};
use super::reconcile::reconcile;
use super::{RedisNode, services};
use crate::cluster::keys::SCHEMA;
use crate::cluster::{ClusterError, NodeState, StatsSource, now_millis};
use crate::config::Settings;

const BEAT: &str = include_str!("../../../redis/beat.lua");
const PURGE_NODE: &str = include_str!("../../../redis/purge_node.lua");
const REFRESH_INSTANCES: &str = include_str!("../../../redis/refresh_instances.lua");
/// Reconcile passes owed after a lost write: the second catches a write that
/// timed out here but that Redis executed after the first.
const REPAIR_PASSES: u32 = 2;

/// The node's registration in Redis.
pub(super) struct Heartbeat {
    period: Duration,
    /// How long a node's registration lives without a beat.
    ttl: Duration,
    /// Sockets of a dead node purged per script call.
    pub(super) purge_batch: usize,
    /// How long a rendered instance lives once its socket left.
    instance_ttl: Duration,
    /// Milliseconds since the Unix epoch.
    started_at: u64,
    /// This incarnation of the node id: a restart is a new epoch.
    pub(super) epoch: String,
    /// The address this node serves on.
    address: Mutex<String>,
    /// Its `NODE_GROUP`.
    group: String,
    /// Where the node is in its life.
    state: Mutex<NodeState>,
    /// What writes the record's `stats` field on each beat.
    stats: Mutex<Option<StatsSource>>,
    /// Whether the last beat succeeded (and no write failed since).
    ok: AtomicBool,
    /// Reconcile passes still owed.
    repairs: AtomicU32,
    /// Set once the first beat registered this incarnation: the writer sends
    /// nothing before, so no write lands among an earlier incarnation's state.
    registered: watch::Sender<bool>,
    /// Deregistered: beat no more.
    pub(super) leaving: AtomicBool,
    /// Wakes the task early.
    wake: Notify,
    beat: redis::Script,
    pub(super) purge: redis::Script,
    refresh_instances: redis::Script,
}

/// What a beat found.
enum Beat {
    /// Registered; `existed` is false when Redis had lost the record.
    Registered { existed: bool },
    /// An earlier incarnation of this node id still has state in Redis.
    Replaced { old_epoch: String },
}

impl Heartbeat {
    pub(super) fn new(settings: &Settings) -> Heartbeat {
        let started_at = now_millis();
        Heartbeat {
            period: settings.heartbeat(),
            ttl: settings.node_ttl(),
            purge_batch: settings.purge_batch.max(1),
            instance_ttl: settings.instance_ttl(),
            started_at,
            epoch: format!("{started_at}-{:08x}", rand::random::<u32>()),
            address: Mutex::new(String::new()),
            group: settings.node_group.clone(),
            state: Mutex::new(NodeState::Running),
            stats: Mutex::new(None),
            ok: AtomicBool::new(false),
            repairs: AtomicU32::new(0),
            registered: watch::Sender::new(false),
            leaving: AtomicBool::new(false),
            wake: Notify::new(),
            beat: redis::Script::new(BEAT),
            purge: redis::Script::new(PURGE_NODE),
            refresh_instances: redis::Script::new(REFRESH_INSTANCES),
        }
    }

    pub(super) fn instance_ttl_ms(&self) -> u64 {
        self.instance_ttl.as_millis() as u64
    }

    pub(super) fn is_ok(&self) -> bool {
        self.ok.load(Ordering::Acquire)
    }

    /// A write was lost: the node is not ready until a beat succeeds, and its
    /// state in Redis is reconciled.
    pub(super) fn write_lost(&self) {
        self.ok.store(false, Ordering::Release);
        self.repairs.store(REPAIR_PASSES, Ordering::Release);
    }

    /// Reconciles are owed until one is quiet (the node stays ready).
    pub(super) fn owe_repairs(&self) {
        self.repairs.fetch_max(REPAIR_PASSES, Ordering::AcqRel);
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

    /// The node's state changed: recorded at once.
    pub(super) fn set_state(&self, state: NodeState) {
        *self.state.lock() = state;
        self.wake();
    }

    /// The state set last.
    pub(super) fn state(&self) -> NodeState {
        *self.state.lock()
    }

    pub(super) fn set_stats_source(&self, source: StatsSource) {
        *self.stats.lock() = Some(source);
    }

    /// Resolves once this incarnation is registered (at once after that).
    pub(super) async fn registered(&self) {
        let mut registered = self.registered.subscribe();
        let _ = registered.wait_for(|registered| *registered).await;
    }
}

/// Beats, repairs, reaps, every period or when woken, until the node is gone.
pub(super) async fn run(weak: Weak<RedisNode>) {
    loop {
        let Some(node) = weak.upgrade() else { return };
        let heartbeat = &node.heartbeat;
        if heartbeat.leaving.load(Ordering::Acquire) {
            return;
        }
        let ok = match register(&node).await {
            Ok(()) => true,
            Err(error) => {
                // Timeouts are not logged (Redis away is reported once by the
                // writer); the node is marked not ready all the same.
                if !matches!(error, ClusterError::Timeout) && heartbeat.is_ok() {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "Redis heartbeat failed"
                    );
                }
                false
            }
        };
        heartbeat.ok.store(ok, Ordering::Release);
        if ok {
            let chores = [
                ("could not purge dead nodes", reap(&node).await),
                (
                    "could not read the service registry",
                    services::refresh(&node).await,
                ),
                (
                    "could not refresh rendered instances",
                    refresh_instances(&node).await,
                ),
            ];
            for (what, outcome) in chores {
                if let Err(error) = outcome
                    && !matches!(error, ClusterError::Timeout)
                {
                    tracing::warn!(error = &error as &dyn std::error::Error, "{what}");
                }
            }
        }
        // Beat again after the period, or at once when woken.
        let _ = tokio::time::timeout(heartbeat.period, heartbeat.wake.notified()).await;
    }
}

/// One beat, with what it calls for: purging an earlier incarnation first,
/// reconciling when writes were lost or Redis lost the record.
async fn register(node: &RedisNode) -> Result<(), ClusterError> {
    let heartbeat = &node.heartbeat;
    if node.writer.take_lost() {
        heartbeat.repairs.store(REPAIR_PASSES, Ordering::Release);
    }
    let existed = match beat(node).await? {
        Beat::Registered { existed } => existed,
        Beat::Replaced { old_epoch } => {
            tracing::warn!(
                epoch = old_epoch,
                "this node id has state of an earlier run in Redis: purging it first"
            );
            purge(node, &node.id, &old_epoch, "known").await?;
            match beat(node).await? {
                Beat::Registered { existed } => existed,
                Beat::Replaced { .. } => return Err(ClusterError::NotReady),
            }
        }
    };
    if !existed {
        if *heartbeat.registered.borrow() {
            tracing::warn!("this node's record was gone from Redis: writing its state again");
        }
        // Once now; a write that was in flight may still land, so the
        // next beat checks again.
        heartbeat.repairs.fetch_max(1, Ordering::AcqRel);
    }
    if heartbeat.repairs.load(Ordering::Acquire) > 0 {
        // A reconcile that raced with local changes, or found no room in the
        // write queue, is owed again at the next beat.
        if reconcile(node).await? {
            let _ = heartbeat
                .repairs
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n.saturating_sub(1))
                });
        }
    }
    heartbeat.registered.send_replace(true);
    Ok(())
}

/// Refreshes the node's record (`redis/beat.lua`).
async fn beat(node: &RedisNode) -> Result<Beat, ClusterError> {
    let heartbeat = &node.heartbeat;
    let sockets = node
        .local()
        .map(|local| local.socket_count())
        .unwrap_or_default();
    let services =
        serde_json::to_string(&node.services.announced_names()).unwrap_or_else(|_| "[]".into());
    let address = heartbeat.address.lock().clone();
    let state = heartbeat.state.lock().as_str();
    // Called outside the lock: a sample takes a little time.
    let source = heartbeat.stats.lock().clone();
    let stats = source.map(|source| source());
    let (status, value): (String, redis::Value) = node
        .beat_commands
        .run(async |connection| {
            let mut invocation = heartbeat.beat.prepare_invoke();
            invocation
                .key(node.keys.node(&node.id))
                .key(node.keys.nodes())
                .key(node.keys.node_epochs())
                .arg(&node.id)
                .arg(&heartbeat.epoch)
                .arg(heartbeat.ttl.as_millis() as u64)
                .arg(SCHEMA)
                .arg("address")
                .arg(address)
                .arg("started_at")
                .arg(heartbeat.started_at)
                .arg("sockets")
                .arg(sockets)
                .arg("services")
                .arg(services)
                .arg("group")
                .arg(&heartbeat.group)
                .arg("state")
                .arg(state);
            if let Some(stats) = &stats {
                invocation.arg("stats").arg(stats);
            }
            invocation.invoke_async(connection).await
        })
        .await?;
    if status == "replaced" {
        let old_epoch: String = redis::from_redis_value(&value)?;
        return Ok(Beat::Replaced { old_epoch });
    }
    let existed: i64 = redis::from_redis_value(&value)?;
    Ok(Beat::Registered {
        existed: existed == 1,
    })
}

/// Keeps the instances this node rendered alive while their sockets are
/// connected (`redis/refresh_instances.lua`).
async fn refresh_instances(node: &RedisNode) -> Result<(), ClusterError> {
    node.beat_commands
        .run(async |connection| {
            node.heartbeat
                .refresh_instances
                .arg(node.keys.prefix())
                .arg(&node.id)
                .arg(node.heartbeat.instance_ttl.as_millis() as u64)
                .invoke_async::<i64>(connection)
                .await
        })
        .await
        .map(drop)
}
