//! The SageMaker client for HyperPod cluster nodes: the inventory
//! (`ListClusterNodes`, every page; `DescribeClusterNode` for what a
//! summary lacks) and the node actions (`BatchRebootClusterNodes`,
//! `BatchReplaceClusterNodes`, `BatchDeleteClusterNodes`), batched to the
//! service's limits with every per-node failure kept with its code.
//!
//! Errors are one line naming the action and the cluster: AccessDenied
//! names the IAM action needed; throttling is retried with jittered
//! backoff (beyond the SDK's own two retries) before it is reported; an
//! action the cluster's software does not support yet is its own kind, so
//! callers can take the Slurm route.
//!
//! IAM on the cluster's ARN: `sagemaker:ListClusterNodes`,
//! `sagemaker:DescribeClusterNode`, and for actions
//! `sagemaker:BatchRebootClusterNodes`, `sagemaker:BatchReplaceClusterNodes`,
//! `sagemaker:BatchDeleteClusterNodes`.

use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_sagemaker::Client;
use aws_sdk_sagemaker::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use backon::{ExponentialBuilder, Retryable};
use serde::Serialize;

use crate::error::class::classify;

/// Node ids per `BatchReboot`/`BatchReplaceClusterNodes` call.
pub const RESTART_BATCH: usize = 25;
/// Node ids per `BatchDeleteClusterNodes` call (more needs AWS Support).
pub const DELETE_BATCH: usize = 99;
/// Summaries per `ListClusterNodes` page.
const PAGE: i32 = 100;
/// Tries of one call on throttling (each already retried by the SDK).
const THROTTLE_TRIES: usize = 6;

/// Why a SageMaker call failed.
#[derive(Debug, thiserror::Error)]
pub enum SageMakerError {
    /// IAM forbids the call.
    #[error(
        "AWS denied sagemaker:{action} on cluster {cluster}: {message}; allow sagemaker:{action} on the cluster's ARN for this role"
    )]
    Denied {
        /// The API action.
        action: &'static str,
        /// The cluster.
        cluster: String,
        /// The service's message.
        message: String,
    },
    /// Throttled beyond the retries.
    #[error(
        "sagemaker:{action} on cluster {cluster} is still throttled after {tries} tries; retry later"
    )]
    Throttled {
        /// The API action.
        action: &'static str,
        /// The cluster.
        cluster: String,
        /// Tries made.
        tries: usize,
    },
    /// The cluster does not exist (or is not visible to these credentials
    /// in this region).
    #[error(
        "cluster {cluster} not found by sagemaker:{action} in region {region}; check the cluster name or ARN and the region"
    )]
    ClusterNotFound {
        /// The API action.
        action: &'static str,
        /// The cluster.
        cluster: String,
        /// The region asked.
        region: String,
    },
    /// The cluster's software does not support the call yet.
    #[error(
        "sagemaker:{action} is not available for cluster {cluster}: {message}; update the cluster's software, or use the Slurm route"
    )]
    Unsupported {
        /// The API action.
        action: &'static str,
        /// The cluster.
        cluster: String,
        /// The service's message.
        message: String,
    },
    /// Anything else (a 5xx, a time-out, a malformed answer).
    #[error("sagemaker:{action} on cluster {cluster} failed: {message}")]
    Service {
        /// The API action.
        action: &'static str,
        /// The cluster.
        cluster: String,
        /// What happened.
        message: String,
    },
}

classify!(SageMakerError {
    Denied { .. } => Permission "sagemaker_access_denied";
    Throttled { .. } => Unavailable "sagemaker_throttled";
    ClusterNotFound { .. } => Input "sagemaker_cluster_not_found";
    Unsupported { .. } => Precondition "sagemaker_action_unsupported";
    Service { .. } => Unavailable "sagemaker_failed";
});

