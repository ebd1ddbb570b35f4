//! The graceful drain (`src/drain.rs`) of real `rain-node` processes on a
//! private `redis-server`, seen from outside: readiness, handshakes, the
//! component host sets in Redis, routed calls in flight, clients closed in
//! batches that resume their session on the other node, and the exit status.
//!
//! Clients are the official socket.io-client (through
//! `tests/js_mothership/bridge.mjs`); new handshakes are also tried with plain
//! HTTP. Nodes run with `ROUTING=round-robin`, so which node serves an event
//! is decided by the host sets in Redis alone. Delays are short (a drain of
//! about three seconds) to keep each test a few seconds long.

mod support;

use std::collections::BTreeSet;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use redis::AsyncCommands;
use serde_json::{Value, json};

use support::ComponentsDir;
use support::cluster::{HEARTBEAT_MS, Node, RedisServer, http_status, spawn_binary_nodes};
use support::mothership::{Backend, Clients, ack_pair, wait_hosts};
use support::{one_at_a_time, spawn_program};

const BIN: &str = env!("CARGO_BIN_EXE_rain-node");

const DRAIN_DELAY_MS: u64 = 1000;
const DRAIN_BATCH: usize = 2;
const DRAIN_BATCH_PAUSE_MS: u64 = 400;
const SHUTDOWN_TIMEOUT_MS: u64 = 8000;
/// How long the backend's `slow` event takes.
const SLOW_MS: u64 = 2500;

/// Waits for a child's exit on a blocking thread; the node and its status.
async fn wait_exit(node: Node, timeout: Duration) -> (Node, Option<ExitStatus>) {
    tokio::task::spawn_blocking(move || {
        let mut node = node;
        let status = node.testbed_mut().wait_exit(timeout);
        (node, status)
    })
    .await
    .unwrap()
}

