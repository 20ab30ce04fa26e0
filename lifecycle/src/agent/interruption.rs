//! Interruption notices on EC2 (detected EC2, or `identity.imds_endpoint`):
//! the agent polls IMDS every `gpu_health.interruption_poll_secs` for a
//! spot interruption (`spot/instance-action`), a rebalance recommendation
//! and scheduled maintenance (404: none), and reports the condition
//! `InstanceInterruption` (status `True` with the action and time, `False`
//! when there is none) plus an Event when a notice appears, within one
//! poll. Remediation acts on it; IMDS not answering is logged, not
//! reported as a notice.

use std::time::Duration;

use serde::Deserialize;

use super::node_status::{NodeStatus, Published};
use crate::identity::imds::ImdsClient;

/// The condition type.
pub const INSTANCE_INTERRUPTION: &str = "InstanceInterruption";

/// What IMDS says is coming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Nothing.
    None,
    /// The spot instance will be stopped, hibernated or terminated.
    Spot {
        /// `terminate`, `stop`, `hibernate`.
        action: String,
        /// When.
        time: String,
    },
    /// AWS scheduled an event (reboot, retirement, maintenance).
    Maintenance {
        /// Event code, e.g. `system-reboot`, `instance-retirement`.
        code: String,
        /// When it starts.
        not_before: String,
    },
    /// A spot rebalance recommendation (elevated interruption risk).
    Rebalance {
        /// When it was issued.
        notice_time: String,
    },
}

impl Notice {
    /// The condition for this notice.
    pub fn condition(&self) -> Published {
        let (status, reason, message) = match self {
            Notice::None => (
                "False",
                "NoInterruption".to_string(),
                "no interruption notice".to_string(),
            ),
            Notice::Spot { action, time } => (
                "True",
                "SpotInterruption".into(),
                format!("spot instance {action} at {time}"),
            ),
            Notice::Maintenance { code, not_before } => (
                "True",
                "ScheduledMaintenance".into(),
                format!("scheduled event {code} not before {not_before}"),
            ),
            Notice::Rebalance { notice_time } => (
                "True",
                "RebalanceRecommendation".into(),
                format!("rebalance recommended at {notice_time}"),
            ),
        };
        Published {
            type_: INSTANCE_INTERRUPTION.into(),
            status: status.into(),
            reason,
            message,
        }
    }
}

#[derive(Deserialize)]
struct InstanceAction {
    action: String,
    time: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ScheduledEvent {
    code: String,
    #[serde(default)]
    not_before: String,
    #[serde(default)]
    state: Option<String>,
}

#[derive(Deserialize)]
struct Rebalance {
    #[serde(rename = "noticeTime")]
    notice_time: String,
}

/// One look at IMDS: the most pressing notice (spot, then maintenance,
/// then rebalance).
pub async fn poll(imds: &ImdsClient) -> Result<Notice, crate::identity::IdentityError> {
    if let Some(body) = imds.get("spot/instance-action").await?
        && let Ok(a) = serde_json::from_str::<InstanceAction>(&body)
    {
        return Ok(Notice::Spot {
            action: a.action,
            time: a.time,
        });
    }
    if let Some(body) = imds.get("events/maintenance/scheduled").await?
        && let Ok(events) = serde_json::from_str::<Vec<ScheduledEvent>>(&body)
        && let Some(e) = events
            .into_iter()
            .find(|e| !matches!(e.state.as_deref(), Some("completed" | "canceled")))
    {
        return Ok(Notice::Maintenance {
            code: e.code,
            not_before: e.not_before,
        });
    }
    if let Some(body) = imds.get("events/recommendations/rebalance").await?
        && let Ok(r) = serde_json::from_str::<Rebalance>(&body)
    {
        return Ok(Notice::Rebalance {
            notice_time: r.notice_time,
        });
    }
    Ok(Notice::None)
}

/// Polls until `shutdown`, publishing on every change.
pub async fn run(
    imds: ImdsClient,
    every: Duration,
    host: crate::host::Host,
    node_name: String,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut status: Option<NodeStatus> = None;
    let mut published: Option<Notice> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        let notice = match poll(&imds).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "IMDS did not answer the interruption poll");
                continue;
            }
        };
        if published.as_ref() == Some(&notice) {
            continue;
        }
        if status.is_none() {
            // The poll is the retry: every answer comes back at once.
            match crate::kube::client::client_with(
                &host,
                crate::kube::client::Credential::Node,
                crate::kube::client::Retries::Caller,
            )
            .await
            {
                Ok(c) => status = Some(NodeStatus::new(c, &node_name)),
                Err(e) => {
                    tracing::debug!(error = %e, "no kubelet credential yet for the interruption condition");
                    continue;
                }
            }
        }
        let Some(s) = status.as_mut() else { continue };
        let cond = notice.condition();
        if notice != Notice::None {
            tracing::warn!(reason = %cond.reason, "{}", cond.message);
            if let Err(e) = s.event(true, &cond.reason, &cond.message).await {
                tracing::warn!(error = %e, "cannot create the interruption Event");
            }
        }
        match s.publish(&cond).await {
            Ok(()) => published = Some(notice),
            Err(e) => {
                tracing::warn!(error = %e, "cannot publish the interruption condition; retrying")
            }
        }
    }
}
