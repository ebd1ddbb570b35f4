//! Sessions: data that belongs to a client rather than to one connection
//! (language, user, application data), shared by every node.
//!
//! Owns the session handle handlers use and the rule for a socket's session id:
//! the CONNECT auth's `sessionId`, else the `rain_session` cookie (which the
//! Engine.IO handshake sets when a client has none), else a fresh id. The data
//! lives in the cluster backend (`session:{id}` in Redis) with a sliding TTL:
//! every read or write extends it. Does not own the storage (see
//! `crate::cluster`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::cluster::{Cluster, ClusterError};

pub use crate::transport::valid_session_id;

/// One client's session, readable and writable from any node.
#[derive(Clone)]
pub struct AppSession {
    id: Arc<str>,
    cluster: Arc<dyn Cluster>,
}

impl std::fmt::Debug for AppSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSession").field("id", &self.id).finish()
    }
}

impl AppSession {
    pub(crate) fn new(id: Arc<str>, cluster: Arc<dyn Cluster>) -> Self {
        AppSession { id, cluster }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Every field of the session (empty for a new or expired one).
    pub async fn get_all(&self) -> Result<HashMap<String, String>, ClusterError> {
        self.cluster.session_load(&self.id).await
    }

    pub async fn get(&self, field: &str) -> Result<Option<String>, ClusterError> {
        Ok(self.get_all().await?.remove(field))
    }

    /// Sets fields, keeping the others.
    pub async fn set(&self, fields: Vec<(String, String)>) -> Result<(), ClusterError> {
        self.cluster.session_store(&self.id, fields).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_checked() {
        assert!(valid_session_id("abc-DEF_123"));
        assert!(!valid_session_id(""));
        assert!(!valid_session_id("a b"));
        assert!(!valid_session_id("x;y"));
        assert!(!valid_session_id(&"a".repeat(129)));
    }
}
