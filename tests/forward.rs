//! No sticky sessions: every request of an Engine.IO session may land on any
//! node (real nodes on a private Redis). Polls and POSTs that land elsewhere
//! are forwarded to the session's owner, a websocket upgrade is relayed to
//! it; an unknown owner is `Session ID unknown`; the landing node makes the
//! Origin check and the payload limit, and a forged forwarding mark buys
//! nothing. (Official clients through HAProxy: `tests/balancer.rs`.)

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use support::cluster::{Node, RedisServer, spawn_nodes};

const PATH: &str = "/socket.io/?EIO=4&transport=polling";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// The packets of a polling payload (separated by 0x1e).
fn packets(body: &str) -> Vec<String> {
    body.split('\u{1e}').map(str::to_string).collect()
}

async fn get(node: &Node, sid: &str) -> (u16, String) {
    let response = http()
        .get(format!("{}{PATH}&sid={sid}", node.url()))
        .send()
        .await
        .expect("GET");
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn post(node: &Node, sid: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
    let response = http()
        .post(format!("{}{PATH}&sid={sid}", node.url()))
        .header("content-type", "text/plain;charset=UTF-8")
        .body(body)
        .send()
        .await
        .expect("POST");
    (response.status().as_u16(), response.text().await.unwrap())
}

/// GETs (from `nodes` in turn, answering pings through them) until a packet
/// starting with `prefix` arrives.
async fn poll_until(nodes: &[&Node], sid: &str, prefix: &str) -> String {
    for round in 0..20 {
        let node = nodes[round % nodes.len()];
        let (status, body) = get(node, sid).await;
        assert_eq!(status, 200, "GET through {}: {body}", node.id);
        for packet in packets(&body) {
            if packet == "2" {
                let (status, _) = post(nodes[(round + 1) % nodes.len()], sid, "3").await;
                assert_eq!(status, 200);
            } else if packet.starts_with(prefix) {
                return packet;
            }
        }
    }
    panic!("no packet starting with {prefix:?} in 20 polls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_serves_any_request_of_a_session() {
    let _serial = support::one_at_a_time().await;
    let redis = RedisServer::start();
    let nodes = tokio::task::block_in_place(|| {
        spawn_nodes(&redis.url(), &["A", "B", "C"], &[("MAX_PAYLOAD", "100000")])
    });
    let [a, b, c] = [&nodes[0], &nodes[1], &nodes[2]];
    for node in &nodes {
        node.wait_ready().await;
    }

    // The handshake on A: the sid names A ("A" in base64url).
    let response = http()
        .get(format!("{}{PATH}", a.url()))
        .send()
        .await
        .unwrap();
    let body = response.text().await.unwrap();
    let open: Value = serde_json::from_str(body.strip_prefix('0').expect("open packet")).unwrap();
    let sid = open["sid"].as_str().unwrap().to_string();
    assert!(sid.starts_with("QQ."), "{sid}");

    // CONNECT posted through B, its answer polled through C.
    assert_eq!(post(b, &sid, "40").await, (200, "ok".into()));
    let connect = poll_until(&[c], &sid, "40").await;
    assert!(connect.contains("\"sid\""), "{connect}");
    // An event through C, its echo through B and C in turn.
    assert_eq!(post(c, &sid, r#"42["echo","through C"]"#).await.0, 200);
    let echo = poll_until(&[b, c], &sid, "42[\"echo\"").await;
    assert_eq!(echo, r#"42["echo","through C"]"#);

    // The landing node's checks: a body over MAX_PAYLOAD is refused there
    // (counted by B), a foreign Origin too, and a made-up forwarding mark
    // does not skip that check.
    let (status, _) = post(b, &sid, vec![b'x'; 200_000]).await;
    assert_eq!(status, 413);
    let refused = b
        .metrics()
        .await
        .counter("rain_refused_total", &[("limit", "max_payload")]);
    assert_eq!(refused, 1.0, "B refused the body itself");
    for mark in [None, Some("1700000000000.AAAA"), Some("junk")] {
        let mut request = http()
            .get(format!("{}{PATH}&sid={sid}", b.url()))
            .header("origin", "http://evil.example");
        if let Some(mark) = mark {
            request = request.header("x-rain-forwarded", mark);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 403, "mark {mark:?}");
    }
    // An owner no node knows of, and a sid that names none: the usual answer.
    for unknown in ["bm9ib2R5.AAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAA"] {
        let (status, body) = get(b, unknown).await;
        assert_eq!(status, 400, "{unknown}");
        assert!(body.contains("Session ID unknown"), "{body}");
    }
    // The session lived through all of that.
    assert_eq!(post(b, &sid, r#"42["echo","still here"]"#).await.0, 200);
    let echo = poll_until(&[c], &sid, "42[\"echo\"").await;
    assert_eq!(echo, r#"42["echo","still here"]"#);

    // The upgrade lands on C: relayed to A over a websocket of its own.
    let ws_url = format!(
        "{}/socket.io/?EIO=4&transport=websocket&sid={sid}",
        c.url().replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("upgrade through C");
    ws.send(Message::text("2probe")).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(3), ws.next())
        .await
        .unwrap();
    assert_eq!(answer.unwrap().unwrap().to_text().unwrap(), "3probe");
    ws.send(Message::text("5")).await.unwrap();
    ws.send(Message::text(r#"42["echo","over the relay"]"#))
        .await
        .unwrap();
    let echo = loop {
        let message = tokio::time::timeout(Duration::from_secs(3), ws.next())
            .await
            .expect("echo over the relay")
            .unwrap()
            .unwrap();
        let text = message.to_text().unwrap().to_string();
        if text == "2" {
            ws.send(Message::text("3")).await.unwrap();
        } else if text.starts_with("42[\"echo\"") {
            break text;
        }
    };
    assert_eq!(echo, r#"42["echo","over the relay"]"#);
    // Polling is over for this session, wherever the GET lands.
    assert_eq!(get(b, &sid).await.0, 400);

    let forwarded = |metrics: &support::cluster::Metrics, transport: &str| {
        metrics.counter(
            "rain_forwarded_total",
            &[("transport", transport), ("outcome", "served")],
        )
    };
    assert!(forwarded(&b.metrics().await, "polling") >= 2.0);
    assert!(forwarded(&c.metrics().await, "polling") >= 2.0);
    assert_eq!(forwarded(&c.metrics().await, "websocket"), 1.0);
    assert_eq!(forwarded(&a.metrics().await, "polling"), 0.0, "A owns it");
    assert_eq!(a.testbed().stderr().matches("panicked").count(), 0);
    ws.close(None).await.unwrap();
}
