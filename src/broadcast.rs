//! Broadcasts: an audience (rooms, exceptions) in one namespace, and an emit that
//! encodes the packet once for every receiver on every node.
//!
//! Owns the audience builder and the encode-once rule (DESIGN.md §7): the frames
//! are built a single time and shared by reference count between local sockets and
//! the cluster message. Does not own room indexes (see `crate::namespace`).

use std::sync::Arc;

use crate::cluster::BroadcastMessage;
use crate::namespace::Namespace;
use crate::socket::{Payload, event_packet, frames};

/// A broadcast being addressed; nothing is sent until [`Broadcast::emit`].
#[derive(Debug, Clone)]
pub struct Broadcast {
    namespace: Arc<Namespace>,
    rooms: Vec<String>,
    except: Vec<String>,
}

impl Broadcast {
    /// Every socket of the namespace, on every node.
    pub fn new(namespace: Arc<Namespace>) -> Self {
        Broadcast {
            namespace,
            rooms: Vec::new(),
            except: Vec::new(),
        }
    }

    /// Narrows the audience to a room (rooms add up). A socket id is a room too.
    pub fn to(mut self, room: &str) -> Self {
        self.rooms.push(room.to_string());
        self
    }

    /// Leaves out a room's members (or one socket, by id).
    pub fn except(mut self, room: &str) -> Self {
        self.except.push(room.to_string());
        self
    }

    /// Sends an event to the audience; returns how many local sockets got it.
    pub fn emit(self, event: &str, payload: Payload) -> usize {
        let packet = event_packet(
            self.namespace.name(),
            event,
            payload.args,
            None,
            payload.attachments.len(),
        );
        let frames = frames(&packet, payload.attachments);
        let delivered = self
            .namespace
            .deliver_local(&self.rooms, &self.except, &frames);
        self.namespace
            .cluster()
            .publish_broadcast(BroadcastMessage {
                namespace: self.namespace.name().to_string(),
                rooms: self.rooms,
                except: self.except,
                frames,
            });
        delivered
    }
}
