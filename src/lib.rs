//! rain-node: one node of a horizontally scalable Socket.IO server.
//!
//! Identical, stateless nodes terminate Socket.IO connections; shared state and
//! messages go through a [`cluster::Cluster`] backend: Redis (state in keys,
//! messages over pub/sub) when `REDIS_SERVER` is set, else an embedded one. The
//! [`mothership`] routes each component channel's events to a node that hosts
//! the component. The crate is both the `rain-node` binary and a library for
//! embedding a node with your own components or namespace handlers.
//!
//! The map, in layers from the wire up. A module imports only from its own
//! layer and the ones above it in this table (`tests/layers.rs` fails on an
//! upward `use`):
//!
//! | layer | module | owns |
//! | --- | --- | --- |
//! | wire | [`protocol`] | pure Engine.IO v4 / Socket.IO v5 codecs, binary packets gathered across messages (the client's state machine), event arguments and the one event/ack encoder (no I/O; fuzzed) |
//! | settings | [`config`] | settings: defaults < `rain.toml` < environment < flags; validation |
//! | | [`metrics`] | the Prometheus recorder and `/metrics` text |
//! | | [`session_token`] | server-issued session tokens (`<id>.<hmac>`): mint, verify, the `rain_session` cookie (pure; the fuzz target's entry point) |
//! | | [`backend_signature`] | `X-Rain-Timestamp` / `X-Rain-Signature` on every request to a backend (pure) |
//! | | [`limits`] | the counting behind per-client limits: token bucket, refusal window, connections per address (pure, bounded) |
//! | | [`logs`] | the node's own log lines: the one `tracing` set-up (stderr only; `LOG`, `LOG_FORMAT` text or json) |
//! | cluster | [`cluster`] | one trait per responsibility (membership and other nodes' addresses, broker, socket registry, sessions, services, lists); the embedded hub and the Redis backend (`cluster/redis/`, one file per task); wire format; key and channel names; upper layers' messages are opaque bytes here |
//! | engine | [`session`] | one Engine.IO session: bounded outbound queue, upgrade state, close |
//! | | [`engine`] | the Engine.IO server: session table, handshake, packet rules, connections per client address |
//! | | [`transport`] | HTTP entry (the `Origin` check of every request), long-polling and websocket transports, heartbeats, the client's address behind trusted proxies, requests of another node's session forwarded (polling) or relayed (websocket) to its owner: no sticky sessions |
//! | Socket.IO | [`client`] | one Socket.IO connection: packet dispatch (through `protocol`'s reassembler), limits, its event rate |
//! | | [`io`] | the Socket.IO server: namespace registry (fixed and dynamic), the one emit-to-socket and broadcast entry points |
//! | | [`namespace`] | a namespace's handler trait, local sockets and room index |
//! | | [`socket`] | a socket: emit, acks both ways, rooms, disconnect; its events' work run in order, bounded (`SOCKET_MAX_IN_FLIGHT`); refusing an event over a per-client limit |
//! | | [`auth`] | who the client is: the connect-auth hook (`ConnectAuth`, `AUTH_URL`) |
//! | | [`app_session`] | a client's session data, shared by every node (sliding TTL, capped size) |
//! | | [`broadcast`] | audiences (rooms, except) and encode-once broadcasts |
//! | components | [`component`] | the `Component` trait and its `Context`, descriptors and versions, the catalog (the one version resolver), HTTP backends, demos, the operators' desired state (wirings, run-time deploys and their descriptors, undeployed marks: `component::desired`) |
//! | Mothership | [`mothership`] | its messages, the router (call, serve, reply; bounded in flight), component channels, `/core` commands one file each, logging, run-time changes to what a node hosts (host, host exactly, undeploy here) |
//! | edge | [`api`] | the HTTP API for operators and backends, on its own listener: tokens (`Authorization: Bearer` or `user:`) and scopes, `POST /emit` (its body's pure parser is fuzzed), `GET /metrics`, and `GET /openapi.json`, the OpenAPI 3.1 document generated from the handlers (utoipa); the Cloud API: `/rainservers` (nodes), `/mothership` (the Redis deployment), `/webcomponent` (components, instances, run-time deploys), each operation another node must carry out sent to it over the cluster and confirmed (`api/control.rs`); `GET /map` (the cluster as a graph) and the `/admin` page drawing it (embedded, inline SVG, no token: it asks for one) |
//! | | [`server`] | binding both listeners, public routes (`/socket.io/`, `/healthz`, `/readyz`), CORS for `CORS_ORIGINS` only, shutdown of both |
//! | | [`drain`] | a graceful stop: not ready at once, handshakes refused after `DRAIN_DELAY_MS`, out of the host sets, clients (and the websocket relays it carries) closed in batches once no ack is owed, routed requests finished, writes flushed, within `SHUTDOWN_TIMEOUT_MS` |
//! | | [`stats`] | the node's live statistics (`NodeStats`, the JSON of its record's `stats` field): rates between two samples of ever-growing counters, per-component figures |
//! | | [`node_control`] | an operator's unregister (the drain's steps, staying up), register again and reset of this node, one at a time, never undoing a signal's drain |
//! | | [`healthcheck`] | `rain-node healthcheck`: GET `/healthz` of the node the settings describe, exit 0 or 1 (the image's `HEALTHCHECK`) |
//!
//! A minimal embedding:
//!
//! ```no_run
//! use std::sync::Arc;
//! use rain_node::{config::Settings, io::SocketIo, namespace::NamespaceHandler, server::Server};
//! use rain_node::socket::{Event, Socket};
//!
//! struct Echo;
//! impl NamespaceHandler for Echo {
//!     fn on_event(&self, socket: &Arc<Socket>, event: Event) {
//!         match event.ack {
//!             Some(ack) => { let _ = ack.send(event.payload); }
//!             None => { let _ = socket.emit(&event.name, event.payload); }
//!         }
//!     }
//! }
//!
//! # async fn run() -> anyhow::Result<()> {
//! let settings = Settings::default();
//! let io = SocketIo::new(&settings, rain_node::cluster::from_settings(&settings)?);
//! io.namespace("/", Echo);
//! // Before the listening lines: a SIGTERM from then on drains the node.
//! let signal = rain_node::server::shutdown_signal();
//! let server = Server::bind(&settings, io).await?;
//! println!("rain-node listening on http://{}", server.local_addr());
//! println!("rain-node api listening on http://{}", server.api_addr());
//! server.run(signal).await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod app_session;
pub mod auth;
pub mod backend_signature;
pub mod broadcast;
pub mod client;
pub mod cluster;
pub mod component;
pub mod config;
pub mod drain;
pub mod engine;
pub mod healthcheck;
pub mod io;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod mothership;
pub mod namespace;
pub mod node_control;
pub mod protocol;
pub mod server;
pub mod session;
pub mod session_token;
pub mod socket;
pub mod stats;
pub mod transport;
