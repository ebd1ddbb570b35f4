//! The deployment files, checked without a Docker daemon: `Dockerfile` parsed
//! (stages, non-root user, environment, health check, ports), `dev-stack.yml`
//! parsed (replicas, rolling updates, grace period, the one published port,
//! secrets through `_FILE` settings, Redis's config) and given to `docker stack
//! config` when the docker client exists, `haproxy/haproxy.cfg` checked by
//! `haproxy -c` (Debian's haproxy; `.ci/run` installs it), `redis/redis.conf`
//! loaded by a real `redis-server`, and `rain-node healthcheck` against a
//! running node and against nothing.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_yaml_ng::Value;

fn file(path: &str) -> PathBuf {
    support::crate_dir().join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(file(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// Whether `program` can be run (found on PATH).
fn exists(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

// --- Dockerfile ------------------------------------------------------------------

/// The Dockerfile's instructions, continuation lines joined and comments
/// dropped, as (upper-case keyword, arguments).
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                instructions.push((keyword.to_uppercase(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    instructions
}

#[test]
fn the_dockerfile_builds_in_stages_and_runs_unprivileged() {
    let all = dockerfile_instructions(&read("Dockerfile"));
    let stages: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, (keyword, _))| keyword == "FROM")
        .map(|(at, _)| at)
        .collect();
    assert!(stages.len() >= 2, "not multi-stage: {all:?}");
    for at in &stages {
        let args = &all[*at].1;
        assert!(
            args.to_uppercase().contains(" AS "),
            "a stage without a name: FROM {args}"
        );
    }
    let last = &all[*stages.last().unwrap()..];
    assert!(
        last[0].1.starts_with("debian:bookworm-slim"),
        "the runtime is not debian:bookworm-slim: {:?}",
        last[0]
    );
    let in_last = |keyword: &str| -> Vec<&str> {
        last.iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, args)| args.as_str())
            .collect()
    };

    let users = in_last("USER");
    let user = users.last().expect("no USER in the final stage");
    let name = user.split(':').next().unwrap_or_default();
    assert!(
        !name.is_empty() && name != "root" && name != "0",
        "the final stage runs as {user}"
    );

    let env: String = in_last("ENV").join(" ");
    for pair in [
        "SERVER_HOST=0.0.0.0",
        "SERVER_PORT=3000",
        "ADMIN_HOST=0.0.0.0",
        "ADMIN_PORT=3001",
    ] {
        assert!(
            env.split_whitespace().any(|word| word == pair),
            "ENV lacks {pair}: {env}"
        );
    }

    let healthchecks = in_last("HEALTHCHECK");
    assert_eq!(healthchecks.len(), 1, "{healthchecks:?}");
    let (_, cmd) = healthchecks[0]
        .split_once("CMD ")
        .expect("HEALTHCHECK without CMD");
    // The exec form (no shell in the way), naming the subcommand.
    let cmd: Vec<String> = serde_json::from_str(cmd.trim())
        .unwrap_or_else(|e| panic!("HEALTHCHECK CMD is not the exec form ({e}): {cmd}"));
    assert_eq!(cmd, ["rain-node", "healthcheck"]);

    let exposed: Vec<&str> = in_last("EXPOSE")
        .iter()
        .flat_map(|args| args.split_whitespace())
        .collect();
    assert!(
        exposed.contains(&"3000") && exposed.contains(&"3001"),
        "{exposed:?}"
    );

    // A cached dependency layer: the manifests are copied and built before
    // the sources.
    let copy_manifest = all
        .iter()
        .position(|(k, a)| k == "COPY" && a.contains("Cargo.lock"))
        .expect("Cargo.lock is never copied");
    let copy_src = all
        .iter()
        .position(|(k, a)| k == "COPY" && a.starts_with("src"))
        .expect("src is never copied");
    let build_between = all[copy_manifest..copy_src]
        .iter()
        .any(|(k, a)| k == "RUN" && a.contains("cargo build"));
    assert!(build_between, "no dependency build before the sources");

    let ignore = read(".dockerignore");
    for entry in ["target/", "node_modules", ".git"] {
        assert!(ignore.contains(entry), ".dockerignore lacks {entry}");
    }
}

// --- dev-stack.yml -------------------------------------------------------------------

fn service<'a>(stack: &'a Value, name: &str) -> &'a Value {
    stack
        .get("services")
        .and_then(|s| s.get(name))
        .unwrap_or_else(|| panic!("dev-stack.yml has no service {name}"))
}

