//! Redis state that heals itself: after ordinary faults, what Redis holds about
//! sockets, rooms and nodes becomes exact again by itself.
//!
//! Every test starts its own `redis-server` on a free port (never 6379) and
//! `testbed` nodes pointed at it (`NODE_TTL_MS=2000`, `HEARTBEAT_MS=500`), drives
//! them with the raw Socket.IO client of `tests/support`, breaks something (the
//! node's Redis connections killed, the node stopped with SIGSTOP, killed and
//! restarted under the same id, a dead node with 10,000 sockets), and then
//! asserts on what Redis holds.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde_json::json;

use support::cluster::{NODE_TTL_MS, RedisServer, SioClient, spawn_node, spawn_nodes};
use support::{eventually, one_at_a_time};

/// What Redis says of one socket: its node and its rooms.
type Placement = (String, BTreeSet<String>);

/// Every socket Redis lists in namespace `/`, from `ns-sockets` and the
/// `conn:{sid}` hashes, with the rooms whose sets hold it. A socket listed
/// without a record, or a record whose rooms disagree with the room sets,
/// is reported as an error.
async fn placements(
    conn: &mut MultiplexedConnection,
) -> Result<BTreeMap<String, Placement>, String> {
    let sids: BTreeSet<String> = conn
        .smembers("rain:ns-sockets:/")
        .await
        .map_err(|e| e.to_string())?;
    let mut found = BTreeMap::new();
    for sid in sids {
        let hash: HashMap<String, String> = conn
            .hgetall(format!("rain:conn:{sid}"))
            .await
            .map_err(|e| e.to_string())?;
        let node = hash
            .get("node")
            .cloned()
            .ok_or_else(|| format!("{sid} is listed but has no record with a node: {hash:?}"))?;
        let rooms: BTreeSet<String> =
            serde_json::from_str(hash.get("rooms").map_or("[]", String::as_str))
                .map_err(|e| e.to_string())?;
        for room in &rooms {
            let member: bool = conn
                .sismember(format!("rain:room-sockets:/:{room}"), &sid)
                .await
                .map_err(|e| e.to_string())?;
            if !member {
                return Err(format!("{sid} names room {room} but is not in its set"));
            }
        }
        found.insert(sid, (node, rooms));
    }
    Ok(found)
}

/// The members of a room's set.
async fn room(conn: &mut MultiplexedConnection, name: &str) -> BTreeSet<String> {
    conn.smembers(format!("rain:room-sockets:/:{name}"))
        .await
        .unwrap()
}

fn placed(node: &str, rooms: &[&str]) -> Placement {
    (
        node.to_string(),
        rooms.iter().map(|room| room.to_string()).collect(),
    )
}

/// Waits until Redis holds exactly `want` for namespace `/`, `node-sockets`
/// of each node included.
async fn wait_exact(
    redis: &RedisServer,
    within: Duration,
    what: &str,
    want: BTreeMap<String, Placement>,
) {
    let mut conn = redis.conn().await;
    eventually(within, what, async || {
        let got = placements(&mut conn).await?;
        if got != want {
            return Err(format!("got {got:?}, want {want:?}"));
        }
        let nodes: BTreeSet<&String> = want.values().map(|(node, _)| node).collect();
        for node in nodes {
            let listed: BTreeSet<String> = conn
                .smembers(format!("rain:node-sockets:{node}"))
                .await
                .map_err(|e| e.to_string())?;
            let held: BTreeSet<String> = want
                .iter()
                .filter(|(_, (n, _))| n == node)
                .map(|(sid, _)| sid.clone())
                .collect();
            if listed != held {
                return Err(format!("node-sockets:{node} = {listed:?}, want {held:?}"));
            }
        }
        Ok(())
    })
    .await;
}

