//! The real binary's command line: `--help`, `--version`, and bad settings
//! stopping it with exit code 2 and a message naming the setting. Every run
//! starts from an empty environment (plus PATH) and a fresh empty working
//! directory, so neither the host's variables (a REDIS_SERVER, say) nor a
//! `./rain.toml` can leak in. Also where a running node writes: its logs on
//! stderr (text, or one JSON object per line), stdout only the listening lines;
//! and secrets read from `_FILE` twins.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rain_node::config::Settings;

/// An empty directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "rain-config-cli-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `rain-node` with `args` and only `env` (plus PATH) in its environment.
/// Only for runs that exit by themselves (help, version, bad settings).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = TempDir::new();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rain-node"));
    cmd.args(args).env_clear().current_dir(&dir.0);
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run rain-node")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the run failed with exit code 2 and a stderr naming `name`.
fn assert_rejected(out: &Output, name: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains(name),
        "stderr does not name {name}: {stderr}"
    );
    assert!(stderr.starts_with("rain-node: "), "stderr: {stderr}");
}

#[test]
fn help_lists_every_setting() {
    let out = run(&["--help"], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    for (env, default, _) in Settings::env_table() {
        assert!(
            stdout.contains(env),
            "--help does not mention {env}:\n{stdout}"
        );
        let flag = format!("--{}", env.to_lowercase().replace('_', "-"));
        assert!(stdout.contains(&flag), "--help has no {flag}:\n{stdout}");
        assert!(stdout.contains(&format!("[default: {default}]")), "{env}");
    }
    assert!(stdout.contains("--config <FILE>"), "{stdout}");
    assert!(stdout.contains("Socket.IO cluster"), "{stdout}");
}

#[test]
fn version_prints_the_crate_version() {
    let out = run(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn non_numeric_port_in_env_exits_2() {
    assert_rejected(&run(&[], &[("SERVER_PORT", "abc")]), "SERVER_PORT");
}

#[test]
fn zero_ping_timeout_in_env_exits_2() {
    let out = run(&[], &[("PING_TIMEOUT_MS", "0")]);
    assert_rejected(&out, "PING_TIMEOUT_MS");
    assert!(text(&out.stderr).contains("at least 1"));
}

#[test]
fn out_of_range_port_flag_exits_2() {
    assert_rejected(&run(&["--server-port", "70000"], &[]), "SERVER_PORT");
}

#[test]
fn unknown_routing_mode_exits_2() {
    let out = run(&[], &[("ROUTING", "random")]);
    assert_rejected(&out, "ROUTING");
    assert!(text(&out.stderr).contains("must be local or round-robin"));
}

#[test]
fn a_heartbeat_too_slow_for_the_node_ttl_exits_2_naming_both() {
    let out = run(&[], &[("HEARTBEAT_MS", "1000"), ("NODE_TTL_MS", "2999")]);
    assert_rejected(&out, "HEARTBEAT_MS");
    assert!(
        text(&out.stderr).contains("NODE_TTL_MS=2999"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_purge_batch_of_zero_exits_2() {
    let out = run(&[], &[("PURGE_BATCH", "0")]);
    assert_rejected(&out, "PURGE_BATCH");
}

#[test]
fn a_node_group_outside_the_id_characters_exits_2() {
    for bad in ["a b", "a/b", ""] {
        let out = run(&[], &[("NODE_GROUP", bad)]);
        assert_rejected(&out, "NODE_GROUP");
    }
}

#[test]
fn redis_without_a_session_secret_exits_2() {
    let out = run(&[], &[("REDIS_SERVER", "redis://127.0.0.1:1")]);
    assert_rejected(&out, "SESSION_SECRET");
    assert!(
        text(&out.stderr).contains("required with REDIS_SERVER"),
        "{}",
        text(&out.stderr)
    );
    // A short secret is refused without being shown.
    let secret = "not-long-enough-secret";
    let out = run(
        &[],
        &[
            ("REDIS_SERVER", "redis://127.0.0.1:1"),
            ("SESSION_SECRET", secret),
        ],
    );
    assert_rejected(&out, "SESSION_SECRET");
    assert!(!text(&out.stderr).contains(secret), "{}", text(&out.stderr));
}

#[test]
fn missing_config_file_exits_2() {
    let out = run(&[], &[("RAIN_CONFIG", "/nonexistent/rain.toml")]);
    assert_rejected(&out, "/nonexistent/rain.toml");
}

#[test]
fn unknown_flag_exits_2() {
    let out = run(&["--no-such-flag"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--no-such-flag"));
}

#[test]
fn bad_api_tokens_exit_2_without_showing_the_secret() {
    let secret = "a-secret-of-20-chars";
    for (value, reason) in [
        (format!("ci:write:{secret}"), "is not emit, read or admin"),
        (format!(":emit:{secret}"), "name must not be empty"),
        ("ci:emit:".to_string(), "empty secret"),
        ("ci:emit:short".to_string(), "at least 16 characters"),
        (format!("ci:emit:{secret},ci:read:{secret}x"), "used twice"),
    ] {
        let out = run(&[], &[("API_TOKENS", &value)]);
        assert_rejected(&out, "API_TOKENS");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(reason), "{value}: {stderr}");
        assert!(!stderr.contains(secret), "the secret is shown: {stderr}");
    }
}

/// SIGTERM, and the node's exit within its shutdown timeout: every line it
/// logs (start, shutdown) is then written.
fn stop_gracefully(node: &mut support::Testbed) {
    // The handler is installed before the listening lines (tests/drain.rs),
    // but the test reads the `node started` line logged after them: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !node.stderr().contains("node started") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    node.signal("-TERM");
    let status = node.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}: {}",
        node.stderr()
    );
}

/// The `rain-node` binary this test run built.
fn rain_node() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rain-node"))
}

#[test]
fn secrets_are_read_from_their_file_twin_and_never_shown() {
    let dir = TempDir::new();
    let secret = "a-secret-of-20-chars";
    let bad = dir.0.join("bad_tokens");
    std::fs::write(&bad, format!("ci:write:{secret}\n")).unwrap();
    let bad = bad.to_str().unwrap();
    let out = run(&[], &[("API_TOKENS_FILE", bad)]);
    assert_rejected(&out, "API_TOKENS");
    assert!(!text(&out.stderr).contains(secret), "{}", text(&out.stderr));

    let out = run(&[], &[("API_TOKENS_FILE", bad), ("API_TOKENS", "x:emit:y")]);
    assert_rejected(&out, "API_TOKENS_FILE");
    assert!(
        text(&out.stderr).contains("both set"),
        "{}",
        text(&out.stderr)
    );

    let missing = "/nonexistent/rain/api_tokens";
    let out = run(&[], &[("API_TOKENS_FILE", missing)]);
    assert_rejected(&out, missing);

    // A good file: the node starts with its tokens (no "not set" warning).
    let good = dir.0.join("api_tokens");
    std::fs::write(&good, format!("ops:admin:{secret}\n")).unwrap();
    let mut node = support::spawn_program(
        rain_node(),
        &[
            ("API_TOKENS", ""),
            ("API_TOKENS_FILE", good.to_str().unwrap()),
        ],
    );
    stop_gracefully(&mut node);
    let stderr = node.stderr();
    assert!(!stderr.contains("API_TOKENS is not set"), "{stderr}");
    assert!(!stderr.contains(secret), "{stderr}");
}

#[test]
fn json_logs_are_one_object_per_stderr_line() {
    let mut node = support::spawn_program(rain_node(), &[("LOG_FORMAT", "json")]);
    stop_gracefully(&mut node);
    // The reader threads finish with the process's pipes.
    std::thread::sleep(Duration::from_millis(200));
    let stderr = node.stderr();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.iter().any(|l| l.contains("node started")),
        "no start line: {stderr}"
    );
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\nstderr:\n{stderr}"));
        assert!(value.is_object(), "{line}");
        for key in ["timestamp", "level", "target"] {
            assert!(value.get(key).is_some(), "no {key}: {line}");
        }
    }
    assert_eq!(
        node.stdout(),
        "",
        "stdout has more than the listening lines"
    );
}

#[test]
fn text_logs_go_to_stderr_and_stdout_has_only_the_listening_lines() {
    // spawn_program takes the two listening lines off stdout, in order; the
    // rest of stdout must be empty.
    let mut node = support::spawn_program(rain_node(), &[]);
    stop_gracefully(&mut node);
    std::thread::sleep(Duration::from_millis(200));
    let stderr = node.stderr();
    assert!(stderr.contains("node started"), "{stderr}");
    assert!(serde_json::from_str::<serde_json::Value>(stderr.lines().next().unwrap()).is_err());
    assert_eq!(
        node.stdout(),
        "",
        "stdout has more than the listening lines"
    );
}
