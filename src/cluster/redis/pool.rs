//! Commands on pooled connections: the pool, and the one way to use it.
//!
//! Owns [`CommandPool::run`], through which every command that is not pub/sub
//! goes: it takes a connection from the pool, bounds the whole operation
//! (waiting for the connection included) by the operation timeout, and hands
//! back a [`ClusterError`] that keeps its source. Does not own the pub/sub
//! connection (see `super::subscriber`) nor decide what a failure means: each
//! caller does (drop and count, log, or hand the error on).

use deadpool_redis::{Connection, CreatePoolError, Pool, PoolConfig, Runtime, Timeouts};

use super::OP_TIMEOUT;
use crate::cluster::ClusterError;

/// Connections for commands, at most this many at once.
const POOL_SIZE: usize = 16;

/// The pool of command connections; reachable only through [`Self::run`].
pub(super) struct CommandPool {
    pool: Pool,
}

impl CommandPool {
    /// A pool for `url`; connects lazily, on first use.
    pub(super) fn new(url: &str) -> Result<CommandPool, CreatePoolError> {
        let mut config = deadpool_redis::Config::from_url(url);
        config.pool = Some(PoolConfig {
            max_size: POOL_SIZE,
            timeouts: Timeouts {
                wait: Some(OP_TIMEOUT),
                create: Some(OP_TIMEOUT),
                recycle: Some(OP_TIMEOUT),
            },
            ..PoolConfig::default()
        });
        let pool = config.create_pool(Some(Runtime::Tokio1))?;
        Ok(CommandPool { pool })
    }

    /// Runs one operation on a pooled connection, within the operation timeout.
    pub(super) async fn run<T>(
        &self,
        operation: impl AsyncFnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, ClusterError> {
        let attempt = async {
            let mut connection = self.pool.get().await.map_err(ClusterError::Pool)?;
            Ok(operation(&mut connection).await?)
        };
        tokio::time::timeout(OP_TIMEOUT, attempt)
            .await
            .unwrap_or(Err(ClusterError::Timeout))
    }
}
