//! Cluster integration tests: several `testbed` nodes sharing one Redis.
//!
//! Every test starts its own `redis-server` on a free port (never 6379) and three
//! nodes A, B, C pointed at it (`NODE_TTL_MS=2000`, `HEARTBEAT_MS=500`), then
//! drives them with the official socket.io-client (`tests/js_cluster`, Node's test
//! runner, with `NODE_A`/`NODE_B`/`NODE_C`/`REDIS_URL` set), python-socketio, or a
//! raw Socket.IO websocket client (`support::cluster::SioClient`) when the test
//! needs Rust-side checks in the middle (Redis keys, metrics, kills, restarts).
//!
//! Publishing is asynchronous with respect to a join: a node SUBSCRIBEs to a room's
//! channel after its first local member joined, so the tests wait until Redis
//! shows the subscription (`PUBSUB NUMSUB`) before publishing to a fresh room.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde_json::{Value, json};

use support::cluster::{
    HEARTBEAT_MS, LineChild, NODE_TTL_MS, Node, RedisServer, SioClient, numsub, run_with_nodes,
    spawn_nodes, wait_subscribers,
};
use support::{crate_dir, eventually, spawn_testbed};

const SETUP_HINT: &str = "run `scripts/test` once (it installs the test clients: \
     `npm ci` in tests/js and `python3 -m pip install -r tests/python/requirements.txt`)";

/// Starts a Redis and nodes A, B, C.
fn cluster() -> (RedisServer, Vec<Node>) {
    let redis = RedisServer::start();
    let nodes = tokio::task::block_in_place(|| spawn_nodes(&redis.url(), &["A", "B", "C"], &[]));
    (redis, nodes)
}

fn cluster_sync() -> (RedisServer, Vec<Node>) {
    let redis = RedisServer::start();
    let nodes = spawn_nodes(&redis.url(), &["A", "B", "C"], &[]);
    (redis, nodes)
}

type Listing = BTreeMap<String, (String, BTreeSet<String>)>;

/// `fetch-sockets` through `client`: sid → (node, rooms other than the sid itself).
async fn fetch_sockets(client: &mut SioClient, room: Option<&str>) -> Listing {
    let query = match room {
        Some(room) => json!({ "room": room }),
        None => json!({}),
    };
    let reply = client.call("fetch-sockets", query).await;
    let Value::Array(entries) = reply else {
        panic!("fetch-sockets did not ack an array: {reply}");
    };
    let mut listing = Listing::new();
    for entry in entries {
        let sid = entry["sid"]
            .as_str()
            .unwrap_or_else(|| panic!("fetch-sockets entry without sid: {entry}"))
            .to_string();
        let node = entry["node"]
            .as_str()
            .unwrap_or_else(|| panic!("fetch-sockets entry without node: {entry}"))
            .to_string();
        let rooms: BTreeSet<String> = entry["rooms"]
            .as_array()
            .unwrap_or_else(|| panic!("fetch-sockets entry without a rooms array: {entry}"))
            .iter()
            .filter_map(|r| r.as_str().map(str::to_string))
            .filter(|r| *r != sid)
            .collect();
        assert!(
            listing.insert(sid.clone(), (node, rooms)).is_none(),
            "fetch-sockets lists {sid} twice"
        );
    }
    listing
}

fn entry(client: &SioClient, node: &str, rooms: &[&str]) -> (String, (String, BTreeSet<String>)) {
    (
        client.sid.clone(),
        (
            node.to_string(),
            rooms.iter().map(|r| r.to_string()).collect(),
        ),
    )
}