/// Polls `check` every 10 ms until it is true; how long that took, or
/// `None` past `timeout`.
async fn time_until(timeout: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

async fn hosts(conn: &mut redis::aio::MultiplexedConnection, service: &str) -> BTreeSet<String> {
    conn.smembers(format!("rain:service:{service}:nodes"))
        .await
        .expect("SMEMBERS")
}

/// A new Engine.IO handshake over polling, by plain HTTP: its status.
async fn handshake_status(node_url: &str) -> Option<u16> {
    http_status(&format!("{node_url}/socket.io/?EIO=4&transport=polling")).await
}

/// Nodes A (drained) and B, both hosting `echo` and the HTTP component
/// `slow` (its backend answers `slow` after [`SLOW_MS`], `whoami` with the
/// caller's session and the serving node, anything else with the node).
fn start(dir: &ComponentsDir) -> (RedisServer, Vec<Node>) {
    tokio::task::block_in_place(|| {
        let redis = RedisServer::start();
        let delay = DRAIN_DELAY_MS.to_string();
        let batch = DRAIN_BATCH.to_string();
        let pause = DRAIN_BATCH_PAUSE_MS.to_string();
        let timeout = SHUTDOWN_TIMEOUT_MS.to_string();
        let env = vec![
            ("COMPONENTS", "echo@1.0"),
            ("COMPONENTS_DIR", dir.path()),
            ("ROUTING", "round-robin"),
            ("ROUTE_TIMEOUT_MS", "5000"),
            ("DRAIN_DELAY_MS", delay.as_str()),
            ("DRAIN_BATCH", batch.as_str()),
            ("DRAIN_BATCH_PAUSE_MS", pause.as_str()),
            ("SHUTDOWN_TIMEOUT_MS", timeout.as_str()),
        ];
        let nodes = spawn_binary_nodes(BIN, &redis.url(), &[("A", env.clone()), ("B", env)]);
        (redis, nodes)
    })
}

fn slow_backend() -> (Backend, ComponentsDir) {
    let backend = Backend::start(std::sync::Arc::new(|body: Value| {
        async move {
            match body["event"].as_str().unwrap_or_default() {
                "slow" => {
                    tokio::time::sleep(Duration::from_millis(SLOW_MS)).await;
                    json!({ "data": { "slow": true, "node": body["node"] } })
                }
                "whoami" => json!({ "data": { "session": body["session"], "node": body["node"] } }),
                _ => json!({ "data": { "node": body["node"] } }),
            }
        }
        .boxed()
    }));
    let dir = ComponentsDir::new(&[(
        "slow.json",
        json!({
            "id": "slow", "version": "1.0", "channels": ["main"],
            "handler": { "kind": "http", "url": format!("{}/slow", backend.url), "timeout_ms": 5000 },
        }),
    )]);
    (backend, dir)
}

/// The whole drain of node A while B stays: (a) not ready at once, yet
/// serving a new client during `DRAIN_DELAY_MS`, then refusing handshakes
/// while existing sessions are served; (b) out of the host sets for good,
/// events routed to B; (c) routed calls in flight answered before their
/// client is closed, including the one A serves for B's client; (d) clients
/// closed at most `DRAIN_BATCH` at a time, resuming their session on B; (e)
/// exit 0 within `SHUTDOWN_TIMEOUT_MS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_a_node_without_losing_a_client_or_a_call() {
    let _serial = one_at_a_time().await;
    let (_backend, dir) = slow_backend();
    let (redis, mut nodes) = start(&dir);
    let (a, b) = (nodes[0].url().to_string(), nodes[1].url().to_string());
    let a_api = nodes[0].api_url().to_string();
    wait_hosts(&redis, "echo", "1.0", &["A", "B"]).await;
    wait_hosts(&redis, "slow", "1.0", &["A", "B"]).await;
    let mut conn = redis.conn().await;
    let mut js = Clients::start().await;
    let slow_ns = "/slow/1.0/main";

    // Six idle clients on A, each with a session holding a language.
    let tokens = js.with_sessions(6, &a, "/echo/1.0/main").await;
    // Slow calls in flight when the signal comes: one from a client of A,
    // two from clients of B (round-robin: one of them is served by A).
    js.connect("a-slow", &a, slow_ns, json!({})).await;
    js.connect("b-slow1", &b, slow_ns, json!({})).await;
    js.connect("b-slow2", &b, slow_ns, json!({})).await;
    let slow_calls: Vec<(&str, u64)> = ["a-slow", "b-slow1", "b-slow2"]
        .into_iter()
        .map(|name| {
            let id = js.send(json!({ "op": "emit", "name": name, "event": "slow", "args": [{}], "timeout": 8000 }));
            (name, id)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    nodes[0].testbed().signal("-TERM");

    // (a) Not ready at once, on both listeners.
    let not_ready = time_until(Duration::from_secs(2), async || {
        http_status(&format!("{a}/readyz")).await == Some(503)
            && http_status(&format!("{a_api}/readyz")).await == Some(503)
    })
    .await
    .expect("/readyz answers 503 after SIGTERM");
    eprintln!("not ready {not_ready:?} after SIGTERM");
    assert!(not_ready < Duration::from_millis(500), "{not_ready:?}");
    assert_eq!(http_status(&format!("{b}/readyz")).await, Some(200));
    // … yet it serves everything during the delay: a new client, its events.
    js.connect("late", &a, "/echo/1.0/main", json!({})).await;
    let (error, data) = js.call("late", "echo", json!("hi")).await;
    assert_eq!(error, Value::Null, "{data}");
    assert!(
        signalled.elapsed() < Duration::from_millis(DRAIN_DELAY_MS),
        "the checks during the delay took {:?}",
        signalled.elapsed()
    );

    // After the delay: new handshakes get 503 … (each try before that opens
    // a session, closed by the drain like the others: only a few)
    tokio::time::sleep(
        Duration::from_millis(DRAIN_DELAY_MS - 100).saturating_sub(signalled.elapsed()),
    )
    .await;
    let refused = time_until(Duration::from_secs(3), async || {
        tokio::time::sleep(Duration::from_millis(15)).await;
        handshake_status(&a).await == Some(503)
    })
    .await
    .map(|_| signalled.elapsed())
    .expect("new handshakes refused after the delay");
    eprintln!("handshakes refused {refused:?} after SIGTERM");
    assert!(
        refused >= Duration::from_millis(DRAIN_DELAY_MS - 50),
        "refused after {refused:?}"
    );
    // … while an existing session is served: the one waiting for its slow
    // call is still open, and its next event is answered (after the slow
    // one: a socket's events run in order).
    let fast = js.send(
        json!({ "op": "emit", "name": "a-slow", "event": "fast", "args": [{}], "timeout": 8000 }),
    );

    // (b) Out of every host set, and it stays out across heartbeats.
    let only_b = BTreeSet::from(["B".to_string()]);
    time_until(Duration::from_secs(1), async || {
        hosts(&mut conn, "echo@1.0").await == only_b
    })
    .await
    .expect("A left echo's host set");
    for _ in 0..4 {
        assert_eq!(
            hosts(&mut conn, "echo@1.0").await,
            BTreeSet::from(["B".to_string()])
        );
        assert_eq!(
            hosts(&mut conn, "slow@1.0").await,
            BTreeSet::from(["B".to_string()])
        );
        tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS / 2)).await;
    }

    // A reconcile does not put it back either: with its record gone from
    // Redis, A's next beat writes it again and reconciles its state.
    let _: () = conn.del("rain:node:A").await.unwrap();
    time_until(Duration::from_secs(2), async || {
        conn.exists::<_, bool>("rain:node:A").await.unwrap()
    })
    .await
    .expect("A's beat wrote its record again");
    tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS / 2)).await;
    assert_eq!(
        hosts(&mut conn, "echo@1.0").await,
        only_b,
        "after a reconcile"
    );
    assert_eq!(
        hosts(&mut conn, "slow@1.0").await,
        only_b,
        "after a reconcile"
    );
    let announced: String = conn.hget("rain:node:A", "services").await.unwrap();
    assert_eq!(announced, "[]", "A's record announces no service");

    // (c) Every call in flight is answered, whoever serves it.
    let mut served_by = BTreeSet::new();
    let mut answered_at = std::collections::HashMap::new();
    for (name, id) in slow_calls {
        let answer = js.wait(id, Duration::from_secs(10)).await;
        assert_eq!(answer["ok"], json!(true), "{name}: {answer}");
        let (error, data) = ack_pair(answer["ack"].as_array().unwrap());
        assert_eq!(error, Value::Null, "{name}: {data}");
        served_by.insert(data["node"].as_str().unwrap().to_string());
        answered_at.insert(name, answer["at"].as_u64().unwrap());
    }
    assert!(
        served_by.contains("A"),
        "A served none of the calls in flight: {served_by:?}"
    );
    let fast = js.wait(fast, Duration::from_secs(10)).await;
    assert_eq!(
        fast["ok"],
        json!(true),
        "an event of an existing session: {fast}"
    );
    // The client of A was closed only after its answers.
    let closes = js.closes("a-slow", 1, Duration::from_secs(5)).await;
    let (closed_at, _) = closes.first().expect("a-slow closed by the drain");
    assert!(
        *closed_at >= fast["at"].as_u64().unwrap() && *closed_at >= answered_at["a-slow"],
        "a-slow closed at {closed_at}, answered at {:?} and {}",
        answered_at["a-slow"],
        fast["at"]
    );

    // (d) Closed in batches of DRAIN_BATCH, with pauses between batches.
    let mut closed = Vec::new();
    for i in 0..6 {
        let closes = js.closes(&format!("x{i}"), 1, Duration::from_secs(5)).await;
        closed.push(
            closes
                .first()
                .unwrap_or_else(|| panic!("x{i} not closed"))
                .0,
        );
    }
    closed.push(js.closes("late", 1, Duration::from_secs(5)).await[0].0);
    closed.sort();
    let mut groups = vec![vec![closed[0]]];
    for pair in closed.windows(2) {
        // Within a batch they close together; batches are a pause apart
        // (shortened only when the time left is short).
        if pair[1] - pair[0] > 120 {
            groups.push(Vec::new());
        }
        groups.last_mut().unwrap().push(pair[1]);
    }
    eprintln!("close times (ms): {closed:?} → batches {groups:?}");
    assert!(
        groups.iter().all(|group| group.len() <= DRAIN_BATCH),
        "more than {DRAIN_BATCH} clients closed at once: {groups:?}"
    );
    assert!(groups.len() >= 7 / DRAIN_BATCH, "{groups:?}");
    // Each resumes its session on B (its token, the same data), where its
    // events go now.
    for (i, token) in tokens.iter().enumerate() {
        let name = format!("x{i}-again");
        js.connect(&name, &b, slow_ns, json!({ "sessionId": token }))
            .await;
        let data = js.ok(&name, "whoami", json!({})).await;
        assert_eq!(data["node"], "B", "{data}");
        assert_eq!(
            data["session"]["id"],
            json!(token.split('.').next().unwrap()),
            "{data}"
        );
        assert_eq!(
            data["session"]["data"]["language"],
            json!(format!("l{i}")),
            "{data}"
        );
    }

    // (e) Exit 0 within the shutdown timeout.
    let node = nodes.remove(0);
    let (node, status) = wait_exit(node, Duration::from_millis(SHUTDOWN_TIMEOUT_MS)).await;
    let status = status.expect("A exits within SHUTDOWN_TIMEOUT_MS");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_millis(SHUTDOWN_TIMEOUT_MS + 500),
        "took {:?}",
        signalled.elapsed()
    );
    assert!(
        !node.testbed().stderr().contains("drain was cut short"),
        "{}",
        node.stderr_tail(30)
    );
    let registered: bool = conn.exists("rain:node:A").await.unwrap();
    assert!(!registered, "A deregistered");
    assert_eq!(
        hosts(&mut conn, "echo@1.0").await,
        BTreeSet::from(["B".to_string()])
    );
}

