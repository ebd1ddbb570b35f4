//! Mothership integration tests: component routing across real `rain-node`
//! processes.
//!
//! Every test starts its own `redis-server` on a free port (never 6379) and the
//! `rain-node` binary as nodes A, B, C (`NODE_TTL_MS=2000`, `HEARTBEAT_MS=500`),
//! each with its own `COMPONENTS` / `COMPONENTS_DIR` / `ROUTING`. The client side
//! is the official socket.io-client, driven through `tests/js_mothership/bridge.mjs`
//! (one JSON request per line, clients kept across requests), so the Rust side
//! keeps process control: Redis inspection, node stderr (client logs), HTTP
//! backends (axum, on their own runtime so stopping one closes every connection),
//! and `kill -9`.
//!
//! Acks follow RAIN: `(error | null, data)`.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use redis::AsyncCommands;
use serde_json::{Value, json};

use support::cluster::{HEARTBEAT_MS, NODE_TTL_MS, Node, RedisServer, numsub, spawn_binary_nodes};
use support::mothership::{Backend, Clients, Handler, ack_pair, probe_component, wait_hosts};
use support::{ComponentsDir, unique};
use support::{eventually, one_at_a_time};

const BIN: &str = env!("CARGO_BIN_EXE_rain-node");
/// `ROUTE_TIMEOUT_MS` of every node here.
const ROUTE_TIMEOUT_MS: u64 = 2000;

// ---------------------------------------------------------------------------
// cluster set-up
// ---------------------------------------------------------------------------

/// Starts a Redis and one `rain-node` per `(id, extra env)`, in parallel.
fn start(nodes: &[(&str, Vec<(&str, &str)>)]) -> (RedisServer, Vec<Node>) {
    tokio::task::block_in_place(|| {
        let redis = RedisServer::start();
        let nodes: Vec<(&str, Vec<(&str, &str)>)> = nodes
            .iter()
            .map(|(id, env)| {
                let mut env = env.clone();
                if !env.iter().any(|(k, _)| *k == "ROUTE_TIMEOUT_MS") {
                    env.push(("ROUTE_TIMEOUT_MS", "2000"));
                }
                (*id, env)
            })
            .collect();
        let started = spawn_binary_nodes(BIN, &redis.url(), &nodes);
        (redis, started)
    })
}

/// How many acks report each `node` (`data.node`; an error ack counts as `error`).
fn count_nodes(acks: &[Vec<Value>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for ack in acks {
        let (error, data) = ack_pair(ack);
        let key = if error.is_null() {
            data["node"].as_str().unwrap_or("?").to_string()
        } else {
            format!("error {error}")
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

fn says(room: &str, n: usize) -> Vec<Vec<Value>> {
    (0..n)
        .map(|i| vec![json!({ "room": room, "text": format!("m{i}") })])
        .collect()
}

// ---------------------------------------------------------------------------
// 1. a component hosted on another node; a room across nodes
// ---------------------------------------------------------------------------

/// chat only on C: a client on A joins and says; the handler runs on C, the ack
/// reaches the client on A, and a member on B gets the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chat_hosted_on_another_node_serves_rooms_across_nodes() {
    let (redis, nodes) = start(&[
        ("A", vec![("COMPONENTS", "")]),
        ("B", vec![("COMPONENTS", "")]),
        ("C", vec![("COMPONENTS", "chat@1.0")]),
    ]);
    wait_hosts(&redis, "chat", "1.0", &["C"]).await;
    let (a, b) = (nodes[0].url(), nodes[1].url());
    let mut js = Clients::start().await;
    let ns = "/chat/1.0/main";
    js.connect("ann", a, ns, json!({})).await;
    js.connect("bob", b, ns, json!({})).await;

    let joined = js
        .ok("ann", "join", json!({ "room": "lobby", "nick": "ann" }))
        .await;
    assert_eq!(
        joined,
        json!({ "room": "lobby", "history": [], "node": "C" })
    );
    let joined = js
        .ok("bob", "join", json!({ "room": "lobby", "nick": "bob" }))
        .await;
    assert_eq!(joined["node"], "C");

    let said = js
        .ok("ann", "say", json!({ "room": "lobby", "text": "hi" }))
        .await;
    assert_eq!(said, json!({ "node": "C" }));
    for who in ["ann", "bob"] {
        let got = js.events(who, "message", 1, Duration::from_secs(3)).await;
        assert_eq!(got.len(), 1, "{who} got {got:?}");
        let msg = &got[0][0];
        assert_eq!(
            (&msg["room"], &msg["nick"], &msg["text"], &msg["node"]),
            (&json!("lobby"), &json!("ann"), &json!("hi"), &json!("C")),
            "{who}: {msg}"
        );
        assert!(msg["ts"].as_u64().is_some_and(|t| t > 0), "{msg}");
    }
    // The history is cluster-wide: a later joiner on A sees it.
    js.connect("cid", a, ns, json!({})).await;
    let joined = js.ok("cid", "join", json!({ "room": "lobby" })).await;
    assert_eq!(joined["history"][0]["text"], "hi", "{joined}");

    // Errors are error acks, not silence.
    let (error, data) = js
        .call("cid", "say", json!({ "room": "elsewhere", "text": "x" }))
        .await;
    assert_eq!(
        (error, data),
        (json!({ "error": "not joined" }), Value::Null)
    );
    let (error, data) = js.call("cid", "join", json!({ "room": 3 })).await;
    assert!(
        error["error"].is_string() && data.is_null(),
        "{error} {data}"
    );
    let (error, _) = js.call("cid", "say", json!("hi")).await;
    assert!(error["error"].is_string(), "{error}");

    // The fragment `1` resolves to 1.0 too.
    js.connect("frag", b, "/chat/1/main", json!({})).await;
    assert_eq!(
        js.ok("frag", "join", json!({ "room": "x" })).await["node"],
        "C"
    );

    // Unknown components and channels are refused with a clear message.
    let error = js
        .try_connect("nope", a, "/nope/1/main", json!({}))
        .await
        .unwrap_err();
    assert!(
        error.contains("unknown component channel /nope/1/main"),
        "{error}"
    );
    let error = js
        .try_connect("nochan", a, "/chat/1.0/other", json!({}))
        .await
        .unwrap_err();
    assert!(error.contains("no channel"), "{error}");
}

// ---------------------------------------------------------------------------
// 2. round-robin across hosts
// ---------------------------------------------------------------------------

/// chat on B and C, a client on A (which hosts nothing): 100 says split 50/50.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_spread_round_robin_over_the_hosts() {
    let (redis, nodes) = start(&[
        ("A", vec![("COMPONENTS", "")]),
        ("B", vec![("COMPONENTS", "chat@1.0")]),
        ("C", vec![("COMPONENTS", "chat@1.0")]),
    ]);
    wait_hosts(&redis, "chat", "1.0", &["B", "C"]).await;
    let mut js = Clients::start().await;
    js.connect("a", nodes[0].url(), "/chat/1.0/main", json!({}))
        .await;
    js.ok("a", "join", json!({ "room": "r" })).await;
    let acks = js.emits("a", "say", says("r", 100)).await;
    let counts = count_nodes(&acks);
    let (b, c) = (
        counts.get("B").copied().unwrap_or(0),
        counts.get("C").copied().unwrap_or(0),
    );
    assert_eq!(b + c, 100, "every say acked by B or C: {counts:?}");
    assert!(b.abs_diff(c) <= 1, "not 50/50 ±1: {counts:?}");
    // Sequential events alternate strictly.
    let order: Vec<&str> = acks
        .iter()
        .map(|a| a[1]["node"].as_str().unwrap_or("?"))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] != w[1]),
        "not alternating: {order:?}"
    );
    // leave is routed the same way.
    let leaves: Vec<Vec<Value>> = (0..10).map(|_| vec![json!({ "room": "r" })]).collect();
    let counts = count_nodes(&js.emits("a", "leave", leaves).await);
    assert_eq!(counts.values().sum::<usize>(), 10, "{counts:?}");
    assert_eq!(
        (counts.get("B"), counts.get("C")),
        (Some(&5), Some(&5)),
        "{counts:?}"
    );
}

