//! The Redis backend's [`BackendInfo`]: what the deployment is like, read
//! from `INFO` and a bounded `SCAN` of the node's keys.
//!
//! Owns reading those figures and what a refusal means. The server's figures
//! (version, role, memory, clients, ops/s, pub/sub channels) come from one
//! `INFO`; when the user's ACL refuses it, each section the summary uses is
//! asked for alone (an ACL may allow `INFO server` but not `INFO memory`),
//! and what stays refused is `None` and named in `not_permitted`, never an
//! error: the README's recommended ACL allows neither `INFO` nor `SCAN`. The
//! key count is the distinct keys `SCAN MATCH <prefix>*` returns, bounded in
//! calls and time so that a Redis shared with much larger tenants cannot make
//! one API request scan it all; stopped early, the count is a lower bound and
//! marked approximate. A complete count is not marked: `SCAN` returns every
//! key present for the whole scan at least once, and duplicates are dropped,
//! so it is as exact as any count of a changing keyspace (keys written or
//! expiring meanwhile may or may not be in it). Runs on the traffic
//! connection through `Commands::run` (each call within the operation
//! timeout). Never reads or reports the URL or its credentials. Does not own
//! the summary's shape (`crate::cluster::backend_info`).

use std::collections::HashSet;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use tokio::time::Instant;

use super::{OP_TIMEOUT, RedisNode};
use crate::cluster::{BackendInfo, ClusterError};

/// The `INFO` sections the summary reads, asked for one by one when the
/// whole `INFO` is refused.
const SECTIONS: [&str; 5] = ["server", "clients", "memory", "stats", "replication"];
/// Keyspace slots one `SCAN` call looks at (its `COUNT`).
const SCAN_COUNT: u64 = 1000;
/// At most this many `SCAN` calls per summary: 100 000 slots, a few tens of
/// milliseconds of Redis's time.
const SCAN_CALLS: usize = 100;
/// And at most this long scanning, whatever Redis's speed.
const SCAN_BUDGET: std::time::Duration = OP_TIMEOUT;

/// The summary of the Redis deployment as `node` sees it.
pub(super) async fn backend_info(node: Arc<RedisNode>) -> Result<BackendInfo, ClusterError> {
    let mut info = BackendInfo::unknown("redis", node.ready());
    info.key_prefix = Some(node.keys.prefix().to_string());
    let text = read_info(&node, &mut info.not_permitted).await?;
    let figures = InfoFigures::parse(&text);
    info.version = figures.version;
    info.role = figures.role;
    info.used_memory_bytes = figures.used_memory_bytes;
    info.connected_clients = figures.connected_clients;
    info.ops_per_second = figures.ops_per_second;
    info.pubsub_channels = figures.pubsub_channels;
    match count_keys(&node).await {
        Ok(count) => {
            info.keys = Some(count.keys);
            info.keys_approximate = !count.complete;
        }
        Err(error) if refused(&error) => info.not_permitted.push("SCAN".to_string()),
        Err(error) => return Err(error),
    }
    Ok(info)
}

/// Whether Redis refused a command for the user's ACL.
fn refused(error: &ClusterError) -> bool {
    matches!(error, ClusterError::Redis(error) if error.code() == Some("NOPERM"))
}

/// The `INFO` text of every section the user may read; what it may not is
/// added to `not_permitted` (`INFO` when no section is allowed).
async fn read_info(
    node: &RedisNode,
    not_permitted: &mut Vec<String>,
) -> Result<String, ClusterError> {
    match info_command(node, None).await {
        Err(error) if refused(&error) => {}
        whole => return whole,
    }
    let mut text = String::new();
    let mut sections_refused = Vec::new();
    for section in SECTIONS {
        match info_command(node, Some(section)).await {
            Ok(part) => text.push_str(&part),
            Err(error) if refused(&error) => sections_refused.push(format!("INFO {section}")),
            Err(error) => return Err(error),
        }
    }
    if sections_refused.len() == SECTIONS.len() {
        not_permitted.push("INFO".to_string());
    } else {
        not_permitted.extend(sections_refused);
    }
    Ok(text)
}

async fn info_command(node: &RedisNode, section: Option<&str>) -> Result<String, ClusterError> {
    node.commands
        .run(async |connection| {
            let mut command = redis::cmd("INFO");
            if let Some(section) = section {
                command.arg(section);
            }
            command.query_async(connection).await
        })
        .await
}

