//! The fuzz targets beyond the decoders, as proptests CI can run in seconds:
//! the client's state machine, the emit API's body, node-to-node messages, and
//! the cookie and session-token parser.
//!
//! The properties are not restated here: this file includes the fuzz crate's
//! `fuzz/src/lib.rs`, and each proptest hands its generated input to the same
//! check a `cargo fuzz` target (`scripts/fuzz`) hands libFuzzer's. The
//! generators aim at the interesting states (binary packets over the limits,
//! bodies one field away from valid, messages truncated or of another format)
//! that random bytes would rarely reach in a bounded number of cases.

#[path = "../fuzz/src/lib.rs"]
mod checks;

use base64::Engine as _;
use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use rain_node::cluster::wire::{self, Message, WireFrame, WirePayload};
use rain_node::cluster::{RemoteOp, Target};
use rain_node::component::Effects;
use rain_node::mothership::messages::{self, Routed};
use rain_node::protocol::engineio::Frame;
use serde_json::{Value, json};

/// Enough cases to cross every limit, few enough for CI (a few seconds).
fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

// ---- the client's state machine ----

fn blob() -> impl Strategy<Value = Vec<u8>> {
    // Up to past CLIENT_LIMITS.max_message (96).
    vec(any::<u8>(), 0..110)
}

fn text_frame(text: String) -> Frame {
    Frame::Text(Bytes::from(text))
}

