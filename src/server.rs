//! The HTTP servers of a node: the public listener, the API listener, their
//! routes, CORS, and the graceful shutdown of both.
//!
//! Owns binding (port 0 → a free port) of the public listener
//! (`SERVER_HOST`:`SERVER_PORT`: `{socketio_path}`, `/healthz`, `/readyz`, CORS
//! for `CORS_ORIGINS` only) and of the API listener (`ADMIN_HOST`:`ADMIN_PORT`:
//! `crate::api`'s routes behind their tokens, `/healthz`, `/readyz` and the
//! `/admin` page without, no CORS), handing the cluster the source of the
//! node's statistics (see `crate::stats`), the signal ([`shutdown_signal`], registered as soon as it is
//! called), and the shutdown sequence: drain (see `crate::drain`), then stop
//! accepting on both listeners, wait for the last connections and leave the
//! cluster, all within `SHUTDOWN_TIMEOUT_MS`; and the node's
//! [`NodeControl`], shared by the API and the drain's state. Does not own the
//! protocol (see `crate::transport`), the API's routes and tokens (see
//! `crate::api`), the drain's steps (see `crate::drain`) or what unregistering
//! does (see `crate::node_control`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use thiserror::Error;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::api::Cloud;
use crate::cluster::Cluster;
use crate::config::Settings;
use crate::drain::{self, Busy, DrainPlan, DrainState};
use crate::engine::{Engine, EngineConfig, EngineHandler};
use crate::io::SocketIo;
use crate::mothership::Mothership;
use crate::node_control::NodeControl;
use crate::session::CloseReason;
use crate::stats::Sampler;
use crate::transport;
use crate::transport::forward::Forwarder;

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

/// A node's HTTP servers, bound and ready to run.
pub struct Server {
    listener: TcpListener,
    router: Router,
    api_listener: TcpListener,
    /// Everything the API's routes are built from when the server runs
    /// (after [`Server::with_mothership`], if called).
    api_settings: Settings,
    io: SocketIo,
    mothership: Option<Mothership>,
    engine: Engine,
    cluster: Arc<dyn Cluster>,
    shutdown_timeout: Duration,
    drain_state: DrainState,
    drain_plan: DrainPlan,
    /// Work outside the engine the drain waits for.
    busy: Vec<Busy>,
    /// What the node's record says of it, each heartbeat.
    stats: Sampler,
    node_control: NodeControl,
}

impl Server {
    /// Binds both listening sockets and builds the routes. Warns (once) when
    /// no API token is set: the API listener then refuses every call.
    pub async fn bind(settings: &Settings, io: SocketIo) -> Result<Server, ServerError> {
        let listener = listen(&settings.server_host, settings.server_port).await?;
        let api_listener = listen(&settings.admin_host, settings.admin_port).await?;
        crate::metrics::install();
        let mut config = EngineConfig::from(settings);
        config.auth_headers = io.has_connect_auth();
        let session_keys = config.session_keys.clone();
        let engine = Engine::new(config, io.engine_handler());
        let cluster = io.cluster().clone();
        if let Ok(address) = listener.local_addr() {
            cluster.set_address(settings.advertise_url_for(address));
        }
        engine.set_forwarder(Forwarder::new(cluster.clone(), session_keys));
        if settings.api_tokens.is_empty() {
            tracing::warn!(
                "API_TOKENS is not set: every call to the HTTP API (/emit, /metrics) is refused with 401"
            );
        }
        let stats = Sampler::new(engine.clone(), io.clone());
        cluster.set_stats_source(stats.source());
        let drain_state = DrainState::new();
        let node_control = NodeControl::new(
            engine.clone(),
            cluster.clone(),
            drain_state.clone(),
            DrainPlan::from(settings),
            settings.shutdown_timeout(),
        );
        let router = router(
            settings,
            engine.clone(),
            cluster.clone(),
            drain_state.clone(),
        )?;
        Ok(Server {
            listener,
            router,
            api_listener,
            api_settings: settings.clone(),
            io,
            mothership: None,
            engine,
            cluster,
            shutdown_timeout: settings.shutdown_timeout(),
            drain_state,
            drain_plan: DrainPlan::from(settings),
            busy: Vec::new(),
            stats,
            node_control,
        })
    }

    /// Has a drain also wait for this work to be done (`busy` says how much
    /// runs now), e.g. the Mothership's routed requests served here.
    pub fn drain_waits_for(mut self, busy: impl Fn() -> usize + Send + Sync + 'static) -> Self {
        self.busy.push(Arc::new(busy));
        self
    }

    /// Serves the Cloud API's component routes with this Mothership (without
    /// one they answer 409).
    pub fn with_mothership(mut self, mothership: Mothership) -> Self {
        self.mothership = Some(mothership);
        self
    }

    /// Also reports what `mothership`'s components do in the node's
    /// statistics (see `crate::stats`).
    pub fn report_components(mut self, mothership: &Mothership) -> Self {
        self.stats = self.stats.with_components(mothership.clone());
        self.cluster.set_stats_source(self.stats.source());
        self
    }

    /// Where the node is in its drain.
    pub fn drain_state(&self) -> &DrainState {
        &self.drain_state
    }

    /// Unregistering, registering and resetting this node while it runs
    /// (the API's `/rainservers` routes have one).
    pub fn node_control(&self) -> NodeControl {
        self.node_control.clone()
    }

