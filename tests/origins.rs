//! Which pages may talk to a node, against a real `testbed` process with real
//! HTTP and websocket requests (reqwest, tokio-tungstenite) and the official
//! socket.io-client: with `CORS_ORIGINS` unset no CORS header is ever sent and
//! only requests without `Origin` or from the node's own origin get in; with it
//! set, the listed origins get CORS headers and every other `Origin` is refused
//! (403) on the polling handshake, on later polling requests and on the
//! websocket handshake (cross-site websocket hijacking).

mod support;

use std::time::Duration;

use reqwest::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_ORIGIN, HeaderMap, ORIGIN,
};
use serde_json::Value;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use support::{crate_dir, run_client, spawn_testbed};

const EVIL: &str = "https://evil.example";
const APP: &str = "http://app.example:8000";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

async fn send(request: reqwest::RequestBuilder, origin: Option<&str>) -> Answer {
    let request = match origin {
        Some(origin) => request.header(ORIGIN, origin),
        None => request,
    };
    let response = request.send().await.expect("request");
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap_or_default(),
    }
}

/// `GET /socket.io/?EIO=4&transport=polling` (a polling handshake).
async fn handshake(node: &str, origin: Option<&str>) -> Answer {
    let url = format!("{node}/socket.io/?EIO=4&transport=polling");
    send(http().get(url), origin).await
}

/// A CORS preflight of a polling POST.
async fn preflight(node: &str, origin: &str) -> Answer {
    let url = format!("{node}/socket.io/?EIO=4&transport=polling");
    let request = http()
        .request(reqwest::Method::OPTIONS, url)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type");
    send(request, Some(origin)).await
}

/// A websocket handshake: `Ok` once upgraded, else the HTTP status.
async fn websocket(node: &str, origin: Option<&str>) -> Result<(), u16> {
    let url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        node.replacen("http://", "ws://", 1)
    );
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    let connect = tokio_tungstenite::connect_async(request);
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(tungstenite::Error::Http(response))) => Err(response.status().as_u16()),
        Ok(Err(error)) => panic!("websocket to {node} with {origin:?}: {error}"),
        Err(_) => panic!("websocket to {node} with {origin:?} timed out"),
    }
}

fn assert_forbidden(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 403, "{what}: {}", answer.body);
    let body: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
    assert_eq!(
        body["code"], 4,
        "{what}: an Engine.IO error body: {}",
        answer.body
    );
    assert!(
        answer.headers.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
        "{what}: CORS headers on a refusal: {:?}",
        answer.headers
    );
}

fn assert_no_cors(answer: &Answer, what: &str) {
    assert!(
        answer.headers.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none()
            && answer
                .headers
                .get(ACCESS_CONTROL_ALLOW_CREDENTIALS)
                .is_none(),
        "{what}: {:?}",
        answer.headers
    );
}

/// The session id of a polling handshake's open packet.
fn sid(answer: &Answer) -> String {
    let open: Value = serde_json::from_str(answer.body.trim_start_matches('0')).unwrap();
    open["sid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn without_cors_origins_only_the_nodes_own_pages_and_non_browsers_get_in() {
    let testbed = spawn_testbed(&[]);
    let node = testbed.url();
    let port = node.rsplit(':').next().unwrap();

    let answer = handshake(node, None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_no_cors(&answer, "no Origin");
    let answer = handshake(node, Some(node)).await;
    assert_eq!(answer.status, 200, "same origin: {}", answer.body);
    assert_no_cors(&answer, "same origin");

    let localhost = format!("http://localhost:{port}");
    for origin in [EVIL, "null", &localhost, "http://127.0.0.1:1"] {
        assert_forbidden(&handshake(node, Some(origin)).await, origin);
        assert_no_cors(&preflight(node, origin).await, origin);
        // A browser lets any page open a websocket: the node must refuse it.
        assert_eq!(websocket(node, Some(origin)).await, Err(403), "{origin}");
    }
    assert_eq!(websocket(node, None).await, Ok(()));
    assert_eq!(websocket(node, Some(node)).await, Ok(()));
}

#[tokio::test]
async fn with_cors_origins_only_the_listed_pages_get_in() {
    let testbed = spawn_testbed(&[("CORS_ORIGINS", &format!("{APP},https://other.example"))]);
    let node = testbed.url();

    let answer = handshake(node, Some(APP)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.headers[ACCESS_CONTROL_ALLOW_ORIGIN], APP);
    assert_eq!(answer.headers[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    let answer = preflight(node, APP).await;
    assert_eq!(answer.headers[ACCESS_CONTROL_ALLOW_ORIGIN], APP);
    assert_eq!(websocket(node, Some(APP)).await, Ok(()));

    // Not listed: refused, and no CORS header tells a browser otherwise.
    for origin in [EVIL, "http://app.example:8001", "http://app.example"] {
        assert_forbidden(&handshake(node, Some(origin)).await, origin);
        // (The CORS layer answers every preflight; without an allowed origin
        // the browser gives up.)
        let answer = preflight(node, origin).await;
        assert!(
            answer.headers.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
            "{origin}: {:?}",
            answer.headers
        );
        assert_eq!(websocket(node, Some(origin)).await, Err(403), "{origin}");
    }
    // Without Origin, or from the node's own: always in.
    assert_eq!(handshake(node, None).await.status, 200);
    assert_eq!(handshake(node, Some(node)).await.status, 200);
    assert_eq!(websocket(node, None).await, Ok(()));

    // A session opened without Origin is not reachable by another page.
    let sid = sid(&handshake(node, None).await);
    let session = format!("{node}/socket.io/?EIO=4&transport=polling&sid={sid}");
    assert_forbidden(&send(http().get(&session), Some(EVIL)).await, "GET sid");
    let post = http().post(&session).body("40");
    assert_forbidden(&send(post, Some(EVIL)).await, "POST sid");
    // ... while its own requests still work: connect to `/`, read the answer.
    let post = send(http().post(&session).body("40"), None).await;
    assert_eq!((post.status, post.body.as_str()), (200, "ok"));
    let poll = send(http().get(&session), Some(APP)).await;
    assert_eq!(poll.status, 200, "{}", poll.body);
    assert!(poll.body.starts_with("40{"), "{}", poll.body);
}

#[test]
fn the_official_client_is_refused_from_an_unlisted_origin() {
    let js = crate_dir().join("tests").join("js");
    assert!(
        js.join("node_modules/socket.io-client/package.json")
            .is_file(),
        "socket.io-client is not installed: run `scripts/test` once (npm ci in tests/js)"
    );
    let testbed = spawn_testbed(&[("CORS_ORIGINS", APP)]);
    let run = |origin: &str| {
        let out = run_client(
            &testbed,
            "node",
            &["origin.mjs", origin],
            &js,
            Duration::from_secs(20),
        );
        out.stdout.trim().to_string()
    };
    assert_eq!(run(APP), "connected");
    assert_eq!(run("-"), "connected");
    assert_eq!(run(testbed.url()), "connected");
    assert_eq!(run(EVIL), "connect_error: websocket error");
}
