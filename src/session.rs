//! One Engine.IO session: its id, state, outbound queue and close signal.
//!
//! Owns what a transport needs to serve a client and what the Socket.IO layer needs
//! to write to it: a bounded queue of encoded frames that exactly one transport
//! drains at a time, the polling → websocket upgrade state, pong notification and a
//! close signal. Does not own HTTP or websocket I/O (see `crate::transport`) nor
//! the session table (see `crate::engine`).
//!
//! The queue is a plain mutex-guarded `VecDeque` rather than a channel: an idle
//! session then holds no buffer at all, which is most of the per-client memory
//! budget, and a writer can take a whole burst in one lock.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use parking_lot::Mutex;
use thiserror::Error;
use tokio::sync::Notify;

use crate::limits::Strikes;
use crate::protocol::engineio::Frame;
use crate::session_token::SessionId;

/// The transport that currently carries a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TransportState {
    /// HTTP long-polling.
    Polling = 0,
    /// A websocket has answered the probe; the client is pausing its polling.
    Upgrading = 1,
    /// The websocket carries everything; polling requests are refused.
    Websocket = 2,
}

/// Why a session ended. Shown in logs and handed to the Socket.IO layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent an Engine.IO close packet or closed its websocket.
    ClientClose,
    /// The server (an application handler) closed it.
    ServerClose,
    /// No pong within the ping timeout.
    PingTimeout,
    /// The client sent something that is not the protocol.
    ProtocolError,
    /// The transport failed (socket error, duplicate poll, …).
    TransportError,
    /// The client did not read fast enough and its outbound queue filled up.
    SlowClient,
    /// No namespace was joined within the connect timeout.
    ConnectTimeout,
    /// The client kept sending past its limits (see `crate::limits::Strikes`).
    TooManyRequests,
    /// The node is shutting down.
    Shutdown,
}

impl CloseReason {
    /// The reason as the reference server names it.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClose => "transport close",
            CloseReason::ServerClose => "server shutting down the connection",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ProtocolError => "parse error",
            CloseReason::TransportError => "transport error",
            CloseReason::SlowClient => "outbound queue full",
            CloseReason::ConnectTimeout => "connect timeout",
            CloseReason::TooManyRequests => "too many requests",
            CloseReason::Shutdown => "server shutting down",
        }
    }
}

/// A frame could not be queued.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    #[error("the session is closed")]
    Closed,
    #[error("the client's outbound queue is full")]
    QueueFull,
}

/// What the remote end looked like when the session opened. `Default` is a
/// client that told nothing (no query, address, session or headers).
#[derive(Clone, Default)]
pub struct ConnectInfo {
    /// The query string of the handshake request, without the `?`.
    pub query: String,
    /// The TCP peer: the client, or the proxy in front of it.
    pub remote_addr: Option<SocketAddr>,
    /// The client's address: the peer, or what a trusted proxy forwarded
    /// (see `crate::transport::address`).
    pub address: Option<std::net::IpAddr>,
    /// The client's session from its `rain_session` cookie (verified), or the
    /// one the handshake just minted and gave it in a `Set-Cookie`.
    pub session: Option<SessionId>,
    /// The handshake headers a connect-auth hook may see (see
    /// `crate::auth`), kept only when a hook is installed.
    pub headers: Vec<(&'static str, String)>,
}

/// Shows no header value (other sites' cookies) and no session id.
impl std::fmt::Debug for ConnectInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&str> = self.headers.iter().map(|(name, _)| *name).collect();
        f.debug_struct("ConnectInfo")
            .field("query", &self.query)
            .field("remote_addr", &self.remote_addr)
            .field("address", &self.address)
            .field("session", &self.session)
            .field("headers", &headers)
            .finish()
    }
}

/// One Engine.IO session.
#[derive(Debug)]
pub struct Session {
    sid: Box<str>,
    info: Box<ConnectInfo>,
    queue: Mutex<VecDeque<Frame>>,
    queue_limit: usize,
    queued: Notify,
    /// Set while a transport writer (a polling GET or the websocket) drains the queue.
    draining: AtomicBool,
    /// Set while a polling POST reads its body: a second one at the same time
    /// is a broken or hostile client (the reference server answers 400).
    posting: AtomicBool,
    state: AtomicU8,
    closed: AtomicBool,
    close_reason: Mutex<Option<CloseReason>>,
    close_signal: Notify,
    pong: Notify,
    /// Refusals of what this client sent, within the current window.
    strikes: Mutex<Strikes>,
    /// Acks the client asked for that the server has not sent yet (a drain
    /// closes the session only once there are none, see `crate::drain`).
    replies_owed: AtomicUsize,
}

