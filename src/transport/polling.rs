//! HTTP long-polling: the handshake GET, the waiting GET that drains the outbound
//! queue, the POST that carries client packets, and the heartbeat task that owns a
//! session opened over polling for its whole life (it keeps running after an
//! upgrade to websocket, which forwards pongs to it).
//!
//! As the reference server, a session takes one GET and one POST at a time (an
//! overlapping one is answered 400 and closes the session); a POST's body must
//! arrive within `POLLING_BODY_TIMEOUT_MS` (else 408, session closed).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::time::{Instant, sleep_until};

use super::EngineError;
use crate::engine::{Engine, SessionHandler};
use crate::metrics::TRAFFIC;
use crate::protocol::engineio::{self, Packet};
use crate::session::{CloseReason, ConnectInfo, Session, TransportState};

const TEXT_PLAIN: &str = "text/plain; charset=UTF-8";
/// How long a session closed by its client still answers a late GET.
const CLOSE_RACE_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// A new session over polling: answers the handshake and starts its heartbeat.
pub fn open(engine: &Engine, info: ConnectInfo) -> Response {
    let slot = match engine.reserve(&info) {
        Ok(slot) => slot,
        Err(refused) => return super::too_many_connections(refused),
    };
    let (session, _handler) = engine.open(info, TransportState::Polling, slot);
    let handshake = engine.handshake(&session, &["websocket"]);
    // The heartbeat clock starts now, not when its task first runs, so the session
    // ends when the client expects it to (pingInterval + pingTimeout from here).
    tokio::spawn(heartbeat(engine.clone(), session.clone(), Instant::now()));
    let mut body = Vec::new();
    engineio::encode_payload([&handshake.encode()], &mut body);
    TRAFFIC.sent(body.len());
    ([(header::CONTENT_TYPE, TEXT_PLAIN)], body).into_response()
}

/// A waiting GET: answers with everything queued, as soon as there is something.
pub async fn poll(engine: &Engine, session: &Arc<Session>) -> Response {
    if session.transport() == TransportState::Websocket {
        return EngineError::BadRequest.into_response();
    }
    let Some(writer) = session.claim_writer() else {
        // Two GETs at once: the reference server treats this as a broken client.
        metrics::counter!("rain_refused_total", "limit" => "polling_overlap").increment(1);
        tracing::info!(
            sid = session.sid(),
            "duplicate polling request, closing session"
        );
        session.close(CloseReason::TransportError);
        return EngineError::BadRequest.into_response();
    };
    let batch = writer.next_batch().await;
    drop(writer);
    let mut body = Vec::new();
    if batch.is_empty() && !session.is_closed() {
        // An upgrade is under way: a noop ends this request so the client can pause
        // polling; anything queued meanwhile goes out over the websocket.
        engineio::encode_payload([&Packet::Noop.encode()], &mut body);
    } else if batch.is_empty() {
        // Closed while waiting. A broken client gets a close packet; for every
        // other end a noop finishes the request and the session is gone, so the
        // client's next request fails and it reconnects. (python-socketio gives up
        // for good on a close packet from the server, socket.io-client does not.)
        let last = match session.close_reason() {
            Some(
                CloseReason::TransportError
                | CloseReason::ProtocolError
                | CloseReason::TooManyRequests,
            ) => Packet::Close,
            _ => Packet::Noop,
        };
        engineio::encode_payload([&last.encode()], &mut body);
        engine.finish(session);
    } else {
        engineio::encode_payload(batch.iter(), &mut body);
    }
    TRAFFIC.sent(body.len());
    ([(header::CONTENT_TYPE, TEXT_PLAIN)], body).into_response()
}

/// A POST of client packets.
pub async fn post(
    engine: &Engine,
    session: &Arc<Session>,
    handler: &dyn SessionHandler,
    body: Body,
) -> Response {
    if session.is_closed() {
        return EngineError::UnknownSid.into_response();
    }
    if session.transport() == TransportState::Websocket {
        return EngineError::BadRequest.into_response();
    }
    // One POST at a time, as the reference server: an overlapping one is a
    // client that is broken or trying something, and ends the session.
    let Some(_claim) = session.claim_post() else {
        metrics::counter!("rain_refused_total", "limit" => "polling_overlap").increment(1);
        tracing::info!(
            sid = session.sid(),
            "overlapping polling POST, closing session"
        );
        session.close(CloseReason::TransportError);
        return EngineError::BadRequest.into_response();
    };
    let limit = usize::try_from(engine.config().max_payload).unwrap_or(usize::MAX);
    // The whole body within POLLING_BODY_TIMEOUT_MS: a client that dribbles
    // it (slowloris) would otherwise hold a connection and a session for ever.
    let timeout = engine.config().polling_body_timeout;
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            tracing::info!(
                sid = session.sid(),
                limit,
                "polling body over max payload refused"
            );
            metrics::counter!("rain_refused_total", "limit" => "max_payload").increment(1);
            return (StatusCode::PAYLOAD_TOO_LARGE, "payload too large").into_response();
        }
        Err(_) => {
            metrics::counter!("rain_refused_total", "limit" => "polling_body_timeout").increment(1);
            tracing::info!(
                sid = session.sid(),
                timeout_ms = timeout.as_millis() as u64,
                "polling body not received in time, closing session"
            );
            session.close(CloseReason::TransportError);
            return (
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            )
                .into_response();
        }
    };
    TRAFFIC.received(bytes.len());
    let packets = match engineio::decode_payload(bytes) {
        Ok(packets) => packets,
        Err(error) => {
            tracing::info!(sid = session.sid(), %error, "malformed polling payload, closing session");
            session.close(CloseReason::ProtocolError);
            return EngineError::BadRequest.into_response();
        }
    };
    for packet in packets {
        if engine.handle_packet(session, handler, packet).is_err() {
            return EngineError::BadRequest.into_response();
        }
    }
    ([(header::CONTENT_TYPE, "text/html")], "ok").into_response()
}

/// Pings every interval, closes on a missing pong, and finishes the session once it
/// is closed, whatever closed it.
async fn heartbeat(engine: Engine, session: Arc<Session>, start: Instant) {
    let config = engine.config().clone();
    let mut next_ping = start + config.ping_interval;
    loop {
        tokio::select! {
            _ = session.closed() => break,
            _ = sleep_until(next_ping) => {}
        }
        let pong_deadline = next_ping + config.ping_timeout;
        if session.send(Packet::Ping(None).encode()).is_err() {
            break;
        }
        tokio::select! {
            _ = session.closed() => break,
            _ = session.pong() => next_ping = Instant::now() + config.ping_interval,
            _ = sleep_until(pong_deadline) => {
                tracing::debug!(sid = session.sid(), "ping timeout");
                session.close(CloseReason::PingTimeout);
                break;
            }
        }
    }
    // A client that closes over polling may have its last GET racing its close
    // POST on another connection; that GET is answered with a noop rather than an
    // unknown-sid error if it comes within a moment. A pending GET learns of the
    // close at once and finishes the session itself.
    if session.close_reason() == Some(CloseReason::ClientClose)
        && session.transport() != TransportState::Websocket
    {
        tokio::time::sleep(CLOSE_RACE_GRACE).await;
    }
    engine.finish(&session);
}
