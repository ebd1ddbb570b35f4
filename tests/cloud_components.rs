//! The Cloud API's `/webcomponent` routes against three real `rain-node`s on
//! a private Redis, with the official socket.io-client (through
//! `tests/js_mothership/bridge.mjs`) on the channels: listing and paging,
//! one component, its descriptor and statistics; a run-time deploy of an HTTP
//! backend (routable within a second, kept by a restarted node, refused
//! outside `BACKEND_URLS`); instances made, clustered, refreshed, stopped;
//! an undeploy that tells each socket why, disconnects it and refuses later
//! connects, and a deploy again that lifts that.

mod support;

use std::time::{Duration, Instant};

use futures_util::FutureExt;
use redis::AsyncCommands;
use serde_json::{Value, json};
use support::cluster::{Node, RedisServer, spawn_binary_node, spawn_binary_nodes};
use support::mothership::{Backend, Clients, wait_hosts};

const RAIN_NODE: &str = env!("CARGO_BIN_EXE_rain-node");

async fn get(node: &Node, path: &str) -> (u16, Value) {
    node.api(reqwest::Method::GET, path, None).await
}

/// The node env: every node accepts run-time components under the test
/// backend's URL.
fn env<'a>(components: &'a str, backend_urls: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("COMPONENTS", components), ("BACKEND_URLS", backend_urls)]
}

