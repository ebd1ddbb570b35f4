//! What operators want the cluster to host, as the components read it from
//! the cluster's desired state (`crate::cluster::Deployments::desired`): each
//! node's or group's wiring, the components deployed at run time and their
//! descriptors, and the components undeployed.
//!
//! Owns the names of those values (all here, nowhere else), reading them
//! ([`Desired`]), the changes that write them ([`Change`] lists), and making
//! the component a key names ([`Desired::build`]). Does not own storing them
//! (see `crate::cluster`) nor applying them to a running node (see
//! `crate::mothership` and the API).
//!
//! The values, in one hash, each field a name below:
//! - `wiring:{target}`: present when the target's wiring was set (with
//!   `POST /rainservers`); then `wiring:{target}:{key}` for each component it
//!   hosts. A target is `node:{id}` or `group:{name}`. A node's own wiring
//!   wins over its group's; without either, the node hosts what its settings
//!   say (`COMPONENTS`, `COMPONENTS_DIR`).
//! - `deploy:{target}:{key}`: a component deployed at run time to a target,
//!   hosted on top of the wiring.
//! - `descriptor:{key}`: a run-time component's descriptor (JSON).
//! - `undeployed:{key}`: why a component was undeployed (a later CONNECT to
//!   its channels is refused saying so); gone when it is deployed again.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::{Component, Descriptor, DescriptorError, demo};
use crate::config::Settings;

/// A change to the desired state: set a value, or remove it (`None`).
pub type Change = (String, Option<String>);

/// Whom a wiring or a deploy is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Node(String),
    Group(String),
}

impl Target {
    fn name(&self) -> String {
        match self {
            Target::Node(id) => format!("node:{id}"),
            Target::Group(group) => format!("group:{group}"),
        }
    }
}

/// The desired state as last read.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    values: HashMap<String, String>,
}

impl From<HashMap<String, String>> for Desired {
    fn from(values: HashMap<String, String>) -> Self {
        Desired { values }
    }
}

impl Desired {
    /// The keys a target's wiring lists; `None` when it was never set.
    fn wiring_of(&self, target: &Target) -> Option<BTreeSet<String>> {
        let marker = format!("wiring:{}", target.name());
        self.values.contains_key(&marker).then(|| {
            let prefix = format!("{marker}:");
            self.values
                .keys()
                .filter_map(|name| name.strip_prefix(&prefix).map(str::to_string))
                .collect()
        })
    }

