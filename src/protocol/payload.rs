//! Event arguments and the one encoder from an event to the frames a transport
//! writes.
//!
//! Owns [`Payload`] (JSON arguments plus the binary attachments their
//! placeholders point to) and [`event_frames`] / [`packet_frames`], the only
//! place where an event or ack becomes Engine.IO message frames: a broadcast calls it
//! once and shares the result with every receiver. Pure, like the rest of
//! `protocol`. Does not own sockets or delivery (see `crate::socket`).

use bytes::Bytes;
use serde_json::Value;

use super::engineio::Frame;
use super::socketio::Packet;

/// Arguments of an event or an ack: the JSON values (binary parts stay as
/// `{"_placeholder":true,"num":N}` markers) and the attachments they point to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload {
    pub args: Vec<Value>,
    pub attachments: Vec<Bytes>,
}

impl Payload {
    pub fn new(args: Vec<Value>) -> Self {
        Payload {
            args,
            attachments: Vec::new(),
        }
    }

    pub fn with_attachments(args: Vec<Value>, attachments: Vec<Bytes>) -> Self {
        Payload { args, attachments }
    }
}

/// Whether `event` is one of the names Socket.IO reserves
/// ([`RESERVED_EVENTS`](super::socketio::RESERVED_EVENTS)): a server that
/// emitted one would make clients act on it (`disconnect` makes every
/// socket.io-client drop its connection), so none is ever emitted.
pub fn is_reserved_event(event: &str) -> bool {
    super::socketio::RESERVED_EVENTS.contains(&event)
}

/// An EVENT (or BINARY_EVENT) packet for `namespace`, encoded with its
/// attachments; `ack_id` asks the receiver for an ack.
pub fn event_frames(
    namespace: &str,
    event: &str,
    payload: Payload,
    ack_id: Option<u64>,
) -> Vec<Frame> {
    let mut data = Vec::with_capacity(payload.args.len() + 1);
    data.push(Value::String(event.to_string()));
    data.extend(payload.args);
    let packet = Packet::event(
        namespace,
        Value::Array(data),
        ack_id,
        payload.attachments.len(),
    );
    packet_frames(&packet, payload.attachments)
}

/// An ACK (or BINARY_ACK) packet answering `ack_id`, encoded with its attachments.
pub fn ack_frames(namespace: &str, ack_id: u64, payload: Payload) -> Vec<Frame> {
    let packet = Packet::ack(
        namespace,
        Value::Array(payload.args),
        ack_id,
        payload.attachments.len(),
    );
    packet_frames(&packet, payload.attachments)
}

/// A packet and its attachments as the frames a transport writes.
pub fn packet_frames(packet: &Packet, attachments: Vec<Bytes>) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(1 + attachments.len());
    frames.push(Frame::Text(packet.encode_message()));
    frames.extend(attachments.into_iter().map(Frame::Binary));
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_event_with_an_attachment_is_a_binary_event_and_its_bytes() {
        let payload = Payload::with_attachments(
            vec![json!({"_placeholder": true, "num": 0})],
            vec![Bytes::from_static(&[1, 2])],
        );
        let frames = event_frames("/chat", "file", payload, Some(7));
        match &frames[..] {
            [Frame::Text(text), Frame::Binary(bytes)] => {
                assert_eq!(
                    &text[..],
                    br#"451-/chat,7["file",{"_placeholder":true,"num":0}]"#
                );
                assert_eq!(&bytes[..], &[1, 2]);
            }
            other => panic!("unexpected frames {other:?}"),
        }
    }

    #[test]
    fn an_ack_on_the_main_namespace() {
        let frames = ack_frames("/", 3, Payload::new(vec![json!(null), json!("ok")]));
        assert_eq!(
            frames,
            vec![Frame::Text(Bytes::from_static(b"433[null,\"ok\"]"))]
        );
    }
}
