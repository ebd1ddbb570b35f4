//! The in-process multi-node harness (tests only): nodes on one
//! [`MemoryHub`], each with its Mothership, and fake clients that connect to
//! them through the normal Engine.IO → Socket.IO path.
//!
//! Owns setting up a cluster of nodes, recording which node received which
//! Mothership message (a tap in front of each node's receiver), and a fake
//! client that speaks Socket.IO packets to a node and decodes what the node
//! queues for it. Does not own any assertion about the Mothership (see the
//! sibling test modules).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::cluster::MessageHandler;
use crate::cluster::memory::MemoryHub;
use crate::component::{Component, demo};
use crate::config::{Routing, Settings};
use crate::engine::SessionHandler;
use crate::io::SocketIo;
use crate::mothership::Mothership;
use crate::mothership::messages::{Routed, TOPIC};
use crate::mothership::router::Receiver;
use crate::protocol::engineio::Frame;
use crate::protocol::socketio::{self, Packet, PacketType};
use crate::session::{ConnectInfo, QueueWriter, Session, TransportState};
use crate::session_token::{SessionId, SessionKeys};

/// The session id a test's label (`"sess-a"`) stands for: a well-formed id
/// derived from the label, so a test can look the session up by label.
pub(super) fn session_of(label: &str) -> SessionId {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(label.as_bytes());
    SessionId::trusted(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16]))
}

/// How long a fake client waits for a packet before the test fails.
const WAIT: Duration = Duration::from_secs(2);

/// One node: its Socket.IO server and its Mothership.
pub(super) struct Node {
    pub(super) io: SocketIo,
    #[allow(dead_code)]
    pub(super) mothership: Mothership,
}

/// Nodes on one hub, and the Mothership messages each has received.
pub(super) struct Nodes {
    nodes: Vec<(String, Node)>,
    received: Arc<Mutex<Vec<(String, Routed)>>>,
}

/// A node to start: its id, routing mode and the built-in components it hosts.
pub(super) type Spec<'a> = (&'a str, Routing, &'a [&'a str]);

/// A node to start with components of any kind.
pub(super) type Hosting<'a> = (&'a str, Routing, Vec<Arc<dyn Component>>);

impl Nodes {
    /// Starts the nodes on one new hub.
    pub(super) fn start(specs: &[Spec]) -> Nodes {
        let specs = specs.iter().map(|&(id, routing, names)| {
            let components = names
                .iter()
                .map(|name| {
                    demo::builtin(name, &crate::config::Settings::default())
                        .expect("a built-in component")
                })
                .collect();
            (id, routing, components)
        });
        Nodes::with_components(specs.collect())
    }

    /// Starts nodes hosting components of any kind on one new hub.
    pub(super) fn with_components(specs: Vec<Hosting>) -> Nodes {
        Nodes::with_settings(&Settings::default(), specs)
    }

    /// Starts nodes with `settings` (their routing aside), hosting components
    /// of any kind, on one new hub.
    pub(super) fn with_settings(settings: &Settings, specs: Vec<Hosting>) -> Nodes {
        let hub = MemoryHub::new(settings);
        let received = Arc::new(Mutex::new(Vec::new()));
        let nodes = specs
            .into_iter()
            .map(|(id, routing, components)| {
                let io = SocketIo::new(settings, Arc::new(hub.join(id)));
                let settings = Settings {
                    routing,
                    route_timeout_ms: 2_000,
                    ..settings.clone()
                };
                let mothership = Mothership::install(&io, &settings, components);
                let tap = Tap {
                    node: id.to_string(),
                    received: received.clone(),
                    receiver: Receiver(mothership.router.clone()),
                };
                io.cluster().on_topic(TOPIC, Arc::new(tap));
                (id.to_string(), Node { io, mothership })
            })
            .collect();
        Nodes { nodes, received }
    }

    pub(super) fn node(&self, id: &str) -> &Node {
        &self.nodes.iter().find(|(n, _)| n == id).expect("a node").1
    }

    /// A new client of node `id`, with session `session`.
    pub(super) fn client(&self, id: &str, session: &str) -> FakeClient {
        FakeClient::open(&self.node(id).io, session)
    }

    /// The messages node `id` has received so far that `keep` selects.
    pub(super) fn received(&self, id: &str, keep: impl Fn(&Routed) -> bool) -> Vec<Routed> {
        self.received
            .lock()
            .iter()
            .filter(|(node, message)| node == id && keep(message))
            .map(|(_, message)| message.clone())
            .collect()
    }
}

/// Records each message a node receives, then hands it to the node's receiver.
struct Tap {
    node: String,
    received: Arc<Mutex<Vec<(String, Routed)>>>,
    receiver: Receiver,
}

impl MessageHandler for Tap {
    fn on_message(&self, body: Bytes) {
        if let Ok(message) = Routed::decode(&body) {
            self.received.lock().push((self.node.clone(), message));
        }
        self.receiver.on_message(body);
    }
}

/// A Socket.IO client in the test's process: one Engine.IO session of a node,
/// fed packets as a transport would and read back from its outbound queue.
pub(super) struct FakeClient {
    session_id: String,
    handler: Arc<dyn SessionHandler>,
    writer: QueueWriter,
    session: Arc<Session>,
    /// Packets received and not looked at yet.
    inbox: VecDeque<Packet>,
    next_ack: u64,
}

