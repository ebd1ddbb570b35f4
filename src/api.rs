//! The node's HTTP API, for operators and backends only: served on a listener
//! of its own (`ADMIN_HOST`:`ADMIN_PORT`), never on the public port and never
//! under CORS, so no web page can reach it through a browser.
//!
//! Every route needs a token of `API_TOKENS` ([`auth`]: `Authorization: Bearer
//! <secret>` or `user: <secret>`; 401 without one) with the route's scope (403
//! otherwise):
//!
//! | route | scope | |
//! | --- | --- | --- |
//! | `POST /emit` | `emit` | push an event to sockets or rooms ([`emit`]) |
//! | `GET /metrics` | `read` | Prometheus text |
//! | `GET /openapi.json` | `read` | the OpenAPI 3.1 document of these routes ([`openapi`]) |
//! | `GET /mothership/all`, `GET /mothership/{id}` | `read` | the cluster's Redis deployment, id `default` ([`redis`]) |
//! | `POST /mothership` | `admin` | refused (409): the deployment is fixed by `REDIS_SERVER` |
//! | `/rainservers…` | `read` / `admin` | the nodes and the operations on one ([`rainservers`]) |
//! | `/webcomponent…` | `read` / `admin` | components, instances, run-time deploys ([`webcomponents`]) |
//! | `GET /map` | `read` | the cluster as a graph ([`map`]) |
//!
//! `admin` implies every scope. Errors are `{"error": …}`; a JSON body that
//! does not parse is a 400 naming the field ([`body::ApiJson`]). A path
//! answers the same with a trailing slash ([`service`]).
//!
//! **Adding a route**: a handler with `#[utoipa::path(method, path = "/…",
//! request_body = …, responses(…))]` (its 2xx and its own errors: 404, 409,
//! 504; the guard adds 401/403 and, with a body, 400/413/415), taking
//! `State<ApiState>` and bodies as [`body::ApiJson`]; then one
//! `.routes(guarded(routes!(module::handler), ApiScope::…))` line in [`table`].
//! Nothing else mounts a route (`every_route_is_mounted_through_the_table`
//! checks the source), so none can be undocumented.
//!
//! Every request is counted (`rain_api_requests_total{route,status}`,
//! `rain_api_request_duration_seconds{route}`; `route` is the matched route's
//! template, so clients cannot grow the label set).
//!
//! `GET /admin` ([`admin`]), the page that draws the map, is the one route
//! without a token: it holds no data and asks for a token to read `/map`
//! with; like `/healthz` and `/readyz` it is mounted by `crate::server`,
//! outside the document.
//!
//! Owns the routes and their errors; the listener and the unauthenticated
//! `/healthz` and `/readyz` are `crate::server`'s.

pub mod admin;
pub mod auth;
pub mod body;
pub mod cloud;
pub mod control;
mod emit;
pub mod map;
pub mod openapi;
pub mod rainservers;
pub mod redis;
pub mod webcomponents;

pub use cloud::Cloud;
pub use emit::EmitRequest;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::ServiceExt;
use axum::extract::{FromRef, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::IntoMakeService;
use thiserror::Error;
use tower_http::normalize_path::NormalizePath;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::{ApiScope, Settings};
use crate::engine::Engine;
use crate::io::SocketIo;
use auth::Tokens;
use openapi::{Document, ErrorBody, guarded};

/// Why the API refused a request; the `Display` text is the JSON body's
/// `error`, so it never holds a secret.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error(
        "missing or unknown token (Authorization: Bearer <secret> or user: <secret>, of API_TOKENS)"
    )]
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
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
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
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        };
        let body = Json(ErrorBody {
            error: self.to_string(),
        });
        if status == StatusCode::UNAUTHORIZED {
            (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (status, body).into_response()
        }
    }
}

/// What the handlers reach: a route needing something new gets a field here.
#[derive(Clone)]
pub struct ApiState {
    pub io: SocketIo,
    pub engine: Engine,
    pub cloud: Cloud,
}

impl FromRef<ApiState> for Cloud {
    fn from_ref(state: &ApiState) -> Cloud {
        state.cloud.clone()
    }
}

impl FromRef<ApiState> for SocketIo {
    fn from_ref(state: &ApiState) -> SocketIo {
        state.io.clone()
    }
}

