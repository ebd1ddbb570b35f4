//! `/core` and logging across nodes: `request_intent` reaching a provider on
//! another node, `change_language` stored where every node reads it, `render`
//! naming the rendering node in the instance id, and a client's log line going
//! to that node.
//!
//! Owns these scenarios only; the harness is in `super::harness`.

use serde_json::{Value, json};

use super::harness::{Nodes, session_of};
use crate::config::Routing::PreferLocal;
use crate::mothership::Routed;

const CORE: &str = "/core";

#[tokio::test]
async fn request_intent_reaches_the_provider_on_another_node() {
    let nodes = Nodes::start(&[
        ("A", PreferLocal, &[]),
        ("B", PreferLocal, &["echo", "chat"]),
    ]);
    let mut client = nodes.client("A", "s");
    client.connect(CORE).await.unwrap();
    let intent = json!({ "category": "demo", "action": "echo", "context": { "x": 1 } });
    let data = client.ok(CORE, "request_intent", vec![intent]).await;
    assert_eq!(data, json!({ "args": [{ "x": 1 }], "node": "B" }));

    let intent = json!({ "category": "demo", "action": "fly", "context": {} });
    assert_eq!(
        client.call(CORE, "request_intent", vec![intent]).await,
        (
            json!({ "error": "no provider for intent", "category": "demo", "action": "fly" }),
            Value::Null
        )
    );
    assert_eq!(
        client
            .call(CORE, "request_intent", vec![json!({ "category": "demo" })])
            .await,
        (
            json!({ "error": "request_intent needs {category, action, context}" }),
            Value::Null
        )
    );
    assert_eq!(
        client.call(CORE, "shout", vec![json!({})]).await,
        (
            json!({ "error": "unknown /core event \"shout\"" }),
            Value::Null
        )
    );
}

#[tokio::test]
async fn change_language_is_stored_in_the_session_every_node_reads() {
    let nodes = Nodes::start(&[("A", PreferLocal, &[]), ("B", PreferLocal, &[])]);
    let mut client = nodes.client("A", "sess-lang");
    client.connect(CORE).await.unwrap();
    assert_eq!(
        client
            .ok(CORE, "change_language", vec![json!({ "language": "fr" })])
            .await,
        json!({ "language": "fr", "node": "A" })
    );
    let on_b = nodes
        .node("B")
        .io
        .cluster()
        .session_load(session_of("sess-lang").as_str())
        .await
        .unwrap();
    assert_eq!(on_b.get("language").map(String::as_str), Some("fr"));

    // A bare string works too, from a client of B with the same session.
    let mut other = nodes.client("B", "sess-lang");
    other.connect(CORE).await.unwrap();
    assert_eq!(
        other.ok(CORE, "change_language", vec![json!("de")]).await,
        json!({ "language": "de", "node": "B" })
    );
    let on_a = nodes
        .node("A")
        .io
        .cluster()
        .session_load(session_of("sess-lang").as_str())
        .await
        .unwrap();
    assert_eq!(on_a.get("language").map(String::as_str), Some("de"));
    assert_eq!(
        client.call(CORE, "change_language", vec![json!({})]).await,
        (
            json!({ "error": "change_language needs {language}" }),
            Value::Null
        )
    );
    for bad in ["x".repeat(36), "fr\nde".to_string(), String::new()] {
        let (error, _) = client
            .call(CORE, "change_language", vec![json!({ "language": bad })])
            .await;
        assert!(
            error["error"]
                .as_str()
                .unwrap_or_default()
                .contains("language tag"),
            "{bad:?}: {error}"
        );
    }
    assert_eq!(
        client
            .ok(CORE, "change_language", vec![json!("zh-Hant-TW")])
            .await["language"],
        "zh-Hant-TW"
    );
}

#[tokio::test]
async fn render_names_the_rendering_node_and_log_lines_go_there() {
    let nodes = Nodes::start(&[("A", PreferLocal, &[]), ("B", PreferLocal, &["chat"])]);
    let mut client = nodes.client("A", "sess-r");
    client.connect(CORE).await.unwrap();
    let render = json!({ "id": "chat", "version": "1", "view": "room", "context": {} });
    let data = client.ok(CORE, "render", vec![render]).await;
    assert_eq!(data["node"], "B");
    assert_eq!(data["view"], "room");
    assert!(
        data["html"].as_str().unwrap().contains("chat@1.0"),
        "{data}"
    );
    let instance = data["instanceId"].as_str().unwrap().to_string();
    assert!(instance.starts_with("B:"), "{instance}");
    assert_eq!(
        client
            .call(
                CORE,
                "render",
                vec![json!({ "id": "chat", "version": "2" })]
            )
            .await,
        (
            json!({ "error": "unknown component", "component": "chat@2" }),
            Value::Null
        )
    );

    // A line about the instance goes to B, from /core/logging and from the
    // component's own logging channel alike.
    client.connect("/core/logging").await.unwrap();
    client.connect("/chat/1/logging").await.unwrap();
    let line = |message: &str, instance: &str| json!({ "level": "warn", "message": message, "instanceId": instance, "error": { "code": 7 } });
    for (ns, message) in [
        ("/core/logging", "core-line"),
        ("/chat/1/logging", "chat-line"),
    ] {
        let ack = client.ok(ns, "log", vec![line(message, &instance)]).await;
        assert_eq!(ack, json!(true));
    }
    // Lines about no instance, or an instance of a node that is not a host,
    // are written where they arrive.
    client
        .ok("/core/logging", "log", vec![json!({ "message": "plain" })])
        .await;
    client
        .ok("/core/logging", "log", vec![line("gone", "Z:1")])
        .await;

    // The lines travel as messages between nodes.
    let on_b = log_lines(&nodes, "B", 2).await;
    assert_eq!(on_b.len(), 2);
    let Routed::Log {
        level,
        message,
        error,
        instance: about,
        namespace,
        ..
    } = &on_b[0]
    else {
        unreachable!()
    };
    assert_eq!((level.as_str(), message.as_str()), ("warn", "core-line"));
    assert_eq!(error.as_deref(), Some(r#"{"code":7}"#));
    assert_eq!(about.as_deref(), Some(instance.as_str()));
    assert_eq!(namespace.as_str(), "/core/logging");
    assert!(matches!(&on_b[1], Routed::Log { message, .. } if message == "chat-line"));
    let on_a = log_lines(&nodes, "A", 2).await;
    let messages: Vec<&str> = on_a
        .iter()
        .filter_map(|m| match m {
            Routed::Log { message, .. } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(messages, ["plain", "gone"]);

    // What a logging channel refuses.
    assert_eq!(
        client
            .call("/core/logging", "log", vec![json!({ "level": "info" })])
            .await,
        (
            json!({ "error": "log needs a string message" }),
            Value::Null
        )
    );
    assert_eq!(
        client.call("/chat/1/logging", "say", vec![]).await,
        (
            json!({ "error": "unknown event \"say\" (logging takes \"log\")" }),
            Value::Null
        )
    );
}

/// The log lines node `node` has received, once there are `count`.
async fn log_lines(nodes: &Nodes, node: &str, count: usize) -> Vec<Routed> {
    for _ in 0..100 {
        let lines = nodes.received(node, |m| matches!(m, Routed::Log { .. }));
        if lines.len() >= count {
            return lines;
        }
        tokio::task::yield_now().await;
    }
    panic!("node {node} did not receive {count} log lines");
}
