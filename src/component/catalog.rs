//! The components of the cluster as a node sees them: the service registry's
//! records read back as descriptors, and the one version resolver.
//!
//! Owns turning the cluster's opaque service records into [`ComponentInfo`]
//! (parsed once per registry snapshot, not per event) and every question asked
//! of them: the newest component matching a version fragment, the names a
//! channel goes by ([`Catalog::aliases`]), the provider of an intent, whether a
//! node hosts anything. Does not own the registry's storage (see
//! `crate::cluster::ServiceRegistry`) or routing (see `crate::mothership`).

use std::sync::Arc;

use parking_lot::Mutex;

use super::descriptor::version_matches;
use super::{ChannelName, Descriptor, Version};
use crate::cluster::{Cluster, Services};

/// A component as the cluster knows it: its descriptor and its live hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    pub descriptor: Descriptor,
    pub hosts: Vec<String>,
}

/// A node's parsed view of the cluster's components. Cheap to share.
pub struct Catalog {
    cluster: Arc<dyn Cluster>,
    /// The registry snapshot last parsed, and what it parsed to.
    parsed: Mutex<(Services, Arc<Vec<ComponentInfo>>)>,
}

impl Catalog {
    pub fn new(cluster: Arc<dyn Cluster>) -> Arc<Catalog> {
        let empty: Services = Arc::new(Vec::new());
        Arc::new(Catalog {
            cluster,
            parsed: Mutex::new((empty, Arc::new(Vec::new()))),
        })
    }

    /// Announces components this node hosts.
    pub fn register(&self, descriptors: &[Descriptor]) {
        let services = descriptors
            .iter()
            .map(|d| (d.key(), serde_json::to_string(d).unwrap_or_default()))
            .collect();
        self.cluster.register_services(services);
    }

    /// Every known component with its live hosts; re-parsed only when the
    /// registry changed.
    pub fn components(&self) -> Arc<Vec<ComponentInfo>> {
        let services = self.cluster.services();
        let mut parsed = self.parsed.lock();
        if !Arc::ptr_eq(&parsed.0, &services) {
            let components = services
                .iter()
                .filter_map(|record| {
                    let descriptor: Descriptor = serde_json::from_str(&record.spec).ok()?;
                    (descriptor.key() == record.name).then(|| ComponentInfo {
                        descriptor,
                        hosts: record.hosts.clone(),
                    })
                })
                .collect();
            *parsed = (services, Arc::new(components));
        }
        parsed.1.clone()
    }

    /// The newest component `id` whose version matches `fragment`.
    pub fn newest(&self, id: &str, fragment: &str) -> Option<ComponentInfo> {
        newest(&self.components(), id, fragment).cloned()
    }

    /// Every name of a component channel that resolves to the same version as
    /// `namespace` does now (just `namespace` for other namespaces):
    /// `/chat/1/main`, `/chat/1.0/main`, … for `chat@1.0`.
    pub fn aliases(&self, namespace: &str) -> Vec<String> {
        let Some(name) = ChannelName::parse(namespace) else {
            return vec![namespace.to_string()];
        };
        let components = self.components();
        let version_of = |fragment: &str| {
            newest(&components, name.id, fragment).map(|info| info.descriptor.version)
        };
        let Some(version) = version_of(name.version) else {
            return vec![namespace.to_string()];
        };
        let mut aliases: Vec<String> = fragments(version)
            .into_iter()
            .filter(|fragment| version_of(fragment) == Some(version))
            .map(|fragment| format!("/{}/{fragment}/{}", name.id, name.channel))
            .collect();
        if !aliases.iter().any(|alias| alias == namespace) {
            aliases.push(namespace.to_string());
        }
        aliases
    }

    /// The component (`id@version`, newest with a live host) and event that
    /// serve an intent.
    pub fn provider(&self, category: &str, action: &str) -> Option<(String, String)> {
        self.components()
            .iter()
            .filter(|info| !info.hosts.is_empty())
            .filter_map(|info| {
                let intent = info
                    .descriptor
                    .intents
                    .iter()
                    .find(|i| i.category == category && i.action == action)?;
                Some((
                    info.descriptor.version,
                    info.descriptor.key(),
                    intent.provider.clone(),
                ))
            })
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, key, provider)| (key, provider))
    }

    /// Whether `node` hosts any component, as far as the registry knows.
    pub fn is_host(&self, node: &str) -> bool {
        self.components()
            .iter()
            .any(|info| info.hosts.iter().any(|host| host == node))
    }
}

/// The one resolver: the newest of `components` named `id` matching `fragment`.
fn newest<'a>(
    components: &'a [ComponentInfo],
    id: &str,
    fragment: &str,
) -> Option<&'a ComponentInfo> {
    components
        .iter()
        .filter(|info| {
            info.descriptor.id == id && version_matches(fragment, &info.descriptor.version)
        })
        .max_by(|a, b| a.descriptor.version.cmp(&b.descriptor.version))
}

/// The version fragments a client may write for `version`: `1`, `1.0`, and
/// `1.0.3` when it has a micro part.
fn fragments(version: Version) -> Vec<String> {
    let mut fragments = vec![
        version.major.to_string(),
        format!("{}.{}", version.major, version.minor),
    ];
    fragments.extend(version.micro.map(|_| version.to_string()));
    fragments
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::memory::MemoryCluster;

    fn descriptor(id: &str, version: &str) -> Descriptor {
        serde_json::from_value(serde_json::json!({
            "id": id, "version": version, "channels": ["main"],
        }))
        .unwrap()
    }

    #[test]
    fn fragments_resolve_to_the_newest_match_and_aliases_follow() {
        let catalog = Catalog::new(Arc::new(MemoryCluster::new("n".into())));
        catalog.register(&[
            descriptor("chat", "1.0"),
            descriptor("chat", "1.2"),
            descriptor("chat", "2.0"),
        ]);
        let version = |fragment| catalog.newest("chat", fragment).map(|i| i.descriptor.key());
        assert_eq!(version("1").as_deref(), Some("chat@1.2"));
        assert_eq!(version("1.0").as_deref(), Some("chat@1.0"));
        assert_eq!(version("2").as_deref(), Some("chat@2.0"));
        assert_eq!(version("3"), None);
        assert_eq!(
            catalog.aliases("/chat/1/main"),
            vec!["/chat/1/main", "/chat/1.2/main"]
        );
        assert_eq!(catalog.aliases("/chat/1.0/main"), vec!["/chat/1.0/main"]);
        assert_eq!(catalog.aliases("/plain"), vec!["/plain"]);
        assert!(catalog.is_host("n") && !catalog.is_host("m"));
    }

    #[test]
    fn the_parsed_view_is_reused_until_the_registry_changes() {
        let catalog = Catalog::new(Arc::new(MemoryCluster::new("n".into())));
        catalog.register(&[descriptor("echo", "1.0")]);
        let first = catalog.components();
        assert!(Arc::ptr_eq(&first, &catalog.components()));
        catalog.register(&[descriptor("chat", "1.0")]);
        assert_eq!(catalog.components().len(), 2);
    }
}
