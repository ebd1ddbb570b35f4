//! `/rainservers`: the cluster's nodes (RAIN's *rain servers*), what each
//! serves, and the operations on one: its wiring, reset, unregister.
//!
//! Owns the routes and their bodies. Reading is from the shared state, so any
//! node answers; an operation on a node is carried out by that node (see
//! `super::control`). Does not own what the operations do (see
//! `super::cloud`).

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::ApiError;
use super::body::ApiJson;
use super::cloud::{Answer, Cloud, NodeSummary};
use super::control::Op;
use super::openapi::ErrorBody;
use crate::component::ChannelName;
use crate::component::desired::Target;
use crate::config::valid_node_id;

/// Every live node, sorted by id.
#[utoipa::path(get, path = "/rainservers/all", tag = "nodes",
    responses((status = 200, description = "Every live node", body = Vec<NodeSummary>),
        (status = 503, description = "Redis unreachable", body = ErrorBody)))]
pub async fn all(State(cloud): State<Cloud>) -> Result<Json<Vec<NodeSummary>>, ApiError> {
    Ok(Json(cloud.nodes().await?))
}

/// One live node.
#[utoipa::path(get, path = "/rainservers/{id}", tag = "nodes",
    params(("id" = String, Path, description = "A node id")),
    responses((status = 200, description = "The node", body = NodeSummary),
        (status = 404, description = "No live node has this id", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody)))]
pub async fn one(
    State(cloud): State<Cloud>,
    Path(id): Path<String>,
) -> Result<Json<NodeSummary>, ApiError> {
    Ok(Json(cloud.node(&id).await?))
}

/// What a node serves.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeUrls {
    pub node: String,
    /// The URL its public listener is reached at.
    pub address: String,
    /// The namespaces every node serves itself.
    pub namespaces: Vec<String>,
    /// The component channels whose events it handles (it hosts their
    /// component), as namespaces.
    pub channels: Vec<ChannelUrl>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelUrl {
    /// `id@version`.
    pub component: String,
    pub namespace: String,
}

/// The channels and namespaces a node serves, and its address.
#[utoipa::path(get, path = "/rainservers/{id}/urls", tag = "nodes",
    params(("id" = String, Path, description = "A node id")),
    responses((status = 200, description = "What it serves", body = NodeUrls),
        (status = 404, description = "No live node has this id", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody)))]
pub async fn urls(
    State(cloud): State<Cloud>,
    Path(id): Path<String>,
) -> Result<Json<NodeUrls>, ApiError> {
    let node = cloud.node(&id).await?;
    let mut channels = Vec::new();
    if let Some(mothership) = &cloud.mothership {
        for info in mothership.catalog().components().iter() {
            if !info.hosts.contains(&node.id) {
                continue;
            }
            let descriptor = &info.descriptor;
            for channel in descriptor
                .channels
                .iter()
                .map(String::as_str)
                .chain(["logging"])
            {
                let namespace = format!("/{}/{}/{channel}", descriptor.id, descriptor.version);
                debug_assert!(ChannelName::parse(&namespace).is_some());
                channels.push(ChannelUrl {
                    component: descriptor.key(),
                    namespace,
                });
            }
        }
    }
    let namespaces = match cloud.mothership {
        Some(_) => vec!["/".into(), "/core".into(), "/core/logging".into()],
        None => vec!["/".into()],
    };
    Ok(Json(NodeUrls {
        node: node.id,
        address: node.address,
        namespaces,
        channels,
    }))
}

/// The body of `POST /rainservers`: a node's or a group's wiring.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Wiring {
    /// A node id: the wiring is that node's, and an unregistered node is
    /// registered again…
    #[serde(default)]
    pub node: Option<String>,
    /// …or a `NODE_GROUP`: every node of the group, now and later.
    #[serde(default)]
    pub group: Option<String>,
    /// The components (`id@version`) it hosts from now on; absent: the
    /// wiring is left as it is.
    #[serde(default)]
    #[schema(max_items = 500)]
    pub components: Option<Vec<String>>,
}

/// The document's schema of [`Wiring`]: `node` or `group`, not both.
pub struct WiringSchema;

impl utoipa::PartialSchema for WiringSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let text = || {
            utoipa::openapi::schema::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
        };
        super::openapi::either_field(
            <Wiring as utoipa::PartialSchema>::schema(),
            "node",
            text(),
            "group",
            text(),
        )
    }
}

impl ToSchema for WiringSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Wiring")
    }
}

/// What `POST /rainservers` did.
#[derive(Debug, Serialize, ToSchema)]
pub struct WiringApplied {
    /// `node:{id}` or `group:{name}`.
    pub target: String,
    /// The wiring now stored, when the request set one.
    pub components: Option<Vec<String>>,
    /// Each live node of the target and what it confirmed.
    #[schema(value_type = Vec<Object>)]
    pub nodes: Vec<Value>,
}

/// Sets the wiring of a node or a group (which components it hosts),
/// applied live by its running nodes and by nodes that start later;
/// registers an unregistered node again.
#[utoipa::path(post, path = "/rainservers", tag = "nodes",
    request_body = WiringSchema,
    responses((status = 200, description = "Stored, and confirmed by every live node of the target", body = WiringApplied),
        (status = 404, description = "No live node has this id (and no wiring was given)", body = ErrorBody),
        (status = 409, description = "Not a node id or group name, a component key that is not id@version, or a component a node cannot make", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody),
        (status = 504, description = "A node did not confirm within ROUTE_TIMEOUT_MS", body = ErrorBody)))]