fn text_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `15s`, `1m30s`, `500ms` → duration (Docker's duration syntax, the parts
/// used here).
fn docker_duration(text: &str) -> Duration {
    let mut total = Duration::ZERO;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while chars.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            unit.push(chars.next().unwrap());
        }
        let n: f64 = number
            .parse()
            .unwrap_or_else(|_| panic!("bad duration {text}"));
        number.clear();
        total += Duration::from_secs_f64(match unit.as_str() {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => panic!("bad unit in duration {text}"),
        });
    }
    assert!(number.is_empty(), "duration {text} lacks a unit");
    total
}

#[test]
fn the_dev_stack_has_the_shape_of_a_rolling_cluster_behind_one_port() {
    let stack: Value =
        serde_yaml_ng::from_str(&read("dev-stack.yml")).expect("dev-stack.yml is YAML");

    // Only the lb publishes a port, and that port is 8080.
    let services = stack["services"].as_mapping().expect("services");
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        let ports = svc.get("ports").and_then(Value::as_sequence);
        if name == "lb" {
            let ports = ports.expect("lb publishes no port");
            assert_eq!(ports.len(), 1, "{ports:?}");
            let published = text_of(ports[0].get("published"));
            assert_eq!(published.as_deref(), Some("8080"), "{ports:?}");
        } else {
            assert!(
                ports.is_none_or(|p| p.is_empty()),
                "{name} publishes {ports:?}"
            );
        }
    }

    let node = service(&stack, "node");
    let deploy = &node["deploy"];
    assert_eq!(deploy["replicas"].as_u64(), Some(3));
    let update = &deploy["update_config"];
    assert_eq!(update["parallelism"].as_u64(), Some(1));
    assert_eq!(update["order"].as_str(), Some("start-first"));

    let env = &node["environment"];
    let env_var = |name: &str| text_of(env.get(name));
    assert_eq!(
        env_var("REDIS_SERVER").as_deref(),
        Some("redis://redis:6379")
    );
    let shutdown_ms: u64 = env_var("SHUTDOWN_TIMEOUT_MS")
        .map(|ms| ms.parse().expect("SHUTDOWN_TIMEOUT_MS"))
        .unwrap_or(10_000);
    let grace =
        docker_duration(&text_of(node.get("stop_grace_period")).expect("no stop_grace_period"));
    assert!(
        grace > Duration::from_millis(shutdown_ms),
        "stop_grace_period {grace:?} must exceed SHUTDOWN_TIMEOUT_MS={shutdown_ms}"
    );
    // A draining node reports not ready for DRAIN_DELAY_MS before it refuses
    // anything: longer than HAProxy takes to notice (`inter` × `fall`), and
    // within the shutdown timeout, which stop_grace_period exceeds.
    let drain_ms: u64 = env_var("DRAIN_DELAY_MS")
        .map(|ms| ms.parse().expect("DRAIN_DELAY_MS"))
        .unwrap_or(3_000);
    let (inter, fall) = haproxy_check_interval_and_fall();
    assert!(
        Duration::from_millis(drain_ms) > inter * fall,
        "DRAIN_DELAY_MS={drain_ms} must exceed haproxy.cfg's inter {inter:?} × fall {fall}"
    );
    assert!(
        drain_ms < shutdown_ms,
        "DRAIN_DELAY_MS={drain_ms} must be less than SHUTDOWN_TIMEOUT_MS={shutdown_ms}"
    );
    assert!(
        env_var("TRUSTED_PROXIES").is_some(),
        "the lb's X-Forwarded-For is not trusted"
    );

    // Secrets only through `_FILE` settings naming Docker secrets.
    let secrets: Vec<String> = node["secrets"]
        .as_sequence()
        .expect("node has no secrets")
        .iter()
        .map(|s| {
            text_of(Some(s))
                .or_else(|| text_of(s.get("source")))
                .unwrap()
        })
        .collect();
    for name in ["API_TOKENS", "SESSION_SECRET", "BACKEND_SECRET"] {
        assert!(
            env_var(name).is_none(),
            "{name} is given in clear in the stack"
        );
        let path = env_var(&format!("{name}_FILE")).unwrap_or_else(|| panic!("no {name}_FILE"));
        let secret = path
            .strip_prefix("/run/secrets/")
            .unwrap_or_else(|| panic!("{name}_FILE={path} is not a Docker secret"));
        assert!(
            secrets.iter().any(|s| s == secret),
            "{secret} is not given to node"
        );
        assert!(
            stack["secrets"].get(secret).is_some(),
            "no top-level secret {secret}"
        );
    }
    let test = node["healthcheck"]["test"]
        .as_sequence()
        .expect("node has no healthcheck");
    let test: Vec<_> = test.iter().filter_map(Value::as_str).collect();
    assert_eq!(test, ["CMD", "rain-node", "healthcheck"]);

    // Redis runs with redis/redis.conf, HAProxy with haproxy/haproxy.cfg.
    for (name, path) in [
        ("redis", "./redis/redis.conf"),
        ("lb", "./haproxy/haproxy.cfg"),
    ] {
        let configs: Vec<String> = service(&stack, name)["configs"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name} mounts no config"))
            .iter()
            .filter_map(|c| text_of(c.get("source")))
            .collect();
        let mounted = configs.iter().any(|source| {
            text_of(
                stack["configs"]
                    .get(source.as_str())
                    .and_then(|c| c.get("file")),
            )
            .as_deref()
                == Some(path)
        });
        assert!(mounted, "{name} does not mount {path}: {configs:?}");
    }
    let redis_command: Vec<_> = service(&stack, "redis")["command"]
        .as_sequence()
        .expect("redis has no command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        redis_command,
        ["redis-server", "/usr/local/etc/redis/redis.conf"]
    );
}

