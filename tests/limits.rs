//! Bad input and limits, against a real testbed process over real sockets:
//! over-size payloads, malformed packets, too many attachments, a client that
//! stops reading, graceful shutdown. Each test checks that the offender alone is
//! cut off and that another client on the same node keeps being served.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use support::{ComponentsDir, Testbed, spawn_testbed};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(5);

/// Opens a websocket Engine.IO session and joins the main namespace.
async fn connect(testbed: &Testbed) -> Ws {
    connect_with(testbed, &[]).await
}

/// [`connect`] with extra request headers (`X-Forwarded-For`, …).
async fn connect_with(testbed: &Testbed, headers: &[(&str, &str)]) -> Ws {
    let mut ws = match ws_handshake(testbed, headers).await {
        Ok(ws) => ws,
        Err((status, body)) => panic!("websocket refused: {status} {body}"),
    };
    ws.send(Message::text("40")).await.unwrap();
    let connected = next_text(&mut ws).await.expect("connect reply");
    assert!(
        connected.starts_with("40{\"sid\""),
        "connect reply: {connected}"
    );
    let welcome = next_text(&mut ws).await.expect("welcome");
    assert!(welcome.starts_with("42[\"welcome\""), "welcome: {welcome}");
    ws
}

/// A websocket Engine.IO handshake with extra request headers: the open
/// websocket (handshake packet read), or the HTTP status and body of a refusal.
async fn ws_handshake(testbed: &Testbed, headers: &[(&str, &str)]) -> Result<Ws, (u16, String)> {
    use tokio_tungstenite::tungstenite::{Error, client::IntoClientRequest};
    let url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        testbed.url().replace("http", "ws")
    );
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes());
        request
            .headers_mut()
            .insert(name.unwrap(), value.parse().unwrap());
    }
    match connect_async(request).await {
        Ok((mut ws, _)) => {
            let open = next_text(&mut ws).await.expect("engine.io handshake");
            assert!(open.starts_with("0{"), "handshake: {open}");
            Ok(ws)
        }
        Err(Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default();
            Err((status, body))
        }
        Err(other) => panic!("websocket handshake failed: {other}"),
    }
}