pub async fn wire(
    State(cloud): State<Cloud>,
    ApiJson(wiring): ApiJson<Wiring>,
) -> Result<Json<WiringApplied>, ApiError> {
    let target = match (&wiring.node, &wiring.group) {
        (Some(node), None) if valid_node_id(node) => Target::Node(node.clone()),
        (None, Some(group)) if valid_node_id(group) => Target::Group(group.clone()),
        (Some(node), None) if wiring.components.is_none() => {
            return Err(ApiError::Missing(format!("no live node {node:?}")));
        }
        (Some(_), None) => {
            return Err(conflict(
                "node: not a node id ([A-Za-z0-9._-]{1,64}, not \"all\")",
            ));
        }
        (None, Some(_)) => {
            return Err(conflict(
                "group: not a group name ([A-Za-z0-9._-]{1,64}, not \"all\")",
            ));
        }
        _ => return Err(ApiError::BadRequest("give node or group, not both".into())),
    };
    if let Some(keys) = &wiring.components
        && let Some(bad_key) = keys.iter().find(|key| !valid_key(key))
    {
        return Err(conflict(&format!(
            "components: {bad_key:?} is not id@major.minor[.micro]"
        )));
    }
    let live = cloud.nodes().await?;
    let members: Vec<&NodeSummary> = live
        .iter()
        .filter(|node| match &target {
            Target::Node(id) => node.id == *id,
            Target::Group(group) => node.group == *group,
        })
        .collect();
    if let Target::Node(id) = &target
        && members.is_empty()
        && wiring.components.is_none()
    {
        return Err(ApiError::Missing(format!("no live node {id:?}")));
    }
    if let Some(keys) = &wiring.components {
        let desired = cloud.desired().await?;
        // Only what some node can make is stored: a built-in, a run-time
        // descriptor, or a component a node hosts now (its COMPONENTS_DIR).
        let known = |key: &String| {
            crate::component::demo::builtin(key, &cloud.settings)
                .is_some_and(|component| component.descriptor().key() == *key)
                || desired.descriptor(key).is_some()
                || cloud.mothership.as_ref().is_some_and(|mothership| {
                    mothership
                        .catalog()
                        .components()
                        .iter()
                        .any(|info| info.descriptor.key() == *key)
                })
        };
        if let Some(unknown) = keys.iter().find(|key| !known(key)) {
            return Err(conflict(&format!(
                "components: no component {unknown} is known to the cluster"
            )));
        }
        cloud
            .cluster
            .set_desired(desired.set_wiring(&target, keys))
            .await?;
    }
    let mut confirmed = Vec::new();
    for node in members {
        // A node named itself is registered again if it was unregistered
        // (a no-op otherwise); a group's nodes are left as they are.
        let registered = match target {
            Target::Node(_) => Some(cloud.control.run(&node.id, Op::Register).await?),
            Target::Group(_) => None,
        };
        let answer = match (&wiring.components, registered) {
            (Some(_), registered) => {
                let mut adopted = cloud.control.run(&node.id, Op::Adopt).await?;
                if let (Some(state), Some(object)) = (
                    registered.as_ref().and_then(|r| r.get("state")).cloned(),
                    adopted.as_object_mut(),
                ) {
                    object.insert("state".into(), state);
                }
                adopted
            }
            (None, Some(registered)) => registered,
            (None, None) => serde_json::json!({ "node": node.id }),
        };
        confirmed.push(answer);
    }
    let target_name = match &target {
        Target::Node(id) => format!("node:{id}"),
        Target::Group(group) => format!("group:{group}"),
    };
    Ok(Json(WiringApplied {
        target: target_name,
        components: wiring.components,
        nodes: confirmed,
    }))
}

/// Resets a node: it drops its caches and subscriptions and rebuilds them
/// from its own state.
#[utoipa::path(put, path = "/rainservers/{id}", tag = "nodes",
    params(("id" = String, Path, description = "A node id")),
    responses((status = 200, description = "Done, as the node confirmed", body = Answer),
        (status = 404, description = "No live node has this id", body = ErrorBody),
        (status = 409, description = "The node cannot do it", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody),
        (status = 504, description = "The node did not confirm within ROUTE_TIMEOUT_MS", body = ErrorBody)))]
pub async fn reset(
    State(cloud): State<Cloud>,
    Path(id): Path<String>,
) -> Result<Json<Answer>, ApiError> {
    let node = cloud.node(&id).await?;
    let confirmed = cloud.control.run(&node.id, Op::Reset).await?;
    Ok(Json(Answer(confirmed)))
}

/// Unregisters a node: it drains as on SIGTERM (its clients move to other
/// nodes) but stays up, unregistered, for inspection.
#[utoipa::path(delete, path = "/rainservers/{id}", tag = "nodes",
    params(("id" = String, Path, description = "A node id")),
    responses((status = 200, description = "Unregistered, as the node confirmed", body = Answer),
        (status = 404, description = "No live node has this id", body = ErrorBody),
        (status = 409, description = "The node cannot do it", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody),
        (status = 504, description = "The node did not confirm within ROUTE_TIMEOUT_MS", body = ErrorBody)))]
pub async fn unregister(
    State(cloud): State<Cloud>,
    Path(id): Path<String>,
) -> Result<Json<Answer>, ApiError> {
    let node = cloud.node(&id).await?;
    let confirmed = cloud.control.run(&node.id, Op::Unregister).await?;
    Ok(Json(Answer(confirmed)))
}

fn conflict(message: &str) -> ApiError {
    ApiError::Conflict(message.to_string())
}

/// `id@major.minor[.micro]`.
pub(super) fn valid_key(key: &str) -> bool {
    key.split_once('@').is_some_and(|(id, version)| {
        crate::component::descriptor::valid_name(id)
            && id != "core"
            && version.parse::<crate::component::Version>().is_ok()
    })
}
