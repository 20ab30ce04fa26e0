//! `hpk8s remediation status` and `hpk8s remediation resume`: what the
//! controller's remediation holds and whether its circuit breaker is open;
//! closing the breaker after a person checked the cause.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::kube::client::timed;
use crate::remediation::RemediationError;
use crate::remediation::breaker::{self, Breaker};
use crate::remediation::ownership;
use crate::values::time::rfc3339;

/// One node hpk8s holds.
#[derive(Debug, Clone, Serialize)]
pub struct HeldNode {
    /// Node name.
    pub node: String,
    /// Why (condition reason).
    pub reason: String,
    /// The action.
    pub action: &'static str,
    /// Where it stands.
    pub stage: crate::remediation::policy::Stage,
    /// Since when.
    pub since: String,
    /// Whether hpk8s cordoned it (false: someone else had).
    pub cordoned_by_hpk8s: bool,
}

/// The breaker and the holds.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// `open` or `closed`.
    pub breaker: &'static str,
    /// Why it is open.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Since when it is open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The last resume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<String>,
    /// Nodes hpk8s holds.
    pub held: Vec<HeldNode>,
}

fn state_error(source: kube::Error) -> RemediationError {
    RemediationError::State { source }
}

fn shown(b: &Breaker) -> (&'static str, String, Option<String>, Option<String>) {
    (
        if b.open { "open" } else { "closed" },
        b.reason.clone(),
        b.since.map(rfc3339),
        b.resumed_at.map(rfc3339),
    )
}

/// Reads the breaker and every Node's hold.
pub async fn status(client: &Client) -> Result<Status, RemediationError> {
    let b = breaker::load(client).await.map_err(state_error)?;
    let nodes: Api<Node> = Api::all(client.clone());
    let list = timed(nodes.list(&ListParams::default()))
        .await
        .map_err(state_error)?;
    let mut held: Vec<HeldNode> = list
        .items
        .iter()
        .filter_map(|n| {
            let r = ownership::record(n)?;
            Some(HeldNode {
                node: n.metadata.name.clone().unwrap_or_default(),
                reason: r.reason.clone(),
                action: r.action.as_str(),
                stage: r.stage,
                since: r.since.clone(),
                cordoned_by_hpk8s: r.cordoned,
            })
        })
        .collect();
    held.sort_by(|a, b| a.node.cmp(&b.node));
    let (breaker, reason, since, resumed_at) = shown(&b);
    Ok(Status {
        breaker,
        reason,
        since,
        resumed_at,
        held,
    })
}

/// Closes the breaker; returns the state before.
pub async fn resume(client: &Client) -> Result<Breaker, RemediationError> {
    breaker::resume(client, SystemTime::now())
        .await
        .map_err(state_error)
}
