//! The Redis backend: shared state in Redis, messages over Redis pub/sub.
//!
//! Owns four tasks per node and the state they share:
//! - the **writer**: every state change and PUBLISH, queued in order (bounded) and
//!   sent as pipelines, so traffic never waits on a round trip;
//! - the **subscriber**: one dedicated pub/sub connection that follows the node's
//!   interest (its node channel, `control`, and the room and namespace channels it
//!   has local members of), reconnects by itself and resubscribes everything;
//! - the **heartbeat**: refreshes the node's registration, re-registers all local
//!   state when Redis lost it (restart, or this node was purged), and purges nodes
//!   whose heartbeat lapsed (`redis/purge_node.lua`);
//! - the **director**: emits and operations addressed to one socket, in order:
//!   it finds the owning node (cached) and publishes on that node's channel.
//!
//! Does not own local delivery: received messages go to the [`LocalNode`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use parking_lot::Mutex;
use redis::AsyncCommands;
use tokio::sync::{Notify, mpsc, oneshot};

use super::keys::Keys;
use super::wire::{Message, WireFrame, WirePayload};
use super::{
    AckBroadcast, BroadcastMessage, Broker, ClusterError, ListStore, LocalNode, Membership,
    MessageHandler, RemoteOp, ServiceRecord, ServiceRegistry, Services, SessionStore, SocketRecord,
    SocketRegistry, Target, now_millis,
};
use crate::config::Settings;
use crate::protocol::engineio::Frame;
use crate::protocol::payload::Payload;

/// Queued writes before new ones are dropped (and counted) rather than held:
/// while Redis is away nothing grows without bound, and the heartbeat
/// re-registers the node's state once it is back.
const WRITE_QUEUE: usize = 16 * 1024;
/// Writes sent to Redis in one pipeline, at most.
const PIPELINE: usize = 512;
/// How long one Redis operation may take before it counts as failed.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Socket owners remembered; the cache is cleared when full or a node dies.
const OWNER_CACHE: usize = 64 * 1024;
/// How much longer the origin of an ack broadcast waits for other nodes than
/// they wait for their clients.
const ACK_GRACE: Duration = Duration::from_millis(250);

const PURGE_NODE: &str = include_str!("../../redis/purge_node.lua");
const DISPATCH: &str = include_str!("../../redis/dispatch.lua");

/// The Redis-backed cluster.
pub struct RedisCluster {
    shared: Arc<Shared>,
}

struct Shared {
    node_id: String,
    keys: Keys,
    pool: Pool,
    client: redis::Client,
    ttl: Duration,
    heartbeat: Duration,
    session_ttl: Duration,
    started_at: u64,
    address: Mutex<String>,
    writes: mpsc::Sender<Write>,
    directed: mpsc::Sender<Directed>,
    /// channel → number of local reasons to be subscribed to it.
    interest: Mutex<HashMap<String, usize>>,
    subscriptions: Mutex<SubscriptionWork>,
    subscription_work: Notify,
    pubsub_up: AtomicBool,
    heartbeat_ok: AtomicBool,
    /// Wakes the heartbeat early (the node's address became known).
    beat_now: Notify,
    local: OnceLock<Weak<dyn LocalNode>>,
    owners: Mutex<HashMap<String, String>>,
    acks: Mutex<HashMap<u64, mpsc::UnboundedSender<Vec<Payload>>>>,
    purge: redis::Script,
    dispatch: redis::Script,
    /// The services this node hosts: (name, spec).
    hosted: Mutex<Vec<(String, String)>>,
    /// The cluster's services and their hosts, as last read from Redis.
    registry: parking_lot::RwLock<Services>,
    /// Handlers of upper layers' messages, by topic.
    topics: parking_lot::RwLock<HashMap<String, Arc<dyn MessageHandler>>>,
}

enum Write {
    Publish {
        channel: String,
        payload: Vec<u8>,
        kind: &'static str,
    },
    Command(redis::Cmd),
    Barrier(oneshot::Sender<()>),
}

