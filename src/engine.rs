//! The Engine.IO server: the session table, the handshake, and what every
//! transport does with an incoming packet.
//!
//! Owns: creating sessions (sid, handshake), looking them up, finishing them exactly
//! once (removing them and telling the upper layer), the number of sessions per
//! client address (`CONNECTIONS_PER_ADDRESS`: a place is reserved before a session
//! exists and given back when it is finished), and the per-packet rules shared
//! by polling and websocket; a sid names the node that owns it when the
//! engine has a `Forwarder`. Does not own HTTP parsing or websocket framing (see
//! `crate::transport`) nor anything Socket.IO (see `crate::io`), which it reaches
//! only through [`EngineHandler`] and [`SessionHandler`].

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;
use rand::Rng;
use thiserror::Error;

use crate::config::{CookieSecure, Settings};
use crate::limits::{AddressSlot, ConnectionsPerAddress};
use crate::protocol::engineio::{Handshake, Packet};
use crate::session::{CloseReason, ConnectInfo, Session, TransportState};
use crate::session_token::SessionKeys;
use crate::transport::address::TrustedProxies;
use crate::transport::forward::Forwarder;

/// The upper layer's view of a protocol violation inside a message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct ProtocolViolation(pub String);

/// The layer above Engine.IO (Socket.IO), told about new sessions.
pub trait EngineHandler: Send + Sync + 'static {
    /// A session opened; returns what will receive its messages.
    fn on_open(&self, session: &Arc<Session>) -> Arc<dyn SessionHandler>;
}

/// Receives one session's messages, in order, and its end.
pub trait SessionHandler: Send + Sync + 'static {
    /// A text message (the Engine.IO `4` packet's data).
    fn on_message(&self, text: Bytes) -> Result<(), ProtocolViolation>;
    /// A binary message.
    fn on_binary(&self, data: Bytes) -> Result<(), ProtocolViolation>;
    /// The session ended; called exactly once.
    fn on_close(&self, reason: CloseReason);
}

/// The Engine.IO settings a node runs with.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub max_payload: u64,
    /// How long a polling POST may take to send its body (slow senders hold a
    /// connection and a session; see `POLLING_BODY_TIMEOUT_MS`).
    pub polling_body_timeout: Duration,
    pub queue_limit: usize,
    /// Most sessions one client address may have open (`CONNECTIONS_PER_ADDRESS`).
    pub connections_per_address: usize,
    /// How long a websocket may take to complete an upgrade after connecting.
    pub upgrade_timeout: Duration,
    /// Whose `X-Forwarded-For` is believed when telling the client's address.
    pub trusted_proxies: TrustedProxies,
    /// Origins (`scheme://host[:port]`) whose pages may talk to this server
    /// besides its own: `CORS_ORIGINS`. See `crate::transport::origin`.
    pub allowed_origins: Arc<[String]>,
    /// What mints and verifies session tokens (the `rain_session` cookie).
    pub session_keys: SessionKeys,
    /// When the session cookie is `Secure`.
    pub cookie_secure: CookieSecure,
    /// Keep the handshake headers a connect-auth hook is shown (only when one
    /// is installed: an idle session holds no copy otherwise).
    pub auth_headers: bool,
}

impl From<&Settings> for EngineConfig {
    fn from(settings: &Settings) -> Self {
        EngineConfig {
            ping_interval: settings.ping_interval(),
            ping_timeout: settings.ping_timeout(),
            max_payload: settings.max_payload,
            polling_body_timeout: settings.polling_body_timeout(),
            queue_limit: settings.outbound_queue,
            connections_per_address: settings.connections_per_address,
            upgrade_timeout: Duration::from_secs(10),
            trusted_proxies: TrustedProxies::new(&settings.trusted_proxies),
            allowed_origins: settings.cors_origins.clone().into(),
            session_keys: SessionKeys::from_settings(settings),
            cookie_secure: settings.cookie_secure,
            auth_headers: settings.auth_url.is_some(),
        }
    }
}

struct Entry {
    session: Arc<Session>,
    handler: Arc<dyn SessionHandler>,
    /// The session's place in its address's count, given back when the
    /// entry is removed.
    _slot: Option<AddressSlot>,
}

/// A handshake refused: its client address has `CONNECTIONS_PER_ADDRESS`
/// sessions open already.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("too many connections from this address (at most {limit})")]
pub struct TooManyConnections {
    pub limit: usize,
}

/// The Engine.IO server shared by every transport. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: EngineConfig,
    sessions: RwLock<HashMap<Box<str>, Entry>>,
    handler: Arc<dyn EngineHandler>,
    connections: Arc<ConnectionsPerAddress>,
    /// Serves requests of other nodes' sessions (set once, by the server,
    /// when the node is part of a cluster); its tag prefixes every sid.
    forwarder: OnceLock<Arc<Forwarder>>,
}

