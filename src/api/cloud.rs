//! The Cloud API's shared state and the operations a node carries out for it.
//!
//! Owns [`Cloud`] (what every Cloud API route reads: the cluster, this node's
//! Mothership and settings, the control plane) and [`Executor`] for it: what
//! this node does when the API, on any node, asks it to unregister, reset,
//! host what its wiring says, undeploy a component, make or serve an
//! instance. Does not own the routes (see `super::rainservers`,
//! `super::webcomponents`), the messages between nodes (see
//! `super::control`) nor the changes themselves (see `crate::mothership`,
//! `crate::node_control`).

use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::{Value, json};

use super::ApiError;
use super::control::{Control, Executor, Op};
use crate::cluster::Cluster;
use crate::component::desired::Desired;
use crate::config::Settings;
use crate::io::SocketIo;
use crate::mothership::Mothership;
use crate::node_control::{NodeControl, NodeControlError};

/// What the Cloud API's routes share. Cheap to clone.
#[derive(Clone)]
pub struct Cloud {
    pub(super) io: SocketIo,
    pub(super) cluster: Arc<dyn Cluster>,
    pub(super) mothership: Option<Mothership>,
    pub(super) settings: Arc<Settings>,
    pub(super) control: Arc<Control>,
    /// Unregister, register again, reset (absent in an embedding that
    /// builds its API without a server).
    pub(super) node_control: Option<NodeControl>,
}

/// An answer the API passes on as the nodes that carried an operation out
/// gave it (a JSON object).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(value_type = Object)]
pub struct Answer(pub Value);

/// A live node as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NodeSummary {
    pub id: String,
    pub address: String,
    pub group: String,
    pub state: String,
    /// Milliseconds since the Unix epoch.
    pub started_at: u64,
    /// Its last heartbeat, milliseconds since the Unix epoch (Redis's clock).
    pub heartbeat: u64,
    /// Its statistics as of that heartbeat.
    #[schema(value_type = Option<Object>)]
    pub stats: Option<Value>,
}

impl Cloud {
    pub fn new(io: SocketIo, settings: &Settings, mothership: Option<Mothership>) -> Cloud {
        let cluster = io.cluster().clone();
        Cloud {
            control: Arc::new(Control::new(cluster.clone(), settings.route_timeout())),
            io,
            cluster,
            mothership,
            settings: Arc::new(settings.clone()),
            node_control: None,
        }
    }

    /// Carries out unregister, register and reset with `node_control`.
    pub fn with_node_control(mut self, node_control: NodeControl) -> Cloud {
        self.node_control = Some(node_control);
        self
    }

    /// Unregisters, registers again or resets this node.
    async fn control_node(&self, op: Op) -> Result<Value, ApiError> {
        let control = self.node_control.as_ref().ok_or_else(|| {
            ApiError::Conflict("this node cannot be unregistered or reset".into())
        })?;
        let done = match op {
            Op::Unregister => control.unregister().await,
            Op::Register => control.register().await,
            _ => control.reset().await,
        };
        match done {
            Ok(()) => Ok(json!({ "node": self.node_id(), "state": control.state() })),
            Err(NodeControlError::ShuttingDown) => Err(ApiError::Conflict(format!(
                "node {} is shutting down",
                self.node_id()
            ))),
            Err(NodeControlError::Cluster(error)) => Err(error.into()),
        }
    }

    pub fn node_id(&self) -> &str {
        self.cluster.node_id()
    }

    /// The Mothership, or 409 on a node that runs none (an embedding with
    /// plain namespaces only).
    pub(super) fn mothership(&self) -> Result<&Mothership, ApiError> {
        self.mothership.as_ref().ok_or_else(|| {
            ApiError::Conflict("this node runs no Mothership (no components)".into())
        })
    }

    /// Every live node (this one included), by id, from their records.
    pub(super) async fn nodes(&self) -> Result<Vec<NodeSummary>, ApiError> {
        let records = self.cluster.nodes().await?;
        Ok(records
            .into_iter()
            .map(|record| NodeSummary {
                stats: record
                    .stats
                    .as_deref()
                    .and_then(|text| serde_json::from_str(text).ok()),
                id: record.id,
                address: record.address,
                group: record.group,
                state: record.state,
                started_at: record.started_at,
                heartbeat: record.heartbeat,
            })
            .collect())
    }

