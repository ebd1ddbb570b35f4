//! Round trip of an event with an ack through the Mothership, on loopback:
//! client → node A → Redis → the node hosting the component → Redis → A →
//! client, beside the same event served by the node the client is on. Two modes:
//!
//! ```sh
//! cargo bench --bench routed_rtt                         # sequential: 5000 events each way
//! EVENTS=20000 cargo bench --bench routed_rtt
//! RATE=5000 cargo bench --bench routed_rtt               # fixed rate: 5000 calls/s for 10 s
//! RATE=20000 SECONDS=5 cargo bench --bench routed_rtt
//! ```
//!
//! Each mode starts its own `redis-server` on a free port and two `rain-node`
//! processes (release build under `cargo bench`), both with the spawners of
//! `tests/support`, `LOG=warn`, the per-client limits it exceeds raised (see
//! [`BENCH_LIMITS`]: one connection sends thousands of events a second, all
//! from 127.0.0.1) and every other setting at its default: A hosts
//! nothing (`COMPONENTS=`), the other hosts `echo@1.0`. Clients are raw
//! Engine.IO v4 / Socket.IO v5 websocket clients of the namespace
//! `/echo/1.0/main` that answer pings.
//!
//! **Sequential** (no `RATE`): the echo host is node C. One client sends `echo`
//! events one at a time (each waits for its ack), first on A (routed), then on C
//! (local), and prints the latency percentiles of each.
//!
//! **Fixed rate** (`RATE` calls/s, `SECONDS` long, default 10; `CLIENTS`
//! connections, default 200): the echo host is node B. An open-loop load
//! generator sends `RATE × SECONDS` calls `42/echo/1.0/main,<n>["echo",<n>]`,
//! call `n` at `n / RATE` s after the start whether or not earlier calls were
//! answered, spread round-robin over the clients, all on A (routed); then the
//! same at the same rate with the clients on B (local). A call's latency runs
//! from its *scheduled* send time to its ack, so a late generator or a queue in
//! the nodes shows in the figures instead of delaying later calls (no coordinated
//! omission); the generator's own lateness is printed as "send lag". An ack whose
//! first argument is not `null` is an error, not an answer (its latency is left
//! out of the percentiles); a call without an ack 5 s after the last send is
//! lost. The achieved rate is answered calls over the longer of `SECONDS` and the
//! time to the last ack; every "per call" figure is per answered call. Per run it
//! prints: target and achieved rate; p50/p90/p99/max latency; calls answered /
//! sent / errors / lost and a sample error; per node CPU per call (`utime +
//! stime` of `/proc/<pid>/stat`) and RSS before and after (`VmRSS`); Redis CPU
//! per call (`INFO cpu`) and, per call and in all, every command whose
//! `INFO commandstats` count changed (the bench's own `INFO` left out); the
//! bench process's own CPU per call. Last, one line comparing
//! routed and local: p50 and node CPU per call (A + B). The window of the CPU,
//! RSS and command figures is the run itself: from after the clients joined (and
//! settled 1 s) to the last ack or the loss deadline; heartbeats and other idle
//! work of that window count too.
//!
//! The generator is bounded: a fixed number of calls (at most 2,000,000), a hard
//! timeout on each run (`SECONDS` + 51 s; the set-up before it is bounded too),
//! it stops by itself, and it only connects to the nodes it started on
//! 127.0.0.1.
//!
//! Under `cargo test --all-targets` (no `--bench`) it makes a quick sequential run
//! of 200 events, then a fixed-rate run of 200 calls/s for 1 s (debug build), so
//! the harness itself stays tested; the fixed-rate run fails only if a call is
//! lost or answered with an error.
//!
//! It prints figures only: no figure is asserted against a budget. It owns the
//! load generation and the measurement; `redis-server`, the node processes and
//! the `eventually` poller belong to `tests/support`, and the node settings are
//! the defaults but for the per-client limits (it tunes nothing else). Linux only (it reads `/proc`); it shares the
//! machine with the nodes and Redis, so on few cores the generator's CPU competes
//! with theirs (its own CPU per call is printed for that reason).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

