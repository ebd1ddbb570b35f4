//! The `/admin` page in headless Chromium (Debian's `chromium`, driven by
//! `tests/js/admin_map.mjs` with playwright-core), against real `rain-node`
//! processes on a private `redis-server`: the page draws the cluster's nodes,
//! Redis and components as shapes (found by their `data-kind`/`data-id`), a
//! node killed disappears within `NODE_TTL_MS + 2 × HEARTBEAT_MS + 1 s`, a
//! component deployed through the API appears, and without a (right) token
//! the page asks for one. The picture is kept as `target/admin-map.png`.
//!
//! Chromium is installed by `.ci/run`; without it these tests fail, saying so.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use support::cluster::{HEARTBEAT_MS, NODE_TTL_MS, Node, RedisServer, spawn_binary_nodes};
use support::{TEST_API_SECRET, chromium, crate_dir, js_dir, spawn_program};

const RAIN_NODE: &str = env!("CARGO_BIN_EXE_rain-node");

/// Where the test's pictures go: `target/` (or `CARGO_TARGET_DIR`).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_dir().join("target"))
}

/// One Chromium page, driven a command at a time (see admin_map.mjs).
struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Value>,
    /// Every line the driver printed, for the failure messages and the
    /// checks of what went wrong in the page.
    seen: Vec<Value>,
}

impl Browser {
    fn launch() -> Browser {
        let chromium = chromium();
        let mut child = Command::new("node")
            .arg("admin_map.mjs")
            .current_dir(js_dir())
            .env("CHROMIUM", chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node (Node.js) runs tests/js/admin_map.mjs");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Browser {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// Sends a command; the first line answering it has the key `answer`.
    fn ask(&mut self, command: Value, answer: &str, timeout: Duration) -> Value {
        writeln!(self.stdin, "{command}").expect("the driver reads its commands");
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.get(answer).is_some() {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no answer to {command} within {timeout:?}; the driver said:\n{}",
                    self.transcript()
                ),
            }
        }
    }

    fn open(&mut self, url: &str) {
        self.ask(
            json!({ "op": "open", "url": url }),
            "opened",
            Duration::from_secs(30),
        );
    }

