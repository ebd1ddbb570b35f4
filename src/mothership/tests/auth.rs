//! An embedder's connect-auth hook ([`ConnectAuth`] installed with
//! `SocketIo::set_connect_auth`), in one process: it decides every namespace
//! CONNECT (asynchronously), a refusal's message reaches the client, and the
//! user it names reaches `/core` `session`, the session's data and the
//! `Context` of a component running on another node.
//!
//! Owns these scenarios only; the harness is in `super::harness`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::harness::{Nodes, session_of};
use crate::auth::{AuthDecision, AuthRequest, ConnectAuth};
use crate::component::{Component, Context, Descriptor, Outcome};
use crate::config::Routing::PreferLocal;

/// Accepts `auth.token` `"ann"` as user `ann`, after a while (as a remote
/// check would); records what it was asked.
struct TokenHook(Arc<Mutex<Vec<AuthRequest>>>);

impl ConnectAuth for TokenHook {
    fn authorize(&self, request: AuthRequest) -> BoxFuture<'static, AuthDecision> {
        let decision = match request.auth.get("token").and_then(Value::as_str) {
            Some("ann") => AuthDecision::Accept {
                user: Some("ann".into()),
            },
            _ => AuthDecision::Refuse {
                message: "who are you?".into(),
            },
        };
        self.0.lock().push(request);
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            decision
        }
        .boxed()
    }
}

/// Answers with the user its context names.
struct WhoAmI(Descriptor);

impl Component for WhoAmI {
    fn descriptor(&self) -> &Descriptor {
        &self.0
    }

    fn on_event(&self, ctx: Context, _: String, _: Vec<Value>) -> BoxFuture<'static, Outcome> {
        async move { Ok(json!({ "user": ctx.user, "node": ctx.node_id })) }.boxed()
    }
}

#[tokio::test]
async fn an_embedders_hook_decides_connects_and_names_the_user_everywhere() {
    let descriptor =
        serde_json::from_value(json!({ "id": "who", "version": "1.0", "channels": ["main"] }))
            .unwrap();
    let nodes = Nodes::with_components(vec![
        ("A", PreferLocal, vec![]),
        (
            "B",
            PreferLocal,
            vec![Arc::new(WhoAmI(descriptor)) as Arc<dyn Component>],
        ),
    ]);
    let asked = Arc::new(Mutex::new(Vec::new()));
    nodes
        .node("A")
        .io
        .set_connect_auth(TokenHook(asked.clone()));

    let mut eve = nodes.client("A", "eve");
    assert_eq!(
        eve.connect_with("/core", json!({ "token": "eve" })).await,
        Err("who are you?".into())
    );
    // Refused, she can still try again, and nothing is left half-connected.
    assert_eq!(
        eve.connect_with("/core", json!({})).await,
        Err("who are you?".into())
    );

    let mut ann = nodes.client("A", "ann");
    ann.connect_with("/core", json!({ "token": "ann" }))
        .await
        .unwrap();
    let session = ann.ok("/core", "session", vec![json!({})]).await;
    assert_eq!(session["user"], "ann", "{session}");
    let stored = nodes
        .node("A")
        .io
        .cluster()
        .session_load(session_of("ann").as_str())
        .await
        .unwrap();
    assert_eq!(stored.get("user").map(String::as_str), Some("ann"));

    ann.connect_with("/who/1/main", json!({ "token": "ann" }))
        .await
        .unwrap();
    assert_eq!(
        ann.ok("/who/1/main", "whoami", vec![]).await,
        json!({ "user": "ann", "node": "B" })
    );

    // The hook saw the namespace and auth, never the session token.
    let asked = asked.lock();
    assert_eq!(asked.len(), 4);
    assert_eq!(asked[2].namespace, "/core");
    assert_eq!(asked[2].auth, json!({ "token": "ann" }));
    assert_eq!(asked[3].namespace, "/who/1/main");
}