/// Every route with its documentation and its scope: the one place a route
/// is mounted.
fn table() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(openapi::frame())
        .routes(guarded(routes!(emit::emit), ApiScope::Emit))
        .routes(guarded(routes!(metrics), ApiScope::Read))
        .routes(guarded(routes!(openapi::openapi), ApiScope::Read))
        .routes(guarded(routes!(map::map), ApiScope::Read))
        .routes(guarded(routes!(redis::all), ApiScope::Read))
        .routes(guarded(routes!(redis::one), ApiScope::Read))
        .routes(guarded(routes!(redis::components), ApiScope::Read))
        .routes(guarded(routes!(redis::create), ApiScope::Admin))
        .routes(guarded(routes!(rainservers::all), ApiScope::Read))
        .routes(guarded(routes!(rainservers::one), ApiScope::Read))
        .routes(guarded(routes!(rainservers::urls), ApiScope::Read))
        .routes(guarded(routes!(rainservers::wire), ApiScope::Admin))
        .routes(guarded(routes!(rainservers::reset), ApiScope::Admin))
        .routes(guarded(routes!(rainservers::unregister), ApiScope::Admin))
        .routes(guarded(routes!(webcomponents::all), ApiScope::Read))
        .routes(guarded(routes!(webcomponents::one), ApiScope::Read))
        .routes(guarded(routes!(webcomponents::descriptor), ApiScope::Read))
        .routes(guarded(routes!(webcomponents::statistics), ApiScope::Read))
        .routes(guarded(routes!(webcomponents::instance), ApiScope::Read))
        .routes(guarded(routes!(webcomponents::deploy), ApiScope::Admin))
        .routes(guarded(
            routes!(webcomponents::instantiate),
            ApiScope::Admin,
        ))
        .routes(guarded(routes!(webcomponents::refresh), ApiScope::Admin))
        .routes(guarded(routes!(webcomponents::undeploy), ApiScope::Admin))
        .routes(guarded(
            routes!(webcomponents::cluster_instance),
            ApiScope::Admin,
        ))
        .routes(guarded(
            routes!(webcomponents::refresh_instance),
            ApiScope::Admin,
        ))
        .routes(guarded(
            routes!(webcomponents::stop_instance),
            ApiScope::Admin,
        ))
}

/// The OpenAPI 3.1 document of [`routes`], as `/openapi.json` serves it.
pub fn document() -> utoipa::openapi::OpenApi {
    table().into_openapi()
}

/// The API's routes, every one behind a token (an unknown path too, so the
/// API's shape is not told to whoever has none). Also takes this node's
/// Cloud API operations off the cluster (see [`control`]).
pub fn routes(settings: &Settings, cloud: Cloud, engine: Engine) -> Router {
    let tokens = Arc::new(Tokens::new(settings.api_tokens.clone()));
    cloud.cluster.on_topic(
        control::TOPIC,
        Arc::new(control::Inbound {
            control: cloud.control.clone(),
            executor: Arc::new(cloud.clone()),
        }),
    );
    let io = cloud.io.clone();
    let (router, document) = table().split_for_parts();
    let text = document
        .to_pretty_json()
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    router
        .with_state(ApiState { io, engine, cloud })
        .layer(axum::Extension(Document(text.into())))
        .fallback(|| async { ApiError::NotFound })
        .layer(from_fn_with_state(tokens, auth::authenticate))
        // Outermost, so refusals are counted too. Keep it the last layer.
        .layer(from_fn(count_request))
}

/// Counts a request and its duration by route template and status.
async fn count_request(request: Request, next: Next) -> Response {
    // Never the raw path: an unmatched request (any path a client makes up)
    // is counted under one label.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("rain_api_request_duration_seconds", "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("rain_api_requests_total", "route" => route, "status" => status).increment(1);
    response
}

/// The API listener's service: `router` (the API's routes and the health
/// checks) behind the trailing-slash trim, which must run before routing and
/// so wraps the router rather than being one of its layers.
pub fn service(router: Router) -> IntoMakeService<NormalizePath<Router>> {
    ServiceExt::<Request>::into_make_service(NormalizePath::trim_trailing_slash(router))
}

