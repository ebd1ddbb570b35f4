//! Binary packets across messages: a Socket.IO binary packet announces how many
//! attachments it has, and they arrive as the next Engine.IO binary messages.
//!
//! Owns the state of one connection's incoming packets (idle, or a binary packet
//! waiting for its attachments) and the limits that bound it: attachments per
//! packet and bytes per message, so that a partial packet holds at most
//! `max_attachments × max_message` bytes. Pure, like the rest of `protocol`, so
//! the client's state machine can be fuzzed without a session. Does not own
//! what a complete packet does (see `crate::client`, which feeds every message of
//! its session through one [`Reassembler`] and dispatches what comes out).

use bytes::Bytes;
use thiserror::Error;

use super::socketio::{self, DecodeError, Packet};

/// What a connection may send: the bounds on one incoming packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Binary attachments a packet may announce.
    pub max_attachments: usize,
    /// Bytes of one message, text or binary. The transports already refuse a
    /// bigger one (`MAX_PAYLOAD`); checking it again here keeps the bound of a
    /// partial packet true of this type alone.
    pub max_message: usize,
}

/// A packet with all the attachments it announced, in the order they came.
#[derive(Debug, Clone, PartialEq)]
pub struct Assembled {
    pub packet: Packet,
    pub attachments: Vec<Bytes>,
}

/// Why a message was refused. The connection is broken after any of these
/// (the client closes its session); the reassembler's state is left as it was
/// before the message.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReassemblyError {
    #[error("text packet while binary attachments were expected")]
    TextWhileAwaitingAttachments,
    #[error("packet is not UTF-8")]
    NotUtf8,
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("{announced} binary attachments announced, at most {max} allowed")]
    TooManyAttachments { announced: usize, max: usize },
    #[error("binary message with no packet expecting it")]
    UnexpectedBinary,
    #[error("message of {size} bytes, at most {max} allowed")]
    MessageTooLarge { size: usize, max: usize },
}

/// One connection's incoming packets: decodes text messages, and holds a
/// binary packet back until its attachments are in.
#[derive(Debug)]
pub struct Reassembler {
    limits: Limits,
    partial: Option<Assembled>,
}

impl Reassembler {
    pub fn new(limits: Limits) -> Self {
        Reassembler {
            limits,
            partial: None,
        }
    }

    /// A text message (the Socket.IO text of an Engine.IO `4` packet): the
    /// packet, if it needs no attachments; `None` if it waits for some.
    pub fn feed_text(&mut self, text: &[u8]) -> Result<Option<Assembled>, ReassemblyError> {
        if self.partial.is_some() {
            return Err(ReassemblyError::TextWhileAwaitingAttachments);
        }
        self.check_size(text.len())?;
        let text = std::str::from_utf8(text).map_err(|_| ReassemblyError::NotUtf8)?;
        let packet = socketio::decode(text)?;
        if packet.attachments > self.limits.max_attachments {
            return Err(ReassemblyError::TooManyAttachments {
                announced: packet.attachments,
                max: self.limits.max_attachments,
            });
        }
        if packet.attachments > 0 {
            self.partial = Some(Assembled {
                // Bounded by the check above, not by what the client announced.
                attachments: Vec::with_capacity(packet.attachments),
                packet,
            });
            return Ok(None);
        }
        Ok(Some(Assembled {
            packet,
            attachments: Vec::new(),
        }))
    }

    /// A binary message: the next attachment of the waiting packet, which is
    /// returned once it has them all.
    pub fn feed_binary(&mut self, data: Bytes) -> Result<Option<Assembled>, ReassemblyError> {
        let Some(pending) = self.partial.as_mut() else {
            return Err(ReassemblyError::UnexpectedBinary);
        };
        // `self.limits` is Copy: read it without borrowing `self` again.
        let max = self.limits.max_message;
        if data.len() > max {
            return Err(ReassemblyError::MessageTooLarge {
                size: data.len(),
                max,
            });
        }
        pending.attachments.push(data);
        if pending.attachments.len() < pending.packet.attachments {
            return Ok(None);
        }
        Ok(self.partial.take())
    }

    /// How many attachments the waiting packet still needs (0 when none waits).
    pub fn awaiting(&self) -> usize {
        self.partial
            .as_ref()
            .map_or(0, |p| p.packet.attachments - p.attachments.len())
    }

    /// Bytes of attachments held for the waiting packet.
    pub fn buffered_bytes(&self) -> usize {
        self.partial
            .as_ref()
            .map_or(0, |p| p.attachments.iter().map(Bytes::len).sum())
    }

    fn check_size(&self, size: usize) -> Result<(), ReassemblyError> {
        if size > self.limits.max_message {
            return Err(ReassemblyError::MessageTooLarge {
                size,
                max: self.limits.max_message,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reassembler() -> Reassembler {
        Reassembler::new(Limits {
            max_attachments: 2,
            max_message: 8,
        })
    }

    #[test]
    fn a_text_packet_comes_out_at_once() {
        let out = reassembler().feed_text(br#"2["a"]"#).unwrap().unwrap();
        assert_eq!(out.packet, Packet::event("/", json!(["a"]), None, 0));
        assert!(out.attachments.is_empty());
    }

    #[test]
    fn a_binary_packet_waits_for_its_attachments_in_order() {
        let mut r = reassembler();
        assert_eq!(r.feed_text(br#"52-["a"]"#), Ok(None));
        assert_eq!(r.awaiting(), 2);
        assert_eq!(r.feed_binary(Bytes::from_static(b"one")), Ok(None));
        assert_eq!((r.awaiting(), r.buffered_bytes()), (1, 3));
        let out = r.feed_binary(Bytes::from_static(b"two")).unwrap().unwrap();
        assert_eq!(out.attachments, [&b"one"[..], &b"two"[..]]);
        assert_eq!(out.packet.attachments, 2);
        assert_eq!((r.awaiting(), r.buffered_bytes()), (0, 0));
    }

    #[test]
    fn refusals_leave_the_state_as_it_was() {
        let mut r = reassembler();
        assert_eq!(
            r.feed_binary(Bytes::from_static(b"x")),
            Err(ReassemblyError::UnexpectedBinary)
        );
        assert_eq!(
            r.feed_text(br#"53-["a"]"#),
            Err(ReassemblyError::TooManyAttachments {
                announced: 3,
                max: 2
            })
        );
        assert_eq!(
            r.feed_text(br#"2["long"]"#),
            Err(ReassemblyError::MessageTooLarge { size: 9, max: 8 })
        );
        assert_eq!(r.feed_text(b"2\xff"), Err(ReassemblyError::NotUtf8));
        assert_eq!(
            r.feed_text(b"9"),
            Err(ReassemblyError::Decode(DecodeError::UnknownType(b'9')))
        );
        assert_eq!(r.awaiting(), 0);

        assert_eq!(r.feed_text(br#"51-["a"]"#), Ok(None));
        assert_eq!(
            r.feed_text(br#"2["a"]"#),
            Err(ReassemblyError::TextWhileAwaitingAttachments)
        );
        assert_eq!(
            r.feed_binary(Bytes::from_static(b"123456789")),
            Err(ReassemblyError::MessageTooLarge { size: 9, max: 8 })
        );
        assert_eq!(r.awaiting(), 1);
        assert!(r.feed_binary(Bytes::from_static(b"ok")).unwrap().is_some());
    }

    #[test]
    fn errors_read_as_the_client_logged_them() {
        assert_eq!(
            ReassemblyError::Decode(DecodeError::InvalidJson).to_string(),
            DecodeError::InvalidJson.to_string()
        );
    }
}