/// The `sid` and `node` of a `whoami` answer (other fields are allowed).
fn sid_and_node(who: &Value) -> (Value, Value) {
    (who["sid"].clone(), who["node"].clone())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn smembers(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> BTreeSet<String> {
    conn.smembers(key)
        .await
        .unwrap_or_else(|e| panic!("SMEMBERS {key}: {e}"))
}

async fn exists(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    conn.exists(key)
        .await
        .unwrap_or_else(|e| panic!("EXISTS {key}: {e}"))
}

async fn hgetall(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
) -> HashMap<String, String> {
    conn.hgetall(key)
        .await
        .unwrap_or_else(|e| panic!("HGETALL {key}: {e}"))
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn check_js_setup() -> std::path::PathBuf {
    let client = crate_dir().join("tests/js/node_modules/socket.io-client/package.json");
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
    crate_dir().join("tests").join("js_cluster")
}

/// Runs one `tests/js_cluster/<file>` against a fresh Redis and nodes A, B, C.
fn run_js(file: &str) {
    let dir = check_js_setup();
    let (redis, nodes) = cluster_sync();
    run_with_nodes(
        &[&nodes[0], &nodes[1], &nodes[2]],
        &redis,
        "node",
        &[
            "--test",
            "--test-concurrency=1",
            "--test-reporter=spec",
            file,
        ],
        &dir,
        &[],
        Duration::from_secs(60),
    );
}

// ---------------------------------------------------------------------------
// 1, 3, 4: the official client across nodes
// ---------------------------------------------------------------------------

/// Broadcasts to the namespace, to a room, with except, emit-all, emit-to by id,
/// binary, ordering and namespace separation, with clients on A (websocket), B
/// (polling), C (polling upgraded to websocket).
#[test]
fn js_broadcasts_across_nodes() {
    run_js("broadcast.test.mjs");
}

/// remote-join / remote-leave / remote-disconnect of sockets on other nodes, by
/// sid and by room.
#[test]
fn js_remote_room_operations() {
    run_js("remote.test.mjs");
}

/// broadcast-with-ack collects every client's answer across nodes; a client that
/// never answers makes the result arrive after the timeout with the others'.
#[test]
fn js_broadcast_with_ack() {
    run_js("acks.test.mjs");
}

/// Session data written on one node is read on another, for the session a
/// node-issued token names (auth `sessionId`, or the `rain_session` cookie the
/// handshake sets); made-up and forged tokens get fresh sessions; session
/// values and sizes are capped while other clients carry on.
#[test]
fn js_sessions_are_shared_across_nodes() {
    run_js("session.test.mjs");
}

// ---------------------------------------------------------------------------
// 2: fetch-sockets and the socket registry in Redis
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fetch_sockets_lists_remote_sockets_and_forgets_disconnected_ones() {
    let (redis, nodes) = cluster();
    let mut a = SioClient::connect(nodes[0].url()).await;
    let mut b = SioClient::connect(nodes[1].url()).await;
    let b2 = SioClient::connect(nodes[1].url()).await;
    let mut c = SioClient::connect(nodes[2].url()).await;
    assert_eq!(b.call("join", json!("r2")).await, json!(["r2"]));
    c.call("join", json!("r2")).await;
    let rooms = c.call("join", json!("only-c")).await;
    assert_eq!(
        rooms.as_array().map(|r| r.len()),
        Some(2),
        "rooms of c: {rooms}"
    );

    for (client, node) in [(&mut a, "A"), (&mut b, "B"), (&mut c, "C")] {
        let who = client.call0("whoami").await;
        assert_eq!(
            sid_and_node(&who),
            (json!(client.sid), json!(node)),
            "whoami on node {node}: {who}"
        );
    }

    let everyone: Listing = [
        entry(&a, "A", &[]),
        entry(&b, "B", &["r2"]),
        entry(&b2, "B", &[]),
        entry(&c, "C", &["r2", "only-c"]),
    ]
    .into_iter()
    .collect();
    eventually(
        Duration::from_secs(1),
        "fetch-sockets from A lists every socket with its node and rooms",
        async || {
            let got = fetch_sockets(&mut a, None).await;
            if got == everyone {
                Ok(())
            } else {
                Err(format!("got {got:?}, want {everyone:?}"))
            }
        },
    )
    .await;
    let in_r2: Listing = [entry(&b, "B", &["r2"]), entry(&c, "C", &["r2", "only-c"])]
        .into_iter()
        .collect();
    assert_eq!(
        fetch_sockets(&mut a, Some("r2")).await,
        in_r2,
        "fetch-sockets {{room: r2}} from A"
    );
    assert_eq!(
        fetch_sockets(&mut b, Some("nobody-here")).await,
        Listing::new(),
        "fetch-sockets of an empty room"
    );

    // a polite disconnect (c) and an abrupt one (b2: TCP dropped) are both
    // forgotten within a second
    let (c_sid, b2_sid) = (c.sid.clone(), b2.sid.clone());
    c.close().await;
    b2.drop_abruptly();
    let mut conn = redis.conn().await;
    eventually(
        Duration::from_secs(1),
        "disconnected sockets leave Redis",
        async || {
            let mut left = Vec::new();
            for sid in [&c_sid, &b2_sid] {
                if exists(&mut conn, &format!("rain:conn:{sid}")).await {
                    left.push(format!("rain:conn:{sid} exists"));
                }
                if smembers(&mut conn, "rain:ns-sockets:/").await.contains(sid) {
                    left.push(format!("{sid} still in rain:ns-sockets:/"));
                }
            }
            if smembers(&mut conn, "rain:node-sockets:C")
                .await
                .contains(&c_sid)
            {
                left.push("c still in rain:node-sockets:C".into());
            }
            if smembers(&mut conn, "rain:node-sockets:B")
                .await
                .contains(&b2_sid)
            {
                left.push("b2 still in rain:node-sockets:B".into());
            }
            if smembers(&mut conn, "rain:room-sockets:/:r2")
                .await
                .contains(&c_sid)
            {
                left.push("c still in rain:room-sockets:/:r2".into());
            }
            if exists(&mut conn, "rain:room-sockets:/:only-c").await {
                left.push("rain:room-sockets:/:only-c exists".into());
            }
            if left.is_empty() {
                Ok(())
            } else {
                Err(left.join("; "))
            }
        },
    )
    .await;
    let rest: Listing = [entry(&a, "A", &[]), entry(&b, "B", &["r2"])]
        .into_iter()
        .collect();
    eventually(
        Duration::from_secs(1),
        "fetch-sockets forgets disconnected sockets",
        async || {
            let got = fetch_sockets(&mut a, None).await;
            if got == rest {
                Ok(())
            } else {
                Err(format!("got {got:?}, want {rest:?}"))
            }
        },
    )
    .await;
}

/// The keys of the contract: node registration, socket records and the indexes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_keys_follow_the_layout() {
    let (redis, nodes) = cluster();
    let a = SioClient::connect(nodes[0].url()).await;
    let mut b = SioClient::connect(nodes[1].url()).await;
    let b2 = SioClient::connect(nodes[1].url()).await;
    let mut c = SioClient::connect(nodes[2].url()).await;
    b.call("join", json!("lobby")).await;
    c.call("join", json!("lobby")).await;
    let mut conn = redis.conn().await;

    // rain:nodes: every node with a recent heartbeat
    eventually(
        Duration::from_secs(2),
        "rain:nodes lists A, B, C with recent heartbeats",
        async || {
            let scores: Vec<(String, f64)> = conn
                .zrange_withscores("rain:nodes", 0, -1)
                .await
                .map_err(|e| e.to_string())?;
            let ids: BTreeSet<String> = scores.iter().map(|(id, _)| id.clone()).collect();
            let now = now_ms() as f64;
            let stale: Vec<_> = scores
                .iter()
                .filter(|(_, at)| (now - at).abs() > 5000.0)
                .collect();
            if ids == set(&["A", "B", "C"]) && stale.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "ZRANGE rain:nodes WITHSCORES = {scores:?} (now {now})"
                ))
            }
        },
    )
    .await;

    // rain:node:{id}: a hash with a TTL; the address is the one the node listens on
    // (it may be written by the first heartbeat after the node started listening)
    for node in &nodes {
        let key = format!("rain:node:{}", node.id);
        let port = node.url().rsplit(':').next().unwrap().to_string();
        let hash = eventually(
            Duration::from_millis(2 * HEARTBEAT_MS + 500),
            &format!("{key} names the node's address"),
            async || {
                let hash = hgetall(&mut conn, &key).await;
                if hash.get("address").is_some_and(|a| a.contains(&port)) {
                    Ok(hash)
                } else {
                    Err(format!("HGETALL {key} = {hash:?} (port {port})"))
                }
            },
        )
        .await;
        for field in ["address", "started_at", "heartbeat", "sockets"] {
            assert!(hash.contains_key(field), "{key} has no `{field}`: {hash:?}");
        }
        let pttl: i64 = conn.pttl(&key).await.unwrap();
        assert!(pttl > 0, "{key} has no TTL (PTTL {pttl})");
    }
    // `sockets` counts the node's sockets (refreshed at least every heartbeat)
    eventually(
        Duration::from_millis(4 * HEARTBEAT_MS + 500),
        "rain:node:{id} `sockets` counts the node's sockets",
        async || {
            let mut wrong = Vec::new();
            for (id, want) in [("A", 1), ("B", 2), ("C", 1)] {
                let hash = hgetall(&mut conn, &format!("rain:node:{id}")).await;
                let got = hash.get("sockets").cloned().unwrap_or_default();
                if got.parse::<u64>().ok() != Some(want) {
                    wrong.push(format!("{id}: {got:?}, want {want}"));
                }
            }
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(wrong.join("; "))
            }
        },
    )
    .await;

    // rain:conn:{sid}
    eventually(
        Duration::from_secs(1),
        "rain:conn:{sid} records",
        async || {
            let hash = hgetall(&mut conn, &format!("rain:conn:{}", b.sid)).await;
            let rooms: Option<BTreeSet<String>> = hash
                .get("rooms")
                .and_then(|r| serde_json::from_str::<Vec<String>>(r).ok())
                .map(|r| r.into_iter().filter(|r| *r != b.sid).collect());
            let at = hash.get("connected_at").and_then(|t| t.parse::<u64>().ok());
            let fresh = at.is_some_and(|at| at.abs_diff(now_ms()) < 60_000);
            if hash.get("node").map(String::as_str) == Some("B")
                && hash.get("namespace").map(String::as_str) == Some("/")
                && rooms == Some(set(&["lobby"]))
                && fresh
            {
                Ok(())
            } else {
                Err(format!("HGETALL rain:conn:{} = {hash:?}", b.sid))
            }
        },
    )
    .await;
    let hash = hgetall(&mut conn, &format!("rain:conn:{}", a.sid)).await;
    assert_eq!(
        hash.get("node").map(String::as_str),
        Some("A"),
        "rain:conn:{} = {hash:?}",
        a.sid
    );

    // the indexes
    let all = set(&[&a.sid, &b.sid, &b2.sid, &c.sid]);
    eventually(Duration::from_secs(1), "the socket indexes", async || {
        let got = (
            smembers(&mut conn, "rain:node-sockets:A").await,
            smembers(&mut conn, "rain:node-sockets:B").await,
            smembers(&mut conn, "rain:node-sockets:C").await,
            smembers(&mut conn, "rain:ns-sockets:/").await,
            smembers(&mut conn, "rain:room-sockets:/:lobby").await,
        );
        let want = (
            set(&[&a.sid]),
            set(&[&b.sid, &b2.sid]),
            set(&[&c.sid]),
            all.clone(),
            set(&[&b.sid, &c.sid]),
        );
        if got == want {
            Ok(())
        } else {
            Err(format!(
                "(node-sockets:A, :B, :C, ns-sockets:/, room-sockets:/:lobby) = {got:?}, want {want:?}"
            ))
        }
    }).await;
    drop((a, b2));
}