use support::cluster::RedisServer;
use support::{Testbed, eventually, spawn_program};

/// The per-client limits this bench exceeds on purpose, raised: a sequential
/// client sends thousands of events a second on one connection (EVENT_RATE,
/// EVENT_BURST), an open-loop client may have many calls in flight when a node
/// falls behind (SOCKET_MAX_IN_FLIGHT: the queue should show as latency, not
/// as refusals), and every client comes from 127.0.0.1
/// (CONNECTIONS_PER_ADDRESS).
const BENCH_LIMITS: [(&str, &str); 4] = [
    ("EVENT_RATE", "10000000"),
    ("EVENT_BURST", "10000000"),
    ("SOCKET_MAX_IN_FLIGHT", "1000000"),
    ("CONNECTIONS_PER_ADDRESS", "1000000"),
];

/// Starts the `rain-node` binary as node `id` of the cluster at `redis`, hosting
/// `components`, with [`BENCH_LIMITS`] and every other setting at its default.
fn start_node(redis: &str, id: &str, components: &str) -> Testbed {
    let mut envs = vec![
        ("REDIS_SERVER", redis),
        ("SESSION_SECRET", "bench-session-secret-0123456789abcdef"),
        ("NODE_ID", id),
        ("COMPONENTS", components),
        ("LOG", "warn"),
    ];
    envs.extend(BENCH_LIMITS);
    spawn_program(Path::new(env!("CARGO_BIN_EXE_rain-node")), &envs)
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
    match env_number("RATE") {
        Some(rate) if bench_mode => {
            let plan = Plan::from_env(rate, 10);
            fixed_rate(&plan).await;
        }
        _ if bench_mode => sequential(bench_mode).await,
        rate => {
            // the quick run of `cargo test --all-targets`: both modes, small
            sequential(bench_mode).await;
            let plan = Plan::from_env(rate.unwrap_or(200), 1);
            let outcomes = fixed_rate(&plan).await;
            for outcome in outcomes {
                assert!(
                    outcome.errors == 0 && outcome.lost() == 0 && outcome.sent == plan.calls,
                    "{}: {} of {} calls sent, {} errors, {} lost (sample: {})",
                    outcome.label,
                    outcome.sent,
                    plan.calls,
                    outcome.errors,
                    outcome.lost(),
                    outcome.sample_error.as_deref().unwrap_or("none")
                );
            }
        }
    }
}

/// The sequential mode: one client, one event at a time, routed then local.
async fn sequential(bench_mode: bool) {
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

// ---------------------------------------------------------------------------
// fixed rate (open loop)
// ---------------------------------------------------------------------------

/// The namespace of `echo@1.0`'s channel `main`.
const NSP: &str = "/echo/1.0/main";
/// How long after the last send an unanswered call still counts as pending.
const GRACE: Duration = Duration::from_secs(5);
/// How long the clients of one run may take to connect and join the namespace.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The pause between the clients joining and the first call (connect-time
/// writes to Redis settle out of the measured window).
const SETTLE: Duration = Duration::from_secs(1);
/// The hard limit on the calls of one run.
const MAX_CALLS: u64 = 2_000_000;

/// A positive whole number from the environment variable `name`, if set.
fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse::<u64>() {
        Ok(n) if n > 0 => Some(n),
        _ => panic!("{name} must be a positive whole number, got {value:?}"),
    }
}

/// What a fixed-rate run does.
#[derive(Clone, Copy)]
struct Plan {
    /// Calls per second.
    rate: u64,
    seconds: u64,
    clients: usize,
    /// `rate × seconds`.
    calls: u64,
}

impl Plan {
    /// `rate`, `SECONDS` (else `seconds`) and `CLIENTS` (else 200), checked
    /// against the bounds.
    fn from_env(rate: u64, seconds: u64) -> Plan {
        let seconds = env_number("SECONDS").unwrap_or(seconds);
        let clients = env_number("CLIENTS").unwrap_or(200);
        assert!(seconds <= 600, "SECONDS must be at most 600, got {seconds}");
        assert!(
            clients <= 5000,
            "CLIENTS must be at most 5000, got {clients}"
        );
        let calls = rate.saturating_mul(seconds);
        assert!(
            calls <= MAX_CALLS,
            "RATE × SECONDS must be at most {MAX_CALLS} calls, got {calls}"
        );
        Plan {
            rate,
            seconds,
            clients: clients as usize,
            calls,
        }
    }

