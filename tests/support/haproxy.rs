//! HAProxy in front of local nodes, as users run it: `haproxy/haproxy.cfg`
//! verbatim but for its one `server-template` line, replaced by a `server`
//! line per node (its public port), and its `bind` port, replaced by a free
//! one; Debian's `haproxy` (`.ci/run` installs it) run in the foreground
//! (`-db`, `-n 4000`: the one departure, a connection limit within this
//! machine's descriptor limit) from a temporary folder, killed when dropped. Its log (the
//! config's `log stdout`, one `httplog` line per request) is kept, so a test
//! can look for answers it must never see.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cluster::{Node, free_port};
use super::{collect, crate_dir};

/// A running HAProxy; killed (and its folder removed) when dropped.
pub struct HaProxy {
    child: Child,
    port: u16,
    dir: PathBuf,
    log: Arc<Mutex<String>>,
}

/// `haproxy.cfg`'s text for `nodes` listening on `ports`, bound to `port`.
/// Panics when the config no longer has exactly one `server-template` line or
/// one `bind` line (the test would no longer run what users run).
pub fn config_for(template: &str, ports: &[u16], port: u16) -> String {
    let mut out = String::new();
    let (mut templates, mut binds) = (0, 0);
    for line in template.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if trimmed.starts_with("server-template ") {
            templates += 1;
            for (i, node_port) in ports.iter().enumerate() {
                // What the template gives each slot (`check`), without the
                // Docker DNS that local nodes do not need.
                out.push_str(&format!(
                    "{indent}server node{} 127.0.0.1:{node_port} check\n",
                    i + 1
                ));
            }
        } else if trimmed.starts_with("bind ") {
            binds += 1;
            out.push_str(&format!("{indent}bind 127.0.0.1:{port}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert_eq!(
        templates, 1,
        "haproxy.cfg must have one server-template line"
    );
    assert_eq!(binds, 1, "haproxy.cfg must have one bind line");
    out
}

impl HaProxy {
    /// Starts HAProxy in front of `nodes` and waits until it answers `/readyz`.
    pub fn start(nodes: &[&Node]) -> HaProxy {
        let ports: Vec<u16> = nodes
            .iter()
            .map(|node| {
                node.url()
                    .rsplit(':')
                    .next()
                    .and_then(|port| port.parse().ok())
                    .expect("a node URL ends with its port")
            })
            .collect();
        HaProxy::start_on(&ports)
    }

    /// Starts HAProxy in front of whatever listens on these local `ports`.
    pub fn start_on(ports: &[u16]) -> HaProxy {
        let template = std::fs::read_to_string(crate_dir().join("haproxy/haproxy.cfg"))
            .expect("read haproxy/haproxy.cfg");
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("rain-haproxy-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create HAProxy's folder");
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, config_for(&template, ports, port)).expect("write haproxy.cfg");
        let program = if Path::new("/usr/sbin/haproxy").exists() {
            "/usr/sbin/haproxy"
        } else {
            "haproxy"
        };
        let mut child = Command::new(program)
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            // The config's `maxconn` needs twice as many descriptors as this
            // machine's hard limit may allow; `-n` takes precedence over it
            // and is plenty for a test.
            .args(["-n", "4000"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start haproxy ({e}): `apt-get install --no-install-recommends haproxy` (.ci/run does)")
            });
        let log = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().unwrap(), log.clone());
        collect(child.stderr.take().unwrap(), log.clone());
        let haproxy = HaProxy {
            child,
            port,
            dir,
            log,
        };
        haproxy.wait_ready();
        haproxy
    }

    fn wait_ready(&self) {
        let until = Instant::now() + Duration::from_secs(10);
        let address = format!("127.0.0.1:{}", self.port);
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(&address) {
                use std::io::{Read, Write};
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = stream.write_all(b"GET /readyz HTTP/1.0\r\n\r\n");
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            assert!(
                Instant::now() < until,
                "HAProxy did not answer /readyz with 200 within 10 s; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The balancer's URL (`http://127.0.0.1:PORT`), what clients connect to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything HAProxy wrote (its request log and any warning).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