/// ROUTING=round-robin on A, which hosts chat itself (as does B): A's events
/// alternate between A and B. B (ROUTING=local) runs its own clients' events.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_routing_includes_the_local_node() {
    let (redis, nodes) = start(&[
        (
            "A",
            vec![("COMPONENTS", "chat@1.0"), ("ROUTING", "round-robin")],
        ),
        ("B", vec![("COMPONENTS", "chat@1.0")]),
    ]);
    wait_hosts(&redis, "chat", "1.0", &["A", "B"]).await;
    let mut js = Clients::start().await;
    js.connect("a", nodes[0].url(), "/chat/1.0/main", json!({}))
        .await;
    js.connect("b", nodes[1].url(), "/chat/1.0/main", json!({}))
        .await;
    js.ok("a", "join", json!({ "room": "r" })).await;
    js.ok("b", "join", json!({ "room": "r" })).await;
    let acks = js.emits("a", "say", says("r", 20)).await;
    let order: Vec<&str> = acks
        .iter()
        .map(|a| a[1]["node"].as_str().unwrap_or("?"))
        .collect();
    let counts = count_nodes(&acks);
    assert_eq!(
        (counts.get("A"), counts.get("B")),
        (Some(&10), Some(&10)),
        "{order:?}"
    );
    assert!(
        order.windows(2).all(|w| w[0] != w[1]),
        "not alternating: {order:?}"
    );
    let counts = count_nodes(&js.emits("b", "say", says("r", 10)).await);
    assert_eq!(counts.get("B"), Some(&10), "ROUTING=local on B: {counts:?}");
}

// ---------------------------------------------------------------------------
// 3. intents
// ---------------------------------------------------------------------------

/// echo only on C: `request_intent {demo, echo}` from A runs on C.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn intents_resolve_to_a_host_on_another_node() {
    let (redis, nodes) = start(&[
        ("A", vec![("COMPONENTS", "")]),
        ("B", vec![("COMPONENTS", "chat@1.0")]),
        ("C", vec![("COMPONENTS", "echo@1.0")]),
    ]);
    wait_hosts(&redis, "echo", "1.0", &["C"]).await;
    let mut js = Clients::start().await;
    js.connect("a", nodes[0].url(), "/core", json!({})).await;
    let context = json!({ "text": "héllo", "n": [1, 2.5, null], "nested": { "ok": true } });
    let data = js
        .ok(
            "a",
            "request_intent",
            json!({ "category": "demo", "action": "echo", "context": context }),
        )
        .await;
    assert_eq!(data, json!({ "args": [context], "node": "C" }));

    let (error, data) = js
        .call(
            "a",
            "request_intent",
            json!({ "category": "demo", "action": "nothing", "context": {} }),
        )
        .await;
    assert_eq!(data, Value::Null);
    assert_eq!(error["error"], "no provider for intent", "{error}");
    let (error, _) = js
        .call("a", "request_intent", json!({ "context": {} }))
        .await;
    assert!(error["error"].is_string(), "{error}");
    let (error, _) = js.call("a", "no_such_event", json!({})).await;
    assert!(error["error"].is_string(), "{error}");
}

