//! The graceful drain of a node that was told to stop (SIGTERM, SIGINT), so
//! a rolling restart loses no client and no routed call.
//!
//! Owns the drain's phases ([`DrainState`]: serving, then not ready, then
//! refusing new Engine.IO handshakes) and its sequence ([`run`]), all within
//! `SHUTDOWN_TIMEOUT_MS` from the signal:
//! 1. at once, `/readyz` answers 503 on both listeners while the node keeps
//!    serving everything for `DRAIN_DELAY_MS`, so the balancer's health
//!    checks (`inter × fall`) take it out of rotation before anything is
//!    refused;
//! 2. then new handshakes get 503 (haproxy.cfg's `retry-on … 503` retries
//!    them on another node;
//!    requests of existing sessions are served as before), and the node
//!    leaves every component host set for good
//!    ([`Membership::drain`](crate::cluster::Membership::drain): no heartbeat,
//!    reconcile or registration puts it back; only registering an
//!    unregistered node does), so routed events go to the other hosts;
//! 3. each client is closed with an Engine.IO close once it waits for no ack
//!    (a client whose routed call is running gets its answer first), at most
//!    `DRAIN_BATCH` at once with `DRAIN_BATCH_PAUSE_MS` between batches, so
//!    they reconnect to the other nodes gradually rather than all at once;
//! 4. the websocket relays it carries for other nodes' sessions are closed,
//!    in the same batches, by their owners once each client is owed no ack;
//! 5. the routed requests it serves for other nodes finish (their callers get
//!    their answers), and its writes to the cluster are flushed.
//!
//! Past the deadline every wait gives up: what is left is closed and the node
//! exits anyway, with status 0 (a requested stop, done as well as time
//! allowed), after a warning saying what was cut ([`Outcome`]).
//!
//! Steps 1 to 4 ([`leave`]) are also how a node is unregistered by an
//! operator (see [`crate::node_control`]): it then stays up, out of rotation,
//! and may be put back into service ([`DrainState::resume`]), which a node
//! that was told to stop never is. A signal during or after an unregister
//! drains and exits as usual (without waiting `DRAIN_DELAY_MS` again when
//! handshakes are refused already: the balancer has noticed long ago).
//!
//! Does not own the signal ([`crate::server::shutdown_signal`]), stopping the
//! listeners and deregistering (see [`crate::server`]), nor what a close
//! looks like on each transport (see [`crate::session`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::config::Settings;
use crate::engine::Engine;
use crate::session::{CloseReason, Session};

/// How often a wait checks again (owed acks, routed requests served).
const POLL: Duration = Duration::from_millis(10);

const SERVING: u8 = 0;
const NOT_READY: u8 = 1;
const REFUSING: u8 = 2;
/// A flag beside the phase: the node was told to stop, so nothing puts it
/// back into service. One atomic with the phase, so a resume and a signal
/// cannot interleave.
const EXITING: u8 = 0x80;

/// Where a node is in its drain. Cheap to clone; every clone sees the same.
#[derive(Clone)]
pub struct DrainState(Arc<AtomicU8>);

impl Default for DrainState {
    fn default() -> Self {
        DrainState::new()
    }
}

impl DrainState {
    pub fn new() -> DrainState {
        DrainState(Arc::new(AtomicU8::new(SERVING)))
    }

    fn phase(&self) -> u8 {
        self.0.load(Ordering::Acquire) & !EXITING
    }

    /// Whether the drain has begun: `/readyz` then answers 503.
    pub fn is_draining(&self) -> bool {
        self.phase() >= NOT_READY
    }

    /// Whether new Engine.IO handshakes are refused (503).
    pub fn refuses_handshakes(&self) -> bool {
        self.phase() >= REFUSING
    }

    /// Whether the node was told to stop (its drain ends in an exit).
    pub fn is_exiting(&self) -> bool {
        self.0.load(Ordering::Acquire) & EXITING != 0
    }

