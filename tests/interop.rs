//! Interop with the reference clients: the official JavaScript `socket.io-client`
//! (tests/js, Node's test runner) and python-socketio's sync client
//! (tests/python, pytest), each run against a fresh `testbed` example server.
//!
//! Their dependencies are installed by `scripts/test` (npm ci, pip install); these
//! tests fail — they do not skip — when they are missing.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{crate_dir, run_client, spawn_testbed};

/// A short heartbeat, so dropped connections are noticed and reconnections are quick.
const TESTBED_ENV: &[(&str, &str)] = &[
    ("PING_INTERVAL_MS", "1000"),
    ("PING_TIMEOUT_MS", "1000"),
    ("CONNECT_TIMEOUT_MS", "5000"),
    ("SHUTDOWN_TIMEOUT_MS", "1000"),
    ("DRAIN_DELAY_MS", "100"),
];

const SETUP_HINT: &str = "run `scripts/test` once (it installs the test clients: \
     `npm ci` in tests/js and `python3 -m pip install -r tests/python/requirements.txt`)";

#[test]
fn js_socket_io_client() {
    let js = crate_dir().join("tests").join("js");
    let client = js
        .join("node_modules")
        .join("socket.io-client")
        .join("package.json");
    assert!(
        client.is_file(),
        "socket.io-client is not installed ({} is missing): {SETUP_HINT}",
        client.display()
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        matches!(&node, Ok(out) if out.status.success()),
        "`node` is not runnable ({node:?}): install Node.js 20 or newer"
    );

    let testbed = spawn_testbed(TESTBED_ENV);
    run_client(
        &testbed,
        "node",
        &[
            "--test",
            "--test-concurrency=1",
            "--test-reporter=spec",
            // a directory: Node runs every *.test.mjs in it (not node_modules)
            ".",
        ],
        &js,
        Duration::from_secs(300),
    );
}

#[test]
fn python_socketio_client() {
    let python = crate_dir().join("tests").join("python");
    let check = Command::new("python3")
        .args([
            "-c",
            "import socketio, engineio, pytest, requests, websocket; print(socketio.__version__ if hasattr(socketio, '__version__') else 'ok')",
        ])
        .output();
    match &check {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "python-socketio (or pytest, requests, websocket-client) is not importable:\n{}\n{SETUP_HINT}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "`python3` is not runnable ({e}): install Python 3.9 or newer, then {SETUP_HINT}"
        ),
    }

    let testbed = spawn_testbed(TESTBED_ENV);
    run_client(
        &testbed,
        "python3",
        &[
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--durations=5",
            ".",
        ],
        &python,
        Duration::from_secs(300),
    );
}