// ---------------------------------------------------------------------------
// 4. render and instance logs
// ---------------------------------------------------------------------------

/// chat only on B: a render from A is an instance of B, recorded in Redis; a
/// log line naming it (sent on C) is logged by B; one naming none by C.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn render_creates_an_instance_whose_logs_go_to_its_node() {
    let (redis, nodes) = start(&[
        ("A", vec![("COMPONENTS", "")]),
        ("B", vec![("COMPONENTS", "chat@1.0")]),
        ("C", vec![("COMPONENTS", "")]),
    ]);
    wait_hosts(&redis, "chat", "1.0", &["B"]).await;
    let mut js = Clients::start().await;
    js.connect("a", nodes[0].url(), "/core", json!({})).await;
    let rendered = js
        .ok(
            "a",
            "render",
            json!({ "id": "chat", "version": "1.0", "view": "main", "context": {} }),
        )
        .await;
    let instance = rendered["instanceId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        instance.starts_with("B:") && instance.len() > 2,
        "{rendered}"
    );
    assert_eq!(rendered["node"], "B");
    assert_eq!(rendered["view"], "main");
    assert!(
        rendered["html"]
            .as_str()
            .is_some_and(|h| h.contains("chat@1.0")),
        "{rendered}"
    );
    let mut conn = redis.conn().await;
    let key = format!("rain:instance:{instance}");
    let record: HashMap<String, String> = conn.hgetall(&key).await.unwrap();
    assert_eq!(
        record.get("node").map(String::as_str),
        Some("B"),
        "{key}: {record:?}"
    );
    assert_eq!(
        record.get("component").map(String::as_str),
        Some("chat"),
        "{record:?}"
    );
    assert_eq!(
        record.get("version").map(String::as_str),
        Some("1.0"),
        "{record:?}"
    );
    assert!(
        record.contains_key("created") && record.contains_key("state"),
        "{record:?}"
    );

    // render of an unknown component: an error ack.
    let (error, data) = js
        .call(
            "a",
            "render",
            json!({ "id": "nope", "version": "1.0", "view": "main" }),
        )
        .await;
    assert!(error["error"].is_string() && data.is_null(), "{error}");

    // A log line naming the instance, sent on C, is logged by B only.
    js.connect("log", nodes[2].url(), "/core/logging", json!({}))
        .await;
    let marker = unique("instance-log-");
    let data = js
        .ok(
            "log",
            "log",
            json!({ "level": "warn", "message": marker, "error": "boom", "instanceId": instance }),
        )
        .await;
    assert_eq!(data, json!(true));
    let line = wait_log(&nodes[1], &marker).await;
    assert!(
        line.contains("rain_node::client") && line.contains(&instance) && line.contains("WARN"),
        "B's line: {line}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    for node in [&nodes[0], &nodes[2]] {
        assert!(
            !node.testbed().stderr().contains(&marker),
            "node {} logged the instance's line too",
            node.id
        );
    }

    // One naming no instance is logged where the client is (C).
    let marker = unique("own-log-");
    js.ok("log", "log", json!({ "level": "warn", "message": marker }))
        .await;
    wait_log(&nodes[2], &marker).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for node in [&nodes[0], &nodes[1]] {
        assert!(
            !node.testbed().stderr().contains(&marker),
            "node {}",
            node.id
        );
    }

    // A component's own logging channel routes the same way.
    js.connect("clog", nodes[0].url(), "/chat/1.0/logging", json!({}))
        .await;
    let marker = unique("component-log-");
    js.ok(
        "clog",
        "log",
        json!({ "level": "info", "message": marker, "instanceId": instance }),
    )
    .await;
    wait_log(&nodes[1], &marker).await;
    let (error, _) = js.call("clog", "log", json!({ "level": "info" })).await;
    assert!(error["error"].is_string(), "a log without message: {error}");
}