/// Work for the director: something for one socket, wherever it is.
enum Directed {
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

#[derive(Default)]
struct SubscriptionWork {
    /// Channels whose subscription may need to change.
    pending: HashSet<String>,
    barriers: Vec<oneshot::Sender<()>>,
}

impl RedisCluster {
    /// Connects (lazily: a Redis that is down now is retried in the background)
    /// and starts the node's cluster tasks.
    pub fn start(url: &str, settings: &Settings) -> Result<RedisCluster, ClusterError> {
        let invalid = |reason: String| ClusterError::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        let client = redis::Client::open(url).map_err(|e| invalid(e.to_string()))?;
        let mut config = deadpool_redis::Config::from_url(url);
        config.pool = Some(PoolConfig {
            max_size: 16,
            timeouts: Timeouts {
                wait: Some(OP_TIMEOUT),
                create: Some(OP_TIMEOUT),
                recycle: Some(OP_TIMEOUT),
            },
            ..PoolConfig::default()
        });
        let pool = config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| invalid(e.to_string()))?;
        let (writes, write_queue) = mpsc::channel(WRITE_QUEUE);
        let (directed, directed_queue) = mpsc::channel(WRITE_QUEUE);
        let shared = Arc::new(Shared {
            node_id: settings.node_id.clone(),
            keys: Keys::new(settings.key_prefix.clone()),
            pool,
            client,
            ttl: settings.node_ttl(),
            heartbeat: settings.heartbeat(),
            session_ttl: settings.session_ttl(),
            started_at: now_millis(),
            address: Mutex::new(String::new()),
            writes,
            directed,
            interest: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(SubscriptionWork::default()),
            subscription_work: Notify::new(),
            pubsub_up: AtomicBool::new(false),
            heartbeat_ok: AtomicBool::new(false),
            beat_now: Notify::new(),
            local: OnceLock::new(),
            owners: Mutex::new(HashMap::new()),
            acks: Mutex::new(HashMap::new()),
            purge: redis::Script::new(PURGE_NODE),
            dispatch: redis::Script::new(DISPATCH),
            hosted: Mutex::new(Vec::new()),
            registry: parking_lot::RwLock::new(Arc::new(Vec::new())),
            topics: parking_lot::RwLock::new(HashMap::new()),
        });
        tokio::spawn(writer(shared.clone(), write_queue));
        tokio::spawn(director(shared.clone(), directed_queue));
        tokio::spawn(subscriber(Arc::downgrade(&shared)));
        tokio::spawn(heartbeat(Arc::downgrade(&shared)));
        Ok(RedisCluster { shared })
    }
}

impl Shared {
    fn local(&self) -> Option<Arc<dyn LocalNode>> {
        self.local.get().and_then(Weak::upgrade)
    }

    fn ready(&self) -> bool {
        self.pubsub_up.load(Ordering::Acquire) && self.heartbeat_ok.load(Ordering::Acquire)
    }

    /// Queues a write; when the queue is full (Redis away or far behind) it is
    /// dropped and counted instead.
    fn write(&self, write: Write) {
        if self.writes.try_send(write).is_err() {
            metrics::counter!("rain_cluster_dropped_total").increment(1);
        }
    }

    fn publish(&self, channel: String, message: &Message, kind: &'static str) {
        self.write(Write::Publish {
            channel,
            payload: message.encode(),
            kind,
        });
    }

    fn command(&self, command: redis::Cmd) {
        self.write(Write::Command(command));
    }

    /// Counts a local reason to hear a channel; the first one subscribes and the
    /// last one gone unsubscribes.
    fn interest(&self, channel: String, up: bool) {
        let mut interest = self.interest.lock();
        let count = interest.entry(channel.clone()).or_default();
        let before = *count;
        *count = if up {
            before + 1
        } else {
            before.saturating_sub(1)
        };
        let after = *count;
        if after == 0 {
            interest.remove(&channel);
        }
        drop(interest);
        if (before == 0) != (after == 0) {
            self.subscriptions.lock().pending.insert(channel);
            self.subscription_work.notify_one();
        }
    }

    fn wants(&self, channel: &str) -> bool {
        self.interest.lock().contains_key(channel)
    }

    /// A local socket joined (or left) a room: interest, the room's set, and the
    /// socket's record of its rooms.
    fn membership(&self, namespace: &str, room: &str, sid: &str, rooms: &[String], joined: bool) {
        self.interest(self.keys.room_channel(namespace, room), joined);
        let op = if joined { "SADD" } else { "SREM" };
        self.command(set_command(
            op,
            self.keys.room_sockets(namespace, room),
            sid,
        ));
        self.command(rooms_command(&self.keys, sid, rooms));
    }

    fn channel_kind(&self, channel: &str) -> &'static str {
        let prefix = self.keys.prefix();
        let rest = channel.strip_prefix(prefix).unwrap_or(channel);
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

