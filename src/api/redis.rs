//! The Cloud API's `/mothership` routes: the cluster's Redis deployment.
//!
//! A cluster has exactly one backend, named by the id `default`
//! ([`BACKEND_ID`]), never by its URL (`REDIS_SERVER` may hold a user name and
//! password). `GET /mothership/all` lists it, `GET /mothership/{id}` shows it
//! (404 for any other id), both with the `read` scope: a [`BackendInfo`] as
//! this node sees it, figures the Redis user may not read being null, 503
//! only when Redis failed or did not answer. `POST /mothership` (`admin`) is
//! always refused with 409: the deployment is fixed at start by
//! `REDIS_SERVER`, and moving a cluster to another Redis is a rolling restart
//! with the new one, not an API call (see `docs/architecture.md`). Owns these
//! handlers and their errors; the summary itself is the cluster's
//! (`crate::cluster::Membership::backend_info`), the scopes `super::auth`'s.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use thiserror::Error;

use crate::cluster::{BACKEND_ID, BackendInfo, Cluster, ClusterError};

/// Why a `/mothership` request failed; the `Display` text is the JSON body's
/// `error` (never the URL: no variant holds it).
#[derive(Debug, Error)]
pub enum MothershipError {
    #[error("no Redis endpoint {0:?}: a cluster has one, \"default\" (see GET /mothership/all)")]
    NoEndpoint(String),
    #[error(
        "the cluster's Redis is fixed at start by REDIS_SERVER (one deployment per cluster, \
         id \"default\"); to move the cluster to another Redis, restart its nodes one at a time \
         with the new REDIS_SERVER"
    )]
    Fixed,
    #[error("the cluster's backend did not answer: {0}")]
    Unavailable(#[from] ClusterError),
}

impl IntoResponse for MothershipError {
    fn into_response(self) -> Response {
        let status = match self {
            MothershipError::NoEndpoint(_) => StatusCode::NOT_FOUND,
            MothershipError::Fixed => StatusCode::CONFLICT,
            MothershipError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// `GET /mothership/all`: the one deployment, in a list.
pub async fn all(
    State(cluster): State<Arc<dyn Cluster>>,
) -> Result<Json<Vec<BackendInfo>>, MothershipError> {
    Ok(Json(vec![cluster.backend_info().await?]))
}

/// `GET /mothership/{id}`: the deployment when `id` is `default`.
pub async fn one(
    State(cluster): State<Arc<dyn Cluster>>,
    Path(id): Path<String>,
) -> Result<Json<BackendInfo>, MothershipError> {
    if id != BACKEND_ID {
        // Echoed for the operator's sake, but not without bound.
        let shown: String = id.chars().take(64).collect();
        return Err(MothershipError::NoEndpoint(shown));
    }
    Ok(Json(cluster.backend_info().await?))
}

/// `POST /mothership`: refused, whatever the body (see the module's doc).
pub async fn create() -> MothershipError {
    MothershipError::Fixed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::memory::MemoryCluster;

    #[tokio::test]
    async fn the_embedded_backend_is_the_default_endpoint_with_what_it_holds() {
        let cluster: Arc<dyn Cluster> = Arc::new(MemoryCluster::new("n1".into()));
        cluster
            .session_store("s1", vec![("k".into(), "v".into())])
            .await
            .unwrap();
        let Json(info) = one(State(cluster.clone()), Path("default".into()))
            .await
            .unwrap();
        assert_eq!(
            (info.id.as_str(), info.kind.as_str()),
            ("default", "embedded")
        );
        assert!(info.ready);
        assert_eq!(info.keys, Some(1));
        assert_eq!((info.version, info.used_memory_bytes), (None, None));
        let Json(all) = all(State(cluster.clone())).await.unwrap();
        assert_eq!(all.len(), 1);
        let missing = one(State(cluster), Path("redis://h:6379".into()))
            .await
            .unwrap_err();
        assert!(
            matches!(missing, MothershipError::NoEndpoint(_)),
            "{missing}"
        );
        assert_eq!(missing.into_response().status(), StatusCode::NOT_FOUND);
        assert_eq!(
            create().await.into_response().status(),
            StatusCode::CONFLICT
        );
    }
}
