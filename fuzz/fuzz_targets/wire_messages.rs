//! Node-to-node messages: the cluster's wire format and the Mothership's routed
//! messages, as another node (or anything that can publish on Redis) sends
//! them. The properties are `rain_node_fuzz::wire_bytes`'s; the seed corpus
//! (`fuzz/seeds/wire_messages/`) holds encodings of every kind of message, so
//! mutations start from well-formed MessagePack.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    rain_node_fuzz::wire_bytes(bytes);
});