fn quiz(backend: &Backend) -> Value {
    json!({
        "id": "quiz", "version": "1.0", "channels": ["main"],
        "handler": { "kind": "http", "url": format!("{}/quiz", backend.url) },
        "lifecycle": false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_are_listed_deployed_instantiated_and_undeployed_through_the_api() {
    // The backend answers with the event and the node that sent it.
    let backend = Backend::start(std::sync::Arc::new(|body: Value| {
        async move { json!({ "data": { "event": body["event"], "node": body["node"] } }) }.boxed()
    }));
    let allowed = format!("{}/", backend.url);
    let redis = RedisServer::start();
    let mut nodes = spawn_binary_nodes(
        RAIN_NODE,
        &redis.url(),
        &[
            ("A", env("echo@1.0", &allowed)),
            ("B", env("echo@1.0", &allowed)),
            ("C", env("chat@1.0", &allowed)),
        ],
    );
    wait_hosts(&redis, "echo", "1.0", &["A", "B"]).await;
    wait_hosts(&redis, "chat", "1.0", &["C"]).await;

    // Listing, paging, one component, its descriptor; any node answers.
    let (status, page) = get(&nodes[0], "/webcomponent/all").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 2, "{page}");
    let keys: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["chat@1.0", "echo@1.0"]);
    let (status, page) = get(&nodes[2], "/webcomponent/all/?start=1&range=1").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        (page["start"].clone(), page["items"][0]["key"].clone()),
        (json!(1), json!("echo@1.0"))
    );
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    for bad in ["range=0", "range=501", "start=-1"] {
        let (status, answer) = get(&nodes[0], &format!("/webcomponent/all?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    let (status, echo) = get(&nodes[2], "/webcomponent/echo/1.0").await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(
        (echo["hosts"].clone(), echo["handler"].clone()),
        (json!(["A", "B"]), json!("rust"))
    );
    let (status, descriptor) = get(&nodes[1], "/webcomponent/chat/1.0/descriptor").await;
    assert_eq!(
        (status, descriptor["id"].clone()),
        (200, json!("chat")),
        "{descriptor}"
    );
    for missing in [
        "/webcomponent/nope/1.0",
        "/webcomponent/echo/9.9/descriptor",
        "/webcomponent/echo/x",
    ] {
        let (status, answer) = get(&nodes[0], missing).await;
        assert_eq!(status, 404, "{missing}: {answer}");
    }

    // A deploy outside BACKEND_URLS is refused, and nothing is stored.
    let mut outside = quiz(&backend);
    outside["handler"]["url"] = json!("http://127.0.0.1:9/quiz");
    let (status, answer) = nodes[0]
        .api(
            reqwest::Method::POST,
            "/webcomponent",
            Some(json!({ "descriptor": outside, "nodes": ["B"] })),
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("BACKEND_URLS"),
        "{answer}"
    );
    let (status, answer) = nodes[0]
        .api(
            reqwest::Method::POST,
            "/webcomponent",
            Some(json!({ "descriptor": quiz(&backend), "nodes": ["B"], "group": "default" })),
        )
        .await;
    assert_eq!(status, 400, "nodes and group: {answer}");

    // Deployed at run time to A and B (asked of C): routable within a second.
    let mut clients = Clients::start().await;
    let (status, answer) = nodes[2]
        .api(
            reqwest::Method::POST,
            "/webcomponent",
            Some(json!({ "descriptor": quiz(&backend), "nodes": ["A", "B"] })),
        )
        .await;
    let deployed = Instant::now();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["hosts"], json!(["A", "B"]), "{answer}");
    let answered = loop {
        if clients
            .try_connect("ann", nodes[2].url(), "/quiz/1.0/main", json!({}))
            .await
            .is_ok()
            && let Ok((ack, _)) = clients.try_emit("ann", "ask", vec![json!({})], 2000).await
        {
            break ack;
        }
        assert!(
            deployed.elapsed() < Duration::from_secs(3),
            "quiz never routable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let routable = deployed.elapsed();
    eprintln!("quiz routable {routable:?} after the deploy was confirmed");
    assert!(routable < Duration::from_secs(1), "took {routable:?}");
    assert_eq!(answered[0], Value::Null, "{answered:?}");
    assert!(
        ["A", "B"].contains(&answered[1]["node"].as_str().unwrap()),
        "{answered:?}"
    );
    let (status, view) = get(&nodes[0], "/webcomponent/quiz/1.0").await;
    assert_eq!(
        (status, view["deployed"].clone(), view["handler"].clone()),
        (200, json!(true), json!("http")),
        "{view}"
    );

    // Statistics: the hosts' figures, as of their heartbeats.
    for _ in 0..5 {
        clients.ok("ann", "ask", json!({})).await;
    }
    let statistics = support::eventually(
        Duration::from_secs(5),
        "the statistics show the events and the socket",
        async || {
            let (status, statistics) = get(&nodes[1], "/webcomponent/quiz/1.0/statistics").await;
            if status == 200
                && statistics["events"].as_u64() >= Some(6)
                && statistics["sockets_per_channel"]["/quiz/1.0/main"] == json!(1)
            {
                Ok(statistics)
            } else {
                Err(format!("{status} {statistics}"))
            }
        },
    )
    .await;
    assert_eq!(statistics["errors"], 0, "{statistics}");
    assert!(
        statistics["latency_ms"]["p50"].as_f64().is_some(),
        "{statistics}"
    );
    assert!(
        statistics["nodes"]
            .as_object()
            .unwrap()
            .keys()
            .all(|n| ["A", "B", "C"].contains(&n.as_str())),
        "{statistics}"
    );

    // Instances: made on a host, clustered on the other, refreshed, stopped.
    let (status, made) = nodes[2]
        .api(reqwest::Method::POST, "/webcomponent/quiz/1.0", None)
        .await;
    assert_eq!(status, 200, "{made}");
    let owner = made["node"].as_str().unwrap().to_string();
    let instance = made["instance"].as_str().unwrap().to_string();
    assert!(instance.starts_with(&format!("{owner}:")), "{made}");
    let (status, view) = get(&nodes[0], &format!("/webcomponent/{instance}")).await;
    assert_eq!(
        (status, view["component"].clone(), view["node"].clone()),
        (200, json!("quiz@1.0"), json!(owner)),
        "{view}"
    );
    let (status, clustered) = nodes[0]
        .api(
            reqwest::Method::POST,
            &format!("/webcomponent/{instance}"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{clustered}");
    let other = if owner == "A" { "B" } else { "A" };
    assert_eq!(clustered["node"], other, "{clustered}");
    let (_, view) = get(&nodes[1], &format!("/webcomponent/{instance}")).await;
    assert_eq!(view["nodes"], json!([other]), "{view}");
    let (status, answer) = nodes[0]
        .api(
            reqwest::Method::POST,
            &format!("/webcomponent/{instance}"),
            Some(json!({ "node": "C" })),
        )
        .await;
    assert_eq!(status, 409, "C does not host quiz: {answer}");
    let (status, _) = nodes[1]
        .api(
            reqwest::Method::PUT,
            &format!("/webcomponent/{instance}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = nodes[1]
        .api(
            reqwest::Method::DELETE,
            &format!("/webcomponent/{instance}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let (status, answer) = nodes[2]
            .api(method.clone(), &format!("/webcomponent/{instance}"), None)
            .await;
        assert_eq!(status, 404, "{method} a stopped instance: {answer}");
    }
    let (status, answer) = nodes[2]
        .api(reqwest::Method::PUT, "/webcomponent/quiz/1.0", None)
        .await;
    assert_eq!(status, 200, "refresh: {answer}");

    // Persisted: B restarted hosts quiz again, read from the desired state.
    nodes[1].testbed().signal("-TERM");
    assert!(
        nodes[1]
            .testbed_mut()
            .wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    nodes[1] = spawn_binary_node(RAIN_NODE, &redis.url(), "B", &env("echo@1.0", &allowed));
    wait_hosts(&redis, "quiz", "1.0", &["A", "B"]).await;
    wait_hosts(&redis, "echo", "1.0", &["A", "B"]).await;

    // Undeployed (asked of A): each socket is told why, then disconnected;
    // later connects are refused; nothing is left in the registry.
    clients
        .connect("bob", nodes[0].url(), "/quiz/1.0/main", json!({}))
        .await;
    let (status, answer) = nodes[0]
        .api(
            reqwest::Method::DELETE,
            "/webcomponent/quiz/1.0?reason=retired",
            None,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["disconnected"], 2, "{answer}");
    for name in ["ann", "bob"] {
        let told = clients
            .events(name, "rain:undeployed", 1, Duration::from_secs(3))
            .await;
        assert_eq!(
            told,
            vec![vec![
                json!({ "component": "quiz", "version": "1.0", "reason": "retired" })
            ]],
            "{name}"
        );
        let closes = clients.closes(name, 1, Duration::from_secs(3)).await;
        assert_eq!(closes.len(), 1, "{name}: {closes:?}");
        assert_eq!(closes[0].1, "io server disconnect", "{name}");
    }
    for node in &nodes {
        let refused = clients
            .try_connect("late", node.url(), "/quiz/1.0/main", json!({}))
            .await;
        assert_eq!(
            refused,
            Err("component undeployed".to_string()),
            "on {}",
            node.url()
        );
    }
    let mut conn = redis.conn().await;
    let services: Vec<String> = conn.smembers("rain:services").await.unwrap();
    assert!(!services.contains(&"quiz@1.0".to_string()), "{services:?}");
    let mark: Option<String> = conn
        .hget("rain:desired", "undeployed:quiz@1.0")
        .await
        .unwrap();
    assert_eq!(mark.as_deref(), Some("retired"));
    let (status, _) = get(&nodes[2], "/webcomponent/quiz/1.0").await;
    assert_eq!(status, 404);
    let (status, _) = nodes[2]
        .api(reqwest::Method::DELETE, "/webcomponent/quiz/1.0", None)
        .await;
    assert_eq!(status, 404, "undeployed twice");

    // Deployed again, to the default group: every node hosts it and connects
    // are accepted again everywhere.
    let (status, answer) = nodes[1]
        .api(
            reqwest::Method::POST,
            "/webcomponent",
            Some(json!({ "descriptor": quiz(&backend), "group": "default" })),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["hosts"], json!(["A", "B", "C"]), "{answer}");
    clients
        .connect("cat", nodes[2].url(), "/quiz/1.0/main", json!({}))
        .await;
    let data = clients.ok("cat", "ask", json!({})).await;
    assert_eq!(data["event"], "ask", "{data}");
}