    /// A message from another node.
    fn receive(self: &Arc<Self>, channel: &str, payload: &[u8]) {
        metrics::counter!("rain_cluster_received_total", "kind" => self.channel_kind(channel))
            .increment(1);
        let message = match Message::decode(payload) {
            Ok(message) => message,
            Err(error) => {
                metrics::counter!("rain_cluster_undecodable_total").increment(1);
                tracing::warn!(channel, %error, "dropping a cluster message this node cannot read");
                return;
            }
        };
        let Some(local) = self.local() else { return };
        match message {
            Message::Broadcast {
                origin,
                namespace,
                rooms,
                except,
                frames,
            } => {
                if origin == self.node_id {
                    return;
                }
                let frames: Vec<Frame> = frames
                    .into_iter()
                    .filter_map(WireFrame::into_frame)
                    .collect();
                let delivered = local.deliver(&namespace, &rooms, &except, &frames);
                metrics::counter!("rain_cluster_delivered_total").increment(delivered as u64);
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
                if origin == self.node_id {
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
                let (_, answers) = local.deliver_with_ack(&broadcast);
                let shared = self.clone();
                tokio::spawn(async move {
                    let answers = answers.await;
                    let message = Message::AckAnswers {
                        request,
                        answers: answers.iter().map(WirePayload::from).collect(),
                    };
                    shared.publish(shared.keys.node_channel(&origin), &message, "node");
                });
            }
            Message::AckAnswers { request, answers } => {
                let answers = answers
                    .into_iter()
                    .filter_map(WirePayload::into_payload)
                    .collect();
                if let Some(collector) = self.acks.lock().get(&request) {
                    let _ = collector.send(answers);
                }
            }
            Message::ToSocket {
                namespace,
                sid,
                frames,
            } => {
                let frames: Vec<Frame> = frames
                    .into_iter()
                    .filter_map(WireFrame::into_frame)
                    .collect();
                if !local.deliver_to_socket(&namespace, &sid, &frames) {
                    // It left, or moved: forget where it was.
                    self.owners.lock().remove(&sid);
                }
            }
            Message::Remote {
                origin,
                namespace,
                target,
                op,
            } => {
                if origin != self.node_id {
                    local.apply(&namespace, &target, &op);
                }
            }
            Message::NodeDown { node } => {
                tracing::info!(node, "node down");
                self.owners.lock().retain(|_, owner| *owner != node);
                self.beat_now.notify_one();
            }
            Message::ServicesChanged { node } => {
                tracing::debug!(node, "services changed");
                self.beat_now.notify_one();
            }
            Message::Topic { topic, body } => {
                let handler = self.topics.read().get(&topic).cloned();
                match handler {
                    Some(handler) => handler.on_message(body),
                    None => tracing::debug!(topic, "a message of a topic this node does not serve"),
                }
            }
        }
    }

    /// Runs one operation on a pooled connection, within the operation timeout.
    async fn run<T>(
        &self,
        operation: impl AsyncFnOnce(&mut deadpool_redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, ClusterError> {
        let attempt = async {
            let mut connection = self
                .pool
                .get()
                .await
                .map_err(|e| ClusterError::Redis(e.to_string()))?;
            operation(&mut connection)
                .await
                .map_err(|e| ClusterError::Redis(e.to_string()))
        };
        tokio::time::timeout(OP_TIMEOUT, attempt)
            .await
            .unwrap_or(Err(ClusterError::NotReady))
    }

    /// Which node holds a socket (cached; a miss asks Redis).
    async fn owner(&self, sid: &str) -> Option<String> {
        if let Some(owner) = self.owners.lock().get(sid) {
            return Some(owner.clone());
        }
        let mut connection = self.pool.get().await.ok()?;
        let owner: Option<String> =
            tokio::time::timeout(OP_TIMEOUT, connection.hget(self.keys.conn(sid), "node"))
                .await
                .ok()?
                .ok()?;
        let owner = owner?;
        let mut owners = self.owners.lock();
        if owners.len() >= OWNER_CACHE {
            owners.clear();
        }
        owners.insert(sid.to_string(), owner.clone());
        Some(owner)
    }

    /// Commands that announce hosted services.
    fn service_commands(&self, services: &[(String, String)]) -> Vec<redis::Cmd> {
        let mut commands = Vec::new();
        for (name, spec) in services {
            commands.push(set_command("SADD", self.keys.services(), name));
            commands.push(
                redis::cmd("HSET")
                    .arg(self.keys.service(name))
                    .arg("spec")
                    .arg(spec)
                    .to_owned(),
            );
            commands.push(set_command(
                "SADD",
                self.keys.service_nodes(name),
                &self.node_id,
            ));
            commands.push(set_command(
                "SADD",
                self.keys.node_services(&self.node_id),
                name,
            ));
        }
        commands
    }

    /// Reads the cluster's services and their hosts into the cached view.
    async fn refresh_registry(&self) -> Result<(), redis::RedisError> {
        let mut connection = self
            .pool
            .get()
            .await
            .map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))?;
        let names: Vec<String> = connection.smembers(self.keys.services()).await?;
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.hget(self.keys.service(name), "spec");
            pipe.smembers(self.keys.service_nodes(name));
        }
        let answers: Vec<redis::Value> = pipe.query_async(&mut connection).await?;
        let mut registry = Vec::new();
        for (name, pair) in names.into_iter().zip(answers.chunks(2)) {
            let [spec, hosts] = pair else { continue };
            let spec: Option<String> = redis::from_redis_value(spec).ok();
            let mut hosts: Vec<String> = redis::from_redis_value(hosts).unwrap_or_default();
            if let Some(spec) = spec {
                hosts.sort();
                registry.push(ServiceRecord {
                    name,
                    spec: spec.into(),
                    hosts,
                });
            }
        }
        self.include_hosted(&mut registry);
        registry.sort_by(|a, b| a.name.cmp(&b.name));
        *self.registry.write() = Arc::new(registry);
        Ok(())
    }

