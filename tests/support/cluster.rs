//! Cluster helpers (`tests/cluster.rs`, `tests/mothership.rs`, the
//! `routed_rtt` bench): the one `redis-server` spawner (a private server per test
//! or bench), cluster nodes (the `testbed` or the `rain-node` binary) pointed at
//! it, a Prometheus text reader, a raw Socket.IO-over-websocket client, and
//! runners for external client programs given the cluster's addresses.
//!
//! Never touches the Redis on port 6379: every `RedisServer` runs on a free port,
//! without persistence, and is killed when dropped. The node-process spawner
//! itself ([`super::spawn_program`]) and the polling helper
//! ([`super::eventually`]) are the parent module's, not this one's.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

use super::{Testbed, collect, eventually, tail};

// ---------------------------------------------------------------------------
// redis-server
// ---------------------------------------------------------------------------

/// A `redis-server` child process of this test, on its own port; killed on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    /// Set for a server that speaks only TLS ([`Self::start_tls`]).
    tls: Option<TlsServer>,
}

/// What a TLS `redis-server` was started with.
struct TlsServer {
    /// The CA that signed the server's certificate, for the test's own client.
    ca: PathBuf,
    /// The `default` user's password (`--requirepass`).
    admin_password: String,
}

impl RedisServer {
    /// Starts `redis-server` on a free port of 127.0.0.1 and waits for `PING`.
    pub fn start() -> RedisServer {
        RedisServer::start_with(None, &[])
    }

    /// Starts a `redis-server` that speaks only TLS (`--port 0 --tls-port`),
    /// with the server certificate of `certs`, clients not asked for one, and
    /// the `default` user's password set to `admin_password`; waits for `PING`
    /// over TLS.
    pub fn start_tls(certs: &TestCerts, admin_password: &str) -> RedisServer {
        let (cert, key, ca) = (
            certs.path("server.crt"),
            certs.path("server.key"),
            certs.path("ca.crt"),
        );
        let args = [
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
            "--requirepass",
            admin_password,
        ];
        let tls = TlsServer {
            ca: certs.dir.join("ca.crt"),
            admin_password: admin_password.to_string(),
        };
        RedisServer::start_with(Some(tls), &args)
    }

    fn start_with(mut tls: Option<TlsServer>, args: &[&str]) -> RedisServer {
        let check = Command::new("redis-server").arg("--version").output();
        assert!(
            matches!(&check, Ok(out) if out.status.success()),
            "`redis-server` is not runnable ({check:?}): install it (`apt-get install redis-server`; \
             .ci/run does this)"
        );
        let mut last_error = String::new();
        // a free port can be taken by someone else between our probe and redis'
        // bind: try a few
        for _ in 0..5 {
            let port = free_port();
            assert_ne!(port, 6379, "never the shared Redis port");
            let log = Arc::new(Mutex::new(String::new()));
            let child = spawn_redis(port, tls.is_some(), args, &log);
            let mut server = RedisServer {
                port,
                child: Some(child),
                log,
                tls,
            };
            match server.wait_ready(Duration::from_secs(5)) {
                Ok(()) => return server,
                Err(e) => {
                    last_error = format!("{e}\n{}", server.log.lock().unwrap());
                    server.stop();
                    tls = server.tls.take();
                }
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`, or for a TLS server `rediss://127.0.0.1:PORT`
    /// (no credentials).
    pub fn url(&self) -> String {
        match self.tls {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some(_) => format!("rediss://127.0.0.1:{}", self.port),
        }
    }

    /// The server's log (stdout and stderr).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// A client for inspecting keys: the `default` user, over TLS trusting the
    /// test CA for a TLS server.
    pub fn client(&self) -> redis::Client {
        match &self.tls {
            None => redis::Client::open(self.url()).expect("redis client"),
            Some(tls) => {
                let url = format!(
                    "rediss://default:{}@127.0.0.1:{}",
                    tls.admin_password, self.port
                );
                let root_cert = Some(std::fs::read(&tls.ca).expect("read the test CA"));
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert,
                };
                redis::Client::build_with_tls(url, certificates).expect("redis TLS client")
            }
        }
    }

    /// An async connection (a fresh one: after a restart the old ones are dead).
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test's redis-server")
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty (no persistence), and waits for `PING`.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(self.tls.is_none(), "restart is for plain servers");
        loop {
            let child = spawn_redis(self.port, false, &[], &self.log);
            self.child = Some(child);
            match self.wait_ready(Duration::from_secs(3)) {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!(
                        "redis-server restart on {} failed ({e}); retrying",
                        self.port
                    );
                    self.stop();
                    thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!(
                    "redis-server did not come back on port {}: {e}\n{}",
                    self.port,
                    self.log.lock().unwrap()
                ),
            }
        }
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("redis-server exited: {status}"));
            }
            let up = match self.tls {
                None => ping(self.port),
                Some(_) => self.ping_tls(),
            };
            if up {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("no PONG on port {} within {timeout:?}", self.port));
            }
            thread::sleep(Duration::from_millis(25));
        }
    }
}

