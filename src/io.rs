//! The Socket.IO server: the namespace registry and the bridge from Engine.IO
//! sessions to Socket.IO clients.
//!
//! Owns which namespaces exist (fixed names, and dynamic ones created on first
//! connect when a pattern accepts the name), the per-connection connect timeout,
//! and the limits the Socket.IO layer enforces. Does not own transports or
//! sessions (see `crate::engine`).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::RwLock;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::auth::{ConnectAuth, HttpAuth};
use crate::broadcast::{Broadcast, ask_local};
use crate::client::Client;
use crate::cluster::{AckBroadcast, Cluster, LocalNode, RemoteOp, SocketRecord, Target};
use crate::config::Settings;
use crate::engine::{EngineHandler, SessionHandler};
use crate::namespace::{Namespace, NamespaceHandler, emit_to_socket};
use crate::protocol::engineio::Frame;
use crate::protocol::reassembly::Limits;
use crate::session::{CloseReason, Session};
use crate::session_token::SessionKeys;
use crate::socket::Payload;

type NamePattern = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// The Socket.IO server of one node. Cheap to clone.
#[derive(Clone)]
pub struct SocketIo {
    inner: Arc<IoInner>,
}

pub(crate) struct IoInner {
    /// Bounds on one incoming packet, for each client's reassembler.
    pub(crate) packet_limits: Limits,
    pub(crate) namespace_max_length: usize,
    pub(crate) namespaces_per_connection: usize,
    /// Events (and connects) per second per connection, and the burst.
    pub(crate) event_rate: u64,
    pub(crate) event_burst: usize,
    rooms_per_socket: usize,
    connect_timeout: Duration,
    cluster: Arc<dyn Cluster>,
    namespaces: RwLock<HashMap<String, Arc<Namespace>>>,
    patterns: RwLock<Vec<(NamePattern, Arc<dyn NamespaceHandler>)>>,
    /// Names registered with [`SocketIo::namespace`] (never dropped).
    fixed: RwLock<std::collections::HashSet<String>>,
    /// Asked on every namespace CONNECT, when installed (`AUTH_URL`, or
    /// [`SocketIo::set_connect_auth`]).
    connect_auth: RwLock<Option<Arc<dyn ConnectAuth>>>,
    /// What verifies a CONNECT's `auth.sessionId` and mints fresh sessions.
    pub(crate) session_keys: SessionKeys,
}

impl SocketIo {
    pub fn new(settings: &Settings, cluster: Arc<dyn Cluster>) -> Self {
        if settings.auth_url.is_some() && settings.backend_secret.is_none() {
            tracing::warn!(
                "AUTH_URL is set without BACKEND_SECRET: the auth backend cannot tell this node from anyone else"
            );
        }
        let inner = Arc::new(IoInner {
            packet_limits: Limits {
                max_attachments: settings.max_attachments,
                max_message: usize::try_from(settings.max_payload).unwrap_or(usize::MAX),
            },
            namespace_max_length: settings.namespace_max_length,
            namespaces_per_connection: settings.namespaces_per_connection,
            event_rate: settings.event_rate,
            event_burst: settings.event_burst,
            rooms_per_socket: settings.rooms_per_socket,
            connect_timeout: settings.connect_timeout(),
            cluster: cluster.clone(),
            namespaces: RwLock::new(HashMap::new()),
            patterns: RwLock::new(Vec::new()),
            fixed: RwLock::new(Default::default()),
            connect_auth: RwLock::new(
                HttpAuth::from_settings(settings)
                    .map(|hook| Arc::new(hook) as Arc<dyn ConnectAuth>),
            ),
            session_keys: SessionKeys::from_settings(settings),
        });
        let local: Weak<dyn LocalNode> = Arc::downgrade(&inner) as Weak<dyn LocalNode>;
        cluster.attach(local);
        SocketIo { inner }
    }

    /// Installs the hook asked on every namespace CONNECT (replacing
    /// `AUTH_URL`'s). Install it before `Server::bind`, which then keeps the
    /// handshake headers the hook is shown.
    pub fn set_connect_auth(&self, hook: impl ConnectAuth) {
        *self.inner.connect_auth.write() = Some(Arc::new(hook));
    }