    /// When call `n` is due, after the start.
    fn due(&self, n: u64) -> Duration {
        Duration::from_nanos((u128::from(n) * 1_000_000_000 / u128::from(self.rate)) as u64)
    }

    /// The hard limit on one run, connecting the clients included.
    fn timeout(&self) -> Duration {
        CONNECT_TIMEOUT
            + SETTLE
            + Duration::from_secs(self.seconds)
            + GRACE
            + Duration::from_secs(30)
    }
}

/// The error bit of [`Ledger::acked`].
const ERROR_BIT: u64 = 1 << 63;

/// What happened to every call of a run; shared by the scheduler and the clients.
struct Ledger {
    /// The moment call 0 is due.
    start: OnceLock<Instant>,
    /// Per call: nanoseconds after `start` it was written to its websocket, + 1
    /// (0: not written).
    sent: Vec<AtomicU64>,
    /// Per call: nanoseconds after `start` its ack arrived, + 1, with
    /// [`ERROR_BIT`] set when the ack was an error (0: no ack).
    acked: Vec<AtomicU64>,
    sent_count: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    /// The first error ack, verbatim.
    sample_error: Mutex<Option<String>>,
    /// Frames that were neither pings nor acks of our calls (`41…`, `44…`).
    unexpected: AtomicU64,
    sample_unexpected: Mutex<Option<String>>,
    /// Clients whose connection ended during the run.
    closed: AtomicU64,
}

