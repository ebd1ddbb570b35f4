//! Live statistics: what a node records in Redis on every heartbeat
//! (`node:{id}`: group, state, the `stats` JSON), the node records read back
//! (`Membership::nodes`), and the Prometheus series of `/metrics`.
//!
//! A private `redis-server` on a free port, two `rain-node` processes (A hosts
//! nothing, group `edge`; B hosts `echo@1.0`), and the official
//! socket.io-client (through `tests/js_mothership/bridge.mjs`) calling echo
//! on both, so A routes to B.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use serde_json::json;

use rain_node::cluster::NodeState;
use rain_node::config::Settings;
use rain_node::stats::NodeStats;
use support::cluster::{HEARTBEAT_MS, NODE_TTL_MS, Node, RedisServer, spawn_binary_nodes};
use support::eventually;
use support::mothership::{Clients, wait_hosts};

const BIN: &str = env!("CARGO_BIN_EXE_rain-node");
/// Calls from the client on A (routed to B), and from the one on B.
const CALLS: usize = 20;

fn start() -> (RedisServer, Vec<Node>) {
    tokio::task::block_in_place(|| {
        let redis = RedisServer::start();
        let nodes = spawn_binary_nodes(
            BIN,
            &redis.url(),
            &[
                ("A", vec![("COMPONENTS", ""), ("NODE_GROUP", "edge")]),
                ("B", vec![("COMPONENTS", "echo@1.0")]),
            ],
        );
        (redis, nodes)
    })
}

/// `node:{id}` as Redis holds it.
async fn record(redis: &RedisServer, id: &str) -> HashMap<String, String> {
    let mut conn = redis.conn().await;
    conn.hgetall(format!("rain:node:{id}"))
        .await
        .expect("HGETALL")
}

