//! Who the client is, end to end: a `rain-node` process whose `AUTH_URL` is a
//! real HTTP auth backend started here (axum, on a free port, on a runtime of
//! its own), the official socket.io-client (`tests/js_identity/identity.mjs`)
//! connecting with `auth: {token}`, and an HTTP component backend that is told
//! the user.
//!
//! The backend checks every request's `X-Rain-Signature` itself (recomputing
//! the HMAC-SHA256 of `timestamp.body` with `BACKEND_SECRET`) and answers 401
//! to anything unsigned, so every accepted connect proves a signed request.
//! The node runs with `LOG=debug`; its log must hold neither a session token
//! nor a session id the client was given, nor the backend secret.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use support::{ComponentsDir, crate_dir, run_client, spawn_program};

const BACKEND_SECRET: &str = "identity-test-backend-secret";
const BIN: &str = env!("CARGO_BIN_EXE_rain-node");

/// One request the backend received: its path, JSON body, and whether its
/// signature verified.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    body: Value,
    signed: bool,
}

/// Whether `headers` carry a valid signature of `body` (and a timestamp within
/// five minutes of now), recomputed here as a backend would.
fn signature_ok(headers: &HeaderMap, body: &[u8]) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(timestamp), Some(signature)) = (text("x-rain-timestamp"), text("x-rain-signature"))
    else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if timestamp
        .parse::<u64>()
        .map_or(true, |t| t.abs_diff(now) > 300)
    {
        return false;
    }
    let Some(hex) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(BACKEND_SECRET.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The auth backend's answer for a CONNECT's `auth.token`.
async fn auth_answer(body: &Value) -> Response {
    let token = body["auth"]["token"].as_str().unwrap_or_default();
    let ok = |value: Value| (StatusCode::OK, axum::Json(value)).into_response();
    match token {
        "" => ok(json!({ "error": "no token" })),
        "bad" => ok(json!({ "error": "bad token" })),
        "long-error" => ok(json!({ "error": format!("nope{}", "x".repeat(1000)) })),
        "slow" => {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            ok(json!({ "user": "slow" }))
        }
        "redirect" => (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, "/ok")]).into_response(),
        "status-500" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        "huge" => ok(json!({ "user": "huge", "pad": "x".repeat(100_000) })),
        "shapeless" => ok(json!({ "user": 5 })),
        other => match other.strip_prefix("good-") {
            Some(user) => ok(json!({ "user": user })),
            None => ok(json!({ "error": "unknown token" })),
        },
    }
}

/// The HTTP component's answer: what it was told of the client.
fn component_answer(body: &Value) -> Response {
    axum::Json(json!({
        "data": {
            "user": body["user"],
            "session": body["session"]["id"],
            "data": body["session"]["data"],
        }
    }))
    .into_response()
}

