//! The HTTP API against a real `testbed` process: its own listener (never the
//! public port, never CORS), bearer tokens in their scopes, the emit API
//! reaching sockets, a node without tokens refusing every call but the health
//! checks, and both listeners stopped by a graceful shutdown.

mod support;

use std::time::Duration;

use reqwest::header::{ACCESS_CONTROL_ALLOW_ORIGIN, ORIGIN, WWW_AUTHENTICATE};
use serde_json::{Value, json};

use support::cluster::SioClient;
use support::{TEST_API_SECRET, plain, spawn_testbed};

const EMIT_SECRET: &str = "backend-secret-0123456789";
const READ_SECRET: &str = "prometheus-secret-0123456789";
const ADMIN_SECRET: &str = "operator-secret-0123456789";

fn tokens() -> String {
    format!("backend:emit:{EMIT_SECRET},prometheus:read:{READ_SECRET},ops:admin:{ADMIN_SECRET}")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// `(status, JSON body or Null)` of an emit with `secret` (None: no header).
async fn emit(api: &str, secret: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = http().post(format!("{api}/emit")).json(&body);
    if let Some(secret) = secret {
        request = request.bearer_auth(secret);
    }
    let response = request.send().await.expect("POST /emit");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(url: &str, secret: Option<&str>) -> reqwest::Response {
    let mut request = http().get(url);
    if let Some(secret) = secret {
        request = request.bearer_auth(secret);
    }
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

fn news() -> Value {
    json!({ "namespace": "/", "event": "news", "args": [{ "n": 1 }] })
}

#[tokio::test]
async fn the_api_is_on_its_own_listener_never_on_the_public_port_nor_under_cors() {
    let mut node = spawn_testbed(&[
        ("CORS_ORIGINS", "http://page.example"),
        ("SHUTDOWN_TIMEOUT_MS", "2000"),
        ("DRAIN_DELAY_MS", "100"),
    ]);
    let (public, api) = (node.url().to_string(), node.api_url().to_string());
    assert_ne!(public, api);

    // The public port has no API, whatever the token.
    for path in ["/emit", "/api/emit"] {
        let response = http()
            .post(format!("{public}{path}"))
            .bearer_auth(TEST_API_SECRET)
            .json(&news())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "public POST {path}");
    }
    let metrics = get(&format!("{public}/metrics"), Some(TEST_API_SECRET)).await;
    assert_eq!(metrics.status(), 404, "public /metrics");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(get(&format!("{public}{path}"), None).await.status(), 200);
        assert_eq!(get(&format!("{api}{path}"), None).await.status(), 200);
    }

    // On the API listener, metrics need a token.
    let metrics = get(&format!("{api}/metrics"), None).await;
    assert_eq!(metrics.status(), 401);
    let metrics = get(&format!("{api}/metrics"), Some(TEST_API_SECRET)).await;
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("rain_engine_sessions")
    );

    // No CORS on the API, not even for an origin the public port lets in.
    for origin in ["http://page.example", "https://evil.example"] {
        let preflight = http()
            .request(reqwest::Method::OPTIONS, format!("{api}/emit"))
            .header(ORIGIN, origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
            .await
            .unwrap();
        assert!(
            preflight
                .headers()
                .get(ACCESS_CONTROL_ALLOW_ORIGIN)
                .is_none(),
            "{origin}: {:?}",
            preflight.headers()
        );
        let post = http()
            .post(format!("{api}/emit"))
            .header(ORIGIN, origin)
            .bearer_auth(TEST_API_SECRET)
            .json(&news())
            .send()
            .await
            .unwrap();
        assert_eq!(post.status(), 202);
        assert!(post.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    }

    // A graceful shutdown stops both listeners.
    node.signal("-TERM");
    let status = node.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status}");
    for url in [&public, &api] {
        let after = http().get(format!("{url}/healthz")).send().await;
        assert!(after.is_err(), "{url} still answers after shutdown");
    }
}

#[tokio::test]
async fn every_call_needs_a_known_token_with_the_calls_scope() {
    let tokens = tokens();
    let node = spawn_testbed(&[("API_TOKENS", &tokens)]);
    let api = node.api_url();

    // No token, an unknown one, a near miss, a token's name or the whole entry: 401.
    for secret in [
        None,
        Some("not-a-secret-of-this-node"),
        Some(&EMIT_SECRET[..EMIT_SECRET.len() - 1]),
        Some("backend"),
        Some(&format!("backend:emit:{EMIT_SECRET}")[..]),
    ] {
        let (status, body) = emit(api, secret, news()).await;
        assert_eq!(status, 401, "{secret:?}: {body}");
        assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
        let metrics = get(&format!("{api}/metrics"), secret).await;
        assert_eq!(metrics.status(), 401, "{secret:?}");
        assert_eq!(metrics.headers()[WWW_AUTHENTICATE], "Bearer");
    }
    let basic = http()
        .post(format!("{api}/emit"))
        .basic_auth("backend", Some(EMIT_SECRET))
        .json(&news())
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);

    // Outside the token's scope: 403, naming the token.
    let (status, body) = emit(api, Some(READ_SECRET), news()).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("prometheus"),
        "{body}"
    );
    let metrics = get(&format!("{api}/metrics"), Some(EMIT_SECRET)).await;
    assert_eq!(metrics.status(), 403);
    let body: Value = metrics.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("backend"),
        "{body}"
    );

    // In scope; admin may do both.
    assert_eq!(emit(api, Some(EMIT_SECRET), news()).await.0, 202);
    assert_eq!(emit(api, Some(ADMIN_SECRET), news()).await.0, 202);
    for secret in [READ_SECRET, ADMIN_SECRET] {
        let metrics = get(&format!("{api}/metrics"), Some(secret)).await;
        assert_eq!(metrics.status(), 200);
    }

    // A reserved event name is refused even with a good token.
    let disconnect = json!({ "namespace": "/", "event": "disconnect" });
    let (status, body) = emit(api, Some(EMIT_SECRET), disconnect).await;
    assert_eq!(status, 400, "{body}");

    // Each emit is logged with the token's name; no secret is ever logged.
    support::eventually(
        Duration::from_secs(3),
        "emits logged with the token name",
        async || {
            let logs = plain(&node.stderr());
            let lines: Vec<&str> = logs.lines().filter(|l| l.contains("api: emit")).collect();
            let by = |name: &str| lines.iter().filter(|l| l.contains(name)).count();
            match (by("token=backend"), by("token=ops")) {
                (1, 1) => Ok(()),
                counts => Err(format!("{counts:?} in {lines:?}")),
            }
        },
    )
    .await;
    let logs = node.stderr();
    for secret in [EMIT_SECRET, READ_SECRET, ADMIN_SECRET] {
        assert!(!logs.contains(secret), "a secret is in the log:\n{logs}");
    }
}

