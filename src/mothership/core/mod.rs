//! `/core`: the namespace every node serves itself, and its dispatcher.
//!
//! Owns turning an event into a [`Command`] (the event name picks the command,
//! which parses its own arguments), refusing an unknown name or bad arguments
//! with an error ack, and running a command in its socket's order (one at a
//! time, at most `SOCKET_MAX_IN_FLIGHT` queued: `Socket::run_in_order`) with its answer
//! acked through the router (`(error | null, data)`). Each command lives in its
//! own file: [`request_intent`], [`change_language`], [`render`], [`session`].
//!
//! Does not own what the commands do (see their files), routing to a host (see
//! `super::router`), or `/core/logging` (see `super::logging`).

mod change_language;
pub(super) mod render;
mod request_intent;
mod session;

use std::sync::Arc;

use serde_json::Value;

use super::router::{Answer, Router, error_ack};
use crate::namespace::NamespaceHandler;
use crate::socket::{Event, Socket};
use change_language::ChangeLanguage;
use render::Render;
use request_intent::RequestIntent;
use session::SessionToken;

/// One `/core` command, with its arguments parsed.
#[derive(Debug, PartialEq)]
enum Command {
    RequestIntent(RequestIntent),
    ChangeLanguage(ChangeLanguage),
    Render(Render),
    Session(SessionToken),
}

impl Command {
    /// The command an event names, parsed from the event's first argument;
    /// `Err` is the error ack's message.
    fn from_event(name: &str, args: Vec<Value>) -> Result<Command, String> {
        let first = args.into_iter().next().unwrap_or(Value::Null);
        match name {
            "request_intent" => RequestIntent::parse(&first).map(Command::RequestIntent),
            "change_language" => ChangeLanguage::parse(&first).map(Command::ChangeLanguage),
            "render" => Render::parse(&first).map(Command::Render),
            "session" => Ok(Command::Session(SessionToken)),
            other => Err(format!("unknown /core event {other:?}")),
        }
    }

    /// Runs the command for `socket`.
    async fn apply(self, router: &Router, socket: &Arc<Socket>) -> Answer {
        match self {
            Command::RequestIntent(command) => command.apply(router, socket).await,
            Command::ChangeLanguage(command) => command.apply(router, socket).await,
            Command::Render(command) => command.apply(router, socket).await,
            Command::Session(command) => command.apply(router, socket),
        }
    }
}

/// A string field of a command's argument object.
fn text(arg: &Value, key: &str) -> Option<String> {
    arg.get(key).and_then(Value::as_str).map(str::to_string)
}

/// `/core`, handled on every node.
pub(super) struct CoreChannel(pub(super) Arc<Router>);

impl NamespaceHandler for CoreChannel {
    fn on_event(&self, socket: &Arc<Socket>, event: Event) {
        let Event { name, payload, ack } = event;
        let command = match Command::from_event(&name, payload.args) {
            Ok(command) => command,
            Err(message) => return error_ack(ack, &message),
        };
        // In order and bounded per socket, as a component channel's events.
        let router = self.0.clone();
        let max = router.socket_max_in_flight;
        let caller = socket.clone();
        socket.run_in_order(max, ack, move |ack| async move {
            let answer = command.apply(&router, &caller).await;
            router.reply(&caller, ack, answer).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(name: &str, arg: Value) -> Result<Command, String> {
        Command::from_event(name, vec![arg])
    }

    #[test]
    fn event_names_map_to_commands_that_parse_their_arguments() {
        assert_eq!(
            parse("change_language", json!({"language": "fr"})),
            Ok(Command::ChangeLanguage(ChangeLanguage {
                language: "fr".into()
            }))
        );
        // A bare string is a language too.
        assert_eq!(
            parse("change_language", json!("de")),
            Ok(Command::ChangeLanguage(ChangeLanguage {
                language: "de".into()
            }))
        );
        assert_eq!(
            parse(
                "request_intent",
                json!({"category": "demo", "action": "echo", "context": {"a": 1}})
            ),
            Ok(Command::RequestIntent(RequestIntent {
                category: "demo".into(),
                action: "echo".into(),
                context: json!({"a": 1}),
            }))
        );
        assert_eq!(
            parse(
                "render",
                json!({"id": "chat", "version": "1", "view": "room"})
            ),
            Ok(Command::Render(Render {
                id: "chat".into(),
                version: "1".into(),
                view: json!("room"),
                context: Value::Null,
            }))
        );
    }

    #[test]
    fn unknown_names_and_bad_arguments_are_refused_with_the_ack_message() {
        assert_eq!(
            parse("shout", json!({})),
            Err("unknown /core event \"shout\"".into())
        );
        assert_eq!(
            Command::from_event("change_language", vec![]),
            Err("change_language needs {language}".into())
        );
        assert_eq!(
            parse("request_intent", json!({"category": "demo"})),
            Err("request_intent needs {category, action, context}".into())
        );
        assert_eq!(
            parse("render", json!({"id": "chat", "version": 1})),
            Err("render needs {id, version, view, context}".into())
        );
    }
}
