//! Getting a drained node rebooted or replaced, by the route its cluster
//! has:
//! - HyperPod, API: `BatchRebootClusterNodes` / `BatchReplaceClusterNodes`
//!   (≤ 25 ids a call, batched by [`SageMaker::restart`]); each refused id
//!   comes back with its `ErrorCode`. `InstanceIdInUse` means HyperPod's
//!   own recovery already acts on the instance: hpk8s stops asking.
//! - HyperPod, Slurm: `scontrol update node=<name> state=fail
//!   reason=Action:Reboot|Action:Replace` (argv, no shell), which HyperPod's
//!   health agent turns into the same action; chosen when configured, or
//!   (route `auto`) when the API is not available for the cluster.
//! - Self-managed EC2: a reboot is done by the node itself (the controller
//!   annotates the drained Node with `hpk8s.io/reboot-requested`; the
//!   node's agent sees it and reboots through systemd). A replacement is
//!   reported (an Event; the condition already says `GPUNeedsReplacement`)
//!   for the autoscaling group or a person to terminate the instance.

use crate::aws::sagemaker::{BatchOutcome, Restart, SageMaker, SageMakerError};
use crate::config::RecoveryRoute;
use crate::host::{Cmd, Host};

/// One node to restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Kubernetes node name.
    pub node: String,
    /// EC2 instance id (HyperPod's node id), when known.
    pub instance_id: Option<String>,
}

impl Target {
    /// The Slurm node name: the host name's first label, as HyperPod's
    /// Slurm names its nodes (`ip-10-1-2-3`).
    pub fn slurm_name(&self) -> &str {
        self.node.split('.').next().unwrap_or(&self.node)
    }
}

/// What became of one node's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted (by the API, by Slurm, or annotated for the node's agent).
    Requested {
        /// Which route took it.
        via: &'static str,
    },
    /// Refused for this node; retried on a later pass (up to a limit).
    Failed {
        /// The error code or kind.
        code: String,
        /// The message.
        message: String,
    },
    /// Someone else acts on it (`InstanceIdInUse`), or nobody can (no
    /// instance id, no route): hpk8s stops asking.
    Stopped {
        /// The code.
        code: String,
        /// Why.
        message: String,
    },
    /// Reported for the autoscaling group or a person (EC2 replace).
    Reported,
}

/// How restarts are requested for this cluster.
#[derive(Debug, Clone)]
pub enum Route {
    /// HyperPod.
    HyperPod {
        /// The API client, when the cluster is known.
        api: Option<SageMaker>,
        /// The configured route.
        route: RecoveryRoute,
    },
    /// Self-managed (EC2 groups, static nodes): the node reboots itself;
    /// replacements are reported.
    SelfManaged,
}

/// Requests `kind` for `targets`. Returns the outcome per target, in order.
/// The EC2 route's annotation is set by the caller (it owns the Node
/// patch); here it only says `Requested { via: "node-agent" }`.
pub async fn request(
    route: &Route,
    host: &Host,
    kind: Restart,
    targets: &[Target],
) -> Vec<(Target, Outcome)> {
    match route {
        Route::SelfManaged => targets
            .iter()
            .map(|t| {
                let o = match kind {
                    Restart::Reboot => Outcome::Requested { via: "node-agent" },
                    Restart::Replace => Outcome::Reported,
                };
                (t.clone(), o)
            })
            .collect(),
        Route::HyperPod { api, route } => {
            let use_api = *route != RecoveryRoute::Slurm && api.is_some();
            if use_api && let Some(api) = api {
                let (with_ids, without): (Vec<&Target>, Vec<&Target>) =
                    targets.iter().partition(|t| t.instance_id.is_some());
                let ids: Vec<String> = with_ids
                    .iter()
                    .filter_map(|t| t.instance_id.clone())
                    .collect();
                let (outcome, error) = api.restart(kind, &ids).await;
                let unsupported = matches!(error, Some(SageMakerError::Unsupported { .. }))
                    && outcome.successful.is_empty();
                if unsupported && *route == RecoveryRoute::Auto {
                    tracing::warn!(
                        action = kind.action(),
                        "the SageMaker API is not available for this cluster: using Slurm"
                    );
                    return slurm(host, kind, targets).await;
                }
                let mut out = api_outcomes(&with_ids, &outcome, error.as_ref());
                out.extend(without.into_iter().map(|t| {
                    (
                        t.clone(),
                        Outcome::Stopped {
                            code: "no_instance_id".into(),
                            message: "the Node has no instance id label or provider id".into(),
                        },
                    )
                }));
                out
            } else if *route == RecoveryRoute::Api {
                targets
                    .iter()
                    .map(|t| {
                        (
                            t.clone(),
                            Outcome::Stopped {
                                code: "no_cluster".into(),
                                message: "route `api` needs the HyperPod cluster's name or ARN"
                                    .into(),
                            },
                        )
                    })
                    .collect()
            } else {
                slurm(host, kind, targets).await
            }
        }
    }
}

fn api_outcomes(
    targets: &[&Target],
    outcome: &BatchOutcome,
    error: Option<&SageMakerError>,
) -> Vec<(Target, Outcome)> {
    targets
        .iter()
        .map(|t| {
            let id = t.instance_id.as_deref().unwrap_or("");
            let o = if outcome.successful.iter().any(|s| s == id) {
                Outcome::Requested { via: "sagemaker" }
            } else if let Some(f) = outcome.failed.iter().find(|f| f.node_id == id) {
                if f.code == "InstanceIdInUse" {
                    Outcome::Stopped {
                        code: f.code.clone(),
                        message: format!("{} (HyperPod's own recovery may be acting)", f.message),
                    }
                } else {
                    Outcome::Failed {
                        code: f.code.clone(),
                        message: f.message.clone(),
                    }
                }
            } else {
                let (code, message) = match error {
                    Some(e) => (e.kind().to_string(), e.to_string()),
                    None => (
                        "not_answered".into(),
                        "the service did not mention this id".into(),
                    ),
                };
                Outcome::Failed { code, message }
            };
            ((*t).clone(), o)
        })
        .collect()
}

/// One `scontrol` per target, on a blocking thread (a command must not
/// stall the runtime that also runs the drains and the watch).
async fn slurm(host: &Host, kind: Restart, targets: &[Target]) -> Vec<(Target, Outcome)> {
    let reason = match kind {
        Restart::Reboot => "Action:Reboot",
        Restart::Replace => "Action:Replace",
    };
    let host = host.clone();
    let targets = targets.to_vec();
    let run = move || {
        targets
            .into_iter()
            .map(|t| {
                let cmd = Cmd::new("scontrol").args([
                    "update".to_string(),
                    format!("node={}", t.slurm_name()),
                    "state=fail".to_string(),
                    format!("reason={reason}"),
                ]);
                let o = match host.run(&cmd) {
                    Ok(_) => Outcome::Requested { via: "slurm" },
                    Err(e) => Outcome::Failed {
                        code: "scontrol_failed".into(),
                        message: e.to_string(),
                    },
                };
                (t, o)
            })
            .collect()
    };
    tokio::task::spawn_blocking(run)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
