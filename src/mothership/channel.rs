//! The component channel namespaces: `/{id}/{version}/{channel}`, served on
//! every node by one dynamic namespace handler.
//!
//! Owns what a channel's name means now (the component serving it, through the
//! catalog's one version resolver), refusing a connection to an unknown
//! component or channel with a CONNECT_ERROR that says which, sending a host
//! of the component a notice of each connect and disconnect when it asks for
//! them, and handing each event to the router (or, on
//! `/{id}/{version}/logging`, to logging).
//!
//! Does not own routing or answers (see `super::router`), `/core` (see
//! `super::core`), what a log line does (see `super::logging`), or version
//! resolution itself (see `crate::component::Catalog`).

use std::sync::Arc;

use serde_json::Value;

use super::logging::{self, LOGGING};
use super::messages::Routed;
use super::router::{Request, Router, error_ack};
use crate::component::ChannelName;
use crate::namespace::NamespaceHandler;
use crate::socket::{DisconnectReason, Event, Socket};

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

impl Resolved {
    /// A channel whose connects and disconnects the component is told of.
    fn wants_notices(&self) -> bool {
        self.channel != LOGGING && self.lifecycle
    }
}

/// `/{id}/{version}/{channel}` (and `/{id}/{version}/logging`).
pub(super) struct ComponentChannel(pub(super) Arc<Router>);

impl ComponentChannel {
    /// What the socket's namespace resolves to now: the newest registered
    /// component matching its version fragment.
    fn resolve(&self, socket: &Socket) -> Option<Resolved> {
        let name = ChannelName::parse(socket.namespace().name())?;
        let info = self.0.catalog.newest(name.id, name.version)?;
        Some(Resolved {
            key: info.descriptor.key(),
            channel: name.channel.to_string(),
            served: info.descriptor.channels.iter().any(|c| c == name.channel),
            lifecycle: info.descriptor.wants_lifecycle(),
        })
    }

    /// Whether a namespace that resolves to no component names one that was
    /// undeployed through the API (its version fragment matches one).
    fn names_undeployed(&self, socket: &Socket) -> bool {
        let Some(name) = ChannelName::parse(socket.namespace().name()) else {
            return false;
        };
        self.0.undeployed_keys().iter().any(|key| {
            key.split_once('@').is_some_and(|(id, version)| {
                id == name.id
                    && version.parse().is_ok_and(|v| {
                        crate::component::descriptor::version_matches(name.version, &v)
                    })
            })
        })
    }

    /// Tells a host of the component that a client came or went, when the
    /// component wants to know.
    fn notify(&self, socket: &Arc<Socket>, connected: bool) {
        let Some(resolved) = self.resolve(socket).filter(Resolved::wants_notices) else {
            return;
        };
        let notice = Routed::Lifecycle {
            connected,
            from: self.0.node_id.clone(),
            component: resolved.key.clone(),
            namespace: socket.namespace().name().to_string(),
            channel: resolved.channel,
            socket: socket.id().to_string(),
            session: socket.session_id().to_string(),
            user: socket.user().map(str::to_string),
        };
        let router = self.0.clone();
        tokio::spawn(async move { router.send(&resolved.key, false, notice).await });
    }
}

impl NamespaceHandler for ComponentChannel {
    fn authorize(&self, socket: &Arc<Socket>, _auth: &Value) -> Result<(), String> {
        let namespace = socket.namespace().name();
        match self.resolve(socket) {
            // Refused even while the registry still lists it (the undeploy
            // removes its record last).
            Some(resolved) if self.0.undeployed(&resolved.key).is_some() => {
                Err(super::UNDEPLOYED_ERROR.to_string())
            }
            Some(resolved) if resolved.channel == LOGGING || resolved.served => Ok(()),
            Some(resolved) => Err(format!(
                "component {} has no channel {:?} (namespace {namespace})",
                resolved.key, resolved.channel
            )),
            None if self.names_undeployed(socket) => Err(super::UNDEPLOYED_ERROR.to_string()),
            None => Err(format!("unknown component channel {namespace}")),
        }
    }

    fn on_connect(&self, socket: &Arc<Socket>) {
        self.notify(socket, true);
    }

    fn on_disconnect(&self, socket: &Arc<Socket>, _reason: DisconnectReason) {
        // A component's logging channel keeps a line allowance per socket.
        self.0.log_rates.forget(socket);
        self.notify(socket, false);
    }

    fn on_event(&self, socket: &Arc<Socket>, event: Event) {
        let Some(Resolved { key, channel, .. }) = self.resolve(socket) else {
            return error_ack(event.ack, "component unavailable");
        };
        if channel == LOGGING {
            return logging::on_log_event(&self.0, socket, event);
        }
        // One socket's events run one at a time, in the order sent (a `join`
        // answered before the `say` after it runs), at most
        // SOCKET_MAX_IN_FLIGHT of them queued.
        let router = self.0.clone();
        let Event { name, payload, ack } = event;
        let max = router.socket_max_in_flight;
        let caller = socket.clone();
        socket.run_in_order(max, ack, move |ack| async move {
            let request = Request {
                channel,
                event: name,
                args: payload.args,
                create_instance: false,
            };
            let answer = router.call(&caller, &key, request).await;
            router.reply(&caller, ack, answer).await;
        });
    }
}
