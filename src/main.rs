//! The `rain-node` binary: reads the settings, starts one node, and shuts it down
//! gracefully on SIGTERM/SIGINT; or, as `rain-node healthcheck`, probes the node
//! the same settings describe. The only place `anyhow` is used.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use rain_node::component::desired::Desired;
use rain_node::config::{Command, LogFormat, Settings, redact_url};
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
    let (settings, command) = Settings::load_with_command_or_exit();
    if command == Some(Command::Healthcheck) {
        return healthcheck(&settings);
    }
    rain_node::logs::init(&settings);
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
    let log_format = settings.log_format;
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // With LOG_FORMAT=json every stderr line stays a JSON object.
            match log_format {
                LogFormat::Text => eprintln!("rain-node: {error:#}"),
                LogFormat::Json => tracing::error!(error = format!("{error:#}"), "node failed"),
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    // First: a SIGTERM from here on drains the node rather than killing it,
    // even one that arrives while it starts or just after the listening lines.
    let signal = shutdown_signal();
    let cluster = rain_node::cluster::connect(&settings)
        .await
        .context("cannot start the cluster backend")?;
    let io = SocketIo::new(&settings, cluster.clone());
    io.namespace("/", MainNamespace);
    let components =
        rain_node::component::from_settings(&settings).context("cannot load the components")?;
    // What operators set through the API (wiring, run-time deploys) wins over
    // the settings; with Redis away at start, the settings decide.
    let desired = match cluster.desired().await {
        Ok(values) => Desired::from(values),
        Err(error) => {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                "cannot read the desired state at start: hosting the components the settings name"
            );
            Desired::default()
        }
    };
    let mothership = Mothership::install_as_desired(&io, &settings, components, &desired);
    let server = Server::bind(&settings, io)
        .await?
        .with_mothership(mothership.clone())
        .drain_waits_for({
            let mothership = mothership.clone();
            move || mothership.serving()
        })
        .report_components(&mothership);
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
    server.run(signal).await?;
    tracing::info!("node stopped");
    Ok(())
}

/// `rain-node healthcheck`: one line on stdout (Docker keeps it with the
/// health status), exit 0 or 1. No logging set-up: the line is the output.
fn healthcheck(settings: &Settings) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            println!("unhealthy: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let verdict = runtime.block_on(rain_node::healthcheck::probe(settings));
    println!("{}", verdict.message);
    ExitCode::from(verdict.exit_code())
}
