//! HTTP backend components: a component whose code is an HTTP endpoint.
//!
//! Owns the wire contract with such a backend. Every event on one of the
//! component's channels is POSTed as JSON to the descriptor's `url`:
//!
//! ```json
//! {"component": "chat", "version": "1.0", "channel": "main", "event": "say",
//!  "args": [...], "socket": "<sid>", "user": "<id>" | null,
//!  "session": {"id": "...", "data": {...}},
//!  "instance": null, "node": "<node id>", "namespace": "/chat/1/main"}
//! ```
//!
//! `user` is who the connect-auth hook said the client is (`null` without
//! one). With `BACKEND_SECRET` set, each POST carries `X-Rain-Timestamp` and
//! `X-Rain-Signature` (see `crate::backend_signature`).
//!
//! and the JSON answer becomes the ack: `{"data": X}` → `(null, X)`,
//! `{"error": E}` (E not null) → `(E, null)`, any other JSON value V → `(null, V)`.
//! An envelope answer (one with a `data` or `error` key) may also carry
//! `"join"`/`"leave"`: a room or a list of rooms the calling socket joins or
//! leaves before its ack is sent. Failures (non-2xx status, timeout, no
//! connection, invalid JSON) become error acks naming the component. A backend
//! is trusted with neither the node's memory nor its network: its answer is
//! read as a stream and given up past `BACKEND_ANSWER_MAX_BYTES` (`backend
//! error`), and redirects are not followed (a 3xx is a `backend error`); the
//! detail goes to the node's log. Connects
//! and disconnects are POSTed the same way (`"event": "connect"` /
//! `"disconnect"`, `"args": []`), fire-and-forget.
//!
//! Does not own routing or which node runs the handler (see `crate::mothership`).

use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::{Component, Context, Descriptor, DescriptorError, HandlerSpec, Outcome};
use crate::backend_signature::BackendSigner;

/// A component served by an HTTP backend (`HandlerSpec::Http`).
pub struct HttpComponent {
    descriptor: Descriptor,
    url: String,
    timeout: Duration,
    client: reqwest::Client,
    signer: Option<BackendSigner>,
    /// Largest answer read, in bytes (`BACKEND_ANSWER_MAX_BYTES`).
    answer_max_bytes: usize,
}

/// The answer size allowed when no setting says otherwise (the setting's default).
const ANSWER_MAX_BYTES: usize = 1_000_000;

impl std::fmt::Debug for HttpComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpComponent")
            .field("component", &self.descriptor.key())
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("signed", &self.signer.is_some())
            .finish()
    }
}

impl HttpComponent {
    /// A component for a descriptor whose handler is `HandlerSpec::Http`. Fails
    /// (as `DescriptorError::Read` naming the URL) when the descriptor has no
    /// HTTP handler or the URL is not an absolute `http://` URL (this build of
    /// the node has no TLS).
    pub fn new(descriptor: Descriptor) -> Result<HttpComponent, DescriptorError> {
        let (url, timeout_ms) = match &descriptor.handler {
            Some(HandlerSpec::Http { url, timeout_ms }) => (url.clone(), *timeout_ms),
            None => {
                return Err(DescriptorError::Read {
                    path: descriptor.key(),
                    reason: "the descriptor has no HTTP handler".into(),
                });
            }
        };
        let bad = |reason: String| DescriptorError::Read {
            path: url.clone(),
            reason,
        };
        let parsed = reqwest::Url::parse(&url).map_err(|e| bad(format!("invalid URL: {e}")))?;
        match parsed.scheme() {
            "http" => {}
            "https" => return Err(bad("https is not supported (plain http only)".into())),
            other => return Err(bad(format!("unsupported URL scheme {other:?}"))),
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(bad("the URL has no host".into()));
        }
        if timeout_ms == 0 {
            return Err(bad("timeout_ms must be positive".into()));
        }
        let timeout = Duration::from_millis(timeout_ms);
        // No redirects: a backend answers itself, and must not send the node
        // (and the event's body, session included) elsewhere.
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| bad(format!("cannot build the HTTP client: {e}")))?;
        Ok(HttpComponent {
            descriptor,
            url,
            timeout,
            client,
            signer: None,
            answer_max_bytes: ANSWER_MAX_BYTES,
        })
    }

    /// The same component reading answers of at most `max` bytes.
    pub fn with_answer_max_bytes(mut self, max: usize) -> HttpComponent {
        self.answer_max_bytes = max.max(1);
        self
    }

    /// Signs every request with `BACKEND_SECRET` (see
    /// `crate::backend_signature`); `None` sends no signature headers.
    pub fn signed(mut self, signer: Option<BackendSigner>) -> HttpComponent {
        self.signer = signer;
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// What a POST needs, owned, for a `'static` future.
    fn call(&self) -> Call {
        Call {
            client: self.client.clone(),
            url: self.url.clone(),
            id: self.descriptor.id.clone(),
            version: self.descriptor.version.to_string(),
            key: self.descriptor.key(),
            signer: self.signer.clone(),
            answer_max_bytes: self.answer_max_bytes,
        }
    }

    /// Posts a connect or disconnect notice without waiting for it.
    fn notify(&self, ctx: Context, event: &'static str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(component = %self.descriptor.key(), event, "no runtime: notice not sent");
            return;
        };
        let call = self.call();
        runtime.spawn(async move {
            let body = call.body(&ctx, event, Vec::new()).await;
            if let Err(error) = call.post(body).await {
                tracing::debug!(component = %call.key, event, %error, "backend notice failed");
            }
        });
    }
}