impl Session {
    pub fn new(sid: String, info: ConnectInfo, state: TransportState, queue_limit: usize) -> Self {
        Session {
            sid: sid.into_boxed_str(),
            info: Box::new(info),
            queue: Mutex::new(VecDeque::new()),
            queue_limit,
            queued: Notify::new(),
            draining: AtomicBool::new(false),
            posting: AtomicBool::new(false),
            state: AtomicU8::new(state as u8),
            closed: AtomicBool::new(false),
            close_reason: Mutex::new(None),
            close_signal: Notify::new(),
            pong: Notify::new(),
            strikes: Mutex::new(Strikes::new(std::time::Instant::now())),
            replies_owed: AtomicUsize::new(0),
        }
    }

    pub fn sid(&self) -> &str {
        &self.sid
    }

    pub fn connect_info(&self) -> &ConnectInfo {
        &self.info
    }

    pub fn transport(&self) -> TransportState {
        match self.state.load(Ordering::Acquire) {
            0 => TransportState::Polling,
            1 => TransportState::Upgrading,
            _ => TransportState::Websocket,
        }
    }

    pub(crate) fn set_transport(&self, state: TransportState) {
        self.state.store(state as u8, Ordering::Release);
        // A waiting polling writer must notice an upgrade.
        self.queued.notify_one();
    }

    /// Queues frames to be written together, in order (a packet and its binary
    /// attachments must not be interleaved with another packet's).
    ///
    /// A client whose queue is full is not reading: it is closed (and logged) here,
    /// once, so that every sender applies the same policy.
    pub fn send_frames<I>(&self, frames: I) -> Result<(), SendError>
    where
        I: IntoIterator<Item = Frame>,
        I::IntoIter: ExactSizeIterator,
    {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        let frames = frames.into_iter();
        let mut queue = self.queue.lock();
        if queue.len() + frames.len() > self.queue_limit {
            drop(queue);
            if self.mark_closed(CloseReason::SlowClient) {
                metrics::counter!("rain_refused_total", "limit" => "outbound_queue").increment(1);
                tracing::warn!(sid = %self.sid, limit = self.queue_limit, "client is not reading: outbound queue full, disconnecting");
            }
            return Err(SendError::QueueFull);
        }
        queue.extend(frames);
        drop(queue);
        self.queued.notify_one();
        Ok(())
    }

    pub fn send(&self, frame: Frame) -> Result<(), SendError> {
        self.send_frames(std::iter::once(frame))
    }

