//! `/webcomponent`: components (a version with its hosts and instances, RAIN's
//! *webcomponents*), their instances, and run-time deploys.
//!
//! Owns the routes, their bodies and answers: listing (paged), one component,
//! its descriptor and statistics, one instance; instantiating on a host
//! picked round-robin, serving an instance on another node too, refreshing,
//! stopping; deploying an HTTP backend component at run time to nodes or a
//! group (its URL under `BACKEND_URLS`, persisted so restarted nodes host it
//! again) and undeploying a component everywhere. Reads come from the shared
//! state; what a node must do is asked of it (see `super::control`). Does
//! not own carrying the changes out (see `super::cloud`,
//! `crate::mothership`).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::ApiError;
use super::body::ApiJson;
use super::cloud::{Answer, Cloud};
use super::control::Op;
use super::openapi::ErrorBody;
use crate::cluster::InstanceRecord;
use crate::component::desired::{self, Target};
use crate::component::{ComponentInfo, Descriptor, HandlerSpec, Version};
use crate::config::{redact_url, valid_node_id};

/// The most items a page, a list of nodes or of components in a body may
/// hold.
pub const MAX_LISTED: usize = 500;

/// Instances read to list one component's.
const INSTANCES_READ: usize = 10_000;

/// A component as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ComponentView {
    /// `id@version`.
    pub key: String,
    pub id: String,
    pub version: String,
    pub channels: Vec<String>,
    /// `http` (a backend) or `rust` (code in the node).
    pub handler: String,
    /// Its live hosts.
    pub hosts: Vec<String>,
    /// Deployed at run time through the API (rather than by nodes' settings).
    pub deployed: bool,
}

/// A page of components.
#[derive(Debug, Serialize, ToSchema)]
pub struct ComponentPage {
    pub total: usize,
    pub start: usize,
    pub items: Vec<ComponentView>,
}

/// An instance as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceView {
    pub id: String,
    /// `id@version` of its component.
    pub component: Option<String>,
    /// The node that made it (and keeps it alive).
    pub node: Option<String>,
    /// Other nodes serving it too.
    pub nodes: Vec<String>,
    /// Milliseconds since the Unix epoch.
    pub created: Option<u64>,
    pub state: Option<String>,
    /// Made for a client's render (its socket id), or empty when made
    /// through the API.
    pub socket: Option<String>,
}

impl From<&InstanceRecord> for InstanceView {
    fn from(record: &InstanceRecord) -> Self {
        let field = |name: &str| record.fields.get(name).cloned();
        InstanceView {
            id: record.id.clone(),
            component: match (field("component"), field("version")) {
                (Some(id), Some(version)) => Some(format!("{id}@{version}")),
                _ => None,
            },
            node: field("node"),
            nodes: field("nodes")
                .map(|list| {
                    list.split(',')
                        .filter(|n| !n.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            created: field("created").and_then(|c| c.parse().ok()),
            state: field("state"),
            socket: field("socket"),
        }
    }
}

fn view(info: &ComponentInfo, deployed: bool) -> ComponentView {
    let descriptor = &info.descriptor;
    ComponentView {
        key: descriptor.key(),
        id: descriptor.id.clone(),
        version: descriptor.version.to_string(),
        channels: descriptor.channels.clone(),
        handler: match descriptor.handler {
            Some(HandlerSpec::Http { .. }) => "http".into(),
            None => "rust".into(),
        },
        hosts: info.hosts.clone(),
        deployed,
    }
}

/// `?start=&range=` of the listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 0-based offset.
    #[param(minimum = 0)]
    pub start: Option<usize>,
    /// Page size: default 50, at most 500.
    #[param(minimum = 1, maximum = 500)]
    pub range: Option<usize>,
}

/// The components of the cluster, sorted by key.
async fn components(cloud: &Cloud) -> Result<(Vec<ComponentInfo>, desired::Desired), ApiError> {
    let catalog = cloud.mothership()?.catalog();
    let mut infos: Vec<ComponentInfo> = catalog.components().as_ref().clone();
    infos.sort_by_key(|info| info.descriptor.key());
    Ok((infos, cloud.desired().await?))
}

/// A page of the cluster's components, sorted by `id@version`.
#[utoipa::path(get, path = "/webcomponent/all", tag = "components",
    params(PageQuery),
    responses((status = 200, description = "A page of components", body = ComponentPage),
        (status = 400, description = "start or range out of bounds", body = ErrorBody),
        (status = 409, description = "This node runs no Mothership", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody)))]
