//! Test support shared by every integration test and by the benches (which
//! include it with `#[path = "../tests/support/mod.rs"]`): the one node-process
//! spawner ([`spawn_program`], [`spawn_testbed`] → [`Testbed`]), the runner of
//! external client programs (node, python), and the one [`eventually`].
//!
//! A node starts from an empty environment (`PATH` and `HOME` only, plus the
//! variables a caller gives), so nothing of the developer's environment (a
//! `REDIS_SERVER`, a `RAIN_CONFIG`, …) leaks into it. Set `RAIN_TESTBED_LOG`
//! (e.g. `rain_node=debug`) to pass a log filter to it as `LOG`; its stderr is
//! printed when a test fails.
//!
//! `redis-server`, cluster nodes and the raw Socket.IO client live in
//! [`cluster`]; this module knows nothing of Redis.

#![allow(dead_code)]

pub mod cluster;
pub mod haproxy;
pub mod mothership;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long the testbed may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The line the testbed prints on stdout once it accepts connections.
const READY_PREFIX: &str = "rain-node listening on ";

/// The line it prints right after, with its API listener's address.
const API_READY_PREFIX: &str = "rain-node api listening on ";

/// The secret of the `admin` API token every node started here has, unless the
/// test sets `API_TOKENS` itself.
pub const TEST_API_SECRET: &str = "rain-test-admin-secret";

/// `API_TOKENS` of every node started here, unless the test sets its own.
pub const TEST_API_TOKENS: &str = "test:admin:rain-test-admin-secret";

/// The crate's root directory.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Engine.IO polling path every test node serves.
pub const POLLING_PATH: &str = "/socket.io/?EIO=4&transport=polling";

/// Opens an Engine.IO polling session on the node at `url` (a handshake by
/// plain HTTP): its sid.
pub async fn open_polling_session(http: &reqwest::Client, url: &str) -> String {
    let open = http
        .get(format!("{url}{POLLING_PATH}"))
        .send()
        .await
        .expect("polling handshake")
        .text()
        .await
        .expect("the open packet");
    let handshake: serde_json::Value =
        serde_json::from_str(open.strip_prefix('0').expect("an open packet")).expect("its JSON");
    handshake["sid"].as_str().expect("a sid").to_string()
}

/// `tests/js`: the official JavaScript client and playwright-core.
pub fn js_dir() -> PathBuf {
    crate_dir().join("tests").join("js")
}

/// Chromium, or a failure that says how to install it.
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "Chromium is not installed ({} is missing): `apt-get install --no-install-recommends \
         chromium` (.ci/run does), or set CHROMIUM to a Chromium binary",
        path.display()
    );
    let playwright = js_dir().join("node_modules/playwright-core/package.json");
    assert!(
        playwright.is_file(),
        "playwright-core is not installed ({} is missing): run `scripts/test` once (npm ci in tests/js)",
        playwright.display()
    );
    path
}

/// `target/<profile>/examples/testbed`, next to the `deps` directory this test
/// binary lives in.
pub fn testbed_path() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe
        .parent()
        .expect("the test binary has a parent directory");
    let path = deps
        .join("..")
        .join("examples")
        .join(format!("testbed{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        panic!(
            "the testbed example is not built: {} is missing.\n\
             `cargo test` builds it; `cargo test --test interop` alone does not — run \
             `cargo build --example testbed` first (same profile), or just `scripts/test`.",
            path.display()
        );
    }
    path
}

/// A running testbed; killed when dropped.
pub struct Testbed {
    child: Child,
    url: String,
    api_url: String,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
}

impl Testbed {
    /// The server's base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The API listener's base URL, `http://127.0.0.1:PORT`.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the process a signal (`"-TERM"`, `"-STOP"`, `"-9"`, …) with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {} failed", self.pid());
    }

    /// Everything the server wrote to stderr so far (its logs).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whatever the server wrote to stdout after its `listening on` line.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Whether `needle` shows up in the server's stderr within `timeout`: a
    /// line logged as a request is answered may reach the reader thread a
    /// moment after the answer reaches the test.
    pub async fn stderr_shows(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last `lines` lines of the server's stderr.
    pub fn stderr_tail(&self, lines: usize) -> String {
        tail(&self.stderr(), lines)
    }

    /// Kills the server (SIGKILL) and waits for it to exit; dropping does too.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the server to exit by itself (after a signal, say): its exit
    /// status, or `None` if it still runs after `timeout` (then it is killed when
    /// dropped).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            // give the reader thread a moment to collect the last lines
            thread::sleep(Duration::from_millis(50));
            eprintln!(
                "----- testbed {} stderr (last 200 lines) -----\n{}\n----- end of testbed stderr -----",
                self.url,
                self.stderr_tail(200)
            );
        }
    }
}