    /// Waits up to `timeout` for `present` shapes to be drawn and `absent`
    /// ones gone; whether they were, how long it took, and the shapes then.
    fn wait(
        &mut self,
        present: &[(&str, &str)],
        absent: &[(&str, &str)],
        timeout: Duration,
    ) -> (bool, Duration, Vec<(String, String)>) {
        let answer = self.ask(
            json!({
                "op": "wait", "present": present, "absent": absent,
                "timeout": u64::try_from(timeout.as_millis()).unwrap(),
            }),
            "waited",
            timeout + Duration::from_secs(20),
        );
        let shapes = answer["shapes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s[0].as_str().unwrap().to_string(),
                    s[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        (
            answer["waited"] == true,
            Duration::from_millis(answer["ms"].as_u64().unwrap()),
            shapes,
        )
    }

    /// The page's visible state: url, formVisible, error, status, shapes, nodes
    /// (id → its `data-state` and text lines).
    fn state(&mut self) -> Value {
        self.ask(json!({ "op": "state" }), "state", Duration::from_secs(20))["state"].clone()
    }

    fn submit(&mut self, token: &str) {
        self.ask(
            json!({ "op": "submit", "token": token }),
            "submitted",
            Duration::from_secs(20),
        );
    }

    fn screenshot(&mut self, path: &std::path::Path) {
        self.ask(
            json!({ "op": "screenshot", "path": path }),
            "screenshot",
            Duration::from_secs(30),
        );
    }

    /// What the page got wrong: uncaught errors, console errors (a
    /// Content-Security-Policy violation among them) and warnings.
    fn problems(&self) -> Vec<&Value> {
        self.seen
            .iter()
            .filter(|line| line.get("pageerror").is_some() || line.get("console").is_some())
            .collect()
    }

    /// The responses the page got for `path`.
    fn statuses(&self, path: &str) -> Vec<u64> {
        self.seen
            .iter()
            .filter(|l| l["response"].as_str().is_some_and(|u| u.ends_with(path)))
            .filter_map(|l| l["status"].as_u64())
            .collect()
    }

    fn transcript(&self) -> String {
        self.seen
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({ "op": "quit" }));
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The page of `node`, with the test token in its fragment.
fn admin_url(node: &Node) -> String {
    format!("{}/admin#token={TEST_API_SECRET}", node.api_url())
}

/// The most a killed node may stay on the page: its record's TTL, two
/// heartbeats for the others to notice, and a second (the page's refresh
/// and drawing).
fn vanish_bound() -> Duration {
    Duration::from_millis(NODE_TTL_MS + 2 * HEARTBEAT_MS + 1000)
}

/// Three nodes: `alpha` and `bravo` host echo, `charlie` hosts chat.
fn three_nodes(redis: &RedisServer) -> Vec<Node> {
    spawn_binary_nodes(
        RAIN_NODE,
        &redis.url(),
        &[
            ("alpha", vec![("COMPONENTS", "echo@1.0")]),
            ("bravo", vec![("COMPONENTS", "echo@1.0")]),
            ("charlie", vec![("COMPONENTS", "chat@1.0")]),
        ],
    )
}

#[test]
fn the_map_draws_three_nodes_and_their_components_and_drops_a_killed_node() {
    chromium();
    let redis = RedisServer::start();
    let nodes = three_nodes(&redis);
    let mut browser = Browser::launch();
    browser.open(&admin_url(&nodes[0]));

    let drawn = [
        ("backend", "default"),
        ("node", "alpha"),
        ("node", "bravo"),
        ("node", "charlie"),
        ("component", "echo@1.0"),
        ("component", "chat@1.0"),
        ("edge", "node:alpha->backend:default"),
        ("edge", "node:charlie->backend:default"),
        ("edge", "component:echo@1.0->node:alpha"),
        ("edge", "component:echo@1.0->node:bravo"),
        ("edge", "component:chat@1.0->node:charlie"),
    ];
    let (all, _, shapes) = browser.wait(&drawn, &[], Duration::from_secs(15));
    assert!(
        all,
        "the page did not draw {drawn:?}; it drew {shapes:?}\n{}",
        browser.transcript()
    );
    // The token left the address bar once read.
    let state = browser.state();
    assert!(
        !state["url"].as_str().unwrap().contains(TEST_API_SECRET),
        "{state}"
    );
    assert_eq!(state["formVisible"], false, "{state}");
    // Each node with its status and figures, from its record in the cluster
    // (`Membership::nodes()`: state and statistics published with the
    // heartbeat; a beat or two after the start).
    let shown = |state: &Value, id: &str| -> Result<(), String> {
        let node = &state["nodes"][id];
        let text = node["text"].to_string();
        if node["state"] != "running" {
            return Err(format!("{id} is not drawn running: {node}"));
        }
        if !text.contains("CPU ") || text.contains("CPU –") || !text.contains("MiB") {
            return Err(format!("{id} shows no figures: {text}"));
        }
        Ok(())
    };
    let started = Instant::now();
    loop {
        let state = browser.state();
        let all = ["alpha", "bravo", "charlie"]
            .iter()
            .try_for_each(|id| shown(&state, id));
        match all {
            Ok(()) => break,
            Err(why) if started.elapsed() > Duration::from_secs(5) => panic!("{why}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    let picture = target_dir().join("admin-map.png");
    browser.screenshot(&picture);
    assert!(
        std::fs::metadata(&picture).is_ok_and(|m| m.len() > 1000),
        "no screenshot at {}",
        picture.display()
    );

    let killed_at = Instant::now();
    nodes[2].kill9();
    let bound = vanish_bound();
    let (gone, _, shapes) = browser.wait(
        &[("node", "alpha"), ("node", "bravo")],
        &[
            ("node", "charlie"),
            ("edge", "component:chat@1.0->node:charlie"),
        ],
        bound + Duration::from_secs(10),
    );
    let took = killed_at.elapsed();
    eprintln!("the killed node vanished from the page after {took:?} (bound {bound:?})");
    assert!(
        gone,
        "charlie still drawn: {shapes:?}\n{}",
        browser.transcript()
    );
    assert!(
        took <= bound,
        "the killed node took {took:?} to disappear (at most {bound:?})"
    );
    assert!(
        shapes
            .iter()
            .any(|s| s == &("component".into(), "echo@1.0".into())),
        "{shapes:?}"
    );
    browser.screenshot(&target_dir().join("admin-map-after-kill.png"));
    assert!(
        browser.problems().is_empty(),
        "the page went wrong: {:#?}",
        browser.problems()
    );
}

/// A component deployed at run time (`POST /webcomponent`) is drawn with
/// its host.
#[test]
fn a_component_deployed_through_the_api_appears() {
    chromium();
    let redis = RedisServer::start();
    let nodes = spawn_binary_nodes(
        RAIN_NODE,
        &redis.url(),
        &[
            ("alpha", vec![("BACKEND_URLS", "http://127.0.0.1:9/")]),
            ("bravo", vec![("BACKEND_URLS", "http://127.0.0.1:9/")]),
        ],
    );
    let mut browser = Browser::launch();
    browser.open(&admin_url(&nodes[0]));
    let (all, _, shapes) = browser.wait(
        &[("node", "alpha"), ("node", "bravo")],
        &[],
        Duration::from_secs(15),
    );
    assert!(all, "{shapes:?}\n{}", browser.transcript());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{}/webcomponent", nodes[1].api_url()))
            .bearer_auth(TEST_API_SECRET)
            .json(&json!({
                "descriptor": {
                    "id": "weather", "version": "2.1", "channels": ["main"],
                    "handler": { "kind": "http", "url": "http://127.0.0.1:9/weather" },
                },
                "nodes": ["bravo"],
            }))
            .send()
            .await
            .expect("POST /webcomponent");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    });
    assert_eq!(status, 200, "{body}");
    let (appeared, took, shapes) = browser.wait(
        &[
            ("component", "weather@2.1"),
            ("edge", "component:weather@2.1->node:bravo"),
        ],
        &[],
        Duration::from_secs(5),
    );
    assert!(appeared, "{shapes:?}\n{}", browser.transcript());
    assert!(took <= Duration::from_secs(3), "took {took:?}");
    assert!(
        browser.problems().is_empty(),
        "the page went wrong: {:#?}",
        browser.problems()
    );
}

#[test]
fn without_a_token_the_page_asks_for_one_and_a_wrong_one_is_told() {
    chromium();
    let node = spawn_program(std::path::Path::new(RAIN_NODE), &[("NODE_ID", "solo")]);
    let page_url = format!("{}/admin", node.api_url());

    // The page itself needs no token, and says how it may be used.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (headers, body, map_status) = runtime.block_on(async {
        let client = reqwest::Client::new();
        let response = client.get(&page_url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        let body = response.text().await.unwrap();
        let map = client
            .get(format!("{}/map", node.api_url()))
            .send()
            .await
            .unwrap();
        (headers, body, map.status().as_u16())
    });
    assert_eq!(map_status, 401, "GET /map needs a token");
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    let policy = headers["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(part), "{policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert!(body.contains("<svg"), "{body}");

    let mut browser = Browser::launch();
    browser.open(&page_url);
    let state = browser.state();
    assert_eq!(state["formVisible"], true, "{state}");
    assert_eq!(state["error"], Value::Null, "{state}");
    assert!(
        browser.statuses("/map").is_empty(),
        "asked /map without a token"
    );

    browser.submit("not-the-token");
    let started = Instant::now();
    let state = loop {
        let state = browser.state();
        if state["error"].is_string() || started.elapsed() > Duration::from_secs(10) {
            break state;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let error = state["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("401"), "{state}");
    assert!(
        error.contains("unknown token"),
        "the node's reason: {state}"
    );
    assert_eq!(state["formVisible"], true, "asked again: {state}");
    assert_eq!(browser.statuses("/map"), [401]);

    browser.submit(TEST_API_SECRET);
    let (drawn, _, shapes) = browser.wait(
        &[
            ("node", "solo"),
            ("backend", "default"),
            ("component", "echo@1.0"),
            ("component", "chat@1.0"),
            ("edge", "component:chat@1.0->node:solo"),
        ],
        &[],
        Duration::from_secs(10),
    );
    assert!(drawn, "{shapes:?}\n{}", browser.transcript());
    let state = browser.state();
    assert_eq!(state["formVisible"], false, "{state}");
    assert_eq!(state["error"], Value::Null, "{state}");
    // The 401 of the wrong token is the one console error a browser logs
    // itself ("Failed to load resource"); nothing else may go wrong.
    let problems: Vec<_> = browser
        .problems()
        .into_iter()
        .filter(|p| {
            !p["text"]
                .as_str()
                .is_some_and(|t| t.contains("status of 401"))
        })
        .collect();
    assert!(problems.is_empty(), "the page went wrong: {problems:#?}");
}
