//! A rolling restart behind a real load balancer: a private redis-server,
//! three `rain-node` processes, HAProxy from `haproxy/haproxy.cfg` (see
//! `support::haproxy`) and 300 official socket.io-clients
//! (`tests/js_cluster/rolling.mjs`: default transports, polling upgraded to
//! websocket, default reconnection), each with a session (token from `/core`
//! `session`, a language and a nick in it), in one room.
//!
//! While the test publishes a sequence-numbered `tick` to the room 20 times a
//! second (`POST /emit` on the API of a node that is not restarting) and the
//! clients call `echo` (a routed component event) ten times a second, the
//! nodes restart one after another: SIGTERM, exit 0, started again on the
//! same port (HAProxy's `server` line stays valid), ready, back in HAProxy's
//! rotation, next. Asserted: each SIGTERM exits 0, its drain having had the
//! websocket relays it carried closed with a close frame (none cut at the
//! exit, as the other nodes' logs show); every client is connected again
//! (and back in the room) within a few seconds of each restart; every client
//! keeps its session (same id, language and nick, read by the `probe`
//! component); every `echo` is answered (the client's `retries` sends a call
//! again after a reconnect when its connection closed before the answer, the
//! close having crossed it on the wire; how many is printed). Reported, not
//! asserted to be zero: the broadcasts clients missed during each restart
//! (the recovery issue brings that to zero); asserted only that the test
//! measured (ticks sent, none lost before the first restart, most received).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use support::cluster::{Node, RedisServer, http_status, spawn_binary_nodes};
use support::haproxy::HaProxy;
use support::mothership::{probe_component, wait_hosts};
use support::{ComponentsDir, TEST_API_SECRET, crate_dir, one_at_a_time, plain};

const BIN: &str = env!("CARGO_BIN_EXE_rain-node");

const CLIENTS: usize = 300;
/// haproxy.cfg checks `/readyz` every second and takes a node out after two
/// failures (`inter 1s fall 2`): the delay is that and a margin.
const DRAIN_DELAY_MS: u64 = 2500;
const DRAIN_BATCH: usize = 20;
const DRAIN_BATCH_PAUSE_MS: u64 = 100;
const SHUTDOWN_TIMEOUT_MS: u64 = 10_000;
/// The room's `tick`s: one every this many ms (20 a second).
const TICK_MS: u64 = 50;
/// The longest a client may take to be connected again (and back in the
/// room) after its node closed it.
const RECONNECT_MAX_MS: u64 = 5000;
const ROOM: &str = "rolling";

