//! Redis over TLS, as an ACL user confined to the key prefix.
//!
//! Every test starts its own `redis-server` that speaks only TLS (a CA and a
//! server certificate made for the test with the `openssl` CLI), with the
//! `default` user behind a password and the user `rain` set up with the
//! README's recommended ACL (read from the README, so the two cannot drift).
//! Nodes connect with `rediss://rain:PASSWORD@127.0.0.1:PORT` and
//! `REDIS_CA_FILE`; a python-socketio client and a raw Socket.IO client on two
//! nodes exchange events through that Redis. The mistakes an operator can make
//! (wrong password, wrong CA, no CA, a prefix outside the ACL) stop the real
//! `rain-node` binary at start with a message saying which, and no output of a
//! node ever holds the password.

mod support;

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use support::cluster::{
    LineChild, NODE_TTL_MS, Node, RedisServer, SioClient, TestCerts, numsub, spawn_binary_node,
    spawn_nodes,
};
use support::{crate_dir, eventually, one_at_a_time};

/// The node user's password: never to be seen in any output of a node.
const PASSWORD: &str = "rain-Pa55-s3cret-7f3a";
/// The `default` user's password (the test's own connection).
const ADMIN_PASSWORD: &str = "admin-Pa55-s3cret-91c2";
/// The nodes' `KEY_PREFIX`, which the ACL confines them to.
const PREFIX: &str = "tenant7:";

/// The README's recommended ACL for user `rain`, with `PASSWORD` and `PREFIX`:
/// the words after `ACL SETUSER`.
fn readme_acl() -> Vec<String> {
    let readme = std::fs::read_to_string(crate_dir().join("README.md")).expect("read README.md");
    let line = readme
        .lines()
        .find(|line| line.starts_with("ACL SETUSER rain "))
        .expect("README.md has no `ACL SETUSER rain …` line");
    let words: Vec<String> = line
        .split_whitespace()
        .skip(2)
        .map(|word| {
            word.replace(">PASSWORD", &format!(">{PASSWORD}"))
                .replace("rain:*", &format!("{PREFIX}*"))
        })
        .collect();
    assert!(
        words.contains(&format!("~{PREFIX}*")) && words.contains(&format!("&{PREFIX}*")),
        "the README's ACL does not confine keys and channels to the prefix: {line}"
    );
    words
}

/// A TLS-only `redis-server` with the README's ACL for `rain`.
async fn tls_redis(certs: &TestCerts) -> RedisServer {
    let redis = tokio::task::block_in_place(|| RedisServer::start_tls(certs, ADMIN_PASSWORD));
    let mut admin = redis.conn().await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(readme_acl())
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER rain");
    redis
}

/// The URL a node is given.
fn node_url(redis: &RedisServer, password: &str) -> String {
    format!("rediss://rain:{password}@127.0.0.1:{}", redis.port())
}

/// The commands the ACL refused so far (`ACL LOG`), each entry as text.
async fn acl_refusals(admin: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let log: Vec<redis::Value> = redis::cmd("ACL")
        .arg("LOG")
        .query_async(admin)
        .await
        .expect("ACL LOG");
    log.iter().map(|entry| format!("{entry:?}")).collect()
}

async fn wait_subscribers(admin: &mut redis::aio::MultiplexedConnection, channel: &str) {
    eventually(
        Duration::from_secs(3),
        &format!("a subscriber on {channel}"),
        async || match numsub(admin, channel).await {
            0 => Err("none yet".to_string()),
            _ => Ok(()),
        },
    )
    .await;
}

const PY_CLIENT: &str = r#"
import json, os, sys, threading
import socketio

sio = socketio.Client(reconnection=False)
got = threading.Event()
box = {}

@sio.on("hello")
def hello(data):
    box["hello"] = data
    got.set()

sio.connect(os.environ["NODE_B"], wait_timeout=5)
rooms = sio.call("join", "py", timeout=5)
assert rooms == ["py"], rooms
print("ready", flush=True)
if not got.wait(8):
    print("no hello within 8 s", flush=True)
    sys.exit(1)
print("hello " + json.dumps(box["hello"]), flush=True)
ok = sio.call("to-room", {"room": "rust", "event": "from-py", "data": {"text": "über TLS"}}, timeout=5)
assert ok is True, ok
sio.disconnect()
"#;