/// Writes lost while the node's connections to Redis are killed over and over
/// (Redis keeps its data) are repaired: joins, leaves, a disconnect and a new
/// connection made meanwhile all show in Redis exactly, within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_lost_while_redis_connections_die_are_repaired() {
    let _serial = one_at_a_time().await;
    let redis = RedisServer::start();
    let nodes = tokio::task::block_in_place(|| spawn_nodes(&redis.url(), &["A", "B"], &[]));
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut c1 = SioClient::connect(a.url()).await;
    let c2 = SioClient::connect(a.url()).await;
    let c3 = SioClient::connect(b.url()).await;
    assert_eq!(c1.call("join", json!("r1")).await, json!(["r1"]));
    let before = BTreeMap::from([
        (c1.sid.clone(), placed("A", &["r1"])),
        (c2.sid.clone(), placed("A", &[])),
        (c3.sid.clone(), placed("B", &[])),
    ]);
    wait_exact(&redis, Duration::from_secs(3), "the state before", before).await;

    // Kill every command connection (pub/sub ones stay) for 1.5 s, while
    // things change on both nodes.
    let killer = {
        let mut conn = redis.conn().await;
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_millis(1500);
            let mut kills = 0u64;
            while Instant::now() < until {
                let killed: u64 = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("normal")
                    .query_async(&mut conn)
                    .await
                    .unwrap_or(0);
                kills += killed;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            kills
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    c2.emit("join", vec![json!("r2")]);
    c1.emit("leave", vec![json!("r1")]);
    c3.drop_abruptly();
    let c4 = SioClient::connect(a.url()).await;
    let c5 = SioClient::connect(b.url()).await;
    c2.emit("join", vec![json!("r3")]);
    let kills = killer.await.unwrap();
    assert!(kills > 0, "no connection was killed");

    let after = BTreeMap::from([
        (c1.sid.clone(), placed("A", &[])),
        (c2.sid.clone(), placed("A", &["r2", "r3"])),
        (c4.sid.clone(), placed("A", &[])),
        (c5.sid.clone(), placed("B", &[])),
    ]);
    wait_exact(
        &redis,
        Duration::from_secs(8),
        "the state after the faults",
        after,
    )
    .await;
    let mut conn = redis.conn().await;
    assert!(room(&mut conn, "r1").await.is_empty());
    assert_eq!(
        room(&mut conn, "r2").await,
        BTreeSet::from([c2.sid.clone()])
    );
    // fetch-sockets, as a handler sees it, agrees.
    let fetched = c1.call("fetch-sockets", json!({})).await;
    let fetched: BTreeSet<String> = fetched
        .as_array()
        .expect("fetch-sockets answers a list")
        .iter()
        .map(|socket| socket["sid"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        fetched,
        BTreeSet::from([
            c1.sid.clone(),
            c2.sid.clone(),
            c4.sid.clone(),
            c5.sid.clone()
        ])
    );
    eprintln!("{kills} connections killed");
}

/// A node stopped (SIGSTOP) past its TTL is purged by the others; once it runs
/// again it registers every socket and room it still holds, and nothing it no
/// longer holds comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_is_purged_then_comes_back_whole() {
    let _serial = one_at_a_time().await;
    let redis = RedisServer::start();
    let nodes = tokio::task::block_in_place(|| spawn_nodes(&redis.url(), &["A", "B"], &[]));
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut c1 = SioClient::connect(a.url()).await;
    let c2 = SioClient::connect(a.url()).await;
    let mut c3 = SioClient::connect(b.url()).await;
    assert_eq!(c1.call("join", json!("r")).await, json!(["r"]));
    let mut conn = redis.conn().await;

    a.testbed().signal("-STOP");
    let stopped = Instant::now();
    // c2 leaves while A cannot notice; A learns of it when it runs again.
    c2.close().await;
    eventually(
        Duration::from_millis(NODE_TTL_MS + 4000),
        "B purged the stopped node A",
        async || {
            let record: bool = conn
                .exists("rain:node:A")
                .await
                .map_err(|e| e.to_string())?;
            let sockets: bool = conn
                .exists("rain:node-sockets:A")
                .await
                .map_err(|e| e.to_string())?;
            let c1_record: bool = conn
                .exists(format!("rain:conn:{}", c1.sid))
                .await
                .map_err(|e| e.to_string())?;
            if record || sockets || c1_record {
                Err(format!(
                    "node:A {record}, node-sockets:A {sockets}, conn:c1 {c1_record}"
                ))
            } else {
                Ok(())
            }
        },
    )
    .await;
    eprintln!("A purged {:?} after SIGSTOP", stopped.elapsed());

    a.testbed().signal("-CONT");
    let want = BTreeMap::from([
        (c1.sid.clone(), placed("A", &["r"])),
        (c3.sid.clone(), placed("B", &[])),
    ]);
    wait_exact(
        &redis,
        Duration::from_secs(5),
        "A's state is back, and only it",
        want,
    )
    .await;
    assert!(conn.exists::<_, bool>("rain:node:A").await.unwrap());
    // And it works: a broadcast from B reaches A's member of r.
    eventually(
        Duration::from_secs(3),
        "B's broadcast to r reaches c1 on A",
        async || {
            c3.call(
                "to-room",
                json!({ "room": "r", "event": "hello", "data": 1 }),
            )
            .await;
            match c1.try_next("hello", Duration::from_millis(300)).await {
                Some(_) => Ok(()),
                None => Err("nothing yet".into()),
            }
        },
    )
    .await;
}

/// libfaketime, which makes a process see a shifted wall clock.
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Liveness is judged on Redis's clock: a node whose wall clock runs 30 s
/// ahead of another's neither purges it nor is purged, and the other node's
/// sockets stay listed the whole time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_clock_ahead_purges_no_one() {
    let _serial = one_at_a_time().await;
    assert!(
        std::path::Path::new(FAKETIME).exists(),
        "{FAKETIME} is missing: install Debian's faketime package (.ci/run does)"
    );
    let redis = RedisServer::start();
    let a = tokio::task::block_in_place(|| spawn_node(&redis.url(), "A", &[]));
    let mut c1 = SioClient::connect(a.url()).await;
    assert_eq!(c1.call("join", json!("r")).await, json!(["r"]));
    let ahead = tokio::task::block_in_place(|| {
        spawn_node(
            &redis.url(),
            "B",
            &[
                ("LD_PRELOAD", FAKETIME),
                ("FAKETIME", "+30s"),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ],
        )
    });
    let c2 = SioClient::connect(ahead.url()).await;
    let want = BTreeMap::from([
        (c1.sid.clone(), placed("A", &["r"])),
        (c2.sid.clone(), placed("B", &[])),
    ]);
    // Several TTLs: every beat of B would have purged A under a wall-clock rule.
    let until = Instant::now() + Duration::from_millis(2 * NODE_TTL_MS);
    let mut conn = redis.conn().await;
    while Instant::now() < until {
        let got = placements(&mut conn).await.unwrap();
        assert_eq!(got, want, "a node's sockets went missing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for node in ["A", "B"] {
        let record: bool = conn.exists(format!("rain:node:{node}")).await.unwrap();
        assert!(record, "node:{node} is gone");
    }
    assert!(
        !ahead.stderr_tail(200).contains("purged a node"),
        "{}",
        ahead.stderr_tail(20)
    );
}

/// A node killed and restarted under the same `NODE_ID` within its TTL does not
/// inherit the sockets of the process that died.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_under_the_same_id_inherits_nothing() {
    let _serial = one_at_a_time().await;
    let redis = RedisServer::start();
    // A long TTL: the dead process's record is still there when the new one starts.
    let long_ttl = [("NODE_TTL_MS", "60000")];
    let first = tokio::task::block_in_place(|| spawn_node(&redis.url(), "A", &long_ttl));
    let mut old = SioClient::connect(first.url()).await;
    assert_eq!(old.call("join", json!("r")).await, json!(["r"]));
    let mut conn = redis.conn().await;
    let old_epoch: Option<String> = conn.hget("rain:node:A", "epoch").await.unwrap();
    first.kill9();
    drop(old);

    let second = tokio::task::block_in_place(|| spawn_node(&redis.url(), "A", &long_ttl));
    let new = SioClient::connect(second.url()).await;
    let want = BTreeMap::from([(new.sid.clone(), placed("A", &[]))]);
    wait_exact(
        &redis,
        Duration::from_secs(5),
        "only the new process's socket is A's",
        want,
    )
    .await;
    assert!(room(&mut conn, "r").await.is_empty());
    let new_epoch: Option<String> = conn.hget("rain:node:A", "epoch").await.unwrap();
    assert!(
        new_epoch.is_some() && new_epoch != old_epoch,
        "{old_epoch:?} → {new_epoch:?}"
    );
    let schema: String = conn.hget("rain:node:A", "schema").await.unwrap();
    assert_eq!(schema, "3");
}