    /// This node's own services belong in its view even before Redis has them.
    fn include_hosted(&self, registry: &mut Vec<ServiceRecord>) {
        for (name, spec) in self.hosted.lock().iter() {
            match registry.iter_mut().find(|record| record.name == *name) {
                Some(record) if !record.hosts.contains(&self.node_id) => {
                    record.hosts.push(self.node_id.clone());
                    record.hosts.sort();
                }
                Some(_) => {}
                None => registry.push(ServiceRecord {
                    name: name.clone(),
                    spec: spec.as_str().into(),
                    hosts: vec![self.node_id.clone()],
                }),
            }
        }
    }

    /// Writes the node's whole local state again, in order with every other write.
    async fn register_local_state(&self) {
        let hosted = self.hosted.lock().clone();
        for command in self.service_commands(&hosted) {
            if self.writes.send(Write::Command(command)).await.is_err() {
                return;
            }
        }
        let Some(local) = self.local() else { return };
        let records = local.snapshot();
        tracing::info!(sockets = records.len(), "registering local state in Redis");
        for record in records {
            for command in self.connect_commands(&record) {
                if self.writes.send(Write::Command(command)).await.is_err() {
                    return;
                }
            }
            for room in &record.rooms {
                let command = set_command(
                    "SADD",
                    self.keys.room_sockets(&record.namespace, room),
                    &record.sid,
                );
                if self.writes.send(Write::Command(command)).await.is_err() {
                    return;
                }
            }
        }
    }

    fn connect_commands(&self, record: &SocketRecord) -> [redis::Cmd; 3] {
        let rooms = serde_json::to_string(&record.rooms).unwrap_or_else(|_| "[]".into());
        [
            redis::cmd("HSET")
                .arg(self.keys.conn(&record.sid))
                .arg("node")
                .arg(&self.node_id)
                .arg("namespace")
                .arg(&record.namespace)
                .arg("session")
                .arg(&record.session_id)
                .arg("rooms")
                .arg(rooms)
                .arg("connected_at")
                .arg(record.connected_at)
                .to_owned(),
            set_command("SADD", self.keys.node_sockets(&self.node_id), &record.sid),
            set_command(
                "SADD",
                self.keys.namespace_sockets(&record.namespace),
                &record.sid,
            ),
        ]
    }

    /// The room channels a broadcast travels on, each with the rooms before it
    /// excluded (so a member of two rooms gets it once), or the namespace channel.
    fn broadcast_channels(
        &self,
        namespace: &str,
        rooms: &[String],
        except: &[String],
    ) -> Vec<(String, Vec<String>, Vec<String>)> {
        if rooms.is_empty() {
            return vec![(
                self.keys.namespace_channel(namespace),
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
                (
                    self.keys.room_channel(namespace, room),
                    vec![room.clone()],
                    skip,
                )
            })
            .collect()
    }
}

impl Membership for RedisCluster {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    fn is_ready(&self) -> bool {
        self.shared.ready()
    }

    fn attach(&self, local: Weak<dyn LocalNode>) {
        let _ = self.shared.local.set(local);
    }

    fn set_address(&self, address: String) {
        *self.shared.address.lock() = address;
        self.shared.beat_now.notify_one();
    }

    fn flush(&self) -> BoxFuture<'static, ()> {
        flush(self.shared.clone()).boxed()
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        shutdown(self.shared.clone()).boxed()
    }
}

impl Broker for RedisCluster {
    fn publish_broadcast(&self, message: BroadcastMessage) {
        let shared = &self.shared;
        let frames: Vec<WireFrame> = message.frames.iter().map(WireFrame::from).collect();
        for (channel, rooms, except) in
            shared.broadcast_channels(&message.namespace, &message.rooms, &message.except)
        {
            let kind = if rooms.is_empty() {
                "namespace"
            } else {
                "room"
            };
            let wire = Message::Broadcast {
                origin: shared.node_id.clone(),
                namespace: message.namespace.clone(),
                rooms,
                except,
                frames: frames.clone(),
            };
            shared.publish(channel, &wire, kind);
        }
    }

