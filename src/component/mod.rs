//! Components: named, versioned units of code that serve channels
//! (`/{id}/{version}/{channel}`), their descriptors, and the context a handler
//! runs with.
//!
//! Owns the [`Component`] trait (implemented in Rust through the library API, or
//! by [`http::HttpComponent`] for an HTTP backend), the [`Context`] a handler
//! gets (the socket, its user, its session, the instance, an [`Emitter`] to any
//! socket or room of the cluster), and the built-in demo components ([`demo`]). Does not
//! own routing (see `crate::mothership`) or the cluster-wide registry (see
//! `crate::cluster`).

pub mod catalog;
pub mod demo;
pub mod descriptor;
pub mod desired;
pub mod http;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::Value;

pub use catalog::{Catalog, ComponentInfo};
pub use descriptor::{ChannelName, Descriptor, DescriptorError, HandlerSpec, Intent, Version};

use crate::app_session::AppSession;
use crate::config::Settings;
use crate::io::SocketIo;
use crate::protocol::payload::is_reserved_event;
use crate::socket::Payload;

/// What a handler answers: the ack's data, or the ack's error. The client's ack
/// callback gets `(null, data)` or `(error, null)` (RAIN's convention).
pub type Outcome = Result<Value, Value>;

/// A component's code.
pub trait Component: Send + Sync + 'static {
    fn descriptor(&self) -> &Descriptor;

    /// An event from a client on one of the component's channels.
    fn on_event(
        &self,
        ctx: Context,
        event: String,
        args: Vec<Value>,
    ) -> BoxFuture<'static, Outcome>;

    /// A client connected to one of the component's channels (on any node).
    fn on_connect(&self, _ctx: Context) {}

    /// A client left one of the component's channels.
    fn on_disconnect(&self, _ctx: Context) {}
}

/// The components a node hosts, from its settings: the built-ins named in
/// `COMPONENTS` and every descriptor (`*.json`, an HTTP backend) in
/// `COMPONENTS_DIR`.
pub fn from_settings(settings: &Settings) -> Result<Vec<Arc<dyn Component>>, DescriptorError> {
    let mut components: Vec<Arc<dyn Component>> = Vec::new();
    for name in &settings.components {
        components.push(
            demo::builtin(name, settings)
                .ok_or_else(|| DescriptorError::UnknownBuiltin(name.clone()))?,
        );
    }
    if let Some(dir) = &settings.components_dir {
        let unreadable = |reason: String| DescriptorError::Read {
            path: dir.clone(),
            reason,
        };
        let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| unreadable(e.to_string()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        paths.sort();
        if !paths.is_empty() && settings.backend_secret.is_none() {
            tracing::warn!(
                "HTTP components are configured without BACKEND_SECRET: their backends cannot tell this node from anyone else"
            );
        }
        for path in paths {
            components.push(http_component(Descriptor::from_file(&path)?, settings)?);
        }
    }
    let mut keys = std::collections::HashSet::new();
    for component in &components {
        let key = component.descriptor().key();
        if !keys.insert(key.clone()) {
            return Err(DescriptorError::Duplicate(key));
        }
    }
    Ok(components)
}

/// The component of an HTTP backend's descriptor, signing its requests and
/// bounding its answers as the settings say.
pub fn http_component(
    descriptor: Descriptor,
    settings: &Settings,
) -> Result<Arc<dyn Component>, DescriptorError> {
    let signer = crate::backend_signature::BackendSigner::from_settings(settings);
    let component = http::HttpComponent::new(descriptor)?
        .signed(signer)
        .with_answer_max_bytes(settings.backend_answer_max_bytes);
    Ok(Arc::new(component))
}

/// Where a handler runs and for whom.
#[derive(Clone)]
pub struct Context {
    /// The client's socket id.
    pub socket_id: String,
    /// The channel's namespace as the client connected to it.
    pub namespace: String,
    /// The channel name (the last part of the namespace).
    pub channel: String,
    /// The node running the handler.
    pub node_id: String,
    /// The node holding the client's socket.
    pub origin_node: String,
    /// The instance the event is about, if any.
    pub instance_id: Option<String>,
    /// Who the client is, by the connect-auth hook (`None` without one).
    pub user: Option<String>,
    pub session: AppSession,
    pub emitter: Emitter,
    effects: Arc<Mutex<Effects>>,
}

/// Changes to the calling socket that the origin node applies before it acks,
/// so the client can count on them when its ack arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Effects {
    pub join: Vec<String>,
    pub leave: Vec<String>,
}

