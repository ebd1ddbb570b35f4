//! An operator's control of one node (`src/node_control.rs`, the API's
//! `/rainservers` routes for the node itself) on three real `rain-node`
//! processes and a private `redis-server`: unregister moves its clients to
//! the other nodes and keeps it up, out of rotation and out of every host
//! set, while it still forwards other nodes' sessions; register brings it
//! back; a signal during an unregister still exits 0; a reset rewrites the
//! node's sockets and rooms in Redis and subscribes anew, and its clients
//! keep getting room broadcasts and routed calls.
//!
//! Clients are the official socket.io-client (through
//! `tests/js_mothership/bridge.mjs`); forwarded polling requests are plain
//! HTTP. Heartbeats are `HEARTBEAT_MS` (shortened) apart.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde_json::{Value, json};

use support::cluster::{HEARTBEAT_MS, Node, RedisServer, http_status, spawn_binary_nodes};
use support::mothership::{Clients, probe_component, service_hosts, wait_hosts};
use support::{POLLING_PATH, TEST_API_SECRET, eventually, one_at_a_time};

const BIN: &str = env!("CARGO_BIN_EXE_rain-node");
const DRAIN_DELAY_MS: &str = "300";
const SHUTDOWN_TIMEOUT_MS: u64 = 5000;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn api(
    node: &Node,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    node.api(method, path, body).await
}