pub async fn all(
    State(cloud): State<Cloud>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<ComponentPage>, ApiError> {
    let Query(page) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let start = page.start.unwrap_or(0);
    let range = page.range.unwrap_or(50);
    if !(1..=MAX_LISTED).contains(&range) {
        return Err(ApiError::BadRequest(format!(
            "range: must be 1 to {MAX_LISTED}"
        )));
    }
    let (infos, desired) = components(&cloud).await?;
    let items = infos
        .iter()
        .skip(start)
        .take(range)
        .map(|info| view(info, desired.descriptor(&info.descriptor.key()).is_some()))
        .collect();
    Ok(Json(ComponentPage {
        total: infos.len(),
        start,
        items,
    }))
}

/// Every component of the cluster as the API shows it, sorted by key.
pub(super) async fn views(cloud: &Cloud) -> Result<Vec<ComponentView>, ApiError> {
    let (infos, desired) = components(cloud).await?;
    Ok(infos
        .iter()
        .map(|info| view(info, desired.descriptor(&info.descriptor.key()).is_some()))
        .collect())
}

/// A component by `{id}/{version}` (the exact version), or 404.
async fn component(cloud: &Cloud, id: &str, version: &str) -> Result<ComponentInfo, ApiError> {
    let key = key_of(id, version)?;
    let (infos, _) = components(cloud).await?;
    infos
        .into_iter()
        .find(|info| info.descriptor.key() == key)
        .ok_or_else(|| ApiError::Missing(format!("no component {key}")))
}

/// `id@version` of a route's `{id}/{version}`; one that is not well formed
/// names no component (404).
fn key_of(id: &str, version: &str) -> Result<String, ApiError> {
    let missing = || ApiError::Missing(format!("no component {id}@{version}"));
    let version: Version = version.parse().map_err(|_| missing())?;
    if !crate::component::descriptor::valid_name(id) {
        return Err(missing());
    }
    Ok(format!("{id}@{version}"))
}

/// One component with its instances.
#[derive(Debug, Serialize, ToSchema)]
pub struct ComponentDetail {
    #[serde(flatten)]
    pub component: ComponentView,
    pub instances: Vec<InstanceView>,
}

/// One component: its hosts and instances.
#[utoipa::path(get, path = "/webcomponent/{id}/{version}", tag = "components",
    params(("id" = String, Path, description = "Component id"), ("version" = String, Path, description = "Its exact version, major.minor[.micro]")),
    responses((status = 200, description = "The component", body = ComponentDetail),
        (status = 404, description = "No such component", body = ErrorBody),
        (status = 409, description = "This node runs no Mothership", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody)))]
pub async fn one(
    State(cloud): State<Cloud>,
    Path((id, version)): Path<(String, String)>,
) -> Result<Json<ComponentDetail>, ApiError> {
    let info = component(&cloud, &id, &version).await?;
    let key = info.descriptor.key();
    let deployed = cloud.desired().await?.descriptor(&key).is_some();
    let (instances, _) = cloud.cluster.instances(INSTANCES_READ).await?;
    let instances = instances
        .iter()
        .map(InstanceView::from)
        .filter(|instance| instance.component.as_deref() == Some(&key))
        .take(MAX_LISTED)
        .collect();
    Ok(Json(ComponentDetail {
        component: view(&info, deployed),
        instances,
    }))
}

