//! Publishing node conditions and events with the node's own kubelet
//! credential (`system:node:<name>`: NodeRestriction lets it update its
//! own Node's status and create Events, nothing else). A condition's
//! `lastTransitionTime` changes only when its status does; the detail
//! (reason, message) may change without resetting it, so repair timers
//! keyed on the transition keep running.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Event, EventSource, Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::kube::client::timed;
use crate::values::time::{rfc3339, timestamp};

/// A condition to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Condition type.
    pub type_: String,
    /// `True`, `False`, `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

/// Publishes conditions of one Node, remembering each condition's status
/// and transition time.
pub struct NodeStatus {
    client: Client,
    node: String,
    /// By type: the status and `lastTransitionTime` last published (or
    /// found on the Node).
    known: BTreeMap<String, (String, String)>,
    loaded: bool,
}

impl std::fmt::Debug for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStatus")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl NodeStatus {
    /// For Node `node`, through `client` (the kubelet's credential).
    pub fn new(client: Client, node: &str) -> Self {
        NodeStatus {
            client,
            node: node.to_string(),
            known: BTreeMap::new(),
            loaded: false,
        }
    }

    /// Reads the Node's current conditions once (an agent restart keeps
    /// the transition times it finds).
    async fn load(&mut self) -> Result<(), kube::Error> {
        if self.loaded {
            return Ok(());
        }
        let api: Api<Node> = Api::all(self.client.clone());
        let node = timed(api.get(&self.node)).await?;
        for c in node.status.and_then(|s| s.conditions).unwrap_or_default() {
            let t = c
                .last_transition_time
                .map(|t| t.0.to_string())
                .unwrap_or_else(|| rfc3339(SystemTime::now()));
            self.known.insert(c.type_, (c.status, t));
        }
        self.loaded = true;
        Ok(())
    }

    /// Publishes `c` (one strategic-merge patch of `status.conditions`).
    pub async fn publish(&mut self, c: &Published) -> Result<(), kube::Error> {
        self.load().await?;
        let now = rfc3339(SystemTime::now());
        let transition = match self.known.get(&c.type_) {
            Some((status, t)) if *status == c.status => t.clone(),
            _ => now.clone(),
        };
        let patch = json!({"status": {"conditions": [{
            "type": c.type_,
            "status": c.status,
            "reason": c.reason,
            "message": c.message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": transition,
        }]}});
        let api: Api<Node> = Api::all(self.client.clone());
        timed(api.patch_status(
            &self.node,
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        ))
        .await?;
        self.known
            .insert(c.type_.clone(), (c.status.clone(), transition));
        Ok(())
    }

    /// Creates a Warning (or Normal) Event about the Node.
    pub async fn event(
        &self,
        warning: bool,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        node_event(
            &self.client,
            &self.node,
            "hpk8s-agent",
            warning,
            reason,
            "Detected",
            message,
        )
        .await
    }
}

/// Creates a Warning (or Normal) Event about Node `node`, reported by
/// `component` (the node agent, or the controller's remediation).
pub async fn node_event(
    client: &Client,
    node: &str,
    component: &str,
    warning: bool,
    reason: &str,
    action: &str,
    message: &str,
) -> Result<(), kube::Error> {
    let now = SystemTime::now();
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{node}.")),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            api_version: Some("v1".into()),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(message.chars().take(1024).collect()),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: Some(node.to_string()),
        }),
        first_timestamp: Some(Time(timestamp(now))),
        last_timestamp: Some(Time(timestamp(now))),
        event_time: Some(MicroTime(timestamp(now))),
        reporting_component: Some(component.into()),
        reporting_instance: Some(node.to_string()),
        action: Some(action.into()),
        count: Some(1),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    timed(api.create(&PostParams::default(), &event)).await?;
    Ok(())
}