/// What a [`Context`] is made of, filled in by field name:
/// `Context::from(ContextParts { socket_id, namespace, .. })`.
pub struct ContextParts {
    /// The client's socket id.
    pub socket_id: String,
    /// The channel's namespace as the client connected to it.
    pub namespace: String,
    /// The channel name (the last part of the namespace).
    pub channel: String,
    /// The node running the handler.
    pub node_id: String,
    /// The node holding the client's socket.
    pub origin_node: String,
    /// The instance the event is about, if any.
    pub instance_id: Option<String>,
    /// Who the client is, by the connect-auth hook (`None` without one).
    pub user: Option<String>,
    pub session: AppSession,
    pub emitter: Emitter,
}

impl From<ContextParts> for Context {
    /// A context with no effects yet.
    fn from(parts: ContextParts) -> Context {
        let ContextParts {
            socket_id,
            namespace,
            channel,
            node_id,
            origin_node,
            instance_id,
            user,
            session,
            emitter,
        } = parts;
        Context {
            socket_id,
            namespace,
            channel,
            node_id,
            origin_node,
            instance_id,
            user,
            session,
            emitter,
            effects: Arc::new(Mutex::new(Effects::default())),
        }
    }
}

impl Context {
    /// The calling socket joins a room (of its channel), wherever it is connected.
    pub fn join(&self, room: &str) {
        self.effects.lock().join.push(room.to_string());
    }

    /// The calling socket leaves a room.
    pub fn leave(&self, room: &str) {
        self.effects.lock().leave.push(room.to_string());
    }

    pub(crate) fn take_effects(&self) -> Effects {
        std::mem::take(&mut *self.effects.lock())
    }
}

/// Why an [`Emitter`] refused to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    #[error("event name {0:?} is reserved by Socket.IO")]
    ReservedEvent(String),
}

fn allowed(event: &str) -> Result<(), EmitError> {
    if is_reserved_event(event) {
        return Err(EmitError::ReservedEvent(event.to_string()));
    }
    Ok(())
}

/// Sends to any socket or room of the cluster, from anywhere. Names reserved
/// by Socket.IO (`disconnect`, …) are refused.
#[derive(Clone)]
pub struct Emitter {
    io: SocketIo,
    catalog: Arc<Catalog>,
}

impl Emitter {
    pub fn new(io: SocketIo, catalog: Arc<Catalog>) -> Self {
        Emitter { io, catalog }
    }

    /// An event to one socket of a namespace, on whichever node it is.
    pub fn to_socket(
        &self,
        namespace: &str,
        sid: &str,
        event: &str,
        args: Vec<Value>,
    ) -> Result<(), EmitError> {
        allowed(event)?;
        self.io.emit_to(namespace, sid, event, Payload::new(args));
        Ok(())
    }

    /// An event to every member of a room of a namespace, on every node. For a
    /// component channel, members who connected through another name of the same
    /// version (`/chat/1/main`, `/chat/1.0/main`) get it too, and it travels
    /// between nodes once for all those names.
    pub fn to_room(
        &self,
        namespace: &str,
        room: &str,
        event: &str,
        args: Vec<Value>,
    ) -> Result<(), EmitError> {
        allowed(event)?;
        let aliases = self.catalog.aliases(namespace);
        self.io.broadcast_to_group(
            &aliases,
            &[room.to_string()],
            &[],
            event,
            Payload::new(args),
        );
        Ok(())
    }

    /// An event to every socket of a namespace, on every node.
    pub fn to_namespace(
        &self,
        namespace: &str,
        event: &str,
        args: Vec<Value>,
    ) -> Result<(), EmitError> {
        allowed(event)?;
        self.io
            .broadcast_to(namespace, &[], &[], event, Payload::new(args));
        Ok(())
    }

    /// The node's Socket.IO server, for anything else.
    pub fn io(&self) -> &SocketIo {
        &self.io
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::memory::MemoryCluster;

    #[test]
    fn the_emitter_refuses_names_reserved_by_socket_io() {
        let settings = Settings::default();
        let cluster: Arc<dyn crate::cluster::Cluster> = Arc::new(MemoryCluster::new("n".into()));
        let emitter = Emitter::new(
            SocketIo::new(&settings, cluster.clone()),
            Catalog::new(cluster),
        );
        for event in crate::protocol::socketio::RESERVED_EVENTS {
            let refused = Err(EmitError::ReservedEvent(event.to_string()));
            assert_eq!(emitter.to_socket("/", "sid", event, vec![]), refused);
            assert_eq!(emitter.to_room("/", "r", event, vec![]), refused);
            assert_eq!(emitter.to_namespace("/", event, vec![]), refused);
        }
        assert_eq!(emitter.to_room("/", "r", "message", vec![]), Ok(()));
    }
}
