//! `/core` `change_language({language})` (or `change_language(language)`):
//! stores the language in the client's session, which every node reads, and
//! answers `{language, node}`.
//!
//! Owns this command's arguments and effect. Does not own the session's storage
//! (see `crate::app_session`) or dispatch (see `super`).

use std::sync::Arc;

use serde_json::{Value, json};

use super::text;
use crate::app_session::write_error_message;
use crate::mothership::router::{Answer, Router};
use crate::socket::Socket;

/// The longest language tag BCP 47 allows in practice.
const MAX_TAG: usize = 35;

#[derive(Debug, PartialEq)]
pub(super) struct ChangeLanguage {
    pub(super) language: String,
}

impl ChangeLanguage {
    pub(super) fn parse(arg: &Value) -> Result<ChangeLanguage, String> {
        let language = text(arg, "language")
            .or_else(|| arg.as_str().map(str::to_string))
            .ok_or("change_language needs {language}")?;
        // A language tag (BCP 47: `fr`, `pt-BR`, `zh-Hant-TW`), not free text
        // a client could fill the shared session with.
        let tag = |l: &str| {
            (1..=MAX_TAG).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !tag(&language) {
            return Err(format!(
                "change_language: language must be a language tag (letters, digits and '-', at most {MAX_TAG})"
            ));
        }
        Ok(ChangeLanguage { language })
    }

    pub(super) async fn apply(self, router: &Router, socket: &Arc<Socket>) -> Answer {
        let ChangeLanguage { language } = self;
        let stored = socket
            .session()
            .set(vec![("language".into(), language.clone())])
            .await;
        Answer::plain(match stored {
            Ok(()) => Ok(json!({ "language": language, "node": router.node_id })),
            Err(error) => {
                // The cause is the node's business, not the client's.
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "change_language: the session could not be written"
                );
                Err(json!({ "error": write_error_message(&error) }))
            }
        })
    }
}
