//! A real load balancer in front: HAProxy with `haproxy/haproxy.cfg` (round
//! robin, no stickiness; see `support::haproxy`) before three nodes on a
//! private Redis, and the official clients connecting through it.
//!
//! - socket.io-client (`tests/js_cluster/balancer.mjs modes`) and
//!   python-socketio (`tests/python/balancer_clients.py`): polling only,
//!   websocket only, polling upgraded to websocket; acks and a room broadcast.
//! - polling-only socket.io-clients exchanging events for `SOAK_MS` (60 s
//!   here; `RAIN_SOAK_MS` overrides it): every echo answered, every room
//!   event received by every client, no disconnect, and no
//!   `Session ID unknown` (400) in HAProxy's request log; the nodes did
//!   forward (the balancer really spread each session's requests).

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use support::cluster::{Node, RedisServer, run_with_nodes, spawn_nodes};
use support::crate_dir;
use support::haproxy::{HaProxy, config_for};

/// Redis, nodes A, B, C, and HAProxy in front of them.
async fn stack() -> Stack {
    let redis = RedisServer::start();
    let nodes = tokio::task::block_in_place(|| {
        spawn_nodes(
            &redis.url(),
            &["A", "B", "C"],
            // HAProxy's X-Forwarded-For is believed from the loopback.
            &[("TRUSTED_PROXIES", "127.0.0.1"), ("EVENT_RATE", "1000")],
        )
    });
    for node in &nodes {
        node.wait_ready().await;
    }
    let haproxy = tokio::task::block_in_place(|| HaProxy::start(&nodes.iter().collect::<Vec<_>>()));
    Stack {
        redis,
        nodes,
        haproxy,
    }
}

/// Requests HAProxy answered 400 (a `Session ID unknown` among them).
fn bad_requests(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| line.contains("/socket.io/") && line.contains(" 400 "))
        .collect()
}

async fn forwarded(nodes: &[Node]) -> f64 {
    let mut total = 0.0;
    for node in nodes {
        total += node.metrics().await.counter(
            "rain_forwarded_total",
            &[("transport", "polling"), ("outcome", "served")],
        );
    }
    total
}

/// Redis, the nodes and HAProxy of one test.
struct Stack {
    redis: RedisServer,
    nodes: Vec<Node>,
    haproxy: HaProxy,
}

impl Stack {
    /// Runs a client program in `tests/<dir>` with `BALANCER_URL` set.
    fn run(
        &self,
        program: &str,
        args: &[&str],
        dir: &str,
        envs: &[(&str, &str)],
        timeout: Duration,
    ) -> String {
        let url = self.haproxy.url();
        let mut all = vec![("BALANCER_URL", url.as_str())];
        all.extend_from_slice(envs);
        tokio::task::block_in_place(|| {
            run_with_nodes(
                &self.nodes.iter().collect::<Vec<_>>(),
                &self.redis,
                program,
                args,
                &crate_dir().join("tests").join(dir),
                &all,
                timeout,
            )
        })
    }
}

