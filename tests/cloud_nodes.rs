//! The Cloud API's `/rainservers` routes (issue 10) on three real `rain-node`
//! processes (A, B, C; group `g`, `COMPONENTS=echo@1.0`) and a private
//! `redis-server`: any node answers reads from the shared state and carries
//! an operation out through the node it concerns — unregister, register,
//! reset — with 504 when that node does not confirm within
//! `ROUTE_TIMEOUT_MS`; a group's wiring is applied live by its members,
//! persisted, and picked up by a member that restarts; bad bodies are 400 and
//! 409; a `read` token reads but cannot change.
//!
//! Clients are the official socket.io-client (through the `Clients` bridge).

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use reqwest::Method;
use serde_json::{Value, json};

use support::cluster::{Node, RedisServer, spawn_binary_node, spawn_binary_nodes};
use support::mothership::{Clients, service_hosts, wait_hosts};
use support::{TEST_API_TOKENS, eventually, one_at_a_time};

const BIN: &str = env!("CARGO_BIN_EXE_rain-node");
const ROUTE_TIMEOUT_MS: u64 = 1500;
const READ_SECRET: &str = "rain-test-read-secret";

fn env(tokens: &str) -> Vec<(&str, &str)> {
    vec![
        ("API_TOKENS", tokens),
        ("NODE_GROUP", "g"),
        ("COMPONENTS", "echo@1.0"),
        ("ROUTE_TIMEOUT_MS", "1500"),
    ]
}

