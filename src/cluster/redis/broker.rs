//! The [`Broker`] of the Redis backend: broadcasts, operations on rooms, and
//! upper layers' messages by topic, all queued to the writer.
//!
//! Owns which channels a broadcast travels on ([`broadcast_channels`]: one
//! PUBLISH per room, each copy excluding the rooms before it, or one on the
//! namespace channel) and the topic handlers' registration. Hands broadcasts
//! with acks to `super::acks` and what is for one socket to `super::director`.
//! Does not own what a received message does (see `super::inbox`).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::RedisCluster;
use super::acks;
use crate::cluster::keys::Keys;
use crate::cluster::wire::{Message, WireFrame};
use crate::cluster::{
    AckBroadcast, BroadcastMessage, Broker, ChannelGroups, MessageHandler, RemoteOp, Target,
};
use crate::protocol::engineio::Frame;
use crate::protocol::payload::Payload;

/// A copy of a broadcast: its channel, the rooms it is for (none: the whole
/// namespace) and who is skipped.
type ChannelCopy = (String, Vec<String>, Vec<String>);

/// The room channels a broadcast travels on, each with the rooms before it
/// excluded (so a member of two rooms gets it once), or the namespace channel.
pub(super) fn broadcast_channels(
    keys: &Keys,
    namespace: &str,
    rooms: &[String],
    except: &[String],
) -> Vec<ChannelCopy> {
    if rooms.is_empty() {
        return vec![(
            keys.namespace_channel(namespace),
            Vec::new(),
            except.to_vec(),
        )];
    }
    rooms
        .iter()
        .enumerate()
        .map(|(i, room)| {
            let mut skip = except.to_vec();
            skip.extend(rooms[..i].iter().cloned());
            (keys.room_channel(namespace, room), vec![room.clone()], skip)
        })
        .collect()
}

impl Broker for RedisCluster {
    fn publish_broadcast(&self, message: BroadcastMessage) {
        let node = &self.node;
        // Every target shares the first one's channels (one group).
        let Some((namespace, _)) = message.targets.first() else {
            return;
        };
        let targets: Vec<(String, Vec<WireFrame>)> = message
            .targets
            .iter()
            .map(|(namespace, frames)| {
                (
                    namespace.clone(),
                    frames.iter().map(WireFrame::from).collect(),
                )
            })
            .collect();
        for (channel, rooms, except) in
            broadcast_channels(&node.keys, namespace, &message.rooms, &message.except)
        {
            let kind = if rooms.is_empty() {
                "namespace"
            } else {
                "room"
            };
            let wire = Message::Broadcast {
                origin: node.id.clone(),
                targets: targets.clone(),
                rooms,
                except,
            };
            node.writer.publish(channel, &wire, kind);
        }
    }

    fn publish_broadcast_with_ack(
        &self,
        broadcast: AckBroadcast,
    ) -> BoxFuture<'static, Vec<Payload>> {
        acks::publish(self.node.clone(), broadcast).boxed()
    }

    fn emit_to_socket(&self, namespace: &str, sid: &str, frames: Vec<Frame>) {
        self.node.director.frames(namespace, sid, &frames);
    }

    fn remote(&self, namespace: &str, target: Target, op: RemoteOp) {
        let node = &self.node;
        match target {
            Target::Socket(sid) => node.director.operation(namespace, sid, op),
            Target::Room(room) => {
                let channel = node.keys.room_channel(namespace, &room);
                let wire = Message::Remote {
                    origin: node.id.clone(),
                    namespace: namespace.to_string(),
                    target: Target::Room(room),
                    op,
                };
                node.writer.publish(channel, &wire, "room");
            }
        }
    }

    fn group_channels(&self, groups: ChannelGroups) {
        self.node.keys.group_channels(groups);
    }

    fn on_topic(&self, topic: &'static str, handler: Arc<dyn MessageHandler>) {
        self.node.topics.write().insert(topic.to_string(), handler);
    }

    fn send(&self, to: &str, topic: &'static str, body: Bytes) {
        let node = &self.node;
        if to == node.id {
            // No need to go through Redis to reach this node.
            let handler = node.topics.read().get(topic).cloned();
            if let Some(handler) = handler {
                tokio::spawn(async move { handler.on_message(body) });
            }
            return;
        }
        let message = Message::Topic {
            topic: topic.to_string(),
            body,
        };
        node.writer
            .publish(node.keys.node_channel(to), &message, "node");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| item.to_string()).collect()
    }

    #[test]
    fn a_broadcast_to_a_namespace_travels_on_its_channel() {
        let keys = Keys::new("rain:");
        assert_eq!(
            broadcast_channels(&keys, "/chat", &[], &strings(&["sid1", "muted"])),
            [(
                "rain:ns:/chat".to_string(),
                Vec::new(),
                strings(&["sid1", "muted"])
            )]
        );
    }

    #[test]
    fn each_room_copy_skips_the_rooms_before_it() {
        let keys = Keys::new("rain:");
        let channels = broadcast_channels(&keys, "/", &strings(&["a", "b", "c"]), &strings(&["x"]));
        assert_eq!(
            channels,
            [
                (
                    "rain:room:/:a".to_string(),
                    strings(&["a"]),
                    strings(&["x"])
                ),
                (
                    "rain:room:/:b".to_string(),
                    strings(&["b"]),
                    strings(&["x", "a"])
                ),
                (
                    "rain:room:/:c".to_string(),
                    strings(&["c"]),
                    strings(&["x", "a", "b"])
                ),
            ]
        );
    }

    #[test]
    fn a_single_room_copy_skips_only_the_except_list() {
        let keys = Keys::new("");
        assert_eq!(
            broadcast_channels(&keys, "/", &strings(&["lobby"]), &[]),
            [("room:/:lobby".to_string(), strings(&["lobby"]), Vec::new())]
        );
    }
}