#[test]
fn the_test_config_is_haproxy_cfg_with_local_servers() {
    let template = std::fs::read_to_string(crate_dir().join("haproxy/haproxy.cfg")).unwrap();
    let cfg = config_for(&template, &[4001, 4002, 4003], 5000);
    assert!(
        cfg.contains("    server node1 127.0.0.1:4001 check\n"),
        "{cfg}"
    );
    assert!(
        cfg.contains("    server node3 127.0.0.1:4003 check\n"),
        "{cfg}"
    );
    assert!(cfg.contains("    bind 127.0.0.1:5000\n"), "{cfg}");
    assert!(
        !cfg.lines()
            .any(|l| l.trim_start().starts_with("server-template"))
            && !cfg.contains("bind :8080"),
        "{cfg}"
    );
    // Everything else verbatim.
    let kept = |text: &str| {
        text.lines()
            .filter(|l| {
                !l.trim_start().starts_with("server") && !l.trim_start().starts_with("bind ")
            })
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(kept(&cfg), kept(&template));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_clients_connect_through_haproxy_in_every_mode() {
    let _serial = support::one_at_a_time().await;
    let stack = stack().await;
    let js = stack.run(
        "node",
        &["balancer.mjs", "modes"],
        "js_cluster",
        &[],
        Duration::from_secs(60),
    );
    let python = Command::new("python3")
        .args(["-c", "import socketio"])
        .output();
    assert!(
        python.is_ok_and(|out| out.status.success()),
        "python-socketio is not importable: run scripts/test once (pip install -r tests/python/requirements.txt)"
    );
    let py = stack.run(
        "python3",
        &["balancer_clients.py"],
        "python",
        &[],
        Duration::from_secs(60),
    );
    for out in [&js, &py] {
        for mode in ["websocket", "polling", "upgrade"] {
            assert!(out.contains(&format!("ok {mode}")), "{out}");
        }
    }
    assert!(
        forwarded(&stack.nodes).await > 0.0,
        "round robin spread polling requests over the nodes"
    );
    let log = stack.haproxy.log();
    assert_eq!(bad_requests(&log), Vec::<&str>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_clients_exchange_events_through_round_robin_for_a_minute() {
    let _serial = support::one_at_a_time().await;
    let soak_ms = std::env::var("RAIN_SOAK_MS").unwrap_or_else(|_| "60000".into());
    let stack = stack().await;
    let seconds = soak_ms.parse::<u64>().expect("RAIN_SOAK_MS is a number") / 1000;
    let out = stack.run(
        "node",
        &["balancer.mjs", "soak"],
        "js_cluster",
        &[("SOAK_MS", &soak_ms)],
        Duration::from_secs(seconds + 60),
    );
    let summary: Value = out
        .lines()
        .find_map(|line| line.strip_prefix("summary "))
        .map(|json| serde_json::from_str(json).expect("summary is JSON"))
        .unwrap_or_else(|| panic!("no summary line:\n{out}"));
    eprintln!("soak: {summary}");
    assert!(summary["seconds"].as_u64().unwrap() >= seconds, "{summary}");
    assert_eq!(summary["problems"], Value::Array(vec![]), "{summary}");
    let sent = summary["sent"].as_u64().unwrap();
    assert!(
        sent > 0 && summary["acked"].as_u64() == Some(sent),
        "{summary}"
    );
    let ticks = summary["ticks"].as_u64().unwrap();
    for received in summary["received"].as_array().unwrap() {
        assert_eq!(received.as_u64(), Some(ticks), "{summary}");
    }
    // Most requests of a session landed on a node that does not own it.
    assert!(
        forwarded(&stack.nodes).await > sent as f64 / 2.0,
        "{summary}"
    );
    assert_eq!(bad_requests(&stack.haproxy.log()), Vec::<&str>::new());
}

/// A node answers a handshake 503 once its drain has begun refusing them; if
/// the balancer has not yet taken it out of rotation, haproxy.cfg's `retry-on
/// … 503` sends the handshake to another node instead of to the client. Here
/// one "node" answers every handshake 503 while its health check still says
/// ready (the worst moment of a drain), beside a real node: every handshake
/// through HAProxy succeeds.
#[test]
fn a_handshake_a_draining_node_refuses_is_retried_on_another() {
    let draining = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let draining_port = draining.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in draining.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = [0u8; 2048];
            let n = stream.read(&mut head).unwrap_or(0);
            let request = String::from_utf8_lossy(&head[..n]);
            let answer = if request.starts_with("GET /readyz") {
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            } else {
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    let node = support::spawn_testbed(&[]);
    let node_port: u16 = node.url().rsplit(':').next().unwrap().parse().unwrap();
    let balancer = HaProxy::start_on(&[draining_port, node_port]);
    let address = balancer.url().trim_start_matches("http://").to_string();
    let handshake = || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.0\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.split(' ').nth(1).unwrap_or_default().to_string()
    };
    let statuses: Vec<String> = (0..8).map(|_| handshake()).collect();
    assert!(
        statuses.iter().all(|s| s == "200"),
        "handshakes through HAProxy: {statuses:?}\n{}",
        balancer.log()
    );
}
