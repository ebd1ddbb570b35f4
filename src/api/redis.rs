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

use axum::Json;
use axum::extract::{Path, State};

use super::ApiError;
use super::cloud::Cloud;
use super::openapi::ErrorBody;
use super::webcomponents::ComponentView;
use crate::cluster::{BACKEND_ID, BackendInfo};

/// Why `POST /mothership` is refused.
const FIXED: &str = "the cluster's Redis is fixed at start by REDIS_SERVER (one deployment per cluster, \
     id \"default\"); to move the cluster to another Redis, restart its nodes one at a time \
     with the new REDIS_SERVER";

/// `id` when it names the one deployment, else 404.
fn check_id(id: &str) -> Result<(), ApiError> {
    if id == BACKEND_ID {
        return Ok(());
    }
    // Echoed for the operator's sake, but not without bound.
    let shown: String = id.chars().take(64).collect();
    Err(ApiError::Missing(format!(
        "no Redis endpoint {shown:?}: a cluster has one, \"default\" (see GET /mothership/all)"
    )))
}

/// The cluster's Redis deployment, in a list of one.
#[utoipa::path(get, path = "/mothership/all", tag = "mothership",
    responses((status = 200, description = "The one deployment", body = Vec<BackendInfo>),
        (status = 503, description = "Redis did not answer", body = ErrorBody)))]
pub async fn all(State(cloud): State<Cloud>) -> Result<Json<Vec<BackendInfo>>, ApiError> {
    Ok(Json(vec![cloud.cluster.backend_info().await?]))
}

/// The cluster's Redis deployment (id `default`): a summary from `INFO` and
/// a bounded `SCAN`; figures the Redis user may not read are null.
#[utoipa::path(get, path = "/mothership/{id}", tag = "mothership",
    params(("id" = String, Path, description = "`default`")),
    responses((status = 200, description = "The deployment", body = BackendInfo),
        (status = 404, description = "Not `default`", body = ErrorBody),
        (status = 503, description = "Redis did not answer", body = ErrorBody)))]
pub async fn one(
    State(cloud): State<Cloud>,
    Path(id): Path<String>,
) -> Result<Json<BackendInfo>, ApiError> {
    check_id(&id)?;
    Ok(Json(cloud.cluster.backend_info().await?))
}

/// The components whose registry the deployment holds (every component of
/// the cluster: one deployment holds them all).
#[utoipa::path(get, path = "/mothership/{id}/webcomponents", tag = "mothership",
    params(("id" = String, Path, description = "`default`")),
    responses((status = 200, description = "Its components, sorted by id@version", body = Vec<ComponentView>),
        (status = 404, description = "Not `default`", body = ErrorBody),
        (status = 409, description = "This node runs no Mothership", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody)))]
pub async fn components(
    State(cloud): State<Cloud>,
    Path(id): Path<String>,
) -> Result<Json<Vec<ComponentView>>, ApiError> {
    check_id(&id)?;
    Ok(Json(super::webcomponents::views(&cloud).await?))
}

/// Registering another Redis endpoint: refused, whatever the body (see the
/// module's doc).
#[utoipa::path(post, path = "/mothership", tag = "mothership",
    responses((status = 409, description = "Always: the deployment is fixed by REDIS_SERVER", body = ErrorBody)))]
pub async fn create() -> ApiError {
    ApiError::Conflict(FIXED.into())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    use super::*;
    use crate::cluster::Cluster;
    use crate::cluster::memory::MemoryCluster;

    #[tokio::test]
    async fn the_embedded_backend_is_the_default_endpoint_with_what_it_holds() {
        let cluster: Arc<dyn Cluster> = Arc::new(MemoryCluster::new("n1".into()));
        let settings = crate::config::Settings::default();
        let cloud = Cloud::new(
            crate::io::SocketIo::new(&settings, cluster.clone()),
            &settings,
            None,
        );
        cluster
            .session_store("s1", vec![("k".into(), "v".into())])
            .await
            .unwrap();
        let Json(info) = one(State(cloud.clone()), Path("default".into()))
            .await
            .unwrap();
        assert_eq!(
            (info.id.as_str(), info.kind.as_str()),
            ("default", "embedded")
        );
        assert!(info.ready);
        assert_eq!(info.keys, Some(1));
        assert_eq!((info.version, info.used_memory_bytes), (None, None));
        let Json(all) = all(State(cloud.clone())).await.unwrap();
        assert_eq!(all.len(), 1);
        let missing = one(State(cloud), Path("redis://h:6379".into()))
            .await
            .unwrap_err();
        assert!(matches!(missing, ApiError::Missing(_)), "{missing}");
        assert_eq!(missing.into_response().status(), StatusCode::NOT_FOUND);
        assert_eq!(
            create().await.into_response().status(),
            StatusCode::CONFLICT
        );
    }
}
