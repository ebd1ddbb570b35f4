//! Built-in demo components: `echo` and `chat` (both version `1.0`, channel
//! `main`), which the README tutorial and users rely on.
//!
//! Acks follow RAIN's convention: `(null, data)` or `(error, null)`; `node` in
//! an answer is the node whose handler ran.
//!
//! - `echo`: `echo(...args)` → `{args, node}`.
//! - `chat`: `join({room, nick?})` → `{room, history, node}` (the room's last
//!   50 messages, oldest first); `say({room, text})` → `{node}` and a `message`
//!   event `{room, nick, text, node, ts}` to every member of the room (the sender
//!   included) on every node; `leave({room})` → `{room, node}`.
//! - both: `render({view, context})` → `{view, html, node}`.
//!
//! Does not own routing (see `crate::mothership`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::descriptor::version_matches;
use super::{Component, Context, Descriptor, Intent, Outcome};
use crate::app_session::write_error_message;
use crate::cluster::SessionWriteError;
use crate::config::Settings;

/// How many messages a chat room's history keeps.
pub const CHAT_HISTORY: usize = 50;

/// The session field holding the rooms a session joined (a JSON array of strings).
const ROOMS_FIELD: &str = "chat-rooms";
const NICK_FIELD: &str = "nick";

/// The built-in component for `name` (`id` or `id@version`, e.g. `chat`,
/// `chat@1.0`, `chat@1`).
pub fn builtin(name: &str, settings: &Settings) -> Option<Arc<dyn Component>> {
    let (id, version) = match name.split_once('@') {
        Some((id, version)) => (id, Some(version)),
        None => (name, None),
    };
    let component: Arc<dyn Component> = match id {
        "echo" => Arc::new(Echo::new()),
        "chat" => Arc::new(Chat::from_settings(settings)),
        _ => return None,
    };
    match version {
        Some(version) if !version_matches(version, &component.descriptor().version) => None,
        _ => Some(component),
    }
}

fn demo_descriptor(id: &str, intent: Intent) -> Descriptor {
    Descriptor {
        id: id.into(),
        version: super::Version {
            major: 1,
            minor: 0,
            micro: None,
        },
        channels: vec!["main".into()],
        intents: vec![intent],
        permissions: Vec::new(),
        handler: None,
        lifecycle: Some(false),
    }
}

fn error(message: impl Into<String>) -> Value {
    json!({ "error": message.into() })
}

/// `render({view, context})`: a small HTML fragment naming the component and view.
fn render(descriptor: &Descriptor, ctx: &Context, args: &[Value]) -> Outcome {
    let view = match args.first() {
        None | Some(Value::Null) => "main".to_string(),
        Some(Value::Object(fields)) => match fields.get("view") {
            None | Some(Value::Null) => "main".to_string(),
            Some(Value::String(view)) => view.clone(),
            Some(_) => return Err(error("render: view must be a string")),
        },
        Some(_) => return Err(error("render: expected {view, context}")),
    };
    let id = escape(&descriptor.id);
    let key = escape(&descriptor.key());
    let shown = escape(&view);
    let html = format!(
        "<div class=\"{id}\" data-component=\"{key}\" data-view=\"{shown}\">{key}: {shown}</div>"
    );
    Ok(json!({ "view": view, "html": html, "node": ctx.node_id }))
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `echo@1.0`: answers `echo(...args)` with `{args, node}`.
pub struct Echo {
    descriptor: Descriptor,
}

impl Echo {
    pub fn new() -> Self {
        Echo {
            descriptor: demo_descriptor(
                "echo",
                Intent {
                    category: "demo".into(),
                    action: "echo".into(),
                    provider: "echo".into(),
                },
            ),
        }
    }
}

impl Default for Echo {
    fn default() -> Self {
        Echo::new()
    }
}

impl Component for Echo {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    fn on_event(
        &self,
        ctx: Context,
        event: String,
        args: Vec<Value>,
    ) -> BoxFuture<'static, Outcome> {
        let outcome = match event.as_str() {
            "echo" => Ok(json!({ "args": args, "node": ctx.node_id })),
            "render" => render(&self.descriptor, &ctx, &args),
            _ => Err(error(format!("unknown event {event}"))),
        };
        async move { outcome }.boxed()
    }
}

/// `chat@1.0`: rooms with a shared, cluster-wide history.
///
/// Which rooms a client joined is kept in its session (`chat-rooms`), so it is
/// per session, not per socket: two tabs sharing a session share it, and it
/// outlives a disconnect. That is enough for the demo; a real component would
/// key it by socket. Updates are read-modify-write on the session, so two
/// concurrent joins of one session may lose one (again, fine for a demo).
pub struct Chat {
    descriptor: Descriptor,
    limits: ChatLimits,
}

