//! The client's state machine (binary reassembly across frames): any sequence
//! of Engine.IO frames a session could receive. The properties are
//! `rain_node_fuzz::client_frames`'s.
//!
//! The input is read as a list of frames, some of them well-formed binary
//! packet headers, so that libFuzzer reaches the waiting and completing states
//! without having to guess the grammar first.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use rain_node::protocol::engineio::Frame;

#[derive(Debug, Arbitrary)]
enum Input {
    /// Any text frame.
    Text(String),
    /// A text frame of an Engine.IO message (`4` + Socket.IO text).
    Message(String),
    /// A binary event or ack announcing attachments.
    BinaryPacket {
        ack: bool,
        attachments: u8,
        namespace: bool,
        id: Option<u16>,
    },
    /// A binary frame.
    Binary(Vec<u8>),
    /// A binary message as polling carries it: `b` + base64.
    Base64(String),
}

impl Input {
    fn frame(self) -> Frame {
        match self {
            Input::Text(text) => Frame::Text(Bytes::from(text)),
            Input::Message(text) => Frame::Text(Bytes::from(format!("4{text}"))),
            Input::BinaryPacket {
                ack,
                attachments,
                namespace,
                id,
            } => {
                let kind = if ack { 6 } else { 5 };
                let namespace = if namespace { "/chat," } else { "" };
                let id = id.map(|id| id.to_string()).unwrap_or_default();
                let data = if ack {
                    r#"[{"_placeholder":true,"num":0}]"#
                } else {
                    r#"["file",{"_placeholder":true,"num":0}]"#
                };
                let text = format!("4{kind}{}-{namespace}{id}{data}", attachments % 8);
                Frame::Text(Bytes::from(text))
            }
            Input::Binary(data) => Frame::Binary(Bytes::from(data)),
            Input::Base64(text) => Frame::Text(Bytes::from(format!("b{text}"))),
        }
    }
}

fuzz_target!(|inputs: Vec<Input>| {
    rain_node_fuzz::client_frames(inputs.into_iter().map(Input::frame).collect());
});
