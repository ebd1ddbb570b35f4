//! Engine.IO v4 packets and HTTP long-polling payloads.
//!
//! Owns: the packet types (`0` open … `6` noop), text packets (`"4hello"`), binary
//! messages (raw on websocket, `b`+base64 inside a polling payload) and the
//! `\x1e`-separated polling payload. Does not own sessions, heartbeats or transports
//! (see `crate::transport`).
//!
//! Text is carried as [`Bytes`] that are known to be UTF-8 so that one encoded packet
//! can be shared by every receiver of a broadcast without copying.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use bytes::Bytes;
use thiserror::Error;

/// The separator between packets in a polling payload (ASCII record separator).
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// The Engine.IO packet types, as their ASCII digit on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    Open = 0,
    Close = 1,
    Ping = 2,
    Pong = 3,
    Message = 4,
    Upgrade = 5,
    Noop = 6,
}

/// One Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// `0{json}`: the handshake; the JSON text is carried as is.
    Open(String),
    /// `1`
    Close,
    /// `2` with optional text data (`"2probe"` during an upgrade).
    Ping(Option<String>),
    /// `3` with optional text data (`"3probe"`).
    Pong(Option<String>),
    /// `4text`: a text message; the payload is the UTF-8 text after the `4`.
    Message(Bytes),
    /// A binary message (a websocket binary frame, or `b<base64>` in a payload).
    Binary(Bytes),
    /// `5`
    Upgrade,
    /// `6`
    Noop,
}

/// Why bytes could not be read as Engine.IO.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type {0:?}")]
    UnknownType(u8),
    #[error("packet is not valid UTF-8")]
    InvalidUtf8,
    #[error("invalid base64 in binary packet")]
    InvalidBase64,
    #[error("unexpected data after packet type {0}")]
    UnexpectedData(u8),
}

/// The JSON handshake sent in the open packet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handshake {
    pub sid: String,
    pub upgrades: Vec<String>,
    pub ping_interval: u64,
    pub ping_timeout: u64,
    pub max_payload: u64,
}

/// What a transport writes: a websocket frame, or one element of a polling payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text packet including its type digit (`b"4hello"`, `b"2"`); always UTF-8.
    Text(Bytes),
    /// A binary message, as is.
    Binary(Bytes),
}

impl PacketType {
    /// The packet type for an ASCII digit, if it is one.
    pub fn from_digit(byte: u8) -> Option<PacketType> {
        Some(match byte {
            b'0' => PacketType::Open,
            b'1' => PacketType::Close,
            b'2' => PacketType::Ping,
            b'3' => PacketType::Pong,
            b'4' => PacketType::Message,
            b'5' => PacketType::Upgrade,
            b'6' => PacketType::Noop,
            _ => return None,
        })
    }

    /// The ASCII digit that starts a text packet of this type.
    pub fn digit(self) -> u8 {
        b'0' + self as u8
    }
}

impl Packet {
    /// The type of this packet; binary messages are messages.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Open(_) => PacketType::Open,
            Packet::Close => PacketType::Close,
            Packet::Ping(_) => PacketType::Ping,
            Packet::Pong(_) => PacketType::Pong,
            Packet::Message(_) | Packet::Binary(_) => PacketType::Message,
            Packet::Upgrade => PacketType::Upgrade,
            Packet::Noop => PacketType::Noop,
        }
    }

    /// Encodes this packet as one frame.
    ///
    /// `Message` bytes are trusted to be UTF-8 (they are produced by the Socket.IO
    /// encoder or by [`decode_text`]), so the text frame stays valid UTF-8.
    pub fn encode(&self) -> Frame {
        let kind = self.packet_type();
        let data: &[u8] = match self {
            // Binary messages go out untouched: the same Bytes may be shared by
            // every receiver of a broadcast.
            Packet::Binary(data) => return Frame::Binary(data.clone()),
            Packet::Open(json) => json.as_bytes(),
            Packet::Ping(Some(data)) | Packet::Pong(Some(data)) => data.as_bytes(),
            Packet::Message(text) => text,
            Packet::Close
            | Packet::Ping(None)
            | Packet::Pong(None)
            | Packet::Upgrade
            | Packet::Noop => &[],
        };
        let mut text = Vec::with_capacity(1 + data.len());
        text.push(kind.digit());
        text.extend_from_slice(data);
        Frame::Text(Bytes::from(text))
    }
}

