//! No sticky sessions: a request of an Engine.IO session that lands on a node
//! other than the session's owner is served by the owner, over a direct
//! node-to-node connection (never through Redis pub/sub).
//!
//! Owns the owner's mark in a sid (`<node tag>.<random>`, the tag being the
//! owner's node id in base64url: finding the owner costs no lookup), finding
//! the owner's address (the cluster's cached node records), and the two ways a
//! request reaches it:
//! - a long-polling GET or POST is forwarded as an HTTP request to the owner's
//!   advertised address (`ADVERTISE_URL`), both bodies streamed; the POST's
//!   body is counted against `MAX_PAYLOAD` here as it passes (the owner applies
//!   it and `POLLING_BODY_TIMEOUT_MS` again: the same answers either way);
//! - a websocket upgrade is relayed: this node opens a websocket to the owner
//!   first (so a refusal is the owner's HTTP answer), then accepts the
//!   client's and pipes messages both ways until either side closes. A
//!   draining node asks each owner to close its relayed sessions
//!   ([`Forwarder::close_relays`]: a websocket ping the owner knows), which
//!   each owner does as its own drain would, once the client is owed no ack:
//!   the owner's `1001 going away` reaches the client through the relay, and
//!   the client reconnects through the balancer.
//!
//! A forwarded request carries [`MARK`]: a timestamp and an HMAC under
//! `SESSION_SECRET` (which every node shares) of the method, path and query. A
//! marked request is never forwarded again (an owner that no longer has the
//! session answers `Session ID unknown`), so a loop is impossible; and only a
//! valid mark skips the owner's `Origin` check, which the landing node already
//! made (a client cannot forge one). An owner that is unknown, dead or
//! unreachable is `Session ID unknown`: the client reconnects, as it would
//! after its node died.
//!
//! Does not own the session table (see `crate::engine`), the transports the
//! owner serves with (see [`super::polling`], [`super::websocket`]) nor where
//! node records live (see `crate::cluster`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use thiserror::Error;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::EngineError;
use super::websocket::RELAY_DRAINING;
use crate::cluster::Cluster;
use crate::engine::Engine;
use crate::session_token::SessionKeys;

/// The header that marks a forwarded request: `<unix ms>.<hmac>`.
pub const MARK: &str = "x-rain-forwarded";
/// What the mark's HMAC is for (keeps it apart from session tokens).
const MARK_DOMAIN: &str = "rain-forward";
/// How far a mark's timestamp may be from this node's clock.
const MARK_SKEW: Duration = Duration::from_secs(30);
/// How long connecting to the owner may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Margin over the owner's own bounds for a forwarded request to finish.
const MARGIN: Duration = Duration::from_secs(5);

