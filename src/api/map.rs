//! The infrastructure map: the whole cluster as one graph, for `GET /map` and
//! the `/admin` page that draws it.
//!
//! Owns the map's JSON model ([`Map`]), the one pure [`build`] that turns plain
//! inputs (node records, Redis summaries, components with their hosts,
//! instances) into nodes and edges, and the `GET /map` handler that gathers
//! those inputs from this node's view of the cluster. Does not own where the
//! figures come from (node records and statistics, the Redis summary and the
//! component registry are the cluster's and the catalog's) nor the page (see
//! `admin.html`).
//!
//! Edge ends are prefixed by what they name (`node:a`, `backend:default`,
//! `component:chat@1.0`, `instance:…`): a node and a component may share a
//! name, their graph ids never do.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::cloud::Cloud;

/// The cluster as a graph. Every list is in a stable order (by id), so two
/// maps of an unchanged cluster are equal but for `generated_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Map {
    /// Milliseconds since the Unix epoch when the node answered.
    pub generated_at: u64,
    /// The node that answered (any node answers from the shared state).
    pub answered_by: String,
    pub nodes: Vec<MapNode>,
    pub backends: Vec<MapBackend>,
    pub components: Vec<MapComponent>,
    pub instances: Vec<MapInstance>,
    pub edges: Vec<Edge>,
}

/// A live node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MapNode {
    pub id: String,
    /// The URL other nodes reach its public listener at.
    pub address: String,
    pub group: String,
    /// `running`, `draining`, `unregistered`, or `unknown` while the node's
    /// record does not say.
    pub state: String,
    pub started_at: Option<u64>,
    pub heartbeat: Option<u64>,
    /// The node's statistics as it published them with its heartbeat
    /// (`cpu_percent`, `resident_memory_bytes`, `connections`, `sockets`,
    /// `events_per_second`, …); null when it published none or unreadable ones.
    #[schema(value_type = Option<Object>)]
    pub stats: Option<serde_json::Value>,
}

/// A shared-state endpoint (the Redis deployment, or the embedded hub). Never
/// its URL: that may hold a password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MapBackend {
    pub id: String,
    /// `redis` or `embedded`.
    pub kind: String,
    /// Its summary (version, role, memory, clients, ops/s, …), as far as known.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub summary: serde_json::Map<String, serde_json::Value>,
}

/// A component version and the live nodes hosting it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MapComponent {
    /// `id@version`.
    pub key: String,
    pub id: String,
    pub version: String,
    pub channels: Vec<String>,
    /// Live hosts only, sorted.
    pub hosts: Vec<String>,
}

/// An instance of a component, owned by a node (and, clustered, also served
/// by others).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MapInstance {
    pub id: String,
    /// The component's `id@version`.
    pub component: String,
    pub node: String,
    /// Every live node serving it, the owner first.
    pub nodes: Vec<String>,
}

/// A link of the graph between two prefixed ids.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub kind: EdgeKind,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum EdgeKind {
    /// A node and the shared state it works through.
    NodeBackend,
    /// A component hosted on a node.
    ComponentNode,
    /// An instance of a component.
    InstanceComponent,
    /// An instance served by a node.
    InstanceNode,
}

/// A node as its record says (what `Membership::nodes()` reads back).
#[derive(Debug, Clone, Default)]
pub struct NodeInput {
    pub id: String,
    pub address: String,
    pub group: String,
    pub state: String,
    pub started_at: Option<u64>,
    pub heartbeat: Option<u64>,
    /// The opaque JSON text the node published with its heartbeat.
    pub stats: Option<String>,
}

/// A shared-state endpoint and its summary (e.g. `BackendInfo` as JSON).
#[derive(Debug, Clone, Default)]
pub struct BackendInput {
    pub id: String,
    pub kind: String,
    pub summary: serde_json::Map<String, serde_json::Value>,
}

/// A component version and the hosts the registry lists for it.
#[derive(Debug, Clone, Default)]
pub struct ComponentInput {
    pub id: String,
    pub version: String,
    pub channels: Vec<String>,
    pub hosts: Vec<String>,
}