/// The nodes' settings besides the cluster's (`support::cluster::node_env`).
fn node_env(dir: &ComponentsDir) -> Vec<(String, String)> {
    [
        ("COMPONENTS", "echo@1.0,chat@1.0"),
        ("COMPONENTS_DIR", dir.path()),
        // HAProxy's X-Forwarded-For is believed from the loopback; every
        // client comes from it.
        ("TRUSTED_PROXIES", "127.0.0.1"),
        ("CONNECTIONS_PER_ADDRESS", "2000"),
        ("EVENT_RATE", "1000"),
        ("ROUTE_TIMEOUT_MS", "5000"),
        // The cluster tests' one-second heartbeat is too tight for 300
        // clients reconnecting on a shared machine: a late pong would close
        // a client for a reason other than the restart.
        ("PING_INTERVAL_MS", "5000"),
        ("PING_TIMEOUT_MS", "5000"),
        ("DRAIN_DELAY_MS", &DRAIN_DELAY_MS.to_string()),
        ("DRAIN_BATCH", &DRAIN_BATCH.to_string()),
        ("DRAIN_BATCH_PAUSE_MS", &DRAIN_BATCH_PAUSE_MS.to_string()),
        ("SHUTDOWN_TIMEOUT_MS", &SHUTDOWN_TIMEOUT_MS.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `node rolling.mjs`: the clients, driven by one command line at a time.
struct Clients {
    child: Child,
    stdin: ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Clients {
    fn start(url: &str) -> Clients {
        let dir = crate_dir().join("tests");
        assert!(
            dir.join("js/node_modules/socket.io-client/package.json")
                .is_file(),
            "socket.io-client is not installed: run `scripts/test` once (npm ci in tests/js)"
        );
        let mut child = Command::new("node")
            .arg("rolling.mjs")
            .current_dir(dir.join("js_cluster"))
            .env("BALANCER_URL", url)
            .env("CLIENTS", CLIENTS.to_string())
            .env("ROOM", ROOM)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node (Node.js 20 or newer): {e}"));
        let stdin = child.stdin.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let err = child.stderr.take().unwrap();
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    let mut text = stderr.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            });
        }
        Clients {
            child,
            stdin,
            lines,
            stderr,
        }
    }

    /// The JSON after the next stdout line starting with `word `.
    fn answer(&mut self, word: &str, timeout: Duration) -> Value {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(word) {
                        let rest = rest.trim();
                        return if rest.starts_with('{') {
                            serde_json::from_str(rest)
                                .unwrap_or_else(|e| panic!("bad `{word}` line ({e}): {line}"))
                        } else {
                            Value::String(rest.to_string())
                        };
                    }
                    eprintln!("clients: {line}");
                }
                Err(_) => panic!(
                    "no `{word}` line from the clients within {timeout:?}; stderr:\n{}",
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// Sends `command` and waits for its answer line (the command's first word).
    fn ask(&mut self, command: &str, timeout: Duration) -> Value {
        writeln!(self.stdin, "{command}").expect("write to the clients");
        self.stdin.flush().expect("flush the clients' stdin");
        let word = command.split_whitespace().next().unwrap();
        let word = if word == "finish" { "summary" } else { word };
        tokio::task::block_in_place(|| self.answer(word, timeout))
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node's public port (HAProxy's `server` line names it).
fn port_of(node: &Node) -> u16 {
    node.url().rsplit(':').next().unwrap().parse().unwrap()
}

/// The `tick` publisher: `POST /emit` to the room every [`TICK_MS`], on the
/// API of node `target`; each seq's phase and whether it was accepted.
struct Publisher {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(u64, usize, bool)>>,
}

fn publish(
    apis: Arc<Mutex<Vec<String>>>,
    target: Arc<AtomicUsize>,
    phase: Arc<AtomicUsize>,
) -> Publisher {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let mut sent = Vec::new();
        let mut every = tokio::time::interval(Duration::from_millis(TICK_MS));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0u64;
        while !stopped.load(Ordering::Acquire) {
            every.tick().await;
            seq += 1;
            let api = apis.lock().unwrap()[target.load(Ordering::Acquire)].clone();
            let body = json!({
                "namespace": "/chat/1.0/main", "event": "tick", "args": [seq], "room": ROOM,
            });
            let ok = http
                .post(format!("{api}/emit"))
                .bearer_auth(TEST_API_SECRET)
                .json(&body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            sent.push((seq, phase.load(Ordering::Acquire), ok));
        }
        sent
    });
    Publisher { stop, task }
}

/// One restart's figures.
#[derive(Default, Debug)]
struct Restart {
    drained_ms: u128,
    all_back_ms: u128,
    reconnect_max_ms: u64,
    disconnects: u64,
    ticks_sent: usize,
    deliveries_lost: u64,
    ticks_missed_by_some: usize,
    calls_answered: u64,
    calls_failed: u64,
    /// Websocket relays for other nodes' sessions the drain closed.
    relays_closed: u64,
    /// Websockets the other nodes saw cut without a close frame.
    cut: usize,
}

/// How many websockets each node saw cut without a close frame so far.
fn cuts(nodes: &[Option<Node>]) -> Vec<usize> {
    nodes
        .iter()
        .map(|node| {
            node.as_ref().map_or(0, |node| {
                node.testbed()
                    .stderr()
                    .matches("without closing handshake")
                    .count()
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_behind_haproxy_keeps_every_client_session_and_call() {
    let _serial = one_at_a_time().await;
    let test_started = Instant::now();
    // The `probe` component: `whoami` answers the session as a component sees it.
    let (backend, dir) = probe_component(5000);
    let env = node_env(&dir);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let redis = RedisServer::start();
    let mut nodes: Vec<Option<Node>> = tokio::task::block_in_place(|| {
        spawn_binary_nodes(
            BIN,
            &redis.url(),
            &[
                ("A", env_refs.clone()),
                ("B", env_refs.clone()),
                ("C", env_refs.clone()),
            ],
        )
    })
    .into_iter()
    .map(Some)
    .collect();
    let ids = ["A", "B", "C"];
    for service in ["echo", "chat", "probe"] {
        wait_hosts(&redis, service, "1.0", &ids).await;
    }
    let ports: Vec<u16> = nodes.iter().map(|n| port_of(n.as_ref().unwrap())).collect();
    let haproxy = tokio::task::block_in_place(|| {
        HaProxy::start(
            &nodes
                .iter()
                .map(|n| n.as_ref().unwrap())
                .collect::<Vec<_>>(),
        )
    });

    let mut clients = Clients::start(&haproxy.url());
    let ready = tokio::task::block_in_place(|| clients.answer("ready", Duration::from_secs(90)));
    eprintln!("clients ready: {ready}");
    let mut spread = Vec::new();
    for node in nodes.iter().flatten() {
        spread.push((
            node.id.clone(),
            node.metrics().await.gauge("rain_engine_sessions"),
        ));
    }
    eprintln!("Engine.IO sessions per node: {spread:?}");
    assert!(
        spread.iter().all(|(_, n)| *n >= (CLIENTS / 6) as f64),
        "the clients are spread over the three nodes: {spread:?}"
    );

    let apis = Arc::new(Mutex::new(
        nodes
            .iter()
            .map(|n| n.as_ref().unwrap().api_url().to_string())
            .collect::<Vec<_>>(),
    ));
    let target = Arc::new(AtomicUsize::new(0));
    let phase = Arc::new(AtomicUsize::new(0));
    let publisher = publish(apis.clone(), target.clone(), phase.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut restarts: Vec<Restart> = Vec::new();
    for k in 0..3 {
        let mut figures = Restart::default();
        // Publish through a node that stays.
        target.store((k + 1) % 3, Ordering::Release);
        phase.store(k + 1, Ordering::Release);
        clients.ask(&format!("phase {}", k + 1), Duration::from_secs(5));
        let downs_before = haproxy
            .log()
            .matches(&format!("nodes/node{} is DOWN", k + 1))
            .count();
        let ups_before = haproxy
            .log()
            .matches(&format!("nodes/node{} is UP", k + 1))
            .count();

        let cuts_before = cuts(&nodes);
        let node = nodes[k].take().unwrap();
        let signalled = Instant::now();
        node.testbed().signal("-TERM");
        let (node, status) = tokio::task::spawn_blocking(move || {
            let mut node = node;
            let status = node
                .testbed_mut()
                .wait_exit(Duration::from_millis(SHUTDOWN_TIMEOUT_MS + 2000));
            (node, status)
        })
        .await
        .unwrap();
        figures.drained_ms = signalled.elapsed().as_millis();
        let status = status.unwrap_or_else(|| {
            panic!(
                "node {} did not exit; its log:\n{}",
                ids[k],
                node.stderr_tail(40)
            )
        });
        assert!(
            status.success(),
            "node {} exited with {status:?}:\n{}",
            ids[k],
            node.stderr_tail(40)
        );
        let stderr = plain(&node.testbed().stderr());
        figures.relays_closed = stderr
            .lines()
            .find(|line| line.contains("closed the websocket relays"))
            .and_then(|line| line.split("relays=").nth(1))
            .and_then(|n| n.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        figures.cut = cuts(&nodes)
            .iter()
            .zip(&cuts_before)
            .map(|(now, before)| now - before)
            .sum();
        assert!(
            !stderr.contains("drain was cut short"),
            "node {}: {}",
            ids[k],
            node.stderr_tail(30)
        );
        assert!(
            haproxy
                .log()
                .matches(&format!("nodes/node{} is DOWN", k + 1))
                .count()
                > downs_before,
            "HAProxy took node{} out while it drained:\n{}",
            k + 1,
            haproxy.log()
        );
        drop(node);

        // Again on the same port.
        let port = ports[k].to_string();
        let mut again = env_refs.clone();
        again.push(("SERVER_PORT", port.as_str()));
        let node = tokio::task::block_in_place(|| {
            support::cluster::spawn_binary_node(BIN, &redis.url(), ids[k], &again)
        });
        assert_eq!(port_of(&node), ports[k]);
        support::eventually(
            Duration::from_secs(10),
            "the restarted node is ready",
            async || match http_status(&format!("{}/readyz", node.url())).await {
                Some(200) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await;
        apis.lock().unwrap()[k] = node.api_url().to_string();
        nodes[k] = Some(node);

        // Every client connected again and back in the room.
        let all_back = tokio::task::block_in_place(|| {
            let until = Instant::now() + Duration::from_secs(20);
            loop {
                let status = clients.ask("status", Duration::from_secs(5));
                if status["up"].as_u64() == Some(CLIENTS as u64) {
                    return status;
                }
                assert!(
                    Instant::now() < until,
                    "clients not all back 20 s after restart {}: {status}",
                    k + 1
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        figures.all_back_ms = signalled.elapsed().as_millis();
        let stats = &all_back["phases"][(k + 1).to_string()];
        figures.reconnect_max_ms = stats["maxMs"].as_u64().unwrap_or(0);
        figures.disconnects = stats["disconnects"].as_u64().unwrap_or(0);
        assert_eq!(
            stats["disconnects"],
            stats["reconnects"],
            "restart {}: every client closed reconnected: {all_back}",
            k + 1
        );

        // Back in HAProxy's rotation before the next one goes.
        support::eventually(
            Duration::from_secs(10),
            "HAProxy has the restarted node up",
            async || {
                let ups = haproxy
                    .log()
                    .matches(&format!("nodes/node{} is UP", k + 1))
                    .count();
                if ups > ups_before {
                    Ok(())
                } else {
                    Err(format!("{ups} UP lines"))
                }
            },
        )
        .await;

        // Sessions kept.
        let check = clients.ask("check", Duration::from_secs(30));
        assert_eq!(
            check["ok"].as_u64(),
            Some(CLIENTS as u64),
            "restart {}: sessions kept: {check}",
            k + 1
        );
        restarts.push(figures);
    }

    tokio::time::sleep(Duration::from_millis(1000)).await;
    phase.store(4, Ordering::Release);
    publisher.stop.store(true, Ordering::Release);
    let sent = publisher.task.await.unwrap();
    // The last ticks are on their way.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let first = sent.first().map_or(0, |s| s.0);
    let last = sent.last().map_or(0, |s| s.0);
    let summary = clients.ask(&format!("finish {first} {last}"), Duration::from_secs(30));
    let elapsed = test_started.elapsed();

    // The figures, per restart.
    let refused: Vec<u64> = sent.iter().filter(|s| !s.2).map(|s| s.0).collect();
    let missed = summary["missed"].as_object().unwrap();
    let failed = summary["calls"]["failed"].as_array().unwrap();
    let calls_by_phase = &summary["calls"]["answeredByPhase"];
    for (k, figures) in restarts.iter_mut().enumerate() {
        // Restart k+1's ticks run from its SIGTERM to the next one.
        let in_phase = |p: usize| p == k + 1 || (k == 2 && p == 4);
        let seqs: Vec<u64> = sent.iter().filter(|s| in_phase(s.1)).map(|s| s.0).collect();
        figures.ticks_sent = seqs.len();
        for seq in &seqs {
            if let Some(n) = missed.get(&seq.to_string()).and_then(Value::as_u64) {
                figures.deliveries_lost += n;
                figures.ticks_missed_by_some += 1;
            }
        }
        figures.calls_answered = [k + 1, 4]
            .iter()
            .filter(|p| in_phase(**p))
            .filter_map(|p| calls_by_phase[&p.to_string()].as_u64())
            .sum();
        figures.calls_failed = failed
            .iter()
            .filter(|f| f["phase"].as_u64().is_some_and(|p| in_phase(p as usize)))
            .count() as u64;
    }
    let calls = &summary["calls"];
    eprintln!(
        "\nrolling restart of 3 nodes behind HAProxy, {CLIENTS} clients, a tick every {TICK_MS} ms, echo every 100 ms"
    );
    eprintln!(
        "{:<8} {:>9} {:>9} {:>6} {:>4} {:>7} {:>12} {:>7} {:>16} {:>14} {:>14} {:>6}",
        "restart",
        "drain ms",
        "back ms",
        "relays",
        "cut",
        "closed",
        "reconnect ≤",
        "ticks",
        "deliveries lost",
        "ticks w/ loss",
        "calls answered",
        "failed"
    );
    for (k, f) in restarts.iter().enumerate() {
        eprintln!(
            "{:<8} {:>9} {:>9} {:>6} {:>4} {:>7} {:>10}ms {:>7} {:>16} {:>14} {:>14} {:>6}",
            format!("node {}", ids[k]),
            f.drained_ms,
            f.all_back_ms,
            f.relays_closed,
            f.cut,
            f.disconnects,
            f.reconnect_max_ms,
            f.ticks_sent,
            format!("{} of {}", f.deliveries_lost, f.ticks_sent * CLIENTS),
            f.ticks_missed_by_some,
            f.calls_answered,
            f.calls_failed
        );
    }
    let lost_before: u64 = sent
        .iter()
        .filter(|s| s.1 == 0)
        .filter_map(|s| missed.get(&s.0.to_string()).and_then(Value::as_u64))
        .sum();
    eprintln!(
        "before the first restart: {} ticks, {lost_before} deliveries lost; ticks refused by the API: {}; \
         echo calls: {} sent, {} answered ({} of them sent again after a reconnect), \
         {} skipped while disconnected; disconnect reasons {}; \
         joins cut by a disconnect {}; {:.1?} in all\n",
        sent.iter().filter(|s| s.1 == 0).count(),
        refused.len(),
        calls["sent"],
        calls["answered"],
        calls["resent"],
        calls["skipped"],
        summary["reasons"],
        summary["joinsInterrupted"],
        elapsed
    );

    // What must hold.
    assert_eq!(summary["problems"], json!([]), "{summary}");
    assert!(refused.is_empty(), "ticks refused by the API: {refused:?}");
    for (k, f) in restarts.iter().enumerate() {
        assert!(
            f.disconnects > 0,
            "restart {}: its clients were closed and reconnected",
            k + 1
        );
        assert!(
            f.reconnect_max_ms <= RECONNECT_MAX_MS,
            "restart {}: a client took {} ms to be back",
            k + 1,
            f.reconnect_max_ms
        );
    }
    // The drain closed the relays it carried for the other nodes' sessions
    // with a close frame: none was cut when the process exited.
    assert!(restarts.iter().map(|f| f.relays_closed).sum::<u64>() > 0);
    for (k, f) in restarts.iter().enumerate() {
        assert_eq!(f.cut, 0, "restart {}: websockets cut at the exit", k + 1);
    }
    let sent_calls = calls["sent"].as_u64().unwrap();
    assert!(sent_calls > 100, "{calls}");
    assert_eq!(
        failed,
        &Vec::<Value>::new(),
        "every routed call answered: {calls}"
    );
    assert_eq!(calls["answered"].as_u64(), Some(sent_calls), "{calls}");
    // It measured: ticks went out, and clients got most of them.
    let ticks = sent.len() as u64;
    assert!(ticks > 200, "{ticks} ticks sent");
    // Nothing is lost while no node restarts; what a restart loses is
    // reported above (the recovery issue's work), and most ticks arrive.
    assert_eq!(lost_before, 0, "ticks lost before any restart");
    let received = summary["received"].as_u64().unwrap();
    assert!(
        received * 3 >= ticks * CLIENTS as u64 * 2,
        "received {received} of {} deliveries",
        ticks * CLIENTS as u64
    );
    drop(backend);
}