/// The node's stats as of a beat that shows `wanted` (rates cover one beat,
/// so the first beat after the calls has them; totals only grow).
async fn stats_when(
    redis: &RedisServer,
    id: &str,
    wanted: impl Fn(&NodeStats) -> bool,
) -> NodeStats {
    eventually(Duration::from_secs(5), "a beat with traffic", async || {
        let held = record(redis, id).await;
        let text = held.get("stats").ok_or(format!("no stats in {held:?}"))?;
        let stats = NodeStats::parse(text).map_err(|e| format!("{e}: {text}"))?;
        if wanted(&stats) {
            Ok(stats)
        } else {
            Err(text.clone())
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_record_their_statistics_and_export_them() {
    let (redis, nodes) = start();
    wait_hosts(&redis, "echo", "1.0", &["B"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut js = Clients::start().await;
    let ns = "/echo/1.0/main";
    js.connect("on-a", a.url(), ns, json!({})).await;
    js.connect("on-b", b.url(), ns, json!({})).await;
    for i in 0..CALLS {
        let echoed = js.ok("on-a", "echo", json!(i)).await;
        assert_eq!(echoed["node"], "B", "{echoed}");
        js.ok("on-b", "echo", json!(i)).await;
    }
    let (error, _) = js.call("on-b", "nope", json!({})).await;
    assert!(!error.is_null(), "an unknown event is an error");

    // A: routed every call to B. Rates cover one beat: calls go on until a
    // beat saw all of it.
    let mut extra = 0;
    let stats = eventually(Duration::from_secs(10), "a busy beat on A", async || {
        js.ok("on-a", "echo", json!("more")).await;
        extra += 1;
        let held = record(&redis, "A").await;
        let text = held.get("stats").ok_or(format!("no stats in {held:?}"))?;
        let stats = NodeStats::parse(text).map_err(|e| format!("{e}: {text}"))?;
        let busy = [
            stats.routed_events_per_second,
            stats.events_per_second,
            stats.bytes_received_per_second,
            stats.bytes_sent_per_second,
        ];
        match busy.iter().all(|rate| *rate > 0.0) {
            true => Ok(stats),
            false => Err(text.clone()),
        }
    })
    .await;
    let held = record(&redis, "A").await;
    assert_eq!(held["group"], "edge");
    assert_eq!(held["state"], "running");
    assert!(stats.events_per_second > 0.0, "{stats:?}");
    assert!(stats.bytes_received_per_second > 0.0, "{stats:?}");
    assert!(stats.bytes_sent_per_second > 0.0, "{stats:?}");
    assert!(stats.cpu_percent >= 0.0, "{stats:?}");
    assert!(stats.resident_memory_bytes > 1_000_000, "{stats:?}");
    assert!(stats.window_ms > 0, "{stats:?}");
    assert_eq!((stats.connections, stats.sockets), (1, 1), "{stats:?}");
    let p50 = stats.routed_latency_ms.p50.expect("routed p50");
    let p99 = stats.routed_latency_ms.p99.expect("routed p99");
    assert!(p50 > 0.0 && p50 <= p99 && p99 < 2000.0, "{stats:?}");
    // A hosts no component, but its socket on echo's channel is counted.
    let echo = &stats.components["echo@1.0"];
    assert_eq!((echo.events, echo.errors), (0, 0), "{stats:?}");
    assert_eq!(echo.sockets_per_channel[ns], 1, "{stats:?}");

    // B: ran every handler, one of them an error.
    let handled = 2 * CALLS as u64 + 1 + extra;
    let stats = stats_when(&redis, "B", |s| {
        s.components
            .get("echo@1.0")
            .is_some_and(|echo| echo.events >= handled)
    })
    .await;
    let held = record(&redis, "B").await;
    assert_eq!(held["group"], "default");
    assert_eq!(held["state"], "running");
    let echo = &stats.components["echo@1.0"];
    assert_eq!(echo.events, handled, "{stats:?}");
    assert_eq!(echo.errors, 1, "{stats:?}");
    assert!(echo.latency_ms.p50.is_some() && echo.latency_ms.p99.is_some());
    assert_eq!(echo.sockets_per_channel[ns], 1, "{stats:?}");

    // /metrics on A: every series, with figures that fit what happened. A
    // first scrape is counted by the second.
    let _ = a.metrics().await;
    let unknown = reqwest::get(format!("{}/nowhere-{}", a.api_url(), CALLS))
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
    let metrics = a.metrics().await;
    let at_least = |name: &str, labels: &[(&str, &str)], min: f64| {
        let value = metrics
            .value(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in:\n{}", metrics.text));
        assert!(value >= min, "{name}{labels:?} = {value} < {min}");
    };
    at_least("process_cpu_seconds_total", &[], 0.001);
    at_least("process_resident_memory_bytes", &[], 1e6);
    at_least("rain_bytes_received_total", &[], 100.0);
    at_least("rain_bytes_sent_total", &[], 100.0);
    at_least("rain_connections", &[], 1.0);
    at_least("rain_sockets", &[], 1.0);
    at_least("rain_events_total", &[], CALLS as f64);
    at_least("rain_routed_events_total", &[], CALLS as f64);
    at_least("rain_routed_duration_seconds_count", &[], CALLS as f64);
    at_least(
        "rain_routed_duration_seconds_bucket",
        &[("le", "+Inf")],
        CALLS as f64,
    );
    at_least("rain_routed_duration_seconds_sum", &[], 0.0);
    at_least(
        "rain_api_requests_total",
        &[("route", "/metrics"), ("status", "200")],
        1.0,
    );
    at_least(
        "rain_api_requests_total",
        &[("route", "unmatched"), ("status", "401")],
        1.0,
    );
    at_least(
        "rain_api_request_duration_seconds_bucket",
        &[("route", "/metrics"), ("le", "+Inf")],
        1.0,
    );
    // The label is the route's template, never what a client made up.
    assert!(!metrics.text.contains("nowhere"), "{}", metrics.text);
    // B routed nothing to another node but served everything.
    let on_b = b.metrics().await;
    assert!(on_b.counter("rain_events_total", &[]) >= (CALLS + 1) as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_records_read_back_with_state_and_group() {
    let (redis, nodes) = start();
    let settings = Settings {
        redis_server: Some(redis.url()),
        node_id: "observer".into(),
        node_group: "ops".into(),
        heartbeat_ms: HEARTBEAT_MS,
        node_ttl_ms: NODE_TTL_MS,
        ..Settings::default()
    };
    let cluster = rain_node::cluster::connect(&settings).await.unwrap();
    cluster.set_stats_source(Arc::new(|| r#"{"probe":1}"#.to_string()));
    eventually(Duration::from_secs(5), "every node listed", async || {
        let records = cluster.nodes().await.map_err(|e| e.to_string())?;
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        if ids != ["A", "B", "observer"] {
            return Err(format!("{ids:?}"));
        }
        let a = &records[0];
        assert_eq!((a.group.as_str(), a.state.as_str()), ("edge", "running"));
        assert!(a.address.starts_with("http://127.0.0.1:"), "{a:?}");
        assert!(a.started_at > 0 && a.heartbeat >= a.started_at, "{a:?}");
        let stats = a.stats.as_deref().ok_or("A has no stats yet")?;
        NodeStats::parse(stats).map_err(|e| format!("{e}: {stats}"))?;
        // Its first beat may have gone out before the source was set.
        if records[2].stats.as_deref() != Some(r#"{"probe":1}"#) {
            return Err(format!("observer: {:?}", records[2].stats));
        }
        assert_eq!(records[2].group, "ops");
        Ok(())
    })
    .await;

    // A state change is recorded at once, not a period later.
    cluster.set_state(NodeState::Unregistered);
    eventually(
        Duration::from_millis(HEARTBEAT_MS * 4 / 5),
        "state recorded",
        async || match record(&redis, "observer").await.get("state") {
            Some(state) if state == "unregistered" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    // A drain says so itself.
    cluster.drain().await.unwrap();
    eventually(
        Duration::from_millis(HEARTBEAT_MS),
        "draining",
        async || {
            let records = cluster.nodes().await.map_err(|e| e.to_string())?;
            match records.iter().find(|r| r.id == "observer") {
                Some(observer) if observer.state == "draining" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // A node killed is gone from the list once its record expired.
    nodes[0].kill9();
    eventually(
        Duration::from_millis(NODE_TTL_MS + 2 * HEARTBEAT_MS + 1000),
        "A gone",
        async || {
            let records = cluster.nodes().await.map_err(|e| e.to_string())?;
            match records.iter().any(|r| r.id == "A") {
                false => Ok(()),
                true => Err("A still listed".into()),
            }
        },
    )
    .await;
    cluster.shutdown().await;
}
