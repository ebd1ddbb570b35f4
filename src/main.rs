//! The `rain-node` binary: reads the settings, starts one node, and shuts it down
//! gracefully on SIGTERM/SIGINT. The only place `anyhow` is used.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use rain_node::config::{Settings, redact_url};
use rain_node::io::SocketIo;
use rain_node::mothership::Mothership;
use rain_node::namespace::NamespaceHandler;
use rain_node::server::{Server, shutdown_signal};
use rain_node::socket::{Event, Payload, Socket};
use serde_json::json;

/// The main namespace of a bare node: clients may connect; an event nobody
/// handles is answered with an error ack rather than silence.
struct MainNamespace;

impl NamespaceHandler for MainNamespace {
    fn on_event(&self, _socket: &Arc<Socket>, event: Event) {
        if let Some(ack) = event.ack {
            let error = json!({ "error": format!("no handler for event {:?}", event.name) });
            let _ = ack.send(Payload::new(vec![error, serde_json::Value::Null]));
        }
    }
}

fn main() -> ExitCode {
    let settings = Settings::load_or_exit();
    init_tracing(&settings);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rain-node: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rain-node: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let cluster = rain_node::cluster::connect(&settings)
        .await
        .context("cannot start the cluster backend")?;
    let io = SocketIo::new(&settings, cluster.clone());
    io.namespace("/", MainNamespace);
    let components =
        rain_node::component::from_settings(&settings).context("cannot load the components")?;
    let mothership = Mothership::install(&io, &settings, components);
    let server = Server::bind(&settings, io).await?;
    // Scripts wait for these exact lines (stdout), in this order; everything
    // else goes to stderr.
    println!("rain-node listening on http://{}", server.local_addr());
    println!("rain-node api listening on http://{}", server.api_addr());
    tracing::info!(
        node_id = cluster.node_id(),
        backend = cluster.backend(),
        // Never the password: shown as `***`.
        redis = settings.redis_server.as_deref().map(redact_url).unwrap_or_default(),
        components = ?mothership.hosted(),
        "node started"
    );
    server.run(shutdown_signal()).await?;
    tracing::info!("node stopped");
    Ok(())
}

fn init_tracing(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