/// Purging a dead node that held 10,000 sockets in 300 rooms leaves nothing of
/// it, and takes many short script calls rather than one long one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_dead_node_is_purged_in_batches() {
    let _serial = one_at_a_time().await;
    const SOCKETS: usize = 10_000;
    const ROOMS: usize = 300;
    const BATCH: usize = 500;
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    // A node Z that died holding 10,000 sockets: its record expired, the rest stays.
    let sids: Vec<String> = (0..SOCKETS).map(|i| format!("z-socket-{i}")).collect();
    for chunk in sids.chunks(1000) {
        let mut pipe = redis::pipe();
        for sid in chunk {
            let index: usize = sid.rsplit('-').next().unwrap().parse().unwrap();
            let room = format!("room-{}", index % ROOMS);
            pipe.hset_multiple(
                format!("rain:conn:{sid}"),
                &[
                    ("node", "Z".to_string()),
                    ("namespace", "/".to_string()),
                    ("session", "s".to_string()),
                    ("rooms", json!([room]).to_string()),
                    ("connected_at", "1".to_string()),
                ],
            )
            .ignore()
            .sadd("rain:node-sockets:Z", sid)
            .ignore()
            .sadd("rain:ns-sockets:/", sid)
            .ignore()
            .sadd(format!("rain:room-sockets:/:{room}"), sid)
            .ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
    let () = redis::pipe()
        .hset("rain:node-epochs", "Z", "1-deadbeef")
        .ignore()
        .zadd("rain:nodes", "Z", 1)
        .ignore()
        .sadd("rain:node-services:Z", "echo@1.0")
        .ignore()
        .sadd("rain:service:echo@1.0:nodes", "Z")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    // Every command goes to the slow log, so its worst entry is the longest.
    let () = redis::pipe()
        .cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(0)
        .arg("slowlog-max-len")
        .arg(10_000)
        .ignore()
        .cmd("SLOWLOG")
        .arg("RESET")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();

    let batch = BATCH.to_string();
    let reaper = tokio::task::block_in_place(|| {
        spawn_node(&redis.url(), "A", &[("PURGE_BATCH", batch.as_str())])
    });
    eventually(
        Duration::from_secs(15),
        "nothing of Z is left",
        async || {
            let mut left = Vec::new();
            for key in ["rain:node-sockets:Z", "rain:node-services:Z"] {
                if conn
                    .exists::<_, bool>(key)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    left.push(key.to_string());
                }
            }
            let conns: Vec<String> = redis::cmd("KEYS")
                .arg("rain:conn:z-socket-*")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if !conns.is_empty() {
                left.push(format!("{} conn records", conns.len()));
            }
            let rooms: Vec<String> = redis::cmd("KEYS")
                .arg("rain:room-sockets:*")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if !rooms.is_empty() {
                left.push(format!("{} room sets", rooms.len()));
            }
            let in_namespace: i64 = conn
                .scard("rain:ns-sockets:/")
                .await
                .map_err(|e| e.to_string())?;
            if in_namespace > 0 {
                left.push(format!("{in_namespace} in ns-sockets"));
            }
            let hosts: BTreeSet<String> = conn
                .smembers("rain:service:echo@1.0:nodes")
                .await
                .map_err(|e| e.to_string())?;
            if hosts.contains("Z") {
                left.push("Z hosts echo".into());
            }
            let epoch: Option<String> = conn
                .hget("rain:node-epochs", "Z")
                .await
                .map_err(|e| e.to_string())?;
            let score: Option<f64> = conn
                .zscore("rain:nodes", "Z")
                .await
                .map_err(|e| e.to_string())?;
            if epoch.is_some() || score.is_some() {
                left.push("Z is still registered".into());
            }
            if left.is_empty() {
                Ok(())
            } else {
                Err(left.join(", "))
            }
        },
    )
    .await;

    let steps = reaper
        .metrics()
        .await
        .counter("rain_cluster_purge_steps_total", &[]);
    assert!(
        steps >= (SOCKETS / BATCH) as f64,
        "{steps} purge steps for {SOCKETS} sockets in batches of {BATCH}"
    );
    let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(10_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let worst = log
        .iter()
        .filter_map(|entry| {
            let redis::Value::Array(fields) = entry else {
                return None;
            };
            let micros: i64 = redis::from_redis_value(fields.get(2)?).ok()?;
            let args: Vec<String> = redis::from_redis_value(fields.get(3)?).ok()?;
            Some((
                micros,
                args.into_iter().take(2).collect::<Vec<_>>().join(" "),
            ))
        })
        .max();
    eprintln!(
        "purged {SOCKETS} sockets in {steps} script calls of at most {BATCH}; worst SLOWLOG entry: {worst:?} µs"
    );
}
