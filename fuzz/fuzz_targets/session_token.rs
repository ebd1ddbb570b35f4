//! The cookie and session-token parser, on whatever a client sends as its
//! `Cookie` header or `auth.sessionId`. The properties are
//! `rain_node_fuzz::session_token`'s.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    rain_node_fuzz::session_token(input);
});
