//! Putting the controller's labels on a Node: one JSON merge patch of only
//! the labels that are missing or different (field manager `hpk8s`), with
//! 5xx, 429 and connection errors retried for [`LABEL_RETRY_TOTAL`] and a
//! 404 (the node was deleted meanwhile) reported at once.

use std::collections::BTreeMap;
use std::time::Duration;

use backon::Retryable;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::time::Instant;

use super::error::{LABEL_RETRY_TOTAL, NodesError};
use super::inventory::ReadyReport;
use crate::cluster::labels;
use crate::kube::client::timed;
use crate::kube::errors::is_transient;
use crate::kube::retry;

/// Label updates in flight at once: a thousand nodes one at a time take
/// seconds, all at once would be a burst the API server may throttle.
pub const LABEL_CONCURRENCY: usize = 16;

/// A failed attempt of one label update, before retrying decides.
enum Attempt {
    Gone(String),
    Transient(String, kube::Error),
    Refused(String, kube::Error),
}

fn attempt_error(endpoint: String, e: kube::Error) -> Attempt {
    match &e {
        kube::Error::Api(s) if s.code == 404 => Attempt::Gone(endpoint),
        _ if is_transient(&e) => Attempt::Transient(endpoint, e),
        _ => Attempt::Refused(endpoint, e),
    }
}

/// The labels of `wanted` that `current` lacks or has with another value.
pub fn missing_labels(
    current: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    wanted
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Sets `wanted` on node `node_name` when any label is missing or
/// different: a GET, then one PATCH of only those labels; returns whether
/// it patched. For callers that have not seen the node; the readiness
/// watch, which has, sends [`patch_labels`] alone.
pub async fn label_node(
    client: &Client,
    node_name: &str,
    wanted: &BTreeMap<String, String>,
) -> Result<bool, NodesError> {
    let api: Api<Node> = Api::all(client.clone());
    let path = format!("/api/v1/nodes/{node_name}");
    let attempt = || async {
        let node = timed(api.get(node_name))
            .await
            .map_err(|e| attempt_error(format!("GET {path}"), e))?;
        let missing = missing_labels(&node.metadata.labels.unwrap_or_default(), wanted);
        if missing.is_empty() {
            return Ok(false);
        }
        patch_once(&api, node_name, &path, &missing).await?;
        Ok(true)
    };
    let changed = retried(node_name, attempt).await?;
    if changed {
        log_labelled(node_name, wanted);
    }
    Ok(changed)
}

/// Sets `labels` on node `node_name` with one PATCH (no GET: the caller
/// knows they are missing), retried like [`label_node`].
pub async fn patch_labels(
    client: &Client,
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), NodesError> {
    let api: Api<Node> = Api::all(client.clone());
    let path = format!("/api/v1/nodes/{node_name}");
    retried(node_name, || patch_once(&api, node_name, &path, labels)).await?;
    log_labelled(node_name, labels);
    Ok(())
}

async fn patch_once(
    api: &Api<Node>,
    node_name: &str,
    path: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), Attempt> {
    let params = PatchParams {
        field_manager: Some(labels::FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    let patch = json!({"metadata": {"labels": labels}});
    timed(api.patch(node_name, &params, &Patch::Merge(&patch)))
        .await
        .map_err(|e| attempt_error(format!("PATCH {path}"), e))?;
    Ok(())
}

async fn retried<T, F, Fut>(node_name: &str, attempt: F) -> Result<T, NodesError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Attempt>>,
{
    let start = Instant::now();
    attempt
        .retry(retry::transient(LABEL_RETRY_TOTAL))
        .when(|a: &Attempt| matches!(a, Attempt::Transient(..)))
        .notify(|a: &Attempt, pause: Duration| {
            if let Attempt::Transient(endpoint, e) = a {
                tracing::warn!(node = node_name, %endpoint, error = %e, ?pause, "labelling the node failed; retrying");
            }
        })
        .await
        .map_err(|a| match a {
            Attempt::Gone(endpoint) => NodesError::NodeGone {
                node: node_name.to_string(),
                endpoint,
            },
            Attempt::Transient(endpoint, source) => NodesError::Unavailable {
                node: node_name.to_string(),
                endpoint,
                retried_secs: start.elapsed().as_secs(),
                source: Box::new(source),
            },
            Attempt::Refused(endpoint, source) => NodesError::Refused {
                node: node_name.to_string(),
                endpoint,
                source: Box::new(source),
            },
        })
}

fn log_labelled(node_name: &str, labels: &BTreeMap<String, String>) {
    let shown: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    tracing::info!(node = node_name, labels = %shown.join(","), "labelled the node");
}

/// Applies [`ReadyReport::labels_to_apply`] with [`label_node`]; returns
/// how many nodes changed. A node deleted meanwhile is logged and skipped.
pub async fn apply_controller_labels(
    client: &Client,
    report: &ReadyReport,
    groups: &super::inventory::GroupLabels,
) -> Result<usize, NodesError> {
    let mut results = futures::stream::iter(report.labels_to_apply(groups))
        .map(|(node, wanted)| async move {
            let result = label_node(client, &node, &wanted).await;
            (node, result)
        })
        .buffer_unordered(LABEL_CONCURRENCY);
    let mut changed = 0;
    while let Some((node, result)) = results.next().await {
        match result {
            Ok(true) => changed += 1,
            Ok(false) => {}
            Err(e @ NodesError::NodeGone { .. }) => tracing::warn!(%node, "{e}"),
            Err(e) => return Err(e),
        }
    }
    Ok(changed)
}
