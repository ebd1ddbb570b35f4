//! The properties the fuzz targets check, one function per target beyond the
//! decoders, shared with the main crate's proptests: `tests/fuzz_props.rs`
//! includes this very file, so CI checks on generated inputs exactly what
//! `scripts/fuzz` checks on libFuzzer's. Each function panics when a property
//! does not hold; none may panic otherwise.
//!
//! Uses only what the main crate's tests can use too (`rain_node`, `bytes`,
//! `serde_json`); the fuzz-only parts (libFuzzer, `arbitrary`) stay in
//! `fuzz_targets/`.
//!

use bytes::Bytes;
use rain_node::api::EmitRequest;
use rain_node::cluster::wire::{self, Message, WireError};
use rain_node::mothership::messages::{self, Routed};
use rain_node::protocol::engineio::{self, Frame, Packet};
use rain_node::protocol::payload::packet_frames;
use rain_node::protocol::reassembly::{Assembled, Limits, Reassembler};
use rain_node::protocol::socketio::RESERVED_EVENTS;
use rain_node::session_token::{SessionKeys, parse_session_token};

/// Small limits, so that inputs of a few hundred bytes cross them.
pub const CLIENT_LIMITS: Limits = Limits {
    max_attachments: 4,
    max_message: 96,
};

/// A message of the Socket.IO layer: what the engine hands a client.
enum Received {
    Text(Bytes),
    Binary(Bytes),
}

/// What the engine makes of one frame: a message for the client, or a packet
/// it handles itself (ping, close, …: `None`). Polling carries binary messages
/// as base64 text (`b…`), which arrive here as text frames.
fn message_of(frame: Frame) -> Option<Received> {
    let packet = match frame {
        Frame::Text(text) => engineio::decode_text(text).ok()?,
        Frame::Binary(data) => engineio::decode_binary(data),
    };
    match packet {
        Packet::Message(text) => Some(Received::Text(text)),
        Packet::Binary(data) => Some(Received::Binary(data)),
        _ => None,
    }
}

/// The client's state machine: a sequence of Engine.IO frames, as a session
/// receives them, through one [`Reassembler`] with [`CLIENT_LIMITS`] (the same
/// piece `rain_node::client` feeds every message through). The session is
/// closed on the first refusal in real life; here feeding goes on, so the
/// state after a refusal is exercised too.
///
/// - No input panics, and a refusal leaves the state as it was.
/// - Memory is bounded: a waiting packet holds fewer than `max_attachments`
///   attachments of at most `max_message` bytes each.
/// - A packet comes out with exactly the attachments it announced (at most
///   `max_attachments`), which are the binary messages accepted since it, in
///   order.
/// - Round trip: what comes out, encoded by the one encoder
///   (`payload::packet_frames`) and fed to a fresh reassembler, comes out the
///   same.
pub fn client_frames(frames: Vec<Frame>) {
    let limits = CLIENT_LIMITS;
    let mut reassembler = Reassembler::new(limits);
    // The binary messages accepted for the waiting packet, as the model of
    // what it must come out with.
    let mut accepted: Vec<Bytes> = Vec::new();
    for frame in frames {
        let Some(message) = message_of(frame) else {
            continue;
        };
        let before = (reassembler.awaiting(), reassembler.buffered_bytes());
        let (result, binary) = match message {
            Received::Text(text) => (reassembler.feed_text(&text), None),
            Received::Binary(data) => (reassembler.feed_binary(data.clone()), Some(data)),
        };
        match result {
            Err(_) => assert_eq!(
                (reassembler.awaiting(), reassembler.buffered_bytes()),
                before,
                "a refused message changed the state"
            ),
            Ok(None) => {
                assert!(
                    reassembler.awaiting() > 0,
                    "nothing came out, nothing waits"
                );
                match binary {
                    Some(data) => accepted.push(data),
                    None => accepted.clear(),
                }
            }
            Ok(Some(assembled)) => {
                assert_eq!(reassembler.awaiting(), 0);
                assert_eq!(reassembler.buffered_bytes(), 0);
                if let Some(data) = binary {
                    accepted.push(data);
                } else {
                    accepted.clear();
                }
                assert_eq!(assembled.attachments, accepted, "attachments out of order");
                accepted.clear();
                check_assembled(&assembled, limits);
            }
        }
        assert!(reassembler.awaiting() <= limits.max_attachments);
        assert!(reassembler.buffered_bytes() <= limits.max_attachments * limits.max_message);
    }
}

fn check_assembled(assembled: &Assembled, limits: Limits) {
    let Assembled {
        packet,
        attachments,
    } = assembled;
    assert_eq!(attachments.len(), packet.attachments);
    assert!(packet.attachments <= limits.max_attachments);
    assert!(attachments.iter().all(|a| a.len() <= limits.max_message));
    // The encoding of a packet may be longer than what was sent (`1E2` comes
    // back as `100.0`), so the round trip runs without a size limit.
    let mut again = Reassembler::new(Limits {
        max_message: usize::MAX,
        ..limits
    });
    let mut out = None;
    for frame in packet_frames(packet, attachments.clone()) {
        assert!(out.is_none(), "a packet came out before its last frame");
        out = match message_of(frame).expect("our frames are messages") {
            Received::Text(text) => again.feed_text(&text),
            Received::Binary(data) => again.feed_binary(data),
        }
        .expect("our own frames are accepted");
    }
    assert_eq!(
        out.as_ref(),
        Some(assembled),
        "round trip through the encoder"
    );
}

