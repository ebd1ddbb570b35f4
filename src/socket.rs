//! A Socket.IO socket: one client's membership of one namespace.
//!
//! Owns what a handler does with a socket: emit (with or without an ack), answer an
//! ack, join and leave rooms, start a broadcast from it, disconnect it; the
//! socket's ordered tasks (work started by its events, run one at a time in the
//! order the events came, a bounded number at once) and refusing an event over
//! a per-client limit. Does not own
//! packet parsing (see `crate::client`) or room indexes (see `crate::namespace`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Value, json};
use thiserror::Error;
use tokio::sync::oneshot;

use crate::app_session::AppSession;
use crate::broadcast::Broadcast;
use crate::namespace::Namespace;
use crate::protocol::engineio::Frame;
use crate::protocol::payload::{ack_frames, event_frames};
use crate::protocol::socketio::Packet;
use crate::session::{CloseReason, ConnectInfo, SendError, Session};
use crate::session_token::SessionId;

/// Why a socket left its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client sent a DISCONNECT for this namespace.
    ClientNamespaceDisconnect,
    /// A handler disconnected the socket.
    ServerNamespaceDisconnect,
    /// The whole connection ended.
    Transport(CloseReason),
}

impl DisconnectReason {
    /// The reason as the reference server names it.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::ClientNamespaceDisconnect => "client namespace disconnect",
            DisconnectReason::ServerNamespaceDisconnect => "server namespace disconnect",
            DisconnectReason::Transport(reason) => reason.as_str(),
        }
    }
}

pub use crate::protocol::payload::Payload;

/// The error message of an event refused by a limit on what one client may
/// send (rate, in flight): `{error: "too many requests"}`.
pub const TOO_MANY_REQUESTS: &str = "too many requests";

/// An event a client sent.
#[derive(Debug)]
pub struct Event {
    pub name: String,
    pub payload: Payload,
    /// Present when the client asked for an ack.
    pub ack: Option<AckSender>,
}

/// Answers one client ack request, once.
#[derive(Debug)]
pub struct AckSender {
    socket: Arc<Socket>,
    id: u64,
}

/// Used or not, the reply is no longer owed once the sender is gone.
impl Drop for AckSender {
    fn drop(&mut self) {
        self.socket.session.reply_settled();
    }
}

impl AckSender {
    pub fn send(self, payload: Payload) -> Result<(), SendError> {
        self.socket
            .session
            .send_frames(ack_frames(self.socket.namespace.name(), self.id, payload))
    }
}

/// Why an ack from the client did not arrive.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AckError {
    #[error("the client did not acknowledge in time")]
    Timeout,
    #[error("the socket disconnected before acknowledging")]
    Disconnected,
    #[error(transparent)]
    Send(#[from] SendError),
}

/// One client in one namespace.
#[derive(Debug)]
pub struct Socket {
    id: Arc<str>,
    /// Verified or minted by a node (its `Debug` hides it).
    session_id: SessionId,
    /// Who the connect-auth hook said the client is.
    user: std::sync::OnceLock<Box<str>>,
    namespace: Arc<Namespace>,
    session: Arc<Session>,
    auth: Value,
    rooms: Mutex<Vec<Arc<str>>>,
    pending_acks: Mutex<HashMap<u64, oneshot::Sender<Payload>>>,
    next_ack: AtomicU64,
    connected: AtomicBool,
    connected_at: u64,
    /// Tasks waiting their turn, and whether one runs now.
    ordered: Mutex<Ordered>,
}

/// A socket's ordered tasks: at most one runs; the others wait in order. An
/// idle socket holds no task and no buffer.
#[derive(Default)]
struct Ordered {
    queue: VecDeque<BoxFuture<'static, ()>>,
    /// Whether a worker task drains the queue now.
    running: bool,
    /// Tasks queued or running (the running one has left the queue).
    in_flight: usize,
}

