//! The node's HTTP API, for operators and backends only: served on a listener
//! of its own (`ADMIN_HOST`:`ADMIN_PORT`), never on the public port and never
//! under CORS, so no web page can reach it through a browser.
//!
//! Every route needs a bearer token of `API_TOKENS` ([`auth`]; 401 without
//! one) with the route's scope (403 otherwise):
//!
//! | route | scope | |
//! | --- | --- | --- |
//! | `POST /emit` | `emit` | push an event to sockets or rooms ([`emit`]) |
//! | `GET /metrics` | `read` | Prometheus text |
//!
//! `admin` implies both. Errors are `{"error": …}`. Owns the routes and their
//! errors; the listener and the unauthenticated `/healthz` and `/readyz` are
//! `crate::server`'s. The Cloud API (nodes, components, the map) will join here.

pub mod auth;
pub mod cloud;
pub mod control;
mod emit;
pub mod rainservers;
pub mod webcomponents;

pub use cloud::Cloud;
pub use emit::EmitRequest;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use thiserror::Error;

use crate::config::{ApiScope, Settings};
use crate::engine::Engine;
use auth::Tokens;

/// Why the API refused a request; the `Display` text is the JSON body's
/// `error`, so it never holds a secret.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("missing or unknown bearer token (Authorization: Bearer <secret> of API_TOKENS)")]
    Unauthorized,
    #[error("token {token:?} has no {needed} scope")]
    Forbidden { token: String, needed: ApiScope },
    #[error("no such route")]
    NotFound,
    /// A route's id names nothing the cluster knows.
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    BadRequest(String),
    /// The request is well formed but cannot be done as asked (the message
    /// says why).
    #[error("{0}")]
    Conflict(String),
    /// Another node had to carry the operation out and did not confirm it
    /// within `ROUTE_TIMEOUT_MS`.
    #[error("{0}")]
    Timeout(String),
    /// The shared state cannot be read or written now (Redis away).
    #[error("the cluster's shared state cannot be reached now; try again")]
    Unavailable,
}