/// The emit API's JSON body: [`EmitRequest::parse`] never panics, what it
/// accepts is valid (namespace starting with `/`, an event named and not
/// reserved, `room` merged into `rooms`, `socket` never with rooms), and a
/// valid request serialises to a body that parses to the same request.
pub fn emit_body(body: &[u8]) {
    let Ok(request) = EmitRequest::parse(body) else {
        return;
    };
    assert!(request.namespace.starts_with('/'));
    assert!(!request.event.is_empty());
    assert!(!RESERVED_EVENTS.contains(&request.event.as_str()));
    assert_eq!(request.room, None);
    assert!(request.socket.is_none() || request.rooms.is_empty());
    let again = serde_json::to_vec(&request).expect("a request serialises");
    assert_eq!(EmitRequest::parse(&again), Ok(request));
}

/// Bytes from another node: the cluster's [`Message`] and the Mothership's
/// [`Routed`] decoders never panic, refuse an empty message and any other
/// format byte than their own, and what they accept re-encodes to itself.
/// What a node then reads inside a message (frames, JSON arguments) is read
/// too, without panicking.
pub fn wire_bytes(bytes: &[u8]) {
    let decoded = Message::decode(bytes);
    check_versioned(bytes, wire::FORMAT, &decoded);
    if let Ok(message) = decoded {
        wire_message(&message);
        read_message(message);
    }
    let decoded = Routed::decode(bytes);
    check_versioned(bytes, messages::FORMAT, &decoded);
    if let Ok(routed) = decoded {
        routed_message(&routed);
        read_routed(routed);
    }
}

/// A cluster message: encode then decode is the identity, and every strict
/// prefix of its encoding is refused (a truncated message is never misread).
pub fn wire_message(message: &Message) {
    let bytes = message.encode();
    assert_eq!(Message::decode(&bytes).ok().as_ref(), Some(message));
    for end in 0..bytes.len() {
        assert!(
            Message::decode(&bytes[..end]).is_err(),
            "prefix of {end} bytes"
        );
    }
}

/// A Mothership message: as [`wire_message`].
pub fn routed_message(routed: &Routed) {
    let bytes = routed.encode();
    assert_eq!(Routed::decode(&bytes).ok().as_ref(), Some(routed));
    for end in 0..bytes.len() {
        assert!(
            Routed::decode(&bytes[..end]).is_err(),
            "prefix of {end} bytes"
        );
    }
}

fn check_versioned<T>(bytes: &[u8], format: u8, decoded: &Result<T, WireError>) {
    match (bytes.first(), decoded) {
        (None, result) => assert!(matches!(result, Err(WireError::Empty))),
        (Some(&first), Ok(_)) => assert_eq!(first, format, "another format was read"),
        (Some(&first), Err(WireError::Format { found, reads })) => {
            assert_ne!(first, format);
            assert_eq!((*found, *reads), (first, format));
        }
        (Some(&first), Err(WireError::Malformed(_))) => assert_eq!(first, format),
        (Some(_), Err(WireError::Empty)) => panic!("a message with bytes read as empty"),
    }
}

/// What a receiving node reads inside a cluster message.
fn read_message(message: Message) {
    match message {
        Message::Broadcast { targets, .. } => {
            for (_, frames) in targets {
                frames.into_iter().for_each(read_frame);
            }
        }
        Message::ToSocket { frames, .. } => frames.into_iter().for_each(read_frame),
        Message::AckBroadcast { payload, .. } => {
            let _ = payload.into_payload();
        }
        Message::AckAnswers { answers, .. } => {
            for answer in answers {
                let _ = answer.into_payload();
            }
        }
        Message::Topic { topic, body } => {
            // The Mothership's messages travel inside `Topic`.
            if topic == messages::TOPIC {
                let _ = Routed::decode(&body);
            }
        }
        Message::Remote { .. } | Message::NodeDown { .. } | Message::ServicesChanged { .. } => {}
    }
}

fn read_frame(frame: wire::WireFrame) {
    let binary = frame.binary;
    if let Some(frame) = frame.into_frame() {
        assert_eq!(matches!(frame, Frame::Binary(_)), binary);
        if let Frame::Text(text) = &frame {
            assert!(std::str::from_utf8(text).is_ok(), "a text frame is UTF-8");
        }
    }
}

/// What a receiving node reads inside a Mothership message.
fn read_routed(routed: Routed) {
    match routed {
        Routed::Request { args_json, .. } => {
            let _ = serde_json::from_str::<Vec<serde_json::Value>>(&args_json);
        }
        Routed::Reply { value_json, .. } => {
            let _ = serde_json::from_str::<serde_json::Value>(&value_json);
        }
        Routed::Lifecycle { .. } | Routed::Log { .. } => {}
    }
}

/// The cookie and session-token parser: whatever a client sends as its
/// `Cookie` header or `auth.sessionId`, [`parse_session_token`] never panics,
/// and it names a session only when that session's own token is in the input
/// (no forgery, no prefix or variant of a token verifies); a real token
/// appended to the input as a `rain_session` cookie, or given bare, is found.
pub fn session_token(input: &[u8]) {
    let keys = SessionKeys::new(&[7; 32], None);
    let text = String::from_utf8_lossy(input);
    if let Some(id) = parse_session_token(&keys, &text) {
        let token = keys.token(&id);
        assert!(text.contains(&token), "{text:?} verified without its token");
    }
    let (id, token) = keys.mint();
    assert_eq!(parse_session_token(&keys, &token), Some(id.clone()));
    // Cookie pairs are split on `;`: the input stays one (odd) cookie before ours.
    let header = format!("{}; rain_session={token}", text.replace(';', ""));
    let found = parse_session_token(&keys, &header);
    assert!(found.is_some(), "{header:?}: the token was not found");
    // An earlier `rain_session` in the input that verifies would be another
    // minted token, which the first property already ruled out.
    assert_eq!(found, Some(id));
}
