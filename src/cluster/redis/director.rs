//! The director: frames and operations for one socket that is not on this
//! node, delivered in order to the node that holds it.
//!
//! Owns its queue ([`Director`]; bounded, a full queue drops and counts), the
//! cache of socket owners (a miss asks Redis, `HGET conn:{sid} node`; the inbox
//! forgets a socket that was not where it was cached, and every socket of a
//! dead node) and the task ([`run`]) that finds each socket's owner and
//! publishes on that node's channel. Does not own the socket records (see
//! `super::sockets`).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use redis::AsyncCommands;
use tokio::sync::mpsc;

use super::RedisNode;
use super::writer::WRITE_QUEUE;
use crate::cluster::wire::{Message, WireFrame};
use crate::cluster::{RemoteOp, Target};
use crate::protocol::engineio::Frame;

/// Socket owners remembered; the cache is cleared when full.
const OWNER_CACHE: usize = 64 * 1024;

/// Work for the director: something for one socket, wherever it is.
pub(super) enum Directed {
    Frames {
        namespace: String,
        sid: String,
        frames: Vec<WireFrame>,
    },
    Operation {
        namespace: String,
        sid: String,
        op: RemoteOp,
    },
}

/// The director's queue and its cache of socket owners.
pub(super) struct Director {
    queue: mpsc::Sender<Directed>,
    /// sid → the node holding it.
    owners: Mutex<HashMap<String, String>>,
}

impl Director {
    /// The director, and its queue's receiving end for [`run`].
    pub(super) fn new() -> (Director, mpsc::Receiver<Directed>) {
        let (queue, receiver) = mpsc::channel(WRITE_QUEUE);
        let director = Director {
            queue,
            owners: Mutex::new(HashMap::new()),
        };
        (director, receiver)
    }

    fn queue(&self, work: Directed) {
        if self.queue.try_send(work).is_err() {
            metrics::counter!("rain_cluster_dropped_total").increment(1);
        }
    }

    /// Queues frames for a socket on another node.
    pub(super) fn frames(&self, namespace: &str, sid: &str, frames: &[Frame]) {
        self.queue(Directed::Frames {
            namespace: namespace.to_string(),
            sid: sid.to_string(),
            frames: frames.iter().map(WireFrame::from).collect(),
        });
    }

    /// Queues an operation for a socket, wherever it is.
    pub(super) fn operation(&self, namespace: &str, sid: String, op: RemoteOp) {
        self.queue(Directed::Operation {
            namespace: namespace.to_string(),
            sid,
            op,
        });
    }

    fn cached(&self, sid: &str) -> Option<String> {
        self.owners.lock().get(sid).cloned()
    }

    fn remember(&self, sid: &str, owner: &str) {
        let mut owners = self.owners.lock();
        if owners.len() >= OWNER_CACHE {
            owners.clear();
        }
        owners.insert(sid.to_string(), owner.to_string());
    }

    /// A socket was not where it was cached: it left, or moved.
    pub(super) fn forget(&self, sid: &str) {
        self.owners.lock().remove(sid);
    }

    /// Forgets every owner (a reset of the node): each is asked again.
    pub(super) fn forget_all(&self) {
        self.owners.lock().clear();
    }

    /// A node died: none of its sockets is there any more.
    pub(super) fn forget_node(&self, node: &str) {
        self.owners.lock().retain(|_, owner| *owner != node);
    }
}

/// Which node holds a socket (cached; a miss asks Redis).
async fn owner(node: &RedisNode, sid: &str) -> Option<String> {
    if let Some(owner) = node.director.cached(sid) {
        return Some(owner);
    }
    let owner: Option<String> = node
        .commands
        .run(async |connection| connection.hget(node.keys.conn(sid), "node").await)
        .await
        .ok()?;
    let owner = owner?;
    node.director.remember(sid, &owner);
    Some(owner)
}

/// Sends frames and operations to the node holding each socket, in order.
pub(super) async fn run(node: Arc<RedisNode>, mut queue: mpsc::Receiver<Directed>) {
    while let Some(work) = queue.recv().await {
        let (namespace, sid) = match &work {
            Directed::Frames { namespace, sid, .. }
            | Directed::Operation { namespace, sid, .. } => (namespace.clone(), sid.clone()),
        };
        let Some(owner) = owner(&node, &sid).await else {
            tracing::debug!(sid, "no such socket in the cluster");
            continue;
        };
        if owner == node.id && matches!(work, Directed::Frames { .. }) {
            // Recorded as ours but not here any more: it has just left.
            continue;
        }
        let message = match work {
            Directed::Frames { frames, .. } => Message::ToSocket {
                namespace,
                sid,
                frames,
            },
            // Sent as this node: if the socket turned out to be here, the caller
            // has applied the operation already and the echo is ignored.
            Directed::Operation { op, .. } => Message::Remote {
                origin: node.id.clone(),
                namespace,
                target: Target::Socket(sid),
                op,
            },
        };
        node.writer
            .publish(node.keys.node_channel(&owner), &message, "node");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_cache_forgets_a_socket_and_a_dead_node_s_sockets() {
        let (director, _queue) = Director::new();
        director.remember("s1", "n1");
        director.remember("s2", "n1");
        director.remember("s3", "n2");
        assert_eq!(director.cached("s1").as_deref(), Some("n1"));

        director.forget("s1");
        assert_eq!(director.cached("s1"), None);

        director.forget_node("n1");
        assert_eq!(director.cached("s2"), None);
        assert_eq!(director.cached("s3").as_deref(), Some("n2"));
    }

    #[test]
    fn a_full_owner_cache_starts_over() {
        let (director, _queue) = Director::new();
        for i in 0..OWNER_CACHE {
            director.remember(&format!("s{i}"), "n1");
        }
        director.remember("new", "n2");
        assert_eq!(director.owners.lock().len(), 1);
        assert_eq!(director.cached("new").as_deref(), Some("n2"));
    }

    #[test]
    fn a_full_queue_drops_rather_than_waits() {
        let (director, mut queue) = Director::new();
        for _ in 0..WRITE_QUEUE + 1 {
            director.operation("/", "s1".into(), RemoteOp::Disconnect);
        }
        let mut queued = 0;
        while queue.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, WRITE_QUEUE);
    }
}