// ---------------------------------------------------------------------------
// 5: a node only hears rooms it has members of
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_only_receive_rooms_they_have_members_of() {
    let (redis, nodes) = cluster();
    let (na, nb, nc) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut a = SioClient::connect(na.url()).await;
    let mut b1 = SioClient::connect(nb.url()).await;
    let mut b2 = SioClient::connect(nb.url()).await;
    let mut c = SioClient::connect(nc.url()).await;
    b1.call("join", json!("r")).await;
    b2.call("join", json!("r")).await;
    // c is in the namespace (so C hears namespace-wide traffic) but in no room
    wait_subscribers(&redis, "rain:room:/:r", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let room = [("kind", "room")];
    let (a0, b0, c0) = (na.metrics().await, nb.metrics().await, nc.metrics().await);
    for i in 0..20 {
        let ok = a
            .call("to-room", json!({ "room": "r", "event": "m", "data": i }))
            .await;
        assert_eq!(ok, json!(true), "to-room ack");
    }
    for client in [&mut b1, &mut b2] {
        let got: Vec<Value> = client
            .collect_n("m", 20, Duration::from_secs(3))
            .await
            .iter()
            .map(|e| e.first())
            .collect();
        let want: Vec<Value> = (0..20).map(|i| json!(i)).collect();
        assert_eq!(
            got, want,
            "a member of r on B gets the 20 messages, in order"
        );
    }
    c.expect_none("m", Duration::from_millis(300)).await;
    a.expect_none("m", Duration::from_millis(10)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (a1, b1m, c1) = (na.metrics().await, nb.metrics().await, nc.metrics().await);

    let published = a1.counter("rain_cluster_published_total", &room)
        - a0.counter("rain_cluster_published_total", &room);
    assert!(
        published >= 20.0,
        "A's rain_cluster_published_total{{kind=\"room\"}} grew by {published}, want >= 20\n{}",
        a1.text
    );
    let received_b = b1m.counter("rain_cluster_received_total", &room)
        - b0.counter("rain_cluster_received_total", &room);
    assert!(
        received_b >= 20.0,
        "B's rain_cluster_received_total{{kind=\"room\"}} grew by {received_b}, want >= 20\n{}",
        b1m.text
    );
    let received_c = c1.counter("rain_cluster_received_total", &room)
        - c0.counter("rain_cluster_received_total", &room);
    assert_eq!(
        received_c, 0.0,
        "C (no member of r) received room messages:\n{}",
        c1.text
    );
    let (subs_b, subs_c) = (
        b1m.gauge("rain_cluster_subscriptions"),
        c1.gauge("rain_cluster_subscriptions"),
    );
    assert!(
        subs_c < subs_b,
        "rain_cluster_subscriptions: C {subs_c} should be lower than B {subs_b}"
    );

    // the last local member leaving ends the interest
    b1.call("leave", json!("r")).await;
    let mut conn = redis.conn().await;
    assert_eq!(
        numsub(&mut conn, "rain:room:/:r").await,
        1,
        "B must stay subscribed to r while b2 is in it"
    );
    b2.call("leave", json!("r")).await;
    eventually(
        Duration::from_secs(1),
        "B unsubscribes from r when its last member leaves",
        async || {
            let n = numsub(&mut conn, "rain:room:/:r").await;
            if n == 0 {
                Ok(())
            } else {
                Err(format!("PUBSUB NUMSUB rain:room:/:r = {n}"))
            }
        },
    )
    .await;
    let subs_after = nb.metrics().await.gauge("rain_cluster_subscriptions");
    assert!(
        subs_after < subs_b,
        "B's rain_cluster_subscriptions did not drop after leaving r ({subs_b} → {subs_after})"
    );
}

/// Namespace broadcasts are published once and heard by every node with a socket
/// in the namespace, the publisher included (its own echo is counted as received);
/// an emit to one socket goes to its node's channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_what_crosses_redis() {
    let (redis, nodes) = cluster();
    let (na, nb, nc) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut a = SioClient::connect(na.url()).await;
    let mut b = SioClient::connect(nb.url()).await;
    let mut c = SioClient::connect(nc.url()).await;
    wait_subscribers(&redis, "rain:ns:/", 3).await;
    let mut conn = redis.conn().await;
    eventually(Duration::from_secs(1), "c's socket record", async || {
        if exists(&mut conn, &format!("rain:conn:{}", c.sid)).await {
            Ok(())
        } else {
            Err("missing".to_string())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let ns = [("kind", "namespace")];
    let node = [("kind", "node")];
    let before: Vec<_> = [na.metrics().await, nb.metrics().await, nc.metrics().await].into();
    for i in 0..10 {
        a.call("broadcast", json!({ "event": "n", "data": i }))
            .await;
    }
    assert_eq!(
        a.call(
            "emit-to",
            json!({ "sid": c.sid, "event": "direct", "data": "c" })
        )
        .await,
        json!(true)
    );
    assert_eq!(b.collect_n("n", 10, Duration::from_secs(3)).await.len(), 10);
    assert_eq!(c.collect_n("n", 10, Duration::from_secs(3)).await.len(), 10);
    assert_eq!(
        c.next("direct", Duration::from_secs(2)).await.first(),
        json!("c")
    );
    a.expect_none("n", Duration::from_millis(300)).await;
    let after: Vec<_> = [na.metrics().await, nb.metrics().await, nc.metrics().await].into();
    let delta = |i: usize, name: &str, labels: &[(&str, &str)]| {
        after[i].counter(name, labels) - before[i].counter(name, labels)
    };

    let published = delta(0, "rain_cluster_published_total", &ns);
    assert!(
        published == 10.0,
        "A published {published} namespace messages for 10 broadcasts (one PUBLISH each)\n{}",
        after[0].text
    );
    for (i, id) in [(0, "A (its own echo)"), (1, "B"), (2, "C")] {
        let received = delta(i, "rain_cluster_received_total", &ns);
        assert!(
            received >= 10.0,
            "{id} received {received} namespace messages, want >= 10\n{}",
            after[i].text
        );
    }
    let published_node = delta(0, "rain_cluster_published_total", &node);
    assert!(
        published_node >= 1.0,
        "emit-to a socket on C: A's rain_cluster_published_total{{kind=\"node\"}} grew by {published_node}\n{}",
        after[0].text
    );
    let received_node = delta(2, "rain_cluster_received_total", &node);
    assert!(
        received_node >= 1.0,
        "emit-to a socket on C: C's rain_cluster_received_total{{kind=\"node\"}} grew by {received_node}\n{}",
        after[2].text
    );
    let received_node_b = delta(1, "rain_cluster_received_total", &node);
    assert_eq!(
        received_node_b, 0.0,
        "B heard a message addressed to C's node\n{}",
        after[1].text
    );
}

// ---------------------------------------------------------------------------
// 6: a node dies
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_node_is_forgotten_and_the_others_keep_serving() {
    let (redis, nodes) = cluster();
    let (na, nb, nc) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut a = SioClient::connect(na.url()).await;
    let mut b = SioClient::connect(nb.url()).await;
    let mut c1 = SioClient::connect(nc.url()).await;
    let c2 = SioClient::connect(nc.url()).await;
    c1.call("join", json!("dead-room")).await;
    let (c1_sid, c2_sid) = (c1.sid.clone(), c2.sid.clone());
    eventually(
        Duration::from_secs(1),
        "fetch-sockets from A lists all four",
        async || {
            let got = fetch_sockets(&mut a, None).await;
            if got.len() == 4 {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await;
    let mut conn = redis.conn().await;
    assert!(
        exists(&mut conn, "rain:node:C").await,
        "rain:node:C before the kill"
    );

    nc.kill9();
    let killed = Instant::now();
    let deadline = Duration::from_millis(NODE_TTL_MS + 2000);
    eventually(
        deadline,
        "everything of the killed node C is gone from Redis",
        async || {
            let mut left = Vec::new();
            if exists(&mut conn, "rain:node:C").await {
                left.push("rain:node:C exists".to_string());
            }
            let score: Option<f64> = conn
                .zscore("rain:nodes", "C")
                .await
                .map_err(|e| e.to_string())?;
            if score.is_some() {
                left.push("C is in rain:nodes".into());
            }
            for sid in [&c1_sid, &c2_sid] {
                if exists(&mut conn, &format!("rain:conn:{sid}")).await {
                    left.push(format!("rain:conn:{sid} exists"));
                }
                if smembers(&mut conn, "rain:ns-sockets:/").await.contains(sid) {
                    left.push(format!("{sid} is in rain:ns-sockets:/"));
                }
            }
            if exists(&mut conn, "rain:node-sockets:C").await {
                left.push("rain:node-sockets:C exists".into());
            }
            if smembers(&mut conn, "rain:room-sockets:/:dead-room")
                .await
                .contains(&c1_sid)
            {
                left.push("c1 is in rain:room-sockets:/:dead-room".into());
            }
            if left.is_empty() {
                Ok(())
            } else {
                Err(left.join("; "))
            }
        },
    )
    .await;
    let remaining = deadline.saturating_sub(killed.elapsed()) + Duration::from_millis(100);
    let want: Listing = [entry(&a, "A", &[]), entry(&b, "B", &[])]
        .into_iter()
        .collect();
    eventually(
        remaining,
        "fetch-sockets from A no longer lists C's sockets",
        async || {
            let got = fetch_sockets(&mut a, None).await;
            if got == want {
                Ok(())
            } else {
                Err(format!("got {got:?}, want {want:?}"))
            }
        },
    )
    .await;
    eprintln!("C forgotten {:?} after the kill", killed.elapsed());

    // A and B keep serving each other
    assert_eq!(
        a.call("broadcast", json!({ "event": "still", "data": "here" }))
            .await,
        json!(true)
    );
    let got = b.next("still", Duration::from_secs(2)).await;
    assert_eq!(got.first(), json!("here"));
    for node in [na, nb] {
        assert_eq!(
            node.status_of("/readyz").await,
            Some(200),
            "{} /readyz",
            node.id
        );
    }
    let mut b_late = SioClient::connect(nb.url()).await;
    assert_eq!(b_late.call0("whoami").await["node"], json!("B"));
    drop(c2);
}

// ---------------------------------------------------------------------------
// 7: Redis goes away and comes back
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_survive_a_redis_restart() {
    // One client sends 2000 broadcasts as fast as it can: far past the
    // default EVENT_RATE, which this test is not about.
    let mut redis = RedisServer::start();
    let nodes = tokio::task::block_in_place(|| {
        spawn_nodes(
            &redis.url(),
            &["A", "B", "C"],
            &[("EVENT_RATE", "1000000"), ("EVENT_BURST", "1000000")],
        )
    });
    let (na, nb) = (&nodes[0], &nodes[1]);
    let mut a1 = SioClient::connect(na.url()).await;
    let mut a2 = SioClient::connect(na.url()).await;
    let mut b = SioClient::connect(nb.url()).await;
    a2.call("join", json!("same")).await;
    b.call("join", json!("cross")).await;
    wait_subscribers(&redis, "rain:room:/:cross", 1).await;
    let everyone: Listing = [
        entry(&a1, "A", &[]),
        entry(&a2, "A", &["same"]),
        entry(&b, "B", &["cross"]),
    ]
    .into_iter()
    .collect();
    eventually(
        Duration::from_secs(1),
        "fetch-sockets lists the three clients",
        async || {
            let got = fetch_sockets(&mut a1, None).await;
            if got == everyone {
                Ok(())
            } else {
                Err(format!("got {got:?}"))
            }
        },
    )
    .await;
    // cross-node works before the outage
    a1.call(
        "to-room",
        json!({ "room": "cross", "event": "before", "data": 1 }),
    )
    .await;
    b.next("before", Duration::from_secs(2)).await;

    tokio::task::block_in_place(|| redis.stop());
    let stopped = Instant::now();
    eventually(
        Duration::from_secs(3),
        "every node's /readyz is 503 while Redis is down",
        async || {
            let mut wrong = Vec::new();
            for node in &nodes {
                let ready = node.status_of("/readyz").await;
                let healthy = node.status_of("/healthz").await;
                if ready != Some(503) || healthy != Some(200) {
                    wrong.push(format!(
                        "{}: /readyz {ready:?}, /healthz {healthy:?}",
                        node.id
                    ));
                }
            }
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(wrong.join("; "))
            }
        },
    )
    .await;
    eprintln!("not ready {:?} after Redis stopped", stopped.elapsed());

    // a node still serves its own sockets
    let ok = a1
        .call(
            "to-room",
            json!({ "room": "same", "event": "local", "data": "x" }),
        )
        .await;
    assert_eq!(ok, json!(true));
    assert_eq!(
        a2.next("local", Duration::from_secs(1)).await.first(),
        json!("x")
    );

    // broadcasts that would go to Redis do not pile up in memory
    let rss_before = na.rss_kib();
    let big = "x".repeat(20_000);
    // in batches, each followed by an ack round trip: 40 MB in one burst would
    // hold the client's pongs back longer than the 1 s ping timeout
    for batch in 0..20 {
        for i in 0..100 {
            a1.emit(
                "to-room",
                vec![json!({ "room": "cross", "event": "while-down", "data": { "i": batch * 100 + i, "pad": big } })],
            );
        }
        let echoed = a1
            .call_timeout("echo", vec![json!(batch)], Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the node stopped answering after {} broadcasts while Redis is down: {e}",
                    batch * 100 + 100
                )
            });
        assert_eq!(echoed, vec![json!(batch)]);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = na.rss_kib();
    let growth_mib = (rss_after as f64 - rss_before as f64) / 1024.0;
    eprintln!(
        "A's RSS {rss_before} KiB → {rss_after} KiB ({growth_mib:.1} MiB) over 2000 x 20 KB broadcasts while Redis was down"
    );
    assert!(
        growth_mib <= 20.0,
        "A's RSS grew by {growth_mib:.1} MiB ({rss_before} → {rss_after} KiB) over 2000 broadcasts of 20 KB while Redis was down: they are being kept"
    );

    tokio::task::block_in_place(|| redis.restart());
    let restarted = Instant::now();
    let within = Duration::from_secs(5);
    // cross-node delivery comes back by itself
    let mut n = 0;
    eventually(
        within,
        "cross-node to-room (A → B) works again after Redis came back",
        async || {
            n += 1;
            let _ = a1
                .call_timeout(
                    "to-room",
                    vec![json!({ "room": "cross", "event": "after", "data": n })],
                    Duration::from_millis(500),
                )
                .await;
            match b.try_next("after", Duration::from_millis(200)).await {
                Some(_) => Ok(()),
                None => Err(format!("{n} tries")),
            }
        },
    )
    .await;
    eprintln!(
        "cross-node delivery back {:?} after the restart",
        restarted.elapsed()
    );
    let left = within.saturating_sub(restarted.elapsed()) + Duration::from_millis(100);
    eventually(left, "every /readyz is 200 again", async || {
        let mut wrong = Vec::new();
        for node in &nodes {
            let ready = node.status_of("/readyz").await;
            if ready != Some(200) {
                wrong.push(format!("{}: {ready:?}", node.id));
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join("; "))
        }
    })
    .await;
    let left = within.saturating_sub(restarted.elapsed()) + Duration::from_millis(100);
    eventually(
        left,
        "fetch-sockets lists the clients again (state re-registered)",
        async || {
            let got = fetch_sockets(&mut a1, None).await;
            if got == everyone {
                Ok(())
            } else {
                Err(format!("got {got:?}, want {everyone:?}"))
            }
        },
    )
    .await;
    let left = within.saturating_sub(restarted.elapsed()) + Duration::from_millis(100);
    let mut conn = redis.conn().await;
    eventually(left, "the nodes registered again", async || {
        let ids: BTreeSet<String> = conn
            .zrange("rain:nodes", 0, -1)
            .await
            .map_err(|e| e.to_string())?;
        let node_a = exists(&mut conn, "rain:node:A").await;
        if ids == set(&["A", "B", "C"]) && node_a {
            Ok(())
        } else {
            Err(format!(
                "rain:nodes = {ids:?}, rain:node:A exists: {node_a}"
            ))
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// 8: python-socketio on one node, a raw client on another
// ---------------------------------------------------------------------------

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
print("ready " + sio.get_sid(), flush=True)
if not got.wait(8):
    print("no hello within 8 s", flush=True)
    sys.exit(1)
print("hello " + json.dumps(box["hello"]), flush=True)
ok = sio.call("to-room", {"room": "rust", "event": "from-py", "data": {"n": 42, "text": "héllo wörld"}}, timeout=5)
assert ok is True, ok
who = sio.call("whoami", timeout=5)
print("whoami " + json.dumps(who), flush=True)
sio.disconnect()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_client_across_nodes() {
    let check = Command::new("python3")
        .args(["-c", "import socketio, engineio, requests, websocket"])
        .output();
    assert!(
        matches!(&check, Ok(out) if out.status.success()),
        "python-socketio is not importable ({check:?}): {SETUP_HINT}"
    );
    let (redis, nodes) = cluster();
    let mut a = SioClient::connect(nodes[0].url()).await;
    a.call("join", json!("rust")).await;
    wait_subscribers(&redis, "rain:room:/:rust", 1).await;

    let mut cmd = Command::new("python3");
    cmd.args(["-c", PY_CLIENT])
        .env("NODE_B", nodes[1].url())
        .current_dir(crate_dir().join("tests").join("python"));
    let mut py = LineChild::spawn(cmd);
    let py_sid = tokio::task::block_in_place(|| py.line("ready ", Duration::from_secs(10)));
    wait_subscribers(&redis, "rain:room:/:py", 1).await;

    let data = json!({ "from": "A", "list": [1, 2.5, null, "ünï"], "nested": { "ok": true } });
    let ok = a
        .call(
            "to-room",
            json!({ "room": "py", "event": "hello", "data": data }),
        )
        .await;
    assert_eq!(ok, json!(true));
    let hello = tokio::task::block_in_place(|| py.line("hello ", Duration::from_secs(5)));
    assert_eq!(
        serde_json::from_str::<Value>(&hello).unwrap(),
        data,
        "what the python client on B got"
    );
    let from_py = a.next("from-py", Duration::from_secs(5)).await;
    assert_eq!(from_py.first(), json!({ "n": 42, "text": "héllo wörld" }));
    let who = tokio::task::block_in_place(|| py.line("whoami ", Duration::from_secs(5)));
    let who: Value = serde_json::from_str(&who).unwrap();
    assert_eq!(
        sid_and_node(&who),
        (json!(py_sid), json!("B")),
        "whoami of the python client: {who}"
    );
    tokio::task::block_in_place(|| py.wait_success(Duration::from_secs(5)));
}

// ---------------------------------------------------------------------------
// without Redis
// ---------------------------------------------------------------------------

/// The embedded backend (no `REDIS_SERVER`) is a one-node cluster: the cluster
/// events work on the node's own sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_node_serves_the_cluster_events_alone() {
    let testbed = tokio::task::block_in_place(|| spawn_testbed(&[("NODE_ID", "solo")]));
    let mut one = SioClient::connect(testbed.url()).await;
    let mut two = SioClient::connect(testbed.url()).await;
    let who = one.call0("whoami").await;
    assert_eq!(
        sid_and_node(&who),
        (json!(one.sid), json!("solo")),
        "whoami: {who}"
    );
    two.call("join", json!("room")).await;
    let listing = fetch_sockets(&mut one, None).await;
    let want: Listing = [entry(&one, "solo", &[]), entry(&two, "solo", &["room"])]
        .into_iter()
        .collect();
    assert_eq!(listing, want);
    assert_eq!(
        one.call("emit-all", json!({ "event": "all", "data": 7 }))
            .await,
        json!(true)
    );
    assert_eq!(
        one.next("all", Duration::from_secs(1)).await.first(),
        json!(7)
    );
    assert_eq!(
        two.next("all", Duration::from_secs(1)).await.first(),
        json!(7)
    );
    assert_eq!(
        support::cluster::http_status(&format!("{}/readyz", testbed.url())).await,
        Some(200)
    );
}

// ---------------------------------------------------------------------------
// Clean shutdown: a node leaves the registry at once, without waiting for its TTL
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_stopped_with_sigterm_deregisters_at_once() {
    let redis = RedisServer::start();
    // A TTL far longer than the test: only the node's own deregistration can
    // remove it in time.
    let long_ttl = [("NODE_TTL_MS", "60000")];
    let nodes = spawn_nodes(&redis.url(), &["A", "C"], &long_ttl);
    let client = SioClient::connect(nodes[1].url()).await;
    let mut conn = redis.conn().await;
    eventually(
        Duration::from_secs(3),
        "C's socket registered",
        async || {
            let sids: Vec<String> = conn
                .smembers("rain:node-sockets:C")
                .await
                .map_err(|e| e.to_string())?;
            if sids.len() == 1 {
                Ok(())
            } else {
                Err(format!("sockets of C: {sids:?}"))
            }
        },
    )
    .await;

    let stopped = Instant::now();
    nodes[1].testbed().signal("-TERM");
    eventually(Duration::from_secs(3), "C deregistered", async || {
        let e = |e: redis::RedisError| e.to_string();
        let node: bool = conn.exists("rain:node:C").await.map_err(e)?;
        let sockets: bool = conn.exists("rain:node-sockets:C").await.map_err(e)?;
        let listed: Option<f64> = conn.zscore("rain:nodes", "C").await.map_err(e)?;
        if !node && !sockets && listed.is_none() {
            Ok(())
        } else {
            Err(format!(
                "node key {node}, sockets key {sockets}, in nodes {listed:?}"
            ))
        }
    })
    .await;
    assert!(stopped.elapsed() < Duration::from_secs(3));
    let still_there: bool = conn.exists("rain:node:A").await.unwrap();
    assert!(still_there, "A is untouched");
    drop(client);
}