    /// The keys deployed at run time to a target.
    fn deployed_to(&self, target: &Target) -> BTreeSet<String> {
        let prefix = format!("deploy:{}:", target.name());
        self.values
            .keys()
            .filter_map(|name| name.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    /// What a node of `group` should host, by key: its own wiring, else its
    /// group's, else `own` (the keys its settings give it), with what was
    /// deployed to it at run time added and what was undeployed left out.
    pub fn hosted_by(&self, node: &str, group: &str, own: &[String]) -> Vec<String> {
        let node_target = Target::Node(node.to_string());
        let group_target = Target::Group(group.to_string());
        let mut keys = self
            .wiring_of(&node_target)
            .or_else(|| self.wiring_of(&group_target))
            .unwrap_or_else(|| own.iter().cloned().collect());
        keys.extend(self.deployed_to(&node_target));
        keys.extend(self.deployed_to(&group_target));
        let undeployed = self.undeployed();
        keys.retain(|key| !undeployed.iter().any(|(gone, _)| gone == key));
        keys.into_iter().collect()
    }

    /// A run-time component's descriptor.
    pub fn descriptor(&self, key: &str) -> Option<Descriptor> {
        let text = self.values.get(&format!("descriptor:{key}"))?;
        serde_json::from_str(text).ok()
    }

    /// The components undeployed, with why.
    pub fn undeployed(&self) -> Vec<(String, String)> {
        let mut undeployed: Vec<(String, String)> = self
            .values
            .iter()
            .filter_map(|(name, reason)| {
                name.strip_prefix("undeployed:")
                    .map(|key| (key.to_string(), reason.clone()))
            })
            .collect();
        undeployed.sort();
        undeployed
    }

    /// Whether any target lists `key` (in a wiring or a deploy).
    pub fn mentions(&self, key: &str) -> bool {
        let suffix = format!(":{key}");
        self.values.keys().any(|name| {
            (name.starts_with("wiring:") || name.starts_with("deploy:")) && name.ends_with(&suffix)
        })
    }

    /// The component `key` names, made on this node: one of `own` (from the
    /// settings), a built-in, or a run-time descriptor.
    pub fn build(
        &self,
        key: &str,
        own: &[Arc<dyn Component>],
        settings: &Settings,
    ) -> Result<Arc<dyn Component>, DescriptorError> {
        if let Some(component) = own.iter().find(|c| c.descriptor().key() == key) {
            return Ok(component.clone());
        }
        if let Some(descriptor) = self.descriptor(key) {
            return super::http_component(descriptor, settings);
        }
        demo::builtin(key, settings)
            .filter(|component| component.descriptor().key() == key)
            .ok_or_else(|| DescriptorError::UnknownComponent(key.to_string()))
    }

    /// Sets a target's wiring to exactly `keys`: what it deployed at run time
    /// is folded in (the wiring says all it hosts).
    pub fn set_wiring(&self, target: &Target, keys: &[String]) -> Vec<Change> {
        let marker = format!("wiring:{}", target.name());
        let deploys = format!("deploy:{}:", target.name());
        let members = format!("{marker}:");
        let mut changes: Vec<Change> = self
            .values
            .keys()
            .filter(|name| name.starts_with(&members) || name.starts_with(&deploys))
            .map(|name| (name.clone(), None))
            .collect();
        changes.sort();
        changes.push((marker.clone(), Some("1".into())));
        changes.extend(
            keys.iter()
                .map(|key| (format!("{marker}:{key}"), Some("1".into()))),
        );
        changes
    }
}

/// Deploys a run-time component to targets: its descriptor, a deploy entry
/// per target, and no undeploy mark.
pub fn deploy(descriptor: &Descriptor, targets: &[Target]) -> Vec<Change> {
    let key = descriptor.key();
    let mut changes = vec![
        (
            format!("descriptor:{key}"),
            Some(serde_json::to_string(descriptor).unwrap_or_default()),
        ),
        (format!("undeployed:{key}"), None),
    ];
    changes.extend(
        targets
            .iter()
            .map(|target| (format!("deploy:{}:{key}", target.name()), Some("1".into()))),
    );
    changes
}

impl Desired {
    /// Undeploys a component everywhere: out of every wiring and deploy, its
    /// descriptor gone, marked undeployed with `reason`.
    pub fn undeploy(&self, key: &str, reason: &str) -> Vec<Change> {
        let suffix = format!(":{key}");
        let mut changes: Vec<Change> = self
            .values
            .keys()
            .filter(|name| {
                (name.starts_with("wiring:") || name.starts_with("deploy:"))
                    && name.ends_with(&suffix)
            })
            .map(|name| (name.clone(), None))
            .collect();
        changes.sort();
        changes.push((format!("descriptor:{key}"), None));
        changes.push((format!("undeployed:{key}"), Some(reason.to_string())));
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(desired: &mut Desired, changes: Vec<Change>) {
        for (name, value) in changes {
            match value {
                Some(value) => desired.values.insert(name, value),
                None => desired.values.remove(&name),
            };
        }
    }

    fn descriptor(id: &str) -> Descriptor {
        serde_json::from_value(serde_json::json!({
            "id": id, "version": "1.0", "channels": ["main"],
            "handler": {"kind": "http", "url": "http://127.0.0.1:9/x"},
        }))
        .unwrap()
    }

    fn keys(list: &[&str]) -> Vec<String> {
        list.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn settings_decide_until_a_wiring_or_a_deploy_says_otherwise() {
        let mut desired = Desired::default();
        let own = keys(&["echo@1.0"]);
        assert_eq!(desired.hosted_by("a", "default", &own), own);
        apply(
            &mut desired,
            deploy(&descriptor("quiz"), &[Target::Group("default".into())]),
        );
        assert_eq!(
            desired.hosted_by("a", "default", &own),
            keys(&["echo@1.0", "quiz@1.0"])
        );
        assert_eq!(desired.hosted_by("b", "other", &own), own);
        let wiring = desired.set_wiring(&Target::Group("default".into()), &keys(&["chat@1.0"]));
        apply(&mut desired, wiring);
        assert_eq!(
            desired.hosted_by("a", "default", &own),
            keys(&["chat@1.0"]),
            "the wiring says all the group hosts: the deploy was folded in"
        );
        let wiring = desired.set_wiring(&Target::Node("a".into()), &[]);
        apply(&mut desired, wiring);
        assert_eq!(
            desired.hosted_by("a", "default", &own),
            Vec::<String>::new()
        );
        assert_eq!(desired.hosted_by("b", "default", &own), keys(&["chat@1.0"]));
    }

    #[test]
    fn an_undeploy_takes_a_component_out_of_everything_and_says_why() {
        let mut desired = Desired::default();
        apply(
            &mut desired,
            deploy(&descriptor("quiz"), &[Target::Node("a".into())]),
        );
        let wiring =
            desired.set_wiring(&Target::Group("g".into()), &keys(&["quiz@1.0", "echo@1.0"]));
        apply(&mut desired, wiring);
        assert!(desired.descriptor("quiz@1.0").is_some());
        assert!(desired.mentions("quiz@1.0"));
        let undeploy = desired.undeploy("quiz@1.0", "retired");
        apply(&mut desired, undeploy);
        assert!(!desired.mentions("quiz@1.0"));
        assert!(desired.descriptor("quiz@1.0").is_none());
        assert_eq!(
            desired.undeployed(),
            vec![("quiz@1.0".to_string(), "retired".to_string())]
        );
        assert_eq!(desired.hosted_by("x", "g", &[]), keys(&["echo@1.0"]));
        assert_eq!(
            desired.hosted_by("y", "other", &keys(&["quiz@1.0", "echo@1.0"])),
            keys(&["echo@1.0"]),
            "an undeployed component is not hosted, whatever the settings say"
        );
        apply(
            &mut desired,
            deploy(&descriptor("quiz"), &[Target::Node("a".into())]),
        );
        assert!(desired.undeployed().is_empty(), "deployed again");
    }

    #[test]
    fn keys_are_built_from_the_settings_a_built_in_or_a_descriptor() {
        let settings = Settings::default();
        let mut desired = Desired::default();
        apply(
            &mut desired,
            deploy(&descriptor("quiz"), &[Target::Node("a".into())]),
        );
        let built = |key: &str| {
            desired
                .build(key, &[], &settings)
                .map(|c| c.descriptor().key())
        };
        assert_eq!(built("echo@1.0").unwrap(), "echo@1.0");
        assert_eq!(built("quiz@1.0").unwrap(), "quiz@1.0");
        assert!(matches!(
            built("echo@2.0"),
            Err(DescriptorError::UnknownComponent(_))
        ));
        assert!(matches!(
            built("nope@1.0"),
            Err(DescriptorError::UnknownComponent(_))
        ));
    }
}
