//! Round trip of an event with an ack through the Mothership, on loopback:
//! client → node A → Redis → node C (hosts the component) → Redis → A → client,
//! beside the same event served by the node the client is on.
//!
//! ```sh
//! cargo bench --bench routed_rtt              # 5000 events each way, release build
//! EVENTS=20000 cargo bench --bench routed_rtt
//! ```
//!
//! Starts its own `redis-server` on a free port and two `rain-node` processes,
//! both with the spawners of `tests/support`: A hosts nothing, C hosts
//! `echo@1.0`. A raw websocket Socket.IO client sends `echo` events one at a time
//! (each waits for its ack) and prints the latency percentiles. Under
//! `cargo test --all-targets` (no `--bench`) it makes a quick run of 200 events
//! so the harness itself stays tested. It prints figures only.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

use support::cluster::RedisServer;
use support::{Testbed, spawn_program};

/// Starts the `rain-node` binary as node `id` of the cluster at `redis`, hosting
/// `components`, with every other setting at its default.
fn start_node(redis: &str, id: &str, components: &str) -> Testbed {
    spawn_program(
        Path::new(env!("CARGO_BIN_EXE_rain-node")),
        &[
            ("REDIS_SERVER", redis),
            ("NODE_ID", id),
            ("COMPONENTS", components),
            ("LOG", "warn"),
        ],
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text frame that is not a ping (answered).
async fn read_text(ws: &mut Ws) -> String {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.as_str() == "2" => {
                ws.send(Message::text("3")).await.unwrap()
            }
            Some(Ok(Message::Text(text))) => return text.to_string(),
            Some(Ok(_)) => {}
            other => panic!("connection ended: {other:?}"),
        }
    }
}

/// Sends `count` acked `echo` events on `/echo/1.0/main` through `url`;
/// returns each round trip and the node that answered.
async fn round_trips(url: &str, count: usize) -> (Vec<Duration>, String) {
    let ws_url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        url.replace("http", "ws")
    );
    let (mut ws, _) = connect_async(ws_url).await.expect("websocket");
    assert!(read_text(&mut ws).await.starts_with("0{"));
    ws.send(Message::text("40/echo/1.0/main,")).await.unwrap();
    let connected = read_text(&mut ws).await;
    assert!(
        connected.starts_with("40/echo/1.0/main,{"),
        "connect: {connected}"
    );
    let mut times = Vec::with_capacity(count);
    let mut node = String::new();
    for id in 0..count {
        let started = Instant::now();
        ws.send(Message::text(format!(
            r#"42/echo/1.0/main,{id}["echo",{id}]"#
        )))
        .await
        .unwrap();
        let answer = read_text(&mut ws).await;
        times.push(started.elapsed());
        let prefix = format!("43/echo/1.0/main,{id}[null,");
        assert!(answer.starts_with(&prefix), "ack {id}: {answer}");
        if node.is_empty() {
            let ack: serde_json::Value = serde_json::from_str(&answer[prefix.len() - 6..]).unwrap();
            node = ack[1]["node"].as_str().unwrap_or_default().to_string();
        }
    }
    (times, node)
}

fn report(label: &str, mut times: Vec<Duration>, node: &str) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "{label}: {} events, handler on node {node}: p50 {:?}, p90 {:?}, p99 {:?}, mean {:?}",
        times.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        mean
    );
}

#[tokio::main]
async fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let count = std::env::var("EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if bench_mode { 5000 } else { 200 });
    let redis = RedisServer::start();
    let node_a = start_node(&redis.url(), "A", "");
    let node_c = start_node(&redis.url(), "C", "echo@1.0");
    let (a, c) = (node_a.url(), node_c.url());
    // Let A's view of the component registry catch up with C's announcement.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Warm up both paths, then measure.
    round_trips(a, 100).await;
    round_trips(c, 100).await;
    let (routed, routed_node) = round_trips(a, count).await;
    let (local, local_node) = round_trips(c, count).await;
    assert_eq!(routed_node, "C");
    assert_eq!(local_node, "C");
    report(
        "routed (client on A, handler on C, via Redis)",
        routed,
        &routed_node,
    );
    report("local  (client on C, handler on C)", local, &local_node);
}
