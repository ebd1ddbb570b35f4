//! Run-time changes to what this node hosts, as the operators' API asks:
//! hosting more components or exactly a wiring, undeploying one here, and
//! instances made without a client.
//!
//! Owns carrying each change out on this node: the router's table of hosted
//! components, announcing and withdrawing them in the registry, telling each
//! local socket of an undeployed component why before it is disconnected,
//! and refusing later connects to it. Does not own deciding what to host
//! (the desired state, see `crate::component::desired`), reaching other nodes
//! (the API's control messages) nor routing (see `super::router`).

use std::sync::Arc;

use serde_json::json;

use super::Mothership;
use super::core::render;
use crate::component::{ChannelName, Component};
use crate::socket::Payload;

/// The event each socket of an undeployed component gets before its
/// namespace is disconnected (a DISCONNECT packet carries no reason).
pub const UNDEPLOYED_EVENT: &str = "rain:undeployed";

/// The `connect_error` message of a CONNECT to an undeployed component.
pub const UNDEPLOYED_ERROR: &str = "component undeployed";

impl Mothership {
    /// Hosts `components` here too (replacing those of the same key), and
    /// announces them: routable as soon as the other nodes read the registry.
    pub fn host(&self, components: Vec<Arc<dyn Component>>) {
        self.rehost(components, |_| true);
    }

    /// Hosts exactly `components` here (a new wiring): the others are
    /// withdrawn. Returns the keys withdrawn.
    pub fn host_exactly(&self, components: Vec<Arc<dyn Component>>) -> Vec<String> {
        self.rehost(components, |_| false)
    }

    fn rehost(
        &self,
        components: Vec<Arc<dyn Component>>,
        keep: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let descriptors: Vec<_> = components
            .iter()
            .map(|component| component.descriptor().clone())
            .collect();
        let left = self.router.rehost(components, keep);
        if !left.is_empty() {
            self.router.io.cluster().unregister_services(&left);
        }
        self.router.catalog.register(&descriptors);
        left
    }

    /// Undeploys `key` (`id@version`) on this node: each local socket of its
    /// channels gets `rain:undeployed {component, version, reason}` and then
    /// a DISCONNECT of that namespace; it is no longer hosted here; later
    /// CONNECTs to its channels get `connect_error` "component undeployed".
    /// Returns how many sockets were disconnected.
    pub fn undeploy(&self, key: &str, reason: &str) -> usize {
        // Which namespaces are its channels is asked before anything changes:
        // afterwards the version fragments resolve elsewhere, or nowhere.
        let namespaces: Vec<_> = self
            .router
            .io
            .namespaces()
            .into_iter()
            .filter(|namespace| {
                ChannelName::parse(namespace.name())
                    .and_then(|name| self.router.catalog.newest(name.id, name.version))
                    .is_some_and(|info| info.descriptor.key() == key)
            })
            .collect();
        self.router.mark_undeployed(key, Some(reason.to_string()));
        if self.router.component(key).is_some() {
            self.router.rehost(Vec::new(), |hosted| hosted != key);
            self.router
                .io
                .cluster()
                .unregister_services(&[key.to_string()]);
        }
        let (id, version) = key.split_once('@').unwrap_or((key, ""));
        let notice = json!({ "component": id, "version": version, "reason": reason });
        let mut disconnected = 0;
        for namespace in namespaces {
            for socket in namespace.local_sockets() {
                let _ = socket.emit(UNDEPLOYED_EVENT, Payload::new(vec![notice.clone()]));
                socket.disconnect();
                disconnected += 1;
            }
        }
        disconnected
    }

    /// Marks components undeployed (read from the desired state at start) or,
    /// with `None`, deployed again.
    pub fn mark_undeployed(&self, key: &str, reason: Option<String>) {
        self.router.mark_undeployed(key, reason);
    }

    /// Every component undeployed, as `id@version`.
    pub fn undeployed_keys(&self) -> Vec<String> {
        self.router.undeployed_keys()
    }

    /// Makes an instance of a component hosted here without a client (the
    /// API's instantiate); `None` when it is not hosted here.
    pub fn instantiate(&self, key: &str) -> Option<String> {
        let component = self.router.component(key)?;
        Some(render::create_instance(
            &self.router,
            component.as_ref(),
            "",
        ))
    }

    /// The node's view of the cluster's components.
    pub fn catalog(&self) -> &Arc<crate::component::Catalog> {
        &self.router.catalog
    }
}