impl Ledger {
    fn new(calls: u64) -> Ledger {
        let zeros = || (0..calls).map(|_| AtomicU64::new(0)).collect();
        Ledger {
            start: OnceLock::new(),
            sent: zeros(),
            acked: zeros(),
            sent_count: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            sample_error: Mutex::new(None),
            unexpected: AtomicU64::new(0),
            sample_unexpected: Mutex::new(None),
            closed: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since the start, + 1 (never 0).
    fn stamp(&self) -> u64 {
        let start = self.start.get().expect("the run has started");
        start.elapsed().as_nanos() as u64 + 1
    }

    fn answered(&self) -> u64 {
        self.ok.load(Ordering::Relaxed) + self.errors.load(Ordering::Relaxed)
    }

    /// Records the ack `frame` of call `n`; a second ack of the same call is
    /// unexpected.
    fn ack(&self, n: u64, ok: bool, frame: &str) {
        let stamp = self.stamp() | if ok { 0 } else { ERROR_BIT };
        let Some(slot) = self.acked.get(n as usize) else {
            self.unexpected(frame);
            return;
        };
        if slot
            .compare_exchange(0, stamp, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.unexpected(frame);
            return;
        }
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
            self.sample_error
                .lock()
                .unwrap()
                .get_or_insert_with(|| frame.to_string());
        }
    }

    fn unexpected(&self, frame: &str) {
        self.unexpected.fetch_add(1, Ordering::Relaxed);
        self.sample_unexpected
            .lock()
            .unwrap()
            .get_or_insert_with(|| frame.chars().take(300).collect());
    }
}

/// What a client's writer sends.
enum Out {
    Call(u64),
    Pong,
    Close,
}

/// One websocket client of [`NSP`]; its tasks end when it is dropped.
struct Client {
    out: mpsc::UnboundedSender<Out>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for Client {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Connects to `url`, joins [`NSP`], and starts the client's writer and reader.
async fn connect_client(url: &str, ledger: Arc<Ledger>) -> Client {
    let (sink, stream) = join_echo(url)
        .await
        .unwrap_or_else(|e| panic!("a client of {url}: {e}"))
        .split();
    let (out, rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_frames(sink, rx, ledger.clone()));
    let reader = tokio::spawn(read_frames(stream, out.clone(), ledger));
    Client {
        out,
        tasks: [writer, reader],
    }
}

/// A websocket to `url` that has joined [`NSP`].
async fn join_echo(url: &str) -> Result<Ws, String> {
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "the load generator only targets 127.0.0.1, not {url}"
    );
    let ws_url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        url.replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = connect_async(&ws_url)
        .await
        .map_err(|e| format!("websocket to {ws_url}: {e}"))?;
    let open = read_text(&mut ws).await;
    if !open.starts_with("0{") {
        return Err(format!("open: {open}"));
    }
    ws.send(Message::text(format!("40{NSP},")))
        .await
        .map_err(|e| e.to_string())?;
    let connected = read_text(&mut ws).await;
    if !connected.starts_with(&format!("40{NSP},{{")) {
        return Err(format!("connect: {connected}"));
    }
    Ok(ws)
}

/// Writes what the client is given, batching what is already queued into one flush.
async fn write_frames(
    mut sink: SplitSink<Ws, Message>,
    mut rx: mpsc::UnboundedReceiver<Out>,
    ledger: Arc<Ledger>,
) {
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(out) = next {
            match out {
                Out::Call(n) => {
                    let frame = format!(r#"42{NSP},{n}["echo",{n}]"#);
                    if sink.feed(Message::text(frame)).await.is_err() {
                        return;
                    }
                    ledger.sent[n as usize].store(ledger.stamp(), Ordering::Relaxed);
                    ledger.sent_count.fetch_add(1, Ordering::Relaxed);
                }
                Out::Pong => {
                    if sink.feed(Message::text("3")).await.is_err() {
                        return;
                    }
                }
                Out::Close => {
                    let _ = sink.feed(Message::text(format!("41{NSP},"))).await;
                    let _ = sink.send(Message::Close(None)).await;
                    return;
                }
            }
            next = rx.try_recv().ok();
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// Answers pings and records acks until the connection ends.
async fn read_frames(
    mut stream: SplitStream<Ws>,
    out: mpsc::UnboundedSender<Out>,
    ledger: Arc<Ledger>,
) {
    let prefix = format!("43{NSP},");
    while let Some(message) = stream.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let text = text.as_str();
        if text == "2" {
            let _ = out.send(Out::Pong);
            continue;
        }
        let Some(rest) = text.strip_prefix(&prefix) else {
            ledger.unexpected(text);
            continue;
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<u64>() {
            Ok(n) => ledger.ack(n, rest[digits..].starts_with("[null"), text),
            Err(_) => ledger.unexpected(text),
        }
    }
    ledger.closed.fetch_add(1, Ordering::Relaxed);
}

/// Sends every call of `plan` at its time, round-robin over `clients` (on a
/// thread of its own: `std::thread::sleep` is finer than tokio's millisecond
/// timer). Returns when the last call was handed over, or at once when `stop` is
/// set.
fn schedule(
    plan: Plan,
    start: Instant,
    clients: Vec<mpsc::UnboundedSender<Out>>,
    stop: Arc<AtomicBool>,
) -> Instant {
    for n in 0..plan.calls {
        let due = start + plan.due(n);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let _ = clients[(n % clients.len() as u64) as usize].send(Out::Call(n));
    }
    Instant::now()
}

/// `VmRSS` of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// The figures read before and after a run.
struct Snapshot {
    /// Per node: CPU ticks, RSS in KiB.
    nodes: Vec<(u64, u64)>,
    own_ticks: u64,
    /// Calls of each Redis command (`INFO commandstats`).
    commands: BTreeMap<String, u64>,
    /// `used_cpu_sys + used_cpu_user` of Redis, in seconds.
    redis_cpu: f64,
}

impl Snapshot {
    async fn take(
        nodes: &[(&str, &Testbed)],
        redis: &mut redis::aio::MultiplexedConnection,
    ) -> Snapshot {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .arg("cpu")
            .query_async(redis)
            .await
            .expect("INFO commandstats cpu");
        let mut commands = BTreeMap::new();
        let mut redis_cpu = 0.0;
        for line in info.lines() {
            if let Some((name, stats)) = line.trim().split_once(':') {
                if let Some(command) = name.strip_prefix("cmdstat_") {
                    let calls = stats
                        .split(',')
                        .find_map(|kv| kv.strip_prefix("calls="))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    commands.insert(command.to_string(), calls);
                } else if matches!(name, "used_cpu_sys" | "used_cpu_user") {
                    redis_cpu += stats.parse::<f64>().unwrap_or(0.0);
                }
            }
        }
        Snapshot {
            nodes: nodes
                .iter()
                .map(|(_, node)| {
                    (
                        support::cpu_ticks(&node.pid().to_string()),
                        rss_kib(node.pid()),
                    )
                })
                .collect(),
            own_ticks: support::cpu_ticks("self"),
            commands,
            redis_cpu,
        }
    }
}

/// The result of one fixed-rate run.
struct Outcome {
    label: String,
    rate: u64,
    calls: u64,
    clients: usize,
    sent: u64,
    ok: u64,
    errors: u64,
    sample_error: Option<String>,
    unexpected: u64,
    sample_unexpected: Option<String>,
    closed: u64,
    /// Latency of every successful call, from its scheduled send to its ack; sorted.
    latencies: Vec<Duration>,
    /// How late each call was written, after its scheduled time; sorted.
    send_lag: Vec<Duration>,
    /// Answered calls per second.
    achieved: f64,
    /// Per node: name, CPU µs per answered call, RSS before and after (KiB).
    nodes: Vec<(String, f64, u64, u64)>,
    /// Redis commands whose count changed: name, calls, calls per answered call.
    commands: Vec<(String, u64, f64)>,
    redis_cpu_us: f64,
    own_cpu_us: f64,
}

impl Outcome {
    fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.ok + self.errors)
    }

    fn p50(&self) -> Option<Duration> {
        percentile(&self.latencies, 0.50)
    }

    /// CPU µs per answered call of every node together.
    fn nodes_cpu_us(&self) -> f64 {
        self.nodes.iter().map(|(_, cpu, _, _)| cpu).sum()
    }

    fn print(&self) {
        let quartet = |times: &[Duration]| {
            format!(
                "p50 {}, p90 {}, p99 {}, max {}",
                show(percentile(times, 0.50)),
                show(percentile(times, 0.90)),
                show(percentile(times, 0.99)),
                show(times.last().copied())
            )
        };
        println!("{}", self.label);
        println!(
            "  rate: target {} calls/s, achieved {:.0} calls/s ({} clients)",
            self.rate, self.achieved, self.clients
        );
        println!(
            "  latency from the scheduled send: {}",
            quartet(&self.latencies)
        );
        println!("  send lag of the generator: {}", quartet(&self.send_lag));
        println!(
            "  calls: {} answered / {} sent / {} errors / {} lost (of {} scheduled)",
            self.ok,
            self.sent,
            self.errors,
            self.lost(),
            self.calls
        );
        if let Some(sample) = &self.sample_error {
            println!("  sample error: {sample}");
        }
        if self.unexpected > 0 {
            println!(
                "  {} unexpected frames, e.g. {}",
                self.unexpected,
                self.sample_unexpected.as_deref().unwrap_or("")
            );
        }
        if self.closed > 0 {
            println!("  {} client connections ended during the run", self.closed);
        }
        for (name, cpu, before, after) in &self.nodes {
            println!(
                "  node {name}: CPU {cpu:.1} µs/call, RSS {before} KiB before, {after} KiB after"
            );
        }
        let commands: Vec<String> = self
            .commands
            .iter()
            .map(|(name, calls, per_call)| format!("{name} {per_call:.3} ({calls})"))
            .collect();
        println!(
            "  redis: CPU {:.1} µs/call; commands per call (count): {}",
            self.redis_cpu_us,
            if commands.is_empty() {
                "none".to_string()
            } else {
                commands.join(", ")
            }
        );
        println!(
            "  load generator (this process): CPU {:.1} µs/call",
            self.own_cpu_us
        );
    }
}

/// `d` to the microsecond, or `n/a`.
fn show(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:?}", Duration::from_micros(d.as_micros() as u64)),
        None => "n/a".into(),
    }
}

/// The `q` quantile of sorted `times`.
fn percentile(times: &[Duration], q: f64) -> Option<Duration> {
    if times.is_empty() {
        return None;
    }
    Some(times[((times.len() as f64 * q) as usize).min(times.len() - 1)])
}

/// Whether `echo` on [`NSP`] through `url` is answered, and by which node.
async fn probe(url: &str) -> Result<String, String> {
    let call = async {
        let mut ws = join_echo(url).await?;
        ws.send(Message::text(format!(r#"42{NSP},1["echo",1]"#)))
            .await
            .map_err(|e| e.to_string())?;
        let answer = read_text(&mut ws).await;
        let args = answer
            .strip_prefix(&format!("43{NSP},1"))
            .ok_or_else(|| format!("not an ack: {answer}"))?;
        let args: serde_json::Value = serde_json::from_str(args).map_err(|e| e.to_string())?;
        if !args[0].is_null() {
            return Err(format!("error ack: {answer}"));
        }
        Ok(args[1]["node"].as_str().unwrap_or_default().to_string())
    };
    tokio::time::timeout(Duration::from_secs(3), call)
        .await
        .map_err(|_| "no ack within 3 s".to_string())?
}

/// The fixed-rate mode: routed (clients on A, echo on B), then local (clients
/// on B); prints both and the comparison, and returns them.
async fn fixed_rate(plan: &Plan) -> Vec<Outcome> {
    let redis = RedisServer::start();
    let node_a = start_node(&redis.url(), "A", "");
    let node_b = start_node(&redis.url(), "B", "echo@1.0");
    let (a, b) = (node_a.url(), node_b.url());
    eventually(
        Duration::from_secs(15),
        "node A routes `echo` to node B",
        async || match probe(a).await? {
            node if node == "B" => Ok(()),
            node => Err(format!("answered by node {node:?}")),
        },
    )
    .await;
    // Warm up both paths.
    let warm_up = async {
        round_trips(a, 100).await;
        round_trips(b, 100).await;
    };
    tokio::time::timeout(Duration::from_secs(30), warm_up)
        .await
        .expect("warm-up within 30 s");

    let nodes = [("A", &node_a), ("B", &node_b)];
    let ticks = support::clock_ticks();
    let routed = run(
        plan,
        &redis,
        a,
        &nodes,
        ticks,
        "fixed rate, routed (clients on A, echo on B, via Redis)",
    )
    .await;
    routed.print();
    let local = run(
        plan,
        &redis,
        b,
        &nodes,
        ticks,
        "fixed rate, local (clients on B, echo on B)",
    )
    .await;
    local.print();
    let ratio = |routed: f64, local: f64| {
        if local > 0.0 {
            format!("{:.2}×", routed / local)
        } else {
            "n/a".into()
        }
    };
    let (routed_p50, local_p50) = (routed.p50(), local.p50());
    println!(
        "routed vs local at {} calls/s: p50 {} vs {} ({}), node CPU per call (A + B) {:.1} µs vs {:.1} µs ({})",
        plan.rate,
        show(routed_p50),
        show(local_p50),
        ratio(
            routed_p50.unwrap_or_default().as_secs_f64(),
            local_p50.unwrap_or_default().as_secs_f64()
        ),
        routed.nodes_cpu_us(),
        local.nodes_cpu_us(),
        ratio(routed.nodes_cpu_us(), local.nodes_cpu_us()),
    );
    vec![routed, local]
}

/// One fixed-rate run with `plan.clients` clients on `url`, under the plan's hard
/// timeout.
async fn run(
    plan: &Plan,
    redis: &RedisServer,
    url: &str,
    nodes: &[(&str, &Testbed)],
    ticks: u64,
    label: &str,
) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let outcome = tokio::time::timeout(
        plan.timeout(),
        run_unbounded(plan, redis, url, nodes, ticks, label, stop.clone()),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    outcome.unwrap_or_else(|_| panic!("{label}: not done within {:?}", plan.timeout()))
}

async fn run_unbounded(
    plan: &Plan,
    redis: &RedisServer,
    url: &str,
    nodes: &[(&str, &Testbed)],
    ticks: u64,
    label: &str,
    stop: Arc<AtomicBool>,
) -> Outcome {
    let ledger = Arc::new(Ledger::new(plan.calls));
    let mut joining = tokio::task::JoinSet::new();
    for _ in 0..plan.clients {
        let (url, ledger) = (url.to_string(), ledger.clone());
        joining.spawn(async move { connect_client(&url, ledger).await });
    }
    let clients = tokio::time::timeout(CONNECT_TIMEOUT, joining.join_all())
        .await
        .unwrap_or_else(|_| panic!("{label}: clients not connected within {CONNECT_TIMEOUT:?}"));
    tokio::time::sleep(SETTLE).await;

    let mut conn = redis.conn().await;
    let before = Snapshot::take(nodes, &mut conn).await;
    let start = Instant::now() + Duration::from_millis(10);
    ledger.start.set(start).expect("one start");
    let senders = clients.iter().map(|c| c.out.clone()).collect();
    let scheduled = *plan;
    let last_send = tokio::task::spawn_blocking(move || schedule(scheduled, start, senders, stop))
        .await
        .expect("the scheduler");
    let deadline = last_send + GRACE;
    while ledger.answered() < plan.calls && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after = Snapshot::take(nodes, &mut conn).await;
    let closed = ledger.closed.load(Ordering::Relaxed);

    for client in &clients {
        let _ = client.out.send(Out::Close);
    }
    // let the nodes see the clients leave before anything else is measured
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(clients);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut latencies = Vec::new();
    let mut send_lag = Vec::new();
    let mut last_ack = Duration::ZERO;
    for n in 0..plan.calls {
        let due = plan.due(n);
        let sent = ledger.sent[n as usize].load(Ordering::Relaxed);
        if sent != 0 {
            send_lag.push(Duration::from_nanos(sent - 1).saturating_sub(due));
        }
        let acked = ledger.acked[n as usize].load(Ordering::Relaxed);
        if acked != 0 {
            let at = Duration::from_nanos((acked & !ERROR_BIT) - 1);
            last_ack = last_ack.max(at);
            if acked & ERROR_BIT == 0 {
                latencies.push(at.saturating_sub(due));
            }
        }
    }
    latencies.sort();
    send_lag.sort();
    let ok = ledger.ok.load(Ordering::Relaxed);
    let window = last_ack.max(Duration::from_secs(plan.seconds));
    let per_call = |amount: f64| if ok > 0 { amount / ok as f64 } else { 0.0 };
    let ticks_us = |t: u64| t as f64 * 1e6 / ticks as f64;
    Outcome {
        label: label.to_string(),
        rate: plan.rate,
        calls: plan.calls,
        clients: plan.clients,
        sent: ledger.sent_count.load(Ordering::Relaxed),
        ok,
        errors: ledger.errors.load(Ordering::Relaxed),
        sample_error: ledger.sample_error.lock().unwrap().clone(),
        unexpected: ledger.unexpected.load(Ordering::Relaxed),
        sample_unexpected: ledger.sample_unexpected.lock().unwrap().clone(),
        closed,
        latencies,
        send_lag,
        achieved: ok as f64 / window.as_secs_f64(),
        nodes: nodes
            .iter()
            .zip(before.nodes.iter().zip(&after.nodes))
            .map(|((name, _), ((t0, rss0), (t1, rss1)))| {
                (name.to_string(), per_call(ticks_us(t1 - t0)), *rss0, *rss1)
            })
            .collect(),
        commands: after
            .commands
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .filter_map(|(name, &calls)| {
                let earlier = before.commands.get(name).copied().unwrap_or(0);
                let delta = calls - earlier;
                (delta != 0).then(|| (name.clone(), delta, per_call(delta as f64)))
            })
            .collect(),
        redis_cpu_us: per_call((after.redis_cpu - before.redis_cpu) * 1e6),
        own_cpu_us: per_call(ticks_us(after.own_ticks - before.own_ticks)),
    }
}