/// A component's descriptor (a backend URL's password, if any, hidden).
#[utoipa::path(get, path = "/webcomponent/{id}/{version}/descriptor", tag = "components",
    params(("id" = String, Path, description = "Component id"), ("version" = String, Path, description = "Its exact version, major.minor[.micro]")),
    responses((status = 200, description = "The descriptor", body = Descriptor),
        (status = 404, description = "No such component", body = ErrorBody),
        (status = 409, description = "This node runs no Mothership", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody)))]
pub async fn descriptor(
    State(cloud): State<Cloud>,
    Path((id, version)): Path<(String, String)>,
) -> Result<Json<Descriptor>, ApiError> {
    let mut descriptor = component(&cloud, &id, &version).await?.descriptor;
    if let Some(HandlerSpec::Http { url, .. }) = &mut descriptor.handler {
        *url = redact_url(url);
    }
    Ok(Json(descriptor))
}

/// A component's statistics, per node and over the cluster.
#[derive(Debug, Serialize, ToSchema)]
pub struct ComponentStatistics {
    pub component: String,
    /// Events its handlers ran, on every host.
    pub events: u64,
    /// Of those, the ones answered with an error.
    pub errors: u64,
    /// Handler latency: the highest of the hosts' p50 and p99 (an upper
    /// bound; each host's own figures are under `nodes`).
    pub latency_ms: Latency,
    /// Sockets connected to each of its channels, over every node.
    pub sockets_per_channel: BTreeMap<String, u64>,
    /// Each node's figures, as of its last heartbeat.
    #[schema(value_type = Object)]
    pub nodes: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

/// A component's statistics: events, errors, handler latency and sockets
/// per channel, per node and over the cluster.
#[utoipa::path(get, path = "/webcomponent/{id}/{version}/statistics", tag = "components",
    params(("id" = String, Path, description = "Component id"), ("version" = String, Path, description = "Its exact version, major.minor[.micro]")),
    responses((status = 200, description = "Its statistics", body = ComponentStatistics),
        (status = 404, description = "No such component", body = ErrorBody),
        (status = 409, description = "This node runs no Mothership", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody)))]
pub async fn statistics(
    State(cloud): State<Cloud>,
    Path((id, version)): Path<(String, String)>,
) -> Result<Json<ComponentStatistics>, ApiError> {
    let key = component(&cloud, &id, &version).await?.descriptor.key();
    let mut statistics = ComponentStatistics {
        component: key.clone(),
        events: 0,
        errors: 0,
        latency_ms: Latency::default(),
        sockets_per_channel: BTreeMap::new(),
        nodes: BTreeMap::new(),
    };
    for node in cloud.nodes().await? {
        let Some(figures) = node
            .stats
            .as_ref()
            .and_then(|stats| stats.get("components"))
            .and_then(|components| components.get(&key))
        else {
            continue;
        };
        let number = |name: &str| figures.get(name).and_then(Value::as_u64).unwrap_or(0);
        statistics.events += number("events");
        statistics.errors += number("errors");
        let latency = |quantile: &str| {
            figures
                .get("latency_ms")
                .and_then(|latency| latency.get(quantile))
                .and_then(Value::as_f64)
        };
        let higher = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        statistics.latency_ms.p50 = higher(statistics.latency_ms.p50, latency("p50"));
        statistics.latency_ms.p99 = higher(statistics.latency_ms.p99, latency("p99"));
        if let Some(Value::Object(channels)) = figures.get("sockets_per_channel") {
            for (namespace, count) in channels {
                *statistics
                    .sockets_per_channel
                    .entry(namespace.clone())
                    .or_default() += count.as_u64().unwrap_or(0);
            }
        }
        statistics.nodes.insert(node.id, figures.clone());
    }
    Ok(Json(statistics))
}

/// One instance.
#[utoipa::path(get, path = "/webcomponent/{instance}", tag = "instances",
    params(("instance" = String, Path, description = "An instance id")),
    responses((status = 200, description = "The instance", body = InstanceView),
        (status = 404, description = "No such instance", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody)))]