    /// Claims the right to drain the queue; `None` when another writer holds it.
    pub(crate) fn claim_writer(self: &Arc<Self>) -> Option<QueueWriter> {
        self.draining
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| QueueWriter {
                session: self.clone(),
            })
    }

    /// Claims the right to post to the session; `None` while another POST is
    /// being read.
    pub(crate) fn claim_post(self: &Arc<Self>) -> Option<PostClaim> {
        self.posting
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| PostClaim {
                session: self.clone(),
            })
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        *self.close_reason.lock()
    }

    /// Counts a refusal of something the client sent (an event over a limit):
    /// past `Strikes::MAX` within `Strikes::WINDOW` the client is not slowing
    /// down, and the session is closed (logged once). True when it closed.
    pub(crate) fn refused(&self) -> bool {
        if !self.strikes.lock().strike(std::time::Instant::now()) {
            return false;
        }
        if self.mark_closed(CloseReason::TooManyRequests) {
            tracing::warn!(
                sid = %self.sid,
                address = ?self.info.address,
                max = Strikes::MAX,
                window_s = Strikes::WINDOW.as_secs(),
                "closing connection: it kept sending past its limits (more than max refusals within the window)"
            );
        }
        true
    }

    /// The client asked for an ack: one more reply owed.
    pub fn reply_owed(&self) {
        self.replies_owed.fetch_add(1, Ordering::AcqRel);
    }

    /// An owed ack was sent, or will never be (its sender was dropped).
    pub fn reply_settled(&self) {
        let _ = self
            .replies_owed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// How many acks the client still waits for.
    pub fn replies_owed(&self) -> usize {
        self.replies_owed.load(Ordering::Acquire)
    }

    /// Closes the session: its transport ends, and the Socket.IO layer is told.
    pub fn close(&self, reason: CloseReason) {
        self.mark_closed(reason);
    }

    /// Marks the session closed; true for the one caller that actually closed it.
    pub(crate) fn mark_closed(&self, reason: CloseReason) -> bool {
        if self.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        *self.close_reason.lock() = Some(reason);
        self.close_signal.notify_waiters();
        // Wake a writer blocked on an empty queue so it notices the close.
        self.queued.notify_one();
        true
    }

    /// Resolves once the session is closed.
    pub async fn closed(&self) {
        loop {
            let notified = self.close_signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn pong_received(&self) {
        self.pong.notify_one();
    }

    pub(crate) async fn pong(&self) {
        self.pong.notified().await
    }
}

/// The exclusive right to drain a session's queue; released on drop, so a polling
/// request that the client abandons frees the queue for the next one.
#[derive(Debug)]
pub(crate) struct QueueWriter {
    session: Arc<Session>,
}

impl QueueWriter {
    /// Waits until frames are queued, then takes them all. Returns an empty queue
    /// when the session is closed, or when an upgrade asks the polling writer to
    /// step aside.
    pub(crate) async fn next_batch(&self) -> VecDeque<Frame> {
        loop {
            let notified = self.session.queued.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let batch = self.take_batch();
            if !batch.is_empty()
                || self.session.is_closed()
                || self.session.transport() == TransportState::Upgrading
            {
                return batch;
            }
            notified.await;
        }
    }

    /// Takes whatever is queued now, without waiting.
    pub(crate) fn take_batch(&self) -> VecDeque<Frame> {
        std::mem::take(&mut *self.session.queue.lock())
    }
}

/// The right to post to a session, released on drop.
#[derive(Debug)]
pub(crate) struct PostClaim {
    session: Arc<Session>,
}

impl Drop for PostClaim {
    fn drop(&mut self) {
        self.session.posting.store(false, Ordering::Release);
    }
}

impl Drop for QueueWriter {
    fn drop(&mut self) {
        self.session.draining.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn session(limit: usize) -> Arc<Session> {
        let info = ConnectInfo::default();
        Arc::new(Session::new(
            "s".into(),
            info,
            TransportState::Polling,
            limit,
        ))
    }

    #[tokio::test]
    async fn queue_is_bounded_and_drained_in_order() {
        let s = session(2);
        s.send(Frame::Text(Bytes::from_static(b"4a"))).unwrap();
        s.send(Frame::Text(Bytes::from_static(b"4b"))).unwrap();
        assert_eq!(
            s.send(Frame::Text(Bytes::from_static(b"4c"))),
            Err(SendError::QueueFull)
        );
        let writer = s.claim_writer().unwrap();
        assert!(s.claim_writer().is_none(), "only one writer at a time");
        let batch: Vec<_> = writer.next_batch().await.into_iter().collect();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0], Frame::Text(Bytes::from_static(b"4a")));
        drop(writer);
        assert!(s.claim_writer().is_some());
    }

    #[tokio::test]
    async fn close_wakes_a_waiting_writer_and_refuses_sends() {
        let s = session(4);
        let writer = s.claim_writer().unwrap();
        let s2 = s.clone();
        let waiter = tokio::spawn(async move { writer.next_batch().await.len() });
        tokio::task::yield_now().await;
        assert!(s2.mark_closed(CloseReason::ServerClose));
        assert!(!s2.mark_closed(CloseReason::PingTimeout), "closes once");
        assert_eq!(waiter.await.unwrap(), 0);
        assert_eq!(
            s2.send(Frame::Text(Bytes::from_static(b"4x"))),
            Err(SendError::Closed)
        );
        assert_eq!(s2.close_reason(), Some(CloseReason::ServerClose));
        s2.closed().await;
    }
}