/// One instance of the cluster, as `ListClusterNodes` (and, where it
/// lacked them, `DescribeClusterNode`) describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterNode {
    /// The instance id (`i-…`).
    pub instance_id: String,
    /// Its instance group.
    pub group: String,
    /// The instance type (`ml.p5.48xlarge`).
    pub instance_type: String,
    /// `Running`, `Failure`, `Pending`, `ShuttingDown`, `SystemUpdating`,
    /// `DeepHealthCheckInProgress`, `NotFound`, or a status this version
    /// does not know (kept as the service wrote it).
    pub status: String,
    /// The status message, if any.
    pub message: Option<String>,
    /// When the instance was launched.
    #[serde(serialize_with = "serialize_time")]
    pub launch_time: Option<SystemTime>,
    /// `ip-10-1-38-128.us-west-2.compute.internal`.
    pub private_dns_hostname: Option<String>,
    /// The primary private address (from `DescribeClusterNode`, only when
    /// the summary had no host name).
    pub private_ip: Option<String>,
}

#[allow(clippy::ref_option)] // serde's serialize_with signature
fn serialize_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&crate::values::time::rfc3339(*t)),
        None => s.serialize_none(),
    }
}

impl ClusterNode {
    /// `ip-a-b-c-d`: the first label of the private DNS name, which is
    /// also the node's host name on HyperPod.
    pub fn host_label(&self) -> Option<&str> {
        self.private_dns_hostname
            .as_deref()
            .and_then(|h| h.split('.').next())
            .filter(|h| !h.is_empty())
    }
}

/// One node the service refused in a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeFailure {
    /// The node id.
    pub node_id: String,
    /// `InstanceIdNotFound`, `InvalidInstanceStatus`, `InstanceIdInUse`,
    /// `InternalServerError` (reboot/replace); `NodeIdNotFound`,
    /// `InvalidNodeStatus`, `NodeIdInUse` (delete).
    pub code: String,
    /// The service's message.
    pub message: String,
}

/// What a batch did: accepted ids, refused ids with their codes, and ids
/// never sent because a call failed as a whole.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchOutcome {
    /// Accepted.
    pub successful: Vec<String>,
    /// Refused, each with its code.
    pub failed: Vec<NodeFailure>,
    /// Not sent (a call before them failed).
    pub not_sent: Vec<String>,
}

/// Reboot or replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Restart {
    /// `BatchRebootClusterNodes`.
    Reboot,
    /// `BatchReplaceClusterNodes`.
    Replace,
}

impl Restart {
    /// The API action.
    pub fn action(self) -> &'static str {
        match self {
            Restart::Reboot => "BatchRebootClusterNodes",
            Restart::Replace => "BatchReplaceClusterNodes",
        }
    }
}

/// `InstanceStatus` as the service wrote it (`Unknown` when absent) and
/// its message, if not empty.
fn status_and_message(
    st: Option<&aws_sdk_sagemaker::types::ClusterInstanceStatusDetails>,
) -> (String, Option<String>) {
    (
        st.and_then(|st| st.status())
            .map_or_else(|| "Unknown".to_string(), |st| st.as_str().to_string()),
        st.and_then(|st| st.message())
            .filter(|m| !m.is_empty())
            .map(str::to_string),
    )
}

/// (accepted ids, refused ids with their codes) of a batch reboot or
/// replace answer (two SDK types with the same shape).
macro_rules! restart_answer {
    ($o:expr) => {
        (
            $o.successful().to_vec(),
            $o.failed()
                .iter()
                .map(|f| NodeFailure {
                    node_id: f.node_id().unwrap_or_default().to_string(),
                    code: f
                        .error_code()
                        .map(|c| c.as_str().to_string())
                        .unwrap_or_default(),
                    message: f.message().unwrap_or_default().to_string(),
                })
                .collect::<Vec<_>>(),
        )
    };
}

/// The client for one cluster.
#[derive(Debug, Clone)]
pub struct SageMaker {
    client: Client,
    cluster: String,
    region: String,
    /// The first wait on throttling (doubling, jittered).
    throttle_backoff: Duration,
}

