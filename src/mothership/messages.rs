//! The Mothership's messages between the node holding a client's socket and the
//! node running a component's handler, and their encoding.
//!
//! Owns the format: MessagePack after a format byte of its own (written as the
//! cluster writes its messages), so a node of another build counts and drops
//! what it cannot read. The cluster carries these
//! as opaque bodies of the [`TOPIC`] topic. Does not own what a node does with
//! them (see `super::router`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::cluster::wire::{WireError, decode_versioned, encode_versioned};
use crate::component::Effects;

/// The cluster topic the Mothership's messages travel under.
pub const TOPIC: &str = "mothership";

/// The format of [`Routed`], the first byte of every encoded message (2: the
/// user the connect-auth hook named travels with requests and notices; log
/// lines carry no session).
pub const FORMAT: u8 = 2;

/// A message of the Mothership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Routed {
    /// An event for a component's handler; the answer goes back to `from`.
    Request {
        request: u64,
        from: String,
        component: String,
        namespace: String,
        channel: String,
        event: String,
        args_json: String,
        socket: String,
        session: String,
        /// Who the client is, by the connect-auth hook.
        user: Option<String>,
        instance: Option<String>,
        /// Create an instance on the handling node first (a `render`).
        create_instance: bool,
    },
    /// A handler's answer: `ok` → `value_json` is the ack's data, else its error.
    Reply {
        request: u64,
        ok: bool,
        value_json: String,
        effects: Effects,
    },
    /// A client connected to (or left) one of a component's channels.
    Lifecycle {
        connected: bool,
        from: String,
        component: String,
        namespace: String,
        channel: String,
        socket: String,
        session: String,
        user: Option<String>,
    },
    /// A client's log line, for the node that rendered its instance. No
    /// session: the writer never needs it, so it does not travel.
    Log {
        level: String,
        message: String,
        error: Option<String>,
        instance: Option<String>,
        namespace: String,
        socket: String,
    },
}

impl Routed {
    pub fn encode(&self) -> Bytes {
        encode_versioned(FORMAT, self).into()
    }

    pub fn decode(bytes: &[u8]) -> Result<Routed, WireError> {
        decode_versioned(FORMAT, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_other_formats_are_refused() {
        let reply = Routed::Reply {
            request: 7,
            ok: true,
            value_json: "{}".into(),
            effects: Effects {
                join: vec!["r".into()],
                leave: vec![],
            },
        };
        let bytes = reply.encode();
        assert_eq!(Routed::decode(&bytes).unwrap(), reply);
        let mut other = bytes.to_vec();
        other[0] = FORMAT + 1;
        assert!(matches!(
            Routed::decode(&other),
            Err(WireError::Format { .. })
        ));
        assert!(matches!(
            Routed::decode(&[FORMAT, 0xc1]),
            Err(WireError::Malformed(_))
        ));
    }
}