impl std::fmt::Debug for Ordered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ordered")
            .field("queued", &self.queue.len())
            .field("running", &self.running)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl Socket {
    pub(crate) fn new(
        id: Arc<str>,
        namespace: Arc<Namespace>,
        session: Arc<Session>,
        auth: Value,
        session_id: SessionId,
    ) -> Self {
        Socket {
            id,
            session_id,
            user: std::sync::OnceLock::new(),
            namespace,
            session,
            auth,
            rooms: Mutex::new(Vec::new()),
            pending_acks: Mutex::new(HashMap::new()),
            next_ack: AtomicU64::new(0),
            connected: AtomicBool::new(true),
            connected_at: crate::cluster::now_millis(),
            ordered: Mutex::new(Ordered::default()),
        }
    }

    /// The socket id (distinct from the Engine.IO session id).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn id_arc(&self) -> &Arc<str> {
        &self.id
    }

    pub fn namespace(&self) -> &Arc<Namespace> {
        &self.namespace
    }

    /// The client's session id: the session its CONNECT's `auth.sessionId`
    /// token names, else its `rain_session` cookie's, else a fresh one. Never
    /// text a client chose; never to be logged.
    pub fn session_id(&self) -> &str {
        self.session_id.as_str()
    }

    /// The client's session data, shared by every node.
    pub fn session(&self) -> AppSession {
        AppSession::new(self.session_id.clone(), self.namespace.cluster().clone())
    }

    /// Who the client is, by the connect-auth hook (`None` without a hook, or
    /// when it named nobody).
    pub fn user(&self) -> Option<&str> {
        self.user.get().map(|user| &**user)
    }

    pub(crate) fn set_user(&self, user: String) {
        let _ = self.user.set(user.into_boxed_str());
    }

    /// The same client's socket for a namespace object that replaced this
    /// one's (it was retired while this socket was being admitted).
    pub(crate) fn moved_to(&self, namespace: Arc<Namespace>) -> Socket {
        let socket = Socket::new(
            self.id.clone(),
            namespace,
            self.session.clone(),
            self.auth.clone(),
            self.session_id.clone(),
        );
        if let Some(user) = self.user() {
            socket.set_user(user.to_string());
        }
        socket
    }

    /// The auth payload of the CONNECT packet (`{}` when none was sent).
    pub fn auth(&self) -> &Value {
        &self.auth
    }

    pub fn connect_info(&self) -> &ConnectInfo {
        self.session.connect_info()
    }

    /// When the socket connected, in milliseconds since the Unix epoch.
    pub fn connected_at(&self) -> u64 {
        self.connected_at
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub(crate) fn engine_session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Emits an event to this client.
    pub fn emit(&self, event: &str, payload: Payload) -> Result<(), SendError> {
        self.session
            .send_frames(event_frames(self.namespace.name(), event, payload, None))
    }

    /// Emits an event and waits for the client's ack, at most `timeout`.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        payload: Payload,
        timeout: Duration,
    ) -> Result<Payload, AckError> {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        self.pending_acks.lock().insert(id, sender);
        let frames = event_frames(self.namespace.name(), event, payload, Some(id));
        if let Err(error) = self.session.send_frames(frames) {
            self.pending_acks.lock().remove(&id);
            return Err(error.into());
        }
        let outcome = tokio::time::timeout(timeout, receiver).await;
        self.pending_acks.lock().remove(&id);
        match outcome {
            Ok(Ok(payload)) => Ok(payload),
            Ok(Err(_)) => Err(AckError::Disconnected),
            Err(_) => Err(AckError::Timeout),
        }
    }

    /// An ack arrived from the client; unknown or late ids are ignored, as the
    /// reference server does.
    pub(crate) fn ack_received(&self, id: u64, payload: Payload) {
        if let Some(sender) = self.pending_acks.lock().remove(&id) {
            let _ = sender.send(payload);
        }
    }

    pub(crate) fn ack_sender(self: &Arc<Self>, id: u64) -> AckSender {
        // Counted on the connection until the sender is used or dropped: a
        // drain waits for it before closing the client.
        self.session.reply_owed();
        AckSender {
            socket: self.clone(),
            id,
        }
    }

    /// Joins a room (idempotent); whether the socket is in it now. A socket
    /// that has disconnected joins nothing (a join that arrives late, a
    /// component's answer, leaves no trace), and one already in
    /// `ROOMS_PER_SOCKET` rooms joins no more.
    pub fn join(&self, room: &str) -> bool {
        // The room index and the cluster are told under this lock, so a
        // disconnect either sees the room and removes it or comes first.
        let mut rooms = self.rooms.lock();
        if !self.is_connected() {
            return false;
        }
        if rooms.iter().any(|r| &**r == room) {
            return true;
        }
        if rooms.len() >= self.namespace.max_rooms() {
            metrics::counter!("rain_refused_total", "limit" => "rooms_per_socket").increment(1);
            return false;
        }
        let room: Arc<str> = room.into();
        rooms.push(room.clone());
        let now: Vec<String> = rooms.iter().map(|r| r.to_string()).collect();
        self.namespace.add_to_room(&room, &self.id, &now);
        true
    }

    /// Leaves a room (idempotent).
    pub fn leave(&self, room: &str) {
        let mut rooms = self.rooms.lock();
        let Some(index) = rooms.iter().position(|r| &**r == room) else {
            return;
        };
        let room = rooms.swap_remove(index);
        let now: Vec<String> = rooms.iter().map(|r| r.to_string()).collect();
        self.namespace.remove_from_room(&room, &self.id, &now);
    }

    /// The rooms this socket has joined (its own id is not listed).
    pub fn rooms(&self) -> Vec<String> {
        self.rooms.lock().iter().map(|r| r.to_string()).collect()
    }

    /// A broadcast to a room, from this socket: everyone in it but this socket.
    pub fn to(&self, room: &str) -> Broadcast {
        self.broadcast().to(room)
    }

    /// A broadcast to the whole namespace except this socket.
    pub fn broadcast(&self) -> Broadcast {
        Broadcast::new(self.namespace.clone()).except(&self.id)
    }

    /// Disconnects this socket from its namespace; the client is told and does not
    /// reconnect by itself.
    pub fn disconnect(self: &Arc<Self>) {
        if self
            .namespace
            .remove_socket(self, DisconnectReason::ServerNamespaceDisconnect)
        {
            let _ = self.session.send(Frame::Text(
                Packet::disconnect(self.namespace.name()).encode_message(),
            ));
        }
    }

    /// Runs the task `start(ack)` makes once every task queued before it on
    /// this socket has finished, so a client's events are handled in the order
    /// it sent them (a `join` before the `say` that follows it). At most `max`
    /// tasks are queued or running: past it the event is refused (see
    /// [`Socket::refuse`], limit `socket_max_in_flight`) and `start` is not
    /// called. Whether the task was queued.
    pub fn run_in_order<F>(
        self: &Arc<Self>,
        max: usize,
        ack: Option<AckSender>,
        start: impl FnOnce(Option<AckSender>) -> F,
    ) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut ordered = self.ordered.lock();
        if ordered.in_flight >= max.max(1) {
            drop(ordered);
            self.refuse("socket_max_in_flight", ack);
            return false;
        }
        ordered.queue.push_back(start(ack).boxed());
        ordered.in_flight += 1;
        if ordered.running {
            return true;
        }
        ordered.running = true;
        drop(ordered);
        // One task drains the queue and ends when it is empty: no task is kept
        // per idle socket.
        let socket = self.clone();
        tokio::spawn(async move {
            loop {
                let next = {
                    let mut ordered = socket.ordered.lock();
                    match ordered.queue.pop_front() {
                        Some(next) => next,
                        None => {
                            ordered.running = false;
                            return;
                        }
                    }
                };
                // A task that panics must not leave the socket's queue stuck.
                if std::panic::AssertUnwindSafe(next)
                    .catch_unwind()
                    .await
                    .is_err()
                {
                    tracing::error!(socket = %socket.id, "a socket's ordered task panicked");
                }
                let mut ordered = socket.ordered.lock();
                ordered.in_flight = ordered.in_flight.saturating_sub(1);
            }
        });
        true
    }

    /// Refuses an event over a per-client limit: counted in
    /// `rain_refused_total{limit}`, acked `{error: "too many requests"}` when
    /// the client asked for an ack (dropped otherwise), and counted against
    /// the connection, which is closed when it keeps going (see
    /// `Session::refused`).
    pub fn refuse(&self, limit: &'static str, ack: Option<AckSender>) {
        metrics::counter!("rain_refused_total", "limit" => limit).increment(1);
        tracing::debug!(socket = %self.id, limit, "event refused: too many requests");
        if let Some(ack) = ack {
            let error = json!({ "error": TOO_MANY_REQUESTS });
            let _ = ack.send(Payload::new(vec![error, Value::Null]));
        }
        self.session.refused();
    }

    /// Closes the whole underlying connection, every namespace on it included.
    pub fn close_connection(&self) {
        self.session.close(CloseReason::ServerClose);
    }

    /// Leaves every room and fails pending acks; called once when it disconnects.
    pub(crate) fn mark_disconnected(&self) -> Vec<Arc<str>> {
        let mut rooms = self.rooms.lock();
        self.connected.store(false, Ordering::Release);
        self.pending_acks.lock().clear();
        // Work queued for a socket that is gone would answer nobody.
        let queued = {
            let mut ordered = self.ordered.lock();
            ordered.in_flight -= ordered.queue.len();
            std::mem::take(&mut ordered.queue)
        };
        drop(queued);
        std::mem::take(&mut *rooms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::namespace::NamespaceHandler;
    use crate::session::TransportState;

    struct Nothing;
    impl NamespaceHandler for Nothing {
        fn on_event(&self, _: &Arc<Socket>, _: Event) {}
    }

    fn socket() -> Arc<Socket> {
        let cluster = crate::cluster::from_settings(&Settings::default()).unwrap();
        let namespace = Arc::new(Namespace::new("/t", Arc::new(Nothing), cluster, 8));
        let info = ConnectInfo::default();
        let session = Arc::new(Session::new("s".into(), info, TransportState::Polling, 64));
        let (session_id, _) = crate::session_token::SessionKeys::new(&[0; 32], None).mint();
        Arc::new(Socket::new(
            "id".into(),
            namespace,
            session,
            Value::Null,
            session_id,
        ))
    }

    #[tokio::test]
    async fn ordered_tasks_run_one_at_a_time_in_order_and_are_bounded() {
        let socket = socket();
        let done = Arc::new(Mutex::new(Vec::new()));
        // The first task takes longest: run concurrently, it would finish last.
        for (n, ms) in [(0, 60u64), (1, 30), (2, 0)] {
            let done = done.clone();
            let queued = socket.run_in_order(3, None, move |_| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                done.lock().push(n);
            });
            assert!(queued, "task {n} is within the bound");
        }
        assert!(
            !socket.run_in_order(3, None, |_| async {}),
            "a fourth is refused"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(*done.lock(), [0, 1, 2]);
        // The queue drained: there is room again, and the worker restarts.
        let done2 = done.clone();
        assert!(socket.run_in_order(3, None, move |_| async move {
            done2.lock().push(3);
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*done.lock(), [0, 1, 2, 3]);
    }
}