/// Decodes one text packet: a websocket text frame, or one element of a polling
/// payload that is not `b<base64>`.
///
/// Trailing data after close, upgrade and noop is ignored, as the reference server
/// does. An open packet decodes too: rejecting it from a client is the server's call.
pub fn decode_text(text: Bytes) -> Result<Packet, DecodeError> {
    let &first = text.first().ok_or(DecodeError::Empty)?;
    // Validate the whole text once: a message is handed on as Bytes that later
    // layers read as str.
    let rest = std::str::from_utf8(&text[1..]).map_err(|_| DecodeError::InvalidUtf8)?;
    let kind = PacketType::from_digit(first).ok_or(DecodeError::UnknownType(first))?;
    let optional = |rest: &str| (!rest.is_empty()).then(|| rest.to_owned());
    Ok(match kind {
        PacketType::Open => Packet::Open(rest.to_owned()),
        PacketType::Close => Packet::Close,
        PacketType::Ping => Packet::Ping(optional(rest)),
        PacketType::Pong => Packet::Pong(optional(rest)),
        PacketType::Message => Packet::Message(text.slice(1..)),
        PacketType::Upgrade => Packet::Upgrade,
        PacketType::Noop => Packet::Noop,
    })
}

/// Decodes a websocket binary frame: always a binary message.
pub fn decode_binary(data: Bytes) -> Packet {
    Packet::Binary(data)
}

/// Standard base64 that also accepts a missing padding: some clients strip it.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes an HTTP long-polling POST body: packets separated by
/// [`RECORD_SEPARATOR`], binary messages as `b<base64>`.
///
/// Text packets are slices of `body`; only binary messages are copied (base64 has
/// to be decoded somewhere).
pub fn decode_payload(body: Bytes) -> Result<Vec<Packet>, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut packets = Vec::new();
    let mut start = 0;
    loop {
        let end = body[start..]
            .iter()
            .position(|&b| b == RECORD_SEPARATOR)
            .map_or(body.len(), |at| start + at);
        let element = body.slice(start..end);
        packets.push(decode_element(element)?);
        if end == body.len() {
            return Ok(packets);
        }
        start = end + 1;
    }
}

fn decode_element(element: Bytes) -> Result<Packet, DecodeError> {
    match element.first() {
        Some(b'b') => {
            let data = BASE64_LENIENT
                .decode(&element[1..])
                .map_err(|_| DecodeError::InvalidBase64)?;
            Ok(Packet::Binary(Bytes::from(data)))
        }
        _ => decode_text(element),
    }
}

/// Appends the body of a long-polling GET response to `out`: frames joined by
/// [`RECORD_SEPARATOR`], binary messages as `b` + padded standard base64.
pub fn encode_payload<'a>(frames: impl IntoIterator<Item = &'a Frame>, out: &mut Vec<u8>) {
    for (i, frame) in frames.into_iter().enumerate() {
        if i > 0 {
            out.push(RECORD_SEPARATOR);
        }
        match frame {
            Frame::Text(text) => out.extend_from_slice(text),
            Frame::Binary(data) => {
                out.push(b'b');
                // Encode straight into `out` rather than through a temporary String.
                let start = out.len();
                out.resize(start + base64_len(data.len()), 0);
                let written = STANDARD.encode_slice(data, &mut out[start..]).unwrap_or(0);
                out.truncate(start + written);
            }
        }
    }
}

/// The length of padded base64 for `n` bytes.
fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