pub async fn instance(
    State(cloud): State<Cloud>,
    Path(instance): Path<String>,
) -> Result<Json<InstanceView>, ApiError> {
    let record = cloud
        .cluster
        .instance(&instance)
        .await?
        .ok_or_else(|| ApiError::Missing(format!("no instance {instance:?}")))?;
    Ok(Json(InstanceView::from(&record)))
}

/// What an instantiate made.
#[derive(Debug, Serialize, ToSchema)]
pub struct Instantiated {
    pub component: String,
    pub node: String,
    pub instance: String,
}

/// Makes an instance of a component on a host picked round-robin.
#[utoipa::path(post, path = "/webcomponent/{id}/{version}", tag = "instances",
    params(("id" = String, Path, description = "Component id"), ("version" = String, Path, description = "Its exact version, major.minor[.micro]")),
    responses((status = 200, description = "The instance made", body = Instantiated),
        (status = 404, description = "No such component", body = ErrorBody),
        (status = 409, description = "No live host, or no Mothership here", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody),
        (status = 504, description = "The host did not confirm within ROUTE_TIMEOUT_MS", body = ErrorBody)))]
pub async fn instantiate(
    State(cloud): State<Cloud>,
    Path((id, version)): Path<(String, String)>,
) -> Result<Json<Instantiated>, ApiError> {
    let key = component(&cloud, &id, &version).await?.descriptor.key();
    let (node, answer) = cloud
        .control
        .run_on_a_host(&key, Op::Instantiate { key: key.clone() })
        .await?;
    let instance = answer
        .get("instance")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Ok(Json(Instantiated {
        component: key,
        node,
        instance,
    }))
}

/// The body of `POST /webcomponent/{instance}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServeOn {
    /// The node to serve it too; absent: a host of its component that does
    /// not serve it yet.
    #[serde(default)]
    pub node: Option<String>,
}

/// Clusters an instance: another node (a host of its component) serves it
/// too.
#[utoipa::path(post, path = "/webcomponent/{instance}", tag = "instances",
    params(("instance" = String, Path, description = "An instance id")),
    request_body = ServeOn,
    responses((status = 200, description = "Served there too, as that node confirmed", body = Answer),
        (status = 404, description = "No such instance", body = ErrorBody),
        (status = 409, description = "No other live host of its component, or the node named is not one", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody),
        (status = 504, description = "The node did not confirm within ROUTE_TIMEOUT_MS", body = ErrorBody)))]
pub async fn cluster_instance(
    State(cloud): State<Cloud>,
    Path(instance): Path<String>,
    ApiJson(serve): ApiJson<ServeOn>,
) -> Result<Json<Answer>, ApiError> {
    let record = cloud
        .cluster
        .instance(&instance)
        .await?
        .ok_or_else(|| ApiError::Missing(format!("no instance {instance:?}")))?;
    let view = InstanceView::from(&record);
    let key = view
        .component
        .clone()
        .ok_or_else(|| ApiError::Conflict("the instance names no component".into()))?;
    let hosts: Vec<String> = cloud
        .mothership()?
        .catalog()
        .components()
        .iter()
        .find(|info| info.descriptor.key() == key)
        .map(|info| info.hosts.clone())
        .unwrap_or_default();
    let node = match serve.node {
        Some(node) if valid_node_id(&node) => node,
        Some(node) => {
            return Err(ApiError::Conflict(format!(
                "node {node:?} is not a live host of {key}"
            )));
        }
        None => hosts
            .iter()
            .find(|host| Some(*host) != view.node.as_ref() && !view.nodes.contains(host))
            .cloned()
            .ok_or_else(|| {
                ApiError::Conflict(format!("no other live host of {key} to serve it"))
            })?,
    };
    if !hosts.contains(&node) {
        return Err(ApiError::Conflict(format!(
            "node {node} is not a live host of {key}"
        )));
    }
    let answer = cloud
        .control
        .run(&node, Op::ServeInstance { instance, key })
        .await?;
    Ok(Json(Answer(answer)))
}

