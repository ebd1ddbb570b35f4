//! The messages nodes send each other over Redis pub/sub, and their encoding
//! (MessagePack, via `rmp-serde`: compact, and binary frames travel as raw bytes).
//!
//! Owns the format only; what a node does with a message is in `super::redis`
//! (its inbox).

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{RemoteOp, Target};
use crate::protocol::engineio::Frame;
use crate::protocol::payload::Payload;

/// One Engine.IO frame on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireFrame {
    pub binary: bool,
    pub data: Bytes,
}

impl From<&Frame> for WireFrame {
    fn from(frame: &Frame) -> Self {
        match frame {
            Frame::Text(data) => WireFrame {
                binary: false,
                data: data.clone(),
            },
            Frame::Binary(data) => WireFrame {
                binary: true,
                data: data.clone(),
            },
        }
    }
}

impl WireFrame {
    /// Back to a frame; a text frame that is not UTF-8 is refused.
    pub fn into_frame(self) -> Option<Frame> {
        if self.binary {
            Some(Frame::Binary(self.data))
        } else {
            std::str::from_utf8(&self.data).ok()?;
            Some(Frame::Text(self.data))
        }
    }
}

/// Event arguments on the wire: JSON text plus raw attachments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePayload {
    pub args_json: String,
    pub attachments: Vec<Bytes>,
}

impl From<&Payload> for WirePayload {
    fn from(payload: &Payload) -> Self {
        WirePayload {
            args_json: serde_json::to_string(&payload.args).unwrap_or_else(|_| "[]".into()),
            attachments: payload.attachments.clone(),
        }
    }
}

impl WirePayload {
    pub fn into_payload(self) -> Option<Payload> {
        let args = serde_json::from_str(&self.args_json).ok()?;
        Some(Payload::with_attachments(args, self.attachments))
    }
}

/// A message between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Encoded frames for the members of `rooms` (all sockets when empty) minus
    /// `except`, in a namespace. A broadcast to several rooms travels once per
    /// room channel, each copy excluding the rooms before it, so a socket in two
    /// rooms gets it once.
    Broadcast {
        origin: String,
        /// Each namespace with its frames (several for namespaces that share
        /// their channels).
        targets: Vec<(String, Vec<WireFrame>)>,
        rooms: Vec<String>,
        except: Vec<String>,
    },
    /// A broadcast whose receivers answer; answers go to `origin`'s node channel.
    AckBroadcast {
        origin: String,
        request: u64,
        namespace: String,
        rooms: Vec<String>,
        except: Vec<String>,
        event: String,
        payload: WirePayload,
        timeout_ms: u64,
    },
    /// One node's answers to an ack broadcast: every local receiver's that came
    /// within the timeout. Each node that got the broadcast sends exactly one.
    AckAnswers {
        request: u64,
        answers: Vec<WirePayload>,
    },
    /// Frames for one socket, sent to the node that holds it.
    ToSocket {
        namespace: String,
        sid: String,
        frames: Vec<WireFrame>,
    },
    /// Join, leave or disconnect, for one socket (node channel) or a room's
    /// members (room channel).
    Remote {
        origin: String,
        namespace: String,
        target: Target,
        op: RemoteOp,
    },
    /// A node was found dead and purged (control channel).
    NodeDown { node: String },
    /// A node registered services (control channel).
    ServicesChanged { node: String },
    /// An upper layer's message for one node (node channel), by topic; the
    /// body is opaque here.
    Topic { topic: String, body: Bytes },
}

/// The format of [`Message`], the first byte of every encoded message. A node
/// counts and drops a message of another format (a rolling upgrade runs old and
/// new builds side by side) instead of misreading it.
pub const FORMAT: u8 = 2;

/// Why a message could not be read.
#[derive(Debug, Error)]
pub enum WireError {
    #[error("message of format {found}, this node reads format {reads}")]
    Format { found: u8, reads: u8 },
    #[error("empty message")]
    Empty,
    #[error("malformed message")]
    Malformed(#[source] rmp_serde::decode::Error),
}

/// MessagePack of `value` after the `format` byte: how every node-to-node
/// message is written, this layer's and the upper layers' alike.
pub fn encode_versioned<T: Serialize>(format: u8, value: &T) -> Vec<u8> {
    let mut bytes = vec![format];
    // Every message is plainly serialisable; encoding into a Vec cannot fail.
    let _ = rmp_serde::encode::write(&mut bytes, value);
    bytes
}

/// Reads what [`encode_versioned`] wrote, refusing another format.
pub fn decode_versioned<T: DeserializeOwned>(format: u8, bytes: &[u8]) -> Result<T, WireError> {
    match bytes.split_first() {
        None => Err(WireError::Empty),
        Some((&found, body)) if found == format => {
            rmp_serde::from_slice(body).map_err(WireError::Malformed)
        }
        Some((&found, _)) => Err(WireError::Format {
            found,
            reads: format,
        }),
    }
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        encode_versioned(FORMAT, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        decode_versioned(FORMAT, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let message = Message::Broadcast {
            origin: "a".into(),
            targets: vec![(
                "/".into(),
                vec![
                    WireFrame::from(&Frame::Text(Bytes::from_static(b"42[\"x\"]"))),
                    WireFrame::from(&Frame::Binary(Bytes::from_static(&[0, 159, 255]))),
                ],
            )],
            rooms: vec!["r".into()],
            except: vec![],
        };
        assert_eq!(Message::decode(&message.encode()).unwrap(), message);
        assert!(matches!(
            Message::decode(&[FORMAT, 0xc1, b'x']),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(Message::decode(b""), Err(WireError::Empty)));
    }

    #[test]
    fn a_message_of_another_format_is_refused() {
        let mut bytes = Message::NodeDown { node: "a".into() }.encode();
        bytes[0] = FORMAT + 1;
        assert!(matches!(
            Message::decode(&bytes),
            Err(WireError::Format { found, reads: FORMAT }) if found == FORMAT + 1
        ));
    }

    #[test]
    fn a_text_frame_must_be_utf8() {
        let bad = WireFrame {
            binary: false,
            data: Bytes::from_static(&[0xff]),
        };
        assert_eq!(bad.into_frame(), None);
    }
}
