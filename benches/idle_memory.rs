//! Idle memory per connection: how much resident memory the server needs for
//! each idle websocket Socket.IO client.
//!
//! ```text
//! cargo bench --bench idle_memory                 # 5000 clients, release build
//! CLIENTS=20000 cargo bench --bench idle_memory   # more (see "File descriptors")
//! BENCH_SERVER=testbed cargo bench --bench idle_memory   # the testbed example instead
//! ```
//!
//! It starts the `rain-node` binary with the node spawner of `tests/support`
//! (`SERVER_PORT=0`, `LOG` from `BENCH_LOG` or `warn`, `CONNECTIONS_PER_ADDRESS`
//! raised past `CLIENTS`, since every client comes from 127.0.0.1; every other
//! setting at its default), samples the server's `VmRSS` from `/proc/<pid>/status`, opens
//! `CLIENTS` websocket clients (`ws://…/socket.io/?EIO=4&transport=websocket`),
//! each of which does the Engine.IO handshake, joins the namespace `/` (`40` →
//! `40{"sid":…}`) and then only answers pings (`2` → `3`), waits ~2 s, samples
//! `VmRSS` again and prints the figures. Nothing is asserted about them; the run
//! fails only when clients cannot connect.
//!
//! Run by `cargo test --all-targets` too (without `--bench`): then it is a quick
//! smoke run with 50 clients against the debug build.
//!
//! `BENCH_SERVER`: `rain-node` (default), `testbed` (the example, found next to
//! this binary as `../examples/testbed`: build it first with
//! `cargo build --release --example testbed`), or a path to a server binary.
//!
//! File descriptors: the clients and the server each need one per connection
//! (both run on this machine). The bench raises its soft `RLIMIT_NOFILE` to the
//! hard limit (the server inherits it); when the hard limit is too low, raise it
//! (`ulimit -Hn`, /etc/security/limits.conf, or `prlimit`) or lower `CLIENTS`.
//! Linux only (it reads `/proc`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

use support::{Testbed, spawn_program};

/// Connections being set up at the same time.
const PARALLEL_CONNECTS: usize = 256;
/// How long one client may take to connect and join `/`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the clients stay idle before the second sample.
const SETTLE: Duration = Duration::from_secs(2);

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let clients: usize = match std::env::var("CLIENTS") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("CLIENTS must be a number, got {v:?}")),
        Err(_) if bench_mode => 5000,
        Err(_) => 50,
    };
    if !cfg!(target_os = "linux") {
        println!("idle_memory: reads /proc/<pid>/status, so it runs on Linux only; skipped");
        return;
    }
    raise_fd_limit(clients);

    let server_path = server_binary();
    let log = std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into());
    // All the clients share one address: the per-address limit (256 by
    // default) is raised past them, explicitly.
    let per_address = (clients + 16).to_string();
    let mut server = spawn_program(
        &server_path,
        &[("LOG", &log), ("CONNECTIONS_PER_ADDRESS", &per_address)],
    );
    println!(
        "server: {} (pid {}) at {}",
        server_path.display(),
        server.pid(),
        server.url()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(run(&server, clients));
    runtime.shutdown_timeout(Duration::from_secs(2));
    server.stop();
    if let Err(e) = result {
        eprintln!("idle_memory failed: {e}");
        eprintln!(
            "----- server stderr (last 50 lines) -----\n{}",
            server.stderr_tail(50)
        );
        std::process::exit(1);
    }
}

