//! The Mothership: where each component channel's events go, and how the answer
//! comes back.
//!
//! Serves the namespaces of component channels (`/{id}/{version}/{channel}`, a
//! version fragment resolving to the newest registered match), `/core`
//! (`request_intent`, `change_language`, `render`, handled on every node) and the
//! logging channels (`/core/logging`, `/{id}/{version}/logging`). An event goes
//! to this node's handler when it hosts the component (unless
//! `ROUTING=round-robin`), else to a live host picked round-robin by the
//! cluster, in the same step that delivers it to that host (a host that has
//! died but is not purged yet is skipped); the handler runs there, and its
//! answer (with any room changes for the calling socket) comes back to this
//! node to reach the client's ack callback as `(error | null, data)`.
//!
//! This file owns the [`Mothership`] type and [`Mothership::install`], which
//! wires the parts together:
//!
//! | file | owns |
//! | --- | --- |
//! | `messages.rs` | the messages between nodes ([`Routed`]) and their format |
//! | `router.rs` | the node's [`router::Router`]: call a host, serve a request, reply; pending answers |
//! | `channel.rs` | the component channel namespaces: authorize, connect notices, events |
//! | `core/` | `/core`: one file per command, and the dispatcher |
//! | `logging.rs` | the logging channels, and a log line's way to its rendering node |
//! | `deploy.rs` | run-time changes to what this node hosts (the operators' API): host, host exactly, undeploy here, instances made without a client |
//! | `counters.rs` | what the components hosted here did (events, errors, handler latency) |
//!
//! Does not own the component registry's storage (see `crate::cluster`), the
//! version resolver (see `crate::component::Catalog`) or the components
//! themselves (see `crate::component`).

mod channel;
mod core;
pub mod counters;
mod deploy;
mod logging;
pub mod messages;
mod router;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

pub use crate::config::Routing;
pub use deploy::{UNDEPLOYED_ERROR, UNDEPLOYED_EVENT};
pub use messages::Routed;

use crate::component::desired::Desired;
use crate::component::{Catalog, ChannelName, Component};
use crate::config::Settings;
use crate::io::SocketIo;
use channel::ComponentChannel;
use logging::LoggingChannel;
use messages::TOPIC;
use router::{Receiver, Router};

/// The Mothership of one node. Cheap to clone.
#[derive(Clone)]
pub struct Mothership {
    router: Arc<Router>,
    /// What the node was started with (its settings' components): what a
    /// wiring's keys are made from first, and what it hosts without one.
    installed: Arc<Vec<Arc<dyn Component>>>,
}

impl Mothership {
    /// Serves component channels, `/core` and logging on `io`, hosting
    /// `components` on this node (announced to the cluster).
    pub fn install(
        io: &SocketIo,
        settings: &Settings,
        components: Vec<Arc<dyn Component>>,
    ) -> Mothership {
        let installed = Arc::new(components.clone());
        let hosted: HashMap<String, Arc<dyn Component>> = components
            .into_iter()
            .map(|component| (component.descriptor().key(), component))
            .collect();
        let descriptors: Vec<_> = hosted.values().map(|c| c.descriptor().clone()).collect();
        let catalog = Catalog::new(io.cluster().clone());
        let router = Arc::new(Router::new(io.clone(), catalog.clone(), settings, hosted));
        io.cluster()
            .on_topic(TOPIC, Arc::new(Receiver(router.clone())));
        // Every name of a component channel, whatever its version, shares the
        // channels of `{id}/{channel}`: a room broadcast to the names of one
        // version travels once.
        io.cluster().group_channels(Arc::new(|namespace: &str| {
            ChannelName::parse(namespace)
                .filter(|name| name.id != "core")
                .map(|name| format!("{}/{}", name.id, name.channel))
        }));
        io.namespace("/core", core::CoreChannel(router.clone()));
        io.namespace("/core/logging", LoggingChannel(router.clone()));
        io.dynamic_namespace(
            // Any channel-shaped name: `authorize` then explains what is wrong
            // with an unknown one (and the empty namespace is dropped again).
            move |name| ChannelName::parse(name).is_some_and(|c| c.id != "core"),
            ComponentChannel(router.clone()),
        );
        catalog.register(&descriptors);
        Mothership { router, installed }
    }

    /// [`Mothership::install`], hosting what the operators' desired state
    /// says for this node: its wiring (else `components`), what was deployed
    /// to it at run time, never what was undeployed (connects to those are
    /// refused). A key this node cannot make is left out with a warning.
    pub fn install_as_desired(
        io: &SocketIo,
        settings: &Settings,
        components: Vec<Arc<dyn Component>>,
        desired: &Desired,
    ) -> Mothership {
        let own: Vec<String> = components.iter().map(|c| c.descriptor().key()).collect();
        let hosted = desired
            .hosted_by(&settings.node_id, &settings.node_group, &own)
            .iter()
            .filter_map(|key| match desired.build(key, &components, settings) {
                Ok(component) => Some(component),
                Err(error) => {
                    tracing::warn!(%error, "a component of this node's wiring is left out");
                    None
                }
            })
            .collect();
        let mut mothership = Mothership::install(io, settings, hosted);
        mothership.installed = Arc::new(components);
        for (key, reason) in desired.undeployed() {
            mothership.mark_undeployed(&key, Some(reason));
        }
        mothership
    }

    /// The components the node was started with.
    pub fn installed(&self) -> &[Arc<dyn Component>] {
        &self.installed
    }

    /// Routed requests for components hosted here that are being served now
    /// (a draining node waits for them: their callers get their answers).
    pub fn serving(&self) -> usize {
        self.router.serving()
    }

    /// The components this node hosts, as `id@version`.
    pub fn hosted(&self) -> Vec<String> {
        self.router.hosted_keys()
    }

    /// What the components hosted here did so far.
    pub fn counters(&self) -> &counters::ComponentCounters {
        &self.router.counters
    }

    /// Sockets on this node in component channels: `(id@version, namespace,
    /// count)`, a namespace's component being the one its name resolves to
    /// now. Logging channels are left out.
    pub fn channel_sockets(&self) -> Vec<(String, String, usize)> {
        let io = &self.router.io;
        io.local_sockets_by_namespace()
            .into_iter()
            .filter_map(|(namespace, count)| {
                let name = ChannelName::parse(&namespace).filter(|name| name.id != "core")?;
                if name.channel == logging::LOGGING {
                    return None;
                }
                let info = self.router.catalog.newest(name.id, name.version)?;
                Some((info.descriptor.key(), namespace.clone(), count))
            })
            .collect()
    }
}
