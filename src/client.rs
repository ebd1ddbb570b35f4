//! One Socket.IO client: everything that arrives on one Engine.IO session.
//!
//! Owns the connection's packet state machine (every message goes through one
//! [`Reassembler`](crate::protocol::reassembly::Reassembler), the pure piece that
//! decodes packets, gathers binary attachments and enforces the limits on them),
//! the per-connection limits on namespaces, and the namespaces this connection
//! has joined. Dispatches to namespace handlers. Does not own sessions (see
//! `crate::engine`) or the namespace registry (see `crate::io`).

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;

use crate::engine::{ProtocolViolation, SessionHandler};
use crate::io::IoInner;
use crate::protocol::engineio::Frame;
use crate::protocol::reassembly::{Assembled, Reassembler, ReassemblyError};
use crate::protocol::socketio::{Packet, PacketType};
use crate::session::{CloseReason, Session};
use crate::socket::{DisconnectReason, Event, Payload, Socket};

pub(crate) struct Client {
    io: Arc<IoInner>,
    session: Arc<Session>,
    sockets: Mutex<Vec<Arc<Socket>>>,
    /// Decodes messages and holds a binary packet until its attachments are in.
    reassembler: Mutex<Reassembler>,
    /// The connect timeout's task, cancelled by the first namespace joined so an
    /// idle client does not keep a timer alive.
    connect_timer: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Client {
    pub(crate) fn new(io: Arc<IoInner>, session: Arc<Session>) -> Self {
        let reassembler = Reassembler::new(io.packet_limits);
        Client {
            io,
            session,
            sockets: Mutex::new(Vec::new()),
            reassembler: Mutex::new(reassembler),
            connect_timer: Mutex::new(None),
        }
    }

    pub(crate) fn set_connect_timer(&self, timer: tokio::task::AbortHandle) {
        *self.connect_timer.lock() = Some(timer);
    }

    pub(crate) fn has_sockets(&self) -> bool {
        !self.sockets.lock().is_empty()
    }

    pub(crate) fn session(&self) -> &Arc<Session> {
        &self.session
    }

    fn socket(&self, namespace: &str) -> Option<Arc<Socket>> {
        self.sockets
            .lock()
            .iter()
            .find(|s| s.namespace().name() == namespace && s.is_connected())
            .cloned()
    }

    fn send_packet(&self, packet: &Packet) {
        let _ = self.session.send(Frame::Text(packet.encode_message()));
    }

    fn dispatch(&self, packet: Packet, attachments: Vec<Bytes>) -> Result<(), ProtocolViolation> {
        match packet.kind {
            PacketType::Connect => {
                self.connect(&packet.namespace, packet.data);
                Ok(())
            }
            PacketType::Disconnect => {
                if let Some(socket) = self.socket(&packet.namespace) {
                    self.forget(&socket);
                    socket
                        .namespace()
                        .remove_socket(&socket, DisconnectReason::ClientNamespaceDisconnect);
                    self.io.forget_if_unused(&packet.namespace);
                }
                Ok(())
            }
            PacketType::Event | PacketType::BinaryEvent => {
                let Some(socket) = self.socket(&packet.namespace) else {
                    tracing::debug!(sid = self.session.sid(), namespace = %packet.namespace, "event for a namespace not joined, ignored");
                    return Ok(());
                };
                let Some(Value::Array(mut args)) = packet.data else {
                    return Err(ProtocolViolation("an event needs an array payload".into()));
                };
                let name = match args.remove(0) {
                    Value::String(name) => name,
                    other => other.to_string(),
                };
                let event = Event {
                    name,
                    payload: Payload::with_attachments(args, attachments),
                    ack: packet.id.map(|id| socket.ack_sender(id)),
                };
                socket.namespace().handler().on_event(&socket, event);
                Ok(())
            }
            PacketType::Ack | PacketType::BinaryAck => {
                if let (Some(socket), Some(id)) = (self.socket(&packet.namespace), packet.id) {
                    let args = match packet.data {
                        Some(Value::Array(args)) => args,
                        _ => Vec::new(),
                    };
                    socket.ack_received(id, Payload::with_attachments(args, attachments));
                }
                Ok(())
            }
            PacketType::ConnectError => Err(ProtocolViolation(
                "a client may not send CONNECT_ERROR".into(),
            )),
        }
    }

    fn connect(&self, name: &str, auth: Option<Value>) {
        if self.socket(name).is_some() {
            tracing::debug!(
                sid = self.session.sid(),
                namespace = name,
                "already connected to namespace"
            );
            return;
        }
        // Limits first: nothing of a refused name is created on this node.
        if name.len() > self.io.namespace_max_length {
            metrics::counter!("rain_refused_total", "limit" => "namespace_max_length").increment(1);
            self.send_packet(&Packet::connect_error(name, "namespace name too long"));
            return;
        }
        if self.sockets.lock().len() >= self.io.namespaces_per_connection {
            metrics::counter!("rain_refused_total", "limit" => "namespaces_per_connection")
                .increment(1);
            self.send_packet(&Packet::connect_error(
                name,
                "too many namespaces on this connection",
            ));
            return;
        }
        let Some(namespace) = self.io.resolve_namespace(name) else {
            self.send_packet(&Packet::connect_error(name, "Invalid namespace"));
            return;
        };
        let auth = auth.unwrap_or_else(|| Value::Object(Default::default()));
        let socket = Arc::new(Socket::new(
            crate::engine::new_sid().into(),
            namespace.clone(),
            self.session.clone(),
            auth,
        ));
        if let Err(message) = namespace.handler().authorize(&socket, socket.auth()) {
            self.send_packet(&Packet::connect_error(name, &message));
            self.io.forget_if_unused(name);
            return;
        }
        if !namespace.add_socket(socket.clone()) {
            // Its last socket left and it was retired meanwhile: the name
            // resolves to a fresh namespace now.
            return self.connect(name, Some(socket.auth().clone()));
        }
        self.sockets.lock().push(socket.clone());
        if let Some(timer) = self.connect_timer.lock().take() {
            timer.abort();
        }
        self.send_packet(&Packet::connect(
            name,
            Some(serde_json::json!({ "sid": socket.id() })),
        ));
        namespace.handler().on_connect(&socket);
    }

    /// What the reassembler made of a message: a packet to dispatch (the lock
    /// on it is released by now, so a handler may take its time), nothing yet,
    /// or a violation that closes the session.
    fn received(
        &self,
        packet: Result<Option<Assembled>, ReassemblyError>,
    ) -> Result<(), ProtocolViolation> {
        match packet {
            Ok(Some(Assembled {
                packet,
                attachments,
            })) => self.dispatch(packet, attachments),
            Ok(None) => Ok(()),
            Err(error) => Err(ProtocolViolation(error.to_string())),
        }
    }

    fn forget(&self, socket: &Arc<Socket>) {
        self.sockets.lock().retain(|s| !Arc::ptr_eq(s, socket));
    }
}

impl SessionHandler for Client {
    fn on_message(&self, text: Bytes) -> Result<(), ProtocolViolation> {
        let packet = self.reassembler.lock().feed_text(&text);
        self.received(packet)
    }

    fn on_binary(&self, data: Bytes) -> Result<(), ProtocolViolation> {
        let packet = self.reassembler.lock().feed_binary(data);
        self.received(packet)
    }

    fn on_close(&self, reason: CloseReason) {
        if let Some(timer) = self.connect_timer.lock().take() {
            timer.abort();
        }
        let sockets = std::mem::take(&mut *self.sockets.lock());
        for socket in sockets {
            socket
                .namespace()
                .remove_socket(&socket, DisconnectReason::Transport(reason));
            self.io.forget_if_unused(socket.namespace().name());
        }
    }
}