/// The stderr line of `node` containing `marker`; panics after 3 s.
async fn wait_log(node: &Node, marker: &str) -> String {
    let started = Instant::now();
    loop {
        if let Some(line) = node.testbed().stderr().lines().find(|l| l.contains(marker)) {
            return line.to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "node {} did not log {marker}; its stderr:\n{}",
            node.id,
            node.stderr_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// 5. HTTP backend components
// ---------------------------------------------------------------------------

/// `notes@1.0`, an HTTP backend hosted by B: `join` joins the calling socket
/// to a room, `add` pushes a `note` to the room through `POST /emit` on the API
/// listener of another node (with an `emit` token), `fail` is an error answer;
/// a stopped backend is an error ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_backend_components_answer_join_rooms_and_push() {
    let emit_url: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
    let emits: Arc<Mutex<Vec<u16>>> = Arc::new(Mutex::new(Vec::new()));
    let handler: Handler = {
        let emit_url = emit_url.clone();
        let emits = emits.clone();
        Arc::new(move |body: Value| {
            let emit_url = emit_url.lock().unwrap().clone();
            let emits = emits.clone();
            async move {
                let arg = body["args"][0].clone();
                match body["event"].as_str().unwrap_or_default() {
                    "join" => json!({
                        "data": { "joined": arg["room"], "node": body["node"] },
                        "join": [arg["room"]],
                    }),
                    "add" => {
                        let status = reqwest::Client::new()
                            .post(format!("{emit_url}/emit"))
                            .bearer_auth(support::TEST_API_SECRET)
                            .json(&json!({
                                "namespace": body["namespace"],
                                "room": arg["room"],
                                "event": "note",
                                "args": [{ "text": arg["text"] }],
                            }))
                            .send()
                            .await
                            .map(|r| r.status().as_u16())
                            .unwrap_or(0);
                        emits.lock().unwrap().push(status);
                        if status == 202 {
                            json!({ "data": { "ok": true, "node": body["node"] } })
                        } else {
                            json!({ "error": { "error": format!("emit answered {status}") } })
                        }
                    }
                    "fail" => json!({ "error": { "error": "nope" } }),
                    _ => json!({ "data": null }),
                }
            }
            .boxed()
        })
    };
    let mut backend = Backend::start(handler);
    let dir = ComponentsDir::new(&[(
        "notes.json",
        json!({
            "id": "notes", "version": "1.0", "channels": ["main"],
            "handler": { "kind": "http", "url": format!("{}/notes", backend.url), "timeout_ms": 2000 },
        }),
    )]);
    let (redis, nodes) = start(&[
        ("A", vec![("COMPONENTS", "")]),
        (
            "B",
            vec![("COMPONENTS", ""), ("COMPONENTS_DIR", dir.path())],
        ),
        ("C", vec![("COMPONENTS", "")]),
    ]);
    // The backend pushes through C, a node neither hosting nor holding the caller.
    *emit_url.lock().unwrap() = nodes[2].api_url().to_string();
    wait_hosts(&redis, "notes", "1.0", &["B"]).await;

    let mut js = Clients::start().await;
    let ns = "/notes/1.0/main";
    let token = js.session_token("a-core", nodes[0].url()).await;
    let session = token.split('.').next().unwrap().to_string();
    let a_sid = js
        .connect("a", nodes[0].url(), ns, json!({ "sessionId": token }))
        .await;
    js.connect("c", nodes[2].url(), ns, json!({})).await;
    for who in ["a", "c"] {
        let data = js.ok(who, "join", json!({ "room": "r" })).await;
        assert_eq!(data, json!({ "joined": "r", "node": "B" }), "{who}");
    }
    let data = js
        .ok("a", "add", json!({ "room": "r", "text": "hello" }))
        .await;
    assert_eq!(data, json!({ "ok": true, "node": "B" }));
    for who in ["a", "c"] {
        let got = js.events(who, "note", 1, Duration::from_secs(3)).await;
        assert_eq!(got, vec![vec![json!({ "text": "hello" })]], "{who}");
    }
    assert_eq!(*emits.lock().unwrap(), vec![202]);

    // The body has the contract's shape.
    let adds = backend.bodies("add");
    assert_eq!(adds.len(), 1, "{adds:?}");
    let body = &adds[0];
    assert_eq!(
        (
            &body["component"],
            &body["version"],
            &body["channel"],
            &body["event"],
            &body["args"],
            &body["socket"],
            &body["node"],
            &body["namespace"],
            &body["instance"],
        ),
        (
            &json!("notes"),
            &json!("1.0"),
            &json!("main"),
            &json!("add"),
            &json!([{ "room": "r", "text": "hello" }]),
            &json!(a_sid),
            &json!("B"),
            &json!(ns),
            &Value::Null,
        ),
        "{body}"
    );
    assert_eq!(body["session"]["id"], json!(session), "{body}");
    assert!(body["session"]["data"].is_object(), "{body}");
    // No AUTH_URL: no user.
    assert_eq!(body["user"], Value::Null, "{body}");

    let (error, data) = js.call("a", "fail", json!({})).await;
    assert_eq!((error, data), (json!({ "error": "nope" }), Value::Null));

    // The backend goes away: an error ack, within the backend timeout.
    backend.stop();
    let (ack, elapsed) = js
        .try_emit(
            "a",
            "add",
            vec![json!({ "room": "r", "text": "lost" })],
            5000,
        )
        .await
        .unwrap_or_else(|e| panic!("add with the backend down: {e}"));
    let (error, data) = ack_pair(&ack);
    assert!(data.is_null(), "{ack:?}");
    assert!(
        ["backend unavailable", "backend timeout"].contains(&error["error"].as_str().unwrap_or("")),
        "{error}"
    );
    assert_eq!(error["component"], "notes@1.0", "{error}");
    assert!(
        elapsed < Duration::from_millis(ROUTE_TIMEOUT_MS + 500),
        "{elapsed:?}"
    );
    let late = js.events("c", "note", 1, Duration::from_millis(300)).await;
    assert!(late.is_empty(), "a note after the failed add: {late:?}");
}

// ---------------------------------------------------------------------------
// 6. hosts die
// ---------------------------------------------------------------------------

/// chat on B and C; C is killed: A's events go to B once C is purged; B is
/// killed too: `say` gets `component unavailable`, never silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_hosts_are_routed_around_then_reported_unavailable() {
    let (redis, nodes) = start(&[
        ("A", vec![("COMPONENTS", "")]),
        ("B", vec![("COMPONENTS", "chat@1.0")]),
        ("C", vec![("COMPONENTS", "chat@1.0")]),
    ]);
    wait_hosts(&redis, "chat", "1.0", &["B", "C"]).await;
    let mut js = Clients::start().await;
    js.connect("a", nodes[0].url(), "/chat/1.0/main", json!({}))
        .await;
    js.ok("a", "join", json!({ "room": "r" })).await;
    let counts = count_nodes(&js.emits("a", "say", says("r", 4)).await);
    assert_eq!(
        (counts.get("B"), counts.get("C")),
        (Some(&2), Some(&2)),
        "{counts:?}"
    );

    nodes[2].kill9();
    let killed = Instant::now();
    // Once Redis has seen C's connections close, and long before C is purged
    // (NODE_TTL_MS), every event goes to B: nothing is sent to a dead host.
    wait_gone(&redis, "C").await;
    let acks = js.emits("a", "say", says("r", 10)).await;
    assert_eq!(
        count_nodes(&acks).get("B"),
        Some(&10),
        "right after C died: {acks:?}"
    );
    assert!(
        killed.elapsed() < Duration::from_millis(NODE_TTL_MS),
        "{:?}",
        killed.elapsed()
    );
    let settle = Duration::from_millis(NODE_TTL_MS + 2000);
    tokio::time::sleep(settle.saturating_sub(killed.elapsed())).await;
    let acks = js.emits("a", "say", says("r", 20)).await;
    let counts = count_nodes(&acks);
    assert_eq!(
        counts.get("B"),
        Some(&20),
        "{:?} after C died: {counts:?}",
        killed.elapsed()
    );

    nodes[1].kill9();
    let killed = Instant::now();
    wait_gone(&redis, "B").await;
    // No host listens any more: the error ack comes at once, not after the
    // route timeout.
    let (ack, elapsed) = js
        .try_emit("a", "say", vec![json!({ "room": "r", "text": "t" })], 5000)
        .await
        .unwrap_or_else(|e| panic!("say right after B died: silence ({e})"));
    let (error, _) = ack_pair(&ack);
    assert_eq!(
        error,
        json!({ "error": "component unavailable", "component": "chat@1.0" }),
        "right after B died: {ack:?}"
    );
    assert!(elapsed < Duration::from_millis(500), "{elapsed:?}");
    let settle = Duration::from_millis(NODE_TTL_MS + 1500);
    tokio::time::sleep(settle.saturating_sub(killed.elapsed())).await;
    let (ack, elapsed) = js
        .try_emit("a", "say", vec![json!({ "room": "r", "text": "t" })], 5000)
        .await
        .unwrap_or_else(|e| panic!("say with no live host: silence ({e})"));
    assert_eq!(
        ack_pair(&ack),
        (
            json!({ "error": "component unavailable", "component": "chat@1.0" }),
            Value::Null
        ),
        "after both hosts died"
    );
    assert!(
        elapsed < Duration::from_millis(ROUTE_TIMEOUT_MS),
        "{elapsed:?}"
    );
    let mut conn = redis.conn().await;
    let hosts: BTreeSet<String> = conn.smembers("rain:service:chat@1.0:nodes").await.unwrap();
    assert!(hosts.is_empty(), "{hosts:?}");
}

// ---------------------------------------------------------------------------
// 7. version fragments
// ---------------------------------------------------------------------------

/// B hosts built-in chat@1.0 and an HTTP chat@1.1: `/chat/1/main` reaches 1.1,
/// `/chat/1.0/main` 1.0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn version_fragments_reach_the_newest_match() {
    let backend = Backend::start(Arc::new(|_body: Value| {
        async { json!({ "data": { "version": "1.1" } }) }.boxed()
    }));
    let dir = ComponentsDir::new(&[(
        "chat-1.1.json",
        json!({
            "id": "chat", "version": "1.1", "channels": ["main"],
            "handler": { "kind": "http", "url": format!("{}/chat", backend.url), "timeout_ms": 2000 },
        }),
    )]);
    let (redis, nodes) = start(&[
        ("A", vec![("COMPONENTS", "")]),
        (
            "B",
            vec![("COMPONENTS", "chat@1.0"), ("COMPONENTS_DIR", dir.path())],
        ),
    ]);
    wait_hosts(&redis, "chat", "1.0", &["B"]).await;
    wait_hosts(&redis, "chat", "1.1", &["B"]).await;
    let mut js = Clients::start().await;
    let a = nodes[0].url();
    for (name, ns, want) in [
        ("frag", "/chat/1/main", json!({ "version": "1.1" })),
        ("exact11", "/chat/1.1/main", json!({ "version": "1.1" })),
    ] {
        js.connect(name, a, ns, json!({})).await;
        assert_eq!(
            js.ok(name, "join", json!({ "room": "r" })).await,
            want,
            "{ns}"
        );
    }
    js.connect("exact10", a, "/chat/1.0/main", json!({})).await;
    let data = js.ok("exact10", "join", json!({ "room": "r" })).await;
    assert_eq!(data["node"], "B", "{data}");
    assert!(
        data["history"].is_array(),
        "/chat/1.0/main is the built-in: {data}"
    );
    let error = js
        .try_connect("v2", a, "/chat/2/main", json!({}))
        .await
        .unwrap_err();
    assert!(error.contains("unknown component channel"), "{error}");
}

