//! A namespace: its handler, its local sockets and its local room index.
//!
//! Owns which sockets of this node are in the namespace and in which rooms, and
//! the handler trait applications implement. Keeps the cluster told of sockets
//! and rooms so other nodes can route to them. Does not own the wire (see
//! `crate::client`) or broadcasts' encoding (see `crate::broadcast`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;
use serde_json::Value;

use crate::cluster::{Cluster, ClusterError, RemoteOp, SocketRecord, Target};
use crate::protocol::engineio::Frame;
use crate::protocol::payload::event_frames;
use crate::socket::{DisconnectReason, Event, Payload, Socket};

/// What an application does in a namespace. Handlers run on the connection's own
/// task, in packet order; anything slow belongs in a spawned task.
pub trait NamespaceHandler: Send + Sync + 'static {
    /// Decides on a CONNECT before the client is told it is connected; an `Err`
    /// becomes a CONNECT_ERROR with that message.
    fn authorize(&self, _socket: &Arc<Socket>, _auth: &Value) -> Result<(), String> {
        Ok(())
    }

    /// The socket is connected and the client knows it.
    fn on_connect(&self, _socket: &Arc<Socket>) {}

    /// The client emitted an event.
    fn on_event(&self, socket: &Arc<Socket>, event: Event);

    /// The socket left the namespace.
    fn on_disconnect(&self, _socket: &Arc<Socket>, _reason: DisconnectReason) {}
}