/// The node's metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "node",
    responses((
        status = 200,
        description = "Prometheus text exposition format 0.0.4",
        content_type = "text/plain",
        body = String
    ))
)]
async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let text = crate::metrics::render(crate::metrics::Live {
        connections: state.engine.session_count(),
        sockets: state.io.local_socket_count(),
        ready: state.io.cluster().is_ready(),
    });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::cluster::memory::MemoryCluster;
    use crate::engine::EngineConfig;

    const EMIT: &str = "backend:emit:0123456789abcdef";
    const READ: &str = "prometheus:read:0123456789abcdeg";
    const ADMIN: &str = "ops:admin:0123456789abcdeh";
    const ADMIN_SECRET: &str = "0123456789abcdeh";

    /// The API as the node serves it (routes, health checks aside, behind
    /// [`service`]).
    async fn serve() -> String {
        let settings = Settings {
            api_tokens: vec![
                EMIT.parse().unwrap(),
                READ.parse().unwrap(),
                ADMIN.parse().unwrap(),
            ],
            ..Settings::default()
        };
        let io = SocketIo::new(&settings, Arc::new(MemoryCluster::new("n".into())));
        let engine = Engine::new(EngineConfig::from(&settings), io.engine_handler());
        let cloud = Cloud::new(io, &settings, None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = routes(&settings, cloud, engine);
        tokio::spawn(async move { axum::serve(listener, service(router)).await });
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

    /// Every `$ref` in `value`, as JSON pointers into the document.
    fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    found.push(target);
                }
                map.values().for_each(|v| refs(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }

    /// `(METHOD, path)` of every operation of the document.
    fn operations(document: &Value) -> Vec<(String, String)> {
        let mut found = Vec::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                found.push((method.to_uppercase(), path.clone()));
            }
        }
        found
    }

    #[test]
    fn the_document_is_openapi_3_1_and_every_ref_resolves() {
        let document = serde_json::to_value(document()).unwrap();
        let version = document["openapi"].as_str().unwrap();
        assert!(version.starts_with("3.1."), "{version}");
        assert!(document["info"]["title"].is_string());
        let mut found = Vec::new();
        refs(&document, &mut found);
        assert!(!found.is_empty());
        for target in found {
            let pointer = target
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{target} is not local"));
            assert!(document.pointer(pointer).is_some(), "{target} resolves");
        }
        let schemes = &document["components"]["securitySchemes"];
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert_eq!(schemes["user"]["in"], "header");
        assert_eq!(schemes["user"]["name"], "user");
    }

    /// Each operation documents its scope (both schemes), the guard's answers
    /// and, with a body, the body's; every answer but 2xx is an `ErrorBody`.
    #[test]
    fn every_operation_documents_its_scope_and_its_errors() {
        let document = serde_json::to_value(document()).unwrap();
        let scope_of = |method: &str, path: &str| {
            let security = &document["paths"][path][method]["security"];
            assert_eq!(security[0]["bearer"], security[1]["user"], "{path}");
            security[0]["bearer"][0].as_str().unwrap().to_string()
        };
        assert_eq!(scope_of("post", "/emit"), "emit");
        assert_eq!(scope_of("get", "/metrics"), "read");
        assert_eq!(scope_of("get", "/openapi.json"), "read");
        for (method, path) in operations(&document) {
            let operation = &document["paths"][&path][method.to_lowercase()];
            let responses = operation["responses"].as_object().unwrap();
            let mut wanted = vec!["401", "403"];
            if operation.get("requestBody").is_some() {
                wanted.extend(["400", "413", "415"]);
            }
            for status in wanted {
                assert!(responses.contains_key(status), "{method} {path} {status}");
            }
            // `POST /mothership` exists to say why it is always refused.
            assert!(
                responses.keys().any(|s| s.starts_with('2'))
                    || (method.as_str(), path.as_str()) == ("POST", "/mothership"),
                "{method} {path}"
            );
            for (status, response) in responses {
                if !status.starts_with('2') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }

    /// The router answers every operation of the document (no 404 "no such
    /// route", no 405), with and without a trailing slash; the other way
    /// round, see `every_route_is_mounted_through_the_table`.
    #[tokio::test]
    async fn every_documented_operation_is_routed() {
        let url = serve().await;
        let document: Value = reqwest::Client::new()
            .get(format!("{url}/openapi.json"))
            .bearer_auth(ADMIN_SECRET)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let operations = operations(&document);
        assert!(operations.len() >= 3, "{operations:?}");
        for (method, path) in operations {
            // a path parameter gets a value no resource has: a 404 of its own
            let concrete: String = path
                .split('/')
                .map(|part| if part.starts_with('{') { "x" } else { part })
                .collect::<Vec<_>>()
                .join("/");
            for form in [concrete.clone(), format!("{concrete}/")] {
                let response = reqwest::Client::new()
                    .request(method.parse().unwrap(), format!("{url}{form}"))
                    .bearer_auth(ADMIN_SECRET)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body = response.text().await.unwrap();
                assert_ne!(status, 405, "{method} {form}");
                assert!(
                    !(status == 404 && body.contains("no such route")),
                    "{method} {form}: {body}"
                );
            }
        }
    }

    /// A route mounted any other way than `routes!` in [`table`] would be
    /// missing from the document: the API's source has no other.
    #[test]
    fn every_route_is_mounted_through_the_table() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![dir.join("api.rs")];
        for entry in std::fs::read_dir(dir.join("api")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let text = text.split("#[cfg(test)]").next().unwrap();
            for forbidden in [
                ".route(",
                ".route_service(",
                ".nest(",
                ".nest_service(",
                ".merge(",
            ] {
                assert!(
                    !text.contains(forbidden),
                    "{}: mounts a route with {forbidden} (use .routes(guarded(routes!(…), scope)) in api::table)",
                    file.display()
                );
            }
        }
    }

    #[tokio::test]
    async fn the_user_header_carries_the_token_too() {
        let url = serve().await;
        let client = reqwest::Client::new();
        let metrics = |secret: &'static str| {
            client
                .get(format!("{url}/metrics"))
                .header(auth::USER, secret)
                .send()
        };
        assert_eq!(metrics("0123456789abcdeg").await.unwrap().status(), 200);
        assert_eq!(metrics("0123456789abcdef").await.unwrap().status(), 403);
        assert_eq!(metrics("nope").await.unwrap().status(), 401);
        let response = client
            .post(format!("{url}/emit"))
            .header(auth::USER, "0123456789abcdef")
            .json(&json!({ "namespace": "/", "event": "news" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }

    #[tokio::test]
    async fn a_trailing_slash_answers_the_same() {
        let url = serve().await;
        let response = reqwest::Client::new()
            .post(format!("{url}/emit/"))
            .bearer_auth("0123456789abcdef")
            .json(&json!({ "namespace": "/", "event": "news" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        for path in ["/metrics/", "/openapi.json/", "/metrics//"] {
            let response = reqwest::Client::new()
                .get(format!("{url}{path}"))
                .bearer_auth("0123456789abcdeg")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{path}");
        }
    }

    /// A body that is not JSON, or not an emit, is a 400 whose message names
    /// the field; without a JSON content type, a 415; both `{"error"}`.
    #[tokio::test]
    async fn malformed_bodies_are_json_errors_naming_the_field() {
        let url = serve().await;
        let send = |body: &'static str, content_type: Option<&'static str>| {
            let mut request = reqwest::Client::new()
                .post(format!("{url}/emit"))
                .bearer_auth("0123456789abcdef")
                .body(body);
            if let Some(content_type) = content_type {
                request = request.header(header::CONTENT_TYPE, content_type);
            }
            async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.unwrap())
            }
        };
        let json = Some("application/json");
        for (body, field) in [
            (r#"{"namespace": "/"}"#, "event"),
            (r#"{"namespace": 1, "event": "e"}"#, "namespace"),
            (r#"{"namespace": "/", "event": "e", "args": 3}"#, "args"),
            (r#"{"namespace": "/", "event": "e", "rooms": [1]}"#, "rooms"),
        ] {
            let (status, answer) = send(body, json).await;
            assert_eq!(status, 400, "{body}: {answer}");
            let error = answer["error"].as_str().unwrap();
            assert!(error.contains(field), "{body}: {error}");
        }
        let (status, answer) = send("{", json).await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer["error"].is_string());
        let (status, answer) = send(r#"{"namespace": "/", "event": "e"}"#, None).await;
        assert_eq!(status, 415, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("Content-Type"),
            "{answer}"
        );
        let (status, answer) =
            send(r#"{"namespace": "/", "event": "e"}"#, Some("text/plain")).await;
        assert_eq!(status, 415, "{answer}");
    }
}