/// Starts the testbed with `SERVER_HOST=127.0.0.1`, `SERVER_PORT=0` and `envs`
/// (which may override those two), and waits for its `listening on` line.
pub fn spawn_testbed(envs: &[(&str, &str)]) -> Testbed {
    spawn_program(&testbed_path(), envs)
}

/// Starts a node program (the testbed, or the `rain-node` binary) from an empty
/// environment (`PATH`, `HOME`), `SERVER_HOST=127.0.0.1`, `SERVER_PORT=0`,
/// `API_TOKENS=`[`TEST_API_TOKENS`], `RAIN_TESTBED_LOG` as `LOG`, then `envs`;
/// waits for its `listening on` line and its `api listening on` line. Its
/// stderr (the logs) is captured.
pub fn spawn_program(path: &Path, envs: &[(&str, &str)]) -> Testbed {
    let mut cmd = Command::new(path);
    cmd.env_clear();
    for key in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    cmd.env("SERVER_HOST", "127.0.0.1")
        .env("SERVER_PORT", "0")
        .env("API_TOKENS", TEST_API_TOKENS);
    if let Some(filter) = std::env::var_os("RAIN_TESTBED_LOG") {
        cmd.env("LOG", filter);
    }
    for (key, value) in envs {
        cmd.env(key, value);
    }
    cmd.current_dir(crate_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));

    let stderr = Arc::new(Mutex::new(String::new()));
    collect(child.stderr.take().unwrap(), stderr.clone());

    let stdout_rest = Arc::new(Mutex::new(String::new()));
    let (ready_tx, ready_rx) = mpsc::channel::<String>();
    {
        let out = child.stdout.take().unwrap();
        let rest = stdout_rest.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(out);
            let mut line = String::new();
            // The two lines, in this order, each once.
            let mut expected = [READY_PREFIX, API_READY_PREFIX].into_iter().peekable();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let trimmed = line.trim_end();
                if let Some(prefix) = expected.peek()
                    && let Some(url) = trimmed.strip_prefix(prefix)
                {
                    expected.next();
                    let _ = ready_tx.send(url.trim().to_string());
                    continue;
                }
                rest.lock().unwrap().push_str(&line);
            }
        });
    }

    let deadline = Instant::now() + START_TIMEOUT;
    let mut urls = Vec::new();
    let (url, api_url) = loop {
        match ready_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(url) => urls.push(url),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let [url, api_url] = &urls[..] {
            break (url.clone(), api_url.clone());
        }
        if let Ok(Some(status)) = child.try_wait() {
            thread::sleep(Duration::from_millis(50));
            panic!(
                "{} exited ({status}) before printing `{READY_PREFIX}…` and `{API_READY_PREFIX}…`.\n\
                 stdout:\n{}\nstderr:\n{}",
                path.display(),
                stdout_rest.lock().unwrap(),
                tail(&stderr.lock().unwrap(), 200)
            );
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} did not print `{READY_PREFIX}…` and `{API_READY_PREFIX}…` within {START_TIMEOUT:?}.\n\
                 stdout:\n{}\nstderr:\n{}",
                path.display(),
                stdout_rest.lock().unwrap(),
                tail(&stderr.lock().unwrap(), 200)
            );
        }
    };
    assert!(
        url.starts_with("http://"),
        "unexpected listening line: `{READY_PREFIX}{url}`"
    );
    assert!(
        api_url.starts_with("http://") && api_url != url,
        "unexpected api listening line: `{API_READY_PREFIX}{api_url}`"
    );
    let url = url.trim_end_matches('/').to_string();
    let api_url = api_url.trim_end_matches('/').to_string();
    Testbed {
        child,
        url,
        api_url,
        stderr,
        stdout: stdout_rest,
    }
}