/// One namespace on this node.
pub struct Namespace {
    name: Box<str>,
    handler: Arc<dyn NamespaceHandler>,
    cluster: Arc<dyn Cluster>,
    sockets: RwLock<HashMap<Arc<str>, Arc<Socket>>>,
    rooms: RwLock<HashMap<Arc<str>, HashSet<Arc<str>>>>,
    /// Most rooms a socket may be in (`ROOMS_PER_SOCKET`).
    max_rooms: usize,
    /// Taken out of the node's registry while empty: no socket joins it any
    /// more (a connect that raced with that resolves the name again).
    retired: AtomicBool,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Namespace {
    pub(crate) fn new(
        name: &str,
        handler: Arc<dyn NamespaceHandler>,
        cluster: Arc<dyn Cluster>,
        max_rooms: usize,
    ) -> Self {
        Namespace {
            name: name.into(),
            handler,
            cluster,
            sockets: RwLock::new(HashMap::new()),
            rooms: RwLock::new(HashMap::new()),
            max_rooms: max_rooms.max(1),
            retired: AtomicBool::new(false),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn handler(&self) -> &Arc<dyn NamespaceHandler> {
        &self.handler
    }

    /// Most rooms one socket of this namespace may be in.
    pub fn max_rooms(&self) -> usize {
        self.max_rooms
    }

    pub fn cluster(&self) -> &Arc<dyn Cluster> {
        &self.cluster
    }

    /// A socket of this node, by id.
    pub fn socket(&self, sid: &str) -> Option<Arc<Socket>> {
        self.sockets.read().get(sid).cloned()
    }

    /// How many sockets this node has in the namespace.
    pub fn local_socket_count(&self) -> usize {
        self.sockets.read().len()
    }

    /// Adds a socket; false when the namespace was retired meanwhile.
    /// The namespace's sockets on this node.
    pub fn local_sockets(&self) -> Vec<Arc<Socket>> {
        self.local_targets(&[], &[])
    }

    pub(crate) fn add_socket(&self, socket: Arc<Socket>) -> bool {
        {
            let mut sockets = self.sockets.write();
            if self.retired.load(Ordering::Acquire) {
                return false;
            }
            sockets.insert(socket.id_arc().clone(), socket.clone());
        }
        self.cluster.session_touch(socket.session_id());
        self.cluster.socket_connected(SocketRecord {
            namespace: self.name.to_string(),
            sid: socket.id().to_string(),
            node_id: self.cluster.node_id().to_string(),
            session_id: socket.session_id().to_string(),
            rooms: Vec::new(),
            connected_at: socket.connected_at(),
        });
        true
    }

    /// Retires the namespace if it has no socket (checked and marked under the
    /// same lock [`Self::add_socket`] takes, so no socket can slip in).
    pub(crate) fn retire_if_empty(&self) -> bool {
        let sockets = self.sockets.write();
        if sockets.is_empty() {
            self.retired.store(true, Ordering::Release);
        }
        sockets.is_empty()
    }

    /// Removes a socket and runs the disconnect handler; false if it was already gone.
    pub(crate) fn remove_socket(&self, socket: &Arc<Socket>, reason: DisconnectReason) -> bool {
        if self.sockets.write().remove(socket.id()).is_none() {
            return false;
        }
        for room in socket.mark_disconnected() {
            self.remove_from_room(&room, socket.id_arc(), &[]);
        }
        self.cluster.socket_disconnected(&self.name, socket.id());
        self.handler.on_disconnect(socket, reason);
        true
    }

    /// `rooms_now` are all the socket's rooms after the change, for the cluster's
    /// record.
    pub(crate) fn add_to_room(&self, room: &Arc<str>, sid: &Arc<str>, rooms_now: &[String]) {
        self.rooms
            .write()
            .entry(room.clone())
            .or_default()
            .insert(sid.clone());
        self.cluster.room_joined(&self.name, room, sid, rooms_now);
    }

    pub(crate) fn remove_from_room(&self, room: &Arc<str>, sid: &Arc<str>, rooms_now: &[String]) {
        let mut rooms = self.rooms.write();
        if let Some(members) = rooms.get_mut(room) {
            members.remove(sid);
            if members.is_empty() {
                rooms.remove(room);
            }
        }
        drop(rooms);
        self.cluster.room_left(&self.name, room, sid, rooms_now);
    }

    /// Writes already-encoded frames to every local socket in `rooms` (all sockets
    /// when empty), skipping those in `except`. A socket's own id works as a room.
    pub(crate) fn deliver_local(
        &self,
        rooms: &[String],
        except: &[String],
        frames: &[Frame],
    ) -> usize {
        let targets = self.local_targets(rooms, except);
        let mut delivered = 0;
        for socket in targets {
            if socket
                .engine_session()
                .send_frames(frames.iter().cloned())
                .is_ok()
            {
                delivered += 1;
            }
        }
        delivered
    }

    /// Emits to one socket of this namespace, on whichever node it is.
    pub fn emit_to(&self, sid: &str, event: &str, payload: Payload) {
        emit_to_socket(Some(self), &*self.cluster, &self.name, sid, event, payload);
    }

    /// Makes one socket, or every member of a room, join or leave a room or
    /// disconnect, on whichever nodes they are.
    pub fn apply_everywhere(&self, target: Target, op: RemoteOp) {
        self.apply_local(&target, &op);
        self.cluster.remote(&self.name, target, op);
    }

    pub(crate) fn apply_local(&self, target: &Target, op: &RemoteOp) {
        let sockets = match target {
            Target::Socket(sid) => self.socket(sid).into_iter().collect(),
            Target::Room(room) => self.local_targets(std::slice::from_ref(room), &[]),
        };
        for socket in sockets {
            match op {
                RemoteOp::Join(room) => {
                    socket.join(room);
                }
                RemoteOp::Leave(room) => socket.leave(room),
                RemoteOp::Disconnect => socket.disconnect(),
            }
        }
    }

    /// Every socket of this namespace on every node (in `room`, if given), from
    /// the cluster's shared state.
    pub async fn fetch_sockets(
        &self,
        room: Option<&str>,
    ) -> Result<Vec<SocketRecord>, ClusterError> {
        self.cluster.fetch_sockets(&self.name, room).await
    }

    /// Every local socket, with its rooms, as the cluster records it.
    pub(crate) fn local_records(&self) -> Vec<SocketRecord> {
        self.sockets
            .read()
            .values()
            .map(|socket| SocketRecord {
                namespace: self.name.to_string(),
                sid: socket.id().to_string(),
                node_id: self.cluster.node_id().to_string(),
                session_id: socket.session_id().to_string(),
                rooms: socket.rooms(),
                connected_at: socket.connected_at(),
            })
            .collect()
    }

    pub(crate) fn local_targets(&self, rooms: &[String], except: &[String]) -> Vec<Arc<Socket>> {
        let sockets = self.sockets.read();
        let room_index = self.rooms.read();
        let excluded: HashSet<&str> = except
            .iter()
            .flat_map(|name| {
                let members = room_index
                    .get(name.as_str())
                    .into_iter()
                    .flatten()
                    .map(|sid| &**sid);
                members.chain(sockets.contains_key(name.as_str()).then_some(name.as_str()))
            })
            .collect();
        let keep = |sid: &str| !excluded.contains(sid);
        if rooms.is_empty() {
            return sockets
                .iter()
                .filter(|(sid, _)| keep(sid))
                .map(|(_, socket)| socket.clone())
                .collect();
        }
        let mut seen: HashSet<&str> = HashSet::new();
        let mut targets = Vec::new();
        for name in rooms {
            let members = room_index
                .get(name.as_str())
                .into_iter()
                .flatten()
                .map(|sid| &**sid);
            let direct = sockets.contains_key(name.as_str()).then_some(name.as_str());
            for sid in members.chain(direct) {
                if keep(sid)
                    && (rooms.len() == 1 || seen.insert(sid))
                    && let Some(socket) = sockets.get(sid)
                {
                    targets.push(socket.clone());
                }
            }
        }
        targets
    }
}

/// Emits to one socket of `namespace`, on whichever node it is: written
/// directly when it is in `local`, else handed to the cluster. The one path for
/// an emit to a socket id, whether or not this node serves the namespace.
pub(crate) fn emit_to_socket(
    local: Option<&Namespace>,
    cluster: &dyn Cluster,
    namespace: &str,
    sid: &str,
    event: &str,
    payload: Payload,
) {
    let frames = event_frames(namespace, event, payload, None);
    match local.and_then(|local| local.socket(sid)) {
        Some(socket) => {
            let _ = socket.engine_session().send_frames(frames);
        }
        None => cluster.emit_to_socket(namespace, sid, frames),
    }
}
