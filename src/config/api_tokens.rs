//! The HTTP API's bearer tokens as settings: `API_TOKENS=name:scope:secret,…`.
//!
//! Owns the token type, its scopes, the parsing and the rules a token must meet
//! (a name fit for logs, a known scope, a secret of at least
//! [`MIN_SECRET_LENGTH`] characters that a header can carry), and keeping the
//! secret out of `Debug` output and error messages. Does not own checking a
//! request's token (see `crate::api`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The shortest secret accepted: a shorter one could be guessed.
pub const MIN_SECRET_LENGTH: usize = 16;

/// What a token may do on the API listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiScope {
    /// `POST /emit`.
    Emit,
    /// `GET /metrics` and other reads.
    Read,
    /// Everything.
    Admin,
}

impl ApiScope {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiScope::Emit => "emit",
            ApiScope::Read => "read",
            ApiScope::Admin => "admin",
        }
    }

    /// Whether a token of this scope may make a call that needs `needed`.
    pub fn allows(self, needed: ApiScope) -> bool {
        self == ApiScope::Admin || self == needed
    }
}

impl fmt::Display for ApiScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApiScope {
    type Err = String;

    fn from_str(text: &str) -> Result<ApiScope, String> {
        match text {
            "emit" => Ok(ApiScope::Emit),
            "read" => Ok(ApiScope::Read),
            "admin" => Ok(ApiScope::Admin),
            _ => Err(format!("scope {text:?} is not emit, read or admin")),
        }
    }
}

/// One API token. Its `Debug` and [`ApiToken::redacted`] never show the secret;
/// only `Serialize` (the settings round trip) writes it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApiToken {
    name: String,
    scope: ApiScope,
    secret: String,
}

impl ApiToken {
    /// The token's name: what the logs say made a call.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn scope(&self) -> ApiScope {
        self.scope
    }

    /// The secret, for comparing with what a request presents.
    pub fn secret(&self) -> &[u8] {
        self.secret.as_bytes()
    }

    /// How an entry of `API_TOKENS` is shown in messages: its name and scope
    /// as written, never the secret.
    pub fn redacted(entry: &str) -> String {
        let mut parts = entry.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(name), Some(scope), Some(_)) => format!("{name}:{scope}:<redacted>"),
            _ => "<redacted>".to_string(),
        }
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl FromStr for ApiToken {
    type Err = String;

    /// `name:scope:secret`; the secret may itself contain `:`. The reason of an
    /// error never quotes the secret.
    fn from_str(entry: &str) -> Result<ApiToken, String> {
        let mut parts = entry.splitn(3, ':');
        let (Some(name), Some(scope), Some(secret)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("each token must be name:scope:secret".to_string());
        };
        if name.is_empty() {
            return Err("a token's name must not be empty".to_string());
        }
        // The name goes to the logs: nothing there can forge a line.
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(format!(
                "token name {name:?} may only have letters, digits, '-', '_' and '.'"
            ));
        }
        let scope = scope.parse::<ApiScope>()?;
        if secret.is_empty() {
            return Err(format!("token {name:?} has an empty secret"));
        }
        // What an `Authorization` header can carry, without spaces.
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "token {name:?}: the secret may only have visible ASCII characters"
            ));
        }
        if secret.len() < MIN_SECRET_LENGTH {
            return Err(format!(
                "token {name:?}: the secret must be at least {MIN_SECRET_LENGTH} characters"
            ));
        }
        Ok(ApiToken {
            name: name.to_string(),
            scope,
            secret: secret.to_string(),
        })
    }
}

impl TryFrom<String> for ApiToken {
    type Error = String;

    fn try_from(entry: String) -> Result<ApiToken, String> {
        entry.parse()
    }
}

impl From<ApiToken> for String {
    fn from(token: ApiToken) -> String {
        format!("{}:{}:{}", token.name, token.scope, token.secret)
    }
}

/// The rules that concern the list as a whole: every name once (the logs must
/// tell tokens apart), every secret once (a secret must say who is calling).
/// The reason names tokens, never secrets.
pub fn check_list(tokens: &[ApiToken]) -> Result<(), String> {
    for (i, token) in tokens.iter().enumerate() {
        for other in &tokens[..i] {
            if other.name == token.name {
                return Err(format!("token name {:?} is used twice", token.name));
            }
            if other.secret == token.secret {
                return Err(format!(
                    "tokens {:?} and {:?} have the same secret",
                    other.name, token.name
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef";

    #[test]
    fn parses_name_scope_and_a_secret_that_may_hold_colons() {
        let token: ApiToken = format!("ci:emit:{SECRET}:x").parse().unwrap();
        assert_eq!(token.name(), "ci");
        assert_eq!(token.scope(), ApiScope::Emit);
        assert_eq!(token.secret(), format!("{SECRET}:x").as_bytes());
        assert_eq!(String::from(token), format!("ci:emit:{SECRET}:x"));
    }

    #[test]
    fn admin_implies_every_scope() {
        for needed in [ApiScope::Emit, ApiScope::Read, ApiScope::Admin] {
            assert!(ApiScope::Admin.allows(needed));
        }
        assert!(ApiScope::Emit.allows(ApiScope::Emit));
        assert!(!ApiScope::Emit.allows(ApiScope::Read));
        assert!(!ApiScope::Read.allows(ApiScope::Emit));
        assert!(!ApiScope::Read.allows(ApiScope::Admin));
    }

    #[test]
    fn bad_entries_are_refused_without_quoting_the_secret() {
        let secret = "s3cr3t-s3cr3t-s3cr3t";
        for (entry, reason) in [
            ("ci:emit".to_string(), "name:scope:secret"),
            (format!(":emit:{secret}"), "name must not be empty"),
            (format!("c i:emit:{secret}"), "may only have"),
            (format!("ci:write:{secret}"), "not emit, read or admin"),
            ("ci:emit:".to_string(), "empty secret"),
            (format!("ci:emit:short-{}", &secret[..4]), "at least 16"),
            (format!("ci:emit:{secret} x"), "visible ASCII"),
        ] {
            let error = entry.parse::<ApiToken>().unwrap_err();
            assert!(error.contains(reason), "{entry}: {error}");
            assert!(!error.contains(secret), "{error}");
        }
    }

    #[test]
    fn debug_and_redacted_hide_the_secret() {
        let token: ApiToken = format!("ci:read:{SECRET}").parse().unwrap();
        let shown = format!("{token:?} {:?}", vec![token.clone()]);
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(
            shown.contains("ci") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert_eq!(
            ApiToken::redacted(&format!("ci:bogus:{SECRET}")),
            "ci:bogus:<redacted>"
        );
        assert_eq!(ApiToken::redacted(SECRET), "<redacted>");
    }

    #[test]
    fn names_and_secrets_are_each_used_once() {
        let a: ApiToken = format!("a:emit:{SECRET}").parse().unwrap();
        let b: ApiToken = format!("a:read:{SECRET}-b").parse().unwrap();
        let c: ApiToken = format!("c:read:{SECRET}").parse().unwrap();
        assert!(
            check_list(&[a.clone(), b])
                .unwrap_err()
                .contains("used twice")
        );
        let error = check_list(&[a.clone(), c.clone()]).unwrap_err();
        assert!(
            error.contains("same secret") && !error.contains(SECRET),
            "{error}"
        );
        let d: ApiToken = format!("d:admin:{SECRET}-d").parse().unwrap();
        check_list(&[a, d]).unwrap();
    }
}
