//! The subscriber: one dedicated pub/sub connection that follows what this
//! node wants to hear.
//!
//! Owns the node's interest ([`Subscriptions`]: how many local reasons it has
//! to hear each room and namespace channel; the first one subscribes, the last
//! one gone unsubscribes), the pending subscription changes, and the task that
//! keeps the connection ([`run`]): it subscribes to the node's own channel,
//! `control` and every channel of interest, applies changes as they come
//! (`PubSub::split`, so subscriptions change while messages stream), and on a
//! lost connection reconnects with backoff and resubscribes from the interest
//! map; asked to ([`Subscriptions::resubscribe`], a reset of the node), it
//! does the same at once without counting it a failure. Does not own what a
//! message does (see `super::inbox`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

use super::{OP_TIMEOUT, RedisNode, inbox};

/// The node's interest in channels and the pub/sub connection's state.
pub(super) struct Subscriptions {
    /// Opens the pub/sub connection.
    client: redis::Client,
    /// channel → number of local reasons to be subscribed to it.
    interest: Mutex<HashMap<String, usize>>,
    work: Mutex<SubscriptionWork>,
    /// Wakes the task: there is work.
    wake: Notify,
    /// Whether the connection is up and subscribed.
    up: AtomicBool,
}

#[derive(Default)]
struct SubscriptionWork {
    /// Channels whose subscription may need to change.
    pending: HashSet<String>,
    barriers: Vec<oneshot::Sender<()>>,
    /// Asked to drop the connection and subscribe to everything anew; told
    /// once the new connection is subscribed.
    resubscribe: Vec<oneshot::Sender<()>>,
}

/// Why [`serve`] returned, with whoever waits for a connection subscribed
/// anew.
enum Ended {
    /// The connection failed.
    Lost(Vec<oneshot::Sender<()>>),
    /// A fresh connection was asked for ([`Subscriptions::resubscribe`]).
    Resubscribe(Vec<oneshot::Sender<()>>),
}

impl Subscriptions {
    pub(super) fn new(client: redis::Client) -> Subscriptions {
        Subscriptions {
            client,
            interest: Mutex::new(HashMap::new()),
            work: Mutex::new(SubscriptionWork::default()),
            wake: Notify::new(),
            up: AtomicBool::new(false),
        }
    }

    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Counts a local reason to hear a channel (`up`), or one gone; the first
    /// one subscribes and the last one gone unsubscribes.
    pub(super) fn interest(&self, channel: String, up: bool) {
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
            self.work.lock().pending.insert(channel);
            self.wake.notify_one();
        }
    }

    /// Whether the node has a local reason to hear `channel`.
    pub(super) fn wants(&self, channel: &str) -> bool {
        self.interest.lock().contains_key(channel)
    }

    /// Drops the pub/sub connection and subscribes anew, on a new one, to the
    /// node's channels and every channel of interest; resolves once that is
    /// done (an error when the task is gone).
    pub(super) fn resubscribe(&self) -> oneshot::Receiver<()> {
        let (done, subscribed) = oneshot::channel();
        self.work.lock().resubscribe.push(done);
        self.wake.notify_one();
        subscribed
    }

    /// Resolves once every subscription change asked for so far is made.
    pub(super) fn barrier(&self) -> oneshot::Receiver<()> {
        let (done, subscribed) = oneshot::channel();
        self.work.lock().barriers.push(done);
        self.wake.notify_one();
        subscribed
    }
}