/// `inter` and `fall` of haproxy.cfg's `default-server` line: how long HAProxy
/// takes at most to stop sending to a node whose `/readyz` fails.
fn haproxy_check_interval_and_fall() -> (Duration, u32) {
    let config = read("haproxy/haproxy.cfg");
    let line = config
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("default-server"))
        .expect("no default-server line");
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |word: &str| {
        let at = words.iter().position(|w| *w == word);
        at.and_then(|at| words.get(at + 1)).copied()
    };
    let inter = docker_duration(after("inter").expect("no inter"));
    let fall = after("fall").expect("no fall").parse().expect("fall");
    (inter, fall)
}

#[test]
fn docker_stack_config_accepts_the_dev_stack() {
    if !exists("docker") {
        eprintln!("note: no docker client on PATH; `docker stack config -c dev-stack.yml` skipped");
        return;
    }
    let out = Command::new("docker")
        .args(["stack", "config", "-c", "dev-stack.yml"])
        .current_dir(support::crate_dir())
        .output()
        .expect("run docker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "docker stack config failed: {stderr}");
    let config: Value = serde_yaml_ng::from_slice(&out.stdout).expect("its output is YAML");
    assert_eq!(
        config["services"]["node"]["deploy"]["replicas"].as_u64(),
        Some(3)
    );
}

// --- haproxy.cfg -------------------------------------------------------------------

#[test]
fn haproxy_accepts_its_config_balanced_round_robin_without_stickiness() {
    let cfg = read("haproxy/haproxy.cfg");
    let lines: Vec<&str> = cfg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let has = |directive: &str| lines.iter().any(|l| l.starts_with(directive));
    for directive in [
        "balance roundrobin",
        "option httpchk GET /readyz",
        "option forwardfor",
        "option redispatch",
        "retries 3",
        "timeout tunnel",
        "timeout client",
        "timeout server",
        "timeout connect",
    ] {
        assert!(has(directive), "haproxy.cfg lacks `{directive}`");
    }
    for sticky in [
        "cookie",
        "stick",
        "stick-table",
        "balance source",
        "hash-type",
    ] {
        assert!(!has(sticky), "haproxy.cfg is sticky: `{sticky}`");
    }
    let templates: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("server-template "))
        .collect();
    assert_eq!(
        templates.len(),
        1,
        "one server-template line, for tests to replace: {templates:?}"
    );
    assert!(templates[0].contains(":3000"), "{}", templates[0]);
    assert!(!has("server "), "a `server` line besides the template");
    let checks = lines
        .iter()
        .find(|l| l.starts_with("default-server"))
        .expect("no default-server line (inter, fall, rise)");
    for word in ["inter", "fall", "rise"] {
        assert!(checks.contains(word), "{checks}");
    }

    assert!(
        exists("haproxy") || Path::new("/usr/sbin/haproxy").exists(),
        "haproxy is not installed: `apt-get install --no-install-recommends haproxy` (.ci/run does)"
    );
    let program = if exists("haproxy") {
        "haproxy"
    } else {
        "/usr/sbin/haproxy"
    };
    let out = Command::new(program)
        .args(["-c", "-f", "haproxy/haproxy.cfg"])
        .current_dir(support::crate_dir())
        .output()
        .expect("run haproxy -c");
    assert!(
        out.status.success(),
        "haproxy -c -f haproxy/haproxy.cfg failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// --- redis.conf --------------------------------------------------------------------

/// One RESP command on `stream`, its whole reply as text.
fn redis_command(stream: &mut TcpStream, args: &[&str]) -> String {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = vec![0; 4096];
    let n = stream.read(&mut reply).unwrap();
    String::from_utf8_lossy(&reply[..n]).into_owned()
}

#[test]
fn redis_server_loads_redis_conf_with_noeviction() {
    let dir = std::env::temp_dir().join(format!("rain-redis-conf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The file as is; only where it listens and writes is changed for the test.
    let mut child = Command::new("redis-server")
        .arg(file("redis/redis.conf"))
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-server is not installed (.ci/run installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
            break stream;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            panic!("redis-server refused redis/redis.conf ({status}): {stderr}");
        }
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let policy = redis_command(&mut stream, &["CONFIG", "GET", "maxmemory-policy"]);
    let aof = redis_command(&mut stream, &["CONFIG", "GET", "appendonly"]);
    let _ = redis_command(&mut stream, &["SHUTDOWN", "NOSAVE"]);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(policy.contains("noeviction"), "{policy}");
    assert!(aof.contains("yes"), "{aof}");
}

// --- rain-node healthcheck ---------------------------------------------------------

fn healthcheck(host: &str, port: u16) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rain-node"))
        .arg("healthcheck")
        .env_clear()
        .env("SERVER_HOST", host)
        .env("SERVER_PORT", port.to_string())
        .output()
        .expect("run rain-node healthcheck");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn healthcheck_exits_0_against_a_running_node_and_1_when_nothing_listens() {
    // As in the image: listening on every interface, probed on loopback.
    let mut node = support::spawn_program(
        Path::new(env!("CARGO_BIN_EXE_rain-node")),
        &[("SERVER_HOST", "0.0.0.0")],
    );
    let port: u16 = node
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in the listening line");
    let started = Instant::now();
    let (code, line) = healthcheck("0.0.0.0", port);
    assert_eq!(code, Some(0), "{line}");
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.starts_with("healthy: "), "{line}");

    node.stop();
    let (code, line) = healthcheck("0.0.0.0", port);
    assert_eq!(code, Some(1), "{line}");
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.starts_with("unhealthy: "), "{line}");
    assert!(started.elapsed() < Duration::from_secs(10), "slow probes");
}

/// The dependency stage builds against a dummy crate, so the manifest's every
/// bench needs a stub there, or `docker build` stops with "can't find bench".
/// Runs that stage's own RUN recipe (up to its `cargo build`) in a scratch
/// folder holding only `Cargo.toml`, and checks a stub stands for each
/// `[[bench]]` the manifest names.
#[test]
fn the_dependency_stage_stubs_every_bench_of_the_manifest() {
    let all = dockerfile_instructions(&read("Dockerfile"));
    let recipe = all
        .iter()
        .find(|(keyword, args)| keyword == "RUN" && args.contains("benches"))
        .map(|(_, args)| args.clone())
        .expect("a RUN that makes the bench stubs");
    let stubs_only = recipe
        .split("&& cargo build")
        .next()
        .expect("the recipe builds after making stubs");
    let scratch = std::env::temp_dir().join(support::unique("rain-docker-deps-"));
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::copy(
        support::crate_dir().join("Cargo.toml"),
        scratch.join("Cargo.toml"),
    )
    .unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(stubs_only)
        .current_dir(&scratch)
        .status()
        .expect("run sh");
    assert!(status.success(), "the stub recipe failed: {stubs_only}");
    let manifest = read("Cargo.toml");
    let benches: Vec<&str> = manifest
        .split("[[bench]]")
        .skip(1)
        .filter_map(|block| {
            block
                .lines()
                .find_map(|line| line.trim().strip_prefix("name = "))
                .map(|name| name.trim_matches('"'))
        })
        .collect();
    assert!(!benches.is_empty(), "no [[bench]] in Cargo.toml");
    for bench in &benches {
        assert!(
            scratch
                .join("benches")
                .join(format!("{bench}.rs"))
                .is_file(),
            "no stub for the bench {bench} in the dependency stage"
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
