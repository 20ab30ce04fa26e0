//! Why the cluster's nodes could not be waited for or labelled.

use crate::error::class::classify;
use crate::kube::errors::class_of;

/// How long one label update keeps retrying 5xx, 429 and connection errors.
pub const LABEL_RETRY_TOTAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Errors of the node wait and of node labelling.
#[derive(Debug, thiserror::Error)]
pub enum NodesError {
    /// Some expected nodes were not Ready before the deadline.
    #[error(
        "{missing} of {expected} expected nodes not Ready after {waited_secs} s (watching GET /api/v1/nodes): {names}{last_error}; check those nodes' `journalctl -u hpk8s-bootstrap` and `journalctl -u kubelet`, or raise cluster.nodes_ready_timeout_secs"
    )]
    NotReady {
        /// How many are missing.
        missing: usize,
        /// How many were expected.
        expected: usize,
        /// The first few missing nodes (`a, b and 3 more`).
        names: String,
        /// Seconds waited.
        waited_secs: u64,
        /// `; last API error: …` when watching failed lately, else empty.
        last_error: String,
    },
    /// The node was deleted while it was being labelled.
    #[error("node {node} was deleted while labelling it ({endpoint} answered 404 Not Found)")]
    NodeGone {
        /// The node.
        node: String,
        /// `GET /api/v1/nodes/NAME` or `PATCH …`.
        endpoint: String,
    },
    /// The API server kept failing (5xx, 429, connection errors) for
    /// [`LABEL_RETRY_TOTAL`].
    #[error(
        "{endpoint} kept failing for {retried_secs} s while labelling node {node}: {source}; check the API server (`kubectl get --raw /readyz`) and re-run"
    )]
    Unavailable {
        /// The node.
        node: String,
        /// `PATCH /api/v1/nodes/NAME`, …
        endpoint: String,
        /// Seconds spent retrying.
        retried_secs: u64,
        /// The last failure.
        #[source]
        source: Box<kube::Error>,
    },
    /// The API server refused the request (forbidden, invalid label value).
    #[error(
        "{endpoint} was refused while labelling node {node}: {source}; check the controller's credential (admin kubeconfig) and the label values"
    )]
    Refused {
        /// The node.
        node: String,
        /// `PATCH /api/v1/nodes/NAME`, …
        endpoint: String,
        /// The refusal.
        #[source]
        source: Box<kube::Error>,
    },
}

classify!(NodesError {
    NotReady { .. } => Deadline "nodes_not_ready";
    NodeGone { .. } => Unavailable "node_gone";
    Unavailable { .. } => Unavailable "node_label_unavailable";
    Refused { source, .. } => Input "node_label_refused" refine class_of(source);
});