// ---------------------------------------------------------------------------
// 8. change_language and the session across nodes
// ---------------------------------------------------------------------------

/// change_language on A stores the language in the session (Redis), and an
/// HTTP component hosted by C sees it in the session a client on C sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn change_language_is_stored_in_the_shared_session() {
    let (_backend, dir) = probe_component(2000);
    let (redis, nodes) = start(&[
        ("A", vec![("COMPONENTS", "")]),
        (
            "C",
            vec![("COMPONENTS", ""), ("COMPONENTS_DIR", dir.path())],
        ),
    ]);
    wait_hosts(&redis, "probe", "1.0", &["C"]).await;
    let mut js = Clients::start().await;
    let token = js.session_token("a", nodes[0].url()).await;
    let session = token.split('.').next().unwrap().to_string();
    let data = js
        .ok("a", "change_language", json!({ "language": "fr" }))
        .await;
    assert_eq!(data, json!({ "language": "fr", "node": "A" }));
    let mut conn = redis.conn().await;
    let stored: Option<String> = conn
        .hget(format!("rain:session:{session}"), "language")
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some("fr"));

    js.connect(
        "c",
        nodes[1].url(),
        "/probe/1.0/main",
        json!({ "sessionId": token }),
    )
    .await;
    let data = js.ok("c", "whoami", json!({})).await;
    assert_eq!(data["node"], "C");
    assert_eq!(data["session"]["id"], json!(session), "{data}");
    assert_eq!(data["session"]["data"]["language"], "fr", "{data}");

    let (error, _) = js.call("a", "change_language", json!({})).await;
    assert!(error["error"].is_string(), "{error}");
}