    /// Whether a connect-auth hook is installed.
    pub fn has_connect_auth(&self) -> bool {
        self.inner.connect_auth.read().is_some()
    }

    /// Serves a namespace with a handler (replacing any earlier one).
    pub fn namespace(&self, name: &str, handler: impl NamespaceHandler) -> Arc<Namespace> {
        let namespace = Arc::new(Namespace::new(
            name,
            Arc::new(handler),
            self.inner.cluster.clone(),
            self.inner.rooms_per_socket,
        ));
        self.inner.fixed.write().insert(name.to_string());
        self.inner
            .namespaces
            .write()
            .insert(name.to_string(), namespace.clone());
        namespace
    }

    /// Serves every namespace whose name `pattern` accepts, created on first connect.
    pub fn dynamic_namespace(
        &self,
        pattern: impl Fn(&str) -> bool + Send + Sync + 'static,
        handler: impl NamespaceHandler,
    ) {
        self.inner
            .patterns
            .write()
            .push((Box::new(pattern), Arc::new(handler)));
    }

    /// A namespace that exists on this node.
    pub fn of(&self, name: &str) -> Option<Arc<Namespace>> {
        self.inner.namespaces.read().get(name).cloned()
    }

    /// Every namespace that exists on this node now.
    pub fn namespaces(&self) -> Vec<Arc<Namespace>> {
        self.inner.namespaces.read().values().cloned().collect()
    }

    /// A broadcast to a whole namespace (on every node).
    pub fn broadcast(&self, namespace: &str) -> Option<Broadcast> {
        self.of(namespace).map(Broadcast::new)
    }

    pub fn cluster(&self) -> &Arc<dyn Cluster> {
        &self.inner.cluster
    }

    /// Emits to one socket of a namespace, on whichever node it is.
    pub fn emit_to(&self, namespace: &str, sid: &str, event: &str, payload: Payload) {
        let local = self.of(namespace);
        emit_to_socket(
            local.as_deref(),
            &*self.inner.cluster,
            namespace,
            sid,
            event,
            payload,
        );
    }

    /// Broadcasts to rooms of a namespace (all of it when `rooms` is empty) on
    /// every node, whether or not this node serves that namespace.
    pub fn broadcast_to(
        &self,
        namespace: &str,
        rooms: &[String],
        except: &[String],
        event: &str,
        payload: Payload,
    ) {
        self.broadcast_to_group(&[namespace.to_string()], rooms, except, event, payload);
    }

    /// [`Self::broadcast_to`] for several namespaces of one channel group (see
    /// `crate::cluster::Broker::group_channels`): each gets the event, and it
    /// travels to the other nodes once for all of them.
    pub fn broadcast_to_group(
        &self,
        namespaces: &[String],
        rooms: &[String],
        except: &[String],
        event: &str,
        payload: Payload,
    ) {
        let Some((first, others)) = namespaces.split_first() else {
            return;
        };
        let mut broadcast = Broadcast::named(first, self.of(first), self.inner.cluster.clone());
        for namespace in others {
            broadcast = broadcast.also(namespace, self.of(namespace));
        }
        for room in rooms {
            broadcast = broadcast.to(room);
        }
        for room in except {
            broadcast = broadcast.except(room);
        }
        broadcast.emit(event, payload);
    }

    /// Sockets on this node, over every namespace.
    pub fn local_socket_count(&self) -> usize {
        self.inner.socket_count()
    }

    /// Sockets on this node by namespace (namespaces with none left out).
    pub fn local_sockets_by_namespace(&self) -> Vec<(String, usize)> {
        self.inner
            .namespaces
            .read()
            .iter()
            .map(|(name, namespace)| (name.clone(), namespace.local_socket_count()))
            .filter(|(_, count)| *count > 0)
            .collect()
    }

    pub(crate) fn engine_handler(&self) -> Arc<dyn EngineHandler> {
        Arc::new(ClientFactory(self.inner.clone()))
    }
}