/// Two nodes on a TLS Redis as the ACL user `rain`: a python-socketio client
/// on B and a client on A exchange room events through Redis; every
/// connection of the nodes (commands and pub/sub) is TLS and `rain`'s; every key the
/// nodes wrote is under their prefix; the ACL refused nothing, not even when A
/// purges a dead B with its Lua script; and neither node's output (at log
/// level trace) holds the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_share_a_tls_redis_as_an_acl_user_confined_to_their_prefix() {
    let check = Command::new("python3")
        .args(["-c", "import socketio, engineio, requests, websocket"])
        .output();
    assert!(
        matches!(&check, Ok(out) if out.status.success()),
        "python-socketio is not importable ({check:?}): run scripts/test, or \
         `python3 -m pip install -r tests/python/requirements.txt`"
    );
    let _one = one_at_a_time().await;
    let certs = TestCerts::generate();
    let redis = tls_redis(&certs).await;
    let mut admin = redis.conn().await;
    let url = node_url(&redis, PASSWORD);
    let ca = certs.path("ca.crt");
    let env = [
        ("REDIS_CA_FILE", ca.as_str()),
        ("KEY_PREFIX", PREFIX),
        ("LOG", "trace"),
    ];
    let nodes: Vec<Node> = tokio::task::block_in_place(|| spawn_nodes(&url, &["A", "B"], &env));
    for node in &nodes {
        eventually(
            Duration::from_secs(5),
            &format!("node {} ready", node.id),
            async || match node.status_of("/readyz").await {
                Some(200) => Ok(()),
                other => Err(format!("/readyz: {other:?}")),
            },
        )
        .await;
    }

    // A client on A and a python-socketio client on B, through Redis both ways.
    let mut a = SioClient::connect(nodes[0].url()).await;
    a.call("join", json!("rust")).await;
    wait_subscribers(&mut admin, &format!("{PREFIX}room:/:rust")).await;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", PY_CLIENT])
        .env("NODE_B", nodes[1].url())
        .current_dir(crate_dir().join("tests").join("python"));
    let mut py = LineChild::spawn(cmd);
    tokio::task::block_in_place(|| py.line("ready", Duration::from_secs(10)));
    wait_subscribers(&mut admin, &format!("{PREFIX}room:/:py")).await;
    let data = json!({ "from": "A", "over": "rediss" });
    let sent = a
        .call(
            "to-room",
            json!({ "room": "py", "event": "hello", "data": data }),
        )
        .await;
    assert_eq!(sent, json!(true));
    let hello = tokio::task::block_in_place(|| py.line("hello ", Duration::from_secs(5)));
    assert_eq!(serde_json::from_str::<Value>(&hello).unwrap(), data);
    let from_py = a.next("from-py", Duration::from_secs(5)).await;
    assert_eq!(from_py.first(), json!({ "text": "über TLS" }));
    tokio::task::block_in_place(|| py.wait_success(Duration::from_secs(5)));

    // Every connection is TLS (the server has no other port) and the nodes'
    // are all `rain`'s: per node two command connections and the pub/sub one.
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .unwrap();
    let rain: Vec<&str> = clients
        .lines()
        .filter(|line| line.contains(" user=rain "))
        .collect();
    let subscribers = rain.iter().filter(|line| !line.contains(" sub=0 ")).count();
    assert!(
        rain.len() >= 6 && subscribers == 2,
        "the nodes' connections:\n{clients}"
    );
    assert!(
        clients
            .lines()
            .all(|line| line.contains(" user=rain ") || line.contains(" user=default ")),
        "only the test's own connections are another user's:\n{clients}"
    );

    // What the nodes wrote is under their prefix, and the ACL refused nothing.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(
        keys.contains(&format!("{PREFIX}nodes")) && keys.contains(&format!("{PREFIX}node:A")),
        "the nodes' registrations are missing: {keys:?}"
    );
    let outside: Vec<&String> = keys.iter().filter(|k| !k.starts_with(PREFIX)).collect();
    assert!(outside.is_empty(), "keys outside {PREFIX}: {outside:?}");
    assert_eq!(acl_refusals(&mut admin).await, Vec::<String>::new());

    // A purges a dead B (purge_node.lua, under the same ACL).
    nodes[1].kill9();
    eventually(
        Duration::from_millis(NODE_TTL_MS + 5000),
        "A purges the dead B",
        async || {
            let score: Option<f64> = redis::cmd("ZSCORE")
                .arg(format!("{PREFIX}nodes"))
                .arg("B")
                .query_async(&mut admin)
                .await
                .unwrap();
            match score {
                None => Ok(()),
                Some(score) => Err(format!("B is still in {PREFIX}nodes ({score})")),
            }
        },
    )
    .await;
    assert_eq!(acl_refusals(&mut admin).await, Vec::<String>::new());

    for node in &nodes {
        let output = format!("{}{}", node.testbed().stderr(), node.testbed().stdout());
        assert!(
            output.contains("subscribed to Redis pub/sub") && output.contains("TRACE"),
            "node {} did not log at trace level:\n{}",
            node.id,
            node.stderr_tail(40)
        );
        assert!(
            !output.contains(PASSWORD),
            "node {}'s output holds the password",
            node.id
        );
    }
}

