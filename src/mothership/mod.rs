//! The Mothership: where each component channel's events go, and how the answer
//! comes back.
//!
//! Owns the namespaces of component channels (`/{id}/{version}/{channel}`, a
//! version fragment resolving to the newest registered match), `/core`
//! (`request_intent`, `change_language`, `render`, handled on every node) and the
//! logging channels (`/core/logging`, `/{id}/{version}/logging`). An event goes
//! to this node's handler when it hosts the component (unless
//! `ROUTING=round-robin`), else to a live host picked round-robin in Redis, in
//! the same step that publishes it on that host's node channel (a host that has
//! died but is not purged yet is skipped); the handler runs there, and its
//! answer (with any room changes for the calling socket) comes back on this
//! node's channel to reach the client's ack callback as `(error | null, data)`.
//! Does not own the component registry's storage (see `crate::cluster`) or the
//! components themselves (see `crate::component`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::oneshot;

mod messages;

pub use crate::config::Routing;
pub use messages::Routed;

use crate::app_session::AppSession;
use crate::cluster::MessageHandler;
use crate::component::{Catalog, ChannelName, Component, Context, ContextParts, Effects, Emitter};
use crate::io::SocketIo;
use crate::namespace::NamespaceHandler;
use crate::socket::{AckSender, Event, Payload, Socket};
use messages::TOPIC;

/// The logging channel's name, under `/core` and under every component.
const LOGGING: &str = "logging";

/// The Mothership of one node. Cheap to clone.
#[derive(Clone)]
pub struct Mothership {
    inner: Arc<Inner>,
}

struct Inner {
    io: SocketIo,
    catalog: Arc<Catalog>,
    node_id: String,
    routing: Routing,
    timeout: Duration,
    hosted: HashMap<String, Arc<dyn Component>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
}

/// A handler's answer as the origin node receives it.
struct Answer {
    outcome: Result<Value, Value>,
    effects: Effects,
}

impl Mothership {
    /// Serves component channels, `/core` and logging on `io`, hosting
    /// `components` on this node (announced to the cluster).
    pub fn install(
        io: &SocketIo,
        routing: Routing,
        timeout: Duration,
        components: Vec<Arc<dyn Component>>,
    ) -> Mothership {
        let hosted: HashMap<String, Arc<dyn Component>> = components
            .into_iter()
            .map(|component| (component.descriptor().key(), component))
            .collect();
        let descriptors: Vec<_> = hosted.values().map(|c| c.descriptor().clone()).collect();
        let catalog = Catalog::new(io.cluster().clone());
        let mothership = Mothership {
            inner: Arc::new(Inner {
                io: io.clone(),
                catalog: catalog.clone(),
                node_id: io.cluster().node_id().to_string(),
                routing,
                timeout,
                hosted,
                pending: Mutex::new(HashMap::new()),
            }),
        };
        io.cluster()
            .on_topic(TOPIC, Arc::new(Receiver(mothership.inner.clone())));
        io.namespace("/core", CoreChannel(mothership.inner.clone()));
        io.namespace("/core/logging", LoggingChannel(mothership.inner.clone()));
        io.dynamic_namespace(
            // Any channel-shaped name: `authorize` then explains what is wrong
            // with an unknown one (and the empty namespace is dropped again).
            move |name| ChannelName::parse(name).is_some_and(|c| c.id != "core"),
            ComponentChannel(mothership.inner.clone()),
        );
        catalog.register(&descriptors);
        mothership
    }

    /// The components this node hosts, as `id@version`.
    pub fn hosted(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.inner.hosted.keys().cloned().collect();
        keys.sort();
        keys
    }
}

impl Inner {
    /// What `channel` of the newest known component `id` matching `fragment`
    /// is, read from the shared registry view without copying it.
    fn resolve(&self, id: &str, fragment: &str, channel: &str) -> Option<Resolved> {
        let info = self.catalog.newest(id, fragment)?;
        Some(Resolved {
            key: info.descriptor.key(),
            channel: channel.to_string(),
            served: info.descriptor.channels.iter().any(|c| c == channel),
            lifecycle: info.descriptor.wants_lifecycle(),
        })
    }