/// The services whose host set (`service:*:nodes`) names `node`.
async fn hosted_by(conn: &mut redis::aio::MultiplexedConnection, node: &str) -> Vec<String> {
    let keys: Vec<String> = conn.keys("rain:service:*:nodes").await.expect("KEYS");
    let mut hosting = Vec::new();
    for key in keys {
        if conn.sismember::<_, _, bool>(&key, node).await.unwrap() {
            hosting.push(key);
        }
    }
    hosting
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

/// A new Engine.IO handshake over polling, by plain HTTP: its status.
async fn handshake_status(node: &Node) -> Option<u16> {
    http_status(&format!("{}{POLLING_PATH}", node.url())).await
}

fn start(nodes: &[(&str, Vec<(&str, &str)>)]) -> (RedisServer, Vec<Node>) {
    tokio::task::block_in_place(|| {
        let redis = RedisServer::start();
        let nodes = spawn_binary_nodes(BIN, &redis.url(), nodes);
        (redis, nodes)
    })
}

/// Unregister: A's clients are closed and resume their sessions on B; A is
/// not ready, refuses handshakes, is in no host set across heartbeats and a
/// reconcile, keeps its record, and forwards a session of B's. A second
/// unregister is a no-op; register puts A back. Then a SIGTERM during an
/// unregister exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unregister_moves_clients_away_keeps_the_node_up_and_register_brings_it_back() {
    let _serial = one_at_a_time().await;
    let (_backend, dir) = probe_component(5000);
    let env = vec![
        ("COMPONENTS", "echo@1.0"),
        ("COMPONENTS_DIR", dir.path()),
        ("ROUTING", "round-robin"),
        ("DRAIN_DELAY_MS", DRAIN_DELAY_MS),
        ("DRAIN_BATCH", "2"),
        ("DRAIN_BATCH_PAUSE_MS", "100"),
        ("SHUTDOWN_TIMEOUT_MS", "5000"),
    ];
    let (redis, mut nodes) = start(&[("A", env.clone()), ("B", env.clone()), ("C", env)]);
    wait_hosts(&redis, "probe", "1.0", &["A", "B", "C"]).await;
    wait_hosts(&redis, "echo", "1.0", &["A", "B", "C"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut conn = redis.conn().await;
    let mut js = Clients::start().await;
    let probe = "/probe/1.0/main";

    // Four clients on A, each with a session holding a language.
    let tokens = js.with_sessions(4, a.url(), probe).await;

    let asked = Instant::now();
    let (status, body) = api(a, reqwest::Method::DELETE, "/rainservers/A", None).await;
    assert_eq!(
        (status, &body),
        (200, &json!({ "node": "A", "state": "unregistered" })),
        "{}",
        a.stderr_tail(20)
    );
    eprintln!("unregistered in {:?}", asked.elapsed());
    // Its clients were closed before the answer; each resumes its session
    // on B, whose events are served by the nodes still registered.
    for (i, token) in tokens.iter().enumerate() {
        let closes = js
            .closes(&format!("x{i}"), 1, Duration::from_millis(100))
            .await;
        assert_eq!(closes.len(), 1, "x{i} closed: {closes:?}");
        let name = format!("x{i}-again");
        js.connect(&name, b.url(), probe, json!({ "sessionId": token }))
            .await;
        for _ in 0..3 {
            let data = js.ok(&name, "whoami", json!({})).await;
            assert_ne!(data["node"], "A", "{data}");
            assert_eq!(
                data["session"]["data"]["language"],
                json!(format!("l{i}")),
                "{data}"
            );
        }
    }
    // Not ready on both listeners, handshakes refused, still alive.
    assert_eq!(a.status_of("/readyz").await, Some(503));
    assert_eq!(
        http_status(&format!("{}/readyz", a.api_url())).await,
        Some(503)
    );
    assert_eq!(a.status_of("/healthz").await, Some(200));
    assert_eq!(handshake_status(a).await, Some(503));
    assert_eq!(handshake_status(b).await, Some(200));

    // Out of every host set across heartbeats, with its record kept.
    for _ in 0..4 {
        assert_eq!(hosted_by(&mut conn, "A").await, Vec::<String>::new());
        assert_eq!(service_hosts(&mut conn, "echo@1.0").await, set(&["B", "C"]));
        assert_eq!(
            service_hosts(&mut conn, "probe@1.0").await,
            set(&["B", "C"])
        );
        tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS)).await;
    }
    let services: String = conn.hget("rain:node:A", "services").await.unwrap();
    assert_eq!(services, "[]", "A's record announces no service");
    // A reconcile does not put it back: with its record gone, A's next beat
    // writes it again and reconciles.
    let _: () = conn.del("rain:node:A").await.unwrap();
    eventually(
        Duration::from_secs(3),
        "A's record written again",
        async || match conn.exists::<_, bool>("rain:node:A").await.unwrap() {
            true => Ok(()),
            false => Err("no rain:node:A".into()),
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS)).await;
    assert_eq!(hosted_by(&mut conn, "A").await, Vec::<String>::new());
    assert_eq!(
        service_hosts(&mut conn, "probe@1.0").await,
        set(&["B", "C"])
    );

    // A polling session of B's that lands on A is forwarded.
    let sid = support::open_polling_session(&http(), b.url()).await;
    let posted = http()
        .post(format!("{}{POLLING_PATH}&sid={sid}", a.url()))
        .header("content-type", "text/plain;charset=UTF-8")
        .body("40/core,")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 200);
    let polled = http()
        .get(format!("{}{POLLING_PATH}&sid={sid}", a.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(polled.status().as_u16(), 200);
    let packets = polled.text().await.unwrap();
    assert!(packets.contains("40/core,"), "{packets}");

    // Unregistering again changes nothing, at once.
    let again = Instant::now();
    let (status, body) = api(a, reqwest::Method::DELETE, "/rainservers/A", None).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("unregistered"))
    );
    assert!(
        again.elapsed() < Duration::from_millis(300),
        "{:?}",
        again.elapsed()
    );

    // Register: ready, handshakes accepted, in the host sets again.
    let (status, body) = api(
        a,
        reqwest::Method::POST,
        "/rainservers",
        Some(json!({ "node": "A" })),
    )
    .await;
    assert_eq!(
        (status, &body),
        (
            200,
            &json!({
                "target": "node:A",
                "components": null,
                "nodes": [{ "node": "A", "state": "running" }],
            })
        )
    );
    assert_eq!(a.status_of("/readyz").await, Some(200));
    assert_eq!(handshake_status(a).await, Some(200));
    assert_eq!(
        service_hosts(&mut conn, "echo@1.0").await,
        set(&["A", "B", "C"])
    );
    assert_eq!(
        service_hosts(&mut conn, "probe@1.0").await,
        set(&["A", "B", "C"])
    );
    assert_eq!(hosted_by(&mut conn, "A").await.len(), 2);
    tokio::time::sleep(Duration::from_millis(2 * HEARTBEAT_MS)).await;
    assert_eq!(
        service_hosts(&mut conn, "echo@1.0").await,
        set(&["A", "B", "C"])
    );
    let services: String = conn.hget("rain:node:A", "services").await.unwrap();
    assert!(services.contains("echo@1.0"), "{services}");
    js.connect("back", a.url(), probe, json!({})).await;
    js.ok("back", "whoami", json!({})).await;

    // A SIGTERM while an unregister runs: the drain goes on to exit 0.
    let api_url = a.api_url().to_string();
    let pending = tokio::spawn(async move {
        http()
            .delete(format!("{api_url}/rainservers/A"))
            .bearer_auth(TEST_API_SECRET)
            .send()
            .await
            .map(|response| response.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let signalled = Instant::now();
    a.testbed().signal("-TERM");
    let mut node = nodes.remove(0);
    let status = tokio::task::spawn_blocking(move || {
        node.testbed_mut()
            .wait_exit(Duration::from_millis(SHUTDOWN_TIMEOUT_MS + 1000))
    })
    .await
    .unwrap()
    .expect("A exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_millis(SHUTDOWN_TIMEOUT_MS),
        "{:?}",
        signalled.elapsed()
    );
    eprintln!(
        "the unregister cut by the exit answered {:?}",
        pending.await.unwrap()
    );
    let registered: bool = conn.exists("rain:node:A").await.unwrap();
    assert!(!registered, "A deregistered");
}

/// Reset: with A's socket records and room set lost from Redis, a reset
/// writes them again; A subscribes anew, and its client in a room still gets
/// the room's broadcasts (sent from C, chat's only host) and its routed calls
/// answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_rebuilds_the_node_s_state_and_keeps_its_sockets_and_rooms() {
    let _serial = one_at_a_time().await;
    let (redis, nodes) = start(&[
        ("A", vec![("COMPONENTS", "")]),
        ("B", vec![("COMPONENTS", "")]),
        ("C", vec![("COMPONENTS", "chat@1.0")]),
    ]);
    wait_hosts(&redis, "chat", "1.0", &["C"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut conn = redis.conn().await;
    let mut js = Clients::start().await;
    let ns = "/chat/1.0/main";
    let ann = js.connect("ann", a.url(), ns, json!({})).await;
    js.connect("bob", b.url(), ns, json!({})).await;
    for who in ["ann", "bob"] {
        js.ok(who, "join", json!({ "room": "lobby", "nick": who }))
            .await;
    }
    // What Redis holds of ann, then lost.
    let conn_key = format!("rain:conn:{ann}");
    let record: std::collections::HashMap<String, String> = conn.hgetall(&conn_key).await.unwrap();
    assert_eq!(
        record.get("node").map(String::as_str),
        Some("A"),
        "{record:?}"
    );
    let rooms: Vec<String> = serde_json::from_str(&record["rooms"]).unwrap();
    assert!(!rooms.is_empty(), "{record:?}");
    let room_keys: Vec<String> = rooms
        .iter()
        .map(|room| format!("rain:room-sockets:{ns}:{room}"))
        .collect();
    for key in &room_keys {
        assert!(
            conn.sismember::<_, _, bool>(key, &ann).await.unwrap(),
            "{key}"
        );
        let _: () = conn.srem(key, &ann).await.unwrap();
    }
    let _: () = conn.del(&conn_key).await.unwrap();

    let (status, body) = api(a, reqwest::Method::PUT, "/rainservers/A", None).await;
    assert_eq!(
        (status, &body),
        (200, &json!({ "node": "A", "state": "running" })),
        "{}",
        a.stderr_tail(20)
    );
    assert!(
        a.testbed()
            .stderr_shows("subscribing anew", Duration::from_secs(2))
            .await,
        "{}",
        a.stderr_tail(20)
    );
    // Written again, from A's own state, by the time it answered.
    let again: std::collections::HashMap<String, String> = conn.hgetall(&conn_key).await.unwrap();
    assert_eq!(
        again.get("node").map(String::as_str),
        Some("A"),
        "{again:?}"
    );
    assert_eq!(again["rooms"], record["rooms"]);
    for key in &room_keys {
        assert!(
            conn.sismember::<_, _, bool>(key, &ann).await.unwrap(),
            "{key}"
        );
    }
    assert_eq!(a.status_of("/readyz").await, Some(200));
    assert_eq!(service_hosts(&mut conn, "chat@1.0").await, set(&["C"]));

    // A broadcast to the room from C reaches ann on A; ann's calls are routed.
    js.ok("bob", "say", json!({ "room": "lobby", "text": "after" }))
        .await;
    let got = js.events("ann", "message", 1, Duration::from_secs(3)).await;
    assert_eq!(got.len(), 1, "ann got {got:?}");
    assert_eq!(got[0][0]["text"], "after", "{got:?}");
    let said = js
        .ok("ann", "say", json!({ "room": "lobby", "text": "mine" }))
        .await;
    assert_eq!(said, json!({ "node": "C" }));
    let got = js.events("bob", "message", 2, Duration::from_secs(3)).await;
    assert!(
        got.iter().any(|args| args[0]["text"] == "mine"),
        "bob got {got:?}"
    );
}
