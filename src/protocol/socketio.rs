//! Socket.IO v5 packets.
//!
//! Owns: the packet grammar `<type>[<attachments>-][<namespace>,][<ack id>][<json>]`
//! and the validity rules the reference parser applies to each packet type. Binary
//! attachments are not carried here: a binary packet announces how many follow, and
//! its JSON keeps the `{"_placeholder":true,"num":N}` markers; [`super::reassembly`]
//! collects the attachments that arrive as separate Engine.IO binary messages.
//! Does not own namespaces, sockets or acks (see `crate::socket`).

use bytes::Bytes;
use serde_json::Value;
use thiserror::Error;

/// The Socket.IO packet types, as their ASCII digit on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    Connect = 0,
    Disconnect = 1,
    Event = 2,
    Ack = 3,
    ConnectError = 4,
    BinaryEvent = 5,
    BinaryAck = 6,
}

/// One Socket.IO packet, without its binary attachments.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub kind: PacketType,
    /// Always starts with `/`; the main namespace is `"/"`.
    pub namespace: String,
    /// The ack id, for events that want an ack and for acks.
    pub id: Option<u64>,
    /// The JSON payload, if the packet has one.
    pub data: Option<Value>,
    /// How many binary attachments follow (binary packet types only, else 0).
    pub attachments: usize,
}

/// Why a text could not be read as a Socket.IO packet.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type {0:?}")]
    UnknownType(u8),
    #[error("invalid attachment count")]
    InvalidAttachments,
    #[error("invalid ack id")]
    InvalidAckId,
    #[error("invalid JSON payload")]
    InvalidJson,
    #[error("invalid payload for packet type {0:?}")]
    InvalidPayload(PacketType),
}

/// Event names reserved by Socket.IO: a client may not emit them (the reference
/// server keeps them for itself), and a server never does.
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

impl PacketType {
    /// The packet type for an ASCII digit, if it is one.
    pub fn from_digit(byte: u8) -> Option<PacketType> {
        Some(match byte {
            b'0' => PacketType::Connect,
            b'1' => PacketType::Disconnect,
            b'2' => PacketType::Event,
            b'3' => PacketType::Ack,
            b'4' => PacketType::ConnectError,
            b'5' => PacketType::BinaryEvent,
            b'6' => PacketType::BinaryAck,
            _ => return None,
        })
    }

    /// The ASCII digit that starts a packet of this type.
    pub fn digit(self) -> u8 {
        b'0' + self as u8
    }

    /// Whether packets of this type announce binary attachments (`<n>-`).
    pub fn is_binary(self) -> bool {
        matches!(self, PacketType::BinaryEvent | PacketType::BinaryAck)
    }
}

impl Packet {
    /// A connect packet: a client's request (with its auth) or the server's reply
    /// (with `{"sid": …}`).
    pub fn connect(namespace: impl Into<String>, data: Option<Value>) -> Packet {
        Packet::new(PacketType::Connect, namespace, None, data, 0)
    }

    /// A refused connection, carrying `{"message": message}` as clients expect.
    pub fn connect_error(namespace: impl Into<String>, message: &str) -> Packet {
        let data = serde_json::json!({ "message": message });
        Packet::new(PacketType::ConnectError, namespace, None, Some(data), 0)
    }

    pub fn disconnect(namespace: impl Into<String>) -> Packet {
        Packet::new(PacketType::Disconnect, namespace, None, None, 0)
    }

    /// An event; `data` is the whole array, event name first. Packets with
    /// attachments are binary events so that the receiver waits for them.
    pub fn event(
        namespace: impl Into<String>,
        data: Value,
        id: Option<u64>,
        attachments: usize,
    ) -> Packet {
        let kind = if attachments > 0 {
            PacketType::BinaryEvent
        } else {
            PacketType::Event
        };
        Packet::new(kind, namespace, id, Some(data), attachments)
    }

    /// An ack for event `id`; `data` is the array of ack arguments.
    pub fn ack(namespace: impl Into<String>, data: Value, id: u64, attachments: usize) -> Packet {
        let kind = if attachments > 0 {
            PacketType::BinaryAck
        } else {
            PacketType::Ack
        };
        Packet::new(kind, namespace, Some(id), Some(data), attachments)
    }

    fn new(
        kind: PacketType,
        namespace: impl Into<String>,
        id: Option<u64>,
        data: Option<Value>,
        attachments: usize,
    ) -> Packet {
        Packet {
            kind,
            namespace: namespace.into(),
            id,
            data,
            attachments,
        }
    }