struct Call {
    client: reqwest::Client,
    url: String,
    id: String,
    version: String,
    key: String,
    signer: Option<BackendSigner>,
    answer_max_bytes: usize,
}

impl Call {
    async fn body(&self, ctx: &Context, event: &str, args: Vec<Value>) -> Value {
        let data = match ctx.session.get_all().await {
            Ok(fields) => Value::Object(
                fields
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            ),
            Err(error) => {
                tracing::debug!(component = %self.key, %error, "session unavailable for the backend call");
                Value::Object(Map::new())
            }
        };
        json!({
            "component": self.id,
            "version": self.version,
            "channel": ctx.channel,
            "event": event,
            "args": args,
            "socket": ctx.socket_id,
            "user": ctx.user,
            "session": {"id": ctx.session.id(), "data": data},
            "instance": ctx.instance_id,
            "node": ctx.node_id,
            "namespace": ctx.namespace,
        })
    }

    /// POSTs a body; the backend's JSON answer, or the error ack describing why
    /// there is none.
    async fn post(&self, body: Value) -> Result<Value, Value> {
        // The client learns what failed; why (the backend's address, the
        // error chain) goes to this node's log only.
        let fail = |message: &str, detail: Option<String>| {
            tracing::warn!(
                component = %self.key,
                detail = detail.as_deref().unwrap_or_default(),
                "{message}"
            );
            json!({"error": message, "component": self.key})
        };
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                fail("backend timeout", None)
            } else {
                fail("backend unavailable", Some(error_chain(&e)))
            }
        };
        // Signed over the exact bytes sent.
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut request = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(signer) = &self.signer {
            for (name, value) in signer.headers(&body) {
                request = request.header(name, value);
            }
        }
        let mut response = request.body(body).send().await.map_err(transport)?;
        let status = response.status();
        if status.is_redirection() {
            let detail = format!(
                "the backend answered {} (redirects are not followed)",
                status.as_u16()
            );
            return Err(fail("backend error", Some(detail)));
        }
        if !status.is_success() {
            let detail = format!("the backend answered {}", status.as_u16());
            return Err(fail("backend error", Some(detail)));
        }
        // Read as a stream, and stop past the cap: a backend's answer never
        // takes more of the node's memory than BACKEND_ANSWER_MAX_BYTES.
        let max = self.answer_max_bytes;
        let too_big = || {
            metrics::counter!("rain_refused_total", "limit" => "backend_answer_max_bytes")
                .increment(1);
            let detail = format!(
                "the backend's answer is over {max} bytes (BACKEND_ANSWER_MAX_BYTES); not read further"
            );
            fail("backend error", Some(detail))
        };
        if response
            .content_length()
            .is_some_and(|length| length > max as u64)
        {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if bytes.len() + chunk.len() > max {
                return Err(too_big());
            }
            bytes.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            let detail = format!("the backend answered invalid JSON: {e}");
            fail("backend error", Some(detail))
        })
    }
}

