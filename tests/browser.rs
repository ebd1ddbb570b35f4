//! The README's browser tutorial, followed as a newcomer would, in headless
//! Chromium (Debian's `chromium`, driven by `tests/js/browser.mjs` with
//! playwright-core): its HTML block, verbatim but for the CDN `<script src>`
//! (swapped for `socket.io-client/dist/socket.io.min.js` of `tests/js`, the CDN
//! being unreachable here) and the node's address (a free port, not 3000), is
//! served from a local HTTP server like `python3 -m http.server 8000` would,
//! against a real `rain-node` started with `CORS_ORIGINS` set to that server's
//! origin, as the tutorial says. The page must connect and log its answers; the
//! same page from an origin not listed must not connect.
//!
//! Chromium is installed by `.ci/run`; without it these tests fail, saying so.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use support::{Testbed, chromium, crate_dir, js_dir, run_to_success, spawn_program};

const CDN_SCRIPT: &str = r#"<script src="https://cdn.socket.io/4.8.1/socket.io.min.js"></script>"#;
const LOCAL_SCRIPT: &str = r#"<script src="/socket.io.min.js"></script>"#;
/// The node's address in the tutorial.
const TUTORIAL_NODE: &str = "http://127.0.0.1:3000";

/// The tutorial's page for a node at `node_url`, and the README's text.
fn tutorial_page(node_url: &str) -> (String, String) {
    let readme = std::fs::read_to_string(crate_dir().join("README.md")).expect("README.md");
    let section = readme
        .split("## Tutorial: chat from a browser")
        .nth(1)
        .expect("the README has its browser tutorial");
    let section = section.split("\n## ").next().unwrap().to_string();
    let html = section
        .split("```html\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the tutorial has an ```html block");
    assert!(
        html.contains(CDN_SCRIPT),
        "the page no longer loads {CDN_SCRIPT}"
    );
    assert!(
        html.contains(TUTORIAL_NODE),
        "the page no longer talks to {TUTORIAL_NODE}"
    );
    let page = html
        .replace(CDN_SCRIPT, LOCAL_SCRIPT)
        .replace(TUTORIAL_NODE, node_url);
    (page, section)
}

/// Serves `/chat.html` (what `page` holds when asked) and `/socket.io.min.js`
/// on a free port of 127.0.0.1, on a thread of its own, for as long as the test
/// runs: its origin.
fn serve_page(page: Arc<Mutex<String>>) -> String {
    let script_path = js_dir().join("node_modules/socket.io-client/dist/socket.io.min.js");
    let script = std::fs::read_to_string(&script_path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/test once)", script_path.display()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let router = axum::Router::new()
                .route(
                    "/chat.html",
                    axum::routing::get(move || {
                        let page = page.lock().unwrap().clone();
                        async move { axum::response::Html(page) }
                    }),
                )
                // What a browser asks of every site; `python3 -m http.server`
                // answers 404, logged as a console error, which would hide a
                // real one.
                .route(
                    "/favicon.ico",
                    axum::routing::get(|| async { axum::http::StatusCode::NO_CONTENT }),
                )
                .route(
                    "/socket.io.min.js",
                    axum::routing::get(move || async move {
                        ([("content-type", "application/javascript")], script)
                    }),
                );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = axum::serve(listener, router).await;
        });
    });
    origin
}

/// What the page did in Chromium: one JSON object per event (see browser.mjs),
/// until every needle was seen or `timeout` passed.
fn open_page(url: &str, timeout: Duration, needles: &[&str]) -> (bool, Vec<Value>) {
    let chromium = chromium();
    let mut cmd = Command::new("node");
    let timeout_ms = timeout.as_millis().to_string();
    let mut args = vec!["browser.mjs", url, timeout_ms.as_str()];
    args.extend_from_slice(needles);
    cmd.args(&args)
        .current_dir(js_dir())
        .env("CHROMIUM", &chromium);
    let out = run_to_success(
        cmd,
        "node",
        &args,
        timeout + Duration::from_secs(30),
        "the node's",
    );
    let events: Vec<Value> = out
        .stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let reached = events
        .iter()
        .find(|e| e["done"] == true)
        .map(|e| e["reached"] == true)
        .expect("browser.mjs finished");
    (reached, events)
}

/// The text of every console message of `level`.
fn console(events: &[Value], level: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["console"] == level)
        .map(|e| e["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A `rain-node` as the tutorial starts it, but on a free port.
fn tutorial_node(cors_origins: &str) -> Testbed {
    spawn_program(
        Path::new(env!("CARGO_BIN_EXE_rain-node")),
        &[("CORS_ORIGINS", cors_origins)],
    )
}

#[test]
fn the_readme_browser_tutorial_works_from_the_origin_it_names() {
    chromium();
    let (_, section) = tutorial_page(TUTORIAL_NODE);
    // The steps a newcomer follows, with the addresses the test replaces.
    for step in [
        "SERVER_PORT=3000 CORS_ORIGINS=http://127.0.0.1:8000 cargo run",
        "python3 -m http.server 8000",
        "http://127.0.0.1:8000/chat.html",
    ] {
        assert!(
            section.contains(step),
            "the tutorial no longer says `{step}`"
        );
    }

    // The page names the node and the node names the page's origin: the page
    // server starts first, and gets its page once the node runs.
    let page = Arc::new(Mutex::new(String::new()));
    let origin = serve_page(page.clone());
    let node = tutorial_node(&origin);
    *page.lock().unwrap() = tutorial_page(node.url()).0;

    let (reached, events) = open_page(
        &format!("{origin}/chat.html"),
        Duration::from_secs(20),
        &["joined lobby on node", "ann (via", r#"{"args":[1,"two"]"#],
    );
    let logs = console(&events, "log");
    assert!(
        reached,
        "the page did not log all it should; it logged {logs:#?}\nall: {events:#?}"
    );
    assert!(
        logs.iter().any(|l| l.starts_with("joined lobby on node ")),
        "{logs:#?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.starts_with("ann (via ") && l.ends_with("): hello")),
        "{logs:#?}"
    );
    let errors = console(&events, "error");
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
}

#[test]
fn the_same_page_from_an_origin_not_listed_cannot_connect() {
    chromium();
    let node = tutorial_node("http://127.0.0.1:8000");
    let page = Arc::new(Mutex::new(tutorial_page(node.url()).0));
    let origin = serve_page(page);
    let (_, events) = open_page(
        &format!("{origin}/chat.html"),
        Duration::from_secs(10),
        &["blocked by CORS policy"],
    );
    // (The 403 itself is hidden from the page by CORS; tests/origins.rs sees it.)
    let refused = console(&events, "error")
        .iter()
        .filter(|e| e.contains("/socket.io/") && e.contains("blocked by CORS policy"))
        .count();
    assert!(refused > 0, "the node did not refuse the page: {events:#?}");
    let logs = console(&events, "log");
    assert!(
        !logs
            .iter()
            .any(|l| l.contains("joined") || l.contains("(via")),
        "a page of a foreign origin got in: {logs:#?}"
    );
}