/// What a chat client may create, and how long a room's history lives.
#[derive(Debug, Clone, Copy)]
struct ChatLimits {
    /// How long a room's history outlives its last message.
    history_ttl: Duration,
    /// Longest message text, in bytes.
    text_max: usize,
    /// Longest room name or nick, in characters.
    name_max: usize,
}

impl Chat {
    pub fn new() -> Self {
        Chat::from_settings(&Settings::default())
    }

    /// A chat with the settings' history TTL and size limits
    /// (`CHAT_HISTORY_TTL_MS`, `CHAT_TEXT_MAX_LENGTH`, `CHAT_NAME_MAX_LENGTH`).
    pub fn from_settings(settings: &Settings) -> Self {
        Chat {
            limits: ChatLimits {
                history_ttl: settings.chat_history_ttl(),
                text_max: settings.chat_text_max_length,
                name_max: settings.chat_name_max_length,
            },
            descriptor: demo_descriptor(
                "chat",
                Intent {
                    category: "chat".into(),
                    action: "say".into(),
                    provider: "say".into(),
                },
            ),
        }
    }
}

impl Default for Chat {
    fn default() -> Self {
        Chat::new()
    }
}

impl Component for Chat {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    fn on_event(
        &self,
        ctx: Context,
        event: String,
        args: Vec<Value>,
    ) -> BoxFuture<'static, Outcome> {
        match event.as_str() {
            "join" => chat_join(ctx, args, self.limits).boxed(),
            "say" => chat_say(ctx, args, self.limits).boxed(),
            "leave" => chat_leave(ctx, args, self.limits).boxed(),
            "render" => {
                let outcome = render(&self.descriptor, &ctx, &args);
                async move { outcome }.boxed()
            }
            _ => async move { Err(error(format!("unknown event {event}"))) }.boxed(),
        }
    }
}

/// The cluster history of a room: keyed by component and room only, so every
/// version alias of the channel (`/chat/1/main`, `/chat/1.0/main`) shares it.
fn history_name(room: &str) -> String {
    format!("chat:{room}")
}

/// The first argument, which must be an object.
fn object_arg<'a>(
    event: &str,
    args: &'a [Value],
    shape: &str,
) -> Result<&'a Map<String, Value>, Value> {
    match args.first() {
        Some(Value::Object(fields)) => Ok(fields),
        _ => Err(error(format!("{event}: expected {shape}"))),
    }
}

/// A required, non-empty string field.
fn name_field(
    event: &str,
    fields: &Map<String, Value>,
    field: &str,
    max: usize,
) -> Result<String, Value> {
    match fields.get(field) {
        None | Some(Value::Null) => Err(error(format!("{event}: {field} is required"))),
        Some(Value::String(text)) if text.is_empty() => {
            Err(error(format!("{event}: {field} must not be empty")))
        }
        Some(Value::String(text)) if text.chars().count() > max => Err(error(format!(
            "{event}: {field} is longer than {max} characters"
        ))),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(error(format!("{event}: {field} must be a string"))),
    }
}

/// The error ack when shared state could not be read or written; the cause
/// goes to the node's log, not to the client.
fn unavailable(what: &str, detail: impl std::fmt::Display) -> Value {
    tracing::warn!(%detail, "chat: {what} unavailable");
    json!({ "error": format!("{what} unavailable") })
}

/// The rooms the session joined.
async fn joined_rooms(ctx: &Context) -> Result<Vec<String>, Value> {
    let text = ctx
        .session
        .get(ROOMS_FIELD)
        .await
        .map_err(|e| unavailable("session", e))?;
    Ok(text
        .and_then(|t| serde_json::from_str::<Vec<String>>(&t).ok())
        .unwrap_or_default())
}

async fn store_rooms(ctx: &Context, rooms: &[String]) -> Result<(), Value> {
    let text = serde_json::to_string(rooms).unwrap_or_else(|_| "[]".into());
    ctx.session
        .set(vec![(ROOMS_FIELD.to_string(), text)])
        .await
        .map_err(session_write_failed)
}

/// The error ack of a session write: `session too large` over a limit (the
/// client can act on that), else `session unavailable` (cause to the log).
fn session_write_failed(error: SessionWriteError) -> Value {
    match error {
        SessionWriteError::Cluster(e) => unavailable("session", e),
        limit => json!({ "error": write_error_message(&limit) }),
    }
}