/// A reqwest error with its causes ("error sending request: … Connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Turns a backend's answer into an outcome, applying its `join`/`leave`.
fn interpret(answer: Value, ctx: &Context) -> Outcome {
    let Value::Object(mut fields) = answer else {
        return Ok(answer);
    };
    if !fields.contains_key("data") && !fields.contains_key("error") {
        return Ok(Value::Object(fields));
    }
    match fields.remove("error") {
        Some(error) if !error.is_null() => return Err(error),
        _ => {}
    }
    for room in rooms(fields.get("join")) {
        ctx.join(room);
    }
    for room in rooms(fields.get("leave")) {
        ctx.leave(room);
    }
    Ok(fields.remove("data").unwrap_or(Value::Null))
}

/// `"room"` or `["room", …]` (anything else is ignored).
fn rooms(value: Option<&Value>) -> Vec<&str> {
    match value {
        Some(Value::String(room)) => vec![room.as_str()],
        Some(Value::Array(rooms)) => rooms.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

impl Component for HttpComponent {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    fn on_event(
        &self,
        ctx: Context,
        event: String,
        args: Vec<Value>,
    ) -> BoxFuture<'static, Outcome> {
        let call = self.call();
        async move {
            let body = call.body(&ctx, &event, args).await;
            let answer = call.post(body).await?;
            interpret(answer, &ctx)
        }
        .boxed()
    }

    fn on_connect(&self, ctx: Context) {
        self.notify(ctx, "connect");
    }

    fn on_disconnect(&self, ctx: Context) {
        self.notify(ctx, "disconnect");
    }
}

#[cfg(test)]
mod tests {
    use crate::component::Catalog;
    use std::net::SocketAddr;

    use axum::Router;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;
    use tokio::sync::mpsc;

    use super::*;
    use crate::app_session::AppSession;
    use crate::component::{ContextParts, Effects, Emitter};
    use crate::config::Settings;
    use crate::io::SocketIo;
    use crate::session_token::SessionId;

    fn context() -> Context {
        let settings = Settings::default();
        let cluster = crate::cluster::from_settings(&settings).unwrap();
        let io = SocketIo::new(&settings, cluster.clone());
        Context::from(ContextParts {
            socket_id: "sid-1".into(),
            namespace: "/hb/1/main".into(),
            channel: "main".into(),
            node_id: "node-a".into(),
            origin_node: "node-b".into(),
            instance_id: Some("inst-1".into()),
            user: Some("ann@example".into()),
            session: AppSession::new(SessionId::trusted("sess-1"), cluster.clone()),
            emitter: Emitter::new(io, Catalog::new(cluster.clone())),
        })
    }

    fn descriptor(url: &str, timeout_ms: u64) -> Descriptor {
        Descriptor {
            id: "hb".into(),
            version: "1.0".parse().unwrap(),
            channels: vec!["main".into()],
            intents: Vec::new(),
            permissions: Vec::new(),
            handler: Some(HandlerSpec::Http {
                url: url.into(),
                timeout_ms,
            }),
            lifecycle: None,
        }
    }

    /// A backend on 127.0.0.1 whose routes answer canned things; every body
    /// it receives on `/hook` goes to the returned receiver.
    async fn backend() -> (SocketAddr, mpsc::UnboundedReceiver<Value>) {
        let (tx, rx) = mpsc::unbounded_channel::<Value>();
        let app = Router::new()
            .route(
                "/echo",
                post(|axum::Json(body): axum::Json<Value>| async move {
                    axum::Json(json!({"data": body}))
                }),
            )
            .route(
                "/error",
                post(|| async { axum::Json(json!({"error": {"code": "nope"}, "data": 1})) }),
            )
            .route("/plain", post(|| async { axum::Json(json!([1, 2, 3])) }))
            .route("/object", post(|| async { axum::Json(json!({"a": 1})) }))
            .route(
                "/null-error",
                post(|| async { axum::Json(json!({"error": null})) }),
            )
            .route(
                "/status",
                post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
            )
            .route("/invalid", post(|| async { "not json" }))
            .route(
                "/signed",
                post(
                    |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                        let text = |name: &str| {
                            headers
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string()
                        };
                        let timestamp = text(crate::backend_signature::TIMESTAMP_HEADER);
                        let expected = format!(
                            "sha256={}",
                            crate::backend_signature::sign(b"backend-secret", &timestamp, &body)
                        );
                        let signed = text(crate::backend_signature::SIGNATURE_HEADER) == expected;
                        axum::Json(
                            json!({"data": {"signed": signed, "timestamp": !timestamp.is_empty()}}),
                        )
                    },
                ),
            )
            .route(
                "/slow",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    axum::Json(json!({"data": "late"}))
                }),
            )
            .route(
                "/join",
                post(|| async {
                    axum::Json(json!({"data": "ok", "join": ["a", "b"], "leave": "c"}))
                }),
            )
            .route(
                "/error-join",
                post(|| async { axum::Json(json!({"error": "no", "join": ["a"]})) }),
            )
            .route(
                "/hook",
                post(
                    |State(tx): State<mpsc::UnboundedSender<Value>>,
                     axum::Json(body): axum::Json<Value>| async move {
                        let _ = tx.send(body);
                        axum::Json(json!({"data": null}))
                    },
                ),
            )
            .with_state(tx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (addr, rx)
    }

    fn component(addr: SocketAddr, path: &str) -> HttpComponent {
        HttpComponent::new(descriptor(&format!("http://{addr}{path}"), 200)).unwrap()
    }

    async fn call(
        component: &HttpComponent,
        ctx: &Context,
        event: &str,
        args: Vec<Value>,
    ) -> Outcome {
        component.on_event(ctx.clone(), event.into(), args).await
    }

    #[tokio::test]
    async fn data_answers_are_acks_and_the_body_has_the_contract_shape() {
        let (addr, _) = backend().await;
        let ctx = context();
        ctx.session
            .set(vec![("nick".into(), "ann".into())])
            .await
            .unwrap();
        let body = call(
            &component(addr, "/echo"),
            &ctx,
            "say",
            vec![json!({"text": "hi"}), json!(2)],
        )
        .await
        .unwrap();
        assert_eq!(
            body,
            json!({
                "component": "hb", "version": "1.0", "channel": "main", "event": "say",
                "args": [{"text": "hi"}, 2], "socket": "sid-1", "user": "ann@example",
                "session": {"id": "sess-1", "data": {"nick": "ann"}},
                "instance": "inst-1", "node": "node-a", "namespace": "/hb/1/main",
            })
        );
        assert_eq!(ctx.take_effects(), Effects::default());
    }

    #[tokio::test]
    async fn requests_are_signed_with_the_backend_secret_when_one_is_set() {
        let (addr, _) = backend().await;
        let ctx = context();
        let signer = crate::backend_signature::BackendSigner::new(crate::config::Secret::new(
            "backend-secret",
        ));
        let signed = component(addr, "/signed").signed(Some(signer));
        assert_eq!(
            call(&signed, &ctx, "x", vec![json!("é")]).await,
            Ok(json!({"signed": true, "timestamp": true}))
        );
        assert_eq!(
            call(&component(addr, "/signed"), &ctx, "x", vec![]).await,
            Ok(json!({"signed": false, "timestamp": false}))
        );
    }

    #[tokio::test]
    async fn error_answers_are_error_acks() {
        let (addr, _) = backend().await;
        let ctx = context();
        assert_eq!(
            call(&component(addr, "/error"), &ctx, "x", vec![]).await,
            Err(json!({"code": "nope"}))
        );
        assert_eq!(
            call(&component(addr, "/null-error"), &ctx, "x", vec![]).await,
            Ok(Value::Null)
        );
        // An error answer's join/leave are not applied.
        assert_eq!(
            call(&component(addr, "/error-join"), &ctx, "x", vec![]).await,
            Err(json!("no"))
        );
        assert_eq!(ctx.take_effects(), Effects::default());
    }

    #[tokio::test]
    async fn other_values_are_data() {
        let (addr, _) = backend().await;
        let ctx = context();
        assert_eq!(
            call(&component(addr, "/plain"), &ctx, "x", vec![]).await,
            Ok(json!([1, 2, 3]))
        );
        assert_eq!(
            call(&component(addr, "/object"), &ctx, "x", vec![]).await,
            Ok(json!({"a": 1}))
        );
    }

    #[tokio::test]
    async fn failing_status_is_an_error_ack() {
        let (addr, _) = backend().await;
        let outcome = call(&component(addr, "/status"), &context(), "x", vec![]).await;
        assert_eq!(
            outcome,
            Err(json!({"error": "backend error", "component": "hb@1.0"}))
        );
    }

    #[tokio::test]
    async fn invalid_json_is_an_error_ack() {
        let (addr, _) = backend().await;
        let error = call(&component(addr, "/invalid"), &context(), "x", vec![])
            .await
            .unwrap_err();
        assert_eq!(
            error,
            json!({"error": "backend error", "component": "hb@1.0"})
        );
    }

    #[tokio::test]
    async fn slow_backends_time_out() {
        let (addr, _) = backend().await;
        let started = std::time::Instant::now();
        let outcome = call(&component(addr, "/slow"), &context(), "x", vec![]).await;
        assert_eq!(
            outcome,
            Err(json!({"error": "backend timeout", "component": "hb@1.0"}))
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn unreachable_backends_are_unavailable() {
        let dead = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let error = call(&component(dead, "/x"), &context(), "x", vec![])
            .await
            .unwrap_err();
        // Nothing of the node's internals (the backend's address, the error
        // chain) reaches the client.
        assert_eq!(
            error,
            json!({"error": "backend unavailable", "component": "hb@1.0"})
        );
        assert!(
            !error.to_string().contains(&dead.port().to_string()),
            "{error}"
        );
    }

    #[tokio::test]
    async fn join_and_leave_apply_to_the_calling_socket() {
        let (addr, _) = backend().await;
        let ctx = context();
        assert_eq!(
            call(&component(addr, "/join"), &ctx, "x", vec![]).await,
            Ok(json!("ok"))
        );
        assert_eq!(
            ctx.take_effects(),
            Effects {
                join: vec!["a".into(), "b".into()],
                leave: vec!["c".into()]
            }
        );
    }

    #[tokio::test]
    async fn connects_and_disconnects_are_posted() {
        let (addr, mut bodies) = backend().await;
        let component = component(addr, "/hook");
        component.on_connect(context());
        let body = tokio::time::timeout(Duration::from_secs(2), bodies.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(body["event"], "connect");
        assert_eq!(body["args"], json!([]));
        assert_eq!(body["socket"], "sid-1");
        component.on_disconnect(context());
        let body = tokio::time::timeout(Duration::from_secs(2), bodies.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(body["event"], "disconnect");
        // A dead backend only logs.
        let dead = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        self::component(dead, "/x").on_connect(context());
    }

    #[test]
    fn descriptors_need_a_usable_http_handler() {
        let mut no_handler = descriptor("http://127.0.0.1:1/x", 200);
        no_handler.handler = None;
        assert!(HttpComponent::new(no_handler).is_err());
        for url in [
            "not a url",
            "https://example.com/x",
            "ftp://example.com/x",
            "/relative",
        ] {
            match HttpComponent::new(descriptor(url, 200)) {
                Err(DescriptorError::Read { path, .. }) => assert_eq!(path, url),
                other => panic!("{url}: {other:?}"),
            }
        }
        assert!(HttpComponent::new(descriptor("http://127.0.0.1:1/x", 0)).is_err());
        let ok = HttpComponent::new(descriptor("http://127.0.0.1:1/x", 200)).unwrap();
        assert_eq!(ok.timeout(), Duration::from_millis(200));
        assert_eq!(ok.url(), "http://127.0.0.1:1/x");
    }

    #[test]
    fn notices_without_a_runtime_do_not_panic() {
        // Building a context needs a runtime; calling on_connect outside one must not panic.
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let ctx = runtime.block_on(async { context() });
        let component = HttpComponent::new(descriptor("http://127.0.0.1:1/x", 200)).unwrap();
        component.on_connect(ctx);
    }
}