impl Handshake {
    /// The open packet that starts a session.
    pub fn to_packet(&self) -> Packet {
        // Strings and integers only: serializing cannot fail.
        Packet::Open(serde_json::to_string(self).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Frame {
        Frame::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn decode(s: &str) -> Result<Packet, DecodeError> {
        decode_text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn encode_each_type() {
        assert_eq!(Packet::Open("{}".into()).encode(), text("0{}"));
        assert_eq!(Packet::Close.encode(), text("1"));
        assert_eq!(Packet::Ping(None).encode(), text("2"));
        assert_eq!(Packet::Ping(Some("probe".into())).encode(), text("2probe"));
        assert_eq!(Packet::Pong(None).encode(), text("3"));
        assert_eq!(Packet::Pong(Some("probe".into())).encode(), text("3probe"));
        assert_eq!(
            Packet::Message(Bytes::from_static(b"hello")).encode(),
            text("4hello")
        );
        assert_eq!(Packet::Upgrade.encode(), text("5"));
        assert_eq!(Packet::Noop.encode(), text("6"));
    }

    #[test]
    fn encode_binary_does_not_copy() {
        let data = Bytes::from(vec![1, 2, 3]);
        let Frame::Binary(out) = Packet::Binary(data.clone()).encode() else {
            panic!("expected a binary frame");
        };
        assert_eq!(out.as_ptr(), data.as_ptr());
    }

    #[test]
    fn decode_each_type() {
        assert_eq!(
            decode("0{\"sid\":\"a\"}"),
            Ok(Packet::Open("{\"sid\":\"a\"}".into()))
        );
        assert_eq!(decode("1"), Ok(Packet::Close));
        assert_eq!(decode("2"), Ok(Packet::Ping(None)));
        assert_eq!(decode("2probe"), Ok(Packet::Ping(Some("probe".into()))));
        assert_eq!(decode("3"), Ok(Packet::Pong(None)));
        assert_eq!(decode("3probe"), Ok(Packet::Pong(Some("probe".into()))));
        assert_eq!(
            decode("4hello"),
            Ok(Packet::Message(Bytes::from_static(b"hello")))
        );
        assert_eq!(decode("4"), Ok(Packet::Message(Bytes::new())));
        assert_eq!(decode("5"), Ok(Packet::Upgrade));
        assert_eq!(decode("6"), Ok(Packet::Noop));
    }

    #[test]
    fn decode_ignores_trailing_data_on_bare_types() {
        assert_eq!(decode("1x"), Ok(Packet::Close));
        assert_eq!(decode("5x"), Ok(Packet::Upgrade));
        assert_eq!(decode("6x"), Ok(Packet::Noop));
    }

    #[test]
    fn decode_message_is_a_slice() {
        let frame = Bytes::from(b"4hello".to_vec());
        let Ok(Packet::Message(msg)) = decode_text(frame.clone()) else {
            panic!("expected a message");
        };
        assert_eq!(msg.as_ptr(), frame[1..].as_ptr());
    }

    #[test]
    fn decode_errors() {
        assert_eq!(decode(""), Err(DecodeError::Empty));
        assert_eq!(decode("abc"), Err(DecodeError::UnknownType(b'a')));
        assert_eq!(decode("7"), Err(DecodeError::UnknownType(b'7')));
        assert_eq!(
            decode_text(Bytes::from_static(b"4\xff\xfe")),
            Err(DecodeError::InvalidUtf8)
        );
    }

    #[test]
    fn decode_binary_frame() {
        assert_eq!(
            decode_binary(Bytes::from_static(&[1, 2])),
            Packet::Binary(Bytes::from_static(&[1, 2]))
        );
    }

    #[test]
    fn payload_round_trip() {
        let body = Bytes::from_static(b"4hello\x1ebAQIDBA==");
        let packets = decode_payload(body.clone()).expect("valid payload");
        assert_eq!(
            packets,
            vec![
                Packet::Message(Bytes::from_static(b"hello")),
                Packet::Binary(Bytes::from_static(&[1, 2, 3, 4])),
            ]
        );
        let frames: Vec<Frame> = packets.iter().map(Packet::encode).collect();
        let mut out = Vec::new();
        encode_payload(&frames, &mut out);
        assert_eq!(out, body);
    }

    #[test]
    fn payload_single_and_many() {
        assert_eq!(
            decode_payload(Bytes::from_static(b"2")),
            Ok(vec![Packet::Ping(None)])
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"4a\x1e4b\x1e1")),
            Ok(vec![
                Packet::Message(Bytes::from_static(b"a")),
                Packet::Message(Bytes::from_static(b"b")),
                Packet::Close,
            ])
        );
    }

    #[test]
    fn payload_accepts_missing_padding() {
        assert_eq!(
            decode_payload(Bytes::from_static(b"bAQIDBA")),
            Ok(vec![Packet::Binary(Bytes::from_static(&[1, 2, 3, 4]))])
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"b")),
            Ok(vec![Packet::Binary(Bytes::new())])
        );
    }

    #[test]
    fn payload_errors() {
        assert_eq!(decode_payload(Bytes::new()), Err(DecodeError::Empty));
        assert_eq!(
            decode_payload(Bytes::from_static(b"4a\x1e")),
            Err(DecodeError::Empty)
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"b!!!")),
            Err(DecodeError::InvalidBase64)
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"4a\x1eabc")),
            Err(DecodeError::UnknownType(b'a'))
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"4\xff")),
            Err(DecodeError::InvalidUtf8)
        );
    }

    #[test]
    fn encode_payload_joins_frames() {
        let frames = [
            text("2"),
            Frame::Binary(Bytes::from_static(&[0xff])),
            text("4x"),
            Frame::Binary(Bytes::new()),
        ];
        let mut out = Vec::new();
        encode_payload(&frames, &mut out);
        assert_eq!(out, b"2\x1eb/w==\x1e4x\x1eb");
    }

    #[test]
    fn handshake_field_names() {
        let handshake = Handshake {
            sid: "abc".into(),
            upgrades: vec!["websocket".into()],
            ping_interval: 25000,
            ping_timeout: 20000,
            max_payload: 1_000_000,
        };
        assert_eq!(
            handshake.to_packet(),
            Packet::Open(
                r#"{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
                    .into()
            )
        );
    }
}
