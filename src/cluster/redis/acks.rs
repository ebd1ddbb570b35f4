//! Broadcasts with acks, both sides: the origin's and a receiver's.
//!
//! Owns the origin's open requests ([`Acks`]: one collector per request, fed
//! by the inbox as answers come), [`publish`] (asks Redis how many nodes hear
//! each channel, publishes one copy per channel, and collects one answer per
//! other node until the timeout and a grace) and [`answer`] (a receiver
//! delivers to its local sockets and sends their answers back in one message).
//! Does not own which channels a broadcast travels on (see
//! `super::broker::broadcast_channels`) nor local delivery.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::RedisNode;
use super::broker::broadcast_channels;
use crate::cluster::wire::{Message, WirePayload};
use crate::cluster::{AckBroadcast, LocalNode};
use crate::protocol::payload::Payload;

/// How much longer the origin of an ack broadcast waits for other nodes than
/// they wait for their clients.
const ACK_GRACE: Duration = Duration::from_millis(250);

/// This node's ack broadcasts still collecting answers, by request id.
#[derive(Default)]
pub(super) struct Acks {
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<Vec<Payload>>>>,
}

impl Acks {
    /// Opens a request: its answers come out of the receiver.
    fn open(&self, request: u64) -> mpsc::UnboundedReceiver<Vec<Payload>> {
        let (collector, answers) = mpsc::unbounded_channel();
        self.pending.lock().insert(request, collector);
        answers
    }

    fn close(&self, request: u64) {
        self.pending.lock().remove(&request);
    }

    /// One node's answers to a request of this node (ignored once it closed).
    pub(super) fn collect(&self, request: u64, answers: Vec<Payload>) {
        if let Some(collector) = self.pending.lock().get(&request) {
            let _ = collector.send(answers);
        }
    }
}

/// Carries a broadcast with acks to the other nodes and collects their
/// receivers' answers until the broadcast's timeout (and a grace).
pub(super) async fn publish(node: Arc<RedisNode>, broadcast: AckBroadcast) -> Vec<Payload> {
    let request: u64 = rand::random();
    let channels = broadcast_channels(
        &node.keys,
        &broadcast.namespace,
        &broadcast.rooms,
        &broadcast.except,
    );
    let mut answers = node.acks.open(request);
    let deadline = tokio::time::Instant::now() + broadcast.timeout + ACK_GRACE;
    let sent = node
        .commands
        .run(async |connection| {
            let names: Vec<&String> = channels.iter().map(|(channel, _, _)| channel).collect();
            let counts: Vec<(String, usize)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&names)
                .query_async(connection)
                .await?;
            // Every subscriber answers once per copy; this node does not.
            let expected: usize = counts
                .iter()
                .map(|(channel, count)| {
                    count.saturating_sub(usize::from(node.subscriptions.wants(channel)))
                })
                .sum();
            let payload = WirePayload::from(&broadcast.payload);
            let mut pipe = redis::pipe();
            for (channel, rooms, except) in &channels {
                let wire = Message::AckBroadcast {
                    origin: node.id.clone(),
                    request,
                    namespace: broadcast.namespace.clone(),
                    rooms: rooms.clone(),
                    except: except.clone(),
                    event: broadcast.event.clone(),
                    payload: payload.clone(),
                    timeout_ms: broadcast.timeout.as_millis() as u64,
                };
                pipe.publish(channel, wire.encode()).ignore();
            }
            pipe.query_async::<()>(connection).await?;
            Ok(expected)
        })
        .await;
    let mut collected = Vec::new();
    if let Ok(expected) = sent {
        let mut nodes_answered = 0;
        while nodes_answered < expected {
            match tokio::time::timeout_at(deadline, answers.recv()).await {
                Ok(Some(mut batch)) => {
                    collected.append(&mut batch);
                    nodes_answered += 1;
                }
                _ => break,
            }
        }
    }
    node.acks.close(request);
    collected
}

/// A receiver's side: delivers an ack broadcast of `origin` to the local
/// sockets, then sends their answers back to `origin` in one message.
pub(super) fn answer(
    node: &Arc<RedisNode>,
    local: &dyn LocalNode,
    origin: String,
    request: u64,
    broadcast: &AckBroadcast,
) {
    let (_, answers) = local.deliver_with_ack(broadcast);
    let node = node.clone();
    tokio::spawn(async move {
        let answers = answers.await;
        let message = Message::AckAnswers {
            request,
            answers: answers.iter().map(WirePayload::from).collect(),
        };
        node.writer
            .publish(node.keys.node_channel(&origin), &message, "node");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_reach_an_open_request_only() {
        let acks = Acks::default();
        let mut answers = acks.open(7);
        acks.collect(7, vec![Payload::default()]);
        acks.collect(8, vec![Payload::default()]);
        assert_eq!(answers.try_recv().unwrap().len(), 1);
        assert!(answers.try_recv().is_err());

        acks.close(7);
        acks.collect(7, vec![Payload::default()]);
        assert!(acks.pending.lock().is_empty());
    }
}
