//! The emit API's JSON body, as a backend (or anyone holding a token) sends it.
//! The properties are `rain_node_fuzz::emit_body`'s.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    rain_node_fuzz::emit_body(body);
});
