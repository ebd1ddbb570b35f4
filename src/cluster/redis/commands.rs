//! Command connections, and the one way to use them.
//!
//! Owns [`Commands::run`], through which every command that is not pub/sub
//! goes: it bounds the whole operation (connecting included) by the operation
//! timeout and hands back a [`ClusterError`] that keeps its source. A
//! [`Commands`] is one multiplexed connection (`redis`'s `ConnectionManager`):
//! concurrent callers share it without a checkout, so no command pays a pool's
//! recycle check (a `PING` and an `UNWATCH` per checkout with a pool), and it
//! reconnects by itself after Redis restarts. It connects on first use and
//! again after a failed attempt, so a Redis that is down at start is simply
//! retried. The node keeps two: one for traffic, and one for the heartbeat so
//! that client traffic can never delay the node's own liveness. Does not own
//! the pub/sub connection (see `super::subscriber`) nor decide what a failure
//! means: each caller does (drop and count, log, or hand the error on).

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::OP_TIMEOUT;
use crate::cluster::ClusterError;

/// One multiplexed command connection; reachable only through [`Self::run`].
pub(super) struct Commands {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
}

impl Commands {
    /// Commands for `client`; connects lazily, on first use.
    pub(super) fn new(client: redis::Client) -> Commands {
        Commands {
            client,
            connection: OnceCell::new(),
        }
    }

    async fn connection(&self) -> Result<ConnectionManager, ClusterError> {
        let connection = self
            .connection
            .get_or_try_init(|| {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(OP_TIMEOUT)
                    .set_response_timeout(OP_TIMEOUT)
                    // Reconnection is retried by the next command, not held
                    // inside this one.
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(self.client.clone(), config)
            })
            .await?;
        Ok(connection.clone())
    }

    /// Runs one operation on the connection, within the operation timeout.
    pub(super) async fn run<T>(
        &self,
        operation: impl AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, ClusterError> {
        let attempt = async {
            let mut connection = self.connection().await?;
            Ok(operation(&mut connection).await?)
        };
        tokio::time::timeout(OP_TIMEOUT, attempt)
            .await
            .unwrap_or(Err(ClusterError::Timeout))
    }
}