async fn chat_join(ctx: Context, args: Vec<Value>, limits: ChatLimits) -> Outcome {
    let fields = object_arg("join", &args, "{room, nick}")?;
    let room = name_field("join", fields, "room", limits.name_max)?;
    let nick = match fields.get("nick") {
        None | Some(Value::Null) => None,
        Some(_) => Some(name_field("join", fields, "nick", limits.name_max)?),
    };
    let mut rooms = joined_rooms(&ctx).await?;
    if !rooms.contains(&room) {
        rooms.push(room.clone());
    }
    let mut session_fields = vec![(
        ROOMS_FIELD.to_string(),
        serde_json::to_string(&rooms).unwrap_or_default(),
    )];
    if let Some(nick) = nick {
        session_fields.push((NICK_FIELD.to_string(), nick));
    }
    ctx.session
        .set(session_fields)
        .await
        .map_err(session_write_failed)?;
    let entries = ctx
        .emitter
        .io()
        .cluster()
        .list_read(&history_name(&room))
        .await
        .map_err(|e| unavailable("history", e))?;
    let skip = entries.len().saturating_sub(CHAT_HISTORY);
    let history: Vec<Value> = entries
        .iter()
        .skip(skip)
        .filter_map(|entry| serde_json::from_str(entry).ok())
        .collect();
    ctx.join(&room);
    Ok(json!({ "room": room, "history": history, "node": ctx.node_id }))
}

async fn chat_say(ctx: Context, args: Vec<Value>, limits: ChatLimits) -> Outcome {
    let fields = object_arg("say", &args, "{room, text}")?;
    let room = name_field("say", fields, "room", limits.name_max)?;
    let text = match fields.get("text") {
        Some(Value::String(text)) if text.len() > limits.text_max => {
            return Err(error(format!(
                "say: text is longer than {} bytes",
                limits.text_max
            )));
        }
        Some(Value::String(text)) => text.clone(),
        None | Some(Value::Null) => return Err(error("say: text is required")),
        Some(_) => return Err(error("say: text must be a string")),
    };
    let session = ctx
        .session
        .get_all()
        .await
        .map_err(|e| unavailable("session", e))?;
    let joined = session
        .get(ROOMS_FIELD)
        .and_then(|t| serde_json::from_str::<Vec<String>>(t).ok())
        .is_some_and(|rooms| rooms.contains(&room));
    if !joined {
        return Err(error("not joined"));
    }
    let nick = session
        .get(NICK_FIELD)
        .cloned()
        .unwrap_or_else(|| "anonymous".into());
    let msg = json!({
        "room": room,
        "nick": nick,
        "text": text,
        "node": ctx.node_id,
        "ts": crate::cluster::now_millis(),
    });
    // History first: an error ack means the message was not sent at all.
    ctx.emitter
        .io()
        .cluster()
        .list_push(
            &history_name(&room),
            msg.to_string(),
            CHAT_HISTORY,
            limits.history_ttl,
        )
        .await
        .map_err(|e| unavailable("history", e))?;
    ctx.emitter
        .to_room(&ctx.namespace, &room, "message", vec![msg])
        .map_err(|e| error(e.to_string()))?;
    Ok(json!({ "node": ctx.node_id }))
}