/// `(cluster, region)` from a cluster ARN
/// (`arn:<partition>:sagemaker:<region>:<account>:cluster/<id>`).
pub fn parse_cluster_arn(arn: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", _partition, "sagemaker", region, _account, resource]
            if resource.starts_with("cluster/") && !region.is_empty() =>
        {
            Some((arn.to_string(), (*region).to_string()))
        }
        _ => None,
    }
}

enum Failure {
    Denied(String),
    Throttled,
    NotFound,
    Unsupported(String),
    Other(String),
}

fn failure<E>(err: &SdkError<E>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(ctx) => {
            let code = ctx.err().code().unwrap_or_default();
            let status = ctx.raw().status().as_u16();
            let message = ctx.err().message().unwrap_or_default().to_string();
            let lower = message.to_ascii_lowercase();
            match code {
                c if c.contains("AccessDenied")
                    || c == "UnrecognizedClientException"
                    || status == 403 =>
                {
                    Failure::Denied(if message.is_empty() {
                        c.to_string()
                    } else {
                        message
                    })
                }
                c if c.contains("Throttl") || c == "TooManyRequestsException" || status == 429 => {
                    Failure::Throttled
                }
                "ResourceNotFound" | "ResourceNotFoundException" => Failure::NotFound,
                "UnknownOperationException" | "UnsupportedOperation" => {
                    Failure::Unsupported(message)
                }
                "ValidationException"
                    if lower.contains("not supported") || lower.contains("software update") =>
                {
                    Failure::Unsupported(message)
                }
                c => Failure::Other(format!(
                    "{} (HTTP {status}): {message}",
                    if c.is_empty() { "error" } else { c }
                )),
            }
        }
        SdkError::ResponseError(ctx) => Failure::Other(format!(
            "HTTP {} with a body that is not the service's (a proxy or a wrong endpoint?)",
            ctx.raw().status().as_u16()
        )),
        SdkError::TimeoutError(_) => Failure::Other(format!(
            "no answer within {} s",
            crate::aws::OPERATION_TIMEOUT.as_secs()
        )),
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => Failure::Other(format!(
            "cannot reach the endpoint ({})",
            DisplayErrorContext(err)
                .to_string()
                .lines()
                .next()
                .unwrap_or("connection failed")
        )),
        _ => Failure::Other(DisplayErrorContext(err).to_string()),
    }
}

impl SageMaker {
    /// A client for `cluster` (name or ARN) through `sdk`.
    pub fn new(sdk: &SdkConfig, cluster: &str) -> Self {
        SageMaker {
            client: Client::new(sdk),
            cluster: cluster.to_string(),
            region: sdk.region().map(ToString::to_string).unwrap_or_default(),
            throttle_backoff: Duration::from_millis(500),
        }
    }

    /// The first wait after a throttled call (tests shorten it).
    #[must_use]
    pub fn with_throttle_backoff(mut self, first: Duration) -> Self {
        self.throttle_backoff = first;
        self
    }