    fn publish_broadcast_with_ack(
        &self,
        broadcast: AckBroadcast,
    ) -> BoxFuture<'static, Vec<Payload>> {
        let shared = self.shared.clone();
        async move {
            let request: u64 = rand::random();
            let channels = shared.broadcast_channels(
                &broadcast.namespace,
                &broadcast.rooms,
                &broadcast.except,
            );
            let (collector, mut answers) = mpsc::unbounded_channel();
            shared.acks.lock().insert(request, collector);
            let deadline = tokio::time::Instant::now() + broadcast.timeout + ACK_GRACE;
            let sent = async {
                let mut connection = shared.pool.get().await.ok()?;
                let names: Vec<&String> = channels.iter().map(|(channel, _, _)| channel).collect();
                let counts: Vec<(String, usize)> = tokio::time::timeout(
                    OP_TIMEOUT,
                    redis::cmd("PUBSUB")
                        .arg("NUMSUB")
                        .arg(&names)
                        .query_async(&mut connection),
                )
                .await
                .ok()?
                .ok()?;
                // Every subscriber answers once per copy; this node does not.
                let expected: usize = counts
                    .iter()
                    .map(|(channel, count)| {
                        count.saturating_sub(usize::from(shared.wants(channel)))
                    })
                    .sum();
                let payload = WirePayload::from(&broadcast.payload);
                let mut pipe = redis::pipe();
                for (channel, rooms, except) in &channels {
                    let wire = Message::AckBroadcast {
                        origin: shared.node_id.clone(),
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
                tokio::time::timeout(OP_TIMEOUT, pipe.query_async::<()>(&mut connection))
                    .await
                    .ok()?
                    .ok()?;
                Some(expected)
            };
            let mut collected = Vec::new();
            if let Some(expected) = sent.await {
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
            shared.acks.lock().remove(&request);
            collected
        }
        .boxed()
    }

    fn emit_to_socket(&self, namespace: &str, sid: &str, frames: Vec<Frame>) {
        let work = Directed::Frames {
            namespace: namespace.to_string(),
            sid: sid.to_string(),
            frames: frames.iter().map(WireFrame::from).collect(),
        };
        if self.shared.directed.try_send(work).is_err() {
            metrics::counter!("rain_cluster_dropped_total").increment(1);
        }
    }

    fn remote(&self, namespace: &str, target: Target, op: RemoteOp) {
        match target {
            Target::Socket(sid) => {
                let work = Directed::Operation {
                    namespace: namespace.to_string(),
                    sid,
                    op,
                };
                if self.shared.directed.try_send(work).is_err() {
                    metrics::counter!("rain_cluster_dropped_total").increment(1);
                }
            }
            Target::Room(room) => {
                let channel = self.shared.keys.room_channel(namespace, &room);
                let wire = Message::Remote {
                    origin: self.shared.node_id.clone(),
                    namespace: namespace.to_string(),
                    target: Target::Room(room),
                    op,
                };
                self.shared.publish(channel, &wire, "room");
            }
        }
    }

    fn on_topic(&self, topic: &'static str, handler: Arc<dyn MessageHandler>) {
        self.shared
            .topics
            .write()
            .insert(topic.to_string(), handler);
    }

    fn send(&self, node: &str, topic: &'static str, body: Bytes) {
        let shared = &self.shared;
        if node == shared.node_id {
            // No need to go through Redis to reach this node.
            let handler = shared.topics.read().get(topic).cloned();
            if let Some(handler) = handler {
                tokio::spawn(async move { handler.on_message(body) });
            }
            return;
        }
        let message = Message::Topic {
            topic: topic.to_string(),
            body,
        };
        shared.publish(shared.keys.node_channel(node), &message, "node");
    }
}

impl SocketRegistry for RedisCluster {
    fn socket_connected(&self, record: SocketRecord) {
        let shared = &self.shared;
        shared.interest(shared.keys.namespace_channel(&record.namespace), true);
        for command in shared.connect_commands(&record) {
            shared.command(command);
        }
    }

    fn socket_disconnected(&self, namespace: &str, sid: &str) {
        let shared = &self.shared;
        shared.interest(shared.keys.namespace_channel(namespace), false);
        shared.command(redis::cmd("DEL").arg(shared.keys.conn(sid)).to_owned());
        shared.command(set_command(
            "SREM",
            shared.keys.node_sockets(&shared.node_id),
            sid,
        ));
        shared.command(set_command(
            "SREM",
            shared.keys.namespace_sockets(namespace),
            sid,
        ));
    }

    fn room_joined(&self, namespace: &str, room: &str, sid: &str, rooms: &[String]) {
        self.shared.membership(namespace, room, sid, rooms, true);
    }

    fn room_left(&self, namespace: &str, room: &str, sid: &str, rooms: &[String]) {
        self.shared.membership(namespace, room, sid, rooms, false);
    }

    fn fetch_sockets(
        &self,
        namespace: &str,
        room: Option<&str>,
    ) -> BoxFuture<'static, Result<Vec<SocketRecord>, ClusterError>> {
        let shared = self.shared.clone();
        let namespace = namespace.to_string();
        let set = match room {
            Some(room) => shared.keys.room_sockets(&namespace, room),
            None => shared.keys.namespace_sockets(&namespace),
        };
        async move {
            let (sids, hashes) = shared
                .run(async |connection| {
                    let sids: Vec<String> = connection.smembers(&set).await?;
                    let mut pipe = redis::pipe();
                    for sid in &sids {
                        pipe.hgetall(shared.keys.conn(sid));
                    }
                    let hashes: Vec<HashMap<String, String>> = pipe.query_async(connection).await?;
                    Ok((sids, hashes))
                })
                .await?;
            Ok(sids
                .into_iter()
                .zip(hashes)
                .filter(|(_, hash)| !hash.is_empty())
                .map(|(sid, hash)| SocketRecord {
                    namespace: namespace.clone(),
                    sid,
                    node_id: hash.get("node").cloned().unwrap_or_default(),
                    session_id: hash.get("session").cloned().unwrap_or_default(),
                    rooms: hash
                        .get("rooms")
                        .and_then(|rooms| serde_json::from_str(rooms).ok())
                        .unwrap_or_default(),
                    connected_at: hash
                        .get("connected_at")
                        .and_then(|t| t.parse().ok())
                        .unwrap_or_default(),
                })
                .collect())
        }
        .boxed()
    }
}

impl SessionStore for RedisCluster {
    fn session_load(
        &self,
        id: &str,
    ) -> BoxFuture<'static, Result<HashMap<String, String>, ClusterError>> {
        let shared = self.shared.clone();
        let key = shared.keys.session(id);
        async move {
            shared
                .run(async |connection| {
                    let (fields,): (HashMap<String, String>,) = redis::pipe()
                        .hgetall(&key)
                        .pexpire(&key, shared.session_ttl.as_millis() as i64)
                        .ignore()
                        .query_async(connection)
                        .await?;
                    Ok(fields)
                })
                .await
        }
        .boxed()
    }

