//! The writer: every state change and PUBLISH of this node, queued in order and
//! sent as pipelines, so traffic never waits on a round trip.
//!
//! Owns the write queue ([`Writer`]) and the task that drains it ([`run`]). The
//! queue is bounded: when it is full (Redis away or far behind) new writes are
//! dropped and counted rather than held, so nothing grows while Redis is down,
//! and the heartbeat re-registers the node's state once it is back. A failed
//! pipeline marks the heartbeat failed (the node is not ready until a beat
//! succeeds). Does not own what is written: callers build the commands and
//! messages.

use std::sync::Arc;

use redis::Cmd;
use tokio::sync::{mpsc, oneshot};

use super::RedisNode;
use crate::cluster::wire::Message;

/// Queued writes before new ones are dropped (and counted) rather than held.
pub(super) const WRITE_QUEUE: usize = 16 * 1024;
/// Writes sent to Redis in one pipeline, at most.
const PIPELINE: usize = 512;

/// One queued write.
pub(super) enum Write {
    Publish {
        channel: String,
        payload: Vec<u8>,
        /// The channel's kind, for the `rain_cluster_published_total` label.
        kind: &'static str,
    },
    Command(Cmd),
    /// Answered once every write queued before it has been sent.
    Barrier(oneshot::Sender<()>),
}

/// The sending side of the write queue.
pub(super) struct Writer {
    queue: mpsc::Sender<Write>,
}

impl Writer {
    /// The queue, and its receiving end for [`run`].
    pub(super) fn new() -> (Writer, mpsc::Receiver<Write>) {
        let (queue, receiver) = mpsc::channel(WRITE_QUEUE);
        (Writer { queue }, receiver)
    }

    /// Queues a write; when the queue is full it is dropped and counted instead.
    fn write(&self, write: Write) {
        if self.queue.try_send(write).is_err() {
            metrics::counter!("rain_cluster_dropped_total").increment(1);
        }
    }

    /// Queues a PUBLISH of `message` on `channel`.
    pub(super) fn publish(&self, channel: String, message: &Message, kind: &'static str) {
        self.write(Write::Publish {
            channel,
            payload: message.encode(),
            kind,
        });
    }

    /// Queues a command.
    pub(super) fn command(&self, command: Cmd) {
        self.write(Write::Command(command));
    }

    /// Queues a command, waiting for room in the queue; false when the writer
    /// is gone.
    pub(super) async fn command_waiting(&self, command: Cmd) -> bool {
        self.queue.send(Write::Command(command)).await.is_ok()
    }

    /// A barrier: resolves once everything queued so far is sent. `None` when
    /// the queue is full.
    pub(super) fn barrier(&self) -> Option<oneshot::Receiver<()>> {
        let (done, written) = oneshot::channel();
        self.queue.try_send(Write::Barrier(done)).ok()?;
        Some(written)
    }
}

/// Sends queued writes as pipelines, in order.
pub(super) async fn run(node: Arc<RedisNode>, mut queue: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(PIPELINE);
    let mut failing = false;
    while queue.recv_many(&mut batch, PIPELINE).await > 0 {
        let mut pipe = redis::pipe();
        let mut barriers = Vec::new();
        let mut published: Vec<&'static str> = Vec::new();
        for write in batch.drain(..) {
            match write {
                Write::Publish {
                    channel,
                    payload,
                    kind,
                } => {
                    pipe.publish(channel, payload).ignore();
                    published.push(kind);
                }
                Write::Command(command) => {
                    pipe.add_command(command).ignore();
                }
                Write::Barrier(done) => barriers.push(done),
            }
        }
        if pipe.cmd_iter().next().is_some() {
            let sent = node
                .commands
                .run(async |connection| pipe.query_async::<()>(connection).await)
                .await;
            match sent {
                Ok(()) => {
                    failing = false;
                    for kind in published {
                        metrics::counter!("rain_cluster_published_total", "kind" => kind)
                            .increment(1);
                    }
                }
                Err(error) => {
                    metrics::counter!("rain_cluster_dropped_total")
                        .increment(pipe.cmd_iter().count() as u64);
                    if !failing {
                        tracing::warn!(
                            error = &error as &dyn std::error::Error,
                            "Redis write failed; dropping writes until it is back"
                        );
                    }
                    failing = true;
                    node.heartbeat.failed();
                }
            }
        }
        for done in barriers {
            let _ = done.send(());
        }
    }
}