/// Refreshes a component: every host makes it again from its descriptor and
/// announces it.
#[utoipa::path(put, path = "/webcomponent/{id}/{version}", tag = "components",
    params(("id" = String, Path, description = "Component id"), ("version" = String, Path, description = "Its exact version, major.minor[.micro]")),
    responses((status = 200, description = "Refreshed on every host", body = Answer),
        (status = 404, description = "No such component", body = ErrorBody),
        (status = 409, description = "A host cannot make it any more, or no Mothership here", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody),
        (status = 504, description = "A host did not confirm within ROUTE_TIMEOUT_MS", body = ErrorBody)))]
pub async fn refresh(
    State(cloud): State<Cloud>,
    Path((id, version)): Path<(String, String)>,
) -> Result<Json<Answer>, ApiError> {
    let info = component(&cloud, &id, &version).await?;
    let key = info.descriptor.key();
    let mut nodes = Vec::new();
    for (node, answer) in cloud
        .control
        .run_on_each(&info.hosts, &Op::Refresh { key: key.clone() })
        .await
    {
        nodes.push(json!({ "node": node, "refreshed": answer.is_ok() }));
        answer?;
    }
    Ok(Json(Answer(json!({ "component": key, "nodes": nodes }))))
}

/// Refreshes an instance: it lives `INSTANCE_TTL_MS` from now.
#[utoipa::path(put, path = "/webcomponent/{instance}", tag = "instances",
    params(("instance" = String, Path, description = "An instance id")),
    responses((status = 200, description = "The instance", body = InstanceView),
        (status = 404, description = "No such instance", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody)))]
pub async fn refresh_instance(
    State(cloud): State<Cloud>,
    Path(instance): Path<String>,
) -> Result<Json<InstanceView>, ApiError> {
    let now = crate::cluster::now_millis().to_string();
    if !cloud
        .cluster
        .update_instance(&instance, vec![("refreshed".into(), now)])
        .await?
    {
        return Err(ApiError::Missing(format!("no instance {instance:?}")));
    }
    instance_view(&cloud, &instance).await
}

async fn instance_view(cloud: &Cloud, instance: &str) -> Result<Json<InstanceView>, ApiError> {
    let record = cloud
        .cluster
        .instance(instance)
        .await?
        .ok_or_else(|| ApiError::Missing(format!("no instance {instance:?}")))?;
    Ok(Json(InstanceView::from(&record)))
}

/// Stops an instance.
#[utoipa::path(delete, path = "/webcomponent/{instance}", tag = "instances",
    params(("instance" = String, Path, description = "An instance id")),
    responses((status = 200, description = "Stopped", body = Answer),
        (status = 404, description = "No such instance", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody)))]
pub async fn stop_instance(
    State(cloud): State<Cloud>,
    Path(instance): Path<String>,
) -> Result<Json<Answer>, ApiError> {
    if !cloud.cluster.remove_instance(&instance).await? {
        return Err(ApiError::Missing(format!("no instance {instance:?}")));
    }
    Ok(Json(Answer(
        json!({ "instance": instance, "state": "stopped" }),
    )))
}

/// `?reason=` of an undeploy.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UndeployQuery {
    /// Told to every client of the component (at most 200 bytes).
    #[param(max_length = 200)]
    pub reason: Option<String>,
}

/// The longest undeploy reason (it reaches every client of the component).
const REASON_MAX: usize = 200;

/// Undeploys a component everywhere: each socket of its channels gets
/// `rain:undeployed {component, version, reason}` and then a DISCONNECT of
/// that namespace; later CONNECTs get `connect_error` "component undeployed".
#[utoipa::path(delete, path = "/webcomponent/{id}/{version}", tag = "components",
    params(("id" = String, Path, description = "Component id"), ("version" = String, Path, description = "Its exact version, major.minor[.micro]"), UndeployQuery),
    responses((status = 200, description = "Undeployed on every live node", body = Answer),
        (status = 400, description = "reason too long", body = ErrorBody),
        (status = 404, description = "No such component", body = ErrorBody),
        (status = 409, description = "No Mothership here", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody),
        (status = 504, description = "A node did not confirm within ROUTE_TIMEOUT_MS", body = ErrorBody)))]