    /// Back to serving after an unregister: ready, handshakes accepted.
    /// Refused (false) once the node was told to stop.
    pub fn resume(&self) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |value| {
                (value & EXITING == 0).then_some(SERVING)
            })
            .is_ok()
    }

    fn enter(&self, phase: u8) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |value| {
                Some((value & EXITING) | (value & !EXITING).max(phase))
            });
    }

    /// Marks the node as stopping; whether it refused handshakes already.
    fn begin_exit(&self) -> bool {
        self.0.fetch_or(EXITING, Ordering::AcqRel) & !EXITING >= REFUSING
    }
}

/// The drain's settings.
#[derive(Debug, Clone, Copy)]
pub struct DrainPlan {
    /// `DRAIN_DELAY_MS`.
    pub delay: Duration,
    /// `DRAIN_BATCH` (at least 1).
    pub batch: usize,
    /// `DRAIN_BATCH_PAUSE_MS`.
    pub pause: Duration,
}

impl From<&Settings> for DrainPlan {
    fn from(settings: &Settings) -> Self {
        DrainPlan {
            delay: settings.drain_delay(),
            batch: settings.drain_batch.max(1),
            pause: settings.drain_batch_pause(),
        }
    }
}

/// Work outside the engine a drain waits for before the node exits (the
/// Mothership's routed requests served here): how many are running now.
pub type Busy = Arc<dyn Fn() -> usize + Send + Sync>;

/// What a drain did not finish by its deadline (all zero: nothing was cut).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Clients closed at the deadline while still owed acks.
    pub closed_owing_replies: usize,
    /// Routed requests still being served at the deadline.
    pub still_serving: usize,
    /// Whether the last flush of writes to the cluster failed or timed out.
    pub flush_failed: bool,
}

impl Outcome {
    pub fn is_complete(&self) -> bool {
        *self == Outcome::default()
    }
}

/// Drains the node (see the module's doc) until `deadline`.
pub async fn run(
    state: &DrainState,
    plan: DrainPlan,
    engine: &Engine,
    cluster: &Arc<dyn Cluster>,
    busy: &[Busy],
    deadline: Instant,
) -> Outcome {
    let plan = if state.begin_exit() {
        // Unregistered already: out of rotation long ago.
        DrainPlan {
            delay: Duration::ZERO,
            ..plan
        }
    } else {
        plan
    };
    let mut outcome = Outcome {
        closed_owing_replies: leave(state, plan, engine, cluster, deadline).await,
        ..Outcome::default()
    };

    let serving = || busy.iter().map(|count| count()).sum::<usize>();
    let finished = async {
        while serving() > 0 {
            tokio::time::sleep(POLL).await;
        }
    };
    if tokio::time::timeout_at(deadline, finished).await.is_err() {
        outcome.still_serving = serving();
    }

    let flushed = tokio::time::timeout_at(deadline, cluster.flush()).await;
    outcome.flush_failed = !matches!(flushed, Ok(Ok(())));
    if outcome.is_complete() {
        tracing::info!("drained");
    } else if Instant::now() < deadline {
        // Only the flush failed, in time: Redis refused or lost writes.
        tracing::warn!("drained, but the last writes to Redis could not be confirmed");
    } else {
        tracing::warn!(
            closed_owing_replies = outcome.closed_owing_replies,
            still_serving = outcome.still_serving,
            flush_failed = outcome.flush_failed,
            "shutdown timeout: the drain was cut short"
        );
    }
    outcome
}

/// Steps 1 to 4 of the drain (see the module's doc), until `deadline`: the
/// node is then out of rotation, out of every host set, and holds no client;
/// how many clients were closed while still owed an ack.
pub async fn leave(
    state: &DrainState,
    plan: DrainPlan,
    engine: &Engine,
    cluster: &Arc<dyn Cluster>,
    deadline: Instant,
) -> usize {
    state.enter(NOT_READY);
    tracing::info!(
        sessions = engine.session_count(),
        delay_ms = plan.delay.as_millis() as u64,
        "draining: not ready; serving everything until the balancer has noticed"
    );
    tokio::time::sleep_until(deadline.min(Instant::now() + plan.delay)).await;

    state.enter(REFUSING);
    tracing::info!(
        sessions = engine.session_count(),
        "draining: refusing new handshakes, leaving the component host sets, closing clients"
    );
    match tokio::time::timeout_at(deadline, cluster.drain()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(
            error = &error as &dyn std::error::Error,
            "draining: leaving the host sets could not be confirmed"
        ),
        Err(_) => tracing::warn!("draining: leaving the host sets timed out"),
    }

    let owing = close_clients(engine, plan, deadline).await;
    close_relays(engine, plan, deadline).await;
    owing
}