impl From<crate::cluster::ClusterError> for ApiError {
    fn from(error: crate::cluster::ClusterError) -> Self {
        tracing::warn!(
            error = &error as &dyn std::error::Error,
            "an API call could not reach the cluster's state"
        );
        ApiError::Unavailable
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound | ApiError::Missing(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        let body = Json(json!({ "error": self.to_string() }));
        if status == StatusCode::UNAUTHORIZED {
            (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (status, body).into_response()
        }
    }
}

/// The API's routes, every one behind a token (an unknown path too, so the
/// API's shape is not told to whoever has none). Also takes this node's
/// Cloud API operations off the cluster (see [`control`]).
pub fn routes(settings: &Settings, cloud: Cloud, engine: Engine) -> Router {
    let tokens = Arc::new(Tokens::new(settings.api_tokens.clone()));
    let cluster = cloud.cluster.clone();
    cluster.on_topic(
        control::TOPIC,
        Arc::new(control::Inbound {
            control: cloud.control.clone(),
            executor: Arc::new(cloud.clone()),
        }),
    );
    let metrics_cluster = cluster.clone();
    Router::new()
        .route(
            "/emit",
            post(emit::emit).route_layer(from_fn_with_state(ApiScope::Emit, auth::require)),
        )
        .with_state(cloud.io.clone())
        .route(
            "/metrics",
            get(move || {
                let text =
                    crate::metrics::render(engine.session_count(), metrics_cluster.is_ready());
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
            })
            .route_layer(from_fn_with_state(ApiScope::Read, auth::require)),
        )
        .merge(cloud_routes(cloud))
        .fallback(|| async { ApiError::NotFound })
        .layer(from_fn_with_state(tokens, auth::authenticate))
}

/// `/rainservers` and `/webcomponent`: reads need `read`, changes `admin`.
fn cloud_routes(cloud: Cloud) -> Router {
    macro_rules! read {
        () => {
            from_fn_with_state(ApiScope::Read, auth::require)
        };
    }
    macro_rules! admin {
        () => {
            from_fn_with_state(ApiScope::Admin, auth::require)
        };
    }
    use axum::routing::{delete, put};
    Router::new()
        .route(
            "/rainservers/all",
            get(rainservers::all).route_layer(read!()),
        )
        .route(
            "/rainservers",
            post(rainservers::wire).route_layer(admin!()),
        )
        .route(
            "/rainservers/{id}",
            get(rainservers::one)
                .route_layer(read!())
                .merge(put(rainservers::reset).route_layer(admin!()))
                .merge(delete(rainservers::unregister).route_layer(admin!())),
        )
        .route(
            "/rainservers/{id}/urls",
            get(rainservers::urls).route_layer(read!()),
        )
        .route(
            "/webcomponent",
            post(webcomponents::deploy).route_layer(admin!()),
        )
        .route(
            "/webcomponent/all",
            get(webcomponents::all).route_layer(read!()),
        )
        .route(
            "/webcomponent/{instance}",
            get(webcomponents::instance)
                .route_layer(read!())
                .merge(post(webcomponents::cluster_instance).route_layer(admin!()))
                .merge(put(webcomponents::refresh_instance).route_layer(admin!()))
                .merge(delete(webcomponents::stop_instance).route_layer(admin!())),
        )
        .route(
            "/webcomponent/{id}/{version}",
            get(webcomponents::one)
                .route_layer(read!())
                .merge(post(webcomponents::instantiate).route_layer(admin!()))
                .merge(put(webcomponents::refresh).route_layer(admin!()))
                .merge(delete(webcomponents::undeploy).route_layer(admin!())),
        )
        .route(
            "/webcomponent/{id}/{version}/descriptor",
            get(webcomponents::descriptor).route_layer(read!()),
        )
        .route(
            "/webcomponent/{id}/{version}/statistics",
            get(webcomponents::statistics).route_layer(read!()),
        )
        .with_state(cloud)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::Value;

    use super::*;
    use crate::cluster::memory::MemoryCluster;
    use crate::engine::EngineConfig;
    use crate::io::SocketIo;

    const EMIT: &str = "backend:emit:0123456789abcdef";
    const READ: &str = "prometheus:read:0123456789abcdeg";

    async fn serve() -> String {
        let settings = Settings {
            api_tokens: vec![EMIT.parse().unwrap(), READ.parse().unwrap()],
            ..Settings::default()
        };
        let io = SocketIo::new(&settings, Arc::new(MemoryCluster::new("n".into())));
        let engine = Engine::new(EngineConfig::from(&settings), io.engine_handler());
        let cloud = Cloud::new(io, &settings, None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = routes(&settings, cloud, engine);
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{address}")
    }

    async fn post(url: &str, secret: &str, body: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{url}/emit"))
            .bearer_auth(secret)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn names_reserved_by_socket_io_are_refused() {
        let url = serve().await;
        let secret = "0123456789abcdef";
        for event in crate::protocol::socketio::RESERVED_EVENTS {
            let (status, body) =
                post(&url, secret, json!({ "namespace": "/", "event": event })).await;
            assert_eq!(status, 400, "{event}: {body}");
            assert!(
                body["error"].as_str().unwrap().contains("reserved"),
                "{body}"
            );
        }
        let (status, _) = post(&url, secret, json!({ "namespace": "/", "event": "news" })).await;
        assert_eq!(status, 202);
    }

    #[tokio::test]
    async fn bad_bodies_are_400_with_the_reason() {
        let url = serve().await;
        let secret = "0123456789abcdef";
        for (body, reason) in [
            (
                json!({ "namespace": "chat", "event": "e" }),
                "must start with '/'",
            ),
            (
                json!({ "namespace": "/", "event": "" }),
                "must not be empty",
            ),
            (
                json!({ "namespace": "/", "event": "e", "nope": 1 }),
                "unknown field",
            ),
            (
                json!({ "namespace": "/", "event": "e", "socket": "s", "room": "r" }),
                "not both",
            ),
        ] {
            let (status, answer) = post(&url, secret, body.clone()).await;
            assert_eq!(status, 400, "{body}: {answer}");
            assert!(
                answer["error"].as_str().unwrap().contains(reason),
                "{answer}"
            );
        }
    }

    #[tokio::test]
    async fn a_token_outside_its_scope_is_403_and_none_is_401() {
        let url = serve().await;
        let body = json!({ "namespace": "/", "event": "news" });
        let (status, answer) = post(&url, "0123456789abcdeg", body.clone()).await;
        assert_eq!(status, 403, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("prometheus"),
            "{answer}"
        );
        let (status, answer) = post(&url, "not-a-known-secret", body).await;
        assert_eq!(status, 401, "{answer}");
        let client = reqwest::Client::new();
        let metrics = |secret: &'static str| {
            client
                .get(format!("{url}/metrics"))
                .bearer_auth(secret)
                .send()
        };
        assert_eq!(metrics("0123456789abcdeg").await.unwrap().status(), 200);
        assert_eq!(metrics("0123456789abcdef").await.unwrap().status(), 403);
        let unknown = client.get(format!("{url}/nope")).send().await.unwrap();
        assert_eq!(unknown.status(), 401);
        let unknown = client
            .get(format!("{url}/nope"))
            .bearer_auth("0123456789abcdef")
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 404);
    }
}
