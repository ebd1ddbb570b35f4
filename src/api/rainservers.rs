//! `/rainservers`: the cluster's nodes (RAIN's *rain servers*), what each
//! serves, and the operations on one: its wiring, reset, unregister.
//!
//! Owns the routes and their bodies. Reading is from the shared state, so any
//! node answers; an operation on a node is carried out by that node (see
//! `super::control`). Does not own what the operations do (see
//! `super::cloud`).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ApiError;
use super::cloud::{Cloud, NodeSummary};
use super::control::Op;
use crate::component::ChannelName;
use crate::component::desired::Target;
use crate::config::valid_node_id;

/// `GET /rainservers/all`: every live node, sorted by id.
pub async fn all(State(cloud): State<Cloud>) -> Result<Json<Vec<NodeSummary>>, ApiError> {
    Ok(Json(cloud.nodes().await?))
}

/// `GET /rainservers/{id}`.
pub async fn one(
    State(cloud): State<Cloud>,
    Path(id): Path<String>,
) -> Result<Json<NodeSummary>, ApiError> {
    Ok(Json(cloud.node(&id).await?))
}

/// What a node serves.
#[derive(Debug, Serialize)]
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

#[derive(Debug, Serialize)]
pub struct ChannelUrl {
    /// `id@version`.
    pub component: String,
    pub namespace: String,
}

/// `GET /rainservers/{id}/urls`.
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wiring {
    /// A node id (the wiring is that node's, and an unregistered node is
    /// registered again)…
    #[serde(default)]
    pub node: Option<String>,
    /// …or a `NODE_GROUP` (every node of the group, now and later).
    #[serde(default)]
    pub group: Option<String>,
    /// The components (`id@version`) it hosts from now on; absent: the
    /// wiring is left as it is.
    #[serde(default)]
    pub components: Option<Vec<String>>,
}

/// What `POST /rainservers` did.
#[derive(Debug, Serialize)]
pub struct WiringApplied {
    /// `node:{id}` or `group:{name}`.
    pub target: String,
    /// The wiring now stored, when the request set one.
    pub components: Option<Vec<String>>,
    /// Each live node of the target and what it confirmed.
    pub nodes: Vec<Value>,
}

/// `POST /rainservers`: sets the wiring of a node or a group, applied live
/// by its running nodes (and by nodes that start later), and registers an
/// unregistered node again.
pub async fn wire(
    State(cloud): State<Cloud>,
    body: Result<Json<Wiring>, JsonRejection>,
) -> Result<Json<WiringApplied>, ApiError> {
    let Json(wiring) = body.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let target = match (&wiring.node, &wiring.group) {
        (Some(node), None) if valid_node_id(node) => Target::Node(node.clone()),
        (None, Some(group)) if valid_node_id(group) => Target::Group(group.clone()),
        (Some(_), None) => {
            return Err(bad(
                "node: not a node id ([A-Za-z0-9._-]{1,64}, not \"all\")",
            ));
        }
        (None, Some(_)) => {
            return Err(bad(
                "group: not a group name ([A-Za-z0-9._-]{1,64}, not \"all\")",
            ));
        }
        _ => return Err(bad("give either node or group")),
    };
    if let Some(keys) = &wiring.components {
        if keys.len() > super::webcomponents::MAX_LISTED {
            return Err(bad("components: too many"));
        }
        if let Some(bad_key) = keys.iter().find(|key| !valid_key(key)) {
            return Err(bad(&format!(
                "components: {bad_key:?} is not id@major.minor[.micro]"
            )));
        }
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
        cloud
            .cluster
            .set_desired(desired.set_wiring(&target, keys))
            .await?;
    }
    let mut confirmed = Vec::new();
    for node in members {
        if matches!(target, Target::Node(_)) && node.state == "unregistered" {
            cloud.control.run(&node.id, Op::Register).await?;
        }
        if wiring.components.is_some() {
            confirmed.push(cloud.control.run(&node.id, Op::Adopt).await?);
        } else {
            confirmed.push(serde_json::json!({ "node": node.id }));
        }
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

/// `PUT /rainservers/{id}`: the node drops its caches and subscriptions and
/// rebuilds them from its own state.
pub async fn reset(
    State(cloud): State<Cloud>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let node = cloud.node(&id).await?;
    Ok(Json(cloud.control.run(&node.id, Op::Reset).await?))
}

/// `DELETE /rainservers/{id}`: the node drains as on SIGTERM but stays up,
/// unregistered.
pub async fn unregister(
    State(cloud): State<Cloud>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let node = cloud.node(&id).await?;
    Ok(Json(cloud.control.run(&node.id, Op::Unregister).await?))
}

fn bad(message: &str) -> ApiError {
    ApiError::BadRequest(message.to_string())
}

/// `id@major.minor[.micro]`.
pub(super) fn valid_key(key: &str) -> bool {
    key.split_once('@').is_some_and(|(id, version)| {
        crate::component::descriptor::valid_name(id)
            && id != "core"
            && version.parse::<crate::component::Version>().is_ok()
    })
}