#[tokio::test]
async fn an_emit_reaches_the_namespaces_sockets() {
    let tokens = tokens();
    let node = spawn_testbed(&[("API_TOKENS", &tokens)]);
    let mut client = SioClient::connect(node.url()).await;
    let (status, body) = emit(node.api_url(), Some(EMIT_SECRET), news()).await;
    assert_eq!((status, &body), (202, &json!({ "ok": true })));
    let news = client.next("news", Duration::from_secs(3)).await;
    assert_eq!(news.first(), json!({ "n": 1 }));
    client.close().await;
}

#[tokio::test]
async fn without_tokens_every_call_but_the_health_checks_is_refused() {
    let node = spawn_testbed(&[("API_TOKENS", "")]);
    let api = node.api_url();
    let (status, body) = emit(api, Some(TEST_API_SECRET), news()).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(emit(api, None, news()).await.0, 401);
    for secret in [None, Some(TEST_API_SECRET)] {
        assert_eq!(get(&format!("{api}/metrics"), secret).await.status(), 401);
        assert_eq!(get(&format!("{api}/anything"), secret).await.status(), 401);
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(get(&format!("{api}{path}"), None).await.status(), 200);
    }
    let warnings = plain(&node.stderr())
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("API_TOKENS is not set"))
        .count();
    assert_eq!(warnings, 1, "{}", node.stderr());
}
