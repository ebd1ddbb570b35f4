//! The HTTP server of a node: the listening socket, the routes, CORS, and the
//! graceful shutdown.
//!
//! Owns binding (port 0 → a free port), the router (`{socketio_path}`, `/healthz`,
//! `/readyz`), and the shutdown sequence: stop accepting, close every client with
//! an Engine.IO close so it reconnects elsewhere, and return within a bound. Does
//! not own the protocol (see `crate::transport`) or signal handling policy beyond
//! [`shutdown_signal`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::routing::{any, get};
use thiserror::Error;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::cluster::Cluster;
use crate::config::Settings;
use crate::engine::{Engine, EngineConfig, EngineHandler};
use crate::io::SocketIo;
use crate::session::CloseReason;
use crate::transport;

/// Errors of the server layer.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid CORS origin {0:?}")]
    CorsOrigin(String),
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// A node's HTTP server, bound and ready to run.
pub struct Server {
    listener: TcpListener,
    router: Router,
    engine: Engine,
    cluster: Arc<dyn Cluster>,
    shutdown_timeout: Duration,
}

impl Server {
    /// Binds the listening socket and builds the routes.
    pub async fn bind(settings: &Settings, io: SocketIo) -> Result<Server, ServerError> {
        let address = format!("{}:{}", settings.server_host, settings.server_port);
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|source| ServerError::Bind { address, source })?;
        crate::metrics::install();
        let mut config = EngineConfig::from(settings);
        config.auth_headers = io.has_connect_auth();
        let engine = Engine::new(config, io.engine_handler());
        let cluster = io.cluster().clone();
        if let Ok(address) = listener.local_addr() {
            cluster.set_address(format!("http://{address}"));
        }
        let router = router(settings, engine.clone(), io)?;
        Ok(Server {
            listener,
            router,
            engine,
            cluster,
            shutdown_timeout: settings.shutdown_timeout(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Also serves bare Engine.IO (no Socket.IO on top) at `path`, with its own
    /// sessions, handled by `handler`.
    pub fn with_engine_route(
        mut self,
        path: &str,
        config: EngineConfig,
        handler: Arc<dyn EngineHandler>,
    ) -> Self {
        let engine = Engine::new(config, handler);
        let route = Router::new()
            .route(path, any(transport::handle))
            .with_state(engine);
        self.router = self.router.merge(route);
        self
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully: new
    /// connections are refused, every client gets an Engine.IO close, and the call
    /// returns once they are gone or the shutdown timeout has passed.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let cluster = self.cluster.clone();
        let result = self.serve(shutdown).await;
        // Leave the cluster cleanly: the others need not wait for the TTL.
        cluster.shutdown().await;
        result
    }

    async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let engine = self.engine.clone();
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let serve = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!(
                sessions = engine.session_count(),
                "shutting down: closing every client"
            );
            engine.close_all(CloseReason::Shutdown);
            let _ = stopping_tx.send(());
        });
        let serve = tokio::spawn(serve.into_future());
        // Once shutdown has begun, the remaining work gets a bounded time.
        let _ = stopping_rx.await;
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        let drained = async {
            while self.engine.session_count() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        if tokio::time::timeout_at(deadline, drained).await.is_err() {
            tracing::warn!(
                sessions = self.engine.session_count(),
                "shutdown timeout: sessions still open"
            );
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, serve).await {
            Ok(Ok(result)) => result.map_err(ServerError::Serve),
            Ok(Err(join_error)) => Err(ServerError::Serve(std::io::Error::other(join_error))),
            Err(_) => {
                tracing::warn!("shutdown timeout: HTTP connections still open");
                Ok(())
            }
        }
    }
}

fn router(settings: &Settings, engine: Engine, io: SocketIo) -> Result<Router, ServerError> {
    let path = settings.socketio_path.clone();
    let bare_path = path.trim_end_matches('/').to_string();
    let cluster = io.cluster().clone();
    let mut router = Router::new().route(&path, any(transport::handle));
    if !bare_path.is_empty() && bare_path != path {
        router = router.route(&bare_path, any(transport::handle));
    }
    let metrics_engine = engine.clone();
    let metrics_cluster = cluster.clone();
    let router = router
        .with_state(engine)
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let text = crate::metrics::render(
                    metrics_engine.session_count(),
                    metrics_cluster.is_ready(),
                );
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        text,
                    )
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let ready = cluster.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        );
    let router = router.merge(crate::api::routes(io));
    Ok(router.layer(cors(&settings.cors_origins)?))
}

/// Socket.IO clients in browsers send credentials, so a wildcard origin is not
/// allowed: with no list configured the request's own origin is echoed back.
fn cors(origins: &[String]) -> Result<CorsLayer, ServerError> {
    let allow_origin = if origins.is_empty() {
        AllowOrigin::mirror_request()
    } else {
        let values = origins
            .iter()
            .map(|origin| {
                HeaderValue::from_str(origin).map_err(|_| ServerError::CorsOrigin(origin.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(values)
    };
    Ok(CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request()))
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
