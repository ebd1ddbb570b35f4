//! `/core` `session()`: answers `{token, user}`, the client's session token
//! (`<id>.<hmac>`, what it sends back as `auth.sessionId` to resume the
//! session from a client that keeps no cookies, on any node) and who the
//! connect-auth hook said it is (`null` without one).
//!
//! Owns this command. Does not own what a token is (see
//! `crate::session_token`) or dispatch (see `super`).

use std::sync::Arc;

use serde_json::json;

use crate::mothership::router::{Answer, Router};
use crate::socket::Socket;

#[derive(Debug, PartialEq)]
pub(super) struct SessionToken;

impl SessionToken {
    pub(super) fn apply(self, router: &Router, socket: &Arc<Socket>) -> Answer {
        let id = crate::session_token::SessionId::trusted(socket.session_id());
        Answer::plain(Ok(json!({
            "token": router.session_keys.token(&id),
            "user": socket.user(),
        })))
    }
}
