//! A polling POST body is attacker-controlled: decoding must never panic, and
//! whatever decodes must survive our own re-encoding.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rain_node::protocol::engineio::{self, Packet};

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let _ = engineio::decode_text(body.clone());
    let Ok(packets) = engineio::decode_payload(body) else {
        return;
    };
    let frames: Vec<_> = packets.iter().map(Packet::encode).collect();
    let mut again = Vec::new();
    engineio::encode_payload(&frames, &mut again);
    let decoded = engineio::decode_payload(Bytes::from(again));
    // Text packets may carry a record separator only outside a payload, so a
    // decoded payload never holds one and the round trip is exact.
    assert_eq!(decoded, Ok(packets));
});
