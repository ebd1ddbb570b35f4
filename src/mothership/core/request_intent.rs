//! `/core` `request_intent({category, action, context})`: finds the component
//! that provides the intent (the newest with a live host) and routes the
//! intent's provider event to it with `[context]`; its answer is the ack.
//!
//! Owns this command's arguments and the call it makes. Does not own choosing
//! the provider (see `crate::component::Catalog::provider`), routing (see
//! `crate::mothership::router`) or dispatch (see `super`).

use std::sync::Arc;

use serde_json::{Value, json};

use super::text;
use crate::mothership::router::{Answer, Request, Router};
use crate::socket::Socket;

#[derive(Debug, PartialEq)]
pub(super) struct RequestIntent {
    pub(super) category: String,
    pub(super) action: String,
    pub(super) context: Value,
}

impl RequestIntent {
    pub(super) fn parse(arg: &Value) -> Result<RequestIntent, String> {
        let (Some(category), Some(action)) = (text(arg, "category"), text(arg, "action")) else {
            return Err("request_intent needs {category, action, context}".into());
        };
        Ok(RequestIntent {
            category,
            action,
            context: arg.get("context").cloned().unwrap_or(Value::Null),
        })
    }

    pub(super) async fn apply(self, router: &Router, socket: &Arc<Socket>) -> Answer {
        let RequestIntent {
            category,
            action,
            context,
        } = self;
        let Some((component, provider)) = router.catalog.provider(&category, &action) else {
            return Answer::plain(Err(
                json!({ "error": "no provider for intent", "category": category, "action": action }),
            ));
        };
        let request = Request {
            channel: "core".into(),
            event: provider,
            args: vec![context],
            create_instance: false,
        };
        router.call(socket, &component, request).await
    }
}
