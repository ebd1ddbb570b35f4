//! The Redis summary behind the Cloud API's `/mothership` routes, against a
//! real `redis-server` the test starts on a free port.
//!
//! At the library level (`rain_node::cluster::connect` and
//! `Membership::backend_info`): the figures of `INFO` and the key count under
//! the prefix for a user allowed everything (keys of other prefixes not
//! counted; a keyspace larger than the scan's bound counted as a lower bound,
//! marked approximate); for a user with the README's recommended ACL, which
//! allows neither `INFO` nor `SCAN`, every figure null and the call still a
//! success; for an ACL allowing only `INFO server` and `SCAN`, just those.
//! Through a real node's API listener: `GET /mothership/all` and
//! `GET /mothership/default` (read scope), 404 for another id, and
//! `POST /mothership` refused with 409 (admin scope). No answer ever holds the
//! URL or the password.

mod support;

use std::sync::Arc;
use std::time::Duration;

use rain_node::cluster::{BackendInfo, Cluster};
use rain_node::config::Settings;
use serde_json::Value;

use support::cluster::{RedisServer, spawn_node};
use support::{TEST_API_SECRET, crate_dir, eventually};

/// The ACL user's password: never in any answer.
const PASSWORD: &str = "info-Pa55-s3cret-4e1b";
const READ_SECRET: &str = "reader-secret-0123456789";

/// The README's recommended ACL for `rain`, with [`PASSWORD`] and `prefix`,
/// and `extra` rules: the words after `ACL SETUSER`.
fn readme_acl(prefix: &str, extra: &[&str]) -> Vec<String> {
    let readme = std::fs::read_to_string(crate_dir().join("README.md")).expect("read README.md");
    let line = readme
        .lines()
        .find(|line| line.starts_with("ACL SETUSER rain "))
        .expect("README.md has no `ACL SETUSER rain …` line");
    line.split_whitespace()
        .skip(2)
        .map(|word| {
            word.replace(">PASSWORD", &format!(">{PASSWORD}"))
                .replace("rain:*", &format!("{prefix}*"))
        })
        .chain(extra.iter().map(|rule| rule.to_string()))
        .collect()
}

async fn set_acl(redis: &RedisServer, words: Vec<String>) {
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(words)
        .query_async(&mut redis.conn().await)
        .await
        .expect("ACL SETUSER rain");
}

/// `rain`'s URL for the test's server (holds the password).
fn acl_url(redis: &RedisServer) -> String {
    format!("redis://rain:{PASSWORD}@127.0.0.1:{}", redis.port())
}

/// A node's cluster backend at `url`, under `prefix`, once it is ready.
async fn cluster(url: &str, prefix: &str) -> Arc<dyn Cluster> {
    let settings = Settings {
        redis_server: Some(url.to_string()),
        key_prefix: prefix.to_string(),
        node_id: format!("info-{}", prefix.trim_end_matches(':')),
        ..Settings::default()
    };
    let cluster = rain_node::cluster::connect(&settings)
        .await
        .expect("connect to the test's redis-server");
    eventually(Duration::from_secs(10), "backend ready", async || {
        cluster
            .is_ready()
            .then_some(())
            .ok_or("not ready".to_string())
    })
    .await;
    cluster
}

/// Writes `count` keys named `{prefix}{i}`, in batches.
async fn write_keys(redis: &RedisServer, prefix: &str, count: usize) {
    let mut connection = redis.conn().await;
    let keys: Vec<(String, u8)> = (0..count).map(|i| (format!("{prefix}{i}"), 1)).collect();
    for batch in keys.chunks(10_000) {
        let _: () = redis::cmd("MSET")
            .arg(batch)
            .query_async(&mut connection)
            .await
            .expect("MSET");
    }
}

/// Keys under `prefix` by the test's own full scan.
async fn keys_under(redis: &RedisServer, prefix: &str) -> u64 {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut redis.conn().await)
        .await
        .expect("KEYS");
    keys.len() as u64
}