async fn chat_leave(ctx: Context, args: Vec<Value>, limits: ChatLimits) -> Outcome {
    let fields = object_arg("leave", &args, "{room}")?;
    let room = name_field("leave", fields, "room", limits.name_max)?;
    let mut rooms = joined_rooms(&ctx).await?;
    if rooms.contains(&room) {
        rooms.retain(|r| r != &room);
        store_rooms(&ctx, &rooms).await?;
    }
    ctx.leave(&room);
    Ok(json!({ "room": room, "node": ctx.node_id }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app_session::AppSession;
    use crate::cluster::Cluster;
    use crate::component::{Catalog, ContextParts, Effects, Emitter};
    use crate::config::Settings;
    use crate::io::SocketIo;
    use crate::session_token::SessionId;

    struct Env {
        cluster: Arc<dyn Cluster>,
        io: SocketIo,
    }

    fn env() -> Env {
        let settings = Settings::default();
        let cluster = crate::cluster::from_settings(&settings).unwrap();
        let io = SocketIo::new(&settings, cluster.clone());
        Env { cluster, io }
    }

    impl Env {
        fn context(&self, sid: &str, session: &str, namespace: &str) -> Context {
            Context::from(ContextParts {
                socket_id: sid.into(),
                namespace: namespace.into(),
                channel: "main".into(),
                node_id: "node-a".into(),
                origin_node: "node-a".into(),
                instance_id: None,
                user: None,
                session: AppSession::new(SessionId::trusted(session), self.cluster.clone()),
                emitter: Emitter::new(self.io.clone(), Catalog::new(self.cluster.clone())),
            })
        }
    }

    async fn call(
        component: &dyn Component,
        ctx: &Context,
        event: &str,
        args: Vec<Value>,
    ) -> Outcome {
        component.on_event(ctx.clone(), event.into(), args).await
    }

    #[tokio::test]
    async fn echo_answers_with_its_args_and_node() {
        let env = env();
        let ctx = env.context("s1", "sess", "/echo/1/main");
        let echo = Echo::new();
        assert_eq!(echo.descriptor().key(), "echo@1.0");
        assert_eq!(echo.descriptor().channels, vec!["main".to_string()]);
        assert_eq!(echo.descriptor().intents[0].provider, "echo");
        echo.descriptor().validate().unwrap();
        assert_eq!(
            call(&echo, &ctx, "echo", vec![json!("a"), json!({"b": 1})]).await,
            Ok(json!({"args": ["a", {"b": 1}], "node": "node-a"}))
        );
        assert_eq!(
            call(&echo, &ctx, "echo", vec![]).await,
            Ok(json!({"args": [], "node": "node-a"}))
        );
        assert_eq!(
            call(&echo, &ctx, "nope", vec![]).await,
            Err(json!({"error": "unknown event nope"}))
        );
    }

    #[tokio::test]
    async fn both_render_a_view() {
        let env = env();
        let ctx = env.context("s1", "sess", "/chat/1/main");
        let rendered = call(
            &Chat::new(),
            &ctx,
            "render",
            vec![json!({"view": "room<1>", "context": {}})],
        )
        .await
        .unwrap();
        assert_eq!(rendered["view"], "room<1>");
        assert_eq!(rendered["node"], "node-a");
        let html = rendered["html"].as_str().unwrap();
        assert!(html.starts_with("<div class=\"chat\""), "{html}");
        assert!(
            html.contains("chat@1.0") && html.contains("room&lt;1&gt;"),
            "{html}"
        );
        let rendered = call(&Echo::new(), &ctx, "render", vec![json!({"view": "main"})])
            .await
            .unwrap();
        assert!(rendered["html"].as_str().unwrap().contains("echo@1.0"));
        assert!(
            call(&Echo::new(), &ctx, "render", vec![json!({"view": 3})])
                .await
                .is_err()
        );
        assert!(
            call(&Echo::new(), &ctx, "render", vec![json!("x")])
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn chat_join_say_leave() {
        let env = env();
        let chat = Chat::new();
        chat.descriptor().validate().unwrap();
        assert_eq!(chat.descriptor().intents[0].action, "say");
        let ann = env.context("s1", "sess-ann", "/chat/1/main");
        let joined = call(
            &chat,
            &ann,
            "join",
            vec![json!({"room": "lobby", "nick": "ann"})],
        )
        .await
        .unwrap();
        assert_eq!(
            joined,
            json!({"room": "lobby", "history": [], "node": "node-a"})
        );
        assert_eq!(
            ann.take_effects(),
            Effects {
                join: vec!["lobby".into()],
                leave: vec![]
            }
        );

        assert_eq!(
            call(
                &chat,
                &ann,
                "say",
                vec![json!({"room": "lobby", "text": "one"})]
            )
            .await,
            Ok(json!({"node": "node-a"}))
        );
        assert_eq!(
            call(
                &chat,
                &ann,
                "say",
                vec![json!({"room": "lobby", "text": "two"})]
            )
            .await,
            Ok(json!({"node": "node-a"}))
        );

        // Another client, through another version alias of the channel, sees the history, oldest first.
        let bob = env.context("s2", "sess-bob", "/chat/1.0/main");
        let joined = call(&chat, &bob, "join", vec![json!({"room": "lobby"})])
            .await
            .unwrap();
        let history = joined["history"].as_array().unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[0]["text"], "one");
        assert_eq!(history[1]["text"], "two");
        assert_eq!(history[0]["nick"], "ann");
        assert_eq!(history[0]["room"], "lobby");
        assert_eq!(history[0]["node"], "node-a");
        assert!(history[0]["ts"].as_u64().unwrap() > 0);
        call(
            &chat,
            &bob,
            "say",
            vec![json!({"room": "lobby", "text": "hey"})],
        )
        .await
        .unwrap();
        let entries = env.cluster.list_read("chat:lobby").await.unwrap();
        let last: Value = serde_json::from_str(entries.last().unwrap()).unwrap();
        assert_eq!(last["nick"], "anonymous");
        assert_eq!(last["text"], "hey");

        // Leaving: the effect, then say is refused.
        assert_eq!(
            call(&chat, &ann, "leave", vec![json!({"room": "lobby"})]).await,
            Ok(json!({"room": "lobby", "node": "node-a"}))
        );
        assert_eq!(
            ann.take_effects(),
            Effects {
                join: vec![],
                leave: vec!["lobby".into()]
            }
        );
        assert_eq!(
            call(
                &chat,
                &ann,
                "say",
                vec![json!({"room": "lobby", "text": "x"})]
            )
            .await,
            Err(json!({"error": "not joined"}))
        );
        // Bob is still in.
        call(
            &chat,
            &bob,
            "say",
            vec![json!({"room": "lobby", "text": "still here"})],
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn chat_history_keeps_the_last_50_oldest_first() {
        let env = env();
        let chat = Chat::new();
        let ctx = env.context("s1", "sess", "/chat/1/main");
        call(&chat, &ctx, "join", vec![json!({"room": "r", "nick": "n"})])
            .await
            .unwrap();
        for i in 0..60 {
            call(
                &chat,
                &ctx,
                "say",
                vec![json!({"room": "r", "text": format!("m{i}")})],
            )
            .await
            .unwrap();
        }
        let joined = call(&chat, &ctx, "join", vec![json!({"room": "r"})])
            .await
            .unwrap();
        let texts: Vec<&str> = joined["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = (10..60).map(|i| format!("m{i}")).collect();
        assert_eq!(texts, expected);
        // The nick from the first join is kept when a later join gives none.
        assert_eq!(joined["history"][0]["nick"], "n");
        // Another room's history is separate.
        let other = call(&chat, &ctx, "join", vec![json!({"room": "other"})])
            .await
            .unwrap();
        assert_eq!(other["history"], json!([]));
    }

    #[tokio::test]
    async fn chat_refuses_bad_arguments_and_strangers() {
        let env = env();
        let chat = Chat::new();
        let ctx = env.context("s1", "sess", "/chat/1/main");
        let bad: Vec<(&str, Vec<Value>)> = vec![
            ("join", vec![]),
            ("join", vec![json!("lobby")]),
            ("join", vec![json!({})]),
            ("join", vec![json!({"room": 3})]),
            ("join", vec![json!({"room": ""})]),
            ("join", vec![json!({"room": "r", "nick": 5})]),
            ("join", vec![json!({"room": "x".repeat(201)})]),
            ("say", vec![json!({"text": "hi"})]),
            ("say", vec![json!({"room": ["r"], "text": "hi"})]),
            ("say", vec![json!({"room": "r"})]),
            ("say", vec![json!({"room": "r", "text": 1})]),
            ("say", vec![json!(null)]),
            ("leave", vec![]),
            ("leave", vec![json!({"room": null})]),
        ];
        for (event, args) in bad {
            let error = call(&chat, &ctx, event, args.clone()).await.unwrap_err();
            let message = error["error"].as_str().unwrap_or_default();
            assert!(
                message.starts_with(&format!("{event}: ")),
                "{event} {args:?}: {error}"
            );
        }
        assert_eq!(ctx.take_effects(), Effects::default());
        assert_eq!(
            call(&chat, &ctx, "say", vec![json!({"room": "r", "text": "hi"})]).await,
            Err(json!({"error": "not joined"}))
        );
        assert_eq!(
            call(&chat, &ctx, "shout", vec![]).await,
            Err(json!({"error": "unknown event shout"}))
        );
        assert!(env.cluster.list_read("chat:r").await.unwrap().is_empty());
    }

    #[test]
    fn builtins_by_name() {
        assert_eq!(
            builtin("echo", &Settings::default())
                .unwrap()
                .descriptor()
                .key(),
            "echo@1.0"
        );
        assert_eq!(
            builtin("echo@1.0", &Settings::default())
                .unwrap()
                .descriptor()
                .key(),
            "echo@1.0"
        );
        assert_eq!(
            builtin("chat", &Settings::default())
                .unwrap()
                .descriptor()
                .key(),
            "chat@1.0"
        );
        assert_eq!(
            builtin("chat@1.0", &Settings::default())
                .unwrap()
                .descriptor()
                .key(),
            "chat@1.0"
        );
        assert_eq!(
            builtin("chat@1", &Settings::default())
                .unwrap()
                .descriptor()
                .key(),
            "chat@1.0"
        );
        assert!(builtin("chat@2.0", &Settings::default()).is_none());
        assert!(builtin("nope", &Settings::default()).is_none());
        assert!(builtin("", &Settings::default()).is_none());
    }
}