    /// The public listener's address (Socket.IO, health checks).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The API listener's address (`/emit`, `/metrics`, health checks).
    pub fn api_addr(&self) -> SocketAddr {
        self.api_listener
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

    /// Serves until `shutdown` resolves, then drains (see `crate::drain`),
    /// stops both listeners and leaves the cluster, within
    /// `SHUTDOWN_TIMEOUT_MS` of the signal. Past that bound it returns anyway,
    /// `Ok` (the exit is a requested one), after a warning of what was cut.
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
        // Both listeners accept until the drain is over: existing sessions
        // (and, during the delay, new ones) are served as usual.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        let cloud = Cloud::new(self.io.clone(), &self.api_settings, self.mothership.clone())
            .with_node_control(self.node_control.clone());
        let api_router = crate::api::routes(&self.api_settings, cloud, self.engine.clone()).merge(
            health_routes(self.cluster.clone(), self.drain_state.clone())
                .route("/admin", get(crate::api::admin::page)),
        );
        let api = axum::serve(self.api_listener, crate::api::service(api_router))
            .with_graceful_shutdown(stopped(stop_rx.clone()));
        let api = tokio::spawn(api.into_future());
        let serve = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped(stop_rx));
        let mut serve = tokio::spawn(serve.into_future());
        tokio::select! {
            () = shutdown => {}
            ended = &mut serve => {
                // The public server failed on its own: nothing to drain.
                let _ = stop_tx.send(true);
                return match ended {
                    Ok(result) => result.map_err(ServerError::Serve),
                    Err(join_error) => Err(ServerError::Serve(std::io::Error::other(join_error))),
                };
            }
        }
        // From the signal on, the whole shutdown gets a bounded time.
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        drain::run(
            &self.drain_state,
            self.drain_plan,
            &self.engine,
            &self.cluster,
            &self.busy,
            deadline,
        )
        .await;
        // Whatever the drain could not close in time is closed now.
        self.engine.close_all(CloseReason::Shutdown);
        let _ = stop_tx.send(true);
        let api_abort = api.abort_handle();
        let result = wait_stopped(&self.engine, serve, deadline).await;
        // The API's calls are short: what is left at the deadline is cut.
        if tokio::time::timeout_at(deadline, api).await.is_err() {
            api_abort.abort();
        }
        result
    }
}

/// Waits, until `deadline`, for every client to be gone and the public server
/// to stop.
async fn wait_stopped(
    engine: &Engine,
    serve: tokio::task::JoinHandle<std::io::Result<()>>,
    deadline: tokio::time::Instant,
) -> Result<(), ServerError> {
    let drained = async {
        while engine.session_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout_at(deadline, drained).await.is_err() {
        tracing::warn!(
            sessions = engine.session_count(),
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

async fn listen(host: &str, port: u16) -> Result<TcpListener, ServerError> {
    // A tuple, not "host:port" text, so an IPv6 address needs no brackets.
    TcpListener::bind((host, port))
        .await
        .map_err(|source| ServerError::Bind {
            address: if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            },
            source,
        })
}

/// The public routes: Socket.IO and the health checks, under CORS when
/// `CORS_ORIGINS` names origins (with none, no CORS header is ever sent).
fn router(
    settings: &Settings,
    engine: Engine,
    cluster: Arc<dyn Cluster>,
    drain_state: DrainState,
) -> Result<Router, ServerError> {
    let path = settings.socketio_path.clone();
    let bare_path = path.trim_end_matches('/').to_string();
    let mut router = Router::new().route(&path, any(transport::handle));
    if !bare_path.is_empty() && bare_path != path {
        router = router.route(&bare_path, any(transport::handle));
    }
    let router = router
        .with_state(engine)
        .route_layer(axum::middleware::from_fn_with_state(
            drain_state.clone(),
            refuse_handshakes_when_draining,
        ))
        .merge(health_routes(cluster, drain_state));
    if settings.cors_origins.is_empty() {
        return Ok(router);
    }
    Ok(router.layer(cors(&settings.cors_origins)?))
}

/// A new Engine.IO session (a request without `sid`) is refused with 503
/// once the drain refuses handshakes: a balancer retries it on another node.
/// Requests of existing sessions pass.
async fn refuse_handshakes_when_draining(
    State(drain_state): State<DrainState>,
    request: Request,
    next: Next,
) -> Response {
    let has_sid = request
        .uri()
        .query()
        .is_some_and(|query| query.split('&').any(|pair| pair.starts_with("sid=")));
    if drain_state.refuses_handshakes() && !has_sid {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    next.run(request).await
}

/// `/healthz` and `/readyz`, served without a token on both listeners: a load
/// balancer probes the port it balances, an orchestrator the admin one. A
/// draining node is alive but not ready.
fn health_routes(cluster: Arc<dyn Cluster>, drain_state: DrainState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = !drain_state.is_draining() && cluster.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
}

/// CORS for the listed origins only. Socket.IO clients in browsers send
/// credentials (the session cookie), so the list is exact, never a wildcard.
fn cors(origins: &[String]) -> Result<CorsLayer, ServerError> {
    let values = origins
        .iter()
        .map(|origin| {
            HeaderValue::from_str(origin.trim_end_matches('/'))
                .map_err(|_| ServerError::CorsOrigin(origin.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CorsLayer::new()
        .allow_origin(AllowOrigin::list(values))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request()))
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called (not when the future is first polled), so a node calls it before it
/// says it listens: a signal that arrives in between starts a drain rather
/// than killing the process. Must be called within a tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (terminate, interrupt) {
                (Ok(mut terminate), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = terminate.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                (Ok(mut only), Err(error)) | (Err(error), Ok(mut only)) => {
                    tracing::warn!(%error, "cannot listen for one of SIGTERM and SIGINT");
                    only.recv().await;
                }
                (Err(error), Err(_)) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM or SIGINT");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