/// Where the cluster delivers what other nodes send to this one.
impl LocalNode for IoInner {
    fn deliver(
        &self,
        namespace: &str,
        rooms: &[String],
        except: &[String],
        frames: &[Frame],
    ) -> usize {
        match self.existing(namespace) {
            Some(namespace) => namespace.deliver_local(rooms, except, frames),
            None => 0,
        }
    }

    fn deliver_to_socket(&self, namespace: &str, sid: &str, frames: &[Frame]) -> bool {
        self.existing(namespace)
            .and_then(|namespace| namespace.socket(sid))
            .is_some_and(|socket| {
                socket
                    .engine_session()
                    .send_frames(frames.iter().cloned())
                    .is_ok()
            })
    }

    fn deliver_with_ack(
        &self,
        broadcast: &AckBroadcast,
    ) -> (usize, BoxFuture<'static, Vec<Payload>>) {
        match self.existing(&broadcast.namespace) {
            Some(namespace) => ask_local(&namespace, broadcast),
            None => (0, async { Vec::new() }.boxed()),
        }
    }

    fn apply(&self, namespace: &str, target: &Target, op: &RemoteOp) {
        if let Some(namespace) = self.existing(namespace) {
            namespace.apply_local(target, op);
        }
    }

    fn socket_count(&self) -> usize {
        self.namespaces
            .read()
            .values()
            .map(|namespace| namespace.local_socket_count())
            .sum()
    }

    fn snapshot(&self) -> Vec<SocketRecord> {
        let namespaces: Vec<Arc<Namespace>> = self.namespaces.read().values().cloned().collect();
        namespaces
            .iter()
            .flat_map(|namespace| namespace.local_records())
            .collect()
    }
}

impl IoInner {
    /// The connect-auth hook, when one is installed.
    pub(crate) fn connect_auth(&self) -> Option<Arc<dyn ConnectAuth>> {
        self.connect_auth.read().clone()
    }

    /// Drops a namespace created from a pattern once nobody uses it (a
    /// refused connect, or its last socket left), so names clients made up, or
    /// stopped using, leave nothing behind.
    pub(crate) fn forget_if_unused(&self, name: &str) {
        if self.fixed.read().contains(name) {
            return;
        }
        let mut namespaces = self.namespaces.write();
        if namespaces
            .get(name)
            .is_some_and(|namespace| namespace.retire_if_empty())
        {
            namespaces.remove(name);
        }
    }

    fn existing(&self, namespace: &str) -> Option<Arc<Namespace>> {
        self.namespaces.read().get(namespace).cloned()
    }

    pub(crate) fn resolve_namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        if let Some(namespace) = self.namespaces.read().get(name) {
            return Some(namespace.clone());
        }
        let handler = {
            let patterns = self.patterns.read();
            patterns
                .iter()
                .find(|(pattern, _)| pattern(name))
                .map(|(_, handler)| handler.clone())?
        };
        let mut namespaces = self.namespaces.write();
        let namespace = namespaces.entry(name.to_string()).or_insert_with(|| {
            Arc::new(Namespace::new(
                name,
                handler,
                self.cluster.clone(),
                self.rooms_per_socket,
            ))
        });
        Some(namespace.clone())
    }
}

/// Turns each new Engine.IO session into a Socket.IO client.
struct ClientFactory(Arc<IoInner>);

impl EngineHandler for ClientFactory {
    fn on_open(&self, session: &Arc<Session>) -> Arc<dyn SessionHandler> {
        let client = Arc::new_cyclic(|me| Client::new(self.0.clone(), session.clone(), me.clone()));
        let timer = tokio::spawn(connect_timeout(
            Arc::downgrade(&client),
            self.0.connect_timeout,
        ));
        client.set_connect_timer(timer.abort_handle());
        client
    }
}

/// Closes a session that joined no namespace in time.
async fn connect_timeout(client: Weak<Client>, timeout: Duration) {
    tokio::time::sleep(timeout).await;
    if let Some(client) = client.upgrade()
        && !client.has_sockets()
    {
        tracing::debug!(
            sid = client.session().sid(),
            "no namespace joined in time, closing"
        );
        metrics::counter!("rain_refused_total", "limit" => "connect_timeout").increment(1);
        client.session().close(CloseReason::ConnectTimeout);
    }
}
