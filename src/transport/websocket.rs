//! The websocket transport: a session opened directly over websocket, or the
//! upgrade of a polling session (`2probe` → `3probe`, a noop to the pending GET,
//! then `5`).
//!
//! One task per websocket does everything for it: reads frames, writes queued
//! frames in batches, and (for a session it opened) runs the heartbeat with a timer
//! in the same loop, so an idle client costs one task and no extra timers.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, sleep_until};

use super::EngineError;
use crate::engine::{Engine, SessionHandler};
use crate::limits::AddressSlot;
use crate::metrics::TRAFFIC;
use crate::protocol::engineio::{self, Frame, Packet};
use crate::session::{CloseReason, ConnectInfo, QueueWriter, Session, TransportState};

/// The websocket read buffer. Small on purpose: it is held by every idle client,
/// and larger messages grow it only while they are read.
const READ_BUFFER: usize = 512;
/// Frames are gathered up to this size before a write; the buffer is kept per
/// connection once grown, so it stays small.
const WRITE_BUFFER: usize = 8 * 1024;
/// How long closing a websocket may take before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// The payload of the websocket ping a draining node's relay sends the
/// session's owner: close this session as a drain would, once it is owed no
/// ack (see `super::forward`). A client sending it only ends its own session.
pub(crate) const RELAY_DRAINING: &[u8] = b"rain-relay-draining";
/// How often a session asked to close once settled looks at its owed acks.
const SETTLE_POLL: Duration = Duration::from_millis(10);

/// Answers a websocket request: a new session, or an upgrade of `sid`.
pub fn accept(
    engine: Engine,
    upgrade: WebSocketUpgrade,
    sid: Option<String>,
    info: ConnectInfo,
) -> Response {
    // A new session takes its address's place before the upgrade, so a
    // refused client gets an HTTP answer it can read (429), not a websocket.
    let mut slot = None;
    let upgrading = match sid {
        None => {
            match engine.reserve(&info) {
                Ok(reserved) => slot = reserved,
                Err(refused) => return super::too_many_connections(refused),
            }
            None
        }
        Some(sid) => match engine.get(&sid) {
            Some(found) => Some(found),
            None => return EngineError::UnknownSid.into_response(),
        },
    };
    let max = usize::try_from(engine.config().max_payload).unwrap_or(usize::MAX);
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
        // The task's future is held by every connected client for its whole
        // life, so the rare paths are boxed: only the common one is inline.
        .on_upgrade(move |socket| async move {
            match upgrading {
                None => serve_new(engine, socket, info, slot).await,
                Some((session, handler)) if session.transport() == TransportState::Polling => {
                    Box::pin(serve_upgrade(engine, socket, session, handler)).await
                }
                // A second websocket for a session that already has one: the
                // reference server accepts and then closes it, leaving the first alone.
                Some(_) => {
                    let mut socket = socket;
                    let _ = Box::pin(tokio::time::timeout(
                        CLOSE_GRACE,
                        socket.send(Message::Close(None)),
                    ))
                    .await;
                }
            }
        })
}

async fn serve_new(
    engine: Engine,
    mut socket: WebSocket,
    info: ConnectInfo,
    slot: Option<AddressSlot>,
) {
    let (session, handler) = engine.open(info, TransportState::Websocket, slot);
    let writer = session
        .claim_writer()
        .expect("a new session has no other writer");
    let handshake = engine.handshake(&session, &[]).encode();
    if write_frames(&mut socket, [handshake]).await.is_err() {
        session.close(CloseReason::TransportError);
    } else {
        run(
            &engine,
            &mut socket,
            &session,
            handler.as_ref(),
            &writer,
            true,
        )
        .await;
    }
    drop(writer);
    Box::pin(close_socket(socket, &session)).await;
    engine.finish(&session);
}

async fn serve_upgrade(
    engine: Engine,
    mut socket: WebSocket,
    session: Arc<Session>,
    handler: Arc<dyn SessionHandler>,
) {
    match probe(&engine, &mut socket, &session).await {
        Some(writer) => {
            run(
                &engine,
                &mut socket,
                &session,
                handler.as_ref(),
                &writer,
                false,
            )
            .await;
            drop(writer);
            Box::pin(close_socket(socket, &session)).await;
        }
        None => {
            // A failed probe leaves the session on polling, as the client expects.
            if !session.is_closed() {
                session.set_transport(TransportState::Polling);
            }
        }
    }
    // The polling heartbeat task owns the session and finishes it.
}