/// One room, whichever name of the version its members connected through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_connected_through_version_aliases_share_a_room() {
    let (redis, nodes) = start(&[
        ("A", vec![("COMPONENTS", "")]),
        ("B", vec![("COMPONENTS", "chat@1.0")]),
    ]);
    wait_hosts(&redis, "chat", "1.0", &["B"]).await;
    let mut js = Clients::start().await;
    js.connect("ann", nodes[0].url(), "/chat/1/main", json!({}))
        .await;
    js.connect("bob", nodes[1].url(), "/chat/1.0/main", json!({}))
        .await;
    js.ok("ann", "join", json!({ "room": "r", "nick": "ann" }))
        .await;
    js.ok("bob", "join", json!({ "room": "r", "nick": "bob" }))
        .await;
    let room_publishes = async || {
        nodes[1]
            .metrics()
            .await
            .counter("rain_cluster_published_total", &[("kind", "room")])
    };
    let before = room_publishes().await;
    js.ok("bob", "say", json!({ "room": "r", "text": "from 1.0" }))
        .await;
    js.ok("ann", "say", json!({ "room": "r", "text": "from 1" }))
        .await;
    // One PUBLISH per say, whatever the number of names the room's members
    // connected through.
    assert_eq!(room_publishes().await - before, 2.0);
    for who in ["ann", "bob"] {
        let got = js.events(who, "message", 2, Duration::from_secs(3)).await;
        let texts: Vec<&Value> = got.iter().map(|m| &m[0]["text"]).collect();
        assert_eq!(
            texts,
            [&json!("from 1.0"), &json!("from 1")],
            "{who} got {got:?}"
        );
    }
}

/// A log line naming an instance of a node that is not (or no longer) live is
/// logged by the node that received it rather than published to nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_lines_for_a_node_that_is_gone_are_logged_where_they_arrive() {
    let (_redis, nodes) = start(&[("A", vec![("COMPONENTS", "echo@1.0")])]);
    let mut js = Clients::start().await;
    js.connect("ann", nodes[0].url(), "/core/logging", json!({}))
        .await;
    let marker = unique("orphan-line");
    let ack = js
        .ok(
            "ann",
            "log",
            json!({ "level": "warn", "message": marker, "instanceId": "Z:0123abcd" }),
        )
        .await;
    assert_eq!(ack, json!(true));
    let line = wait_log(&nodes[0], &marker).await;
    assert!(line.contains("Z:0123abcd"), "{line}");
}

/// Waits until no connection listens on a node's channel (Redis has seen the
/// killed process's sockets close).
async fn wait_gone(redis: &RedisServer, node: &str) {
    let mut conn = redis.conn().await;
    let channel = format!("rain:node:{node}");
    eventually(
        Duration::from_secs(2),
        &format!("{channel} has no listener"),
        async || match numsub(&mut conn, &channel).await {
            0 => Ok(()),
            n => Err(format!("{n} listener(s)")),
        },
    )
    .await;
}

// ---------------------------------------------------------------------------
// Redis state that heals itself
// ---------------------------------------------------------------------------

