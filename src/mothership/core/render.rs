//! `/core` `render({id, version, view, context})`: resolves the component (the
//! newest matching `version`) and routes a `render({view, context})` event to
//! one of its hosts in turn, which creates the instance first; the answer has
//! `instanceId` (`{node}:{uuid}`, naming the rendering node) and `node` added.
//!
//! Owns this command's arguments and the call it makes, and, on the host that
//! serves it, naming and recording the instance and adding it to the answer.
//! Does not own version resolution (see `crate::component::Catalog::newest`),
//! routing (see `crate::mothership::router`) or dispatch (see `super`).

use std::sync::Arc;

use serde_json::{Value, json};

use super::text;
use crate::component::Component;
use crate::mothership::router::{Answer, Request, Router};
use crate::socket::Socket;

#[derive(Debug, PartialEq)]
pub(super) struct Render {
    pub(super) id: String,
    pub(super) version: String,
    pub(super) view: Value,
    pub(super) context: Value,
}

impl Render {
    pub(super) fn parse(arg: &Value) -> Result<Render, String> {
        let (Some(id), Some(version)) = (text(arg, "id"), text(arg, "version")) else {
            return Err("render needs {id, version, view, context}".into());
        };
        let field = |key: &str| arg.get(key).cloned().unwrap_or(Value::Null);
        Ok(Render {
            id,
            version,
            view: field("view"),
            context: field("context"),
        })
    }

    pub(super) async fn apply(self, router: &Router, socket: &Arc<Socket>) -> Answer {
        let Render {
            id,
            version,
            view,
            context,
        } = self;
        let Some(info) = router.catalog.newest(&id, &version) else {
            return Answer::plain(Err(
                json!({ "error": "unknown component", "component": format!("{id}@{version}") }),
            ));
        };
        let request = Request {
            channel: "core".into(),
            event: "render".into(),
            args: vec![json!({ "view": view, "context": context })],
            create_instance: true,
        };
        router.call(socket, &info.descriptor.key(), request).await
    }
}

/// Names and records a new instance of `component`, rendered on this node for
/// `socket`: `{node}:{uuid}`, so anyone can tell where it lives.
pub(in crate::mothership) fn create_instance(
    router: &Router,
    component: &dyn Component,
    socket: &str,
) -> String {
    let id = format!("{}:{}", router.node_id, uuid::Uuid::new_v4().simple());
    let descriptor = component.descriptor();
    router.io.cluster().record_instance(
        &id,
        socket,
        vec![
            ("component".into(), descriptor.id.clone()),
            ("version".into(), descriptor.version.to_string()),
            ("node".into(), router.node_id.clone()),
            ("created".into(), crate::cluster::now_millis().to_string()),
            ("state".into(), "rendered".into()),
        ],
    );
    id
}

/// A render's answer: the handler's data with the instance and node added.
pub(in crate::mothership) fn with_instance(data: Value, instance: &str, node: &str) -> Value {
    match data {
        Value::Object(mut object) => {
            object.insert("instanceId".into(), json!(instance));
            object.insert("node".into(), json!(node));
            Value::Object(object)
        }
        other => json!({ "instanceId": instance, "node": node, "result": other }),
    }
}