/// The figures of an `INFO` text the summary uses; `None` for each one the
/// text lacks (a section not read, or a Redis-compatible server without it).
#[derive(Debug, Default, PartialEq, Eq)]
struct InfoFigures {
    version: Option<String>,
    role: Option<String>,
    used_memory_bytes: Option<u64>,
    connected_clients: Option<u64>,
    ops_per_second: Option<u64>,
    pubsub_channels: Option<u64>,
}

impl InfoFigures {
    /// Reads `name:value` lines; section headers (`# Server`), blank lines
    /// and fields it does not use are skipped, and a number that does not
    /// parse is `None` rather than a failure of the whole summary.
    fn parse(text: &str) -> InfoFigures {
        let mut figures = InfoFigures::default();
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.starts_with('#') {
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let number = || value.trim().parse::<u64>().ok();
            match name.trim() {
                "redis_version" => figures.version = Some(value.trim().to_string()),
                "role" => figures.role = Some(value.trim().to_string()),
                "used_memory" => figures.used_memory_bytes = number(),
                "connected_clients" => figures.connected_clients = number(),
                "instantaneous_ops_per_sec" => figures.ops_per_second = number(),
                "pubsub_channels" => figures.pubsub_channels = number(),
                _ => {}
            }
        }
        figures
    }
}

/// How many keys a scan found, and whether it saw the whole keyspace.
struct KeyCount {
    keys: u64,
    complete: bool,
}

/// Counts the distinct keys under the node's prefix, within [`SCAN_CALLS`]
/// calls and [`SCAN_BUDGET`].
async fn count_keys(node: &RedisNode) -> Result<KeyCount, ClusterError> {
    let pattern = format!("{}*", glob_escape(node.keys.prefix()));
    let started = Instant::now();
    // Keys' hashes, not the keys: the memory stays 8 bytes a key, however
    // long the names (a collision in 64 bits is not a concern at this size).
    let hasher = std::collections::hash_map::RandomState::new();
    let mut seen = HashSet::new();
    let mut cursor = 0u64;
    for _ in 0..SCAN_CALLS {
        let (next, keys): (u64, Vec<Vec<u8>>) = node
            .commands
            .run(async |connection| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query_async(connection)
                    .await
            })
            .await?;
        seen.extend(keys.iter().map(|key| {
            let mut state = hasher.build_hasher();
            key.hash(&mut state);
            std::hash::Hasher::finish(&state)
        }));
        if next == 0 {
            return Ok(KeyCount {
                keys: seen.len() as u64,
                complete: true,
            });
        }
        cursor = next;
        if started.elapsed() >= SCAN_BUDGET {
            break;
        }
    }
    Ok(KeyCount {
        keys: seen.len() as u64,
        complete: false,
    })
}

/// `text` as a Redis glob pattern matching exactly itself (a prefix may hold
/// `*`, `?`, `[` or `\`, which `MATCH` would read as a pattern).
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n\
        redis_mode:standalone\r\ntcp_port:6379\r\n\r\n# Clients\r\nconnected_clients:12\r\n\
        blocked_clients:0\r\n\r\n# Memory\r\nused_memory:1048576\r\n\
        used_memory_human:1.00M\r\n\r\n# Stats\r\ninstantaneous_ops_per_sec:345\r\n\
        pubsub_channels:7\r\npubsub_patterns:0\r\n\r\n# Replication\r\nrole:master\r\n\
        connected_slaves:0\r\nmaster_replid:abc:def\r\n";

    #[test]
    fn the_figures_are_read_from_info_text() {
        assert_eq!(
            InfoFigures::parse(INFO),
            InfoFigures {
                version: Some("7.0.15".into()),
                role: Some("master".into()),
                used_memory_bytes: Some(1_048_576),
                connected_clients: Some(12),
                ops_per_second: Some(345),
                pubsub_channels: Some(7),
            }
        );
    }

    #[test]
    fn sections_not_read_and_figures_that_are_not_numbers_are_none() {
        let figures = InfoFigures::parse(
            "# Server\nredis_version:6.2.1\n\n# Clients\nconnected_clients:lots\n",
        );
        assert_eq!(
            figures,
            InfoFigures {
                version: Some("6.2.1".into()),
                ..InfoFigures::default()
            }
        );
        assert_eq!(InfoFigures::parse(""), InfoFigures::default());
        assert_eq!(
            InfoFigures::parse("no colon here\n:\nused_memory:\n"),
            InfoFigures::default()
        );
    }

    #[test]
    fn a_prefix_is_matched_literally() {
        assert_eq!(glob_escape("rain:"), "rain:");
        assert_eq!(glob_escape(""), "");
        assert_eq!(glob_escape(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
    }
}
