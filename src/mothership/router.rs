//! The router: a node's side of every routed call, both ends of it.
//!
//! Owns calling a host of a component (this node or a live host picked
//! round-robin by the cluster) and waiting for its answer (the table of
//! pending answers, the route timeout), serving a request for a component
//! hosted here (first creating the instance, for a `render`), sending the
//! answer back to the node that asked, applying an answer's room changes to
//! the calling socket before acking it, and serving connect/disconnect
//! notices. Takes this node's Mothership messages off the cluster
//! ([`Receiver`]).
//!
//! Does not own the messages' format (see `super::messages`), which channel an
//! event arrived on or what a `/core` command means (see `super::channel`,
//! `super::core`), or what is done with a log line (see `super::logging`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::core::render;
use super::counters::ComponentCounters;
use super::logging;
use super::messages::{Routed, TOPIC};
use crate::app_session::AppSession;
use crate::cluster::{ClusterError, MessageHandler};
use crate::component::{Catalog, Component, Context, ContextParts, Effects, Emitter};
use crate::config::{Routing, Settings};
use crate::io::SocketIo;
use crate::session_token::{SessionId, SessionKeys};
use crate::socket::{AckSender, Payload, Socket};

/// A node's router: the components it hosts, how it routes, and the calls it
/// is waiting on.
pub(super) struct Router {
    pub(super) io: SocketIo,
    pub(super) catalog: Arc<Catalog>,
    pub(super) node_id: String,
    routing: Routing,
    timeout: Duration,
    /// The components hosted here, by `id@version`; changed at run time
    /// through the API.
    hosted: RwLock<HashMap<String, Arc<dyn Component>>>,
    /// Components undeployed, by `id@version`, with why: a CONNECT to their
    /// channels is refused saying so.
    undeployed: RwLock<HashMap<String, String>>,
    /// Calls sent to a host and not answered yet, by request id.
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    /// Calls waiting on an answer now, and how many may.
    in_flight: AtomicUsize,
    max_in_flight: usize,
    /// Requests for a component hosted here being served now (for any node,
    /// this one included): a draining node waits for them before it exits.
    serving: Arc<AtomicUsize>,
    /// Longest client log line (message and error) accepted, in bytes.
    pub(super) log_line_max_length: usize,
    /// What mints the token `/core`'s `session` command gives a client.
    pub(super) session_keys: SessionKeys,
    /// Routed events one socket may have queued or running
    /// (`SOCKET_MAX_IN_FLIGHT`); they run one at a time, in order.
    pub(super) socket_max_in_flight: usize,
    /// Each logging socket's allowance of lines (`LOG_LINES_PER_MINUTE`).
    pub(super) log_rates: logging::LogRates,
    /// What the components hosted here did (for the node's statistics).
    pub(super) counters: ComponentCounters,
}

/// Holds one of the router's in-flight places until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts one request being served until dropped.
struct Serving(Arc<AtomicUsize>);

