//! The chat component across nodes: hosted on one node, with members on both,
//! through two version aliases of its channel.
//!
//! Owns this scenario only; the harness is in `super::harness`.

use serde_json::{Value, json};

use super::harness::Nodes;
use crate::config::Routing::PreferLocal;

const MAIN: &str = "/chat/1/main";
const ALIAS: &str = "/chat/1.0/main";

/// The `message` a member receives: `(nick, text, node)`.
fn said(args: &[Value]) -> (String, String, String) {
    let message = &args[0];
    assert_eq!(message["room"], "lobby", "{message}");
    assert!(message["ts"].as_u64().is_some_and(|ts| ts > 0), "{message}");
    let text = |key: &str| message[key].as_str().unwrap_or_default().to_string();
    (text("nick"), text("text"), text("node"))
}

fn message(nick: &str, text: &str) -> (String, String, String) {
    (nick.into(), text.into(), "B".into())
}

#[tokio::test]
async fn chat_rooms_span_nodes_and_keep_their_history() {
    let nodes = Nodes::start(&[("A", PreferLocal, &[]), ("B", PreferLocal, &["chat"])]);
    let (mut ann, mut bob) = (nodes.client("A", "ann"), nodes.client("B", "bob"));
    ann.connect(MAIN).await.unwrap();
    bob.connect(ALIAS).await.unwrap();

    let joined = ann
        .ok(
            MAIN,
            "join",
            vec![json!({ "room": "lobby", "nick": "ann" })],
        )
        .await;
    assert_eq!(
        joined,
        json!({ "room": "lobby", "history": [], "node": "B" })
    );
    bob.ok(
        ALIAS,
        "join",
        vec![json!({ "room": "lobby", "nick": "bob" })],
    )
    .await;

    // A say from either node reaches every member on both nodes, sender included.
    let ack = ann
        .ok(
            MAIN,
            "say",
            vec![json!({ "room": "lobby", "text": "hello" })],
        )
        .await;
    assert_eq!(ack, json!({ "node": "B" }));
    assert_eq!(
        said(&ann.event(MAIN, "message").await),
        message("ann", "hello")
    );
    assert_eq!(
        said(&bob.event(ALIAS, "message").await),
        message("ann", "hello")
    );
    bob.ok(
        ALIAS,
        "say",
        vec![json!({ "room": "lobby", "text": "hi ann" })],
    )
    .await;
    assert_eq!(
        said(&bob.event(ALIAS, "message").await),
        message("bob", "hi ann")
    );
    assert_eq!(
        said(&ann.event(MAIN, "message").await),
        message("bob", "hi ann")
    );

    // A newcomer on A gets the room's history, oldest first.
    let mut cid = nodes.client("A", "cid");
    cid.connect(MAIN).await.unwrap();
    let joined = cid.ok(MAIN, "join", vec![json!({ "room": "lobby" })]).await;
    let history: Vec<(String, String, String)> = joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| said(std::slice::from_ref(m)))
        .collect();
    assert_eq!(history, [message("ann", "hello"), message("bob", "hi ann")]);

    // Who left hears no more; a stranger may not say anything.
    ann.ok(MAIN, "leave", vec![json!({ "room": "lobby" })])
        .await;
    bob.ok(
        ALIAS,
        "say",
        vec![json!({ "room": "lobby", "text": "bye" })],
    )
    .await;
    assert_eq!(
        said(&cid.event(MAIN, "message").await),
        message("bob", "bye")
    );
    // Delivery to A's members happens in one go: ann would have it by now.
    assert_eq!(ann.pending_events(), Vec::<Value>::new());
    assert_eq!(
        ann.call(MAIN, "say", vec![json!({ "room": "lobby", "text": "x" })])
            .await,
        (json!({ "error": "not joined" }), Value::Null)
    );
}

#[tokio::test]
async fn chat_refuses_text_and_names_over_their_limits_and_others_carry_on() {
    let settings = crate::config::Settings {
        chat_text_max_length: 10,
        chat_name_max_length: 5,
        ..Default::default()
    };
    let chat = crate::component::demo::builtin("chat", &settings).unwrap();
    let nodes = Nodes::with_settings(&settings, vec![("A", PreferLocal, vec![chat])]);
    let (mut ann, mut bob) = (nodes.client("A", "ann"), nodes.client("A", "bob"));
    ann.connect(MAIN).await.unwrap();
    bob.connect(MAIN).await.unwrap();

    let (error, _) = ann
        .call(
            MAIN,
            "join",
            vec![json!({ "room": "toolong", "nick": "ann" })],
        )
        .await;
    assert_eq!(
        error,
        json!({ "error": "join: room is longer than 5 characters" })
    );
    let (error, _) = ann
        .call(
            MAIN,
            "join",
            vec![json!({ "room": "lobby", "nick": "annabel" })],
        )
        .await;
    assert_eq!(
        error,
        json!({ "error": "join: nick is longer than 5 characters" })
    );
    for who in [&mut ann, &mut bob] {
        who.ok(MAIN, "join", vec![json!({ "room": "lobby" })]).await;
    }
    let (error, _) = ann
        .call(
            MAIN,
            "say",
            vec![json!({ "room": "lobby", "text": "x".repeat(11) })],
        )
        .await;
    assert_eq!(
        error,
        json!({ "error": "say: text is longer than 10 bytes" })
    );
    // Nothing of the refused text went out; a text within the limit does.
    bob.ok(MAIN, "say", vec![json!({ "room": "lobby", "text": "hi" })])
        .await;
    let got = ann.event(MAIN, "message").await;
    assert_eq!(got[0]["text"], "hi");
}

#[tokio::test]
async fn a_socket_joins_at_most_rooms_per_socket_rooms() {
    let settings = crate::config::Settings {
        rooms_per_socket: 2,
        ..Default::default()
    };
    let chat = crate::component::demo::builtin("chat", &settings).unwrap();
    let nodes = Nodes::with_settings(&settings, vec![("A", PreferLocal, vec![chat])]);
    let (mut ann, mut bob) = (nodes.client("A", "ann"), nodes.client("A", "bob"));
    ann.connect(MAIN).await.unwrap();
    bob.connect(MAIN).await.unwrap();
    for room in ["one", "two"] {
        ann.ok(MAIN, "join", vec![json!({ "room": room })]).await;
    }
    let (error, data) = ann
        .call(MAIN, "join", vec![json!({ "room": "three" })])
        .await;
    assert_eq!(
        (error, data),
        (json!({ "error": "too many rooms" }), Value::Null)
    );
    // Others are not held back, and a leave frees a place.
    bob.ok(MAIN, "join", vec![json!({ "room": "three" })]).await;
    ann.ok(MAIN, "leave", vec![json!({ "room": "one" })]).await;
    ann.ok(MAIN, "join", vec![json!({ "room": "three" })]).await;
    bob.ok(MAIN, "say", vec![json!({ "room": "three", "text": "hi" })])
        .await;
    assert_eq!(ann.event(MAIN, "message").await[0]["text"], "hi");
}