/// Runs the upgrade handshake; on success the websocket holds the queue.
async fn probe(
    engine: &Engine,
    socket: &mut WebSocket,
    session: &Arc<Session>,
) -> Option<QueueWriter> {
    let deadline = Instant::now() + engine.config().upgrade_timeout;
    loop {
        let message = tokio::select! {
            message = socket.next() => message,
            _ = sleep_until(deadline) => return None,
            _ = session.closed() => return None,
        };
        let packet = match message {
            Some(Ok(Message::Text(text))) => {
                TRAFFIC.received(text.len());
                engineio::decode_text(text.into()).ok()?
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            _ => return None,
        };
        match packet {
            Packet::Ping(Some(data)) if data == "probe" => {
                write_frames(socket, [Packet::Pong(Some(data)).encode()])
                    .await
                    .ok()?;
                // Also ends the client's pending GET (with a noop) so it can pause polling.
                session.set_transport(TransportState::Upgrading);
            }
            Packet::Upgrade if session.transport() == TransportState::Upgrading => {
                session.set_transport(TransportState::Websocket);
                // The last GET may still be answering; it lets go of the queue at once.
                for _ in 0..200 {
                    if let Some(writer) = session.claim_writer() {
                        return Some(writer);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                session.close(CloseReason::TransportError);
                return None;
            }
            _ => return None,
        }
    }
}

/// The websocket's loop, until the session closes.
async fn run(
    engine: &Engine,
    socket: &mut WebSocket,
    session: &Session,
    handler: &dyn SessionHandler,
    writer: &QueueWriter,
    heartbeat: bool,
) {
    let config = engine.config();
    // The heartbeat: when `awaiting_pong` is false the timer fires the next ping,
    // otherwise it is the pong deadline.
    let mut awaiting_pong = false;
    let timer = tokio::time::sleep(if heartbeat {
        config.ping_interval
    } else {
        Duration::MAX / 4
    });
    let mut timer = pin!(timer);
    // Set when a draining relay asked for the close: checked until no ack is owed.
    let mut settling = false;
    let settle = tokio::time::sleep(Duration::MAX / 4);
    let mut settle = pin!(settle);
    loop {
        tokio::select! {
            biased;
            _ = session.closed() => {
                // A drain closes a session once no ack is owed: the last
                // acks may still be queued, and go out before the close.
                let rest = writer.take_batch();
                if shutting_down(session) && !rest.is_empty() {
                    let _ = tokio::time::timeout(CLOSE_GRACE, write_frames(socket, rest)).await;
                }
                return;
            }
            _ = settle.as_mut(), if settling => {
                if session.replies_owed() == 0 {
                    session.close(CloseReason::Shutdown);
                    return;
                }
                settle.as_mut().reset(Instant::now() + SETTLE_POLL);
            }
            batch = writer.next_batch() => {
                if batch.is_empty() {
                    continue;
                }
                let mut write = pin!(write_frames(socket, batch));
                let written = tokio::select! {
                    written = write.as_mut() => written,
                    _ = session.closed() => {
                        // Acks being written when a drain closes still go out.
                        if shutting_down(session) {
                            let _ = tokio::time::timeout(CLOSE_GRACE, write.as_mut()).await;
                        }
                        return;
                    }
                };
                if written.is_err() {
                    session.close(CloseReason::TransportError);
                    return;
                }
            }
            message = socket.next() => {
                let packet = match message {
                    Some(Ok(Message::Text(text))) => {
                        TRAFFIC.received(text.len());
                        engineio::decode_text(text.into())
                    }
                    Some(Ok(Message::Binary(data))) => {
                        TRAFFIC.received(data.len());
                        Ok(engineio::decode_binary(data))
                    }
                    Some(Ok(Message::Ping(data))) if data.as_ref() == RELAY_DRAINING => {
                        settling = true;
                        settle.as_mut().reset(Instant::now());
                        continue;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => {
                        session.close(CloseReason::ClientClose);
                        return;
                    }
                    Some(Err(error)) => {
                        tracing::info!(sid = session.sid(), %error, "websocket error, closing session");
                        session.close(CloseReason::TransportError);
                        return;
                    }
                };
                let packet = match packet {
                    Ok(packet) => packet,
                    Err(error) => {
                        tracing::info!(sid = session.sid(), %error, "malformed packet, closing session");
                        session.close(CloseReason::ProtocolError);
                        return;
                    }
                };
                if heartbeat && matches!(packet, Packet::Pong(_)) {
                    awaiting_pong = false;
                    timer.as_mut().reset(Instant::now() + config.ping_interval);
                    continue;
                }
                if engine.handle_packet(session, handler, packet).is_err() {
                    return;
                }
            }
            _ = timer.as_mut() => {
                if awaiting_pong {
                    tracing::debug!(sid = session.sid(), "ping timeout");
                    session.close(CloseReason::PingTimeout);
                    return;
                }
                if session.send(Packet::Ping(None).encode()).is_err() {
                    return;
                }
                awaiting_pong = true;
                timer.as_mut().reset(Instant::now() + config.ping_timeout);
            }
        }
    }
}

/// Whether the session was closed by a drain (or shutdown), whose close lets
/// queued frames out first.
fn shutting_down(session: &Session) -> bool {
    matches!(session.close_reason(), Some(CloseReason::Shutdown))
}

async fn write_frames(
    socket: &mut WebSocket,
    frames: impl IntoIterator<Item = Frame>,
) -> Result<(), axum::Error> {
    for frame in frames {
        TRAFFIC.sent(match &frame {
            Frame::Text(bytes) | Frame::Binary(bytes) => bytes.len(),
        });
        let message = match frame {
            // Frames are built from UTF-8 text by the codec; the check is a cheap scan.
            Frame::Text(text) => {
                Message::Text(Utf8Bytes::try_from(text).map_err(axum::Error::new)?)
            }
            Frame::Binary(data) => Message::Binary(data),
        };
        socket.feed(message).await?;
    }
    socket.flush().await
}

/// Ends the websocket with a close frame and no Engine.IO close packet: both
/// official clients then reconnect by themselves (python-socketio treats a close
/// packet from the server as final), through the load balancer to another node
/// when this one is going away.
async fn close_socket(mut socket: WebSocket, session: &Session) {
    let code = match session.close_reason() {
        Some(CloseReason::Shutdown) => close_code::AWAY,
        Some(CloseReason::ProtocolError) => close_code::PROTOCOL,
        Some(CloseReason::SlowClient | CloseReason::TooManyRequests) => close_code::POLICY,
        _ => close_code::NORMAL,
    };
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(session.close_reason().map_or("", CloseReason::as_str)),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, socket.send(Message::Close(Some(frame)))).await;
}
