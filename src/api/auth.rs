//! Who is calling the HTTP API: the token of each request (`Authorization:
//! Bearer <secret>` or, as RAIN's API took it, `user: <secret>`), checked in
//! constant time against `API_TOKENS`, then the scope the route needs.
//!
//! Owns the two middlewares ([`authenticate`] for every route but the health
//! checks, [`require`] per route) and the [`Caller`] they leave in the request
//! for handlers to log. Does not own the token settings (see
//! `crate::config::ApiToken`) nor what a route does.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::ApiError;
use crate::config::{ApiScope, ApiToken};

/// The tokens a node accepts.
#[derive(Debug)]
pub struct Tokens(Vec<ApiToken>);

impl Tokens {
    pub fn new(tokens: Vec<ApiToken>) -> Tokens {
        Tokens(tokens)
    }

    /// The token whose secret the request's `Authorization: Bearer …` header
    /// carries or, without one, its `user` header. Every token is compared, each in constant time, and which one
    /// matched is selected without a branch, so the time taken does not tell
    /// how much of a guess was right nor which token it was close to (only
    /// whether its length is a secret's length).
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<&ApiToken> {
        let presented = bearer(headers).or_else(|| user(headers))?;
        let mut found: u32 = 0;
        for (i, token) in self.0.iter().enumerate() {
            let index = u32::try_from(i + 1).unwrap_or(u32::MAX);
            found.conditional_assign(&index, token.secret().ct_eq(presented));
        }
        (found as usize).checked_sub(1).and_then(|i| self.0.get(i))
    }
}

/// The secret of an `Authorization: Bearer <secret>` header (the scheme is
/// case-insensitive, as RFC 9110 says).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let secret = rest.trim_ascii();
    (!secret.is_empty()).then_some(secret)
}

/// The secret of a `user: <secret>` header.
fn user(headers: &HeaderMap) -> Option<&[u8]> {
    let secret = headers.get(USER)?.as_bytes().trim_ascii();
    (!secret.is_empty()).then_some(secret)
}

/// The header RAIN's API took the token in.
pub const USER: &str = "user";

/// The token a request was authenticated with: its name (for the logs) and
/// scope. Never its secret.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: Arc<str>,
    pub scope: ApiScope,
}

/// Refuses a request without a known token (401); otherwise lets it through
/// with its [`Caller`].
pub async fn authenticate(
    State(tokens): State<Arc<Tokens>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(token) = tokens.authenticate(request.headers()) else {
        return ApiError::Unauthorized.into_response();
    };
    let caller = Caller {
        name: token.name().into(),
        scope: token.scope(),
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Refuses a request whose token lacks the `needed` scope (403). Runs after
/// [`authenticate`].
pub async fn require(State(needed): State<ApiScope>, request: Request, next: Next) -> Response {
    match request.extensions().get::<Caller>() {
        Some(caller) if caller.scope.allows(needed) => next.run(request).await,
        Some(caller) => ApiError::Forbidden {
            token: caller.name.to_string(),
            needed,
        }
        .into_response(),
        None => ApiError::Unauthorized.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn tokens() -> Tokens {
        Tokens::new(vec![
            "ci:emit:0123456789abcdef".parse().unwrap(),
            "ops:admin:0123456789abcdeg".parse().unwrap(),
        ])
    }

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_token_whose_secret_is_presented() {
        let tokens = tokens();
        let name = |value: &str| tokens.authenticate(&with(value)).map(ApiToken::name);
        assert_eq!(name("Bearer 0123456789abcdef"), Some("ci"));
        assert_eq!(name("bearer  0123456789abcdeg "), Some("ops"));
        for refused in [
            "Bearer 0123456789abcde",
            "Bearer 0123456789abcdefg",
            "Bearer ",
            "Basic 0123456789abcdef",
            "0123456789abcdef",
            "Bearer ci:emit:0123456789abcdef",
        ] {
            assert_eq!(name(refused), None, "{refused}");
        }
        assert!(tokens.authenticate(&HeaderMap::new()).is_none());
        let user = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(USER, HeaderValue::from_str(value).unwrap());
            tokens.authenticate(&headers).map(ApiToken::name)
        };
        assert_eq!(user("0123456789abcdef"), Some("ci"));
        assert_eq!(user(" 0123456789abcdeg "), Some("ops"));
        for refused in ["", "Bearer 0123456789abcdef", "0123456789abcde"] {
            assert_eq!(user(refused), None, "{refused:?}");
        }
        // Authorization, when it is a bearer one, is the one that counts.
        let mut both = with("Bearer 0123456789abcdeg");
        both.insert(USER, HeaderValue::from_static("0123456789abcdef"));
        assert_eq!(tokens.authenticate(&both).map(ApiToken::name), Some("ops"));
        assert!(
            Tokens::new(Vec::new())
                .authenticate(&with("Bearer x"))
                .is_none()
        );
    }
}