async fn run(server: &Testbed, clients: usize) -> Result<(), String> {
    // let the server finish starting up, then take the baseline
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(server.pid())?;

    let ws_url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        server.url().replacen("http://", "ws://", 1)
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let joined = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(Semaphore::new(PARALLEL_CONNECTS));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let permit = permits.clone().acquire_owned().await.expect("semaphore");
        let url = ws_url.clone();
        let stop = stop_rx.clone();
        let joined = joined.clone();
        let dropped = dropped.clone();
        tasks.push(tokio::spawn(async move {
            client(url, permit, stop, joined, dropped).await
        }));
    }
    // every client has started; wait until all have joined (or one failed)
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let n = joined.load(Ordering::SeqCst);
        if n == clients {
            break;
        }
        if let Some(failed) = tasks.iter().position(|t| t.is_finished()) {
            let task = tasks.swap_remove(failed);
            let outcome = task.await.map_err(|e| e.to_string())?;
            return Err(format!(
                "a client stopped after {n} of {clients} had joined: {}",
                outcome.err().unwrap_or_else(|| "closed".into())
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {n} of {clients} clients joined within {CONNECT_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_time = started.elapsed();

    tokio::time::sleep(SETTLE).await;
    let after = rss_kib(server.pid())?;
    let peak = status_field_kib(server.pid(), "VmHWM:").unwrap_or(0);
    let still = clients - dropped.load(Ordering::SeqCst);

    println!("idle websocket clients: {clients}");
    println!("rss before: {before} KiB");
    println!("rss after: {after} KiB");
    println!(
        "per client: {:.2} KiB",
        after.saturating_sub(before) as f64 / clients.max(1) as f64
    );
    println!("peak rss (VmHWM): {peak} KiB");
    println!(
        "connect + join time: {:.2} s ({:.0} clients/s)",
        connect_time.as_secs_f64(),
        clients as f64 / connect_time.as_secs_f64().max(1e-9)
    );
    println!("clients still connected after {SETTLE:?} idle: {still}");

    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    if still != clients {
        return Err(format!(
            "{} clients were disconnected while idle",
            clients - still
        ));
    }
    Ok(())
}

/// One idle client: Engine.IO handshake, join `/`, then answer pings until told
/// to stop.
async fn client(
    url: String,
    permit: tokio::sync::OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
    joined: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
) -> Result<(), String> {
    let setup = async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(|e| format!("websocket connect: {e}"))?;
        // Engine.IO OPEN: 0{"sid":…,"pingInterval":…,…}
        let open = next_text(&mut ws).await?;
        if !open.starts_with("0{") {
            return Err(format!("expected an Engine.IO open packet, got {open:?}"));
        }
        ws.send(Message::text("40"))
            .await
            .map_err(|e| format!("send 40: {e}"))?;
        loop {
            let text = next_text(&mut ws).await?;
            if text == "2" {
                ws.send(Message::text("3"))
                    .await
                    .map_err(|e| format!("send pong: {e}"))?;
            } else if text.starts_with("40{") || text == "40" {
                break;
            } else if text.starts_with("44") {
                return Err(format!("connect to / refused: {text}"));
            }
            // anything else (e.g. an event sent on connect) is ignored
        }
        Ok::<_, String>(ws)
    };
    let mut ws = tokio::time::timeout(CONNECT_TIMEOUT, setup)
        .await
        .map_err(|_| "timed out connecting".to_string())??;
    drop(permit);
    joined.fetch_add(1, Ordering::SeqCst);

    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = ws.close(None).await;
                return Ok(());
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                    if ws.send(Message::text("3")).await.is_err() {
                        dropped.fetch_add(1, Ordering::SeqCst);
                        return Ok(());
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    dropped.fetch_add(1, Ordering::SeqCst);
                    // keep waiting for the stop signal so the count stays exact
                    let _ = stop.changed().await;
                    return Ok(());
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

async fn next_text<S>(ws: &mut S) -> Result<String, String>
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_string()),
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("closed by the server: {frame:?}"));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("websocket error: {e}")),
            None => return Err("connection closed".into()),
        }
    }
}

/// The server binary to measure (see `BENCH_SERVER` above).
fn server_binary() -> PathBuf {
    let choice = std::env::var("BENCH_SERVER").unwrap_or_else(|_| "rain-node".into());
    let path = match choice.as_str() {
        "rain-node" | "" => PathBuf::from(env!("CARGO_BIN_EXE_rain-node")),
        "testbed" => {
            let exe = std::env::current_exe().expect("current_exe");
            exe.parent()
                .expect("deps directory")
                .join("..")
                .join("examples")
                .join(format!("testbed{}", std::env::consts::EXE_SUFFIX))
        }
        other => PathBuf::from(other),
    };
    if !path.is_file() {
        panic!(
            "server binary {} is missing (BENCH_SERVER={choice:?}); for the testbed run \
             `cargo build --release --example testbed` first",
            path.display()
        );
    }
    path
}

fn rss_kib(pid: u32) -> Result<u64, String> {
    status_field_kib(pid, "VmRSS:")
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_field_kib(pid: u32, field: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("reading /proc/{pid}/status (has the server exited?): {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))
}

/// Raises the soft `RLIMIT_NOFILE` towards what `clients` connections need (the
/// server, started afterwards, inherits it).
#[cfg(target_os = "linux")]
fn raise_fd_limit(clients: usize) {
    #[repr(C)]
    struct RLimit {
        cur: std::ffi::c_ulong,
        max: std::ffi::c_ulong,
    }
    const RLIMIT_NOFILE: i32 = 7;
    unsafe extern "C" {
        fn getrlimit(resource: i32, rlim: *mut RLimit) -> i32;
        fn setrlimit(resource: i32, rlim: *const RLimit) -> i32;
    }
    let wanted = clients as std::ffi::c_ulong + 256;
    let mut limit = RLimit { cur: 0, max: 0 };
    // SAFETY: getrlimit/setrlimit of libc (linked by std) with a valid pointer to
    // a struct of `struct rlimit`'s layout (two `rlim_t`, i.e. unsigned long).
    unsafe {
        if getrlimit(RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.cur < wanted {
            let raised = RLimit {
                cur: wanted.min(limit.max),
                max: limit.max,
            };
            if setrlimit(RLIMIT_NOFILE, &raised) == 0 {
                limit.cur = raised.cur;
            }
        }
    }
    if limit.cur < wanted {
        eprintln!(
            "warning: open files limit is {} but {clients} clients need about {wanted}; \
             raise it (ulimit -n / ulimit -Hn) or lower CLIENTS",
            limit.cur
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn raise_fd_limit(_clients: usize) {}