/// Why a request could not be served by its session's owner.
#[derive(Debug, Error)]
pub enum ForwardError {
    #[error("no live node {0:?} is known")]
    UnknownOwner(String),
    #[error("the owner could not be reached")]
    Unreachable(#[source] reqwest::Error),
    #[error("the owner refused the websocket")]
    WebsocketRefused(#[source] Box<tungstenite::Error>),
    #[error("the owner's address {0:?} is not an http:// URL")]
    BadAddress(String),
}

/// Forwards requests of sessions owned by other nodes. One per node.
pub struct Forwarder {
    node_id: String,
    /// This node's tag, the prefix of every sid it mints.
    tag: String,
    cluster: Arc<dyn Cluster>,
    keys: SessionKeys,
    client: reqwest::Client,
    relays: Arc<Relays>,
}

/// The websocket relays this node carries, each with what tells it to close.
#[derive(Default)]
struct Relays {
    next: AtomicU64,
    /// Relays not yet asked to close.
    open: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    /// Relays still piping, asked or not.
    live: AtomicUsize,
}

/// A relay's place in [`Relays`], given up when the relay ends.
struct RelayGuard {
    id: u64,
    relays: Arc<Relays>,
}

impl Drop for RelayGuard {
    fn drop(&mut self) {
        self.relays.open.lock().remove(&self.id);
        self.relays.live.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Forwarder {
    pub fn new(cluster: Arc<dyn Cluster>, keys: SessionKeys) -> Forwarder {
        let node_id = cluster.node_id().to_string();
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // Nodes talk plain HTTP on their private network; a proxy from
            // the environment must not be in the way.
            .no_proxy()
            .build()
            .expect("a client with no TLS and no proxy builds");
        Forwarder {
            tag: URL_SAFE_NO_PAD.encode(&node_id),
            node_id,
            cluster,
            keys,
            client,
            relays: Arc::default(),
        }
    }

    /// How many websocket relays this node carries not yet asked to close.
    pub fn relay_count(&self) -> usize {
        self.relays.open.lock().len()
    }

    /// How many websocket relays still pipe (asked to close or not).
    pub fn relays_live(&self) -> usize {
        self.relays.live.load(Ordering::Acquire)
    }

    /// Asks up to `count` relays to have their session's owner close it once
    /// settled; how many were asked.
    pub fn close_relays(&self, count: usize) -> usize {
        let chosen: Vec<oneshot::Sender<()>> = {
            let mut open = self.relays.open.lock();
            let ids: Vec<u64> = open.keys().take(count).copied().collect();
            ids.into_iter().filter_map(|id| open.remove(&id)).collect()
        };
        let told = chosen.len();
        for close in chosen {
            let _ = close.send(());
        }
        told
    }

    fn relay_opened(&self) -> (RelayGuard, oneshot::Receiver<()>) {
        let id = self.relays.next.fetch_add(1, Ordering::Relaxed);
        let (close, closing) = oneshot::channel();
        self.relays.live.fetch_add(1, Ordering::AcqRel);
        self.relays.open.lock().insert(id, close);
        let guard = RelayGuard {
            id,
            relays: self.relays.clone(),
        };
        (guard, closing)
    }

    /// A sid of this node: its tag, a dot, then `random` (the tag alone says
    /// which node to ask).
    pub fn sid(&self, random: &str) -> String {
        format!("{}.{random}", self.tag)
    }

    /// The node a sid names as its owner, when it is another node.
    pub fn owner(&self, sid: &str) -> Option<String> {
        let (tag, _) = sid.split_once('.')?;
        let node = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let node = String::from_utf8(node).ok()?;
        (!node.is_empty() && node != self.node_id).then_some(node)
    }

    /// The mark of a request to forward.
    fn mark(&self, method: &Method, path_and_query: &str) -> String {
        let now = crate::cluster::now_millis();
        let signature = self
            .keys
            .sign(MARK_DOMAIN, &format!("{now}\n{method}\n{path_and_query}"));
        format!("{now}.{signature}")
    }

    /// Whether a request carries a valid mark: it was forwarded by a node.
    pub fn is_marked(&self, parts: &Parts) -> bool {
        let Some(value) = parts.headers.get(MARK).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some((at, signature)) = value.split_once('.') else {
            return false;
        };
        let Ok(at) = at.parse::<u64>() else {
            return false;
        };
        if crate::cluster::now_millis().abs_diff(at) > MARK_SKEW.as_millis() as u64 {
            return false;
        }
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        self.keys.verify_signed(
            MARK_DOMAIN,
            &format!("{at}\n{}\n{path}", parts.method),
            signature,
        )
    }

    async fn address(&self, owner: &str) -> Result<String, ForwardError> {
        let address = self
            .cluster
            .node_address(owner)
            .await
            .ok_or_else(|| ForwardError::UnknownOwner(owner.to_string()))?;
        if !address.starts_with("http://") {
            return Err(ForwardError::BadAddress(address));
        }
        Ok(address)
    }
}

/// Serves a long-polling GET or POST of a session owned by `owner` by
/// forwarding it there.
pub async fn polling(
    engine: &Engine,
    forwarder: &Forwarder,
    owner: &str,
    parts: Parts,
    body: Body,
) -> Response {
    match forward_polling(engine, forwarder, owner, parts, body).await {
        Ok(response) => response,
        Err(Refused::TooLarge) => {
            metrics::counter!("rain_refused_total", "limit" => "max_payload").increment(1);
            (StatusCode::PAYLOAD_TOO_LARGE, "payload too large").into_response()
        }
        Err(Refused::Failed(error)) => {
            tracing::debug!(
                owner,
                error = &error as &dyn std::error::Error,
                "forwarding failed"
            );
            metrics::counter!("rain_forwarded_total", "transport" => "polling", "outcome" => "failed").increment(1);
            EngineError::UnknownSid.into_response()
        }
    }
}

enum Refused {
    TooLarge,
    Failed(ForwardError),
}

async fn forward_polling(
    engine: &Engine,
    forwarder: &Forwarder,
    owner: &str,
    parts: Parts,
    body: Body,
) -> Result<Response, Refused> {
    let address = forwarder.address(owner).await.map_err(Refused::Failed)?;
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let config = engine.config();
    let mut request = forwarder
        .client
        .request(parts.method.clone(), format!("{address}{path}"))
        .header(MARK, forwarder.mark(&parts.method, path))
        // A GET waits for the owner's next batch (a ping at the latest), a
        // POST for its body: both are bounded by the owner, this is a backstop.
        .timeout(config.ping_interval + config.ping_timeout + config.polling_body_timeout + MARGIN);
    if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let over = Arc::new(AtomicBool::new(false));
    if parts.method == Method::POST {
        // Streamed as it arrives, counted against MAX_PAYLOAD on the way.
        let limit = engine.config().max_payload;
        let mut seen = 0u64;
        let flag = over.clone();
        let stream = body.into_data_stream().map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            seen += chunk.len() as u64;
            if seen > limit {
                flag.store(true, Ordering::Release);
                return Err(std::io::Error::other("body over MAX_PAYLOAD"));
            }
            Ok(chunk)
        });
        request = request.body(reqwest::Body::wrap_stream(stream));
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(_) if over.load(Ordering::Acquire) => return Err(Refused::TooLarge),
        Err(error) => return Err(Refused::Failed(ForwardError::Unreachable(error))),
    };
    metrics::counter!("rain_forwarded_total", "transport" => "polling", "outcome" => "served")
        .increment(1);
    let mut response = Response::builder().status(answer.status());
    if let Some(content_type) = answer.headers().get(header::CONTENT_TYPE) {
        response = response.header(header::CONTENT_TYPE, content_type);
    }
    Ok(response
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(|_| EngineError::BadRequest.into_response()))
}

/// Serves a websocket upgrade of a session owned by `owner`: opens a websocket
/// to the owner, then accepts the client's and pipes the two together.
pub async fn websocket(
    engine: &Engine,
    forwarder: &Forwarder,
    owner: &str,
    mut parts: Parts,
) -> Response {
    let Ok(upgrade) = WebSocketUpgrade::from_request_parts(&mut parts, &()).await else {
        return EngineError::BadRequest.into_response();
    };
    let owner_socket = match connect_owner(forwarder, owner, &parts).await {
        Ok(socket) => socket,
        Err(error) => {
            tracing::debug!(
                owner,
                error = &error as &dyn std::error::Error,
                "websocket relay refused"
            );
            metrics::counter!("rain_forwarded_total", "transport" => "websocket", "outcome" => "failed").increment(1);
            return EngineError::UnknownSid.into_response();
        }
    };
    metrics::counter!("rain_forwarded_total", "transport" => "websocket", "outcome" => "served")
        .increment(1);
    let max = usize::try_from(engine.config().max_payload).unwrap_or(usize::MAX);
    let (guard, closing) = forwarder.relay_opened();
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |client| Box::pin(pipe(client, owner_socket, closing, guard)))
}

type OwnerSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_owner(
    forwarder: &Forwarder,
    owner: &str,
    parts: &Parts,
) -> Result<OwnerSocket, ForwardError> {
    let address = forwarder.address(owner).await?;
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("ws://{}{path}", &address["http://".len()..]);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|_| ForwardError::BadAddress(address.clone()))?;
    let mark = HeaderValue::from_str(&forwarder.mark(&Method::GET, path))
        .map_err(|_| ForwardError::BadAddress(address.clone()))?;
    request.headers_mut().insert(MARK, mark);
    let connect = tokio_tungstenite::connect_async(request);
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(error)) => Err(ForwardError::WebsocketRefused(Box::new(error))),
        Err(_) => Err(ForwardError::UnknownOwner(owner.to_string())),
    }
}