/// (f) A SIGTERM or SIGINT right after the listening lines drains and exits
/// 0: the handlers are installed before the lines are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_right_after_start_exits_zero() {
    let _serial = one_at_a_time().await;
    for signal in ["-TERM", "-INT", "-TERM"] {
        let mut node = spawn_program(
            std::path::Path::new(BIN),
            &[
                ("SESSION_SECRET", support::cluster::SESSION_SECRET),
                ("DRAIN_DELAY_MS", "50"),
                ("SHUTDOWN_TIMEOUT_MS", "2000"),
            ],
        );
        // At once: the listening line is all the spawner waited for.
        node.signal(signal);
        let started = Instant::now();
        let status = tokio::task::block_in_place(|| node.wait_exit(Duration::from_secs(5)))
            .expect("exits within the shutdown timeout");
        assert!(
            status.success(),
            "{signal}: exit status {status:?}\n{}",
            node.stderr()
        );
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{:?}",
            started.elapsed()
        );
    }
}

/// A drain cut by `SHUTDOWN_TIMEOUT_MS` (a client still waits for a call
/// longer than that): the node exits anyway, with status 0, in time, and says
/// what was cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drain_past_the_shutdown_timeout_exits_zero_in_time_and_says_so() {
    let _serial = one_at_a_time().await;
    let (_backend, dir) = slow_backend();
    let (_redis, mut nodes) = tokio::task::block_in_place(|| {
        let redis = RedisServer::start();
        let nodes = spawn_binary_nodes(
            BIN,
            &redis.url(),
            &[(
                "A",
                vec![
                    ("COMPONENTS", ""),
                    ("COMPONENTS_DIR", dir.path()),
                    ("ROUTE_TIMEOUT_MS", "5000"),
                    ("DRAIN_DELAY_MS", "100"),
                    ("SHUTDOWN_TIMEOUT_MS", "1000"),
                    ("LOG_FORMAT", "json"),
                ],
            )],
        );
        (redis, nodes)
    });
    let a = nodes[0].url().to_string();
    let mut js = Clients::start().await;
    js.connect("waiting", &a, "/slow/1.0/main", json!({})).await;
    let call = js.send(
        json!({ "op": "emit", "name": "waiting", "event": "slow", "args": [{}], "timeout": 8000 }),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    nodes[0].testbed().signal("-TERM");
    let node = nodes.remove(0);
    let (node, status) = wait_exit(node, Duration::from_secs(4)).await;
    let status = status.expect("A exits");
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_millis(1800), "took {took:?}");
    let stderr = node.testbed().stderr();
    assert!(
        stderr.contains("drain was cut short") && stderr.contains(r#""closed_owing_replies":1"#),
        "{}",
        node.stderr_tail(20)
    );
    // The client saw its connection closed without the answer.
    let answer = js.wait(call, Duration::from_secs(10)).await;
    assert_eq!(answer["ok"], json!(false), "{answer}");
    assert!(
        !js.closes("waiting", 1, Duration::from_secs(2))
            .await
            .is_empty()
    );
}