/// An instance: its component (`id@version`), owner and other serving nodes.
#[derive(Debug, Clone, Default)]
pub struct InstanceInput {
    pub id: String,
    pub component: String,
    pub node: String,
    pub nodes: Vec<String>,
}

/// Everything a map is built from.
#[derive(Debug, Clone, Default)]
pub struct MapInputs {
    pub generated_at: u64,
    pub answered_by: String,
    pub nodes: Vec<NodeInput>,
    pub backends: Vec<BackendInput>,
    pub components: Vec<ComponentInput>,
    pub instances: Vec<InstanceInput>,
}

/// The graph of `inputs`. The node list decides what is live: a host or an
/// instance's node that is not in it is stale (a registry not yet caught up
/// with a dead node), so it gets no edge and is not listed as a host; an
/// instance whose owner is not live is left out (it goes with its node).
pub fn build(inputs: MapInputs) -> Map {
    let mut nodes: BTreeMap<String, MapNode> = BTreeMap::new();
    for node in inputs.nodes {
        let stats = node
            .stats
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
            .filter(|value: &serde_json::Value| value.is_object());
        nodes.entry(node.id.clone()).or_insert(MapNode {
            id: node.id,
            address: node.address,
            group: node.group,
            state: if node.state.is_empty() {
                "unknown".into()
            } else {
                node.state
            },
            started_at: node.started_at,
            heartbeat: node.heartbeat,
            stats,
        });
    }
    let live = |id: &String| nodes.contains_key(id);

    let mut backends: BTreeMap<String, MapBackend> = BTreeMap::new();
    for backend in inputs.backends {
        // A whole summary may be given (`BackendInfo` as JSON): its own id
        // and kind would be written twice.
        let mut summary = backend.summary;
        summary.remove("id");
        summary.remove("kind");
        backends.entry(backend.id.clone()).or_insert(MapBackend {
            id: backend.id,
            kind: backend.kind,
            summary,
        });
    }

    let mut components: BTreeMap<String, MapComponent> = BTreeMap::new();
    for component in inputs.components {
        let key = format!("{}@{}", component.id, component.version);
        let hosts: BTreeSet<String> = component.hosts.into_iter().filter(live).collect();
        components.entry(key.clone()).or_insert(MapComponent {
            key,
            id: component.id,
            version: component.version,
            channels: component.channels,
            hosts: hosts.into_iter().collect(),
        });
    }

    let mut instances: BTreeMap<String, MapInstance> = BTreeMap::new();
    for instance in inputs.instances.into_iter().filter(|i| live(&i.node)) {
        let mut serving = vec![instance.node.clone()];
        for node in instance.nodes.into_iter().filter(live) {
            if !serving.contains(&node) {
                serving.push(node);
            }
        }
        instances.entry(instance.id.clone()).or_insert(MapInstance {
            id: instance.id,
            component: instance.component,
            node: instance.node,
            nodes: serving,
        });
    }

    let mut edges = BTreeSet::new();
    let mut edge = |from: String, to: String, kind| {
        edges.insert(Edge { from, to, kind });
    };
    for node in nodes.keys() {
        for backend in backends.keys() {
            edge(node_id(node), backend_id(backend), EdgeKind::NodeBackend);
        }
    }
    for component in components.values() {
        for host in &component.hosts {
            edge(
                component_id(&component.key),
                node_id(host),
                EdgeKind::ComponentNode,
            );
        }
    }
    for instance in instances.values() {
        if components.contains_key(&instance.component) {
            edge(
                instance_id(&instance.id),
                component_id(&instance.component),
                EdgeKind::InstanceComponent,
            );
        }
        for node in &instance.nodes {
            edge(
                instance_id(&instance.id),
                node_id(node),
                EdgeKind::InstanceNode,
            );
        }
    }

    let mut edges: Vec<Edge> = edges.into_iter().collect();
    edges.sort_by(|a, b| (a.kind, &a.from, &a.to).cmp(&(b.kind, &b.from, &b.to)));
    Map {
        generated_at: inputs.generated_at,
        answered_by: inputs.answered_by,
        nodes: nodes.into_values().collect(),
        backends: backends.into_values().collect(),
        components: components.into_values().collect(),
        instances: instances.into_values().collect(),
        edges,
    }
}