/// The next text frame that is not a ping (answered), or `None` once the
/// connection is closed.
async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no frame within the wait")
        {
            Some(Ok(Message::Text(text))) if text.as_str() == "2" => {
                ws.send(Message::text("3")).await.ok()?;
            }
            Some(Ok(Message::Text(text))) => return Some(text.to_string()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

/// Whether the server closes the connection within the wait; frames before the
/// close (an Engine.IO close packet, say) are skipped.
async fn closes(ws: &mut Ws) -> bool {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// A healthy client still gets its echo.
async fn assert_served(ws: &mut Ws) {
    ws.send(Message::text(r#"421["echo","still here"]"#))
        .await
        .unwrap();
    assert_eq!(next_text(ws).await.as_deref(), Some(r#"431["still here"]"#));
}

fn assert_no_panic(testbed: &Testbed) {
    let logs = testbed.stderr();
    assert!(!logs.contains("panicked"), "the server panicked:\n{logs}");
}

#[tokio::test]
async fn oversize_polling_body_is_refused_with_413() {
    let testbed = spawn_testbed(&[("MAX_PAYLOAD", "1000")]);
    let http = reqwest::Client::new();
    let base = format!("{}/socket.io/?EIO=4&transport=polling", testbed.url());
    let open = http.get(&base).send().await.unwrap().text().await.unwrap();
    let handshake: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
    assert_eq!(handshake["maxPayload"], 1000);
    let sid = handshake["sid"].as_str().unwrap();
    let url = format!("{base}&sid={sid}");

    let big = format!("4{}", "x".repeat(2000));
    let response = http.post(&url).body(big).send().await.unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(refused_count(&testbed, "max_payload").await, 1);

    // A body within the limit is still accepted on the same session.
    let response = http.post(&url).body("40").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
    let mut other = connect(&testbed).await;
    assert_served(&mut other).await;
    assert_no_panic(&testbed);
}

#[tokio::test]
async fn oversize_websocket_message_closes_that_connection_only() {
    let testbed = spawn_testbed(&[("MAX_PAYLOAD", "1000")]);
    let mut offender = connect(&testbed).await;
    let mut bystander = connect(&testbed).await;
    let big = format!(r#"42["echo","{}"]"#, "x".repeat(2000));
    offender.send(Message::text(big)).await.unwrap();
    assert!(
        closes(&mut offender).await,
        "an over-size message must close the connection"
    );
    assert_served(&mut bystander).await;
    assert_no_panic(&testbed);
}

#[tokio::test]
async fn malformed_packets_close_only_the_sender() {
    let testbed = spawn_testbed(&[]);
    let mut bystander = connect(&testbed).await;
    for garbage in ["4abc", "42{}", r#"42abc["echo"]"#, "9", "4", "49", "44{}"] {
        let mut offender = connect(&testbed).await;
        offender.send(Message::text(garbage)).await.unwrap();
        assert!(
            closes(&mut offender).await,
            "{garbage:?} must close the connection"
        );
    }
    // Binary data with no packet expecting it.
    let mut offender = connect(&testbed).await;
    offender
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    assert!(
        closes(&mut offender).await,
        "a stray attachment must close the connection"
    );
    // Invalid UTF-8 in a text frame is refused by the websocket layer itself.
    assert_served(&mut bystander).await;
    assert_no_panic(&testbed);
}

#[tokio::test]
async fn too_many_binary_attachments_are_refused() {
    let testbed = spawn_testbed(&[("MAX_ATTACHMENTS", "2")]);
    let mut bystander = connect(&testbed).await;

    // Within the limit: two attachments come back with the ack.
    let mut client = connect(&testbed).await;
    client
        .send(Message::text(
            r#"452-7["echo",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        ))
        .await
        .unwrap();
    client.send(Message::binary(vec![1u8])).await.unwrap();
    client.send(Message::binary(vec![2u8])).await.unwrap();
    assert_eq!(
        next_text(&mut client).await.as_deref(),
        Some(r#"462-7[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
    );

    let mut offender = connect(&testbed).await;
    offender
        .send(Message::text(
            r#"453-["echo",{"_placeholder":true,"num":0}]"#,
        ))
        .await
        .unwrap();
    assert!(
        closes(&mut offender).await,
        "three attachments over a limit of two must close"
    );
    assert_served(&mut bystander).await;
    assert_no_panic(&testbed);
}

#[tokio::test]
async fn a_client_that_does_not_read_is_disconnected_and_others_keep_receiving() {
    // The sender goes as fast as the listener reads: far past the default
    // EVENT_RATE, which this test is not about.
    let testbed = spawn_testbed(&[
        ("OUTBOUND_QUEUE", "64"),
        ("PING_INTERVAL_MS", "60000"),
        ("EVENT_RATE", "100000"),
        ("EVENT_BURST", "100000"),
    ]);
    let mut stalled = connect(&testbed).await;
    stalled
        .send(Message::text(r#"420["join","stalled"]"#))
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut stalled).await.as_deref(),
        Some(r#"430[["stalled"]]"#)
    );
    let mut listener = connect(&testbed).await;
    listener
        .send(Message::text(r#"420["join","stalled"]"#))
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut listener).await.as_deref(),
        Some(r#"430[["stalled"]]"#)
    );
    let mut sender = connect(&testbed).await;

    // From here on `stalled` reads nothing: its socket buffers fill, then its queue.
    let chunk = "y".repeat(16 * 1024);
    let message = format!(r#"42["to-room",{{"room":"stalled","event":"chunk","data":"{chunk}"}}]"#);
    let mut listener_got = 0;
    for round in 0..4000 {
        sender.send(Message::text(message.clone())).await.unwrap();
        // The listener reads everything it is sent, in step.
        let got = next_text(&mut listener)
            .await
            .expect("the listener stays connected");
        assert!(
            got.starts_with(r#"42["chunk""#),
            "round {round}: {}",
            &got[..20.min(got.len())]
        );
        listener_got += 1;
        if testbed.stderr().contains("outbound queue full") {
            break;
        }
    }
    assert!(
        testbed.stderr().contains("outbound queue full"),
        "the stalled client was never disconnected after {listener_got} messages"
    );
    eprintln!("stalled client cut off after {listener_got} messages of 16 KiB");
    assert_served(&mut listener).await;
    assert_served(&mut sender).await;
    // The stalled client, reading at last, finds its connection closed.
    assert!(closes(&mut stalled).await);
    assert_no_panic(&testbed);
}

#[tokio::test]
async fn sigterm_closes_every_client_so_it_reconnects_and_exits_zero() {
    let mut testbed = spawn_testbed(&[("SHUTDOWN_TIMEOUT_MS", "3000"), ("DRAIN_DELAY_MS", "100")]);
    let url = testbed.url().to_string();

    let ws_url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        url.replace("http", "ws")
    );
    let (mut ws, _) = connect_async(ws_url).await.unwrap();
    assert!(next_text(&mut ws).await.unwrap().starts_with("0{"));
    ws.send(Message::text("40")).await.unwrap();
    assert!(next_text(&mut ws).await.unwrap().starts_with("40{"));
    assert!(
        next_text(&mut ws)
            .await
            .unwrap()
            .starts_with("42[\"welcome\"")
    );
    // A polling client too: its pending GET must be answered with a close.
    let http = reqwest::Client::new();
    let base = format!("{url}/socket.io/?EIO=4&transport=polling");
    let open = http.get(&base).send().await.unwrap().text().await.unwrap();
    let sid = serde_json::from_str::<serde_json::Value>(&open[1..]).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_string();
    let pending = tokio::spawn({
        let http = http.clone();
        let url = format!("{base}&sid={sid}");
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = std::time::Instant::now();
    testbed.signal("-TERM");

    // No Engine.IO close packet: the websocket just closes ("going away"), which
    // both official clients answer by reconnecting.
    match tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("closed in time")
    {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert_eq!(
        pending.await.unwrap(),
        "6",
        "the pending poll ends with a noop"
    );
    let after = http.get(format!("{base}&sid={sid}")).send().await;
    assert!(
        after.is_err() || after.unwrap().status() == 400,
        "the session is gone"
    );

    let (_testbed, exit) = tokio::task::spawn_blocking(move || {
        let exit = testbed.wait_exit(Duration::from_secs(5));
        (testbed, exit)
    })
    .await
    .unwrap();
    let exit = exit.expect("the node exits within the shutdown timeout");
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    // New connections are refused once it is gone.
    assert!(
        connect_async(format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            url.replace("http", "ws")
        ))
        .await
        .is_err()
    );
}

/// Opens a polling session; its sid and the session's URL.
async fn polling_session(http: &reqwest::Client, testbed: &Testbed) -> (String, String) {
    let sid = support::open_polling_session(http, testbed.url()).await;
    let url = format!("{}{}&sid={sid}", testbed.url(), support::POLLING_PATH);
    (sid, url)
}

/// A raw HTTP/1.1 POST to the session that announces `length` bytes of body
/// and sends only `sent` of them; the open connection.
async fn partial_post(testbed: &Testbed, sid: &str, length: usize, sent: &str) -> TcpStream {
    use tokio::io::AsyncWriteExt;
    let host = testbed.url().trim_start_matches("http://").to_string();
    let mut tcp = TcpStream::connect(&host).await.unwrap();
    let head = format!(
        "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: {host}\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {length}\r\n\r\n{sent}"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp
}

/// The status line of the answer on a raw connection, within `wait`.
async fn status_line(tcp: &mut (impl tokio::io::AsyncRead + Unpin), wait: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(wait, async {
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer).to_string();
    text.lines().next().unwrap_or_default().to_string()
}

/// Whether the polling session is gone: a GET is refused (400, unknown sid)
/// or ends with a close packet.
async fn polling_session_closed(http: &reqwest::Client, url: &str) -> bool {
    let response = tokio::time::timeout(WAIT, http.get(url).send())
        .await
        .expect("the GET is answered")
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    status == 400 || body == "1"
}

#[tokio::test]
async fn polling_body_sent_too_slowly_is_answered_408_and_closes_the_session() {
    let testbed = spawn_testbed(&[("POLLING_BODY_TIMEOUT_MS", "500")]);
    let mut bystander = connect(&testbed).await;
    let http = reqwest::Client::new();
    let (sid, url) = polling_session(&http, &testbed).await;
    let started = std::time::Instant::now();
    // Two bytes of a hundred, then one more now and then: never the whole body.
    let tcp = partial_post(&testbed, &sid, 100, "40").await;
    let (mut read, mut write) = tcp.into_split();
    let dribble = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if write.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let status = status_line(&mut read, WAIT).await;
    dribble.abort();
    assert_eq!(status, "HTTP/1.1 408 Request Timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(polling_session_closed(&http, &url).await);
    assert!(
        testbed
            .stderr_shows("polling body not received in time", WAIT)
            .await,
        "{}",
        testbed.stderr_tail(20)
    );
    assert_served(&mut bystander).await;
    assert_no_panic(&testbed);
}

/// Two POSTs at once on one session: the second is answered 400 and the
/// session is closed, as the reference server does.
#[tokio::test]
async fn overlapping_polling_posts_are_answered_400_and_close_the_session() {
    let testbed = spawn_testbed(&[]);
    let mut bystander = connect(&testbed).await;
    let http = reqwest::Client::new();
    let (sid, url) = polling_session(&http, &testbed).await;
    // The first POST is still sending its body…
    let _first = partial_post(&testbed, &sid, 100, "40").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // …when a second one comes.
    let second = http.post(&url).body("40").send().await.unwrap();
    assert_eq!(second.status(), 400);
    assert!(polling_session_closed(&http, &url).await);
    assert!(
        testbed.stderr_shows("overlapping polling POST", WAIT).await,
        "{}",
        testbed.stderr_tail(20)
    );
    assert_eq!(refused_count(&testbed, "polling_overlap").await, 1);
    assert_served(&mut bystander).await;
    assert_no_panic(&testbed);
}

/// Two GETs at once on one session: the second is answered 400 and the
/// session is closed (the first ends with a close packet).
#[tokio::test]
async fn overlapping_polling_gets_are_answered_400_and_close_the_session() {
    let testbed = spawn_testbed(&[]);
    let mut bystander = connect(&testbed).await;
    let http = reqwest::Client::new();
    let (_sid, url) = polling_session(&http, &testbed).await;
    // Nothing is queued, so the first GET waits.
    let first = tokio::spawn({
        let http = http.clone();
        let url = url.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = http.get(&url).send().await.unwrap();
    assert_eq!(second.status(), 400);
    let first = tokio::time::timeout(WAIT, first).await.unwrap().unwrap();
    assert_eq!(first, "1", "the waiting GET ends with a close packet");
    assert_eq!(refused_count(&testbed, "polling_overlap").await, 1);
    assert!(polling_session_closed(&http, &url).await);
    assert_served(&mut bystander).await;
    assert_no_panic(&testbed);
}

/// A connection that joins no namespace within CONNECT_TIMEOUT_MS is closed;
/// one that joined stays.
#[tokio::test]
async fn a_connection_that_joins_no_namespace_is_closed_after_the_connect_timeout() {
    let testbed = spawn_testbed(&[("CONNECT_TIMEOUT_MS", "500")]);
    let mut bystander = connect(&testbed).await;
    let url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        testbed.url().replace("http", "ws")
    );
    let (mut idle, _) = connect_async(url).await.expect("websocket connects");
    let open = next_text(&mut idle).await.expect("engine.io handshake");
    assert!(open.starts_with("0{"), "handshake: {open}");
    let started = std::time::Instant::now();
    assert!(closes(&mut idle).await, "an idle connection must be closed");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(refused_count(&testbed, "connect_timeout").await, 1);
    // The one that joined in time is past its timeout and still served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_served(&mut bystander).await;
    assert_no_panic(&testbed);
}

/// How many refusals `rain_refused_total{limit}` has counted on the node.
async fn refused_count(testbed: &Testbed, limit: &str) -> u64 {
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", testbed.api_url()))
        .bearer_auth(support::TEST_API_SECRET)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("rain_refused_total{{limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix}in /metrics:\n{text}"))
}

/// Over EVENT_RATE/EVENT_BURST an acked event gets `{error: "too many
/// requests"}` (a plain one is dropped and counted), the bucket refills at the
/// rate, other connections are not affected, and a client that keeps flooding
/// is cut off with a reason in the log.
#[tokio::test]
async fn events_over_the_rate_are_refused_and_a_flood_closes_the_connection() {
    let testbed = spawn_testbed(&[("EVENT_RATE", "5"), ("EVENT_BURST", "5")]);
    let mut bystander = connect(&testbed).await;
    // The connect took one token: four echoes pass, the rest are refused.
    let mut offender = connect(&testbed).await;
    for id in 0..10 {
        offender
            .send(Message::text(format!(r#"42{id}["echo","m{id}"]"#)))
            .await
            .unwrap();
    }
    let mut passed = 0;
    let mut refused = 0;
    for id in 0..10 {
        let answer = next_text(&mut offender).await.expect("an answer to each");
        if answer == format!(r#"43{id}["m{id}"]"#) {
            passed += 1;
        } else {
            assert_eq!(
                answer,
                format!(r#"43{id}[{{"error":"too many requests"}},null]"#)
            );
            refused += 1;
        }
    }
    assert!(
        (4..=5).contains(&passed),
        "{passed} passed, {refused} refused"
    );
    assert_served(&mut bystander).await;
    // At five a second, the bucket has room again a moment later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_served(&mut offender).await;

    // Events without an ack id are dropped, and counted.
    let before = refused_count(&testbed, "event_rate").await;
    for _ in 0..20 {
        offender
            .send(Message::text(r#"42["echo","flood"]"#))
            .await
            .unwrap();
    }
    support::eventually(WAIT, "the dropped events are counted", async || {
        let now = refused_count(&testbed, "event_rate").await;
        (now >= before + 15)
            .then_some(())
            .ok_or(format!("{before} → {now}"))
    })
    .await;
    // A client that keeps going past the limit is cut off.
    for _ in 0..120 {
        if offender
            .send(Message::text(r#"42["echo","flood"]"#))
            .await
            .is_err()
        {
            break;
        }
    }
    assert!(closes(&mut offender).await, "the flooding client is closed");
    assert!(
        testbed
            .stderr_shows("kept sending past its limits", WAIT)
            .await,
        "{}",
        testbed.stderr_tail(20)
    );
    assert_served(&mut bystander).await;
    assert_no_panic(&testbed);
}

/// Past CONNECTIONS_PER_ADDRESS open sessions, a handshake from that address
/// (websocket or polling) is refused with 429 and a JSON message; the open
/// ones keep working, and a place is given back when one closes.
#[tokio::test]
async fn connections_over_the_per_address_limit_are_refused_with_429() {
    let testbed = spawn_testbed(&[("CONNECTIONS_PER_ADDRESS", "3")]);
    let mut first = connect(&testbed).await;
    let _second = connect(&testbed).await;
    let third = connect(&testbed).await;
    let Err((status, body)) = ws_handshake(&testbed, &[]).await else {
        panic!("a fourth connection must be refused");
    };
    assert_eq!(status, 429, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["message"],
        "too many connections from this address (at most 3)"
    );
    let polling = reqwest::get(format!(
        "{}/socket.io/?EIO=4&transport=polling",
        testbed.url()
    ))
    .await
    .unwrap();
    assert_eq!(polling.status(), 429);
    assert_served(&mut first).await;
    assert!(refused_count(&testbed, "connections_per_address").await >= 2);

    // A connection that ends gives its place back.
    drop(third);
    support::eventually(
        WAIT,
        "a place is given back",
        async || match ws_handshake(&testbed, &[]).await {
            Ok(_) => Ok(()),
            Err((status, _)) => Err(format!("still {status}")),
        },
    )
    .await;
    assert_no_panic(&testbed);
}

/// Behind a trusted proxy each forwarded client address has its own budget;
/// a peer that is not a trusted proxy is counted as itself whatever it
/// forwards.
#[tokio::test]
async fn the_per_address_limit_counts_forwarded_addresses_only_from_trusted_proxies() {
    let xff = |address: &'static str| [("x-forwarded-for", address)];
    let testbed = spawn_testbed(&[
        ("CONNECTIONS_PER_ADDRESS", "2"),
        ("TRUSTED_PROXIES", "127.0.0.1"),
    ]);
    let mut a = connect_with(&testbed, &xff("198.51.100.1")).await;
    let _a2 = connect_with(&testbed, &xff("198.51.100.1")).await;
    let refused = ws_handshake(&testbed, &xff("198.51.100.1")).await;
    assert_eq!(refused.err().map(|(status, _)| status), Some(429));
    // Another client behind the same proxy has its own two places.
    let mut b = connect_with(&testbed, &xff("203.0.113.7")).await;
    let _b2 = connect_with(&testbed, &xff("203.0.113.7")).await;
    assert_served(&mut a).await;
    assert_served(&mut b).await;

    // The peer is no trusted proxy: every connection is 127.0.0.1's.
    let untrusted = spawn_testbed(&[
        ("CONNECTIONS_PER_ADDRESS", "2"),
        ("TRUSTED_PROXIES", "10.0.0.1"),
    ]);
    let mut x = connect_with(&untrusted, &xff("198.51.100.1")).await;
    let _y = connect_with(&untrusted, &xff("198.51.100.2")).await;
    let refused = ws_handshake(&untrusted, &xff("198.51.100.3")).await;
    assert_eq!(refused.err().map(|(status, _)| status), Some(429));
    assert_served(&mut x).await;
    assert_no_panic(&testbed);
    assert_no_panic(&untrusted);
}

// ---------------------------------------------------------------------------
// limits of a rain-node (Mothership, components): the binary on the embedded
// backend, raw Socket.IO over websocket
// ---------------------------------------------------------------------------

/// A `rain-node` alone (embedded backend) with `envs`.
fn spawn_node(envs: &[(&str, &str)]) -> Testbed {
    support::spawn_program(std::path::Path::new(env!("CARGO_BIN_EXE_rain-node")), envs)
}

/// A websocket client connected to namespace `ns`.
async fn join_namespace(node: &Testbed, ns: &str) -> Ws {
    let mut ws = ws_handshake(node, &[]).await.expect("websocket opens");
    ws.send(Message::text(format!("40{ns},"))).await.unwrap();
    let connected = next_text(&mut ws).await.expect("connect reply");
    assert!(
        connected.starts_with(&format!("40{ns},{{\"sid\"")),
        "connect reply: {connected}"
    );
    ws
}

/// Emits `event(arg)` on `ns` with ack id `id`.
async fn emit(ws: &mut Ws, ns: &str, id: u64, event: &str, arg: serde_json::Value) {
    let args = serde_json::json!([event, arg]);
    ws.send(Message::text(format!("42{ns},{id}{args}")))
        .await
        .unwrap();
}

/// The next ack on `ns` (other frames skipped): its id and arguments.
async fn next_ack(ws: &mut Ws, ns: &str) -> (u64, serde_json::Value) {
    let prefix = format!("43{ns},");
    loop {
        let text = next_text(ws).await.expect("the connection stays open");
        let Some(rest) = text.strip_prefix(&prefix) else {
            continue;
        };
        let at = rest.find('[').expect("ack arguments");
        let id = rest[..at].parse().expect("ack id");
        return (id, serde_json::from_str(&rest[at..]).unwrap());
    }
}

fn too_many_requests() -> serde_json::Value {
    serde_json::json!([{ "error": "too many requests" }, null])
}

/// `join` then `say` sent back to back, without waiting for the first ack:
/// the say always finds the room joined, because one socket's component events
/// are handled in the order sent. Against a backend whose join takes a while
/// (which fails without the ordering), then against the demo chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_then_say_sent_back_to_back_always_succeeds() {
    let backend = backend(10).await;
    let dir = hb_components(&backend);
    let node = spawn_node(&[("COMPONENTS", "chat@1.0"), ("COMPONENTS_DIR", dir.path())]);
    for (ns, rounds) in [("/hb/1.0/main", 20u64), ("/chat/1/main", 40)] {
        let mut client = join_namespace(&node, ns).await;
        let mut other = join_namespace(&node, ns).await;
        for round in 0..rounds {
            let room = format!("r{round}");
            emit(
                &mut client,
                ns,
                2 * round,
                "join",
                serde_json::json!({ "room": room }),
            )
            .await;
            let said = serde_json::json!({ "room": room, "text": "hi" });
            emit(&mut client, ns, 2 * round + 1, "say", said).await;
            for expected in [2 * round, 2 * round + 1] {
                let (id, ack) = next_ack(&mut client, ns).await;
                assert_eq!(id, expected, "{ns}: acks come in order");
                assert_eq!(ack[0], serde_json::Value::Null, "{ns} round {round}: {ack}");
            }
        }
        emit(
            &mut other,
            ns,
            1,
            "join",
            serde_json::json!({ "room": "o" }),
        )
        .await;
        assert_eq!(next_ack(&mut other, ns).await.1[0], serde_json::Value::Null);
    }
    assert_no_panic(&node);
}

/// A tiny HTTP backend component on 127.0.0.1: `join` records the socket in
/// `args[0].room` after 30 ms and `say` fails unless it is recorded, `slow`
/// answers after 300 ms,
/// `big` answers `size` bytes of JSON (with a Content-Length), `stream`
/// the same in chunks without one, `redirect` a 302 to `/elsewhere` (whose
/// hits are counted), anything else `{data: {ok: true}}`.
struct Backend {
    url: String,
    redirected: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

use std::sync::Arc;

async fn backend(size: usize) -> Backend {
    use axum::response::IntoResponse;
    use std::sync::atomic::Ordering;
    let redirected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hits = redirected.clone();
    let joined = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let answer = move |axum::Json(body): axum::Json<serde_json::Value>| async move {
        let big = || format!(r#"{{"data":"{}"}}"#, "x".repeat(size));
        let member = (
            body["socket"].to_string(),
            body["args"][0]["room"].to_string(),
        );
        match body["event"].as_str().unwrap_or_default() {
            // A join that takes a while; a say right after it must wait for it.
            "join" => {
                tokio::time::sleep(Duration::from_millis(30)).await;
                joined.lock().unwrap().insert(member);
                axum::Json(serde_json::json!({ "data": "joined" })).into_response()
            }
            "say" if joined.lock().unwrap().contains(&member) => {
                axum::Json(serde_json::json!({ "data": "said" })).into_response()
            }
            "say" => axum::Json(serde_json::json!({ "error": { "error": "not joined" } }))
                .into_response(),
            "slow" => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                axum::Json(serde_json::json!({ "data": body["args"][0] })).into_response()
            }
            "big" => ([("content-type", "application/json")], big()).into_response(),
            "stream" => {
                let chunks: Vec<Result<String, std::io::Error>> = big()
                    .into_bytes()
                    .chunks(100)
                    .map(|c| Ok(String::from_utf8(c.to_vec()).unwrap()))
                    .collect();
                let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
                ([("content-type", "application/json")], body).into_response()
            }
            "redirect" => axum::response::Redirect::temporary("/elsewhere").into_response(),
            _ => axum::Json(serde_json::json!({ "data": { "ok": true } })).into_response(),
        }
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(answer))
        .route(
            "/elsewhere",
            axum::routing::any(move || async move {
                hits.fetch_add(1, Ordering::SeqCst);
                axum::Json(serde_json::json!({ "data": "followed" }))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Backend {
        url,
        redirected,
        task,
    }
}

/// A `COMPONENTS_DIR` holding the descriptor of `hb@1.0` served by `backend`.
fn hb_components(backend: &Backend) -> ComponentsDir {
    ComponentsDir::new(&[(
        "hb.json",
        serde_json::json!({
            "id": "hb", "version": "1.0", "channels": ["main"],
            "handler": { "kind": "http", "url": format!("{}/hook", backend.url), "timeout_ms": 3000 },
        }),
    )])
}

/// Past SOCKET_MAX_IN_FLIGHT queued or running events, a socket's next ones
/// are refused at once with `too many requests` (counted); the admitted ones
/// are answered in order; another socket's events are not held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn component_events_past_socket_max_in_flight_are_refused() {
    let backend = backend(10).await;
    let dir = hb_components(&backend);
    let node = spawn_node(&[
        ("COMPONENTS", ""),
        ("COMPONENTS_DIR", dir.path()),
        ("SOCKET_MAX_IN_FLIGHT", "3"),
    ]);
    let ns = "/hb/1.0/main";
    let mut flooder = join_namespace(&node, ns).await;
    let mut other = join_namespace(&node, ns).await;
    for id in 0..8u64 {
        emit(&mut flooder, ns, id, "slow", serde_json::json!(id)).await;
    }
    // Meanwhile another socket is served as usual.
    emit(&mut other, ns, 1, "slow", serde_json::json!("other")).await;
    assert_eq!(
        next_ack(&mut other, ns).await,
        (1, serde_json::json!([null, "other"]))
    );
    let mut answered = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..8 {
        let (id, ack) = next_ack(&mut flooder, ns).await;
        if ack == too_many_requests() {
            refused.push(id);
        } else {
            assert_eq!(ack, serde_json::json!([null, id]));
            answered.push(id);
        }
    }
    assert_eq!(answered, [0, 1, 2], "the admitted ones, in order");
    assert_eq!(refused, [3, 4, 5, 6, 7]);
    assert!(refused_count(&node, "socket_max_in_flight").await >= 5);
    // Once its queue drained, the socket is served again.
    emit(&mut flooder, ns, 9, "slow", serde_json::json!(9)).await;
    assert_eq!(
        next_ack(&mut flooder, ns).await,
        (9, serde_json::json!([null, 9]))
    );
    assert_no_panic(&node);
}

/// An HTTP backend's answer over BACKEND_ANSWER_MAX_BYTES (announced or
/// streamed) and a redirect are `backend error`s, the detail in the node's
/// log, the redirect not followed; the component keeps serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_answers_past_the_size_cap_or_redirecting_are_backend_errors() {
    let backend = backend(5000).await;
    let dir = hb_components(&backend);
    let node = spawn_node(&[
        ("COMPONENTS", ""),
        ("COMPONENTS_DIR", dir.path()),
        ("BACKEND_ANSWER_MAX_BYTES", "1000"),
    ]);
    let ns = "/hb/1.0/main";
    let mut client = join_namespace(&node, ns).await;
    let mut other = join_namespace(&node, ns).await;
    let backend_error =
        serde_json::json!([{ "error": "backend error", "component": "hb@1.0" }, null]);
    for (id, event) in ["big", "stream", "redirect"].into_iter().enumerate() {
        emit(&mut client, ns, id as u64, event, serde_json::json!({})).await;
        assert_eq!(
            next_ack(&mut client, ns).await,
            (id as u64, backend_error.clone()),
            "{event}"
        );
    }
    assert_eq!(
        backend.redirected.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    for line in ["over 1000 bytes", "redirects are not followed"] {
        assert!(
            node.stderr_shows(line, WAIT).await,
            "{line}: {}",
            node.stderr_tail(20)
        );
    }
    assert!(refused_count(&node, "backend_answer_max_bytes").await >= 2);
    emit(&mut other, ns, 1, "ok", serde_json::json!({})).await;
    assert_eq!(
        next_ack(&mut other, ns).await,
        (1, serde_json::json!([null, { "ok": true }]))
    );
    emit(&mut client, ns, 7, "ok", serde_json::json!({})).await;
    assert_eq!(next_ack(&mut client, ns).await.0, 7);
    assert_no_panic(&node);
}

/// Past LOG_LINES_PER_MINUTE a socket's log lines are refused (`too many
/// requests` when acked, dropped and counted otherwise) and not written;
/// another socket logs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_log_lines_past_the_rate_are_refused_and_not_written() {
    let node = spawn_node(&[("COMPONENTS", ""), ("LOG_LINES_PER_MINUTE", "5")]);
    let ns = "/core/logging";
    let mut chatty = join_namespace(&node, ns).await;
    let mut other = join_namespace(&node, ns).await;
    let marker = support::unique("marker-");
    for id in 0..8u64 {
        let line = serde_json::json!({ "level": "info", "message": format!("{marker}-{id}") });
        emit(&mut chatty, ns, id, "log", line).await;
    }
    for id in 0..8u64 {
        let ack = next_ack(&mut chatty, ns).await;
        if id < 5 {
            assert_eq!(ack, (id, serde_json::json!([null, true])));
        } else {
            assert_eq!(ack, (id, too_many_requests()));
        }
    }
    // Without an ack: dropped, and counted.
    let before = refused_count(&node, "log_lines_per_minute").await;
    chatty
        .send(Message::text(format!(
            r#"42{ns},["log",{{"message":"{marker}-dropped"}}]"#
        )))
        .await
        .unwrap();
    emit(
        &mut other,
        ns,
        1,
        "log",
        serde_json::json!({ "message": format!("{marker}-other") }),
    )
    .await;
    assert_eq!(
        next_ack(&mut other, ns).await,
        (1, serde_json::json!([null, true]))
    );
    support::eventually(WAIT, "the dropped line is counted", async || {
        let now = refused_count(&node, "log_lines_per_minute").await;
        (now > before)
            .then_some(())
            .ok_or(format!("{before} → {now}"))
    })
    .await;
    assert!(
        node.stderr_shows(&format!("{marker}-other"), WAIT).await,
        "{}",
        node.stderr_tail(20)
    );
    let logs = node.stderr();
    assert!(logs.contains(&format!("{marker}-4")));
    for refused in ["5", "6", "7", "dropped"] {
        assert!(
            !logs.contains(&format!("{marker}-{refused}")),
            "line {refused} was written"
        );
    }
    assert_no_panic(&node);
}