impl FakeClient {
    fn open(io: &SocketIo, session: &str) -> FakeClient {
        let info = ConnectInfo::default();
        // The client holds a token a node minted for the session the label
        // names (the nodes use this process's secret).
        let session_id =
            SessionKeys::from_settings(&Settings::default()).token(&session_of(session));
        let sid = crate::engine::new_sid().to_string();
        let session = Arc::new(Session::new(sid, info, TransportState::Websocket, 1024));
        let handler = io.engine_handler().on_open(&session);
        let writer = session.claim_writer().expect("a fresh session's queue");
        FakeClient {
            session_id,
            handler,
            writer,
            session,
            inbox: VecDeque::new(),
            next_ack: 0,
        }
    }

    fn send(&self, packet: Packet) {
        self.handler
            .on_message(Bytes::from(packet.encode()))
            .expect("a packet the node accepts");
    }

    /// Connects to namespace `ns` with this client's session token: the socket id,
    /// or the CONNECT_ERROR's message.
    pub(super) async fn connect(&mut self, ns: &str) -> Result<String, String> {
        self.connect_with(ns, json!({})).await
    }

    /// [`FakeClient::connect`] with more fields in the CONNECT's auth payload.
    pub(super) async fn connect_with(
        &mut self,
        ns: &str,
        mut auth: Value,
    ) -> Result<String, String> {
        auth["sessionId"] = json!(self.session_id);
        self.send(Packet::connect(ns, Some(auth)));
        let answer = self
            .take(|p| {
                p.namespace == ns
                    && matches!(p.kind, PacketType::Connect | PacketType::ConnectError)
            })
            .await;
        let field = |key: &str| answer.data.as_ref().and_then(|d| d.get(key)).cloned();
        match answer.kind {
            PacketType::Connect => Ok(field("sid")
                .and_then(|s| s.as_str().map(str::to_string))
                .unwrap_or_default()),
            _ => Err(field("message")
                .and_then(|m| m.as_str().map(str::to_string))
                .unwrap_or_default()),
        }
    }

    /// Leaves namespace `ns`, as a client's `socket.disconnect()` does.
    pub(super) fn disconnect(&self, ns: &str) {
        self.send(Packet::disconnect(ns));
    }

    /// Emits `event(args…)` on `ns` with an ack and waits for it: `(error, data)`.
    pub(super) async fn call(&mut self, ns: &str, event: &str, args: Vec<Value>) -> (Value, Value) {
        let id = self.emit_with_ack(ns, event, args);
        self.ack(ns, id).await
    }

    /// Emits `event(args…)` on `ns` asking for an ack, without waiting: its id.
    pub(super) fn emit_with_ack(&mut self, ns: &str, event: &str, args: Vec<Value>) -> u64 {
        self.next_ack += 1;
        let id = self.next_ack;
        let mut data = vec![json!(event)];
        data.extend(args);
        self.send(Packet::event(ns, Value::Array(data), Some(id), 0));
        id
    }

    /// Waits for the ack of call `id` on `ns`: `(error, data)`.
    pub(super) async fn ack(&mut self, ns: &str, id: u64) -> (Value, Value) {
        let ack = self
            .take(|p| p.kind == PacketType::Ack && p.namespace == ns && p.id == Some(id))
            .await;
        match ack.data {
            Some(Value::Array(mut args)) if args.len() == 2 => {
                let data = args.pop().unwrap_or_default();
                (args.pop().unwrap_or_default(), data)
            }
            other => panic!("call {id}: an ack of (error, data) expected, got {other:?}"),
        }
    }

    /// `call` that expects success: the data.
    pub(super) async fn ok(&mut self, ns: &str, event: &str, args: Vec<Value>) -> Value {
        let (error, data) = self.call(ns, event, args).await;
        assert_eq!(error, Value::Null, "{event} on {ns} failed");
        data
    }

    /// Waits for the next `event` the node emits to this client on `ns`: its args.
    pub(super) async fn event(&mut self, ns: &str, event: &str) -> Vec<Value> {
        let packet = self
            .take(|p| {
                p.kind == PacketType::Event
                    && p.namespace == ns
                    && p.data.as_ref().and_then(|d| d.get(0)) == Some(&json!(event))
            })
            .await;
        match packet.data {
            Some(Value::Array(args)) => args.into_iter().skip(1).collect(),
            _ => Vec::new(),
        }
    }

    /// Events received and not taken yet (after reading what is queued now).
    pub(super) fn pending_events(&mut self) -> Vec<Value> {
        let batch = self.writer.take_batch();
        self.receive(batch);
        self.inbox
            .iter()
            .filter(|p| p.kind == PacketType::Event)
            .filter_map(|p| p.data.clone())
            .collect()
    }

    /// The first packet `wanted` selects, waiting for the node to queue it.
    async fn take(&mut self, wanted: impl Fn(&Packet) -> bool) -> Packet {
        loop {
            if let Some(at) = self.inbox.iter().position(&wanted) {
                return self
                    .inbox
                    .remove(at)
                    .expect("a packet at the found position");
            }
            let batch = match tokio::time::timeout(WAIT, self.writer.next_batch()).await {
                Ok(batch) if !batch.is_empty() => batch,
                _ => panic!(
                    "no packet wanted within {WAIT:?} (closed: {}); received: {:?}",
                    self.session.is_closed(),
                    self.inbox
                ),
            };
            self.receive(batch);
        }
    }

    fn receive(&mut self, frames: VecDeque<Frame>) {
        for frame in frames {
            let Frame::Text(text) = frame else {
                panic!("binary frames are not expected here");
            };
            let text = std::str::from_utf8(&text).expect("UTF-8 text frames");
            // Engine.IO message (`4`) around each Socket.IO packet.
            let packet = text.strip_prefix('4').expect("an Engine.IO message");
            self.inbox
                .push_back(socketio::decode(packet).expect("a Socket.IO packet"));
        }
    }
}
