//! The server the official conformance suites expect
//! (`socketio/engine.io-protocol` and `socketio/socket.io-protocol`, `test-suite/`):
//! on 127.0.0.1:3000, an Engine.IO echo at `/engine.io/` and Socket.IO at
//! `/socket.io/` with the namespaces `/` and `/custom`.
//!
//! Run: `cargo run --release --example conformance`, then `npm test` in a suite.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rain_node::config::Settings;
use rain_node::engine::{EngineConfig, EngineHandler, ProtocolViolation, SessionHandler};
use rain_node::io::SocketIo;
use rain_node::namespace::NamespaceHandler;
use rain_node::protocol::engineio::Packet;
use rain_node::server::{Server, shutdown_signal};
use rain_node::session::{CloseReason, Session};
use rain_node::socket::{Event, Payload, Socket};

/// `/` and `/custom`: `auth` on connect, `message` → `message-back`,
/// `message-with-ack` → the same arguments as the ack.
struct Suite;

impl NamespaceHandler for Suite {
    fn on_connect(&self, socket: &Arc<Socket>) {
        // The suites read each packet with a fresh one-shot listener, so two packets
        // that arrive in one TCP read lose the second. The node batches a client's
        // queued frames into one write; the `auth` packet is sent a moment after the
        // CONNECT reply so that the suite sees them in separate reads.
        let socket = socket.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let _ = socket.emit("auth", Payload::new(vec![socket.auth().clone()]));
        });
    }

    fn on_event(&self, socket: &Arc<Socket>, event: Event) {
        match (event.name.as_str(), event.ack) {
            ("message", _) => {
                let _ = socket.emit("message-back", event.payload);
            }
            ("message-with-ack", Some(ack)) => {
                let _ = ack.send(event.payload);
            }
            _ => {}
        }
    }
}

/// Engine.IO only: every message goes back to its sender.
struct EngineEcho;

struct EchoSession(Arc<Session>);

impl EngineHandler for EngineEcho {
    fn on_open(&self, session: &Arc<Session>) -> Arc<dyn SessionHandler> {
        Arc::new(EchoSession(session.clone()))
    }
}

impl SessionHandler for EchoSession {
    fn on_message(&self, text: Bytes) -> Result<(), ProtocolViolation> {
        let _ = self.0.send(Packet::Message(text).encode());
        Ok(())
    }

    fn on_binary(&self, data: Bytes) -> Result<(), ProtocolViolation> {
        let _ = self.0.send(Packet::Binary(data).encode());
        Ok(())
    }

    fn on_close(&self, _reason: CloseReason) {}
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Its settings are fixed in code (the suites expect them); only the
    // logging ones come from the environment.
    let log_format = std::env::var("LOG_FORMAT")
        .ok()
        .and_then(|format| format.parse().ok())
        .unwrap_or_default();
    rain_node::logs::init_with(
        &std::env::var("LOG").unwrap_or_else(|_| "warn".into()),
        log_format,
    );
    let settings = Settings {
        server_host: "127.0.0.1".into(),
        server_port: 3000,
        ping_interval_ms: 300,
        ping_timeout_ms: 200,
        connect_timeout_ms: 1000,
        max_payload: 1_000_000,
        ..Settings::default()
    };
    let io = SocketIo::new(&settings, rain_node::cluster::from_settings(&settings)?);
    io.namespace("/", Suite);
    io.namespace("/custom", Suite);
    let engine_config = EngineConfig {
        upgrade_timeout: Duration::from_secs(10),
        ..EngineConfig::from(&settings)
    };
    let signal = shutdown_signal();
    let server = Server::bind(&settings, io).await?.with_engine_route(
        "/engine.io/",
        engine_config,
        Arc::new(EngineEcho),
    );
    println!("rain-node listening on http://{}", server.local_addr());
    println!("rain-node api listening on http://{}", server.api_addr());
    server.run(signal).await?;
    Ok(())
}