pub async fn undeploy(
    State(cloud): State<Cloud>,
    Path((id, version)): Path<(String, String)>,
    query: Result<Query<UndeployQuery>, QueryRejection>,
) -> Result<Json<Answer>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let reason = query
        .reason
        .unwrap_or_else(|| "undeployed by an operator".into());
    if reason.len() > REASON_MAX {
        return Err(ApiError::BadRequest(format!(
            "reason: at most {REASON_MAX} bytes"
        )));
    }
    let key = key_of(&id, &version)?;
    let desired = cloud.desired().await?;
    let known = cloud
        .mothership()?
        .catalog()
        .components()
        .iter()
        .any(|info| info.descriptor.key() == key);
    if !known && !desired.mentions(&key) && desired.descriptor(&key).is_none() {
        return Err(ApiError::Missing(format!("no component {key}")));
    }
    // First what restarted nodes will read, then the running ones, then
    // the registry: no node can announce it again afterwards.
    cloud
        .cluster
        .set_desired(desired.undeploy(&key, &reason))
        .await?;
    let nodes: Vec<String> = cloud.nodes().await?.into_iter().map(|n| n.id).collect();
    let mut disconnected = 0;
    for (_, answer) in cloud
        .control
        .run_on_each(
            &nodes,
            &Op::Undeploy {
                key: key.clone(),
                reason: reason.clone(),
            },
        )
        .await
    {
        disconnected += answer?
            .get("disconnected")
            .and_then(Value::as_u64)
            .unwrap_or(0);
    }
    cloud.cluster.forget_service(&key).await?;
    Ok(Json(Answer(json!({
        "component": key,
        "reason": reason,
        "nodes": nodes,
        "disconnected": disconnected,
    }))))
}

/// The body of `POST /webcomponent`: a run-time deploy.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// An HTTP backend component's descriptor; its URL must be under an
    /// entry of `BACKEND_URLS`.
    pub descriptor: Descriptor,
    /// The nodes to host it…
    #[serde(default)]
    #[schema(max_items = 500)]
    pub nodes: Option<Vec<String>>,
    /// …or a `NODE_GROUP` (its nodes now and later).
    #[serde(default)]
    pub group: Option<String>,
}

/// The document's schema of [`Deploy`]: `nodes` or `group`, not both.
pub struct DeploySchema;

impl utoipa::PartialSchema for DeploySchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
        let text = || ObjectBuilder::new().schema_type(Type::String);
        let ids = ArrayBuilder::new()
            .items(text())
            .min_items(Some(1))
            .max_items(Some(MAX_LISTED));
        super::openapi::either_field(
            <Deploy as utoipa::PartialSchema>::schema(),
            "nodes",
            ids,
            "group",
            text(),
        )
    }
}

impl ToSchema for DeploySchema {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Deploy")
    }
}

/// Deploys an HTTP backend component at run time to nodes or a group:
/// persisted (a restarted node of the target hosts it again) and routable
/// once every live target confirmed. Its backend is not contacted.
#[utoipa::path(post, path = "/webcomponent", tag = "components",
    request_body = DeploySchema,
    responses((status = 200, description = "Deployed, and hosted by every live target", body = Answer),
        (status = 409, description = "It cannot be deployed: its URL is not under BACKEND_URLS, it is not an HTTP backend, a name is not allowed, or a node cannot host it", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody),
        (status = 504, description = "A node did not confirm within ROUTE_TIMEOUT_MS", body = ErrorBody)))]