pub fn node_id(id: &str) -> String {
    format!("node:{id}")
}

pub fn backend_id(id: &str) -> String {
    format!("backend:{id}")
}

pub fn component_id(key: &str) -> String {
    format!("component:{key}")
}

pub fn instance_id(id: &str) -> String {
    format!("instance:{id}")
}

/// The inputs of this moment's map, from the shared state: the live nodes'
/// records, the Redis summary, the component registry and the instances.
async fn inputs(cloud: &Cloud) -> Result<MapInputs, ApiError> {
    let nodes = cloud
        .nodes()
        .await?
        .into_iter()
        .map(|node| NodeInput {
            stats: node.stats.map(|stats| stats.to_string()),
            id: node.id,
            address: node.address,
            group: node.group,
            state: node.state,
            started_at: Some(node.started_at),
            heartbeat: Some(node.heartbeat),
        })
        .collect();
    let info = cloud.cluster.backend_info().await?;
    let summary = match serde_json::to_value(&info) {
        Ok(serde_json::Value::Object(summary)) => summary,
        _ => serde_json::Map::new(),
    };
    let components = match &cloud.mothership {
        Some(mothership) => mothership
            .catalog()
            .components()
            .iter()
            .map(|info| ComponentInput {
                id: info.descriptor.id.clone(),
                version: info.descriptor.version.to_string(),
                channels: info.descriptor.channels.clone(),
                hosts: info.hosts.clone(),
            })
            .collect(),
        None => Vec::new(),
    };
    let (instances, _) = cloud.cluster.instances(INSTANCES_DRAWN).await?;
    let instances = instances
        .iter()
        .map(|record| {
            let field = |name: &str| record.fields.get(name).cloned().unwrap_or_default();
            InstanceInput {
                id: record.id.clone(),
                component: format!("{}@{}", field("component"), field("version")),
                node: field("node"),
                nodes: field("nodes")
                    .split(',')
                    .filter(|node| !node.is_empty())
                    .map(str::to_string)
                    .collect(),
            }
        })
        .collect();
    Ok(MapInputs {
        generated_at: now_ms(),
        answered_by: cloud.node_id().to_string(),
        nodes,
        backends: vec![BackendInput {
            id: info.id.clone(),
            kind: info.kind.clone(),
            summary,
        }],
        components,
        instances,
    })
}

/// The most instances a map draws (the rest are counted on their component).
const INSTANCES_DRAWN: usize = 500;

/// The whole cluster as a graph: nodes with their state and statistics, the
/// Redis deployment, components with their hosts, instances, and the edges
/// between them.
#[utoipa::path(get, path = "/map", tag = "map",
    responses((status = 200, description = "The cluster as a graph", body = Map),
        (status = 503, description = "Redis unreachable", body = super::openapi::ErrorBody)))]