    /// A live node, or 404.
    pub(super) async fn node(&self, id: &str) -> Result<NodeSummary, ApiError> {
        self.nodes()
            .await?
            .into_iter()
            .find(|node| node.id == id)
            .ok_or_else(|| ApiError::Missing(format!("no live node {id:?}")))
    }

    /// The desired state as it is now.
    pub(super) async fn desired(&self) -> Result<Desired, ApiError> {
        Ok(Desired::from(self.cluster.desired().await?))
    }

    /// Hosts what the desired state says for this node.
    async fn adopt(&self) -> Result<Value, ApiError> {
        let mothership = self.mothership()?;
        let desired = self.desired().await?;
        let installed = mothership.installed();
        let own: Vec<String> = installed.iter().map(|c| c.descriptor().key()).collect();
        let keys = desired.hosted_by(self.node_id(), &self.settings.node_group, &own);
        let mut components = Vec::new();
        let mut refused = Vec::new();
        for key in &keys {
            match desired.build(key, installed, &self.settings) {
                Ok(component) => components.push(component),
                Err(error) => refused.push(error.to_string()),
            }
        }
        let withdrawn = mothership.host_exactly(components);
        let undeployed = desired.undeployed();
        for key in mothership.undeployed_keys() {
            if !undeployed.iter().any(|(k, _)| *k == key) {
                mothership.mark_undeployed(&key, None);
            }
        }
        for (key, reason) in undeployed {
            mothership.mark_undeployed(&key, Some(reason));
        }
        self.cluster.flush().await?;
        if !refused.is_empty() {
            return Err(ApiError::Conflict(format!(
                "node {} cannot host: {}",
                self.node_id(),
                refused.join("; ")
            )));
        }
        Ok(json!({
            "node": self.node_id(),
            "hosted": mothership.hosted(),
            "withdrawn": withdrawn,
        }))
    }

    async fn execute_here(&self, op: Op) -> Result<Value, ApiError> {
        match op {
            Op::Adopt => self.adopt().await,
            Op::Undeploy { key, reason } => {
                let disconnected = self.mothership()?.undeploy(&key, &reason);
                self.cluster.flush().await?;
                Ok(json!({ "node": self.node_id(), "disconnected": disconnected }))
            }
            Op::Instantiate { key } => {
                let instance = self.mothership()?.instantiate(&key).ok_or_else(|| {
                    ApiError::Conflict(format!("{key} is not hosted on {}", self.node_id()))
                })?;
                self.cluster.flush().await?;
                Ok(json!({ "node": self.node_id(), "instance": instance }))
            }
            Op::ServeInstance { instance, key } => {
                if !self.mothership()?.hosted().contains(&key) {
                    return Err(ApiError::Conflict(format!(
                        "{key} is not hosted on {}",
                        self.node_id()
                    )));
                }
                let record = self
                    .cluster
                    .instance(&instance)
                    .await?
                    .ok_or_else(|| ApiError::Missing(format!("no instance {instance:?}")))?;
                let mut nodes: Vec<String> = record
                    .fields
                    .get("nodes")
                    .map(|list| list.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
                if !nodes.iter().any(|node| node == self.node_id()) {
                    nodes.push(self.node_id().to_string());
                }
                let updated = self
                    .cluster
                    .update_instance(&instance, vec![("nodes".into(), nodes.join(","))])
                    .await?;
                if !updated {
                    return Err(ApiError::Missing(format!("no instance {instance:?}")));
                }
                Ok(json!({ "node": self.node_id(), "instance": instance, "nodes": nodes }))
            }
            Op::Refresh { key } => {
                let mothership = self.mothership()?;
                let desired = self.desired().await?;
                if !mothership.hosted().contains(&key) {
                    return Err(ApiError::Conflict(format!(
                        "{key} is not hosted on {}",
                        self.node_id()
                    )));
                }
                let component = desired
                    .build(&key, mothership.installed(), &self.settings)
                    .map_err(|error| ApiError::Conflict(error.to_string()))?;
                mothership.host(vec![component]);
                self.cluster.flush().await?;
                Ok(json!({ "node": self.node_id(), "component": key }))
            }
            Op::Unregister | Op::Register | Op::Reset => self.control_node(op).await,
        }
    }
}

impl Executor for Cloud {
    fn execute(&self, op: Op) -> BoxFuture<'static, Result<Value, ApiError>> {
        let cloud = self.clone();
        async move { cloud.execute_here(op).await }.boxed()
    }
}