pub async fn deploy(
    State(cloud): State<Cloud>,
    ApiJson(deploy): ApiJson<Deploy>,
) -> Result<Json<Answer>, ApiError> {
    let descriptor = deploy.descriptor;
    descriptor
        .validate()
        .map_err(|error| ApiError::Conflict(format!("descriptor: {error}")))?;
    let Some(HandlerSpec::Http { url, .. }) = &descriptor.handler else {
        return Err(ApiError::Conflict(
            "descriptor.handler: a run-time component is an HTTP backend ({\"kind\": \"http\", \"url\": …})".into(),
        ));
    };
    if !backend_allowed(url, &cloud.settings.backend_urls) {
        return Err(ApiError::Conflict(
            if cloud.settings.backend_urls.is_empty() {
                "BACKEND_URLS is empty on this node: no component can be deployed at run time"
                    .into()
            } else {
                "descriptor.handler.url: not under any BACKEND_URLS entry".into()
            },
        ));
    }
    crate::component::http::HttpComponent::new(descriptor.clone())
        .map_err(|error| ApiError::Conflict(format!("descriptor: {error}")))?;
    let targets = match (deploy.nodes, deploy.group) {
        (Some(nodes), None) => {
            if nodes.is_empty() || nodes.len() > MAX_LISTED {
                return Err(ApiError::BadRequest(format!(
                    "nodes: 1 to {MAX_LISTED} node ids"
                )));
            }
            if let Some(bad) = nodes.iter().find(|node| !valid_node_id(node)) {
                return Err(ApiError::Conflict(format!(
                    "nodes: {bad:?} is not a node id"
                )));
            }
            nodes.into_iter().map(Target::Node).collect::<Vec<_>>()
        }
        (None, Some(group)) if valid_node_id(&group) => vec![Target::Group(group)],
        (None, Some(_)) => {
            return Err(ApiError::Conflict("group: not a group name".into()));
        }
        _ => return Err(ApiError::BadRequest("give nodes or group, not both".into())),
    };
    let key = descriptor.key();
    if key.starts_with("core@") {
        return Err(ApiError::Conflict("descriptor.id: core is reserved".into()));
    }
    cloud
        .cluster
        .set_desired(desired::deploy(&descriptor, &targets))
        .await?;
    // Every live node adopts it: the targets host it, the others forget
    // that it was undeployed.
    let live = cloud.nodes().await?;
    let ids: Vec<String> = live.iter().map(|n| n.id.clone()).collect();
    let mut hosts = Vec::new();
    for (node, answer) in cloud.control.run_on_each(&ids, &Op::Adopt).await {
        let answer = answer?;
        let hosted = answer
            .get("hosted")
            .and_then(Value::as_array)
            .is_some_and(|keys| keys.iter().any(|k| k.as_str() == Some(key.as_str())));
        if hosted {
            hosts.push(node);
        }
    }
    Ok(Json(Answer(json!({ "component": key, "hosts": hosts }))))
}

/// Whether a backend URL is under one of the allowed prefixes: the same
/// scheme, host and port, no user or password, and a path under the
/// prefix's (compared parsed, so `..` or an `@` cannot step outside).
pub fn backend_allowed(url: &str, prefixes: &[String]) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    if !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    prefixes.iter().any(|prefix| {
        reqwest::Url::parse(prefix).is_ok_and(|prefix| {
            prefix.scheme() == url.scheme()
                && prefix.host_str() == url.host_str()
                && prefix.port_or_known_default() == url.port_or_known_default()
                && url.path().starts_with(prefix.path())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_must_be_under_an_allowed_prefix() {
        let allowed = vec![
            "http://127.0.0.1:9/".to_string(),
            "http://b.local/api/".to_string(),
        ];
        for url in [
            "http://127.0.0.1:9/",
            "http://127.0.0.1:9/x/y",
            "http://b.local/api/quiz",
            "http://b.local:80/api/quiz",
        ] {
            assert!(backend_allowed(url, &allowed), "{url}");
        }
        for url in [
            "http://127.0.0.1:99/",
            "http://127.0.0.1:9@evil.example/",
            "http://user:pw@127.0.0.1:9/",
            "http://b.local/api2/quiz",
            "http://b.local/api/../admin",
            "http://b.local/apix",
            "https://b.local/api/quiz",
            "http://evil.example/api/",
            "not a url",
        ] {
            assert!(!backend_allowed(url, &allowed), "{url}");
        }
        assert!(!backend_allowed("http://127.0.0.1:9/", &[]));
    }
}
