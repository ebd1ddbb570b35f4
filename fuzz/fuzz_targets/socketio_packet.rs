//! The Socket.IO text of every message is attacker-controlled: decoding must never
//! panic, and whatever decodes must encode back to the same packet.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rain_node::protocol::socketio;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(packet) = socketio::decode(text) else {
        return;
    };
    assert_eq!(socketio::decode(&packet.encode()), Ok(packet));
});
