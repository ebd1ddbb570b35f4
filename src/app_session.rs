//! Sessions: data that belongs to a client rather than to one connection
//! (language, user, application data), shared by every node.
//!
//! Owns the session handle handlers use. A socket's session is the one its
//! CONNECT's `auth.sessionId` token names, else its `rain_session` cookie's
//! (the Engine.IO handshake sets one when a client has none), else a fresh one
//! — always a session a node minted (see `crate::session_token`): a client
//! cannot claim an id. The data lives in the cluster backend (`session:{id}`
//! in Redis) with a sliding TTL: every read or write extends it; its size is
//! capped (`SESSION_VALUE_MAX_BYTES`, `SESSION_MAX_BYTES`). Does not own the
//! storage (see `crate::cluster`) nor the tokens.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cluster::{Cluster, ClusterError, SessionWriteError};
use crate::session_token::SessionId;

/// One client's session, readable and writable from any node. Its `Debug`
/// does not show the id.
#[derive(Clone)]
pub struct AppSession {
    id: SessionId,
    cluster: Arc<dyn Cluster>,
}

impl std::fmt::Debug for AppSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSession").field("id", &self.id).finish()
    }
}

impl AppSession {
    pub(crate) fn new(id: SessionId, cluster: Arc<dyn Cluster>) -> Self {
        AppSession { id, cluster }
    }

    /// The session's id: the key of its data, never a credential by itself
    /// (a client presents the token, which only a node can make).
    pub fn id(&self) -> &str {
        self.id.as_str()
    }

    /// Every field of the session (empty for a new or expired one).
    pub async fn get_all(&self) -> Result<HashMap<String, String>, ClusterError> {
        self.cluster.session_load(self.id.as_str()).await
    }

    pub async fn get(&self, field: &str) -> Result<Option<String>, ClusterError> {
        Ok(self.get_all().await?.remove(field))
    }

    /// Sets fields, keeping the others; refused (nothing written) when a
    /// value or the whole session would be over its limit.
    pub async fn set(&self, fields: Vec<(String, String)>) -> Result<(), SessionWriteError> {
        self.cluster.session_store(self.id.as_str(), fields).await
    }
}

/// What a client is told when a session write failed: `session too large`
/// for a limit, `session unavailable` otherwise (the cause goes to the log).
pub fn write_error_message(error: &SessionWriteError) -> &'static str {
    match error {
        SessionWriteError::ValueTooLarge { .. } | SessionWriteError::TooLarge { .. } => {
            "session too large"
        }
        SessionWriteError::Cluster(_) => "session unavailable",
    }
}