impl RedisServer {
    /// Whether the TLS server answers `PING` to its `default` user.
    fn ping_tls(&self) -> bool {
        let Ok(mut connection) = self
            .client()
            .get_connection_with_timeout(Duration::from_millis(500))
        else {
            return false;
        };
        redis::cmd("PING")
            .query::<String>(&mut connection)
            .is_ok_and(|pong| pong == "PONG")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_redis(port: u16, tls: bool, args: &[&str], log: &Arc<Mutex<String>>) -> Child {
    let port = port.to_string();
    let listen: Vec<&str> = if tls {
        vec!["--port", "0", "--tls-port", &port]
    } else {
        vec!["--port", &port]
    };
    let mut child = Command::new("redis-server")
        .args(listen)
        .args(args)
        .args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ])
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start redis-server");
    collect(child.stdout.take().unwrap(), log.clone());
    collect(child.stderr.take().unwrap(), log.clone());
    child
}

/// Certificates made for one test with the `openssl` CLI, in a directory of
/// their own (removed on drop): `ca.crt` (a CA), `server.crt`/`server.key`
/// (signed by it, for `127.0.0.1` and `localhost`), and `other-ca.crt` (a CA
/// that signed nothing here).
pub struct TestCerts {
    pub dir: PathBuf,
}

impl TestCerts {
    pub fn generate() -> TestCerts {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rain-test-certs-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the certificates directory");
        std::fs::write(
            dir.join("server.ext"),
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        // P-256 keys: quick to make, and what both rustls and redis accept.
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let ca_ext = [
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ];
        for (name, subject) in [
            ("ca", "/CN=rain test CA"),
            ("other-ca", "/CN=rain other CA"),
        ] {
            let (crt, k) = (format!("{name}.crt"), format!("{name}.key"));
            let mut args = vec!["req", "-x509", "-days", "2", "-subj", subject];
            args.extend(key);
            args.extend(ca_ext);
            args.extend(["-keyout", &k, "-out", &crt]);
            openssl(&dir, &args);
        }
        let mut args = vec!["req", "-new", "-subj", "/CN=localhost"];
        args.extend(key);
        args.extend(["-keyout", "server.key", "-out", "server.csr"]);
        openssl(&dir, &args);
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-extfile",
                "server.ext",
                "-out",
                "server.crt",
            ],
        );
        TestCerts { dir }
    }

    /// The path of one of the files, as text.
    pub fn path(&self, file: &str) -> String {
        let path = self.dir.join(file);
        assert!(path.is_file(), "no {}", path.display());
        path.to_string_lossy().into_owned()
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `openssl args…` in `dir`; panics with its output unless it succeeds.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `openssl` ({e}): install it (`apt-get install openssl`; .ci/run does this)")
        });
    assert!(
        output.status.success(),
        "openssl {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

/// Whether a Redis on `port` answers `PING` with `+PONG`.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(n) => buf[..n].starts_with(b"+PONG"),
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------
// nodes
// ---------------------------------------------------------------------------

pub const NODE_TTL_MS: u64 = 2000;
pub const HEARTBEAT_MS: u64 = 500;

/// A `testbed` node of a cluster; killed when dropped.
pub struct Node {
    pub id: String,
    testbed: Testbed,
}

impl Node {
    pub fn url(&self) -> &str {
        self.testbed.url()
    }

    pub fn pid(&self) -> u32 {
        self.testbed.pid()
    }

    pub fn testbed_mut(&mut self) -> &mut Testbed {
        &mut self.testbed
    }

    pub fn testbed(&self) -> &Testbed {
        &self.testbed
    }

    pub fn stderr_tail(&self, lines: usize) -> String {
        self.testbed.stderr_tail(lines)
    }

    /// SIGKILLs the process (no graceful shutdown); the guard stays valid.
    pub fn kill9(&self) {
        self.testbed.signal("-9");
    }

    /// Resident memory of the process in KiB (`VmRSS` of /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// The node's API listener's base URL.
    pub fn api_url(&self) -> &str {
        self.testbed.api_url()
    }

    /// The node's `/metrics`, from its API listener with the test token.
    pub async fn metrics(&self) -> Metrics {
        let url = format!("{}/metrics", self.api_url());
        let response = http()
            .get(&url)
            .bearer_auth(super::TEST_API_SECRET)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(
            response.status().is_success(),
            "GET {url}: {}",
            response.status()
        );
        Metrics::parse(&response.text().await.expect("metrics body"))
    }

    /// A call to the node's API with the admin token: status and JSON body
    /// (`null` when the body is not JSON).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.api_as(super::TEST_API_SECRET, method, path, body)
            .await
    }

    /// A call to the node's API with the token whose secret is `secret`.
    pub async fn api_as(
        &self,
        secret: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.api_url()))
            .bearer_auth(secret)
            .timeout(Duration::from_secs(15));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("API call");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The status code of `GET {node}{path}`, or `None` when it cannot be fetched.
    pub async fn status_of(&self, path: &str) -> Option<u16> {
        http_status(&format!("{}{path}", self.url())).await
    }

    /// Waits (up to 10 s) until the node's `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        eventually(Duration::from_secs(10), "node ready", async || {
            match self.status_of("/readyz").await {
                Some(200) => Ok(()),
                other => Err(format!("{}: {other:?}", self.id)),
            }
        })
        .await;
    }
}