/// Appends everything `pipe` yields to `into`, on a thread of its own.
fn collect(pipe: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => into
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf)),
            }
        }
    })
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The result of a client program run.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `program args…` in `dir` with `RAIN_URL` set to the testbed's URL (the
/// rest of the environment is inherited: node and python need it), prints its
/// output, and panics unless it exits with status 0 within `timeout`.
pub fn run_client(
    testbed: &Testbed,
    program: &str,
    args: &[&str],
    dir: &Path,
    timeout: Duration,
) -> Output {
    eprintln!(
        "running `{program} {}` in {} with RAIN_URL={}",
        args.join(" "),
        dir.display(),
        testbed.url()
    );
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .env("RAIN_URL", testbed.url());
    run_to_success(cmd, program, args, timeout, "the server's")
}

/// Runs `cmd` (the rest of the environment inherited), prints its output, and
/// panics unless it exits with status 0 within `timeout`; `logs` names whose
/// stderr the failing test prints next.
pub fn run_to_success(
    mut cmd: Command,
    program: &str,
    args: &[&str],
    timeout: Duration,
    logs: &str,
) -> Output {
    let shown = format!("{program} {}", args.join(" "));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{shown}`: {e} (is {program} installed?)"));
    let stdout = Arc::new(Mutex::new(String::new()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let out_thread = collect(child.stdout.take().unwrap(), stdout.clone());
    let err_thread = collect(child.stderr.take().unwrap(), stderr.clone());

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the client") {
            break Some(status);
        }
        if started.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let _ = out_thread.join();
    let _ = err_thread.join();
    let elapsed = started.elapsed();
    let stdout = stdout.lock().unwrap().clone();
    let stderr = stderr.lock().unwrap().clone();
    // shown by the test harness on failure, or always with `-- --nocapture`
    println!("----- `{shown}` stdout -----\n{stdout}");
    println!("----- `{shown}` stderr -----\n{}", tail(&stderr, 200));
    println!("----- `{shown}` took {elapsed:.1?} -----");
    let Some(status) = status else {
        panic!("`{shown}` did not finish within {timeout:?} and was killed");
    };
    assert!(
        status.success(),
        "`{shown}` failed ({status}); its output is above, {logs} stderr below"
    );
    Output {
        status,
        stdout,
        stderr,
        elapsed,
    }
}

/// Serialises the tests that start several processes (a Redis and nodes), so
/// that on a 2-core machine their timing is not at the mercy of each other.
/// Hold the guard for the whole test (a test that panics lets it go).
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Polls `check` every 50 ms until it returns `Ok`, or panics with its last
/// `Err` message after `timeout`. `check` is an async closure, which may borrow
/// (mutably too) what the test holds: `eventually(t, "…", async || { … }).await`.
pub async fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        match check().await {
            Ok(value) => return value,
            Err(message) => {
                if started.elapsed() >= timeout {
                    panic!("{what}: still not true after {timeout:?}: {message}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh name, unique within this run: `prefix`, the process id and the
/// clock's nanoseconds.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}{}{nanos:x}", std::process::id())
}

/// A temporary `COMPONENTS_DIR` holding `descriptors` (file name, JSON),
/// removed on drop.
pub struct ComponentsDir(PathBuf);

impl ComponentsDir {
    pub fn new(descriptors: &[(&str, serde_json::Value)]) -> ComponentsDir {
        let dir = std::env::temp_dir().join(unique("rain-components-"));
        std::fs::create_dir_all(&dir).unwrap();
        for (file, descriptor) in descriptors {
            std::fs::write(dir.join(file), descriptor.to_string()).unwrap();
        }
        ComponentsDir(dir)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ComponentsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `text` without its ANSI colour codes (a node's text log is coloured).
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The clock ticks per second of `/proc/<pid>/stat`.
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// `utime + stime` of process `pid` (`self` for this one), in clock ticks.
pub fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    // the fields after `(comm)`: state is the first, utime the 12th, stime the 13th
    let fields: Vec<&str> = stat[stat.rfind(')').expect("(comm)") + 1..]
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}
