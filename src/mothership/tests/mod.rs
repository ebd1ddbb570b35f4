//! The Mothership across nodes, in one process: two or three nodes on one
//! embedded hub, clients connected through the normal connect path. No Redis,
//! no processes (`tests/mothership.rs` runs the same scenarios over real ones).
//!
//! Owns the routing tests: an event answered by a host on another node,
//! round-robin over hosts, the component channels' refusals, and connect
//! notices. The `/core`
//! commands and logging are in [`core`], the chat component in [`chat`], an
//! embedder's connect-auth hook in [`auth`], the harness in [`harness`].

mod auth;
mod chat;
mod core;
mod harness;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::Routed;
use crate::component::{Component, Context, Descriptor, Outcome};
use crate::config::Routing::{PreferLocal, RoundRobin};
use harness::{FakeClient, Nodes, session_of};

const ECHO: &str = "/echo/1/main";

/// How many of `calls` echo calls from `client` each node answered.
async fn answered_by(client: &mut FakeClient, calls: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for i in 0..calls {
        let data = client.ok(ECHO, "echo", vec![json!(i)]).await;
        assert_eq!(data["args"], json!([i]));
        let node = data["node"]
            .as_str()
            .expect("the answering node")
            .to_string();
        *counts.entry(node).or_default() += 1;
    }
    counts
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

#[tokio::test]
async fn an_event_for_a_component_hosted_on_another_node_is_answered_by_it() {
    let nodes = Nodes::start(&[("A", PreferLocal, &[]), ("B", PreferLocal, &["echo"])]);
    let mut client = nodes.client("A", "sess-a");
    client.connect(ECHO).await.unwrap();
    let (error, data) = client.call(ECHO, "echo", vec![json!("hi"), json!(2)]).await;
    assert_eq!(error, Value::Null);
    assert_eq!(data, json!({ "args": ["hi", 2], "node": "B" }));

    // The request went to B, its reply back to A.
    let requests = nodes.received("B", |m| matches!(m, Routed::Request { .. }));
    match &requests[..] {
        [
            Routed::Request {
                from,
                component,
                namespace,
                channel,
                event,
                session,
                ..
            },
        ] => {
            assert_eq!((from.as_str(), component.as_str()), ("A", "echo@1.0"));
            assert_eq!((namespace.as_str(), channel.as_str()), (ECHO, "main"));
            assert_eq!(
                (event.as_str(), session.as_str()),
                ("echo", session_of("sess-a").as_str())
            );
        }
        other => panic!("one request to B expected: {other:?}"),
    }
    assert_eq!(
        nodes
            .received("A", |m| matches!(m, Routed::Reply { .. }))
            .len(),
        1
    );
    assert!(
        nodes
            .received("A", |m| matches!(m, Routed::Request { .. }))
            .is_empty()
    );

    // The handler's error comes back as the ack's error.
    let (error, data) = client.call(ECHO, "nope", vec![]).await;
    assert_eq!(error, json!({ "error": "unknown event nope" }));
    assert_eq!(data, Value::Null);
}

#[tokio::test]
async fn calls_go_round_robin_over_the_hosts() {
    let nodes = Nodes::start(&[
        ("A", RoundRobin, &["echo"]),
        ("B", PreferLocal, &["echo"]),
        ("C", PreferLocal, &[]),
    ]);
    let (mut on_a, mut on_b, mut on_c) = (
        nodes.client("A", "sa"),
        nodes.client("B", "sb"),
        nodes.client("C", "sc"),
    );
    for client in [&mut on_a, &mut on_b, &mut on_c] {
        client.connect(ECHO).await.unwrap();
    }
    // C hosts nothing: every host in turn.
    assert_eq!(
        answered_by(&mut on_c, 10).await,
        counts(&[("A", 5), ("B", 5)])
    );
    // ROUTING=round-robin on A: A takes its turn with the others.
    assert_eq!(
        answered_by(&mut on_a, 10).await,
        counts(&[("A", 5), ("B", 5)])
    );
    // ROUTING=local on B: B runs its own clients' events.
    assert_eq!(answered_by(&mut on_b, 10).await, counts(&[("B", 10)]));
}

#[tokio::test]
async fn renders_go_round_robin_whatever_the_routing_mode() {
    let nodes = Nodes::start(&[("A", PreferLocal, &["echo"]), ("B", PreferLocal, &["echo"])]);
    let mut client = nodes.client("A", "s");
    client.connect("/core").await.unwrap();
    let mut by_node = BTreeMap::new();
    for _ in 0..6 {
        let render = json!({ "id": "echo", "version": "1", "view": "main" });
        let data = client.ok("/core", "render", vec![render]).await;
        *by_node
            .entry(data["node"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(by_node, counts(&[("A", 3), ("B", 3)]));
}

#[tokio::test]
async fn unknown_components_and_channels_are_refused_at_connect() {
    let nodes = Nodes::start(&[("A", PreferLocal, &["echo"]), ("B", PreferLocal, &["chat"])]);
    let mut client = nodes.client("A", "s");
    assert_eq!(
        client.connect("/echo/1/side").await,
        Err("component echo@1.0 has no channel \"side\" (namespace /echo/1/side)".into())
    );
    assert_eq!(
        client.connect("/nothing/1/main").await,
        Err("unknown component channel /nothing/1/main".into())
    );
    assert_eq!(
        client.connect("/echo/2/main").await,
        Err("unknown component channel /echo/2/main".into())
    );
    // A refused name leaves no namespace behind; a component of another node
    // is known here, through any fragment of its version.
    assert!(nodes.node("A").io.of("/nothing/1/main").is_none());
    client.connect("/chat/1.0/main").await.unwrap();
    client.connect("/chat/1/logging").await.unwrap();
}

/// A notice as `watch` records it: `(connected, socket, channel, origin node,
/// handling node)`.
type Notice = (bool, String, String, String, String);

/// `watch@1.0`: records the connect and disconnect notices it gets.
struct Watch {
    descriptor: Descriptor,
    notices: Mutex<Vec<Notice>>,
}

impl Watch {
    fn note(&self, connected: bool, ctx: Context) {
        let notice = (
            connected,
            ctx.socket_id,
            ctx.channel,
            ctx.origin_node,
            ctx.node_id,
        );
        self.notices.lock().push(notice);
    }
}

impl Component for Watch {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    fn on_event(&self, _: Context, _: String, _: Vec<Value>) -> BoxFuture<'static, Outcome> {
        async { Ok(Value::Null) }.boxed()
    }

    fn on_connect(&self, ctx: Context) {
        self.note(true, ctx);
    }

    fn on_disconnect(&self, ctx: Context) {
        self.note(false, ctx);
    }
}

#[tokio::test]
async fn a_component_that_asks_is_told_of_connects_and_disconnects_on_other_nodes() {
    let descriptor =
        json!({ "id": "watch", "version": "1.0", "channels": ["main"], "lifecycle": true });
    let watch = Arc::new(Watch {
        descriptor: serde_json::from_value(descriptor).unwrap(),
        notices: Mutex::new(Vec::new()),
    });
    let nodes = Nodes::with_components(vec![
        ("A", PreferLocal, vec![]),
        ("B", PreferLocal, vec![watch.clone() as Arc<dyn Component>]),
    ]);
    let mut client = nodes.client("A", "s");
    let sid = client.connect("/watch/1/main").await.unwrap();
    client.connect("/watch/1/logging").await.unwrap();
    client.disconnect("/watch/1/main");
    client.disconnect("/watch/1/logging");
    for _ in 0..100 {
        if watch.notices.lock().len() >= 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    // The logging channel is not one of the component's: no notices for it.
    let notice = |connected| {
        (
            connected,
            sid.clone(),
            "main".into(),
            "A".into(),
            "B".into(),
        )
    };
    assert_eq!(*watch.notices.lock(), [notice(true), notice(false)]);
}

/// A component whose calls wait until the test lets them through.
struct Gate {
    descriptor: Descriptor,
    open: Arc<tokio::sync::Semaphore>,
    entered: Arc<std::sync::atomic::AtomicUsize>,
}

impl Component for Gate {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    fn on_event(&self, _: Context, _: String, _: Vec<Value>) -> BoxFuture<'static, Outcome> {
        let (open, entered) = (self.open.clone(), self.entered.clone());
        async move {
            entered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _pass = open.acquire().await;
            Ok(json!("through"))
        }
        .boxed()
    }
}

#[tokio::test]
async fn past_route_max_in_flight_an_event_is_refused_at_once_as_overloaded() {
    const GATE: &str = "/gate/1.0/main";
    let gate = Arc::new(Gate {
        descriptor: serde_json::from_value(
            json!({ "id": "gate", "version": "1.0", "channels": ["main"] }),
        )
        .unwrap(),
        open: Arc::new(tokio::sync::Semaphore::new(0)),
        entered: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    });
    let settings = crate::config::Settings {
        route_max_in_flight: 2,
        ..Default::default()
    };
    let nodes = Nodes::with_settings(
        &settings,
        vec![
            ("A", PreferLocal, vec![]),
            ("B", PreferLocal, vec![gate.clone() as Arc<dyn Component>]),
        ],
    );
    // Two sockets (one socket's events wait their turn: SOCKET_MAX_IN_FLIGHT
    // is per socket, ROUTE_MAX_IN_FLIGHT per node).
    let mut first_client = nodes.client("A", "s1");
    first_client.connect(GATE).await.unwrap();
    let mut second_client = nodes.client("A", "s2");
    second_client.connect(GATE).await.unwrap();
    let mut client = nodes.client("A", "s");
    client.connect(GATE).await.unwrap();
    let first = first_client.emit_with_ack(GATE, "wait", vec![]);
    let second = second_client.emit_with_ack(GATE, "wait", vec![]);
    for _ in 0..200 {
        if gate.entered.load(std::sync::atomic::Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(gate.entered.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Two calls wait on B: A refuses a third at once, without asking B.
    let (error, data) = client.call(GATE, "wait", vec![]).await;
    assert_eq!(
        (error, data),
        (json!({ "error": "overloaded" }), Value::Null)
    );
    assert_eq!(gate.entered.load(std::sync::atomic::Ordering::SeqCst), 2);

    gate.open.add_permits(3);
    assert_eq!(
        first_client.ack(GATE, first).await,
        (Value::Null, json!("through"))
    );
    assert_eq!(
        second_client.ack(GATE, second).await,
        (Value::Null, json!("through"))
    );
    // Places are given back: calls go through again.
    assert_eq!(client.ok(GATE, "wait", vec![]).await, json!("through"));
}

#[tokio::test]
async fn namespace_limits_refuse_the_connect_and_others_carry_on() {
    let settings = crate::config::Settings {
        namespace_max_length: 64,
        namespaces_per_connection: 2,
        ..Default::default()
    };
    let echo = crate::component::demo::builtin("echo", &settings).unwrap();
    let nodes = Nodes::with_settings(&settings, vec![("A", PreferLocal, vec![echo])]);

    // A name over NAMESPACE_MAX_LENGTH: refused, and no namespace is kept.
    let mut greedy = nodes.client("A", "greedy");
    let long = format!("/{}", "x".repeat(64));
    assert_eq!(
        greedy.connect(&long).await,
        Err("namespace name too long".to_string())
    );
    assert!(nodes.node("A").io.of(&long).is_none());
    // A made-up spelling of a version is not a channel at all.
    assert_eq!(
        greedy.connect("/echo/01/main").await,
        Err("Invalid namespace".to_string())
    );
    assert!(nodes.node("A").io.of("/echo/01/main").is_none());

    // NAMESPACES_PER_CONNECTION: the third namespace of one connection is refused.
    greedy.connect("/core").await.unwrap();
    greedy.connect(ECHO).await.unwrap();
    assert_eq!(
        greedy.connect("/echo/1.0/main").await,
        Err("too many namespaces on this connection".to_string())
    );
    // The namespaces it has still work, and so does everyone else.
    assert_eq!(
        greedy.ok(ECHO, "echo", vec![json!(1)]).await["args"],
        json!([1])
    );
    let mut other = nodes.client("A", "other");
    other.connect("/echo/1.0/main").await.unwrap();
    assert_eq!(
        other.ok("/echo/1.0/main", "echo", vec![json!(2)]).await["args"],
        json!([2])
    );
}

#[tokio::test]
async fn a_component_namespace_is_freed_when_its_last_socket_leaves() {
    let nodes = Nodes::start(&[("A", PreferLocal, &["echo"])]);
    let io = &nodes.node("A").io;
    let (mut first, mut second) = (nodes.client("A", "one"), nodes.client("A", "two"));
    first.connect(ECHO).await.unwrap();
    second.connect(ECHO).await.unwrap();
    first.disconnect(ECHO);
    assert_eq!(
        second.ok(ECHO, "echo", vec![json!(1)]).await["args"],
        json!([1])
    );
    assert!(io.of(ECHO).is_some(), "kept while a socket is in it");
    second.disconnect(ECHO);
    assert!(io.of(ECHO).is_none(), "freed once the last socket left");
    // The name works again, as a fresh namespace.
    first.connect(ECHO).await.unwrap();
    assert_eq!(
        first.ok(ECHO, "echo", vec![json!(2)]).await["args"],
        json!([2])
    );
}