/// The `SESSION_SECRET` every test cluster's nodes share (required with
/// Redis; at least 32 bytes).
pub const SESSION_SECRET: &str = "test-cluster-session-secret-0123456789";

/// The environment of every cluster node (besides `REDIS_SERVER` and `NODE_ID`).
pub fn node_env() -> Vec<(String, String)> {
    [
        ("SESSION_SECRET", SESSION_SECRET.to_string()),
        ("NODE_TTL_MS", NODE_TTL_MS.to_string()),
        ("HEARTBEAT_MS", HEARTBEAT_MS.to_string()),
        ("PING_INTERVAL_MS", "1000".into()),
        ("PING_TIMEOUT_MS", "1000".into()),
        ("CONNECT_TIMEOUT_MS", "5000".into()),
        ("SHUTDOWN_TIMEOUT_MS", "1000".into()),
        ("DRAIN_DELAY_MS", "100".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Starts one testbed node of the cluster at `redis_url` (`extra_env`
/// overrides the defaults).
pub fn spawn_node(redis_url: &str, node_id: &str, extra_env: &[(&str, &str)]) -> Node {
    spawn_node_program(&super::testbed_path(), redis_url, node_id, extra_env)
}

/// Starts the node program at `path` with the cluster's settings.
fn spawn_node_program(
    path: &Path,
    redis_url: &str,
    node_id: &str,
    extra_env: &[(&str, &str)],
) -> Node {
    let mut env = vec![
        ("REDIS_SERVER".to_string(), redis_url.to_string()),
        ("NODE_ID".to_string(), node_id.to_string()),
    ];
    env.extend(node_env());
    for (k, v) in extra_env {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Node {
        id: node_id.to_string(),
        testbed: super::spawn_program(path, &refs),
    }
}

/// Starts several nodes at once (in parallel).
pub fn spawn_nodes(redis_url: &str, ids: &[&str], extra_env: &[(&str, &str)]) -> Vec<Node> {
    thread::scope(|scope| {
        let handles: Vec<_> = ids
            .iter()
            .map(|id| scope.spawn(move || spawn_node(redis_url, id, extra_env)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("node start"))
            .collect()
    })
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

pub async fn http_status(url: &str) -> Option<u16> {
    http()
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

// ---------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------

/// One sample: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// One scrape of `/metrics`.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    series: Vec<Sample>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut series = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
            let name = line[..name_end].to_string();
            let mut rest = &line[name_end..];
            let mut labels = Vec::new();
            if rest.starts_with('{') {
                let Some((parsed, after)) = parse_labels(&rest[1..]) else {
                    continue;
                };
                labels = parsed;
                rest = after;
            }
            let Some(value) = rest.split_whitespace().next() else {
                continue;
            };
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => match v.parse::<f64>() {
                    Ok(v) => v,
                    Err(_) => continue,
                },
            };
            series.push((name, labels, value));
        }
        Metrics {
            text: text.to_string(),
            series,
        }
    }

    /// The sum of every series named `name` whose labels include `labels`; `None`
    /// when there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for (n, ls, v) in &self.series {
            if n != name {
                continue;
            }
            let matches = labels
                .iter()
                .all(|(k, want)| ls.iter().any(|(key, got)| key == k && got == want));
            if matches {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }

    /// A counter's value; a counter not exported yet (never incremented) is 0.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// A gauge's value; panics (showing the scrape) when it is not exported.
    pub fn gauge(&self, name: &str) -> f64 {
        self.value(name, &[])
            .unwrap_or_else(|| panic!("no `{name}` in /metrics:\n{}", self.text))
    }
}

/// Parses `k="v",k2="v2"}` and returns the labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        let mut chars = s[eq + 1..].char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            if escaped {
                value.push(match c {
                    'n' => '\n',
                    c => c,
                });
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(eq + 1 + i + 1);
                break;
            } else {
                value.push(c);
            }
        }
        labels.push((key, value));
        s = &s[end?..];
    }
}