/// Closes every session, in batches, each once it is owed no ack (or at the
/// deadline); how many were closed still owed one.
async fn close_clients(engine: &Engine, plan: DrainPlan, deadline: Instant) -> usize {
    let mut closers = tokio::task::JoinSet::new();
    let mut owing = 0;
    // Sessions opened while a batch was closed (a handshake already past the
    // check) are picked up by the next round.
    loop {
        let open: Vec<Arc<Session>> = engine
            .sessions()
            .into_iter()
            .filter(|session| !session.is_closed())
            .collect();
        if open.is_empty() || Instant::now() >= deadline {
            break;
        }
        let batches = open.len().div_ceil(plan.batch);
        for (index, batch) in open.chunks(plan.batch).enumerate() {
            for session in batch {
                closers.spawn(close_when_settled(session.clone(), deadline));
            }
            if index + 1 < batches {
                // The pause shrinks when the time left would not fit them all.
                let left = deadline.saturating_duration_since(Instant::now());
                let share = left / (batches - index) as u32 / 2;
                tokio::time::sleep(plan.pause.min(share)).await;
            }
        }
        // Wait for this round before looking again.
        while let Some(closed) = closers.join_next().await {
            owing += usize::from(closed.unwrap_or(false));
        }
    }
    owing
}

/// Closes the websocket relays this node carries for other nodes' sessions,
/// in batches as the sessions, so those clients too reconnect gradually
/// rather than being cut when the process exits: each owner is asked to
/// close its session once it is owed no ack (`1001 going away` through the
/// relay), and the drain waits for the relays to end.
async fn close_relays(engine: &Engine, plan: DrainPlan, deadline: Instant) {
    let Some(forwarder) = engine.forwarder() else {
        return;
    };
    let mut closed = 0;
    while forwarder.relay_count() > 0 && Instant::now() < deadline {
        closed += forwarder.close_relays(plan.batch);
        if forwarder.relay_count() > 0 {
            let batches = forwarder.relay_count().div_ceil(plan.batch) + 1;
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(plan.pause.min(left / batches as u32 / 2)).await;
        }
    }
    // Each owner closes its session once settled; the close comes through.
    while forwarder.relays_live() > 0 && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    if closed > 0 {
        tracing::info!(
            relays = closed,
            left = forwarder.relays_live(),
            "draining: closed the websocket relays"
        );
    }
}

/// Closes one session once it is owed no ack, or at the deadline; whether it
/// still was.
async fn close_when_settled(session: Arc<Session>, deadline: Instant) -> bool {
    let settled = async {
        while session.replies_owed() > 0 && !session.is_closed() {
            tokio::time::sleep(POLL).await;
        }
    };
    let owing = tokio::time::timeout_at(deadline, settled).await.is_err();
    session.close(CloseReason::Shutdown);
    owing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unregistered_node_resumes_but_a_stopping_one_never_does() {
        let state = DrainState::new();
        state.enter(REFUSING);
        assert!(state.is_draining() && state.refuses_handshakes());
        assert!(state.resume());
        assert!(!state.is_draining() && !state.refuses_handshakes());

        state.enter(REFUSING);
        assert!(state.begin_exit(), "handshakes were refused already");
        assert!(state.is_exiting());
        assert!(!state.resume());
        assert!(state.refuses_handshakes(), "still draining");

        let stopping = DrainState::new();
        assert!(!stopping.begin_exit());
        stopping.enter(NOT_READY);
        assert!(stopping.is_draining() && !stopping.refuses_handshakes());
        assert!(stopping.is_exiting(), "entering a phase keeps the mark");
    }
}
