//! The API's OpenAPI 3.1 document, served at `GET /openapi.json`.
//!
//! It is generated, never written: each handler carries its own
//! `#[utoipa::path]` (method, path, body, answers), and `crate::api` mounts a
//! route only through utoipa-axum's `routes!`, which documents it in the same
//! step. [`guarded`] then writes the route's scope into both the router (the
//! `auth::require` check) and the document (its security requirement and its
//! 401/403 answers, plus 400/413/415 for an operation with a body), so what is
//! enforced and what is documented come from one value.
//!
//! Owns the document's frame (title, the two security schemes, [`ErrorBody`]),
//! the guard and the `/openapi.json` handler. Does not own the routes (see
//! `crate::api`) nor what they do.

use std::sync::Arc;

use axum::Extension;
use axum::http::header;
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::UtoipaMethodRouter;

use super::auth;
use crate::config::ApiScope;

/// The body of every error answer of the API.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What was wrong, for a person to read (never a secret).
    pub error: String,
}

/// The names of the two security schemes: the same secret either way.
pub const BEARER: &str = "bearer";
pub const USER_HEADER: &str = "user";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "rain-node API",
        description = "The HTTP API of a rain-node, on its own listener (ADMIN_HOST:ADMIN_PORT). \
            Every operation needs a token of API_TOKENS, as `Authorization: Bearer <secret>` or \
            `user: <secret>`, whose scope covers it (`admin` covers all); errors are \
            `{\"error\": string}`. A path answers the same with a trailing slash."
    ),
    modifiers(&Schemes),
    components(schemas(ErrorBody))
)]
struct Frame;

/// Adds the two ways of presenting a token.
struct Schemes;

impl Modify for Schemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <secret>`, a secret of API_TOKENS",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            USER_HEADER,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                USER_HEADER,
                "`user: <secret>`, the same secret as RAIN's API took it",
            ))),
        );
    }
}

/// `base` (an object's derived schema) with the rule that exactly one of
/// the fields `a` and `b` is given (a string, or `b_items` strings), the
/// other absent or null: without it a schema-valid body could be refused.
pub(super) fn either_field(
    base: RefOr<utoipa::openapi::schema::Schema>,
    a: &str,
    a_schema: impl Into<RefOr<utoipa::openapi::schema::Schema>>,
    b: &str,
    b_schema: impl Into<RefOr<utoipa::openapi::schema::Schema>>,
) -> RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder, ObjectBuilder, Type};
    let null = || ObjectBuilder::new().schema_type(Type::Null);
    let a_schema = a_schema.into();
    let b_schema = b_schema.into();
    let only = |given: &str, schema: RefOr<_>, other: &str| {
        ObjectBuilder::new()
            .property(given, schema)
            .required(given)
            .property(other, null())
    };
    AllOfBuilder::new()
        .item(base)
        .item(
            AnyOfBuilder::new()
                .item(only(a, a_schema, b))
                .item(only(b, b_schema, a))
                .description(Some(format!("`{a}` or `{b}`, not both"))),
        )
        .into()
}

/// The document before any route: title, version, security schemes and the
/// error body.
pub(super) fn frame() -> utoipa::openapi::OpenApi {
    Frame::openapi()
}

/// `route` behind `scope`: the router refuses a caller without it (403), and
/// the document says so on each of its operations.
pub(super) fn guarded<S>(route: UtoipaMethodRouter<S>, scope: ApiScope) -> UtoipaMethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let (schemas, mut paths, method_router) = route;
    for item in paths.paths.values_mut() {
        for operation in operations_mut(item) {
            document_guard(operation, scope);
        }
    }
    let method_router = method_router.route_layer(from_fn_with_state(scope, auth::require));
    (schemas, paths, method_router)
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

fn document_guard(operation: &mut Operation, scope: ApiScope) {
    operation.security = Some(vec![
        SecurityRequirement::new(BEARER, [scope.as_str()]),
        SecurityRequirement::new(USER_HEADER, [scope.as_str()]),
    ]);
    let mut errors = vec![
        ("401", "No token, or not one of API_TOKENS".to_string()),
        ("403", format!("The token's scope does not cover `{scope}`")),
    ];
    if operation.request_body.is_some() {
        errors.extend([
            (
                "400",
                "The body is not valid JSON or not the schema's: the message names the field"
                    .to_string(),
            ),
            ("413", "The body is over the size limit".to_string()),
            ("415", "No `Content-Type: application/json`".to_string()),
        ]);
    }
    for (status, description) in errors {
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(&description));
    }
}

/// An answer whose body is an [`ErrorBody`].
pub fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

/// The generated document as served, rendered once.
#[derive(Clone)]
pub(super) struct Document(pub Arc<str>);

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object))
)]
pub(super) async fn openapi(Extension(Document(text)): Extension<Document>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        text.to_string(),
    )
}