/// The backend (auth at `/auth`, the component at `/probe`, `/ok` accepts
/// anyone: a redirect must not reach it) on its own runtime.
struct Backend {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Backend {
    fn start() -> Backend {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let recorded = received.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let recorded = recorded.clone();
            async move {
                let signed = signature_ok(&headers, &body);
                let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                recorded.lock().unwrap().push(Received {
                    path: uri.path().to_string(),
                    body: json.clone(),
                    signed,
                });
                if !signed {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                match uri.path() {
                    "/auth" => auth_answer(&json).await,
                    "/probe" => component_answer(&json),
                    "/ok" => axum::Json(json!({ "user": "redirected" })).into_response(),
                    _ => StatusCode::NOT_FOUND.into_response(),
                }
            }
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Backend {
            url,
            received,
            _runtime: runtime,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// A `COMPONENTS_DIR` with the `probe` component's descriptor.
fn probe_components(backend: &str) -> ComponentsDir {
    ComponentsDir::new(&[(
        "probe.json",
        json!({
            "id": "probe", "version": "1.0", "channels": ["main"],
            "handler": { "kind": "http", "url": format!("{backend}/probe"), "timeout_ms": 2000 },
        }),
    )])
}

/// The connect-auth hook decides every namespace CONNECT, signed; the user
/// reaches `/core` and an HTTP component; the node's debug log names no
/// session.
#[test]
fn auth_url_decides_connects_and_the_user_reaches_backends() {
    let backend = Backend::start();
    let dir = probe_components(&backend.url);
    let auth_url = format!("{}/auth", backend.url);
    let node = spawn_program(
        std::path::Path::new(BIN),
        &[
            ("AUTH_URL", &auth_url),
            ("AUTH_TIMEOUT_MS", "500"),
            ("BACKEND_SECRET", BACKEND_SECRET),
            ("COMPONENTS", ""),
            ("COMPONENTS_DIR", dir.path()),
            ("LOG", "debug"),
        ],
    );
    let out = run_client(
        &node,
        "node",
        &["identity.mjs"],
        &crate_dir().join("tests/js_identity"),
        Duration::from_secs(60),
    );
    assert!(out.stdout.contains("DONE"), "{}", out.stdout);

    let received = backend.received();
    assert!(
        received.iter().all(|r| r.signed),
        "unsigned requests: {received:?}"
    );
    assert!(
        !received.iter().any(|r| r.path == "/ok"),
        "a redirect was followed: {received:?}"
    );
    // What the hook is asked: the namespace, the auth payload (without the
    // session token), the safe headers (no rain_session), the address.
    let auths: Vec<&Value> = received
        .iter()
        .filter(|r| r.path == "/auth")
        .map(|r| &r.body)
        .collect();
    assert_eq!(
        auths[0],
        &json!({
            "namespace": "/core",
            "auth": { "token": "good-ann" },
            "headers": { "user-agent": "identity-test", "cookie": "theme=dark" },
            "address": "127.0.0.1",
        })
    );
    assert!(
        auths
            .iter()
            .all(|body| body["auth"].get("sessionId").is_none()),
        "a session token reached the auth backend: {auths:?}"
    );
    // The component was told the user (as were its session data).
    let probe = received
        .iter()
        .find(|r| r.path == "/probe" && r.body["event"] == "whoami")
        .expect("the component's backend got the event");
    assert_eq!(probe.body["user"], "bob", "{:?}", probe.body);

    // The refusals' detail went to the node's log; no session did.
    let stderr = node.stderr();
    assert!(stderr.contains("AUTH_URL gave no decision"), "{stderr}");
    let secrets: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("SECRET "))
        .collect();
    assert!(secrets.len() >= 8, "{}", out.stdout);
    for secret in secrets {
        assert!(
            !stderr.contains(secret),
            "the node's log holds a session token or id"
        );
    }
    assert!(
        !stderr.contains(BACKEND_SECRET),
        "the backend secret was logged"
    );
    assert!(stderr.contains("DEBUG"), "LOG=debug wrote no debug lines");
}

/// The `Set-Cookie` a polling handshake to `node` gets (none when the cookie
/// it sent named a valid session), with `X-Forwarded-Proto: https` when
/// `https`, sending `cookie` when given.
fn handshake(node: &support::Testbed, https: bool, cookie: Option<&str>) -> Option<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut request = reqwest::Client::new()
            .get(format!("{}/socket.io/?EIO=4&transport=polling", node.url()));
        if https {
            request = request.header("x-forwarded-proto", "https");
        }
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.expect("handshake");
        assert_eq!(response.status(), 200);
        response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
}

fn handshake_cookie(node: &support::Testbed, https: bool) -> String {
    handshake(node, https, None).expect("a session cookie")
}

/// During a rotation (`SESSION_SECRET_PREVIOUS` = the old secret) tokens of
/// the old secret still name their session; after it, they get a fresh one.
#[test]
fn tokens_of_the_previous_secret_verify_until_the_rotation_ends() {
    const OLD: &str = "old-session-secret-0123456789abcdef";
    const NEW: &str = "new-session-secret-0123456789abcdef";
    let before = support::spawn_testbed(&[("SESSION_SECRET", OLD)]);
    let issued = handshake_cookie(&before, false);
    let token = issued.split(';').next().unwrap().to_string(); // rain_session=…
    // The issuing node itself keeps it (no new cookie).
    assert_eq!(handshake(&before, false, Some(&token)), None);

    let rotating =
        support::spawn_testbed(&[("SESSION_SECRET", NEW), ("SESSION_SECRET_PREVIOUS", OLD)]);
    assert_eq!(handshake(&rotating, false, Some(&token)), None);

    let after = support::spawn_testbed(&[("SESSION_SECRET", NEW)]);
    let fresh = handshake(&after, false, Some(&token)).expect("a fresh session");
    let id = token
        .trim_start_matches("rain_session=")
        .split('.')
        .next()
        .unwrap();
    assert!(!fresh.contains(id), "{fresh}");
}

/// `COOKIE_SECURE=auto` marks the cookie `Secure` only when a trusted proxy
/// says the client came over HTTPS; `true` and `false` force it.
#[test]
fn the_session_cookie_is_secure_per_cookie_secure() {
    let secure = |cookie: &str| cookie.split(';').any(|part| part.trim() == "Secure");
    let behind_proxy = support::spawn_testbed(&[("TRUSTED_PROXIES", "127.0.0.1")]);
    let https = handshake_cookie(&behind_proxy, true);
    assert!(secure(&https), "{https}");
    for part in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(https.contains(part), "{https}");
    }
    let plain = handshake_cookie(&behind_proxy, false);
    assert!(!secure(&plain), "{plain}");

    // From an untrusted peer, X-Forwarded-Proto is the client's word: ignored.
    let direct = support::spawn_testbed(&[]);
    let claimed = handshake_cookie(&direct, true);
    assert!(!secure(&claimed), "{claimed}");

    let always = support::spawn_testbed(&[("COOKIE_SECURE", "true")]);
    let forced = handshake_cookie(&always, false);
    assert!(secure(&forced), "{forced}");
    let never =
        support::spawn_testbed(&[("COOKIE_SECURE", "false"), ("TRUSTED_PROXIES", "127.0.0.1")]);
    let off = handshake_cookie(&never, true);
    assert!(!secure(&off), "{off}");
}

/// A node that calls a backend unsigned says so once, at start.
#[test]
fn a_node_warns_when_backends_get_unsigned_requests() {
    let unsigned = support::spawn_testbed(&[("AUTH_URL", "http://127.0.0.1:9/auth")]);
    let warned = || {
        unsigned
            .stderr()
            .matches("AUTH_URL is set without BACKEND_SECRET")
            .count()
    };
    // Written before the listening line; its reader thread may lag a little.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while warned() == 0 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(warned(), 1, "{}", unsigned.stderr());
    let signed = support::spawn_testbed(&[
        ("AUTH_URL", "http://127.0.0.1:9/auth"),
        ("BACKEND_SECRET", BACKEND_SECRET),
    ]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !signed.stderr().contains("without BACKEND_SECRET"),
        "{}",
        signed.stderr()
    );
}
