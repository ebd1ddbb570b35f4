//! The Mothership's test kit, shared by `tests/mothership.rs` and
//! `tests/drain.rs`: the official socket.io-client driven through
//! `tests/js_mothership/bridge.mjs` ([`Clients`]), HTTP backend components
//! ([`Backend`]), a temporary `COMPONENTS_DIR` ([`ComponentsDir`], shared
//! with the other tests), and
//! waiting for a component's host set in Redis ([`wait_hosts`]).

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use redis::AsyncCommands;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::cluster::{HEARTBEAT_MS, RedisServer};
use super::crate_dir;

const SETUP_HINT: &str = "run `scripts/test` once (it installs the test clients: \
     `npm ci` in tests/js)";

// ---------------------------------------------------------------------------
// cluster set-up
// ---------------------------------------------------------------------------

/// Waits until Redis lists exactly `hosts` for `id@version`, then two
/// heartbeats more, so every node's registry view (refreshed each heartbeat)
/// has it.
pub async fn wait_hosts(redis: &RedisServer, id: &str, version: &str, hosts: &[&str]) {
    let key = format!("rain:service:{id}@{version}:nodes");
    let want: BTreeSet<String> = hosts.iter().map(|h| h.to_string()).collect();
    let mut conn = redis.conn().await;
    let started = Instant::now();
    loop {
        let got: BTreeSet<String> = conn.smembers(&key).await.expect("SMEMBERS");
        if got == want {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{key} is {got:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(2 * HEARTBEAT_MS + 200)).await;
}

/// The hosts Redis lists for a service (`id@version`) now.
pub async fn service_hosts(
    conn: &mut redis::aio::MultiplexedConnection,
    service: &str,
) -> BTreeSet<String> {
    conn.smembers(format!("rain:service:{service}:nodes"))
        .await
        .expect("SMEMBERS")
}

// ---------------------------------------------------------------------------
// the socket.io-client bridge
// ---------------------------------------------------------------------------

/// `node tests/js_mothership/bridge.mjs`: official socket.io-client sockets,
/// named, driven one request at a time (answers matched by id).
pub struct Clients {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::UnboundedReceiver<Value>,
    early: HashMap<u64, Value>,
    stderr: Arc<Mutex<String>>,
    next_id: u64,
}

impl Clients {
    pub async fn start() -> Clients {
        let dir = crate_dir().join("tests");
        let client = dir.join("js/node_modules/socket.io-client/package.json");
        assert!(
            client.is_file(),
            "socket.io-client is not installed ({} is missing): {SETUP_HINT}",
            client.display()
        );
        let mut child = Command::new("node")
            .arg("bridge.mjs")
            .current_dir(dir.join("js_mothership"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node (Node.js 20 or newer): {e}"));
        let stdin = child.stdin.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let mut pipe = child.stderr.take().unwrap();
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                let mut text = String::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    text.push_str(&String::from_utf8_lossy(&buf[..n]));
                    stderr.lock().unwrap().clone_from(&text);
                }
            });
        }
        let (tx, mut answers) = mpsc::unbounded_channel::<Value>();
        {
            let out = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    let value = if line == "READY" {
                        json!({ "ready": true })
                    } else if let Some(rest) = line.strip_prefix("RES ") {
                        serde_json::from_str(rest).unwrap_or_else(
                            |e| json!({ "id": null, "ok": false, "error": format!("bad line {line}: {e}") }),
                        )
                    } else {
                        continue;
                    };
                    if tx.send(value).is_err() {
                        break;
                    }
                }
            });
        }
        match tokio::time::timeout(Duration::from_secs(10), answers.recv()).await {
            Ok(Some(v)) if v["ready"] == json!(true) => {}
            other => panic!(
                "the bridge did not start: {other:?}\nstderr:\n{}",
                stderr.lock().unwrap()
            ),
        }
        Clients {
            child,
            stdin,
            answers,
            early: HashMap::new(),
            stderr,
            next_id: 1,
        }
    }

    /// Sends a request; its id.
    pub fn send(&mut self, mut request: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        request["id"] = json!(id);
        writeln!(self.stdin, "{request}").expect("write to the bridge");
        self.stdin.flush().expect("flush the bridge's stdin");
        id
    }

    /// The answer to request `id`; panics after `timeout`.
    pub async fn wait(&mut self, id: u64, timeout: Duration) -> Value {
        if let Some(answer) = self.early.remove(&id) {
            return answer;
        }
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.answers.recv()).await {
                Ok(Some(answer)) => {
                    if answer["id"] == json!(id) {
                        return answer;
                    }
                    if let Some(other) = answer["id"].as_u64() {
                        self.early.insert(other, answer);
                    } else {
                        panic!("bridge: {answer}");
                    }
                }
                _ => panic!(
                    "the bridge did not answer request {id} within {timeout:?}\nstderr:\n{}",
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    pub async fn request(&mut self, request: Value, timeout: Duration) -> Value {
        let id = self.send(request);
        self.wait(id, timeout).await
    }

    /// Connects client `name` to `url` + `ns`; its sid, or the connect_error message.
    pub async fn try_connect(
        &mut self,
        name: &str,
        url: &str,
        ns: &str,
        auth: Value,
    ) -> Result<String, String> {
        let answer = self
            .request(
                json!({ "op": "connect", "name": name, "url": url, "ns": ns, "auth": auth }),
                Duration::from_secs(8),
            )
            .await;
        if answer["ok"] == json!(true) {
            Ok(answer["sid"].as_str().unwrap_or_default().to_string())
        } else {
            Err(answer["error"].as_str().unwrap_or_default().to_string())
        }
    }

    pub async fn connect(&mut self, name: &str, url: &str, ns: &str, auth: Value) -> String {
        self.try_connect(name, url, ns, auth)
            .await
            .unwrap_or_else(|e| panic!("client {name} on {url}{ns}: connect_error {e}"))
    }

    /// Connects client `name` to `/core` on `url` and asks for its session
    /// token (`session`): what another client passes as `auth.sessionId` to
    /// resume that session.
    pub async fn session_token(&mut self, name: &str, url: &str) -> String {
        self.connect(name, url, "/core", json!({})).await;
        let answer = self.ok(name, "session", json!({})).await;
        answer["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {answer}"))
            .to_string()
    }

    /// `count` clients `x0`, `x1`, … on `url` + `ns`, each with a session of
    /// its own holding the language `l0`, `l1`, … (set through `/core` by
    /// clients `core0`, …); the session tokens, in order.
    pub async fn with_sessions(&mut self, count: usize, url: &str, ns: &str) -> Vec<String> {
        let mut tokens = Vec::new();
        for i in 0..count {
            let token = self.session_token(&format!("core{i}"), url).await;
            self.ok(
                &format!("core{i}"),
                "change_language",
                json!({ "language": format!("l{i}") }),
            )
            .await;
            self.connect(&format!("x{i}"), url, ns, json!({ "sessionId": token }))
                .await;
            tokens.push(token);
        }
        tokens
    }

    /// Emits `event(args…)` with an ack callback; every ack argument, or `Err`
    /// when none came within `timeout_ms`.
    pub async fn try_emit(
        &mut self,
        name: &str,
        event: &str,
        args: Vec<Value>,
        timeout_ms: u64,
    ) -> Result<(Vec<Value>, Duration), String> {
        let answer = self
            .request(
                json!({ "op": "emit", "name": name, "event": event, "args": args, "timeout": timeout_ms }),
                Duration::from_millis(timeout_ms + 5000),
            )
            .await;
        let elapsed = Duration::from_millis(answer["elapsed"].as_u64().unwrap_or(0));
        if answer["ok"] == json!(true) {
            Ok((
                answer["ack"].as_array().cloned().unwrap_or_default(),
                elapsed,
            ))
        } else {
            Err(format!("{} ({answer})", answer["error"]))
        }
    }

    /// When (the bridge's `Date.now()`, ms) and why the server closed client
    /// `name`'s connection, each time, waiting until `count` or `timeout`.
    pub async fn closes(
        &mut self,
        name: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<(u64, String)> {
        let answer = self
            .request(
                json!({ "op": "closes", "name": name, "count": count, "timeout": timeout.as_millis() as u64 }),
                timeout + Duration::from_secs(5),
            )
            .await;
        answer["closes"]
            .as_array()
            .map(|closes| {
                closes
                    .iter()
                    .map(|close| {
                        (
                            close["at"].as_u64().unwrap_or_default(),
                            close["reason"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `(error, data)` of `event(arg)`'s ack; panics when none within 5 s.
    pub async fn call(&mut self, name: &str, event: &str, arg: Value) -> (Value, Value) {
        let (ack, _) = self
            .try_emit(name, event, vec![arg.clone()], 5000)
            .await
            .unwrap_or_else(|e| panic!("client {name}: {event}({arg}): {e}"));
        ack_pair(&ack)
    }

    /// The data of a successful `event(arg)`; panics on an error ack.
    pub async fn ok(&mut self, name: &str, event: &str, arg: Value) -> Value {
        let (error, data) = self.call(name, event, arg.clone()).await;
        assert_eq!(
            error,
            Value::Null,
            "client {name}: {event}({arg}) acked an error (data {data})"
        );
        data
    }

    /// `event(args)` for each entry, one after the other; each ack's arguments.
    pub async fn emits(
        &mut self,
        name: &str,
        event: &str,
        args_list: Vec<Vec<Value>>,
    ) -> Vec<Vec<Value>> {
        let n = args_list.len() as u64;
        let answer = self
            .request(
                json!({ "op": "emits", "name": name, "event": event, "argsList": args_list, "timeout": 5000 }),
                Duration::from_millis(5000 + n * 500),
            )
            .await;
        assert_eq!(
            answer["ok"],
            json!(true),
            "client {name}: {n} × {event}: {answer}"
        );
        serde_json::from_value(answer["acks"].clone()).unwrap()
    }

    /// Waits until `count` `event`s reached client `name` (or `timeout`); the
    /// argument lists of all that arrived (taken).
    pub async fn events(
        &mut self,
        name: &str,
        event: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<Vec<Value>> {
        let answer = self
            .request(
                json!({ "op": "events", "name": name, "event": event, "count": count, "timeout": timeout.as_millis() as u64 }),
                timeout + Duration::from_secs(5),
            )
            .await;
        serde_json::from_value(answer["events"].clone()).unwrap_or_default()
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- bridge stderr -----\n{}\n-----",
                self.stderr.lock().unwrap()
            );
        }
    }
}

/// `(error, data)` from an ack's arguments.
pub fn ack_pair(ack: &[Value]) -> (Value, Value) {
    (
        ack.first().cloned().unwrap_or(Value::Null),
        ack.get(1).cloned().unwrap_or(Value::Null),
    )
}

// ---------------------------------------------------------------------------
// an HTTP backend
// ---------------------------------------------------------------------------

pub type Handler = Arc<dyn Fn(Value) -> BoxFuture<'static, Value> + Send + Sync>;

/// An HTTP backend component on 127.0.0.1, on a runtime of its own: `stop`
/// drops that runtime, which closes the listener and every open connection.
pub struct Backend {
    pub url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    pub fn start(handler: Handler) -> Backend {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let recorded = bodies.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let app = axum::Router::new().route(
                    "/{*path}",
                    axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                        let handler = handler.clone();
                        let recorded = recorded.clone();
                        async move {
                            recorded.lock().unwrap().push(body.clone());
                            axum::Json(handler(body).await)
                        }
                    }),
                );
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime ends every connection task.
            drop(runtime);
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Backend {
            url: format!("http://{addr}"),
            bodies,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Bodies received for `event`.
    pub fn bodies(&self, event: &str) -> Vec<Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b["event"] == json!(event))
            .cloned()
            .collect()
    }

    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `probe@1.0` HTTP component: an event answers the session and node it
/// was sent with (as a component sees them), within `timeout_ms`. Its backend
/// and the `COMPONENTS_DIR` naming it.
pub fn probe_component(timeout_ms: u64) -> (Backend, super::ComponentsDir) {
    let backend = Backend::start(Arc::new(|body: Value| {
        async move { json!({ "data": { "session": body["session"], "node": body["node"] } }) }
            .boxed()
    }));
    let dir = super::ComponentsDir::new(&[(
        "probe.json",
        json!({
            "id": "probe", "version": "1.0", "channels": ["main"],
            "handler": { "kind": "http", "url": format!("{}/probe", backend.url), "timeout_ms": timeout_ms },
        }),
    )]);
    (backend, dir)
}
