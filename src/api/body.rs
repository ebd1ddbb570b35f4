//! The JSON body of an API request: [`ApiJson`], axum's `Json` whose
//! rejections are the API's own `{"error": …}` answers (400 naming the field,
//! 415 without `Content-Type: application/json`, 413 over the size limit)
//! instead of axum's plain text.
//!
//! Owns only that extractor and the mapping of a rejection to an
//! [`ApiError`]; what a valid body is belongs to each route's type.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;

use super::ApiError;

/// A request body read as JSON into `T` (serde; `serde_path_to_error` under
/// axum names the field that did not fit).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(rejection.into()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        let message = rejection.body_text();
        match rejection.status() {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(message),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(message),
            _ => ApiError::BadRequest(message),
        }
    }
}
