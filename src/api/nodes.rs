//! `/rainservers`, for this node: `DELETE /rainservers/{id}` unregisters it,
//! `POST /rainservers` with `{"node": id}` registers it again, `PUT
//! /rainservers/{id}` resets it; each answers `200 {"node", "state"}` once
//! done. Another node's id is `404` here.
//!
//! Owns these routes' bodies and answers. Does not own what the operations do
//! (see `crate::node_control`).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use super::auth::Caller;
use crate::node_control::{NodeControl, NodeControlError};

/// The body of `POST /rainservers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RegisterRequest {
    node: String,
}

/// An id that is not this node's.
fn unknown(id: &str) -> Response {
    let body = json!({ "error": format!("no node {id:?} here") });
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// `200 {"node", "state"}`, or the reason it was not done: `409` while the
/// node shuts down, `503` when the cluster did not confirm it.
fn answer(control: &NodeControl, done: Result<(), NodeControlError>) -> Response {
    let status = match &done {
        Ok(()) => StatusCode::OK,
        Err(NodeControlError::ShuttingDown) => StatusCode::CONFLICT,
        Err(NodeControlError::Cluster(_)) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = match done {
        Ok(()) => json!({ "node": control.node_id(), "state": control.state() }),
        Err(error) => json!({
            "error": error.to_string(),
            "node": control.node_id(),
            "state": control.state(),
        }),
    };
    (status, Json(body)).into_response()
}

pub(super) async fn unregister(
    State(control): State<NodeControl>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    if id != control.node_id() {
        return unknown(&id);
    }
    tracing::info!(token = %caller.name, "api: unregister this node");
    let done = control.unregister().await;
    answer(&control, done)
}

pub(super) async fn reset(
    State(control): State<NodeControl>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    if id != control.node_id() {
        return unknown(&id);
    }
    tracing::info!(token = %caller.name, "api: reset this node");
    let done = control.reset().await;
    answer(&control, done)
}

pub(super) async fn register(
    State(control): State<NodeControl>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = body
        .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?
        .0;
    if request.node != control.node_id() {
        return Ok(unknown(&request.node));
    }
    tracing::info!(token = %caller.name, "api: register this node again");
    let done = control.register().await;
    Ok(answer(&control, done))
}
