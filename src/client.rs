//! One Socket.IO client: everything that arrives on one Engine.IO session.
//!
//! Owns the connection's packet state machine (every message goes through one
//! [`Reassembler`](crate::protocol::reassembly::Reassembler), the pure piece that
//! decodes packets, gathers binary attachments and enforces the limits on them),
//! the connection's event rate (`EVENT_RATE`/`EVENT_BURST`: an event or connect
//! past it is refused, and a client that keeps going is cut off, see
//! `crate::limits`), the per-connection limits on namespaces, and the
//! namespaces this connection has joined: a CONNECT's session (its verified
//! `auth.sessionId` token, else the handshake's) and, when a connect-auth hook
//! is installed, waiting for its decision before the socket is admitted.
//! Dispatches to namespace handlers. Does not own sessions (see
//! `crate::engine`) or the namespace registry (see `crate::io`).

use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;

use crate::auth::{AuthDecision, AuthRequest};
use crate::engine::{ProtocolViolation, SessionHandler};
use crate::io::IoInner;
use crate::limits::TokenBucket;
use crate::protocol::engineio::Frame;
use crate::protocol::payload::ack_frames;
use crate::protocol::reassembly::{Assembled, Reassembler, ReassemblyError};
use crate::protocol::socketio::{Packet, PacketType};
use crate::session::{CloseReason, Session};
use crate::session_token::{SessionId, parse_session_token};
use crate::socket::{DisconnectReason, Event, Payload, Socket, TOO_MANY_REQUESTS};

pub(crate) struct Client {
    io: Arc<IoInner>,
    session: Arc<Session>,
    sockets: Mutex<Vec<Arc<Socket>>>,
    /// Decodes messages and holds a binary packet until its attachments are in.
    reassembler: Mutex<Reassembler>,
    /// The connect timeout's task, cancelled by the first namespace joined so an
    /// idle client does not keep a timer alive.
    connect_timer: Mutex<Option<tokio::task::AbortHandle>>,
    /// Namespaces whose CONNECT waits for the connect-auth hook.
    authorizing: Mutex<Vec<String>>,
    /// This client, for the tasks that finish a CONNECT after the hook.
    me: Weak<Client>,
    /// Events and connects this connection may still send (`EVENT_RATE`).
    rate: Mutex<TokenBucket>,
}

