//! The writer: every state change and PUBLISH of this node, queued in order and
//! sent as pipelines, so traffic never waits on a round trip.
//!
//! Owns the write queue ([`Writer`]) and the task that drains it ([`run`]). The
//! queue is bounded: when it is full (Redis away or far behind) new writes are
//! dropped and counted rather than held, so nothing grows while Redis is down.
//! Every lost write (dropped, or in a pipeline that failed or timed out) is
//! reported to the heartbeat, which reconciles the node's state in Redis with
//! what it holds; a barrier answers whether everything before it was written.
//! Nothing is sent before the heartbeat has registered this incarnation of the
//! node. Does not own what is written: callers build the commands and
//! messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redis::Cmd;
use tokio::sync::{mpsc, oneshot};

use super::RedisNode;
use crate::cluster::ClusterError;
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
    /// Answered once every write queued before it has been sent: true when
    /// none of them was lost.
    Barrier(oneshot::Sender<bool>),
    /// An `EVALSHA` of `script` whose answer is a node id (or nil): the
    /// round-robin pick of a service's host, which also publishes to it.
    Dispatch {
        pick: Cmd,
        script: &'static str,
        host: oneshot::Sender<Result<Option<String>, ClusterError>>,
    },
}

/// The sending side of the write queue.
pub(super) struct Writer {
    queue: mpsc::Sender<Write>,
    /// A write was lost since the heartbeat last looked.
    lost: AtomicBool,
}

impl Writer {
    /// The queue, and its receiving end for [`run`].
    pub(super) fn new() -> (Writer, mpsc::Receiver<Write>) {
        let (queue, receiver) = mpsc::channel(WRITE_QUEUE);
        (
            Writer {
                queue,
                lost: AtomicBool::new(false),
            },
            receiver,
        )
    }

    /// Queues a write; when the queue is full it is dropped and counted instead.
    fn write(&self, write: Write) {
        if self.queue.try_send(write).is_err() {
            self.dropped(1);
        }
    }

    /// Counts writes that were lost and remembers that some were.
    fn dropped(&self, writes: u64) {
        metrics::counter!("rain_cluster_dropped_total").increment(writes);
        self.lost.store(true, Ordering::Release);
    }

    /// Whether a write was lost since the last call.
    pub(super) fn take_lost(&self) -> bool {
        self.lost.swap(false, Ordering::AcqRel)
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

    /// Queues commands at once, without waiting for room; false when the
    /// queue could not take them all (those left out are counted as lost).
    pub(super) fn commands_now(&self, commands: Vec<Cmd>) -> bool {
        let total = commands.len() as u64;
        for (sent, command) in commands.into_iter().enumerate() {
            if self.queue.try_send(Write::Command(command)).is_err() {
                self.dropped(total - sent as u64);
                return false;
            }
        }
        true
    }

    /// Queues a dispatch (`pick` runs `script` by its hash); resolves to the
    /// host it reached, `None` when no host listens or the write was lost.
    pub(super) fn dispatch(
        &self,
        pick: Cmd,
        script: &'static str,
    ) -> Option<oneshot::Receiver<Result<Option<String>, ClusterError>>> {
        let (host, picked) = oneshot::channel();
        let queued = self.queue.try_send(Write::Dispatch { pick, script, host });
        if queued.is_err() {
            self.dropped(1);
            return None;
        }
        Some(picked)
    }

    /// A barrier: resolves once everything queued so far is sent, to whether
    /// none of it was lost. `None` when the queue is full.
    pub(super) fn barrier(&self) -> Option<oneshot::Receiver<bool>> {
        let (done, written) = oneshot::channel();
        self.queue.try_send(Write::Barrier(done)).ok()?;
        Some(written)
    }
}

/// Sends queued writes as pipelines, in order.
pub(super) async fn run(node: Arc<RedisNode>, mut queue: mpsc::Receiver<Write>) {
    node.heartbeat.registered().await;
    let mut batch = Vec::with_capacity(PIPELINE);
    let mut failing = false;
    // Scripts loaded since the last failed pipeline. A Redis restart forgets
    // them; an EVALSHA that meets such a server fails its pipeline, which
    // counts as lost (and is repaired) like any failure, and the next
    // pipeline loads the script again.
    let mut loaded: Vec<&'static str> = Vec::new();
    while queue.recv_many(&mut batch, PIPELINE).await > 0 {
        // Writes dropped before this batch make its barriers fail too.
        let mut intact = !node.writer.lost.load(Ordering::Acquire);
        let mut pipe = redis::pipe();
        let mut barriers = Vec::new();
        let mut published: Vec<&'static str> = Vec::new();
        // The dispatches' answers are the pipeline's only results, in order.
        let mut picks: Vec<oneshot::Sender<Result<Option<String>, ClusterError>>> = Vec::new();
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
                Write::Dispatch { pick, script, host } => {
                    if !loaded.contains(&script) {
                        pipe.cmd("SCRIPT").arg("LOAD").arg(script).ignore();
                        loaded.push(script);
                    }
                    pipe.add_command(pick);
                    picks.push(host);
                    published.push("node");
                }
            }
        }
        // The dispatches' answers; none when the pipeline was not written.
        let mut hosts: Option<Vec<Option<String>>> = None;
        if failing && !node.heartbeat.is_ok() && pipe.cmd_iter().next().is_some() {
            // Redis is known to be away: drop at once rather than wait for
            // each batch to time out while the queue (and memory) fills; the
            // heartbeat repairs the state once a beat succeeds again.
            intact = false;
            loaded.clear();
            node.writer.dropped(pipe.cmd_iter().count() as u64);
        } else if pipe.cmd_iter().next().is_some() {
            let sent = node
                .commands
                .run(async |connection| pipe.query_async::<Vec<redis::Value>>(connection).await)
                .await;
            match sent {
                Ok(answers) => {
                    hosts = Some(
                        answers
                            .iter()
                            .map(|answer| redis::from_redis_value(answer).ok().flatten())
                            .collect(),
                    );
                    failing = false;
                    for kind in published {
                        metrics::counter!("rain_cluster_published_total", "kind" => kind)
                            .increment(1);
                    }
                }
                Err(error) => {
                    intact = false;
                    loaded.clear();
                    node.writer.dropped(pipe.cmd_iter().count() as u64);
                    if !failing {
                        tracing::warn!(
                            error = &error as &dyn std::error::Error,
                            "Redis write failed; dropping writes until it is back"
                        );
                    }
                    failing = true;
                    node.heartbeat.write_lost();
                }
            }
        }
        for (at, pick) in picks.into_iter().enumerate() {
            let host = match &hosts {
                Some(hosts) => Ok(hosts.get(at).cloned().flatten()),
                None => Err(ClusterError::Lost),
            };
            let _ = pick.send(host);
        }
        for done in barriers {
            let _ = done.send(intact);
        }
    }
}