/// A component's `join` whose answer lands after the client left: the client
/// asks to join and drops before the ack. Nothing of the socket may stay in
/// Redis (no `conn:{sid}` ghost, no room member), and the node's subscriptions
/// go back to what they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_that_lands_after_its_socket_left_leaves_nothing_behind() {
    let _serial = one_at_a_time().await;
    let handler: Handler = Arc::new(|body: Value| {
        async move {
            let arg = body["args"][0].clone();
            // Long enough for the client to be gone when the answer lands.
            tokio::time::sleep(Duration::from_millis(800)).await;
            json!({ "data": { "joined": arg["room"] }, "join": [arg["room"]] })
        }
        .boxed()
    });
    let backend = Backend::start(handler);
    let dir = ComponentsDir::new(&[(
        "slow.json",
        json!({
            "id": "slow", "version": "1.0", "channels": ["main"], "lifecycle": false,
            "handler": { "kind": "http", "url": format!("{}/slow", backend.url), "timeout_ms": 3000 },
        }),
    )]);
    let (redis, nodes) = start(&[(
        "A",
        vec![("COMPONENTS", ""), ("COMPONENTS_DIR", dir.path())],
    )]);
    wait_hosts(&redis, "slow", "1.0", &["A"]).await;
    let subscriptions_before = nodes[0].metrics().await.gauge("rain_cluster_subscriptions");

    let mut js = Clients::start().await;
    let ns = "/slow/1.0/main";
    let sid = js.connect("gone", nodes[0].url(), ns, json!({})).await;
    let join = js.send(json!({
        "op": "emit", "name": "gone", "event": "join", "args": [{ "room": "ghost" }], "timeout": 3000,
    }));
    eventually(
        Duration::from_secs(3),
        "the join reached the backend",
        || {
            let asked = backend.bodies("join").len();
            async move {
                if asked == 1 {
                    Ok(())
                } else {
                    Err(format!("{asked} joins"))
                }
            }
        },
    )
    .await;
    js.request(
        json!({ "op": "disconnect", "name": "gone" }),
        Duration::from_secs(3),
    )
    .await;
    let asked_at = Instant::now();
    let answer = js.wait(join, Duration::from_secs(6)).await;
    assert_eq!(answer["ok"], json!(false), "the client had left: {answer}");
    // Past the backend's answer (800 ms after it was asked), with a margin for
    // the node to apply it.
    tokio::time::sleep_until((asked_at + Duration::from_millis(1500)).into()).await;

    let mut conn = redis.conn().await;
    let ghost: bool = conn.exists(format!("rain:conn:{sid}")).await.unwrap();
    assert!(!ghost, "rain:conn:{sid} outlived its socket");
    let members: BTreeSet<String> = conn
        .smembers(format!("rain:room-sockets:{ns}:ghost"))
        .await
        .unwrap();
    assert!(members.is_empty(), "room members left behind: {members:?}");
    let in_namespace: BTreeSet<String> = conn
        .smembers(format!("rain:ns-sockets:{ns}"))
        .await
        .unwrap();
    assert!(!in_namespace.contains(&sid), "{in_namespace:?}");
    let node = &nodes[0];
    eventually(
        Duration::from_secs(2),
        "the subscriptions gauge is back",
        || async {
            let now = node.metrics().await.gauge("rain_cluster_subscriptions");
            if now == subscriptions_before {
                Ok(())
            } else {
                Err(format!(
                    "{now} subscriptions, {subscriptions_before} before"
                ))
            }
        },
    )
    .await;
    let numsub = numsub(&mut conn, &format!("rain:room:{ns}:ghost")).await;
    assert_eq!(numsub, 0, "a node still listens to the ghost room");
}

/// Nothing a client can create lives in Redis without an owner or a TTL: a
/// rendered instance belongs to its rendering node, stays while its socket is
/// connected and expires `INSTANCE_TTL_MS` after the socket left (or goes with
/// its node); a chat room's history expires `CHAT_HISTORY_TTL_MS` after its
/// last `say`; no intent sets are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_and_histories_expire_and_belong_to_their_node() {
    let _serial = one_at_a_time().await;
    let short = [
        ("COMPONENTS", "chat@1.0"),
        ("INSTANCE_TTL_MS", "1500"),
        ("CHAT_HISTORY_TTL_MS", "1500"),
    ];
    let (redis, nodes) = start(&[("A", vec![("COMPONENTS", "")]), ("B", short.to_vec())]);
    wait_hosts(&redis, "chat", "1.0", &["B"]).await;
    let mut js = Clients::start().await;
    let mut conn = redis.conn().await;
    let render = json!({ "id": "chat", "version": "1.0", "view": "main", "context": {} });

    // Kept alive while its socket is connected, well past the TTL…
    js.connect("kept", nodes[0].url(), "/core", json!({})).await;
    let kept = js.ok("kept", "render", render.clone()).await["instanceId"]
        .as_str()
        .unwrap()
        .to_string();
    let key = format!("rain:instance:{kept}");
    let ttl: i64 = conn.pttl(&key).await.unwrap();
    assert!(ttl > 0 && ttl <= 1500, "PTTL {key} = {ttl}");
    let owned: BTreeSet<String> = conn.smembers("rain:node-instances:B").await.unwrap();
    assert!(owned.contains(&kept), "{owned:?}");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(
        conn.exists::<_, bool>(&key).await.unwrap(),
        "{key} expired while its socket was connected"
    );
    // …and gone within the TTL (plus a beat) once the socket left.
    js.request(
        json!({ "op": "disconnect", "name": "kept" }),
        Duration::from_secs(3),
    )
    .await;
    eventually(
        Duration::from_millis(1500 + 2 * HEARTBEAT_MS + 500),
        "the instance expired",
        async || {
            if conn
                .exists::<_, bool>(&key)
                .await
                .map_err(|e| e.to_string())?
            {
                Err(format!("{key} still there"))
            } else {
                Ok(())
            }
        },
    )
    .await;

    // A chat room's history expires after its last message.
    js.connect("chat", nodes[0].url(), "/chat/1.0/main", json!({}))
        .await;
    js.ok("chat", "join", json!({ "room": "brief", "nick": "n" }))
        .await;
    js.ok("chat", "say", json!({ "room": "brief", "text": "hi" }))
        .await;
    let history = "rain:list:chat:brief";
    let ttl: i64 = conn.pttl(history).await.unwrap();
    assert!(ttl > 0 && ttl <= 1500, "PTTL {history} = {ttl}");

    // An instance of a node that dies goes with it.
    js.connect("dies", nodes[0].url(), "/core", json!({})).await;
    let orphan = js.ok("dies", "render", render).await["instanceId"]
        .as_str()
        .unwrap()
        .to_string();
    nodes[1].kill9();
    let orphan_key = format!("rain:instance:{orphan}");
    eventually(
        Duration::from_millis(NODE_TTL_MS + 3000),
        "the dead node's instance is gone",
        async || {
            let left: bool = conn.exists(&orphan_key).await.map_err(|e| e.to_string())?;
            let owned: bool = conn
                .exists("rain:node-instances:B")
                .await
                .map_err(|e| e.to_string())?;
            if left || owned {
                Err(format!("{orphan_key} {left}, node-instances:B {owned}"))
            } else {
                Ok(())
            }
        },
    )
    .await;

    let intents: Vec<String> = redis::cmd("KEYS")
        .arg("rain:intent:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(intents.is_empty(), "{intents:?}");
}