/// Keeps one pub/sub connection subscribed to what the node wants to hear.
pub(super) async fn run(weak: Weak<RedisNode>) {
    let mut backoff = Duration::from_millis(100);
    // Told once a connection is subscribed again (see `resubscribe`).
    let mut resubscribed: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let Some(node) = weak.upgrade() else { return };
        let subscriptions = &node.subscriptions;
        let connected =
            tokio::time::timeout(OP_TIMEOUT, subscriptions.client.get_async_pubsub()).await;
        if let Ok(Ok(pubsub)) = connected {
            backoff = Duration::from_millis(100);
            match serve(&node, pubsub, std::mem::take(&mut resubscribed)).await {
                Ended::Resubscribe(waiting) => {
                    // Asked for, not a failure: at once, and still ready.
                    tracing::info!("Redis pub/sub: subscribing anew");
                    resubscribed = waiting;
                    continue;
                }
                Ended::Lost(waiting) => {
                    resubscribed = waiting;
                    tracing::warn!("Redis pub/sub connection lost; reconnecting");
                }
            }
        }
        subscriptions.up.store(false, Ordering::Release);
        drop(node);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Subscribes, then hands over messages and applies subscription changes until
/// the connection fails.
async fn serve(
    node: &Arc<RedisNode>,
    pubsub: redis::aio::PubSub,
    resubscribed: Vec<oneshot::Sender<()>>,
) -> Ended {
    let subscriptions = &node.subscriptions;
    let (mut sink, mut stream) = pubsub.split();
    let mut subscribed: HashSet<String> = HashSet::new();
    let mut wanted: Vec<String> = vec![
        node.keys.node_channel(&node.id),
        node.keys.control_channel(),
    ];
    wanted.extend(subscriptions.interest.lock().keys().cloned());
    for channel in wanted {
        if sink.subscribe(&channel).await.is_err() {
            // Whoever waits is told when a later connection is subscribed.
            return Ended::Lost(resubscribed);
        }
        subscribed.insert(channel);
    }
    metrics::gauge!("rain_cluster_subscriptions").set(subscribed.len() as f64);
    subscriptions.up.store(true, Ordering::Release);
    tracing::info!(channels = subscribed.len(), "subscribed to Redis pub/sub");
    for done in resubscribed {
        let _ = done.send(());
    }
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { return Ended::Lost(Vec::new()) };
                inbox::receive(node, message.get_channel_name(), message.get_payload_bytes());
            }
            _ = subscriptions.wake.notified() => {
                let mut work = std::mem::take(&mut *subscriptions.work.lock());
                if !work.resubscribe.is_empty() {
                    // The new connection subscribes to every channel of
                    // interest: the pending changes are in it; the barriers
                    // are answered by its first round of work.
                    let mut kept = subscriptions.work.lock();
                    kept.barriers.append(&mut work.barriers);
                    subscriptions.wake.notify_one();
                    return Ended::Resubscribe(work.resubscribe);
                }
                for channel in work.pending {
                    let want = subscriptions.wants(&channel);
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
                        return Ended::Lost(Vec::new());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn subscriptions() -> Subscriptions {
        // Opening a client does not connect.
        Subscriptions::new(redis::Client::open("redis://127.0.0.1:1/").unwrap())
    }

    fn pending(subscriptions: &Subscriptions) -> Vec<String> {
        let mut pending: Vec<String> = std::mem::take(&mut subscriptions.work.lock().pending)
            .into_iter()
            .collect();
        pending.sort();
        pending
    }

    #[test]
    fn the_first_reason_subscribes_and_the_last_one_gone_unsubscribes() {
        let subscriptions = subscriptions();
        subscriptions.interest("rain:room:/:a".into(), true);
        assert!(subscriptions.wants("rain:room:/:a"));
        assert_eq!(pending(&subscriptions), ["rain:room:/:a"]);

        // A second member changes nothing to subscribe.
        subscriptions.interest("rain:room:/:a".into(), true);
        subscriptions.interest("rain:room:/:a".into(), false);
        assert!(subscriptions.wants("rain:room:/:a"));
        assert!(pending(&subscriptions).is_empty());

        subscriptions.interest("rain:room:/:a".into(), false);
        assert!(!subscriptions.wants("rain:room:/:a"));
        assert_eq!(pending(&subscriptions), ["rain:room:/:a"]);
    }

    #[test]
    fn losing_a_reason_never_had_changes_nothing() {
        let subscriptions = subscriptions();
        subscriptions.interest("rain:ns:/".into(), false);
        assert!(!subscriptions.wants("rain:ns:/"));
        assert!(subscriptions.interest.lock().is_empty());
        assert!(pending(&subscriptions).is_empty());
    }

    #[test]
    fn a_barrier_is_queued_with_the_work() {
        let subscriptions = subscriptions();
        let _subscribed = subscriptions.barrier();
        assert_eq!(subscriptions.work.lock().barriers.len(), 1);
    }
}
