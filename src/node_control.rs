//! An operator's control of this node while it runs: unregister it (the Cloud
//! API's `DELETE /rainservers/{id}`), register it again (`POST /rainservers`)
//! and reset it (`PUT /rainservers/{id}`).
//!
//! Owns [`NodeControl`]: the order of each operation, one at a time, and how
//! they meet a signal. Unregistering is the drain of a node told to stop
//! ([`crate::drain::leave`]: not ready, handshakes refused after
//! `DRAIN_DELAY_MS`, out of every host set, clients and websocket relays
//! closed in batches), but the node stays up, for inspection: its heartbeat
//! keeps its record, nothing puts it back into a host set, and it still
//! forwards requests of sessions owned by other nodes. Registering undoes
//! that; a node told to stop (SIGTERM) is never put back, and its drain runs
//! to the exit whatever was asked here. A reset has the cluster backend drop
//! its caches and subscriptions and rebuild them from the node's own state
//! ([`Membership::reset`](crate::cluster::Membership::reset)); the node's
//! sockets and rooms are untouched.
//!
//! Does not own the drain's steps (see `crate::drain`), the cluster's side of
//! each operation (see `crate::cluster`), nor the HTTP routes (see
//! `crate::api`).

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::time::Instant;

use crate::cluster::{Cluster, ClusterError, NodeState};
use crate::drain::{self, DrainPlan, DrainState};
use crate::engine::Engine;

/// Why an operation on this node was not done.
#[derive(Debug, Error)]
pub enum NodeControlError {
    /// The node was told to stop: it drains to its exit, whatever is asked.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The cluster did not confirm its part (Redis away or lost a write); the
    /// node repairs its state in the background.
    #[error("the cluster did not confirm it: {0}")]
    Cluster(#[from] ClusterError),
}

/// Unregisters, registers and resets this node. Cheap to clone; every clone
/// controls the same node, one operation at a time.
#[derive(Clone)]
pub struct NodeControl(Arc<Inner>);

struct Inner {
    engine: Engine,
    cluster: Arc<dyn Cluster>,
    state: DrainState,
    plan: DrainPlan,
    /// How long an unregister may take (`SHUTDOWN_TIMEOUT_MS`, as a drain).
    timeout: Duration,
    /// Held for the length of an operation.
    operation: tokio::sync::Mutex<()>,
}

impl NodeControl {
    /// Control of the node serving `engine` in `cluster`, whose drain is
    /// `state`.
    pub fn new(
        engine: Engine,
        cluster: Arc<dyn Cluster>,
        state: DrainState,
        plan: DrainPlan,
        timeout: Duration,
    ) -> NodeControl {
        NodeControl(Arc::new(Inner {
            engine,
            cluster,
            state,
            plan,
            timeout,
            operation: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn node_id(&self) -> &str {
        self.0.cluster.node_id()
    }

    /// Where the node is: running, unregistered (also while an unregister
    /// is under way) or draining (told to stop).
    pub fn state(&self) -> NodeState {
        if self.0.state.is_exiting() {
            NodeState::Draining
        } else if self.0.state.is_draining() {
            NodeState::Unregistered
        } else {
            NodeState::Running
        }
    }

    /// Unregisters the node (see the module's doc); resolves once its clients
    /// are gone, within `SHUTDOWN_TIMEOUT_MS`. Done at once when it is
    /// unregistered already.
    pub async fn unregister(&self) -> Result<(), NodeControlError> {
        let inner = &self.0;
        let _one = inner.operation.lock().await;
        if inner.state.is_exiting() {
            return Err(NodeControlError::ShuttingDown);
        }
        if inner.state.refuses_handshakes() {
            return Ok(());
        }
        tracing::info!("unregistering this node: it stays up, out of rotation");
        let deadline = Instant::now() + inner.timeout;
        let owing = drain::leave(
            &inner.state,
            inner.plan,
            &inner.engine,
            &inner.cluster,
            deadline,
        )
        .await;
        // Its record says so from the next beat on (woken now), not draining.
        inner.cluster.set_state(NodeState::Unregistered);
        inner.cluster.confirm_state().await?;
        if owing > 0 {
            tracing::warn!(
                closed_owing_replies = owing,
                "unregistering: clients were closed while owed an answer"
            );
        }
        // Whether leaving the host sets took effect (`leave` only logs it);
        // bounded by the backend's operation timeout.
        inner.cluster.flush().await?;
        tracing::info!("unregistered");
        Ok(())
    }

    /// Registers an unregistered node again: back in its host sets, ready,
    /// new handshakes accepted. Done at once when it is not unregistered.
    /// When the cluster does not confirm the host sets, the node serves
    /// anyway (its heartbeat announces its services again) and says so.
    pub async fn register(&self) -> Result<(), NodeControlError> {
        let inner = &self.0;
        let _one = inner.operation.lock().await;
        if inner.state.is_exiting() {
            return Err(NodeControlError::ShuttingDown);
        }
        if !inner.state.is_draining() {
            return Ok(());
        }
        let rejoined = inner.cluster.rejoin().await;
        // A signal that came meanwhile drains the node for good: its drain
        // left the host sets after it was marked, so before or after this
        // rejoin; leaving again settles both cases.
        if !inner.state.resume() {
            let _ = inner.cluster.drain().await;
            return Err(NodeControlError::ShuttingDown);
        }
        inner.cluster.set_state(NodeState::Running);
        if let Err(error) = inner.cluster.confirm_state().await {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                "registered again, but the record says so only from the next beat"
            );
        }
        tracing::info!("registered again: ready, in the host sets");
        rejoined.map_err(NodeControlError::from)
    }

    /// Resets the node's view of the cluster (see the module's doc);
    /// resolves once the cluster has it all again.
    pub async fn reset(&self) -> Result<(), NodeControlError> {
        let inner = &self.0;
        let _one = inner.operation.lock().await;
        if inner.state.is_exiting() {
            return Err(NodeControlError::ShuttingDown);
        }
        inner.cluster.reset().await?;
        Ok(())
    }
}