/// After Redis restarts empty (its scripts forgotten, its registry gone), a
/// routed event reaches the host again by itself within seconds: the nodes
/// register their components again and the routing script is loaded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_comes_back_after_redis_restarts() {
    let _serial = one_at_a_time().await;
    let (mut redis, nodes) = start(&[
        ("A", vec![("COMPONENTS", "")]),
        ("B", vec![("COMPONENTS", "echo@1.0")]),
    ]);
    wait_hosts(&redis, "echo", "1.0", &["B"]).await;
    let mut js = Clients::start().await;
    let ns = "/echo/1.0/main";
    js.connect("a", nodes[0].url(), ns, json!({})).await;
    assert_eq!(js.ok("a", "echo", json!(1)).await["node"], "B");

    tokio::task::block_in_place(|| redis.restart());
    let mut answers = Vec::new();
    eventually(
        Duration::from_secs(10),
        "echo is routed to B again",
        async || match js.try_emit("a", "echo", vec![json!(2)], 1000).await {
            Ok((ack, _)) if ack.first() == Some(&Value::Null) => Ok(()),
            Ok((ack, _)) => {
                answers.push(ack.clone());
                Err(format!("acked {ack:?}"))
            }
            Err(error) => Err(error),
        },
    )
    .await;
    // Meanwhile the client was told plainly what was wrong, never left waiting.
    for ack in &answers {
        let error = ack
            .first()
            .and_then(|e| e["error"].as_str())
            .unwrap_or_default();
        assert!(
            ["cluster unavailable", "component unavailable"].contains(&error),
            "{ack:?}"
        );
    }
}

/// A client's log line cannot forge lines of the node's log (its text is
/// written quoted and escaped), carries no session id into the log, and is
/// refused over `LOG_LINE_MAX_LENGTH` while the client carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_log_lines_are_escaped_capped_and_name_no_session() {
    let _serial = one_at_a_time().await;
    let (_redis, nodes) = start(&[(
        "A",
        vec![("COMPONENTS", ""), ("LOG_LINE_MAX_LENGTH", "200")],
    )]);
    let mut js = Clients::start().await;
    let token = js.session_token("core", nodes[0].url()).await;
    let session = token.split('.').next().unwrap().to_string();
    js.connect(
        "c",
        nodes[0].url(),
        "/core/logging",
        json!({ "sessionId": token }),
    )
    .await;
    let marker = unique("marker");
    let forged = format!("{marker}\nERROR rain_node: forged by a client");
    let ack = js
        .ok("c", "log", json!({ "level": "error", "message": forged }))
        .await;
    assert_eq!(ack, json!(true));
    let line = wait_log(&nodes[0], &marker).await;
    assert!(
        line.contains("forged by a client"),
        "one line, escaped: {line}"
    );
    let stderr = nodes[0].testbed().stderr();
    assert!(
        !stderr
            .lines()
            .any(|l| l.starts_with("ERROR rain_node: forged")),
        "{stderr}"
    );
    assert!(!stderr.contains(&session), "the session id reached the log");
    assert!(
        !stderr.contains(&token),
        "the session token reached the log"
    );

    let (error, data) = js
        .call(
            "c",
            "log",
            json!({ "level": "info", "message": "x".repeat(201) }),
        )
        .await;
    assert_eq!(
        (error, data),
        (
            json!({ "error": "log line longer than 200 bytes" }),
            Value::Null
        )
    );
    assert_eq!(
        js.ok("c", "log", json!({ "message": "still here" })).await,
        json!(true)
    );
}
