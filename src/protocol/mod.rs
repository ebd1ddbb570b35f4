//! The wire formats, and nothing else: Engine.IO v4 packets and polling payloads
//! ([`engineio`]), Socket.IO v5 packets ([`socketio`]), binary packets gathered
//! from their attachments across messages ([`reassembly`]), and event arguments
//! with the one event/ack encoder ([`payload`]).
//!
//! Everything here is pure: bytes in, values out, and back. No I/O, no tokio, no
//! clocks, so it can be fuzzed (`fuzz/`) and property-tested in isolation. The
//! transports and the Socket.IO layer build on it; they own sessions and timing.

pub mod engineio;
pub mod payload;
pub mod reassembly;
pub mod socketio;