/// Runs the `rain-node` binary until it exits (at most 15 s): its status and
/// everything it wrote.
fn run_binary_to_exit(envs: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rain-node"));
    cmd.env_clear();
    for key in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    cmd.env("SERVER_HOST", "127.0.0.1")
        .env("SERVER_PORT", "0")
        .env(
            "SESSION_SECRET",
            "redis-tls-test-session-secret-of-32+bytes",
        )
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start rain-node");
    let readers: Vec<_> = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .into_iter()
    .map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    })
    .collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let output: String = readers.into_iter().map(|r| r.join().unwrap()).collect();
            panic!("rain-node did not exit within 15 s:\n{output}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = readers.into_iter().map(|r| r.join().unwrap()).collect();
    (status, output)
}

/// A mistake in a node's Redis settings, and what the node should say.
struct Mistake<'a> {
    what: &'a str,
    env: Vec<(&'a str, &'a str)>,
    says: &'a [&'a str],
}

/// A wrong password, a CA that did not sign the server's certificate, no CA
/// file (the system's roots do not hold the test CA), and a `KEY_PREFIX`
/// outside the ACL each stop `rain-node` at start, with exit code 1 and a
/// message naming the mistake; none of its output holds a password. The same
/// settings with none of those mistakes start a node that gets ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_stops_at_start_on_a_mistake_in_its_redis_settings() {
    let _one = one_at_a_time().await;
    let certs = TestCerts::generate();
    let redis = tls_redis(&certs).await;
    let ca = certs.path("ca.crt");
    let other_ca = certs.path("other-ca.crt");
    let right = node_url(&redis, PASSWORD);
    let wrong_password = "wrong-Pa55-s3cret-0b9e";
    let wrong = node_url(&redis, wrong_password);
    let tls_failed = "TLS with Redis at rediss://rain:***@127.0.0.1";
    let mistakes = [
        Mistake {
            what: "wrong password",
            env: vec![("REDIS_SERVER", &wrong), ("REDIS_CA_FILE", &ca)],
            says: &["refused the user name or password of REDIS_SERVER"],
        },
        Mistake {
            what: "another CA",
            env: vec![("REDIS_SERVER", &right), ("REDIS_CA_FILE", &other_ca)],
            // why, in rustls's words
            says: &[tls_failed, "UnknownIssuer"],
        },
        Mistake {
            what: "the system's roots",
            env: vec![("REDIS_SERVER", &right)],
            says: &[tls_failed],
        },
        Mistake {
            what: "a prefix outside the ACL",
            env: vec![
                ("REDIS_SERVER", &right),
                ("REDIS_CA_FILE", &ca),
                ("KEY_PREFIX", "rain:"),
            ],
            says: &["may not use keys under KEY_PREFIX \"rain:\"", "NOPERM"],
        },
    ];
    for Mistake {
        what,
        mut env,
        says,
    } in mistakes
    {
        env.extend([("NODE_ID", "n"), ("LOG", "trace")]);
        if !env.iter().any(|(k, _)| *k == "KEY_PREFIX") {
            env.push(("KEY_PREFIX", PREFIX));
        }
        let (status, output) = tokio::task::block_in_place(|| run_binary_to_exit(&env));
        assert_eq!(status.code(), Some(1), "{what}: {status}\n{output}");
        for message in says
            .iter()
            .chain(&["rain-node: cannot start the cluster backend: "])
        {
            assert!(
                output.contains(message),
                "{what}: the message should say `{message}`:\n{output}"
            );
        }
        assert!(
            !output.contains("listening on"),
            "{what}: it listened:\n{output}"
        );
        assert!(
            !output.contains(PASSWORD) && !output.contains(wrong_password),
            "{what}: the output holds a password:\n{output}"
        );
    }

    // Nothing wrong: it starts and gets ready.
    let node = tokio::task::block_in_place(|| {
        spawn_binary_node(
            env!("CARGO_BIN_EXE_rain-node"),
            &right,
            "n",
            &[
                ("REDIS_CA_FILE", &ca),
                ("KEY_PREFIX", PREFIX),
                ("LOG", "trace"),
            ],
        )
    });
    eventually(
        Duration::from_secs(5),
        "the node ready",
        async || match node.status_of("/readyz").await {
            Some(200) => Ok(()),
            other => Err(format!("/readyz: {other:?}")),
        },
    )
    .await;
    // The start line names the Redis it uses, redacted.
    let output = eventually(Duration::from_secs(3), "the start line", async || {
        let output = format!("{}{}", node.testbed().stderr(), node.testbed().stdout());
        match output.contains("node started") {
            true => Ok(output),
            false => Err(node.stderr_tail(40)),
        }
    })
    .await;
    assert!(output.contains("rediss://rain:***@127.0.0.1:"), "{output}");
    assert!(!output.contains(PASSWORD), "the output holds the password");
}
