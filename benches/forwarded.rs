//! A long-polling round trip served by the session's owner beside the same
//! round trip landing on another node (forwarded to the owner, see
//! `src/transport/forward.rs`), on loopback:
//!
//! ```sh
//! cargo bench --bench forwarded                  # 3000 round trips each way
//! ROUND_TRIPS=10000 cargo bench --bench forwarded
//! ```
//!
//! It starts its own `redis-server` on a free port and two `rain-node`
//! processes A and B (release build under `cargo bench`) with the spawners of
//! `tests/support`, `LOG=warn` and every other setting at its default. One
//! Engine.IO session is opened over polling on A. A round trip is what a
//! polling client does for every message: a POST of an Engine.IO ping
//! (`2probe`, which the server answers with `3probe`, so no Socket.IO work
//! is measured) and the GET that brings the answer back. **Local**: both
//! requests to A. **Forwarded**: both to B, which forwards each to A over
//! its own keep-alive connection. One client, one round trip at a time, on a
//! keep-alive HTTP connection per node.
//!
//! It prints, per mode, the p50/p90/p99/max latency of a round trip and the
//! CPU per round trip of A and of B (`utime + stime` of `/proc/<pid>/stat`
//! over the run), then one line comparing them. No figure is asserted. Under
//! `cargo test --all-targets` (no `--bench`) it makes a quick run of 100 round
//! trips each way (debug build) so the harness stays tested. Linux only.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::cluster::RedisServer;
use support::{Testbed, spawn_program};

fn start_node(redis: &str, id: &str) -> Testbed {
    let envs = [
        ("REDIS_SERVER", redis),
        ("SESSION_SECRET", "bench-session-secret-0123456789abcdef"),
        ("NODE_ID", id),
        ("LOG", "warn"),
    ];
    spawn_program(Path::new(env!("CARGO_BIN_EXE_rain-node")), &envs)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let count: usize = std::env::var("ROUND_TRIPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if bench_mode { 3000 } else { 100 });
    let redis = RedisServer::start();
    let a = start_node(&redis.url(), "A");
    let b = start_node(&redis.url(), "B");
    let client = reqwest::Client::new();
    // Both registered (B must find A's address).
    for node in [&a, &b] {
        let until = Instant::now() + Duration::from_secs(10);
        while client
            .get(format!("{}/readyz", node.url()))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok()
            != Some(200)
        {
            assert!(Instant::now() < until, "{} not ready", node.url());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let sid = support::open_polling_session(&client, a.url()).await;

    round_trips(&client, a.url(), &sid, 100).await;
    round_trips(&client, b.url(), &sid, 100).await;
    let local = measure(
        &client,
        "local (both requests on the owner A)",
        a.url(),
        &sid,
        count,
        &a,
        &b,
    )
    .await;
    let forwarded = measure(
        &client,
        "forwarded (both requests on B, served by A)",
        b.url(),
        &sid,
        count,
        &a,
        &b,
    )
    .await;
    println!(
        "forwarded vs local: p50 {:.0} µs vs {:.0} µs (+{:.0} µs), CPU per round trip (A + B) {:.0} µs vs {:.0} µs",
        forwarded.p50.as_secs_f64() * 1e6,
        local.p50.as_secs_f64() * 1e6,
        (forwarded.p50.as_secs_f64() - local.p50.as_secs_f64()) * 1e6,
        forwarded.cpu_per_trip * 1e6,
        local.cpu_per_trip * 1e6,
    );
}

struct Figures {
    p50: Duration,
    cpu_per_trip: f64,
}

async fn measure(
    client: &reqwest::Client,
    label: &str,
    url: &str,
    sid: &str,
    count: usize,
    a: &Testbed,
    b: &Testbed,
) -> Figures {
    let ticks = support::clock_ticks() as f64;
    let (a0, b0) = (
        support::cpu_ticks(&a.pid().to_string()),
        support::cpu_ticks(&b.pid().to_string()),
    );
    let mut times = round_trips(client, url, sid, count).await;
    let (a1, b1) = (
        support::cpu_ticks(&a.pid().to_string()),
        support::cpu_ticks(&b.pid().to_string()),
    );
    times.sort();
    let q = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    let per = |ticks_used: u64| ticks_used as f64 / ticks / count as f64;
    let (cpu_a, cpu_b) = (per(a1 - a0), per(b1 - b0));
    println!("{label}: {count} round trips (POST 2probe + GET 3probe)");
    println!(
        "  latency p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        q(0.5),
        q(0.9),
        q(0.99),
        times[times.len() - 1]
    );
    println!(
        "  CPU per round trip: A {:.0} µs, B {:.0} µs, A + B {:.0} µs",
        cpu_a * 1e6,
        cpu_b * 1e6,
        (cpu_a + cpu_b) * 1e6
    );
    Figures {
        p50: q(0.5),
        cpu_per_trip: cpu_a + cpu_b,
    }
}

/// `count` round trips through `url`: POST `2probe`, GET until `3probe`
/// (answering the server's pings on the way).
async fn round_trips(
    client: &reqwest::Client,
    url: &str,
    sid: &str,
    count: usize,
) -> Vec<Duration> {
    let target = format!("{url}{}&sid={sid}", support::POLLING_PATH);
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let posted = client.post(&target).body("2probe").send().await.unwrap();
        assert_eq!(posted.status().as_u16(), 200, "POST through {url}");
        posted.bytes().await.unwrap();
        loop {
            let got = client.get(&target).send().await.unwrap();
            assert_eq!(got.status().as_u16(), 200, "GET through {url}");
            let body = got.text().await.unwrap();
            if body.split('\u{1e}').any(|p| p == "3probe") {
                break;
            }
            if body.split('\u{1e}').any(|p| p == "2") {
                client.post(&target).body("3").send().await.unwrap();
            }
        }
        times.push(started.elapsed());
    }
    times
}