    /// Whether this node runs the component's handler itself. Renders always go
    /// round-robin: they create instances, which should spread over the hosts.
    fn runs_here(&self, component: &str, render: bool) -> bool {
        !render && self.routing == Routing::PreferLocal && self.hosted.contains_key(component)
    }

    /// Hands a message to this node or, round-robin, to a live host; `None`
    /// when no host is live.
    async fn send(&self, component: &str, render: bool, message: Routed) -> Option<String> {
        let body = message.encode();
        if self.runs_here(component, render) {
            self.io.cluster().send(&self.node_id, TOPIC, body);
            return Some(self.node_id.clone());
        }
        self.io.cluster().dispatch(component, TOPIC, body).await
    }

    /// Runs `event` on a host of `component` and returns its answer.
    async fn call(
        self: &Arc<Self>,
        socket: &Arc<Socket>,
        component: &str,
        request: Request,
    ) -> Answer {
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
            instance: request.instance,
            create_instance: render,
        };
        let Some(node) = self.send(component, render, message).await else {
            self.pending.lock().remove(&id);
            return Answer {
                outcome: Err(json!({ "error": "component unavailable", "component": component })),
                effects: Effects::default(),
            };
        };
        let answer = tokio::time::timeout(self.timeout, receiver).await;
        self.pending.lock().remove(&id);
        match answer {
            Ok(Ok(answer)) => answer,
            _ => Answer {
                outcome: Err(
                    json!({ "error": "component timeout", "component": component, "node": node }),
                ),
                effects: Effects::default(),
            },
        }
    }

    /// Applies a handler's room changes to the calling socket, then acks it.
    async fn answer(&self, socket: &Arc<Socket>, ack: Option<AckSender>, answer: Answer) {
        for room in &answer.effects.join {
            socket.join(room);
        }
        for room in &answer.effects.leave {
            socket.leave(room);
        }
        if !answer.effects.join.is_empty() {
            // The client may broadcast to the room as soon as it has the ack.
            socket.namespace().cluster().flush().await;
        }
        if let Some(ack) = ack {
            let _ = ack.send(ack_payload(answer.outcome));
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
            instance,
            create_instance,
        } = routed
        else {
            return;
        };
        let cluster = self.io.cluster().clone();
        let (outcome, effects) = match self.hosted.get(&component) {
            None => (
                Err(
                    json!({ "error": "component unavailable", "component": component, "node": self.node_id }),
                ),
                Effects::default(),
            ),
            Some(handler) => {
                let instance = if create_instance {
                    let id = format!("{}:{}", self.node_id, uuid::Uuid::new_v4().simple());
                    let descriptor = handler.descriptor();
                    cluster.record_instance(
                        &id,
                        vec![
                            ("component".into(), descriptor.id.clone()),
                            ("version".into(), descriptor.version.to_string()),
                            ("node".into(), self.node_id.clone()),
                            ("created".into(), crate::cluster::now_millis().to_string()),
                            ("state".into(), "rendered".into()),
                        ],
                    );
                    Some(id)
                } else {
                    instance
                };
                let ctx = Context::from(ContextParts {
                    socket_id: socket,
                    namespace,
                    channel,
                    node_id: self.node_id.clone(),
                    origin_node: from.clone(),
                    instance_id: instance.clone(),
                    session: AppSession::new(session.into(), cluster.clone()),
                    emitter: Emitter::new(self.io.clone(), self.catalog.clone()),
                });
                let args: Vec<Value> = serde_json::from_str(&args_json).unwrap_or_default();
                let outcome = handler.on_event(ctx.clone(), event, args).await;
                let outcome = match (outcome, create_instance.then_some(instance).flatten()) {
                    (Ok(data), Some(instance)) => Ok(with_instance(data, &instance, &self.node_id)),
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
        cluster.send(&from, TOPIC, reply.encode());
    }

    /// Tells a host of a component that a client came or went.
    fn lifecycle(self: &Arc<Self>, socket: &Arc<Socket>, component: String, connected: bool) {
        let inner = self.clone();
        let namespace = socket.namespace().name().to_string();
        let channel = ChannelName::parse(&namespace)
            .map(|c| c.channel.to_string())
            .unwrap_or_default();
        let (socket_id, session) = (socket.id().to_string(), socket.session_id().to_string());
        tokio::spawn(async move {
            let notice = Routed::Lifecycle {
                connected,
                from: inner.node_id.clone(),
                component: component.clone(),
                namespace,
                channel,
                socket: socket_id,
                session,
            };
            inner.send(&component, false, notice).await;
        });
    }

    /// A client's log line: logged here if its instance was rendered here (or it
    /// names none), else forwarded to the rendering node.
    fn log(&self, socket: &Arc<Socket>, line: &Value) -> Result<(), String> {
        let text = |key: &str| line.get(key).and_then(Value::as_str).map(str::to_string);
        let message = text("message").ok_or("log needs a string message")?;
        let level = text("level").unwrap_or_else(|| "info".into());
        let instance = text("instanceId");
        let routed = Routed::Log {
            level,
            message,
            error: line.get("error").filter(|e| !e.is_null()).map(|e| match e {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            }),
            instance: instance.clone(),
            namespace: socket.namespace().name().to_string(),
            socket: socket.id().to_string(),
            session: socket.session_id().to_string(),
        };
        // A rendering node hosts the rendered component, so a live one is in
        // the registry; a line for a node that is gone is logged here instead
        // of being published to nobody.
        let node = instance
            .as_deref()
            .and_then(|id| id.rsplit_once(':'))
            .map(|(node, _)| node.to_string())
            .filter(|node| *node == self.node_id || self.is_live_host(node))
            .unwrap_or_else(|| self.node_id.clone());
        self.io.cluster().send(&node, TOPIC, routed.encode());
        Ok(())
    }
}

/// Takes the Mothership's messages for this node.
struct Receiver(Arc<Inner>);

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

impl Inner {
    fn receive(self: Arc<Self>, message: Routed) {
        match message {
            Routed::Reply {
                request,
                ok,
                value_json,
                effects,
            } => {
                let value: Value = serde_json::from_str(&value_json).unwrap_or(Value::Null);
                if let Some(waiting) = self.pending.lock().remove(&request) {
                    let outcome = if ok { Ok(value) } else { Err(value) };
                    let _ = waiting.send(Answer { outcome, effects });
                }
            }
            Routed::Log {
                level,
                message,
                error,
                instance,
                namespace,
                socket,
                session,
            } => {
                let error = error.unwrap_or_default();
                let instance = instance.unwrap_or_default();
                macro_rules! client_log {
                    ($level:ident) => {
                        tracing::$level!(target: "rain_node::client", %namespace, %socket, %session, %instance, %error, "{message}")
                    };
                }
                match level.as_str() {
                    "error" => client_log!(error),
                    "warn" | "warning" => client_log!(warn),
                    "debug" => client_log!(debug),
                    "trace" => client_log!(trace),
                    _ => client_log!(info),
                }
            }
            Routed::Lifecycle {
                connected,
                from,
                component,
                namespace,
                channel,
                socket,
                session,
            } => {
                if let Some(handler) = self.hosted.get(&component) {
                    let ctx = Context::from(ContextParts {
                        socket_id: socket,
                        namespace,
                        channel,
                        node_id: self.node_id.clone(),
                        origin_node: from,
                        instance_id: None,
                        session: AppSession::new(session.into(), self.io.cluster().clone()),
                        emitter: Emitter::new(self.io.clone(), self.catalog.clone()),
                    });
                    if connected {
                        handler.on_connect(ctx);
                    } else {
                        handler.on_disconnect(ctx);
                    }
                }
            }
            // Handlers are async: each request runs on its own task.
            request @ Routed::Request { .. } => {
                tokio::spawn(self.serve(request));
            }
        }
    }
}

/// What the origin asks of a component.
struct Request {
    channel: String,
    event: String,
    args: Vec<Value>,
    instance: Option<String>,
    create_instance: bool,
}

/// `(error | null, data)`, RAIN's ack convention.
fn ack_payload(outcome: Result<Value, Value>) -> Payload {
    match outcome {
        Ok(data) => Payload::new(vec![Value::Null, data]),
        Err(error) => Payload::new(vec![error, Value::Null]),
    }
}

fn error_ack(ack: Option<AckSender>, message: &str) {
    if let Some(ack) = ack {
        let _ = ack.send(ack_payload(Err(json!({ "error": message }))));
    }
}

/// A render's answer: the handler's data with the instance and node added.
fn with_instance(data: Value, instance: &str, node: &str) -> Value {
    match data {
        Value::Object(mut object) => {
            object.insert("instanceId".into(), json!(instance));
            object.insert("node".into(), json!(node));
            Value::Object(object)
        }
        other => json!({ "instanceId": instance, "node": node, "result": other }),
    }
}

/// A component channel, resolved against the registry.
struct Resolved {
    /// `id@version` of the component that serves it now.
    key: String,
    channel: String,
    /// Whether the component lists the channel.
    served: bool,
    /// Whether the component wants connect/disconnect notices.
    lifecycle: bool,
}

/// `/{id}/{version}/{channel}` (and `/{id}/{version}/logging`).
struct ComponentChannel(Arc<Inner>);

impl ComponentChannel {
    fn component(&self, socket: &Socket) -> Option<Resolved> {
        let name = ChannelName::parse(socket.namespace().name())?;
        self.0.resolve(name.id, name.version, name.channel)
    }
}

impl NamespaceHandler for ComponentChannel {
    fn authorize(&self, socket: &Arc<Socket>, _auth: &Value) -> Result<(), String> {
        let namespace = socket.namespace().name();
        match self.component(socket) {
            Some(resolved) if resolved.channel == LOGGING || resolved.served => Ok(()),
            Some(resolved) => Err(format!(
                "component {} has no channel {:?} (namespace {namespace})",
                resolved.key, resolved.channel
            )),
            None => Err(format!("unknown component channel {namespace}")),
        }
    }

    fn on_connect(&self, socket: &Arc<Socket>) {
        if let Some(resolved) = self.component(socket)
            && resolved.channel != LOGGING
            && resolved.lifecycle
        {
            self.0.lifecycle(socket, resolved.key, true);
        }
    }

    fn on_disconnect(&self, socket: &Arc<Socket>, _reason: crate::socket::DisconnectReason) {
        if let Some(resolved) = self.component(socket)
            && resolved.channel != LOGGING
            && resolved.lifecycle
        {
            self.0.lifecycle(socket, resolved.key, false);
        }
    }

    fn on_event(&self, socket: &Arc<Socket>, event: Event) {
        let Some(Resolved { key, channel, .. }) = self.component(socket) else {
            return error_ack(event.ack, "component unavailable");
        };
        if channel == LOGGING {
            return log_event(&self.0, socket, event);
        }
        let inner = self.0.clone();
        let socket = socket.clone();
        tokio::spawn(async move {
            let request = Request {
                channel,
                event: event.name,
                args: event.payload.args,
                instance: None,
                create_instance: false,
            };
            let answer = inner.call(&socket, &key, request).await;
            inner.answer(&socket, event.ack, answer).await;
        });
    }
}

/// `/core/logging`.
struct LoggingChannel(Arc<Inner>);

impl NamespaceHandler for LoggingChannel {
    fn on_event(&self, socket: &Arc<Socket>, event: Event) {
        log_event(&self.0, socket, event);
    }
}

fn log_event(inner: &Arc<Inner>, socket: &Arc<Socket>, event: Event) {
    if event.name != "log" {
        return error_ack(
            event.ack,
            &format!("unknown event {:?} (logging takes \"log\")", event.name),
        );
    }
    let line = event.payload.args.first().cloned().unwrap_or(Value::Null);
    match inner.log(socket, &line) {
        Ok(()) => {
            if let Some(ack) = event.ack {
                let _ = ack.send(ack_payload(Ok(json!(true))));
            }
        }
        Err(message) => error_ack(event.ack, &message),
    }
}

/// `/core`, handled on every node.
struct CoreChannel(Arc<Inner>);

impl NamespaceHandler for CoreChannel {
    fn on_event(&self, socket: &Arc<Socket>, event: Event) {
        let inner = self.0.clone();
        let socket = socket.clone();
        tokio::spawn(async move {
            let Event { name, payload, ack } = event;
            let first = payload.args.into_iter().next().unwrap_or(Value::Null);
            let text = |key: &str| first.get(key).and_then(Value::as_str).map(str::to_string);
            match name.as_str() {
                "change_language" => {
                    let Some(language) =
                        text("language").or_else(|| first.as_str().map(str::to_string))
                    else {
                        return error_ack(ack, "change_language needs {language}");
                    };
                    let outcome = match socket
                        .session()
                        .set(vec![("language".into(), language.clone())])
                        .await
                    {
                        Ok(()) => Ok(json!({ "language": language, "node": inner.node_id })),
                        Err(error) => Err(json!({ "error": error.to_string() })),
                    };
                    if let Some(ack) = ack {
                        let _ = ack.send(ack_payload(outcome));
                    }
                }
                "request_intent" => {
                    let (Some(category), Some(action)) = (text("category"), text("action")) else {
                        return error_ack(ack, "request_intent needs {category, action, context}");
                    };
                    let Some((component, provider)) = inner.provider(&category, &action) else {
                        let error = json!({ "error": "no provider for intent", "category": category, "action": action });
                        if let Some(ack) = ack {
                            let _ = ack.send(ack_payload(Err(error)));
                        }
                        return;
                    };
                    let request = Request {
                        channel: "core".into(),
                        event: provider,
                        args: vec![first.get("context").cloned().unwrap_or(Value::Null)],
                        instance: None,
                        create_instance: false,
                    };
                    let answer = inner.call(&socket, &component, request).await;
                    inner.answer(&socket, ack, answer).await;
                }
                "render" => {
                    let (Some(id), Some(version)) = (text("id"), text("version")) else {
                        return error_ack(ack, "render needs {id, version, view, context}");
                    };
                    let Some(resolved) = inner.resolve(&id, &version, "") else {
                        let error = json!({ "error": "unknown component", "component": format!("{id}@{version}") });
                        if let Some(ack) = ack {
                            let _ = ack.send(ack_payload(Err(error)));
                        }
                        return;
                    };
                    let request = Request {
                        channel: "core".into(),
                        event: "render".into(),
                        args: vec![json!({
                            "view": first.get("view").cloned().unwrap_or(Value::Null),
                            "context": first.get("context").cloned().unwrap_or(Value::Null),
                        })],
                        instance: None,
                        create_instance: true,
                    };
                    let answer = inner.call(&socket, &resolved.key, request).await;
                    inner.answer(&socket, ack, answer).await;
                }
                other => error_ack(ack, &format!("unknown /core event {other:?}")),
            }
        });
    }
}

impl Inner {
    /// Whether `node` hosts any component, as far as the registry knows.
    fn is_live_host(&self, node: &str) -> bool {
        self.catalog.is_host(node)
    }

    /// The component (`id@version`, newest with a live host) and event that
    /// serve an intent.
    fn provider(&self, category: &str, action: &str) -> Option<(String, String)> {
        self.catalog.provider(category, action)
    }
}