pub(super) async fn map(State(cloud): State<Cloud>) -> Result<Json<Map>, ApiError> {
    Ok(Json(build(inputs(&cloud).await?)))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, state: &str, stats: Option<&str>) -> NodeInput {
        NodeInput {
            id: id.into(),
            address: format!("http://{id}:3000"),
            group: "default".into(),
            state: state.into(),
            stats: stats.map(str::to_string),
            ..NodeInput::default()
        }
    }

    fn component(id: &str, version: &str, hosts: &[&str]) -> ComponentInput {
        ComponentInput {
            id: id.into(),
            version: version.into(),
            channels: vec!["main".into()],
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    fn inputs() -> MapInputs {
        MapInputs {
            generated_at: 7,
            answered_by: "b".into(),
            nodes: vec![
                node("b", "running", Some(r#"{"cpu_percent": 3.5}"#)),
                node("a", "draining", Some("not json")),
            ],
            backends: vec![BackendInput {
                id: "default".into(),
                kind: "redis".into(),
                summary: serde_json::json!({"id": "default", "kind": "redis", "version": "7.2"})
                    .as_object()
                    .unwrap()
                    .clone(),
            }],
            components: vec![
                component("echo", "1.0", &["b", "gone", "a"]),
                component("chat", "1.0", &["a"]),
            ],
            instances: vec![
                InstanceInput {
                    id: "i2".into(),
                    component: "chat@1.0".into(),
                    node: "a".into(),
                    nodes: vec!["gone".into(), "b".into()],
                },
                InstanceInput {
                    id: "i1".into(),
                    component: "echo@1.0".into(),
                    node: "gone".into(),
                    nodes: vec![],
                },
            ],
        }
    }

    fn edges(map: &Map) -> Vec<(String, String, EdgeKind)> {
        map.edges
            .iter()
            .map(|e| (e.from.clone(), e.to.clone(), e.kind))
            .collect()
    }

    #[test]
    fn edges_link_nodes_backends_components_and_instances() {
        let map = build(inputs());
        let e = |from: &str, to: &str, kind| (from.to_string(), to.to_string(), kind);
        use EdgeKind::*;
        assert_eq!(
            edges(&map),
            vec![
                e("node:a", "backend:default", NodeBackend),
                e("node:b", "backend:default", NodeBackend),
                e("component:chat@1.0", "node:a", ComponentNode),
                e("component:echo@1.0", "node:a", ComponentNode),
                e("component:echo@1.0", "node:b", ComponentNode),
                e("instance:i2", "component:chat@1.0", InstanceComponent),
                e("instance:i2", "node:a", InstanceNode),
                e("instance:i2", "node:b", InstanceNode),
            ]
        );
        let json = serde_json::to_value(&map).unwrap();
        let text = serde_json::to_string(&map.backends[0]).unwrap();
        assert_eq!(text.matches("\"kind\"").count(), 1, "{text}");
        assert_eq!(json["edges"][0]["kind"], "node-backend");
        assert_eq!(json["backends"][0]["version"], "7.2");
        assert_eq!(json["backends"][0]["kind"], "redis");
        let back: Map = serde_json::from_value(json).unwrap();
        assert_eq!(back, map);
    }

    #[test]
    fn hosts_that_are_not_live_are_not_drawn_as_live() {
        let map = build(inputs());
        let echo = map.components.iter().find(|c| c.id == "echo").unwrap();
        assert_eq!(echo.hosts, vec!["a", "b"]);
        assert!(!map.edges.iter().any(|e| e.to.contains("gone")));
        assert_eq!(map.instances.len(), 1, "{:?}", map.instances);
        assert_eq!(map.instances[0].nodes, vec!["a", "b"]);
        assert!(!map.nodes.iter().any(|n| n.id == "gone"));
    }

    #[test]
    fn statistics_are_passed_on_when_readable() {
        let map = build(inputs());
        assert_eq!(map.nodes[0].id, "a");
        assert_eq!(map.nodes[0].stats, None);
        assert_eq!(map.nodes[0].state, "draining");
        assert_eq!(
            map.nodes[1].stats.as_ref().unwrap()["cpu_percent"],
            serde_json::json!(3.5)
        );
        let mut unknown = inputs();
        unknown.nodes[0].state.clear();
        assert_eq!(build(unknown).nodes[1].state, "unknown");
    }

    #[test]
    fn the_order_is_stable_whatever_the_inputs_order() {
        let first = build(inputs());
        let mut shuffled = inputs();
        shuffled.nodes.reverse();
        shuffled.components.reverse();
        shuffled.instances.reverse();
        for component in &mut shuffled.components {
            component.hosts.reverse();
        }
        assert_eq!(build(shuffled), first);
        let keys: Vec<&str> = first.components.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, vec!["chat@1.0", "echo@1.0"]);
    }

    #[test]
    fn a_node_and_a_component_of_one_name_do_not_clash() {
        let mut same = inputs();
        same.nodes.push(node("echo@1.0", "running", None));
        same.components[0].hosts.push("echo@1.0".into());
        let map = build(same);
        assert!(map.edges.iter().any(|e| e.from == "component:echo@1.0"
            && e.to == "node:echo@1.0"
            && e.kind == EdgeKind::ComponentNode));
    }
}