impl Engine {
    pub fn new(config: EngineConfig, handler: Arc<dyn EngineHandler>) -> Self {
        Engine {
            inner: Arc::new(Inner {
                connections: ConnectionsPerAddress::new(config.connections_per_address),
                config,
                sessions: RwLock::new(HashMap::new()),
                handler,
                forwarder: OnceLock::new(),
            }),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Makes this engine part of a cluster: its sids name this node, and
    /// requests of other nodes' sessions are served by them (see
    /// `crate::transport::forward`). Once, before the first session.
    pub fn set_forwarder(&self, forwarder: Forwarder) {
        let _ = self.inner.forwarder.set(Arc::new(forwarder));
    }

    pub fn forwarder(&self) -> Option<&Arc<Forwarder>> {
        self.inner.forwarder.get()
    }

    /// A place for one more session from the handshake's client address,
    /// taken before anything of the session exists (for a websocket, before
    /// the upgrade). A request with no known address is not counted.
    pub fn reserve(&self, info: &ConnectInfo) -> Result<Option<AddressSlot>, TooManyConnections> {
        let Some(address) = info.address else {
            return Ok(None);
        };
        match self.inner.connections.acquire(address) {
            Some(slot) => Ok(Some(slot)),
            None => {
                metrics::counter!("rain_refused_total", "limit" => "connections_per_address")
                    .increment(1);
                tracing::info!(%address, "handshake refused: too many connections from this address");
                Err(TooManyConnections {
                    limit: self.inner.config.connections_per_address,
                })
            }
        }
    }

    /// How many client addresses have a session open now.
    pub fn addresses(&self) -> usize {
        self.inner.connections.addresses()
    }

    /// Opens a session and announces it to the upper layer; `slot` (from
    /// [`Engine::reserve`]) is held until the session is finished.
    pub fn open(
        &self,
        info: ConnectInfo,
        transport: TransportState,
        slot: Option<AddressSlot>,
    ) -> (Arc<Session>, Arc<dyn SessionHandler>) {
        let sid = match self.forwarder() {
            Some(forwarder) => forwarder.sid(&new_sid()),
            None => new_sid(),
        };
        let session = Arc::new(Session::new(
            sid,
            info,
            transport,
            self.inner.config.queue_limit,
        ));
        let handler = self.inner.handler.on_open(&session);
        self.inner.sessions.write().insert(
            session.sid().into(),
            Entry {
                session: session.clone(),
                handler: handler.clone(),
                _slot: slot,
            },
        );
        tracing::debug!(sid = session.sid(), ?transport, "engine.io session opened");
        (session, handler)
    }

    /// The handshake packet for a session.
    pub fn handshake(&self, session: &Session, upgrades: &[&str]) -> Packet {
        Handshake {
            sid: session.sid().to_string(),
            upgrades: upgrades.iter().map(|u| u.to_string()).collect(),
            ping_interval: self.inner.config.ping_interval.as_millis() as u64,
            ping_timeout: self.inner.config.ping_timeout.as_millis() as u64,
            max_payload: self.inner.config.max_payload,
        }
        .to_packet()
    }

    pub fn get(&self, sid: &str) -> Option<(Arc<Session>, Arc<dyn SessionHandler>)> {
        self.inner
            .sessions
            .read()
            .get(sid)
            .map(|entry| (entry.session.clone(), entry.handler.clone()))
    }

    /// Ends a closed session: removes it and tells the upper layer, once. Called by
    /// the task that owns the session (the websocket loop, or the polling heartbeat).
    pub fn finish(&self, session: &Session) {
        let entry = self.inner.sessions.write().remove(session.sid());
        if let Some(entry) = entry {
            let reason = session
                .close_reason()
                .unwrap_or(CloseReason::TransportError);
            tracing::debug!(
                sid = session.sid(),
                reason = reason.as_str(),
                "engine.io session finished"
            );
            entry.handler.on_close(reason);
        }
    }

    /// Applies one packet from the client. An error means the session was closed.
    pub fn handle_packet(
        &self,
        session: &Session,
        handler: &dyn SessionHandler,
        packet: Packet,
    ) -> Result<(), ProtocolViolation> {
        let result = match packet {
            Packet::Pong(_) => {
                session.pong_received();
                Ok(())
            }
            Packet::Message(text) => handler.on_message(text),
            Packet::Binary(data) => handler.on_binary(data),
            Packet::Close => {
                session.close(CloseReason::ClientClose);
                Ok(())
            }
            // A v4 client never pings outside an upgrade probe; answering keeps
            // older or hand-written clients alive without harm.
            Packet::Ping(data) => {
                let _ = session.send(Packet::Pong(data).encode());
                Ok(())
            }
            Packet::Noop | Packet::Upgrade => Ok(()),
            Packet::Open(_) => Err(ProtocolViolation(
                "a client may not send an open packet".into(),
            )),
        };
        if let Err(violation) = &result {
            tracing::info!(sid = session.sid(), error = %violation, "closing session on a protocol violation");
            session.close(CloseReason::ProtocolError);
        }
        result
    }

    /// Closes every session (graceful shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        let sessions: Vec<Arc<Session>> = self
            .inner
            .sessions
            .read()
            .values()
            .map(|e| e.session.clone())
            .collect();
        for session in sessions {
            session.close(reason);
        }
    }

    /// Every session open now (a drain closes them in batches).
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        self.inner
            .sessions
            .read()
            .values()
            .map(|e| e.session.clone())
            .collect()
    }

    pub fn session_count(&self) -> usize {
        self.inner.sessions.read().len()
    }
}

/// A session id: 20 URL-safe characters, 120 random bits (like the reference server's).
pub(crate) fn new_sid() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| ALPHABET[rng.random_range(0..64)] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_are_unique_and_url_safe() {
        let a = new_sid();
        let b = new_sid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 20);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }
}
