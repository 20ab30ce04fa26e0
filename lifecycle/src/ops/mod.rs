//! Operator commands, run by a person (or a script) on the controller,
//! one module each.
//!
//! - [`generate_new_token`]: a new bootstrap token and join ticket now.
//! - [`remediation`]: the remediation breaker's state, holds, resume.
//! - [`inventory`]: Nodes matched to instances (shared by the others).
//! - [`status`]: a row per node and instance, mismatches flagged.
//! - [`orphans`]: Nodes whose instance is gone, deleted safely.
//! - [`restart_instance`]: replace or reboot one instance, drained first.

pub mod generate_new_token;
pub mod inventory;
pub mod orphans;
pub mod remediation;
pub mod restart_instance;
pub mod status;

/// Why an operator command stopped.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// A Kubernetes call failed.
    #[error("cannot {what}: {source}; check the API server and the kubeconfig (--kubeconfig)")]
    Kubernetes {
        /// What was being done.
        what: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// No HyperPod cluster and no static topology to compare Nodes with.
    #[error(
        "no instance inventory: pass --cluster NAME|ARN (HyperPod) or run on a node whose config lists the cluster's nodes; {why}"
    )]
    NoInventory {
        /// What was tried.
        why: String,
    },
    /// The node named is not in the cluster.
    #[error(
        "no Node or instance matches {target} (tried node name, instance id and address); `hpk8s status` lists them"
    )]
    NodeNotFound {
        /// What the operator named.
        target: String,
    },
    /// The node is never restarted.
    #[error("refusing to {action} {node}: {why} (no --force for this)")]
    Protected {
        /// `replace`, `reboot`.
        action: &'static str,
        /// Node.
        node: String,
        /// Why.
        why: String,
    },
    /// A deletion or restart needs a yes and there is nobody to ask.
    #[error(
        "{what} needs confirmation: stdin is not a terminal; pass --yes (or --dry-run to look first)"
    )]
    ConfirmationRequired {
        /// What would have been done.
        what: String,
    },
    /// The operator answered no.
    #[error("nothing changed: the operator declined")]
    Declined,
    /// More orphans than the share limit.
    #[error(
        "refusing to delete {count} of {total} Nodes at once (more than {percent} %): check `hpk8s status` for a systemic cause; --force deletes them anyway"
    )]
    ShareExceeded {
        /// Orphans found.
        count: usize,
        /// Nodes in the cluster.
        total: usize,
        /// The limit.
        percent: usize,
    },
    /// The drain stopped at its deadline.
    #[error(
        "{node} stays cordoned and was not {action}ed: {summary}; free the budgets and run again, or pass --force"
    )]
    DrainBlocked {
        /// Node.
        node: String,
        /// `replace`, `reboot`.
        action: &'static str,
        /// What blocked it (pods and budgets).
        summary: String,
    },
    /// The node has no instance to act on.
    #[error("{node} has no matching instance in the inventory: cannot {action} it")]
    NoInstance {
        /// Node.
        node: String,
        /// `replace`, `reboot`.
        action: &'static str,
    },
    /// The request was refused for this instance.
    #[error("{action} of {instance} ({node}) refused: {code}: {message}")]
    RequestFailed {
        /// `replace`, `reboot`.
        action: &'static str,
        /// Node.
        node: String,
        /// Instance.
        instance: String,
        /// `ErrorCode` (or hpk8s's kind).
        code: String,
        /// The message.
        message: String,
    },
    /// HyperPod's own recovery is acting on the instance.
    #[error(
        "{action} of {instance} ({node}) not requested: {code}: {message}; HyperPod may be acting on it already (`hpk8s status`)"
    )]
    InstanceBusy {
        /// `replace`, `reboot`.
        action: &'static str,
        /// Node.
        node: String,
        /// Instance.
        instance: String,
        /// Code (`InstanceIdInUse`).
        code: String,
        /// Message.
        message: String,
    },
    /// The join ticket could not be made valid for the wait.
    #[error("no replacement requested for {node}: {why}")]
    Ticket {
        /// Node.
        node: String,
        /// Why.
        why: String,
    },
    /// The replacement (or reboot) did not come back in time.
    #[error(
        "{node}: the {action} was requested {waited_secs} s ago and {what} has not happened yet (last instance status: {last}); check the instance in the SageMaker console, then `hpk8s status`"
    )]
    WaitDeadline {
        /// Node.
        node: String,
        /// `replace`, `reboot`.
        action: &'static str,
        /// Seconds waited.
        waited_secs: u64,
        /// What was awaited.
        what: String,
        /// The last `InstanceStatus` and message seen.
        last: String,
    },
}

crate::error::class::classify!(OpsError {
    Kubernetes { .. } => Unavailable "kubernetes_unavailable";
    NoInventory { .. } => Config "instance_inventory_missing";
    NodeNotFound { .. } => Input "node_not_found";
    Protected { .. } => Refused "node_protected";
    ConfirmationRequired { .. } => Refused "confirmation_required";
    Declined {} => Refused "declined";
    ShareExceeded { .. } => Refused "orphan_share_exceeded";
    DrainBlocked { .. } => Precondition "drain_blocked";
    NoInstance { .. } => Input "instance_unmatched";
    RequestFailed { .. } => Unavailable "restart_request_failed";
    InstanceBusy { .. } => Precondition "instance_busy";
    Ticket { .. } => Precondition "join_ticket_unavailable";
    WaitDeadline { .. } => Deadline "restart_wait_deadline";
});
