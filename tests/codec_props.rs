//! Property tests for the wire codecs: whatever we encode decodes to the same
//! packet, and no input makes a decoder panic.

use bytes::Bytes;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use rain_node::protocol::{engineio, socketio};
use serde_json::Value;

// ---- Engine.IO ----

/// Text without the record separator: a payload cannot carry it inside a text
/// packet (the reference parser has the same limitation).
fn payload_text() -> impl Strategy<Value = String> + Clone {
    "[^\u{1e}]{0,40}"
}

fn non_empty(text: impl Strategy<Value = String>) -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text.prop_filter("empty data decodes as none", |s| !s.is_empty()))
}

fn engineio_packet(
    text: impl Strategy<Value = String> + Clone + 'static,
) -> impl Strategy<Value = engineio::Packet> {
    use engineio::Packet;
    prop_oneof![
        text.clone().prop_map(Packet::Open),
        Just(Packet::Close),
        non_empty(text.clone()).prop_map(Packet::Ping),
        non_empty(text.clone()).prop_map(Packet::Pong),
        text.prop_map(|s| Packet::Message(Bytes::from(s))),
        vec(any::<u8>(), 0..64).prop_map(|b| Packet::Binary(Bytes::from(b))),
        Just(Packet::Upgrade),
        Just(Packet::Noop),
    ]
}

fn decode_frame(frame: engineio::Frame) -> Result<engineio::Packet, engineio::DecodeError> {
    match frame {
        engineio::Frame::Text(text) => {
            assert!(std::str::from_utf8(&text).is_ok(), "text frames are UTF-8");
            engineio::decode_text(text)
        }
        engineio::Frame::Binary(data) => Ok(engineio::decode_binary(data)),
    }
}

proptest! {
    #[test]
    fn engineio_frame_round_trip(packet in engineio_packet(any::<String>())) {
        prop_assert_eq!(decode_frame(packet.encode()), Ok(packet));
    }

    #[test]
    fn engineio_payload_round_trip(packets in vec(engineio_packet(payload_text()), 1..8)) {
        let frames: Vec<_> = packets.iter().map(engineio::Packet::encode).collect();
        let mut body = Vec::new();
        engineio::encode_payload(&frames, &mut body);
        prop_assert_eq!(engineio::decode_payload(Bytes::from(body)), Ok(packets));
    }

    #[test]
    fn engineio_decoders_never_panic(bytes in vec(any::<u8>(), 0..128)) {
        let _ = engineio::decode_text(Bytes::from(bytes.clone()));
        let _ = engineio::decode_payload(Bytes::from(bytes));
    }

    /// Near-valid payloads reach deeper into the decoder than random bytes; what
    /// decodes must survive a re-encode.
    #[test]
    fn engineio_payload_reencodes(body in "([0-6b][a-zA-Z0-9+/=]{0,8}\u{1e}?){1,6}") {
        if let Ok(packets) = engineio::decode_payload(Bytes::from(body)) {
            let frames: Vec<_> = packets.iter().map(engineio::Packet::encode).collect();
            let mut again = Vec::new();
            engineio::encode_payload(&frames, &mut again);
            prop_assert_eq!(engineio::decode_payload(Bytes::from(again)), Ok(packets));
        }
    }
}

// ---- Socket.IO ----

fn namespace() -> impl Strategy<Value = String> {
    prop_oneof![Just("/".to_owned()), "/[a-z0-9-]{1,10}"]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(".{0,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    btree_map(".{0,6}", json_value(), 0..4).prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn event_data() -> impl Strategy<Value = Value> {
    let name = ".{0,12}".prop_filter("reserved event name", |name: &String| {
        !socketio::RESERVED_EVENTS.contains(&name.as_str())
    });
    (name, vec(json_value(), 0..4)).prop_map(|(name, mut args)| {
        args.insert(0, Value::String(name));
        Value::Array(args)
    })
}

fn socketio_packet() -> impl Strategy<Value = socketio::Packet> {
    use socketio::{Packet, PacketType};
    let id = || proptest::option::of(any::<u64>());
    let packet = |kind, namespace, id, data, attachments| Packet {
        kind,
        namespace,
        id,
        data,
        attachments,
    };
    prop_oneof![
        (namespace(), proptest::option::of(json_object()))
            .prop_map(|(ns, data)| Packet::connect(ns, data)),
        namespace().prop_map(Packet::disconnect),
        (
            namespace(),
            prop_oneof![json_object(), ".{0,12}".prop_map(Value::String)]
        )
            .prop_map(move |(ns, data)| packet(
                PacketType::ConnectError,
                ns,
                None,
                Some(data),
                0
            )),
        (namespace(), event_data(), id()).prop_map(|(ns, data, id)| Packet::event(ns, data, id, 0)),
        (namespace(), event_data(), id(), 1..5usize)
            .prop_map(|(ns, data, id, n)| Packet::event(ns, data, id, n)),
        (namespace(), vec(json_value(), 0..4), any::<u64>())
            .prop_map(|(ns, args, id)| Packet::ack(ns, Value::Array(args), id, 0)),
        (
            namespace(),
            vec(json_value(), 0..4),
            any::<u64>(),
            1..5usize
        )
            .prop_map(|(ns, args, id, n)| Packet::ack(ns, Value::Array(args), id, n)),
    ]
}

proptest! {
    #[test]
    fn socketio_round_trip(packet in socketio_packet()) {
        prop_assert_eq!(socketio::decode(&packet.encode()), Ok(packet.clone()));
        let message = packet.encode_message();
        prop_assert_eq!(message.first(), Some(&b'4'));
        let decoded = engineio::decode_text(message);
        let Ok(engineio::Packet::Message(text)) = decoded else {
            return Err(TestCaseError::fail(format!("not a message: {decoded:?}")));
        };
        let text = std::str::from_utf8(&text).expect("messages are UTF-8");
        prop_assert_eq!(socketio::decode(text), Ok(packet));
    }

    #[test]
    fn socketio_decode_never_panics(text in any::<String>()) {
        let _ = socketio::decode(&text);
    }

    /// Near-valid packets reach deeper into the decoder than random strings; what
    /// decodes must survive a re-encode.
    #[test]
    fn socketio_decode_reencodes(text in r#"[0-6][0-9]{0,3}-?(/[a-z]{0,4},?)?[0-9]{0,3}(\[|\]|\{|\}|"[a-z]{0,3}"|[0-9]|,|:|true|null){0,10}"#) {
        if let Ok(packet) = socketio::decode(&text) {
            prop_assert_eq!(socketio::decode(&packet.encode()), Ok(packet));
        }
    }
}