// ---------------------------------------------------------------------------
// a raw Socket.IO client over websocket
// ---------------------------------------------------------------------------

/// Something the server sent to a [`SioClient`]: an event (`ack` set when the
/// server asks for an acknowledgement), or one of the pseudo events `disconnect`
/// (a Socket.IO DISCONNECT packet; args `["io server disconnect"]`),
/// `connect_error` and `transport close` (the websocket ended).
#[derive(Debug, Clone)]
pub struct Incoming {
    pub name: String,
    pub args: Vec<Value>,
    pub ack: Option<u64>,
}

impl Incoming {
    pub fn first(&self) -> Value {
        self.args.first().cloned().unwrap_or(Value::Null)
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<Value>>>>>;

/// A Socket.IO v5 client of the default namespace over a raw Engine.IO v4
/// websocket: answers pings, matches acks, queues events.
pub struct SioClient {
    pub sid: String,
    /// What the client connected to.
    pub url: String,
    out: mpsc::UnboundedSender<Message>,
    events: mpsc::UnboundedReceiver<Incoming>,
    backlog: VecDeque<Incoming>,
    pending: Pending,
    next_id: u64,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SioClient {
    /// Connects to `node_url` (`http://127.0.0.1:PORT`), joins `/` and waits for the
    /// testbed's `welcome`.
    pub async fn connect(node_url: &str) -> SioClient {
        let ws_url = format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            node_url.replacen("http://", "ws://", 1)
        );
        let (ws, _) = tokio::time::timeout(Duration::from_secs(3), connect_async(&ws_url))
            .await
            .unwrap_or_else(|_| panic!("websocket to {ws_url} timed out"))
            .unwrap_or_else(|e| panic!("websocket to {ws_url}: {e}"));
        let (mut sink, mut stream) = ws.split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel::<Incoming>();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));

        let writer = tokio::spawn(async move {
            while let Some(message) = out_rx.recv().await {
                let close = matches!(message, Message::Close(_));
                if sink.send(message).await.is_err() || close {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let reader = {
            let out_tx = out_tx.clone();
            let pending = pending.clone();
            tokio::spawn(async move {
                while let Some(message) = stream.next().await {
                    let text = match message {
                        Ok(Message::Text(text)) => text.to_string(),
                        Ok(Message::Close(_)) | Err(_) => break,
                        Ok(_) => continue, // binary attachments are not used here
                    };
                    if text == "2" {
                        let _ = out_tx.send(Message::text("3"));
                        continue;
                    }
                    if let Some(packet) = text.strip_prefix('4') {
                        if let Some(incoming) = parse_packet(packet, &pending) {
                            let _ = ev_tx.send(incoming);
                        }
                    } else if text.starts_with('1') {
                        break;
                    }
                }
                let _ = ev_tx.send(Incoming {
                    name: "transport close".into(),
                    args: vec![],
                    ack: None,
                });
            })
        };

        let mut client = SioClient {
            sid: String::new(),
            url: node_url.to_string(),
            out: out_tx,
            events: ev_rx,
            backlog: VecDeque::new(),
            pending,
            next_id: 1,
            tasks: vec![writer, reader],
        };
        client.send_raw("40");
        let connect = client.next("connect", Duration::from_secs(3)).await;
        let welcome = client.next("welcome", Duration::from_secs(3)).await;
        client.sid = welcome.first()["sid"]
            .as_str()
            .unwrap_or_else(|| panic!("welcome without sid: {welcome:?}"))
            .to_string();
        assert_eq!(
            connect.first()["sid"].as_str(),
            Some(client.sid.as_str()),
            "CONNECT and welcome disagree on the sid"
        );
        client
    }

    pub fn send_raw(&self, text: &str) {
        let _ = self.out.send(Message::text(text.to_string()));
    }

    /// Emits `event(args…)` without an ack.
    pub fn emit(&self, event: &str, args: Vec<Value>) {
        let mut array = vec![json!(event)];
        array.extend(args);
        self.send_raw(&format!("42{}", Value::Array(array)));
    }

    /// Emits `event(args…)` with an ack; the ack's arguments, or `Err` after `timeout`.
    pub async fn call_timeout(
        &mut self,
        event: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<Vec<Value>, String> {
        let id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let mut array = vec![json!(event)];
        array.extend(args);
        self.send_raw(&format!("42{id}{}", Value::Array(array)));
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(args)) => Ok(args),
            Ok(Err(_)) => Err(format!("{event}: the connection closed before the ack")),
            Err(_) => {
                self.pending.lock().unwrap().remove(&id);
                Err(format!("{event}: no ack within {timeout:?}"))
            }
        }
    }

    /// Emits with an ack and returns the ack's first argument; panics after 3 s.
    pub async fn call(&mut self, event: &str, arg: Value) -> Value {
        let sid = self.sid.clone();
        let args = self
            .call_timeout(event, vec![arg], Duration::from_secs(3))
            .await
            .unwrap_or_else(|e| panic!("client {sid} on {}: {e}", self.url));
        args.into_iter().next().unwrap_or(Value::Null)
    }

    /// Emits `event` with no arguments but an ack; the ack's first argument.
    pub async fn call0(&mut self, event: &str) -> Value {
        let sid = self.sid.clone();
        let args = self
            .call_timeout(event, vec![], Duration::from_secs(3))
            .await
            .unwrap_or_else(|e| panic!("client {sid} on {}: {e}", self.url));
        args.into_iter().next().unwrap_or(Value::Null)
    }

    /// Answers an event the server sent with an ack id.
    pub fn ack(&self, id: u64, args: Vec<Value>) {
        self.send_raw(&format!("43{id}{}", Value::Array(args)));
    }

    async fn recv(&mut self, until: Instant) -> Option<Incoming> {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.events.recv()).await {
            Ok(Some(incoming)) => Some(incoming),
            Ok(None) => {
                tokio::time::sleep(left).await;
                None
            }
            Err(_) => None,
        }
    }

    /// The next `name` event (earlier ones of other names are kept for later);
    /// `None` after `timeout`.
    pub async fn try_next(&mut self, name: &str, timeout: Duration) -> Option<Incoming> {
        if let Some(i) = self.backlog.iter().position(|e| e.name == name) {
            return self.backlog.remove(i);
        }
        let until = Instant::now() + timeout;
        while let Some(incoming) = self.recv(until).await {
            if incoming.name == name {
                return Some(incoming);
            }
            self.backlog.push_back(incoming);
        }
        None
    }

    /// The next `name` event; panics after `timeout`.
    pub async fn next(&mut self, name: &str, timeout: Duration) -> Incoming {
        match self.try_next(name, timeout).await {
            Some(incoming) => incoming,
            None => panic!(
                "client {} on {}: no `{name}` within {timeout:?} (other events: {:?})",
                self.sid,
                self.url,
                self.backlog.iter().map(|e| &e.name).collect::<Vec<_>>()
            ),
        }
    }

    /// Every `name` event that arrives within `window` (and any already queued).
    pub async fn collect(&mut self, name: &str, window: Duration) -> Vec<Incoming> {
        let mut got = Vec::new();
        let until = Instant::now() + window;
        let mut rest = VecDeque::new();
        for e in self.backlog.drain(..) {
            if e.name == name {
                got.push(e);
            } else {
                rest.push_back(e);
            }
        }
        self.backlog = rest;
        while let Some(incoming) = self.recv(until).await {
            if incoming.name == name {
                got.push(incoming);
            } else {
                self.backlog.push_back(incoming);
            }
        }
        got
    }

    /// Collects `name` events until `count` arrived or `timeout` passed.
    pub async fn collect_n(
        &mut self,
        name: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<Incoming> {
        let until = Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < count {
            let left = until.saturating_duration_since(Instant::now());
            match self.try_next(name, left).await {
                Some(e) => got.push(e),
                None => break,
            }
        }
        got
    }

    /// Panics if a `name` event arrives within `window` (or is already queued).
    pub async fn expect_none(&mut self, name: &str, window: Duration) {
        let got = self.collect(name, window).await;
        assert!(
            got.is_empty(),
            "client {} on {}: unexpected `{name}`: {got:?}",
            self.sid,
            self.url
        );
    }

    /// Leaves the namespace (`41`) and closes the websocket politely.
    pub async fn close(mut self) {
        self.send_raw("41");
        let _ = self.out.send(Message::Close(None));
        let _ = self
            .try_next("transport close", Duration::from_secs(1))
            .await;
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }

    /// Drops the TCP connection without any Socket.IO/Engine.IO/websocket goodbye.
    pub fn drop_abruptly(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for SioClient {
    fn drop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

/// Parses a Socket.IO packet (the text after Engine.IO's `4`) for the default
/// namespace; acks complete their pending call and yield nothing.
fn parse_packet(packet: &str, pending: &Pending) -> Option<Incoming> {
    let mut chars = packet.chars();
    let kind = chars.next()?;
    let mut rest = chars.as_str();
    if matches!(kind, '5' | '6') {
        // binary: `<attachments>-` first
        let dash = rest.find('-')?;
        rest = &rest[dash + 1..];
    }
    if rest.starts_with('/') {
        rest = match rest.find(',') {
            Some(comma) => &rest[comma + 1..],
            None => "",
        };
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id: Option<u64> = rest[..digits].parse().ok();
    let data: Value = if rest[digits..].is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&rest[digits..]).unwrap_or(Value::Null)
    };
    match kind {
        '0' => Some(Incoming {
            name: "connect".into(),
            args: vec![data],
            ack: None,
        }),
        '1' => Some(Incoming {
            name: "disconnect".into(),
            args: vec![json!("io server disconnect")],
            ack: None,
        }),
        '4' => Some(Incoming {
            name: "connect_error".into(),
            args: vec![data],
            ack: None,
        }),
        '2' | '5' => {
            let mut array = match data {
                Value::Array(a) => a,
                _ => return None,
            };
            if array.is_empty() {
                return None;
            }
            let name = array.remove(0).as_str()?.to_string();
            Some(Incoming {
                name,
                args: array,
                ack: id,
            })
        }
        '3' | '6' => {
            let args = match data {
                Value::Array(a) => a,
                _ => vec![],
            };
            if let Some(tx) = id.and_then(|id| pending.lock().unwrap().remove(&id)) {
                let _ = tx.send(args);
            }
            None
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// waiting
// ---------------------------------------------------------------------------

/// Waits until at least `count` subscriber connections listen on `channel`
/// (`PUBSUB NUMSUB`): a node's SUBSCRIBE is asynchronous, so a message published
/// right after a join could otherwise legitimately miss it.
pub async fn wait_subscribers(redis: &RedisServer, channel: &str, count: i64) {
    let mut conn = redis.conn().await;
    eventually(
        Duration::from_secs(2),
        &format!("{count} subscriber(s) on `{channel}`"),
        async || {
            let n = numsub(&mut conn, channel).await;
            if n >= count {
                Ok(())
            } else {
                Err(format!("PUBSUB NUMSUB says {n}"))
            }
        },
    )
    .await;
}

pub async fn numsub(conn: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let reply: Vec<redis::Value> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(conn)
        .await
        .expect("PUBSUB NUMSUB");
    match reply.get(1) {
        Some(redis::Value::Int(n)) => *n,
        other => panic!("unexpected PUBSUB NUMSUB reply {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// external client programs with the cluster's addresses
// ---------------------------------------------------------------------------

/// Runs `program args…` in `dir` with `NODE_A`, `NODE_B`, `NODE_C` (the nodes'
/// URLs, in order), `REDIS_URL` and `envs` set; prints its output and panics unless
/// it exits 0 within `timeout`. Returns its stdout.
pub fn run_with_nodes(
    nodes: &[&Node],
    redis: &RedisServer,
    program: &str,
    args: &[&str],
    dir: &Path,
    envs: &[(&str, &str)],
    timeout: Duration,
) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .env("REDIS_URL", redis.url());
    for (node, var) in nodes.iter().zip(["NODE_A", "NODE_B", "NODE_C", "NODE_D"]) {
        cmd.env(var, node.url());
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    super::run_to_success(cmd, program, args, timeout, "the nodes'").stdout
}

/// A child process whose stdout lines can be awaited one by one.
pub struct LineChild {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    pub seen: Vec<String>,
}

impl LineChild {
    pub fn spawn(mut cmd: Command) -> LineChild {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn child");
        let stderr = Arc::new(Mutex::new(String::new()));
        collect(child.stderr.take().unwrap(), stderr.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LineChild {
            child,
            lines: rx,
            stderr,
            seen: Vec::new(),
        }
    }

    /// The next stdout line starting with `prefix` (the rest of it); panics after `timeout`.
    pub fn line(&mut self, prefix: &str, timeout: Duration) -> String {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(_) => panic!(
                    "no `{prefix}…` line within {timeout:?}; stdout so far:\n{}\nstderr:\n{}",
                    self.seen.join("\n"),
                    tail(&self.stderr.lock().unwrap(), 60)
                ),
            }
        }
    }

    /// Waits for the exit; panics unless it is 0 within `timeout`.
    pub fn wait_success(&mut self, timeout: Duration) {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                while let Ok(line) = self.lines.try_recv() {
                    self.seen.push(line);
                }
                assert!(
                    status.success(),
                    "the client exited with {status}; stdout:\n{}\nstderr:\n{}",
                    self.seen.join("\n"),
                    tail(&self.stderr.lock().unwrap(), 60)
                );
                return;
            }
            assert!(
                Instant::now() < until,
                "the client did not exit within {timeout:?}; stdout:\n{}\nstderr:\n{}",
                self.seen.join("\n"),
                tail(&self.stderr.lock().unwrap(), 60)
            );
            thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for LineChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// the real `rain-node` binary as a cluster node
// ---------------------------------------------------------------------------

/// Starts the `rain-node` binary at `binary` (an integration test has it as
/// `env!("CARGO_BIN_EXE_rain-node")`) as node `node_id` of the cluster at
/// `redis_url`, with [`node_env`] and `extra_env` (which overrides it; an empty
/// value is passed as empty, e.g. `COMPONENTS=""` hosts nothing).
pub fn spawn_binary_node(
    binary: &str,
    redis_url: &str,
    node_id: &str,
    extra_env: &[(&str, &str)],
) -> Node {
    spawn_node_program(Path::new(binary), redis_url, node_id, extra_env)
}

/// Starts several `rain-node` processes at once: `(node id, its extra env)` each.
pub fn spawn_binary_nodes(
    binary: &str,
    redis_url: &str,
    nodes: &[(&str, Vec<(&str, &str)>)],
) -> Vec<Node> {
    thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|(id, env)| scope.spawn(move || spawn_binary_node(binary, redis_url, id, env)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("node start"))
            .collect()
    })
}
