//! Operations the API asks a particular node to carry out (unregister it,
//! host what its wiring says, undeploy a component there, make an
//! instance…), and that node's confirmation.
//!
//! Any node answers any API request from the shared state; when the work
//! belongs to another node, the node that took the request sends it an
//! [`Op`] over the cluster (topic `api`, this node included, so there is one
//! path) and answers once the reply comes, or 504 after `ROUTE_TIMEOUT_MS`.
//! Owns the messages, their format and the table of calls waiting for a
//! reply. Does not own what an operation does (see `super::cloud`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;

use super::ApiError;
use crate::cluster::Cluster;
use crate::cluster::wire::{WireError, decode_versioned, encode_versioned};

/// The cluster topic of these messages.
pub const TOPIC: &str = "api";

/// The format byte of [`Message`].
const FORMAT: u8 = 1;

/// What a node is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Drain as on SIGTERM but stay up, unregistered.
    Unregister,
    /// Undo an unregister.
    Register,
    /// Drop caches and subscriptions and rebuild them from its own state.
    Reset,
    /// Host what the desired state now says (after a wiring or a deploy),
    /// and refuse connects to what it says was undeployed.
    Adopt,
    /// Tell the sockets of a component's channels, disconnect them, host it
    /// no more.
    Undeploy { key: String, reason: String },
    /// Make an instance of a component hosted there.
    Instantiate { key: String },
    /// Serve an instance too (its component must be hosted there).
    ServeInstance { instance: String, key: String },
    /// Announce a hosted component again (its descriptor re-read).
    Refresh { key: String },
}

/// An operation's result as it travels back: the JSON answer, or the status
/// and message of the error.
type Outcome = Result<String, (u16, String)>;

#[derive(Debug, Serialize, Deserialize)]
enum Message {
    Request { id: u64, from: String, op: Op },
    Reply { id: u64, outcome: Outcome },
}

impl Message {
    fn encode(&self) -> Bytes {
        encode_versioned(FORMAT, self).into()
    }

    fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        decode_versioned(FORMAT, bytes)
    }
}

/// A node's side of the operations: the calls it waits on.
pub struct Control {
    cluster: Arc<dyn Cluster>,
    timeout: Duration,
    pending: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
}

/// Carries an operation out on this node (`super::cloud` does).
pub trait Executor: Send + Sync + 'static {
    fn execute(&self, op: Op) -> futures_util::future::BoxFuture<'static, Result<Value, ApiError>>;
}

impl Control {
    pub fn new(cluster: Arc<dyn Cluster>, timeout: Duration) -> Control {
        Control {
            cluster,
            timeout,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Has `node` carry `op` out; its answer, or 504 when it does not confirm
    /// in time.
    pub async fn run(&self, node: &str, op: Op) -> Result<Value, ApiError> {
        let (id, receiver) = self.expect();
        let request = Message::Request {
            id,
            from: self.cluster.node_id().to_string(),
            op,
        };
        self.cluster.send(node, TOPIC, request.encode());
        self.wait(id, receiver, node).await
    }

    /// Has a live host of `service`, picked round-robin, carry `op` out;
    /// the host and its answer. 409 when the service has no live host.
    pub async fn run_on_a_host(&self, service: &str, op: Op) -> Result<(String, Value), ApiError> {
        let (id, receiver) = self.expect();
        let request = Message::Request {
            id,
            from: self.cluster.node_id().to_string(),
            op,
        };
        let host = match self
            .cluster
            .dispatch(service, TOPIC, request.encode())
            .await
        {
            Ok(Some(host)) => host,
            Ok(None) => {
                self.pending.lock().remove(&id);
                return Err(ApiError::Conflict(format!(
                    "component {service} has no live host"
                )));
            }
            Err(error) => {
                self.pending.lock().remove(&id);
                return Err(error.into());
            }
        };
        let answer = self.wait(id, receiver, &host).await?;
        Ok((host, answer))
    }

    /// Has every node of `nodes` carry `op` out, at once; each one's answer.
    pub async fn run_on_each(
        &self,
        nodes: &[String],
        op: &Op,
    ) -> Vec<(String, Result<Value, ApiError>)> {
        let calls = nodes
            .iter()
            .map(|node| async move { (node.clone(), self.run(node, op.clone()).await) });
        futures_util::future::join_all(calls).await
    }

    fn expect(&self) -> (u64, oneshot::Receiver<Outcome>) {
        let id: u64 = rand::random();
        let (sender, receiver) = oneshot::channel();
        self.pending.lock().insert(id, sender);
        (id, receiver)
    }

    async fn wait(
        &self,
        id: u64,
        receiver: oneshot::Receiver<Outcome>,
        node: &str,
    ) -> Result<Value, ApiError> {
        let answer = tokio::time::timeout(self.timeout, receiver).await;
        self.pending.lock().remove(&id);
        match answer {
            Ok(Ok(Ok(json))) => Ok(serde_json::from_str(&json).unwrap_or(Value::Null)),
            Ok(Ok(Err((status, message)))) => Err(match status {
                404 => ApiError::Missing(message),
                409 => ApiError::Conflict(message),
                503 => ApiError::Unavailable,
                400 => ApiError::BadRequest(message),
                _ => ApiError::Timeout(message),
            }),
            _ => Err(ApiError::Timeout(format!(
                "node {node} did not confirm within ROUTE_TIMEOUT_MS"
            ))),
        }
    }

    fn resolve(&self, id: u64, outcome: Outcome) {
        if let Some(waiting) = self.pending.lock().remove(&id) {
            let _ = waiting.send(outcome);
        }
    }
}

/// Takes this node's `api` messages off the cluster: requests are carried out
/// by the executor and answered; replies go to the call waiting for them.
pub struct Inbound {
    pub control: Arc<Control>,
    pub executor: Arc<dyn Executor>,
}

impl crate::cluster::MessageHandler for Inbound {
    fn on_message(&self, body: Bytes) {
        match Message::decode(&body) {
            Ok(Message::Reply { id, outcome }) => self.control.resolve(id, outcome),
            Ok(Message::Request { id, from, op }) => {
                let executor = self.executor.clone();
                let cluster = self.control.cluster.clone();
                tokio::spawn(async move {
                    let outcome = match executor.execute(op).await {
                        Ok(value) => Ok(value.to_string()),
                        Err(error) => {
                            let status = error_status(&error);
                            Err((status, error.to_string()))
                        }
                    };
                    let reply = Message::Reply { id, outcome };
                    cluster.send(&from, TOPIC, reply.encode());
                });
            }
            Err(error) => {
                tracing::warn!(%error, "dropping an API operation this node cannot read");
            }
        }
    }
}

fn error_status(error: &ApiError) -> u16 {
    match error {
        ApiError::Missing(_) | ApiError::NotFound => 404,
        ApiError::Conflict(_) => 409,
        ApiError::Unavailable => 503,
        ApiError::BadRequest(_) => 400,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_other_formats_are_refused() {
        let request = Message::Request {
            id: 9,
            from: "a".into(),
            op: Op::Undeploy {
                key: "quiz@1.0".into(),
                reason: "retired".into(),
            },
        };
        let bytes = request.encode();
        match Message::decode(&bytes).unwrap() {
            Message::Request { id, from, op } => {
                assert_eq!((id, from.as_str()), (9, "a"));
                assert_eq!(
                    op,
                    Op::Undeploy {
                        key: "quiz@1.0".into(),
                        reason: "retired".into()
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        let mut other = bytes.to_vec();
        other[0] = FORMAT + 1;
        assert!(Message::decode(&other).is_err());
    }
}