    /// Encodes this packet as Socket.IO text, the inverse of [`decode`].
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out);
        out
    }

    /// Encodes this packet as the text of an Engine.IO message (`"4"` + the
    /// Socket.IO text), in one buffer: this is what a transport writes, and a
    /// broadcast encodes it once and shares it among every receiver.
    pub fn encode_message(&self) -> Bytes {
        let mut out = String::new();
        out.push(char::from(
            crate::protocol::engineio::PacketType::Message.digit(),
        ));
        self.encode_into(&mut out);
        Bytes::from(out.into_bytes())
    }

    fn encode_into(&self, out: &mut String) {
        use std::fmt::Write as _;
        // Writing into a String cannot fail, and neither can serializing a Value
        // (its map keys are strings), so the fmt::Results below carry no news.
        out.push(char::from(self.kind.digit()));
        if self.kind.is_binary() {
            let _ = write!(out, "{}-", self.attachments);
        }
        if self.namespace != "/" {
            out.push_str(&self.namespace);
            out.push(',');
        }
        if let Some(id) = self.id {
            let _ = write!(out, "{id}");
        }
        if let Some(data) = &self.data {
            // Value's Display is compact serde_json, written straight into `out`.
            let _ = write!(out, "{data}");
        }
    }
}

/// Decodes one Socket.IO packet, accepting exactly what the reference
/// `socket.io-parser` v4 accepts, except that events, acks and connect errors
/// must carry their data.
pub fn decode(text: &str) -> Result<Packet, DecodeError> {
    let bytes = text.as_bytes();
    let &first = bytes.first().ok_or(DecodeError::Empty)?;
    let kind = PacketType::from_digit(first).ok_or(DecodeError::UnknownType(first))?;
    // Every delimiter below is ASCII, so each index is a char boundary of `text`.
    let mut at = 1;

    let mut attachments = 0;
    if kind.is_binary() {
        let dash = bytes[at..]
            .iter()
            .position(|&b| b == b'-')
            .ok_or(DecodeError::InvalidAttachments)?;
        attachments = parse_digits(&bytes[at..at + dash]).ok_or(DecodeError::InvalidAttachments)?;
        at += dash + 1;
    }

    let mut namespace = "/";
    if bytes.get(at) == Some(&b'/') {
        // The namespace runs to a ',' (consumed) or to the end of the text.
        let end = bytes[at..]
            .iter()
            .position(|&b| b == b',')
            .map_or(bytes.len(), |comma| at + comma);
        namespace = &text[at..end];
        at = (end + 1).min(bytes.len());
    }

    let digits = bytes[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let mut id = None;
    if digits > 0 {
        id = Some(parse_digits(&bytes[at..at + digits]).ok_or(DecodeError::InvalidAckId)?);
        at += digits;
    }

    let data = match &text[at..] {
        "" => None,
        json => Some(serde_json::from_str::<Value>(json).map_err(|_| DecodeError::InvalidJson)?),
    };
    if !is_payload_valid(kind, data.as_ref()) {
        return Err(DecodeError::InvalidPayload(kind));
    }

    Ok(Packet {
        kind,
        namespace: namespace.to_owned(),
        id,
        data,
        attachments: usize::try_from(attachments).map_err(|_| DecodeError::InvalidAttachments)?,
    })
}

/// A non-empty run of ASCII digits as a number, or None if it is not one or
/// does not fit.
fn parse_digits(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = char::from(b).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// The reference parser's `isPayloadValid`, plus: events, acks and connect
/// errors must have data (the reference lets them through without any, and
/// every later layer would have to cope with that).
fn is_payload_valid(kind: PacketType, data: Option<&Value>) -> bool {
    match (kind, data) {
        (PacketType::Connect, None | Some(Value::Object(_))) => true,
        (PacketType::Disconnect, None) => true,
        (PacketType::ConnectError, Some(Value::Object(_) | Value::String(_))) => true,
        (PacketType::Event | PacketType::BinaryEvent, Some(Value::Array(items))) => {
            match items.first() {
                Some(Value::String(name)) => !RESERVED_EVENTS.contains(&name.as_str()),
                // The reference accepts a number as the event name too.
                Some(Value::Number(_)) => true,
                _ => false,
            }
        }
        (PacketType::Ack | PacketType::BinaryAck, Some(Value::Array(_))) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn packet(
        kind: PacketType,
        namespace: &str,
        id: Option<u64>,
        data: Option<Value>,
        attachments: usize,
    ) -> Packet {
        Packet::new(kind, namespace, id, data, attachments)
    }

    /// Decodes a Socket.IO packet as it appears inside an Engine.IO message frame.
    fn wire(frame: &str) -> Result<Packet, DecodeError> {
        let text = frame.strip_prefix('4').expect("an Engine.IO message");
        decode(text)
    }

    #[test]
    fn connect_main_namespace() {
        assert_eq!(wire("40"), Ok(Packet::connect("/", None)));
    }

    #[test]
    fn connect_with_auth() {
        assert_eq!(
            wire(r#"40{"token":"123"}"#),
            Ok(Packet::connect("/", Some(json!({"token": "123"}))))
        );
    }

    #[test]
    fn connect_custom_namespace() {
        assert_eq!(wire("40/custom,"), Ok(Packet::connect("/custom", None)));
        assert_eq!(wire("40/custom"), Ok(Packet::connect("/custom", None)));
        assert_eq!(wire("40/random"), Ok(Packet::connect("/random", None)));
        assert_eq!(
            wire(r#"40/custom,{"token":"abc"}"#),
            Ok(Packet::connect("/custom", Some(json!({"token": "abc"}))))
        );
    }

    #[test]
    fn binary_event() {
        let data =
            json!(["message", {"_placeholder": true, "num": 0}, {"_placeholder": true, "num": 1}]);
        assert_eq!(
            wire(r#"452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#),
            Ok(packet(PacketType::BinaryEvent, "/", None, Some(data), 2))
        );
    }

    #[test]
    fn binary_event_with_ack_and_namespace() {
        let data = json!(["message-with-ack", {"_placeholder": true, "num": 0}, {"_placeholder": true, "num": 1}]);
        assert_eq!(
            wire(
                r#"452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
            ),
            Ok(packet(
                PacketType::BinaryEvent,
                "/",
                Some(789),
                Some(data.clone()),
                2
            ))
        );
        assert_eq!(
            wire(
                r#"452-/admin,789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
            ),
            Ok(packet(
                PacketType::BinaryEvent,
                "/admin",
                Some(789),
                Some(data),
                2
            ))
        );
    }

    #[test]
    fn event_with_ack() {
        assert_eq!(
            wire(r#"42456["message-with-ack",1,"2",{"3":[false]}]"#),
            Ok(Packet::event(
                "/",
                json!(["message-with-ack", 1, "2", {"3": [false]}]),
                Some(456),
                0
            ))
        );
    }

    #[test]
    fn event_named_by_a_number() {
        assert_eq!(
            wire("42[1,2]"),
            Ok(Packet::event("/", json!([1, 2]), None, 0))
        );
    }

    #[test]
    fn ack_and_disconnect() {
        assert_eq!(
            wire(r#"43/chat,12["ok"]"#),
            Ok(Packet::ack("/chat", json!(["ok"]), 12, 0))
        );
        assert_eq!(
            wire("461-3[{\"_placeholder\":true,\"num\":0}]"),
            Ok(packet(
                PacketType::BinaryAck,
                "/",
                Some(3),
                Some(json!([{"_placeholder": true, "num": 0}])),
                1
            ))
        );
        assert_eq!(wire("41"), Ok(Packet::disconnect("/")));
        assert_eq!(wire("41/chat,"), Ok(Packet::disconnect("/chat")));
    }

    #[test]
    fn connect_error() {
        assert_eq!(
            wire(r#"44{"message":"nope"}"#),
            Ok(Packet::connect_error("/", "nope"))
        );
        assert_eq!(
            wire(r#"44"nope""#),
            Ok(packet(
                PacketType::ConnectError,
                "/",
                None,
                Some(json!("nope")),
                0
            ))
        );
    }

    #[test]
    fn errors() {
        assert_eq!(decode(""), Err(DecodeError::Empty));
        // "4abc" is an Engine.IO message whose Socket.IO text is "abc".
        assert_eq!(decode("abc"), Err(DecodeError::UnknownType(b'a')));
        assert_eq!(decode("7"), Err(DecodeError::UnknownType(b'7')));
        // As Socket.IO text, "4abc" is a connect error with non-JSON data.
        assert_eq!(decode("4abc"), Err(DecodeError::InvalidJson));
        assert_eq!(
            decode("2{}"),
            Err(DecodeError::InvalidPayload(PacketType::Event))
        );
        assert_eq!(decode(r#"2abc["x"]"#), Err(DecodeError::InvalidJson));
        assert_eq!(
            decode(r#"2["connect"]"#),
            Err(DecodeError::InvalidPayload(PacketType::Event))
        );
        assert_eq!(
            decode("2[]"),
            Err(DecodeError::InvalidPayload(PacketType::Event))
        );
        assert_eq!(
            decode("2"),
            Err(DecodeError::InvalidPayload(PacketType::Event))
        );
        assert_eq!(
            decode("1{}"),
            Err(DecodeError::InvalidPayload(PacketType::Disconnect))
        );
        assert_eq!(
            decode("0[]"),
            Err(DecodeError::InvalidPayload(PacketType::Connect))
        );
        assert_eq!(
            decode("3{}"),
            Err(DecodeError::InvalidPayload(PacketType::Ack))
        );
        assert_eq!(
            decode("4[]"),
            Err(DecodeError::InvalidPayload(PacketType::ConnectError))
        );
    }

    #[test]
    fn errors_on_the_wire() {
        for (frame, expected) in [
            ("42{}", Err(DecodeError::InvalidPayload(PacketType::Event))),
            (r#"42abc["x"]"#, Err(DecodeError::InvalidJson)),
            (
                r#"42["connect"]"#,
                Err(DecodeError::InvalidPayload(PacketType::Event)),
            ),
            ("41", Ok(Packet::disconnect("/"))),
            (
                "41{}",
                Err(DecodeError::InvalidPayload(PacketType::Disconnect)),
            ),
        ] {
            assert_eq!(wire(frame), expected, "{frame}");
        }
    }

    #[test]
    fn bad_attachments_and_ids() {
        assert_eq!(decode(r#"5["x"]"#), Err(DecodeError::InvalidAttachments));
        assert_eq!(decode(r#"5-["x"]"#), Err(DecodeError::InvalidAttachments));
        assert_eq!(decode(r#"5a-["x"]"#), Err(DecodeError::InvalidAttachments));
        assert_eq!(
            decode(r#"599999999999999999999-["x"]"#),
            Err(DecodeError::InvalidAttachments)
        );
        assert_eq!(
            decode(r#"299999999999999999999["x"]"#),
            Err(DecodeError::InvalidAckId)
        );
        assert_eq!(
            decode(r#"218446744073709551615["x"]"#),
            Ok(Packet::event("/", json!(["x"]), Some(u64::MAX), 0))
        );
    }

    #[test]
    fn encode_connect_reply() {
        let reply = Packet::connect("/custom", Some(json!({"sid": "x"})));
        assert_eq!(reply.encode(), r#"0/custom,{"sid":"x"}"#);
        assert_eq!(&reply.encode_message()[..], br#"40/custom,{"sid":"x"}"#);
        assert_eq!(Packet::connect("/", None).encode(), "0");
        assert_eq!(Packet::disconnect("/chat").encode(), "1/chat,");
    }

    #[test]
    fn encode_events_and_acks() {
        assert_eq!(
            Packet::event("/", json!(["hi", 1]), Some(7), 0).encode(),
            r#"27["hi",1]"#
        );
        assert_eq!(
            Packet::event(
                "/a",
                json!(["hi", {"_placeholder": true, "num": 0}]),
                None,
                1
            )
            .encode(),
            r#"51-/a,["hi",{"_placeholder":true,"num":0}]"#
        );
        assert_eq!(Packet::ack("/", json!([]), 3, 0).encode(), "33[]");
        assert_eq!(
            Packet::ack("/", json!([{"_placeholder": true, "num": 0}]), 3, 1).encode(),
            r#"61-3[{"_placeholder":true,"num":0}]"#
        );
        assert_eq!(
            Packet::connect_error("/", "no").encode(),
            r#"4{"message":"no"}"#
        );
    }

    #[test]
    fn encode_decode_round_trip() {
        for packet in [
            Packet::connect("/", None),
            Packet::connect("/x", Some(json!({"a": [1, null]}))),
            Packet::connect_error("/x", "bad"),
            Packet::disconnect("/"),
            Packet::event("/", json!(["e", "a", 2]), None, 0),
            Packet::event(
                "/n",
                json!(["e", {"_placeholder": true, "num": 0}]),
                Some(0),
                1,
            ),
            Packet::ack("/n", json!([]), 9, 0),
            Packet::ack("/", json!([{"_placeholder": true, "num": 0}]), 1, 1),
        ] {
            assert_eq!(decode(&packet.encode()), Ok(packet.clone()));
            let message = packet.encode_message();
            assert_eq!(message.first(), Some(&b'4'));
            let text = std::str::from_utf8(&message[1..]).expect("utf-8");
            assert_eq!(decode(text), Ok(packet));
        }
    }
}