/// Frames a session may receive, weighted towards binary packets and their
/// attachments.
fn client_frame() -> impl Strategy<Value = Frame> {
    let namespace = prop_oneof![Just(""), Just("/chat,")];
    let id = proptest::option::of(0u32..1000).prop_map(|id| id.map(|id| id.to_string()));
    prop_oneof![
        // A binary event or ack, announcing up to past the limit (4).
        3 => (any::<bool>(), 0usize..7, namespace, id).prop_map(|(ack, n, ns, id)| {
            let id = id.unwrap_or_default();
            text_frame(if ack {
                format!(r#"46{n}-{ns}{id}[{{"_placeholder":true,"num":0}}]"#)
            } else {
                format!(r#"45{n}-{ns}{id}["file",{{"_placeholder":true,"num":0}},1]"#)
            })
        }),
        4 => blob().prop_map(|data| Frame::Binary(Bytes::from(data))),
        1 => blob().prop_map(|data| text_frame(format!(
            "b{}",
            base64::engine::general_purpose::STANDARD.encode(data)
        ))),
        1 => Just(text_frame(r#"42["chat",{"a":[1,null]}]"#.into())),
        1 => Just(text_frame(r#"40/chat,{"token":"t"}"#.into())),
        // Engine.IO packets the engine keeps for itself.
        1 => prop_oneof![Just("2"), Just("3probe"), Just("6"), Just("1")]
            .prop_map(|text| text_frame(text.into())),
        // Near-valid Socket.IO text, and anything at all.
        1 => "4[0-6][0-9]{0,2}-?(/[a-z]{0,3},)?[0-9]{0,2}(\\[|\\]|\\{|\\}|\"[a-z]{0,3}\"|[0-9]|,|:|null){0,8}"
            .prop_map(text_frame),
        1 => ".{0,120}".prop_map(text_frame),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn client_frames_reassemble_within_limits(frames in vec(client_frame(), 0..24)) {
        checks::client_frames(frames);
    }
}

/// The frames of a crash found by a fuzzer or these tests would be pinned here.
#[test]
fn client_frames_edge_cases() {
    let binary = |data: &'static [u8]| Frame::Binary(Bytes::from_static(data));
    for frames in [
        // An attachment with no packet, then a text packet while one waits.
        vec![binary(b"x"), text_frame(r#"451-["a",1]"#.into())],
        vec![
            text_frame(r#"452-["a"]"#.into()),
            text_frame(r#"42["b"]"#.into()),
            binary(b"1"),
            binary(b"2"),
        ],
        // A binary packet announcing none: out at once.
        vec![text_frame(r#"450-["a"]"#.into())],
        // Over the limits: attachments, and bytes of a message.
        vec![text_frame(r#"455-["a"]"#.into())],
        vec![
            text_frame(r#"451-["a"]"#.into()),
            Frame::Binary(Bytes::from(vec![0; 97])),
            binary(b"ok"),
        ],
        // An event whose encoding is longer than what was sent.
        vec![text_frame("451-[\"a\",1E2]".into()), binary(b"")],
    ] {
        checks::client_frames(frames);
    }
}

// ---- the emit API's body ----

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec(("[a-z]{0,4}", inner), 0..3)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// A value for a field: mostly of the type it wants, sometimes not.
fn field_value(good: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
    prop_oneof![4 => good, 1 => json_value()].boxed()
}

fn name() -> impl Strategy<Value = Value> {
    prop_oneof![
        "/[a-z]{0,6}",
        "[a-z]{0,6}",
        proptest::sample::select(&rain_node::protocol::socketio::RESERVED_EVENTS[..])
            .prop_map(String::from),
    ]
    .prop_map(Value::String)
}

fn names() -> impl Strategy<Value = Value> {
    vec("[a-z]{0,4}", 0..3).prop_map(|names| json!(names))
}

/// An emit body: each known field present or not, with a value of its type
/// or not, and now and then a field the API does not know.
fn emit_body() -> impl Strategy<Value = Vec<u8>> {
    let fields = (
        proptest::option::of(field_value(name())),
        proptest::option::of(field_value(name())),
        proptest::option::of(field_value(vec(json_value(), 0..3).prop_map(Value::Array))),
        proptest::option::of(field_value("[a-z]{1,4}".prop_map(Value::String))),
        proptest::option::of(field_value("[a-z]{1,4}".prop_map(Value::String))),
        proptest::option::of(field_value(names())),
        proptest::option::of(field_value(names())),
        proptest::option::weighted(0.1, json_value()),
    );
    let structured = fields.prop_map(
        |(namespace, event, args, socket, room, rooms, except, unknown)| {
            let mut body = serde_json::Map::new();
            for (key, value) in [
                ("namespace", namespace),
                ("event", event),
                ("args", args),
                ("socket", socket),
                ("room", room),
                ("rooms", rooms),
                ("except", except),
                ("unknown", unknown),
            ] {
                if let Some(value) = value {
                    body.insert(key.to_string(), value);
                }
            }
            serde_json::to_vec(&Value::Object(body)).expect("JSON")
        },
    );
    prop_oneof![
        8 => structured,
        1 => vec(any::<u8>(), 0..64),
        1 => json_value().prop_map(|value| serde_json::to_vec(&value).expect("JSON")),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn emit_bodies_parse_to_valid_requests(body in emit_body()) {
        checks::emit_body(&body);
    }
}

#[test]
fn emit_body_edge_cases() {
    for body in [
        &br#"{"namespace":"/","event":"news","room":"a","rooms":["a"]}"#[..],
        br#"{"namespace":"/","event":"news","socket":"s","room":"a"}"#,
        br#"{"namespace":"/","event":"news","socket":"s","except":["a"]}"#,
        br#"{"namespace":"/","event":"news","namespace":"/"}"#,
        br#"{"namespace":"/","event":"disconnect"}"#,
        b"",
        b"[]",
        b"\xff",
    ] {
        checks::emit_body(body);
    }
}

// ---- node-to-node messages ----

fn text() -> impl Strategy<Value = String> {
    ".{0,8}"
}

fn bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn wire_frame() -> impl Strategy<Value = WireFrame> {
    (any::<bool>(), bytes()).prop_map(|(binary, data)| WireFrame { binary, data })
}

fn wire_payload() -> impl Strategy<Value = WirePayload> {
    (
        prop_oneof![Just("[]".to_string()), Just("[1,\"a\"]".into()), text()],
        vec(bytes(), 0..3),
    )
        .prop_map(|(args_json, attachments)| WirePayload {
            args_json,
            attachments,
        })
}

fn names_list() -> impl Strategy<Value = Vec<String>> {
    vec(text(), 0..3)
}

fn cluster_message() -> impl Strategy<Value = Message> {
    let target = prop_oneof![
        text().prop_map(Target::Socket),
        text().prop_map(Target::Room)
    ];
    let op = prop_oneof![
        text().prop_map(RemoteOp::Join),
        text().prop_map(RemoteOp::Leave),
        Just(RemoteOp::Disconnect),
    ];
    prop_oneof![
        (
            text(),
            vec((text(), vec(wire_frame(), 0..3)), 0..3),
            names_list(),
            names_list()
        )
            .prop_map(|(origin, targets, rooms, except)| Message::Broadcast {
                origin,
                targets,
                rooms,
                except
            }),
        (
            (text(), any::<u64>(), text(), names_list(), names_list()),
            (text(), wire_payload(), any::<u64>())
        )
            .prop_map(
                |((origin, request, namespace, rooms, except), (event, payload, timeout_ms))| {
                    Message::AckBroadcast {
                        origin,
                        request,
                        namespace,
                        rooms,
                        except,
                        event,
                        payload,
                        timeout_ms,
                    }
                }
            ),
        (any::<u64>(), vec(wire_payload(), 0..3))
            .prop_map(|(request, answers)| Message::AckAnswers { request, answers }),
        (text(), text(), vec(wire_frame(), 0..3)).prop_map(|(namespace, sid, frames)| {
            Message::ToSocket {
                namespace,
                sid,
                frames,
            }
        }),
        (text(), text(), target, op).prop_map(|(origin, namespace, target, op)| {
            Message::Remote {
                origin,
                namespace,
                target,
                op,
            }
        }),
        text().prop_map(|node| Message::NodeDown { node }),
        text().prop_map(|node| Message::ServicesChanged { node }),
        (
            prop_oneof![Just(messages::TOPIC.to_string()), text()],
            routed_message().prop_map(|routed| routed.encode())
        )
            .prop_map(|(topic, body)| Message::Topic { topic, body }),
    ]
}

fn routed_message() -> impl Strategy<Value = Routed> {
    let instance = || proptest::option::of(text());
    prop_oneof![
        (
            (any::<u64>(), text(), text(), text(), text(), text()),
            (
                text(),
                text(),
                text(),
                instance(),
                instance(),
                any::<bool>()
            )
        )
            .prop_map(
                |(
                    (request, from, component, namespace, channel, event),
                    (args_json, socket, session, user, instance, create_instance),
                )| Routed::Request {
                    request,
                    from,
                    component,
                    namespace,
                    channel,
                    event,
                    args_json,
                    socket,
                    session,
                    user,
                    instance,
                    create_instance,
                }
            ),
        (
            any::<u64>(),
            any::<bool>(),
            text(),
            names_list(),
            names_list()
        )
            .prop_map(|(request, ok, value_json, join, leave)| Routed::Reply {
                request,
                ok,
                value_json,
                effects: Effects { join, leave },
            }),
        (
            (any::<bool>(), instance()),
            (text(), text(), text(), text(), text(), text())
        )
            .prop_map(
                |((connected, user), (from, component, namespace, channel, socket, session))| {
                    Routed::Lifecycle {
                        connected,
                        from,
                        component,
                        namespace,
                        channel,
                        socket,
                        session,
                        user,
                    }
                }
            ),
        (
            (text(), text(), proptest::option::of(text()), instance()),
            (text(), text())
        )
            .prop_map(|((level, message, error, instance), (namespace, socket))| {
                Routed::Log {
                    level,
                    message,
                    error,
                    instance,
                    namespace,
                    socket,
                }
            }),
    ]
}

/// An encoding damaged the way a fuzzer would: a byte changed, bytes cut off
/// or added.
fn damaged(bytes: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = bytes.len();
    (0..len.max(1), any::<u8>(), 0..3u8).prop_map(move |(at, byte, how)| {
        let mut bytes = bytes.clone();
        match how {
            0 if at < len => bytes[at] = byte,
            1 => bytes.truncate(at),
            _ => bytes.insert(at.min(len), byte),
        }
        bytes
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cluster_messages_round_trip(message in cluster_message()) {
        checks::wire_message(&message);
        checks::wire_bytes(&message.encode());
    }

    #[test]
    fn routed_messages_round_trip(routed in routed_message()) {
        checks::routed_message(&routed);
        checks::wire_bytes(&routed.encode());
    }

    #[test]
    fn damaged_wire_messages_are_refused_or_read(
        bytes in prop_oneof![
            cluster_message().prop_flat_map(|m| damaged(m.encode())),
            routed_message().prop_flat_map(|m| damaged(m.encode().to_vec())),
        ]
    ) {
        checks::wire_bytes(&bytes);
    }

    #[test]
    fn random_wire_bytes_are_refused_or_read(
        format in prop_oneof![Just(wire::FORMAT), Just(messages::FORMAT), any::<u8>()],
        body in vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = vec![format];
        bytes.extend(body);
        checks::wire_bytes(&bytes);
    }
}

#[test]
fn wire_edge_cases() {
    let mut other_format = Message::NodeDown { node: "a".into() }.encode();
    other_format[0] = 99;
    for bytes in [
        Vec::new(),
        vec![wire::FORMAT],
        vec![messages::FORMAT],
        vec![wire::FORMAT, 0xc1],
        other_format,
        // A huge announced length with nothing after it.
        vec![wire::FORMAT, 0xdd, 0xff, 0xff, 0xff, 0xff],
        vec![messages::FORMAT, 0xdf, 0xff, 0xff, 0xff, 0xff],
    ] {
        checks::wire_bytes(&bytes);
    }
}

/// What a client may send as its `Cookie` header or `auth.sessionId`: cookie
/// lists with `rain_session` among them, token-shaped text, anything.
fn session_input() -> impl Strategy<Value = String> {
    let token_like = "[A-Za-z0-9_-]{22}\\.[A-Za-z0-9_-]{43}";
    prop_oneof![
        any::<String>(),
        token_like.prop_map(String::from),
        (token_like, "[a-z_]{0,12}", "[ -~]{0,20}").prop_map(|(token, name, other)| format!(
            "{name}={other}; rain_session={token}; rain_session=\"{token}\""
        )),
        "[ -~]{0,80}".prop_map(String::from),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn session_tokens_verify_only_when_minted(input in session_input()) {
        checks::session_token(input.as_bytes());
    }
}

#[test]
fn session_token_edge_cases() {
    for input in [
        "",
        "=",
        ";;;",
        "rain_session=",
        "rain_session=.",
        "rain_session=\"",
        "a=b; rain_session",
        "\u{0}rain_session=x",
        "rain_session=AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        checks::session_token(input.as_bytes());
    }
}