    /// The cluster this client acts on.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    fn error(&self, action: &'static str, f: Failure) -> SageMakerError {
        let cluster = self.cluster.clone();
        match f {
            Failure::Denied(message) => SageMakerError::Denied {
                action,
                cluster,
                message,
            },
            Failure::Throttled => SageMakerError::Throttled {
                action,
                cluster,
                tries: THROTTLE_TRIES,
            },
            Failure::NotFound => SageMakerError::ClusterNotFound {
                action,
                cluster,
                region: self.region.clone(),
            },
            Failure::Unsupported(message) => SageMakerError::Unsupported {
                action,
                cluster,
                message,
            },
            Failure::Other(message) => SageMakerError::Service {
                action,
                cluster,
                message,
            },
        }
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.throttle_backoff)
            .with_max_delay(self.throttle_backoff * 16)
            .with_max_times(THROTTLE_TRIES - 1)
            .with_jitter()
    }

    /// Runs `call`, retrying only throttling.
    async fn call<T, E, F, Fut>(&self, action: &'static str, call: F) -> Result<T, SageMakerError>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SdkError<E>>>,
    {
        call.retry(self.backoff())
            .when(|e: &SdkError<E>| matches!(failure(e), Failure::Throttled))
            .notify(|_, wait| {
                tracing::debug!(action, wait_ms = wait.as_millis(), "throttled; retrying");
            })
            .await
            .map_err(|e| self.error(action, failure(&e)))
    }

    /// Every node of the cluster: all pages of `ListClusterNodes`, then
    /// `DescribeClusterNode` only for summaries without a host name. An
    /// inventory that cannot be read completely is an error, never a
    /// partial list.
    pub async fn list_nodes(&self) -> Result<Vec<ClusterNode>, SageMakerError> {
        self.list_nodes_counted().await.map(|(n, _)| n)
    }

    /// [`Self::list_nodes`] with the number of calls it made (pages plus
    /// describes, throttled retries not counted).
    pub async fn list_nodes_counted(&self) -> Result<(Vec<ClusterNode>, usize), SageMakerError> {
        let mut calls = 0;
        let mut nodes = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .call("ListClusterNodes", || {
                    self.client
                        .list_cluster_nodes()
                        .cluster_name(&self.cluster)
                        .max_results(PAGE)
                        .set_next_token(token.clone())
                        .send()
                })
                .await?;
            calls += 1;
            for s in page.cluster_node_summaries() {
                let Some(id) = s.instance_id() else { continue };
                let (status, message) = status_and_message(s.instance_status());
                nodes.push(ClusterNode {
                    instance_id: id.to_string(),
                    group: s.instance_group_name().unwrap_or_default().to_string(),
                    instance_type: s
                        .instance_type()
                        .map(|t| t.as_str().to_string())
                        .unwrap_or_default(),
                    status,
                    message,
                    launch_time: s.launch_time().and_then(|t| SystemTime::try_from(*t).ok()),
                    private_dns_hostname: s.private_dns_hostname().map(str::to_string),
                    private_ip: None,
                });
            }
            token = page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        for n in nodes
            .iter_mut()
            .filter(|n| n.private_dns_hostname.is_none())
        {
            let details = self.describe_node(&n.instance_id).await?;
            calls += 1;
            // Gone since the listing: the summary is what there is.
            if let Some(d) = details {
                n.private_dns_hostname = d.private_dns_hostname;
                n.private_ip = d.private_ip;
            }
        }
        Ok((nodes, calls))
    }

    /// One instance, read again (`DescribeClusterNode`); `None` when the
    /// service no longer knows it.
    pub async fn describe_node(&self, id: &str) -> Result<Option<ClusterNode>, SageMakerError> {
        let result = self
            .call("DescribeClusterNode", || {
                self.client
                    .describe_cluster_node()
                    .cluster_name(&self.cluster)
                    .node_id(id)
                    .send()
            })
            .await;
        let details = match result {
            Ok(d) => d,
            Err(SageMakerError::ClusterNotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(details.node_details().map(|d| {
            let (status, message) = status_and_message(d.instance_status());
            ClusterNode {
                instance_id: d.instance_id().unwrap_or(id).to_string(),
                group: d.instance_group_name().unwrap_or_default().to_string(),
                instance_type: d
                    .instance_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                status,
                message,
                launch_time: d.launch_time().and_then(|t| SystemTime::try_from(*t).ok()),
                private_dns_hostname: d.private_dns_hostname().map(str::to_string),
                private_ip: d.private_primary_ip().map(str::to_string),
            }
        }))
    }

    /// Reboots or replaces `ids`, [`RESTART_BATCH`] per call. A call that
    /// fails as a whole stops the rest (their ids are `not_sent`): the
    /// error is returned beside what was already done.
    pub async fn restart(
        &self,
        kind: Restart,
        ids: &[String],
    ) -> (BatchOutcome, Option<SageMakerError>) {
        let mut outcome = BatchOutcome::default();
        let mut chunks = ids.chunks(RESTART_BATCH);
        while let Some(chunk) = chunks.next() {
            let ids = chunk.to_vec();
            let result = match kind {
                Restart::Reboot => self
                    .call(kind.action(), || {
                        self.client
                            .batch_reboot_cluster_nodes()
                            .cluster_name(&self.cluster)
                            .set_node_ids(Some(ids.clone()))
                            .send()
                    })
                    .await
                    .map(|o| restart_answer!(o)),
                Restart::Replace => self
                    .call(kind.action(), || {
                        self.client
                            .batch_replace_cluster_nodes()
                            .cluster_name(&self.cluster)
                            .set_node_ids(Some(ids.clone()))
                            .send()
                    })
                    .await
                    .map(|o| restart_answer!(o)),
            };
            match result {
                Ok((ok, failed)) => {
                    outcome.successful.extend(ok);
                    outcome.failed.extend(failed);
                }
                Err(e) => {
                    outcome.not_sent.extend(ids);
                    for rest in chunks.by_ref() {
                        outcome.not_sent.extend(rest.iter().cloned());
                    }
                    return (outcome, Some(e));
                }
            }
        }
        (outcome, None)
    }

    /// Deletes `ids` from the cluster, [`DELETE_BATCH`] per call (the same
    /// stopping rule as [`Self::restart`]).
    pub async fn delete_nodes(&self, ids: &[String]) -> (BatchOutcome, Option<SageMakerError>) {
        let mut outcome = BatchOutcome::default();
        let mut chunks = ids.chunks(DELETE_BATCH);
        while let Some(chunk) = chunks.next() {
            let ids = chunk.to_vec();
            let result = self
                .call("BatchDeleteClusterNodes", || {
                    self.client
                        .batch_delete_cluster_nodes()
                        .cluster_name(&self.cluster)
                        .set_node_ids(Some(ids.clone()))
                        .send()
                })
                .await;
            match result {
                Ok(o) => {
                    outcome.successful.extend(o.successful().iter().cloned());
                    outcome
                        .failed
                        .extend(o.failed().iter().map(|f| NodeFailure {
                            node_id: f.node_id().unwrap_or_default().to_string(),
                            code: f.code().map(|c| c.as_str().to_string()).unwrap_or_default(),
                            message: f.message().unwrap_or_default().to_string(),
                        }));
                }
                Err(e) => {
                    outcome.not_sent.extend(ids);
                    for rest in chunks.by_ref() {
                        outcome.not_sent.extend(rest.iter().cloned());
                    }
                    return (outcome, Some(e));
                }
            }
        }
        (outcome, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_arns_give_their_region() {
        assert_eq!(
            parse_cluster_arn("arn:aws:sagemaker:us-west-2:111122223333:cluster/kb8v11zrrpvr"),
            Some((
                "arn:aws:sagemaker:us-west-2:111122223333:cluster/kb8v11zrrpvr".into(),
                "us-west-2".into()
            ))
        );
        assert_eq!(
            parse_cluster_arn("arn:aws-cn:sagemaker:cn-north-1:111122223333:cluster/x")
                .map(|(_, r)| r),
            Some("cn-north-1".into())
        );
        assert_eq!(parse_cluster_arn("ml-cluster"), None);
        assert_eq!(
            parse_cluster_arn("arn:aws:sagemaker:us-west-2:111122223333:endpoint/x"),
            None
        );
    }

    #[test]
    fn host_labels_come_from_the_private_dns_name() {
        let mut n = ClusterNode {
            instance_id: "i-0".into(),
            group: "g".into(),
            instance_type: "ml.p5.48xlarge".into(),
            status: "Running".into(),
            message: None,
            launch_time: None,
            private_dns_hostname: Some("ip-10-1-38-128.us-west-2.compute.internal".into()),
            private_ip: None,
        };
        assert_eq!(n.host_label(), Some("ip-10-1-38-128"));
        n.private_dns_hostname = None;
        assert_eq!(n.host_label(), None);
    }
}