impl Serving {
    fn start(count: &Arc<AtomicUsize>) -> Serving {
        count.fetch_add(1, Ordering::AcqRel);
        Serving(count.clone())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the origin asks of a component.
pub(super) struct Request {
    pub(super) channel: String,
    pub(super) event: String,
    pub(super) args: Vec<Value>,
    /// Create an instance on the host first (a `render`).
    pub(super) create_instance: bool,
}

/// A handler's answer as the origin node receives it.
pub(super) struct Answer {
    pub(super) outcome: Result<Value, Value>,
    pub(super) effects: Effects,
}

impl Answer {
    /// An answer with no room changes.
    pub(super) fn plain(outcome: Result<Value, Value>) -> Answer {
        Answer {
            outcome,
            effects: Effects::default(),
        }
    }
}

impl Router {
    pub(super) fn new(
        io: SocketIo,
        catalog: Arc<Catalog>,
        settings: &Settings,
        hosted: HashMap<String, Arc<dyn Component>>,
    ) -> Router {
        Router {
            node_id: io.cluster().node_id().to_string(),
            io,
            catalog,
            routing: settings.routing,
            timeout: settings.route_timeout(),
            hosted: RwLock::new(hosted),
            undeployed: RwLock::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            serving: Arc::new(AtomicUsize::new(0)),
            max_in_flight: settings.route_max_in_flight.max(1),
            log_line_max_length: settings.log_line_max_length,
            session_keys: SessionKeys::from_settings(settings),
            socket_max_in_flight: settings.socket_max_in_flight,
            log_rates: logging::LogRates::new(settings.log_lines_per_minute),
            counters: ComponentCounters::default(),
        }
    }

    /// Takes an in-flight place; `None` when all are taken.
    fn admit(&self) -> Option<InFlight<'_>> {
        let taken = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_in_flight).then_some(n + 1)
            });
        taken.ok().map(|_| InFlight(&self.in_flight))
    }

    /// Requests for components hosted here being served now.
    pub(super) fn serving(&self) -> usize {
        self.serving.load(Ordering::Acquire)
    }

    /// The components this node hosts, as `id@version`, sorted.
    pub(super) fn hosted_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.hosted.read().keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Whether this node runs the component's handler itself. Renders always go
    /// round-robin: they create instances, which should spread over the hosts.
    fn runs_here(&self, component: &str, render: bool) -> bool {
        !render
            && self.routing == Routing::PreferLocal
            && self.hosted.read().contains_key(component)
    }

    /// A component hosted here.
    pub(super) fn component(&self, key: &str) -> Option<Arc<dyn Component>> {
        self.hosted.read().get(key).cloned()
    }

    /// Hosts `components` here, after `keep` says which of those hosted now
    /// stay; returns the keys that left. Announcing is the caller's.
    pub(super) fn rehost(
        &self,
        components: Vec<Arc<dyn Component>>,
        keep: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let mut hosted = self.hosted.write();
        let mut left: Vec<String> = hosted.keys().filter(|key| !keep(key)).cloned().collect();
        left.retain(|key| !components.iter().any(|c| c.descriptor().key() == *key));
        hosted.retain(|key, _| !left.contains(key));
        let mut undeployed = self.undeployed.write();
        for component in components {
            let key = component.descriptor().key();
            undeployed.remove(&key);
            hosted.insert(key, component);
        }
        left.sort();
        left
    }

    /// Why a component was undeployed, if it was.
    pub(super) fn undeployed(&self, key: &str) -> Option<String> {
        self.undeployed.read().get(key).cloned()
    }

    /// Marks components undeployed (`Some(reason)`) or deployed again.
    pub(super) fn mark_undeployed(&self, key: &str, reason: Option<String>) {
        let mut undeployed = self.undeployed.write();
        match reason {
            Some(reason) => undeployed.insert(key.to_string(), reason),
            None => undeployed.remove(key),
        };
    }

    /// Every component undeployed, as `id@version`.
    pub(super) fn undeployed_keys(&self) -> Vec<String> {
        self.undeployed.read().keys().cloned().collect()
    }

    /// Hands a message to this node or, round-robin, to a live host; `None`
    /// when no host is live, an error when the cluster could not take it.
    pub(super) async fn send(
        &self,
        component: &str,
        render: bool,
        message: Routed,
    ) -> Result<Option<String>, ClusterError> {
        let body = message.encode();
        if self.runs_here(component, render) {
            self.io.cluster().send(&self.node_id, TOPIC, body);
            return Ok(Some(self.node_id.clone()));
        }
        self.io.cluster().dispatch(component, TOPIC, body).await
    }

    /// Runs `request` on a host of `component` (`id@version`) for `socket` and
    /// returns its answer.
    pub(super) async fn call(
        &self,
        socket: &Arc<Socket>,
        component: &str,
        request: Request,
    ) -> Answer {
        // Bounded: past ROUTE_MAX_IN_FLIGHT waiting calls, refuse at once
        // rather than queue without end (memory stays flat under overload).
        let Some(_place) = self.admit() else {
            metrics::counter!("rain_routed_refused_total", "reason" => "overloaded").increment(1);
            return Answer::plain(Err(json!({ "error": "overloaded" })));
        };
        let started = std::time::Instant::now();
        let id: u64 = rand::random();
        let (sender, receiver) = oneshot::channel();
        self.pending.lock().insert(id, sender);
        let render = request.create_instance;
        let message = Routed::Request {
            request: id,
            from: self.node_id.clone(),
            component: component.to_string(),
            namespace: socket.namespace().name().to_string(),
            channel: request.channel,
            event: request.event,
            args_json: serde_json::to_string(&request.args).unwrap_or_else(|_| "[]".into()),
            socket: socket.id().to_string(),
            session: socket.session_id().to_string(),
            user: socket.user().map(str::to_string),
            instance: None,
            create_instance: render,
        };
        let node = match self.send(component, render, message).await {
            Ok(Some(node)) => node,
            Ok(None) => {
                self.pending.lock().remove(&id);
                return Answer::plain(Err(
                    json!({ "error": "component unavailable", "component": component }),
                ));
            }
            Err(error) => {
                // Redis away or far behind: say so, not that the component is
                // gone (its hosts may well be up).
                self.pending.lock().remove(&id);
                metrics::counter!("rain_routed_refused_total", "reason" => "cluster").increment(1);
                tracing::debug!(
                    error = &error as &dyn std::error::Error,
                    "a routed event could not be sent"
                );
                return Answer::plain(Err(
                    json!({ "error": "cluster unavailable", "component": component }),
                ));
            }
        };
        let answer = tokio::time::timeout(self.timeout, receiver).await;
        self.pending.lock().remove(&id);
        crate::metrics::TRAFFIC.routed(started.elapsed());
        match answer {
            Ok(Ok(answer)) => answer,
            _ => Answer::plain(Err(
                json!({ "error": "component timeout", "component": component, "node": node }),
            )),
        }
    }

    /// Applies an answer's room changes to the calling socket, then acks it.
    pub(super) async fn reply(&self, socket: &Arc<Socket>, ack: Option<AckSender>, answer: Answer) {
        // Leaves first: they free room places for the joins.
        for room in &answer.effects.leave {
            socket.leave(room);
        }
        let mut outcome = answer.outcome;
        for room in &answer.effects.join {
            if !socket.join(room) && socket.is_connected() {
                outcome = Err(json!({ "error": "too many rooms" }));
            }
        }
        // The client may broadcast to the room as soon as it has the ack: a
        // join is acked once the room's subscription is live, or as an error.
        if !answer.effects.join.is_empty()
            && let Err(error) = socket.namespace().cluster().flush().await
        {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                "a join could not be confirmed"
            );
            outcome = Err(json!({ "error": "cluster unavailable, try again" }));
        }
        if let Some(ack) = ack {
            let _ = ack.send(ack_payload(outcome));
        }
    }

    /// Runs a request for a component hosted here and sends the answer back.
    async fn serve(self: Arc<Self>, routed: Routed) {
        let Routed::Request {
            request,
            from,
            component,
            namespace,
            channel,
            event,
            args_json,
            socket,
            session,
            user,
            instance,
            create_instance,
        } = routed
        else {
            return;
        };
        let (outcome, effects) = match self.component(&component) {
            None => (
                Err(
                    json!({ "error": "component unavailable", "component": component, "node": self.node_id }),
                ),
                Effects::default(),
            ),
            Some(handler) => {
                let created = create_instance
                    .then(|| render::create_instance(&self, handler.as_ref(), &socket));
                let ctx = Context::from(ContextParts {
                    socket_id: socket,
                    namespace,
                    channel,
                    node_id: self.node_id.clone(),
                    origin_node: from.clone(),
                    instance_id: created.clone().or(instance),
                    user,
                    session: self.session(session),
                    emitter: self.emitter(),
                });
                let args: Vec<Value> = serde_json::from_str(&args_json).unwrap_or_default();
                let started = std::time::Instant::now();
                let outcome = handler.on_event(ctx.clone(), event, args).await;
                self.counters
                    .handled(&component, outcome.is_ok(), started.elapsed());
                let outcome = match (outcome, created) {
                    (Ok(data), Some(instance)) => {
                        Ok(render::with_instance(data, &instance, &self.node_id))
                    }
                    (outcome, _) => outcome,
                };
                (outcome, ctx.take_effects())
            }
        };
        let (ok, value) = match outcome {
            Ok(value) => (true, value),
            Err(value) => (false, value),
        };
        let reply = Routed::Reply {
            request,
            ok,
            value_json: value.to_string(),
            effects,
        };
        self.io.cluster().send(&from, TOPIC, reply.encode());
    }

    /// A connect/disconnect notice for a component hosted here.
    fn on_lifecycle(&self, routed: Routed) {
        let Routed::Lifecycle {
            connected,
            from,
            component,
            namespace,
            channel,
            socket,
            session,
            user,
        } = routed
        else {
            return;
        };
        let Some(handler) = self.component(&component) else {
            return;
        };
        let ctx = Context::from(ContextParts {
            socket_id: socket,
            namespace,
            channel,
            node_id: self.node_id.clone(),
            origin_node: from,
            instance_id: None,
            user,
            session: self.session(session),
            emitter: self.emitter(),
        });
        if connected {
            handler.on_connect(ctx);
        } else {
            handler.on_disconnect(ctx);
        }
    }

    /// A handler's answer to a call of this node: to the one waiting for it.
    fn on_reply(&self, request: u64, ok: bool, value_json: &str, effects: Effects) {
        let value: Value = serde_json::from_str(value_json).unwrap_or(Value::Null);
        if let Some(waiting) = self.pending.lock().remove(&request) {
            let outcome = if ok { Ok(value) } else { Err(value) };
            let _ = waiting.send(Answer { outcome, effects });
        }
    }

    fn receive(self: Arc<Self>, message: Routed) {
        match message {
            Routed::Reply {
                request,
                ok,
                value_json,
                effects,
            } => self.on_reply(request, ok, &value_json, effects),
            log @ Routed::Log { .. } => logging::write(log),
            lifecycle @ Routed::Lifecycle { .. } => self.on_lifecycle(lifecycle),
            // Handlers are async: each request runs on its own task.
            request @ Routed::Request { .. } => {
                // Counted from its arrival, so a drain cannot miss one whose
                // task has not started yet.
                let serving = Serving::start(&self.serving);
                tokio::spawn(async move {
                    self.serve(request).await;
                    drop(serving);
                });
            }
        }
    }

    /// The session a routed message names (a node put it there, having
    /// verified or minted it).
    fn session(&self, id: String) -> AppSession {
        AppSession::new(SessionId::trusted(id), self.io.cluster().clone())
    }

    fn emitter(&self) -> Emitter {
        Emitter::new(self.io.clone(), self.catalog.clone())
    }
}

/// Takes the Mothership's messages for this node off the cluster.
pub(super) struct Receiver(pub(super) Arc<Router>);

impl MessageHandler for Receiver {
    fn on_message(&self, body: bytes::Bytes) {
        match Routed::decode(&body) {
            Ok(message) => self.0.clone().receive(message),
            Err(error) => {
                metrics::counter!("rain_routed_undecodable_total").increment(1);
                tracing::warn!(%error, "dropping a Mothership message this node cannot read");
            }
        }
    }
}

/// `(error | null, data)`, RAIN's ack convention.
pub(super) fn ack_payload(outcome: Result<Value, Value>) -> Payload {
    match outcome {
        Ok(data) => Payload::new(vec![Value::Null, data]),
        Err(error) => Payload::new(vec![error, Value::Null]),
    }
}

/// Acks `{error: message}`, when the client asked for an ack.
pub(super) fn error_ack(ack: Option<AckSender>, message: &str) {
    if let Some(ack) = ack {
        let _ = ack.send(ack_payload(Err(json!({ "error": message }))));
    }
}