    fn session_store(
        &self,
        id: &str,
        fields: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<(), ClusterError>> {
        let shared = self.shared.clone();
        let key = shared.keys.session(id);
        async move {
            if fields.is_empty() {
                return Ok(());
            }
            shared
                .run(async |connection| {
                    redis::pipe()
                        .hset_multiple(&key, &fields)
                        .ignore()
                        .pexpire(&key, shared.session_ttl.as_millis() as i64)
                        .ignore()
                        .query_async::<()>(connection)
                        .await
                })
                .await
        }
        .boxed()
    }

    fn session_touch(&self, id: &str) {
        let shared = &self.shared;
        shared.command(
            redis::cmd("PEXPIRE")
                .arg(shared.keys.session(id))
                .arg(shared.session_ttl.as_millis() as u64)
                .to_owned(),
        );
    }
}

impl ListStore for RedisCluster {
    fn list_push(
        &self,
        name: &str,
        entry: String,
        keep: usize,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<(), ClusterError>> {
        let shared = self.shared.clone();
        let key = shared.keys.list(name);
        async move {
            shared
                .run(async |connection| {
                    redis::pipe()
                        .lpush(&key, entry)
                        .ignore()
                        .ltrim(&key, 0, keep as isize - 1)
                        .ignore()
                        .pexpire(&key, ttl.as_millis() as i64)
                        .ignore()
                        .query_async::<()>(connection)
                        .await
                })
                .await
        }
        .boxed()
    }

    fn list_read(&self, name: &str) -> BoxFuture<'static, Result<Vec<String>, ClusterError>> {
        let shared = self.shared.clone();
        let key = shared.keys.list(name);
        async move {
            let mut entries: Vec<String> = shared
                .run(async |connection| connection.lrange(&key, 0, -1).await)
                .await?;
            entries.reverse();
            Ok(entries)
        }
        .boxed()
    }
}

impl ServiceRegistry for RedisCluster {
    fn register_services(&self, services: Vec<(String, String)>) {
        let shared = &self.shared;
        for command in shared.service_commands(&services) {
            shared.command(command);
        }
        shared.hosted.lock().extend(services);
        let mut view = shared.registry.read().as_ref().clone();
        shared.include_hosted(&mut view);
        view.sort_by(|a, b| a.name.cmp(&b.name));
        *shared.registry.write() = Arc::new(view);
        let changed = Message::ServicesChanged {
            node: shared.node_id.clone(),
        };
        shared.publish(shared.keys.control_channel(), &changed, "node");
    }

    fn services(&self) -> Services {
        self.shared.registry.read().clone()
    }

    fn dispatch(
        &self,
        service: &str,
        topic: &'static str,
        body: Bytes,
    ) -> BoxFuture<'static, Option<String>> {
        let shared = self.shared.clone();
        let service = service.to_string();
        async move {
            let payload = Message::Topic {
                topic: topic.to_string(),
                body,
            }
            .encode();
            let host: Option<String> = shared
                .run(async |connection| {
                    shared
                        .dispatch
                        .key(shared.keys.service_nodes(&service))
                        .key(shared.keys.round_robin(&service))
                        .arg(shared.keys.node_channel(""))
                        .arg(payload)
                        .invoke_async(connection)
                        .await
                })
                .await
                .ok()?;
            metrics::counter!("rain_cluster_published_total", "kind" => "node").increment(1);
            host
        }
        .boxed()
    }

