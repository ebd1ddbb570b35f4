//! Broadcasts: an audience (rooms, exceptions) in one namespace, and an emit that
//! encodes the packet once for every receiver on every node.
//!
//! Owns the audience builder and the encode-once rule: the frames
//! are built a single time and shared by reference count between local sockets and
//! the cluster message. Does not own room indexes (see `crate::namespace`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::cluster::{AckBroadcast, BroadcastMessage, Cluster};
use crate::namespace::Namespace;
use crate::protocol::payload::event_frames;
use crate::socket::Payload;

/// A broadcast being addressed; nothing is sent until [`Broadcast::emit`].
#[derive(Clone)]
pub struct Broadcast {
    name: String,
    /// This node's sockets of the namespace, when it serves it.
    local: Option<Arc<Namespace>>,
    /// More namespaces of the same channel group, with this node's sockets of
    /// each: the broadcast reaches them too, and travels once for all.
    also: Vec<(String, Option<Arc<Namespace>>)>,
    cluster: Arc<dyn Cluster>,
    rooms: Vec<String>,
    except: Vec<String>,
}

impl std::fmt::Debug for Broadcast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broadcast")
            .field("namespace", &self.name)
            .field("rooms", &self.rooms)
            .field("except", &self.except)
            .finish_non_exhaustive()
    }
}

impl Broadcast {
    /// Every socket of the namespace, on every node.
    pub fn new(namespace: Arc<Namespace>) -> Self {
        let (name, cluster) = (namespace.name().to_string(), namespace.cluster().clone());
        Broadcast::named(&name, Some(namespace), cluster)
    }

    /// Every socket of the namespace `name`, on every node, whether or not this
    /// node serves it (`local`).
    pub(crate) fn named(
        name: &str,
        local: Option<Arc<Namespace>>,
        cluster: Arc<dyn Cluster>,
    ) -> Self {
        Broadcast {
            name: name.to_string(),
            local,
            also: Vec::new(),
            cluster,
            rooms: Vec::new(),
            except: Vec::new(),
        }
    }

    /// The same audience in another namespace of the first one's channel group
    /// (see `crate::cluster::Broker::group_channels`); `local` is this node's
    /// namespace of that name, if it serves it.
    pub(crate) fn also(mut self, name: &str, local: Option<Arc<Namespace>>) -> Self {
        self.also.push((name.to_string(), local));
        self
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
    /// The packet is encoded once per namespace, whatever the number of
    /// receivers, and goes to the other nodes in one message.
    pub fn emit(self, event: &str, payload: Payload) -> usize {
        let mut delivered = 0;
        let mut targets = Vec::with_capacity(1 + self.also.len());
        let last = self.also.len();
        let mut payload = Some(payload);
        let namespaces = std::iter::once((self.name, self.local)).chain(self.also);
        for (at, (name, local)) in namespaces.enumerate() {
            // Moved into the last namespace's packet, cloned for the others.
            let payload = match at == last {
                true => payload.take().unwrap_or_default(),
                false => payload.clone().unwrap_or_default(),
            };
            let frames = event_frames(&name, event, payload, None);
            if let Some(local) = local {
                delivered += local.deliver_local(&self.rooms, &self.except, &frames);
            }
            targets.push((name, frames));
        }
        self.cluster.publish_broadcast(BroadcastMessage {
            targets,
            rooms: self.rooms,
            except: self.except,
        });
        delivered
    }

    /// Sends an event to the audience, each receiver asked for an ack, and
    /// resolves to the answers that came within `timeout` (from every node).
    pub async fn emit_with_ack(
        self,
        event: &str,
        payload: Payload,
        timeout: Duration,
    ) -> Vec<Payload> {
        let broadcast = AckBroadcast {
            namespace: self.name,
            rooms: self.rooms,
            except: self.except,
            event: event.to_string(),
            payload,
            timeout,
        };
        let local = match &self.local {
            Some(local) => ask_local(local, &broadcast).1,
            None => async { Vec::new() }.boxed(),
        };
        let remote = self.cluster.publish_broadcast_with_ack(broadcast);
        let (mut answers, mut remote_answers) = futures_util::future::join(local, remote).await;
        answers.append(&mut remote_answers);
        answers
    }
}

/// Emits with an ack to every local target of an ack broadcast; resolves to the
/// answers given within its timeout.
pub(crate) fn ask_local(
    namespace: &Arc<Namespace>,
    broadcast: &AckBroadcast,
) -> (usize, BoxFuture<'static, Vec<Payload>>) {
    let targets = namespace.local_targets(&broadcast.rooms, &broadcast.except);
    let count = targets.len();
    let event = broadcast.event.clone();
    let payload = broadcast.payload.clone();
    let timeout = broadcast.timeout;
    let answers = async move {
        let asks = targets
            .iter()
            .map(|socket| socket.emit_with_ack(&event, payload.clone(), timeout));
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect()
    };
    (count, answers.boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::memory::MemoryCluster;
    use crate::namespace::NamespaceHandler;
    use crate::protocol::engineio::Frame;
    use crate::session::{ConnectInfo, Session, TransportState};
    use crate::socket::{Event, Socket};
    use serde_json::json;

    struct Ignore;
    impl NamespaceHandler for Ignore {
        fn on_event(&self, _socket: &Arc<Socket>, _event: Event) {}
    }

    fn join(namespace: &Arc<Namespace>, id: &str, room: Option<&str>) -> Arc<Session> {
        let info = ConnectInfo::default();
        let session = Arc::new(Session::new(id.into(), info, TransportState::Websocket, 16));
        let socket = Arc::new(Socket::new(
            id.into(),
            namespace.clone(),
            session.clone(),
            json!({}),
            crate::session_token::SessionKeys::new(&[0; 32], None)
                .mint()
                .0,
        ));
        namespace.add_socket(socket.clone());
        if let Some(room) = room {
            socket.join(room);
        }
        session
    }

    fn queued(session: &Arc<Session>) -> Vec<Frame> {
        session
            .claim_writer()
            .unwrap()
            .take_batch()
            .into_iter()
            .collect()
    }

    #[test]
    fn a_broadcast_is_encoded_once_for_every_receiver() {
        let cluster = Arc::new(MemoryCluster::new("n".into()));
        let namespace = Arc::new(Namespace::new("/", Arc::new(Ignore), cluster, 16));
        let a = join(&namespace, "a", Some("r"));
        let b = join(&namespace, "b", Some("r"));
        let c = join(&namespace, "c", Some("r"));
        let outsider = join(&namespace, "d", None);

        let delivered = Broadcast::new(namespace.clone())
            .to("r")
            .except("c")
            .emit("news", Payload::new(vec![json!(1)]));
        assert_eq!(delivered, 2);
        let (from_a, from_b) = (queued(&a), queued(&b));
        assert!(queued(&c).is_empty() && queued(&outsider).is_empty());
        match (&from_a[..], &from_b[..]) {
            ([Frame::Text(x)], [Frame::Text(y)]) => {
                assert_eq!(&x[..], br#"42["news",1]"#);
                // The same buffer, not an equal copy.
                assert_eq!(x.as_ptr(), y.as_ptr());
            }
            other => panic!("unexpected frames {other:?}"),
        }
    }
}