impl Client {
    pub(crate) fn new(io: Arc<IoInner>, session: Arc<Session>, me: Weak<Client>) -> Self {
        let reassembler = Reassembler::new(io.packet_limits);
        Client {
            session,
            sockets: Mutex::new(Vec::new()),
            reassembler: Mutex::new(reassembler),
            connect_timer: Mutex::new(None),
            authorizing: Mutex::new(Vec::new()),
            me,
            rate: Mutex::new(TokenBucket::new(
                io.event_rate as f64,
                u32::try_from(io.event_burst).unwrap_or(u32::MAX),
                std::time::Instant::now(),
            )),
            io,
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

    /// Whether the connection may send this packet now: events and connects
    /// take a token of the connection's bucket. Over it, an event with an ack
    /// id is acked `{error: "too many requests"}`, any other is dropped; each
    /// refusal is counted, and one too many closes the connection.
    fn within_rate(&self, packet: &Packet) -> bool {
        let limited = matches!(
            packet.kind,
            PacketType::Event | PacketType::BinaryEvent | PacketType::Connect
        );
        if !limited || self.rate.lock().take(std::time::Instant::now()) {
            return true;
        }
        metrics::counter!("rain_refused_total", "limit" => "event_rate").increment(1);
        tracing::debug!(sid = self.session.sid(), namespace = %packet.namespace, "over EVENT_RATE, refused");
        match (packet.kind, packet.id) {
            (PacketType::Connect, _) => {
                self.send_packet(&Packet::connect_error(&packet.namespace, TOO_MANY_REQUESTS));
            }
            (_, Some(id)) => {
                let error = serde_json::json!({ "error": TOO_MANY_REQUESTS });
                let _ = self.session.send_frames(ack_frames(
                    &packet.namespace,
                    id,
                    Payload::new(vec![error, Value::Null]),
                ));
            }
            _ => {}
        }
        self.session.refused();
        false
    }

    fn dispatch(&self, packet: Packet, attachments: Vec<Bytes>) -> Result<(), ProtocolViolation> {
        if !self.within_rate(&packet) {
            return Ok(());
        }
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
                crate::metrics::TRAFFIC.event();
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
        if self.socket(name).is_some() || self.authorizing.lock().iter().any(|n| n == name) {
            tracing::debug!(
                sid = self.session.sid(),
                namespace = name,
                "already connected (or connecting) to namespace"
            );
            return;
        }
        // Limits first: nothing of a refused name is created on this node.
        if name.len() > self.io.namespace_max_length {
            metrics::counter!("rain_refused_total", "limit" => "namespace_max_length").increment(1);
            self.send_packet(&Packet::connect_error(name, "namespace name too long"));
            return;
        }
        if self.sockets.lock().len() + self.authorizing.lock().len()
            >= self.io.namespaces_per_connection
        {
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
        let session_id = self.session_of(&auth);
        let socket = Arc::new(Socket::new(
            crate::engine::new_sid().into(),
            namespace.clone(),
            self.session.clone(),
            auth,
            session_id,
        ));
        if let Err(message) = namespace.handler().authorize(&socket, socket.auth()) {
            self.send_packet(&Packet::connect_error(name, &message));
            self.io.forget_if_unused(name);
            return;
        }
        let (Some(hook), Some(me)) = (self.io.connect_auth(), self.me.upgrade()) else {
            return self.admit(name, socket);
        };
        // The hook answers in its own time: the name is reserved meanwhile
        // (a second CONNECT to it is ignored, it counts towards the limit).
        self.authorizing.lock().push(name.to_string());
        let request = self.auth_request(name, socket.auth());
        let name = name.to_string();
        tokio::spawn(async move {
            let decision = hook.authorize(request).await;
            if me.session.is_closed() {
                me.authorizing.lock().retain(|n| *n != name);
                me.io.forget_if_unused(&name);
                return;
            }
            match decision {
                AuthDecision::Accept { user } => {
                    if let Some(user) = user {
                        // The session remembers who the client is, for every
                        // node and component; a failed write is the node's
                        // business (the socket knows its user all the same).
                        if let Err(error) = socket
                            .session()
                            .set(vec![("user".into(), user.clone())])
                            .await
                        {
                            tracing::warn!(
                                error = &error as &dyn std::error::Error,
                                "the user could not be stored in the session"
                            );
                        }
                        socket.set_user(user);
                    }
                    // Released only now (no await before `admit`), so a
                    // second CONNECT to the name meanwhile was ignored.
                    me.authorizing.lock().retain(|n| *n != name);
                    me.admit(&name, socket);
                }
                AuthDecision::Refuse { message } => {
                    me.authorizing.lock().retain(|n| *n != name);
                    metrics::counter!("rain_refused_total", "limit" => "auth").increment(1);
                    me.send_packet(&Packet::connect_error(&name, &message));
                    me.io.forget_if_unused(&name);
                }
            }
        });
    }

    /// The session a CONNECT resumes: its `auth.sessionId` token when a node
    /// minted it, else the handshake's (cookie or fresh), else a fresh one. A
    /// forged token is not an error: it is ignored.
    fn session_of(&self, auth: &Value) -> SessionId {
        auth.get("sessionId")
            .and_then(Value::as_str)
            .and_then(|token| parse_session_token(&self.io.session_keys, token))
            .or_else(|| self.session.connect_info().session.clone())
            .unwrap_or_else(|| self.io.session_keys.mint().0)
    }

    /// What the connect-auth hook is asked about a CONNECT to `name`.
    fn auth_request(&self, name: &str, auth: &Value) -> AuthRequest {
        let mut auth = auth.clone();
        if let Value::Object(fields) = &mut auth {
            fields.remove("sessionId");
        }
        let info = self.session.connect_info();
        AuthRequest {
            namespace: name.to_string(),
            auth,
            headers: info
                .headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.clone()))
                .collect(),
            address: info.address,
        }
    }

    /// Adds an authorized socket to its namespace and tells the client.
    fn admit(&self, name: &str, socket: Arc<Socket>) {
        {
            // Checked under the lock `on_close` takes: a socket admitted
            // after the close would stay in its namespace for good.
            let mut sockets = self.sockets.lock();
            if self.session.is_closed() {
                drop(sockets);
                self.io.forget_if_unused(name);
                return;
            }
            if !socket.namespace().add_socket(socket.clone()) {
                // Its last socket left and it was retired meanwhile: the name
                // resolves to a fresh namespace now.
                drop(sockets);
                let Some(namespace) = self.io.resolve_namespace(name) else {
                    self.send_packet(&Packet::connect_error(name, "Invalid namespace"));
                    return;
                };
                let retry = Arc::new(socket.moved_to(namespace));
                return self.admit(name, retry);
            }
            sockets.push(socket.clone());
        }
        if let Some(timer) = self.connect_timer.lock().take() {
            timer.abort();
        }
        self.send_packet(&Packet::connect(
            name,
            Some(serde_json::json!({ "sid": socket.id() })),
        ));
        socket.namespace().handler().on_connect(&socket);
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