/// A call with the `read` token: status and JSON body.
async fn read_call(node: &Node, method: Method, path: &str) -> (u16, Value) {
    node.api_as(READ_SECRET, method, path, None).await
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

fn states(all: &Value) -> Vec<(String, String)> {
    all.as_array()
        .unwrap_or_else(|| panic!("not a list: {all}"))
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Node `id`'s record in Redis has `state` as soon as the API answered:
/// the node writes it before it confirms.
async fn record_state(conn: &mut redis::aio::MultiplexedConnection, id: &str, state: &str) {
    let got: Option<String> = conn.hget(format!("rain:node:{id}"), "state").await.unwrap();
    assert_eq!(got.as_deref(), Some(state), "rain:node:{id} state");
}

fn pair(id: &str, state: &str) -> (String, String) {
    (id.to_string(), state.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rainservers_read_unregister_register_reset_timeout_and_group_wiring() {
    let _serial = one_at_a_time().await;
    let started = Instant::now();
    let tokens = format!("{TEST_API_TOKENS},reader:read:{READ_SECRET}");
    let node_env = env(&tokens);
    let (redis, mut nodes): (RedisServer, Vec<Node>) = tokio::task::block_in_place(|| {
        let redis = RedisServer::start();
        let nodes = spawn_binary_nodes(
            BIN,
            &redis.url(),
            &[
                ("A", node_env.clone()),
                ("B", node_env.clone()),
                ("C", node_env.clone()),
            ],
        );
        (redis, nodes)
    });
    wait_hosts(&redis, "echo", "1.0", &["A", "B", "C"]).await;
    let mut conn = redis.conn().await;

    // 1. Reading, from any node.
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let all = eventually(Duration::from_secs(5), "stats on every node", async || {
        let (status, all) = b.api(Method::GET, "/rainservers/all", None).await;
        if status != 200 {
            return Err(format!("{status} {all}"));
        }
        match all.as_array() {
            Some(list) if list.iter().all(|n| n["stats"].is_object()) => Ok(all),
            _ => Err(format!("{all}")),
        }
    })
    .await;
    assert_eq!(
        states(&all),
        vec![
            pair("A", "running"),
            pair("B", "running"),
            pair("C", "running")
        ]
    );
    for (n, node) in all.as_array().unwrap().iter().zip([a, b, c]) {
        assert_eq!(n["group"], "g", "{n}");
        assert_eq!(n["address"].as_str(), Some(node.url()), "{n}");
        let stats = &n["stats"];
        assert!(stats["cpu_percent"].as_f64().is_some(), "{n}");
        assert!(stats["resident_memory_bytes"].as_u64().unwrap() > 0, "{n}");
        assert!(stats["connections"].as_u64().is_some(), "{n}");
        assert!(stats["events_per_second"].as_f64().is_some(), "{n}");
    }
    let (status, slash) = b.api(Method::GET, "/rainservers/all/", None).await;
    assert_eq!(status, 200);
    assert_eq!(states(&slash), states(&all));
    let (status, one) = c.api(Method::GET, "/rainservers/A", None).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(
        (one["id"].as_str(), one["group"].as_str()),
        (Some("A"), Some("g"))
    );
    assert_eq!(one["address"].as_str(), Some(a.url()));
    let (status, urls) = c.api(Method::GET, "/rainservers/A/urls", None).await;
    assert_eq!(status, 200, "{urls}");
    assert_eq!(urls["node"], "A");
    assert_eq!(urls["address"].as_str(), Some(a.url()));
    let namespaces = urls["namespaces"].as_array().unwrap();
    assert!(namespaces.contains(&json!("/")), "{urls}");
    assert!(namespaces.contains(&json!("/core")), "{urls}");
    assert!(
        urls["channels"]
            .as_array()
            .unwrap()
            .contains(&json!({ "component": "echo@1.0", "namespace": "/echo/1.0/main" })),
        "{urls}"
    );
    let (status, missing) = c.api(Method::GET, "/rainservers/nope", None).await;
    assert_eq!(status, 404, "{missing}");
    assert!(missing["error"].is_string(), "{missing}");
    let (status, read) = read_call(b, Method::GET, "/rainservers/all").await;
    assert_eq!((status, states(&read)), (200, states(&all)));
    let (status, denied) = read_call(b, Method::DELETE, "/rainservers/A").await;
    assert_eq!(status, 403, "{denied}");
    assert_eq!(
        a.status_of("/readyz").await,
        Some(200),
        "a read token changed nothing"
    );

    // 2. Unregister A through B, register it through C.
    let (status, body) = b.api(Method::DELETE, "/rainservers/A", None).await;
    assert_eq!(
        (status, &body),
        (200, &json!({ "node": "A", "state": "unregistered" })),
        "{}",
        a.stderr_tail(20)
    );
    assert_eq!(a.status_of("/readyz").await, Some(503));
    record_state(&mut conn, "A", "unregistered").await;
    let (_, all) = b.api(Method::GET, "/rainservers/all", None).await;
    assert_eq!(
        states(&all),
        vec![
            pair("A", "unregistered"),
            pair("B", "running"),
            pair("C", "running")
        ]
    );
    assert_eq!(service_hosts(&mut conn, "echo@1.0").await, set(&["B", "C"]));
    let (status, body) = c
        .api(Method::POST, "/rainservers", Some(json!({ "node": "A" })))
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
    record_state(&mut conn, "A", "running").await;
    assert_eq!(
        service_hosts(&mut conn, "echo@1.0").await,
        set(&["A", "B", "C"])
    );

    // 3. Reset B through A: B's client keeps being served.
    let mut js = Clients::start().await;
    js.connect("onb", b.url(), "/echo/1.0/main", json!({}))
        .await;
    js.ok("onb", "echo", json!("before")).await;
    let (status, body) = a.api(Method::PUT, "/rainservers/B", None).await;
    assert_eq!(
        (status, &body),
        (200, &json!({ "node": "B", "state": "running" })),
        "{}",
        b.stderr_tail(20)
    );
    for i in 0..3 {
        let data = js.ok("onb", "echo", json!(format!("after{i}"))).await;
        assert_eq!(data["args"], json!([format!("after{i}")]), "{data}");
    }

    // 6. Bad bodies.
    let (status, body) = a
        .api(
            Method::POST,
            "/rainservers",
            Some(json!({ "node": "A", "group": "g" })),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].is_string(), "{body}");
    let (status, body) = a
        .api(
            Method::POST,
            "/rainservers",
            Some(json!({ "group": "g", "components": ["not a key"] })),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not a key"),
        "{body}"
    );

    // 4. C stopped: an operation on it answers 504 after ROUTE_TIMEOUT_MS.
    c.testbed().signal("-STOP");
    let asked = Instant::now();
    let (status, body) = a.api(Method::PUT, "/rainservers/C", None).await;
    let took = asked.elapsed();
    c.testbed().signal("-CONT");
    assert_eq!(status, 504, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert!(
        took >= Duration::from_millis(ROUTE_TIMEOUT_MS - 100)
            && took < Duration::from_millis(ROUTE_TIMEOUT_MS + 1000),
        "answered after {took:?}"
    );
    eventually(Duration::from_secs(5), "C answers again", async || match a
        .api(Method::PUT, "/rainservers/C", None)
        .await
    {
        (200, body) if body == json!({ "node": "C", "state": "running" }) => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await;

    // 5. The group's wiring: chat instead of echo, live on every member.
    let (status, body) = b
        .api(
            Method::POST,
            "/rainservers",
            Some(json!({ "group": "g", "components": ["chat@1.0"] })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["target"], "group:g", "{body}");
    assert_eq!(body["components"], json!(["chat@1.0"]), "{body}");
    let confirmed: BTreeSet<String> = body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(confirmed, set(&["A", "B", "C"]), "{body}");
    assert_eq!(
        service_hosts(&mut conn, "chat@1.0").await,
        set(&["A", "B", "C"])
    );
    assert_eq!(service_hosts(&mut conn, "echo@1.0").await, set(&[]));
    wait_hosts(&redis, "chat", "1.0", &["A", "B", "C"]).await;
    for node in [&nodes[0], &nodes[1], &nodes[2]] {
        let name = format!("chat-{}", node.id);
        js.connect(&name, node.url(), "/chat/1.0/main", json!({}))
            .await;
        let data = js
            .ok(&name, "join", json!({ "room": "lobby", "nick": name }))
            .await;
        assert_eq!(data["room"], "lobby", "{data}");
    }

    // A member restarted with the same settings hosts chat again, not echo.
    nodes[0].testbed().signal("-TERM");
    let mut old = nodes.remove(0);
    let status = tokio::task::spawn_blocking(move || {
        let status = old.testbed_mut().wait_exit(Duration::from_secs(5));
        drop(old);
        status
    })
    .await
    .unwrap()
    .expect("A exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    eventually(
        Duration::from_secs(3),
        "A out of chat's hosts",
        async || match service_hosts(&mut conn, "chat@1.0").await {
            got if got == set(&["B", "C"]) => Ok(()),
            got => Err(format!("{got:?}")),
        },
    )
    .await;
    let url = redis.url();
    let a = tokio::task::block_in_place(|| spawn_binary_node(BIN, &url, "A", &node_env));
    a.wait_ready().await;
    wait_hosts(&redis, "chat", "1.0", &["A", "B", "C"]).await;
    assert_eq!(service_hosts(&mut conn, "echo@1.0").await, set(&[]));
    let (status, urls) = nodes[0].api(Method::GET, "/rainservers/A/urls", None).await;
    assert_eq!(status, 200, "{urls}");
    let components: BTreeSet<String> = urls["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["component"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(components, set(&["chat@1.0"]), "{urls}");
    js.connect("chat-A2", a.url(), "/chat/1.0/main", json!({}))
        .await;
    let data = js
        .ok(
            "chat-A2",
            "join",
            json!({ "room": "lobby", "nick": "again" }),
        )
        .await;
    assert_eq!(data["room"], "lobby", "{data}");
    eprintln!("took {:?}", started.elapsed());
}