    fn record_instance(&self, instance_id: &str, fields: Vec<(String, String)>) {
        let shared = &self.shared;
        let mut command = redis::cmd("HSET");
        command.arg(shared.keys.instance(instance_id));
        for (field, value) in fields {
            command.arg(field).arg(value);
        }
        shared.command(command);
    }
}

/// Resolves once every write queued so far is sent and every subscription
/// change made (bounded by the operation timeout).
async fn flush(shared: Arc<Shared>) {
    {
        if !shared.ready() {
            return;
        }
        let (written, writes_done) = oneshot::channel();
        let (subscribed, subscriptions_done) = oneshot::channel();
        if shared.writes.try_send(Write::Barrier(written)).is_err() {
            return;
        }
        shared.subscriptions.lock().barriers.push(subscribed);
        shared.subscription_work.notify_one();
        let _ = tokio::time::timeout(OP_TIMEOUT, async {
            let _ = writes_done.await;
            let _ = subscriptions_done.await;
        })
        .await;
    }
}

/// Purges this node from Redis and tells the others it is gone.
async fn shutdown(shared: Arc<Shared>) {
    {
        let purge = async {
            let mut connection = shared.pool.get().await.ok()?;
            let _: i64 = shared
                .purge
                .arg(shared.keys.prefix())
                .arg(&shared.node_id)
                .invoke_async(&mut connection)
                .await
                .ok()?;
            let down = Message::NodeDown {
                node: shared.node_id.clone(),
            };
            let _: () = connection
                .publish(shared.keys.control_channel(), down.encode())
                .await
                .ok()?;
            Some(())
        };
        if tokio::time::timeout(OP_TIMEOUT, purge)
            .await
            .ok()
            .flatten()
            .is_none()
        {
            tracing::warn!(
                "could not deregister from Redis; the others will purge this node after its TTL"
            );
        }
    }
}

/// `SADD` or `SREM` of one member.
fn set_command(
    op: &str,
    key: impl redis::ToRedisArgs,
    member: impl redis::ToRedisArgs,
) -> redis::Cmd {
    redis::cmd(op).arg(key).arg(member).to_owned()
}

fn rooms_command(keys: &Keys, sid: &str, rooms: &[String]) -> redis::Cmd {
    redis::cmd("HSET")
        .arg(keys.conn(sid))
        .arg("rooms")
        .arg(serde_json::to_string(rooms).unwrap_or_else(|_| "[]".into()))
        .to_owned()
}

/// Sends queued writes as pipelines, in order.
async fn writer(shared: Arc<Shared>, mut queue: mpsc::Receiver<Write>) {
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
            let sent = async {
                let mut connection = shared.pool.get().await.map_err(|e| e.to_string())?;
                pipe.query_async::<()>(&mut connection)
                    .await
                    .map_err(|e| e.to_string())
            };
            match tokio::time::timeout(OP_TIMEOUT, sent)
                .await
                .unwrap_or(Err("timed out".into()))
            {
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
                        tracing::warn!(%error, "Redis write failed; dropping writes until it is back");
                    }
                    failing = true;
                    shared.heartbeat_ok.store(false, Ordering::Release);
                }
            }
        }
        for done in barriers {
            let _ = done.send(());
        }
    }
}

/// Sends frames and operations to the node holding each socket, in order.
async fn director(shared: Arc<Shared>, mut queue: mpsc::Receiver<Directed>) {
    while let Some(work) = queue.recv().await {
        let (namespace, sid) = match &work {
            Directed::Frames { namespace, sid, .. }
            | Directed::Operation { namespace, sid, .. } => (namespace.clone(), sid.clone()),
        };
        let Some(owner) = shared.owner(&sid).await else {
            tracing::debug!(sid, "no such socket in the cluster");
            continue;
        };
        if owner == shared.node_id && matches!(work, Directed::Frames { .. }) {
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
                origin: shared.node_id.clone(),
                namespace,
                target: Target::Socket(sid),
                op,
            },
        };
        shared.publish(shared.keys.node_channel(&owner), &message, "node");
    }
}

