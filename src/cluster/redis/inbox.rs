//! The inbox: what a message from another node does on this one.
//!
//! Owns [`receive`], called by the subscriber for every pub/sub message: it
//! counts it by channel kind, decodes it (counting and dropping one this node
//! cannot read), skips this node's own echoes, and hands it on: frames and
//! operations to the [`LocalNode`](crate::cluster::LocalNode), ack broadcasts
//! and answers to `super::acks`, a node's death to the director's owner cache
//! and the heartbeat, upper layers' messages to the handler of their topic.
//! Does not own the connection (see `super::subscriber`) nor local delivery.

use std::sync::Arc;
use std::time::Duration;

use super::{RedisNode, acks};
use crate::cluster::AckBroadcast;
use crate::cluster::keys::Keys;
use crate::cluster::wire::{Message, WireFrame, WirePayload};
use crate::protocol::engineio::Frame;

/// A message from another node.
pub(super) fn receive(node: &Arc<RedisNode>, channel: &str, payload: &[u8]) {
    metrics::counter!("rain_cluster_received_total", "kind" => channel_kind(&node.keys, channel))
        .increment(1);
    let message = match Message::decode(payload) {
        Ok(message) => message,
        Err(error) => {
            metrics::counter!("rain_cluster_undecodable_total").increment(1);
            tracing::warn!(channel, %error, "dropping a cluster message this node cannot read");
            return;
        }
    };
    let Some(local) = node.local() else { return };
    match message {
        Message::Broadcast {
            origin,
            targets,
            rooms,
            except,
        } => {
            if origin == node.id {
                return;
            }
            for (namespace, frames) in targets {
                let frames = into_frames(frames);
                let delivered = local.deliver(&namespace, &rooms, &except, &frames);
                metrics::counter!("rain_cluster_delivered_total").increment(delivered as u64);
            }
        }
        Message::AckBroadcast {
            origin,
            request,
            namespace,
            rooms,
            except,
            event,
            payload,
            timeout_ms,
        } => {
            if origin == node.id {
                return;
            }
            let Some(payload) = payload.into_payload() else {
                return;
            };
            let broadcast = AckBroadcast {
                namespace,
                rooms,
                except,
                event,
                payload,
                timeout: Duration::from_millis(timeout_ms),
            };
            acks::answer(node, local.as_ref(), origin, request, &broadcast);
        }
        Message::AckAnswers { request, answers } => {
            let answers = answers
                .into_iter()
                .filter_map(WirePayload::into_payload)
                .collect();
            node.acks.collect(request, answers);
        }
        Message::ToSocket {
            namespace,
            sid,
            frames,
        } => {
            let frames = into_frames(frames);
            if !local.deliver_to_socket(&namespace, &sid, &frames) {
                // It left, or moved: forget where it was.
                node.director.forget(&sid);
            }
        }
        Message::Remote {
            origin,
            namespace,
            target,
            op,
        } => {
            if origin != node.id {
                local.apply(&namespace, &target, &op);
            }
        }
        Message::NodeDown { node: down } => {
            tracing::info!(node = down, "node down");
            node.director.forget_node(&down);
            node.heartbeat.wake();
        }
        Message::ServicesChanged { node: changed } => {
            tracing::debug!(node = changed, "services changed");
            node.heartbeat.wake();
        }
        Message::Topic { topic, body } => {
            let handler = node.topics.read().get(&topic).cloned();
            match handler {
                Some(handler) => handler.on_message(body),
                None => tracing::debug!(topic, "a message of a topic this node does not serve"),
            }
        }
    }
}

/// Frames back from the wire; a text frame that is not UTF-8 is left out.
fn into_frames(frames: Vec<WireFrame>) -> Vec<Frame> {
    frames
        .into_iter()
        .filter_map(WireFrame::into_frame)
        .collect()
}

/// The kind of a channel, for the `rain_cluster_received_total` label.
fn channel_kind(keys: &Keys, channel: &str) -> &'static str {
    let rest = channel.strip_prefix(keys.prefix()).unwrap_or(channel);
    if rest.starts_with("room:") {
        "room"
    } else if rest.starts_with("ns:") {
        "namespace"
    } else if rest == "control" {
        "control"
    } else {
        "node"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_channel_the_node_hears_has_its_kind() {
        let keys = Keys::new("rain:");
        let kind = |channel: String| channel_kind(&keys, &channel);
        assert_eq!(kind(keys.room_channel("/chat", "lobby")), "room");
        assert_eq!(kind(keys.namespace_channel("/chat")), "namespace");
        assert_eq!(kind(keys.control_channel()), "control");
        assert_eq!(kind(keys.node_channel("node-1")), "node");
    }

    #[test]
    fn a_room_or_node_named_like_a_kind_keeps_its_kind() {
        let keys = Keys::new("rain:");
        let kind = |channel: String| channel_kind(&keys, &channel);
        assert_eq!(kind(keys.node_channel("control")), "node");
        assert_eq!(kind(keys.node_channel("room:x")), "node");
        assert_eq!(kind(keys.room_channel("/", "control")), "room");
    }

    #[test]
    fn an_empty_prefix_works_the_same() {
        let keys = Keys::new("");
        assert_eq!(channel_kind(&keys, "room:/:a"), "room");
        assert_eq!(channel_kind(&keys, "ns:/"), "namespace");
        assert_eq!(channel_kind(&keys, "control"), "control");
        assert_eq!(channel_kind(&keys, "node:n1"), "node");
    }
}