/// The summary's JSON text holds neither the password nor where Redis is.
fn assert_no_secret(info: &BackendInfo, redis: &RedisServer) {
    let text = serde_json::to_string(info).unwrap();
    for secret in [
        PASSWORD,
        "redis://",
        "127.0.0.1",
        &format!(":{}", redis.port()),
    ] {
        assert!(!text.contains(secret), "{secret:?} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_allowed_everything_gets_every_figure_and_its_own_keys() {
    let redis = RedisServer::start();
    write_keys(&redis, "ri1:k", 25).await;
    write_keys(&redis, "other:", 500).await;
    let cluster = cluster(&redis.url(), "ri1:").await;
    let info = cluster.backend_info().await.expect("backend_info");

    let version: String = {
        let text: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut redis.conn().await)
            .await
            .unwrap();
        let line = text.lines().find(|l| l.starts_with("redis_version:"));
        line.unwrap()["redis_version:".len()..].trim().to_string()
    };
    assert_eq!(info.id, "default");
    assert_eq!(info.kind, "redis");
    assert!(info.ready);
    assert_eq!(info.key_prefix.as_deref(), Some("ri1:"));
    assert_eq!(info.version.as_deref(), Some(version.as_str()), "{info:?}");
    assert_eq!(info.role.as_deref(), Some("master"), "{info:?}");
    assert!(info.used_memory_bytes.unwrap() > 100_000, "{info:?}");
    assert!(info.connected_clients.unwrap() >= 2, "{info:?}");
    assert!(info.ops_per_second.is_some(), "{info:?}");
    // The node's own channel, at least.
    assert!(info.pubsub_channels.unwrap() >= 1, "{info:?}");
    assert!(info.not_permitted.is_empty(), "{info:?}");
    // The 25 keys and the node's own records; never the 500 of `other:`.
    let keys = info.keys.unwrap();
    assert!((25..60).contains(&keys), "{info:?}");
    assert!(!info.keys_approximate, "{info:?}");
    let now = keys_under(&redis, "ri1:").await;
    assert!(now.abs_diff(keys) <= 3, "scan {keys}, KEYS {now}");
    assert_no_secret(&info, &redis);

    // The JSON is the contract: every field, and it reads back.
    let json = serde_json::to_value(&info).unwrap();
    for field in [
        "id",
        "kind",
        "ready",
        "key_prefix",
        "version",
        "role",
        "used_memory_bytes",
        "connected_clients",
        "ops_per_second",
        "pubsub_channels",
        "keys",
        "keys_approximate",
        "not_permitted",
    ] {
        assert!(json.get(field).is_some(), "{field} missing: {json}");
    }
    assert_eq!(serde_json::from_value::<BackendInfo>(json).unwrap(), info);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyspace_over_the_scan_bound_is_counted_as_a_lower_bound() {
    let redis = RedisServer::start();
    // More slots than the scan looks at (100 calls of COUNT 1000), most of
    // them another tenant's.
    write_keys(&redis, "big:", 250_000).await;
    write_keys(&redis, "ri3:k", 1_000).await;
    let cluster = cluster(&redis.url(), "ri3:").await;
    let info = cluster.backend_info().await.expect("backend_info");
    assert!(info.keys_approximate, "{info:?}");
    let keys = info.keys.unwrap();
    assert!(keys < keys_under(&redis, "ri3:").await, "{info:?}");
    assert!(info.version.is_some(), "{info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_readme_acl_the_figures_are_null_and_the_call_succeeds() {
    let redis = RedisServer::start();
    set_acl(&redis, readme_acl("ri2:", &[])).await;
    let cluster = cluster(&acl_url(&redis), "ri2:").await;
    let info = cluster.backend_info().await.expect("backend_info");
    let mut expected = BackendInfo::unknown("redis", true);
    expected.key_prefix = Some("ri2:".to_string());
    expected.not_permitted = vec!["INFO".to_string(), "SCAN".to_string()];
    assert_eq!(info, expected);
    assert_no_secret(&info, &redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_allowing_one_info_section_and_scan_gets_just_those() {
    let redis = RedisServer::start();
    set_acl(&redis, readme_acl("ri5:", &["+info|server", "+scan"])).await;
    write_keys(&redis, "ri5:k", 10).await;
    let cluster = cluster(&acl_url(&redis), "ri5:").await;
    let info = cluster.backend_info().await.expect("backend_info");
    assert!(info.version.is_some(), "{info:?}");
    assert_eq!(
        (
            &info.role,
            info.used_memory_bytes,
            info.connected_clients,
            info.ops_per_second,
            info.pubsub_channels
        ),
        (&None, None, None, None, None),
        "{info:?}"
    );
    assert_eq!(
        info.not_permitted,
        [
            "INFO clients",
            "INFO memory",
            "INFO stats",
            "INFO replication"
        ]
    );
    assert!(info.keys.unwrap() >= 10, "{info:?}");
    assert_no_secret(&info, &redis);
}

/// Redis gone: an error within the operation timeout, not a hang nor a
/// summary of stale figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_gone_the_summary_is_an_error_soon() {
    let mut redis = RedisServer::start();
    let cluster = cluster(&redis.url(), "ri6:").await;
    redis.stop();
    let started = std::time::Instant::now();
    let error = cluster.backend_info().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{error}");
    assert!(!error.to_string().contains("127.0.0.1"), "{error}");
}

async fn api(method: reqwest::Method, url: String, secret: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(secret)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Through a real node's API, as the README's ACL user: the one endpoint,
/// `default`, with null figures (200, not 5xx); another id 404; creating one
/// 409 with the reason; the scopes read and admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mothership_routes_show_the_one_endpoint_and_refuse_another() {
    let redis = RedisServer::start();
    set_acl(&redis, readme_acl("ri4:", &[])).await;
    let tokens = format!("test:admin:{TEST_API_SECRET},reader:read:{READ_SECRET}");
    let node = spawn_node(
        &acl_url(&redis),
        "info-api",
        &[("KEY_PREFIX", "ri4:"), ("API_TOKENS", &tokens)],
    );
    node.wait_ready().await;
    let base = node.api_url();
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    let (status, all) = api(get.clone(), format!("{base}/mothership/all"), READ_SECRET).await;
    assert_eq!(status, 200, "{all}");
    let list = all.as_array().expect("a list");
    assert_eq!(list.len(), 1, "{all}");
    assert_eq!(list[0]["id"], "default");
    assert_eq!(list[0]["kind"], "redis");
    assert_eq!(list[0]["ready"], true);
    assert_eq!(list[0]["version"], Value::Null);
    assert_eq!(list[0]["keys"], Value::Null);

    let (status, one) = api(
        get.clone(),
        format!("{base}/mothership/default"),
        READ_SECRET,
    )
    .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one, list[0]);

    let (status, none) = api(
        get.clone(),
        format!("{base}/mothership/elsewhere"),
        READ_SECRET,
    )
    .await;
    assert_eq!(status, 404, "{none}");
    let error = none["error"].as_str().unwrap();
    assert!(error.contains("no Redis endpoint \"elsewhere\""), "{none}");

    let (status, refused) = api(post.clone(), format!("{base}/mothership"), TEST_API_SECRET).await;
    assert_eq!(status, 409, "{refused}");
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.contains("REDIS_SERVER") && error.contains("restart"),
        "{refused}"
    );
    let (status, _) = api(post, format!("{base}/mothership"), READ_SECRET).await;
    assert_eq!(status, 403, "creating needs the admin scope");
    let (status, _) = api(get, format!("{base}/mothership/all"), "not-a-token").await;
    assert_eq!(status, 401);

    for answer in [&all, &one, &none, &refused] {
        let text = answer.to_string();
        for secret in [PASSWORD, "redis://", "127.0.0.1"] {
            assert!(!text.contains(secret), "{secret:?} in {text}");
        }
    }
}