/// Carries messages between the client and the owner until either side
/// closes or fails; the other is then closed too (dropped). When `closing`
/// says this node drains, the owner is asked (a [`RELAY_DRAINING`] ping) to
/// close the session once settled; its close then comes down as any other.
async fn pipe(
    client: WebSocket,
    owner: OwnerSocket,
    closing: oneshot::Receiver<()>,
    _guard: RelayGuard,
) {
    let (mut to_client, mut from_client) = client.split();
    let (mut to_owner, mut from_owner) = owner.split();
    let up = async {
        let mut closing = closing;
        let mut asked = false;
        loop {
            let message = tokio::select! {
                message = from_client.next() => message,
                Ok(()) = &mut closing, if !asked => {
                    asked = true;
                    let ping = tungstenite::Message::Ping(bytes::Bytes::from_static(RELAY_DRAINING));
                    if to_owner.send(ping).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let Some(Ok(message)) = message else { break };
            let message = match message {
                Message::Text(text) => {
                    match tungstenite::Utf8Bytes::try_from(bytes::Bytes::from(text)) {
                        Ok(text) => tungstenite::Message::Text(text),
                        Err(_) => break,
                    }
                }
                Message::Binary(data) => tungstenite::Message::Binary(data),
                // Websocket pings are each hop's own business.
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Close(_) => break,
            };
            if to_owner.send(message).await.is_err() {
                break;
            }
        }
        let _ = to_owner.send(tungstenite::Message::Close(None)).await;
    };
    let down = async {
        while let Some(Ok(message)) = from_owner.next().await {
            let message = match message {
                tungstenite::Message::Text(text) => {
                    match axum::extract::ws::Utf8Bytes::try_from(bytes::Bytes::from(text)) {
                        Ok(text) => Message::Text(text),
                        Err(_) => break,
                    }
                }
                tungstenite::Message::Binary(data) => Message::Binary(data),
                tungstenite::Message::Close(frame) => {
                    // The owner's close code says why (going away, policy):
                    // the client decides whether to reconnect on it.
                    let frame = frame.map(|frame| axum::extract::ws::CloseFrame {
                        code: frame.code.into(),
                        reason: axum::extract::ws::Utf8Bytes::from(frame.reason.as_str()),
                    });
                    let _ = to_client.send(Message::Close(frame)).await;
                    return;
                }
                _ => continue,
            };
            if to_client.send(message).await.is_err() {
                return;
            }
        }
        let _ = to_client.send(Message::Close(None)).await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarder(node_id: &str) -> Forwarder {
        let settings = crate::config::Settings {
            node_id: node_id.into(),
            ..crate::config::Settings::default()
        };
        let cluster: Arc<dyn Cluster> = Arc::new(
            crate::cluster::memory::MemoryCluster::from_settings(&settings),
        );
        Forwarder::new(
            cluster,
            SessionKeys::new(b"0123456789abcdef0123456789abcdef", None),
        )
    }

    #[tokio::test]
    async fn a_sid_names_its_owner_and_nothing_else_does() {
        let a = forwarder("node-a");
        let b = forwarder("node-b");
        let sid = a.sid("AAAAAAAAAAAAAAAAAAAA");
        assert_eq!(b.owner(&sid).as_deref(), Some("node-a"));
        // Its own sid, or one with no tag or a tag that is not base64url
        // UTF-8: nobody else to ask.
        assert_eq!(a.owner(&sid), None);
        for foreign in ["AAAAAAAAAAAAAAAAAAAA", "!!.x", "_w.x", ".x", ""] {
            assert_eq!(b.owner(foreign), None, "{foreign:?}");
        }
    }

    #[tokio::test]
    async fn only_a_fresh_mark_of_the_same_request_and_secret_verifies() {
        let a = forwarder("node-a");
        let request = |mark: Option<String>, uri: &str| {
            let mut builder = axum::http::Request::builder().method(Method::GET).uri(uri);
            if let Some(mark) = mark {
                builder = builder.header(MARK, mark);
            }
            builder.body(()).unwrap().into_parts().0
        };
        let uri = "/socket.io/?EIO=4&transport=polling&sid=x";
        assert!(a.is_marked(&request(Some(a.mark(&Method::GET, uri)), uri)));
        assert!(!a.is_marked(&request(None, uri)));
        // Another request, another method, another secret, an old mark, junk.
        assert!(!a.is_marked(&request(
            Some(a.mark(&Method::GET, uri)),
            "/socket.io/?EIO=4&transport=polling&sid=y"
        )));
        assert!(!a.is_marked(&request(Some(a.mark(&Method::POST, uri)), uri)));
        let other = SessionKeys::new(b"another secret of at least 32 bytes", None);
        let now = crate::cluster::now_millis();
        let foreign = format!(
            "{now}.{}",
            other.sign(MARK_DOMAIN, &format!("{now}\nGET\n{uri}"))
        );
        assert!(!a.is_marked(&request(Some(foreign), uri)));
        let old = now - 60_000;
        let stale = format!(
            "{old}.{}",
            a.keys.sign(MARK_DOMAIN, &format!("{old}\nGET\n{uri}"))
        );
        assert!(!a.is_marked(&request(Some(stale), uri)));
        for junk in ["", ".", "x.y", "1.!!"] {
            assert!(!a.is_marked(&request(Some(junk.into()), uri)), "{junk:?}");
        }
    }
}