/// Keeps one pub/sub connection subscribed to what the node wants to hear.
async fn subscriber(weak: Weak<Shared>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let connected = tokio::time::timeout(OP_TIMEOUT, shared.client.get_async_pubsub()).await;
        if let Ok(Ok(pubsub)) = connected {
            backoff = Duration::from_millis(100);
            serve_subscriptions(&shared, pubsub).await;
            tracing::warn!("Redis pub/sub connection lost; reconnecting");
        }
        shared.pubsub_up.store(false, Ordering::Release);
        drop(shared);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

async fn serve_subscriptions(shared: &Arc<Shared>, pubsub: redis::aio::PubSub) {
    let (mut sink, mut stream) = pubsub.split();
    let mut subscribed: HashSet<String> = HashSet::new();
    let mut wanted: Vec<String> = vec![
        shared.keys.node_channel(&shared.node_id),
        shared.keys.control_channel(),
    ];
    wanted.extend(shared.interest.lock().keys().cloned());
    for channel in wanted {
        if sink.subscribe(&channel).await.is_err() {
            return;
        }
        subscribed.insert(channel);
    }
    metrics::gauge!("rain_cluster_subscriptions").set(subscribed.len() as f64);
    shared.pubsub_up.store(true, Ordering::Release);
    tracing::info!(channels = subscribed.len(), "subscribed to Redis pub/sub");
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { return };
                shared.receive(message.get_channel_name(), message.get_payload_bytes());
            }
            _ = shared.subscription_work.notified() => {
                let work = std::mem::take(&mut *shared.subscriptions.lock());
                for channel in work.pending {
                    let want = shared.wants(&channel);
                    let have = subscribed.contains(&channel);
                    let result = if want && !have {
                        subscribed.insert(channel.clone());
                        sink.subscribe(&channel).await
                    } else if !want && have {
                        subscribed.remove(&channel);
                        sink.unsubscribe(&channel).await
                    } else {
                        Ok(())
                    };
                    if result.is_err() {
                        // Resubscribed from the interest map on reconnect.
                        return;
                    }
                }
                metrics::gauge!("rain_cluster_subscriptions").set(subscribed.len() as f64);
                for done in work.barriers {
                    let _ = done.send(());
                }
            }
        }
    }
}

/// Registers the node, re-registers its state when Redis lost it, and purges
/// dead nodes.
async fn heartbeat(weak: Weak<Shared>) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let beat = tokio::time::timeout(OP_TIMEOUT, beat(&shared)).await;
        let ok = matches!(beat, Ok(Ok(())));
        if let Ok(Err(error)) = &beat
            && shared.heartbeat_ok.load(Ordering::Acquire)
        {
            tracing::warn!(%error, "Redis heartbeat failed");
        }
        shared.heartbeat_ok.store(ok, Ordering::Release);
        if ok
            && let Err(error) = tokio::time::timeout(OP_TIMEOUT, reap(&shared))
                .await
                .unwrap_or(Ok(()))
        {
            tracing::warn!(%error, "could not purge dead nodes");
        }
        if ok
            && let Err(error) = tokio::time::timeout(OP_TIMEOUT, shared.refresh_registry())
                .await
                .unwrap_or(Ok(()))
        {
            tracing::warn!(%error, "could not read the component registry");
        }
        // Beat again after the period, or at once when woken.
        let _ = tokio::time::timeout(shared.heartbeat, shared.beat_now.notified()).await;
    }
}

async fn beat(shared: &Shared) -> Result<(), redis::RedisError> {
    let mut connection = shared
        .pool
        .get()
        .await
        .map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))?;
    let key = shared.keys.node(&shared.node_id);
    let now = now_millis();
    let sockets = shared
        .local()
        .map(|local| local.socket_count())
        .unwrap_or_default();
    let address = shared.address.lock().clone();
    let components = {
        let hosted: Vec<String> = shared
            .hosted
            .lock()
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        serde_json::to_string(&hosted).unwrap_or_else(|_| "[]".into())
    };
    let (existed,): (bool,) = redis::pipe()
        .exists(&key)
        .hset_multiple(
            &key,
            &[
                ("address", address),
                ("started_at", shared.started_at.to_string()),
                ("heartbeat", now.to_string()),
                ("sockets", sockets.to_string()),
                ("services", components),
            ],
        )
        .ignore()
        .pexpire(&key, shared.ttl.as_millis() as i64)
        .ignore()
        .zadd(shared.keys.nodes(), &shared.node_id, now)
        .ignore()
        .query_async(&mut connection)
        .await?;
    if !existed {
        // First beat, Redis restarted empty, or this node was purged while it
        // could not reach Redis: write everything the node holds again.
        shared.register_local_state().await;
    }
    Ok(())
}

async fn reap(shared: &Shared) -> Result<(), redis::RedisError> {
    let mut connection = shared
        .pool
        .get()
        .await
        .map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))?;
    let cutoff = now_millis().saturating_sub(shared.ttl.as_millis() as u64);
    let dead: Vec<String> = connection
        .zrangebyscore(shared.keys.nodes(), "-inf", cutoff)
        .await?;
    for node in dead.into_iter().filter(|node| *node != shared.node_id) {
        let purged: i64 = shared
            .purge
            .arg(shared.keys.prefix())
            .arg(&node)
            .invoke_async(&mut connection)
            .await?;
        tracing::info!(
            node,
            sockets = purged,
            "purged a node whose heartbeat lapsed"
        );
        let down = Message::NodeDown { node };
        let _: () = connection
            .publish(shared.keys.control_channel(), down.encode())
            .await?;
    }
    Ok(())
}
