//! What a Node says about itself, read for the policy: the GPU condition
//! the node agent publishes (`GPUHealthy`), the interruption condition
//! (`InstanceInterruption`), when each began, and the labels that make a
//! node protected or name its instance.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Node, NodeCondition};

use super::policy::{Notice, NoticeKind, Trouble};
use crate::agent::interruption::INSTANCE_INTERRUPTION;
use crate::cluster::labels;
use crate::gpu::classify::Class;
use crate::gpu::condition::GPU_HEALTHY;
use crate::values::time::{parse_imds_event_time, parse_rfc3339};

/// The control-plane role label kubeadm sets.
pub const CONTROL_PLANE: &str = "node-role.kubernetes.io/control-plane";

/// One Node, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// The Node's name.
    pub name: String,
    /// What it reports.
    pub trouble: Trouble,
    /// When the current trouble began (the condition's transition).
    pub began: Option<SystemTime>,
    /// When it became healthy (the later of the conditions' transitions
    /// to healthy), when it is.
    pub healthy_since: Option<SystemTime>,
    /// Instance group label.
    pub group: Option<String>,
    /// Instance id: the label, else the provider id's last segment.
    pub instance_id: Option<String>,
    /// Whether the control-plane role label is set.
    pub control_plane: bool,
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn transition(c: &NodeCondition) -> Option<SystemTime> {
    c.last_transition_time
        .as_ref()
        .and_then(|t| parse_rfc3339(&t.0.to_string()))
}

/// The GPU class a `GPUHealthy=False` reason stands for.
pub fn class_of_reason(reason: &str) -> Option<Class> {
    match reason {
        "GPUDegraded" => Some(Class::Degraded),
        "GPUNeedsReboot" => Some(Class::Reboot),
        "GPUNeedsReplacement" => Some(Class::Replace),
        _ => None,
    }
}

/// Reads the notice out of the interruption condition the node agent
/// publishes (reason and message are hpk8s's own format).
pub fn notice_of(c: &NodeCondition) -> Option<Notice> {
    if c.status != "True" {
        return None;
    }
    let message = c.message.as_deref().unwrap_or("");
    let reason = c.reason.as_deref().unwrap_or("");
    match reason {
        // "spot instance <action> at <RFC 3339>"
        "SpotInterruption" => {
            let rest = message.strip_prefix("spot instance ").unwrap_or("");
            let (action, at) = rest.split_once(" at ").unwrap_or((rest, ""));
            Some(Notice {
                kind: NoticeKind::Spot,
                action: action.trim().to_string(),
                at: parse_rfc3339(at.trim()),
            })
        }
        // "scheduled event <code> not before <IMDS time>"
        "ScheduledMaintenance" => {
            let rest = message.strip_prefix("scheduled event ").unwrap_or("");
            let (code, at) = rest.split_once(" not before ").unwrap_or((rest, ""));
            Some(Notice {
                kind: NoticeKind::Maintenance,
                action: code.trim().to_string(),
                at: parse_imds_event_time(at).or_else(|| parse_rfc3339(at.trim())),
            })
        }
        "RebalanceRecommendation" => Some(Notice {
            kind: NoticeKind::Rebalance,
            action: "rebalance".into(),
            at: None,
        }),
        _ => None,
    }
}

impl NodeReport {
    /// Reads `node`. An interruption notice wins over a GPU fault: the
    /// instance leaves either way.
    pub fn of(node: &Node) -> Self {
        let name = node.metadata.name.clone().unwrap_or_default();
        let node_labels = node.metadata.labels.clone().unwrap_or_default();
        let gpu = condition(node, GPU_HEALTHY);
        let interruption = condition(node, INSTANCE_INTERRUPTION);
        let notice = interruption.and_then(notice_of);
        let mut began = None;
        let trouble = if let Some(n) = notice {
            began = interruption.and_then(transition);
            Trouble::Notice(n)
        } else {
            match gpu {
                Some(c) if c.status == "False" => {
                    let reason = c.reason.clone().unwrap_or_default();
                    began = transition(c);
                    match class_of_reason(&reason) {
                        Some(class) => Trouble::Gpu { class, reason },
                        None => Trouble::Unknown,
                    }
                }
                Some(c) if c.status == "Unknown" => {
                    began = transition(c);
                    Trouble::Unknown
                }
                _ => Trouble::Healthy,
            }
        };
        let healthy_since = if trouble == Trouble::Healthy {
            [gpu, interruption]
                .into_iter()
                .flatten()
                .filter_map(transition)
                .max()
        } else {
            None
        };
        let instance_id = node_labels.get(labels::INSTANCE_ID).cloned().or_else(|| {
            node.spec
                .as_ref()
                .and_then(|s| s.provider_id.as_deref())
                .and_then(|p| p.strip_prefix("aws://"))
                .and_then(|p| p.rsplit('/').next())
                .filter(|id| id.starts_with("i-"))
                .map(str::to_string)
        });
        NodeReport {
            name,
            trouble,
            began,
            healthy_since,
            group: node_labels.get(labels::INSTANCE_GROUP).cloned(),
            instance_id,
            control_plane: node_labels.contains_key(CONTROL_PLANE),
        }
    }

    /// Why this node is never acted on, if it is protected.
    pub fn protected(&self, controller_groups: &[String]) -> Option<String> {
        if self.control_plane {
            return Some(format!("{} is a control-plane node", self.name));
        }
        match &self.group {
            Some(g) if controller_groups.iter().any(|c| c == g) => {
                Some(format!("{} belongs to the controller group {g}", self.name))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    fn cond(type_: &str, status: &str, reason: &str, message: &str, at: &str) -> NodeCondition {
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_transition_time: Some(Time(at.parse().unwrap())),
            ..NodeCondition::default()
        }
    }
    fn node(conds: Vec<NodeCondition>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n".into()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                provider_id: Some("aws:///us-west-2a/i-0abc".into()),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(conds),
                ..NodeStatus::default()
            }),
        }
    }

    #[test]
    fn reads_gpu_faults_and_notices() {
        let n = node(vec![cond(
            GPU_HEALTHY,
            "False",
            "GPUNeedsReboot",
            "GPU 0: xid-79",
            "2026-01-01T00:00:00Z",
        )]);
        let r = NodeReport::of(&n);
        assert_eq!(
            r.trouble,
            Trouble::Gpu {
                class: Class::Reboot,
                reason: "GPUNeedsReboot".into()
            }
        );
        assert_eq!(r.instance_id.as_deref(), Some("i-0abc"));
        assert!(r.began.is_some());
        let n = node(vec![
            cond(
                GPU_HEALTHY,
                "False",
                "GPUNeedsReboot",
                "",
                "2026-01-01T00:00:00Z",
            ),
            cond(
                INSTANCE_INTERRUPTION,
                "True",
                "SpotInterruption",
                "spot instance terminate at 2026-01-01T00:02:00Z",
                "2026-01-01T00:00:00Z",
            ),
        ]);
        let Trouble::Notice(notice) = NodeReport::of(&n).trouble else {
            panic!("a notice wins");
        };
        assert_eq!(notice.action, "terminate");
        assert_eq!(notice.at, parse_rfc3339("2026-01-01T00:02:00Z"));
        let c = cond(
            INSTANCE_INTERRUPTION,
            "True",
            "ScheduledMaintenance",
            "scheduled event system-reboot not before 21 Jan 2019 09:00:43 GMT",
            "2026-01-01T00:00:00Z",
        );
        let n = notice_of(&c).unwrap();
        assert_eq!(n.kind, NoticeKind::Maintenance);
        assert_eq!(n.at, parse_rfc3339("2019-01-21T09:00:43Z"));
    }

    #[test]
    fn unknown_and_healthy() {
        let n = node(vec![cond(
            GPU_HEALTHY,
            "Unknown",
            "GPUProbeFailed",
            "",
            "2026-01-01T00:00:00Z",
        )]);
        assert_eq!(NodeReport::of(&n).trouble, Trouble::Unknown);
        let n = node(vec![
            cond(
                GPU_HEALTHY,
                "True",
                "GPUsHealthy",
                "",
                "2026-01-01T00:00:00Z",
            ),
            cond(
                INSTANCE_INTERRUPTION,
                "False",
                "NoInterruption",
                "",
                "2026-01-02T00:00:00Z",
            ),
        ]);
        let r = NodeReport::of(&n);
        assert_eq!(r.trouble, Trouble::Healthy);
        assert_eq!(r.healthy_since, parse_rfc3339("2026-01-02T00:00:00Z"));
        assert_eq!(NodeReport::of(&node(vec![])).trouble, Trouble::Healthy);
    }

    #[test]
    fn protection() {
        let mut n = node(vec![]);
        n.metadata.labels = Some([(CONTROL_PLANE.to_string(), String::new())].into());
        assert!(NodeReport::of(&n).protected(&[]).is_some());
        n.metadata.labels = Some([(labels::INSTANCE_GROUP.to_string(), "ctl".to_string())].into());
        assert!(NodeReport::of(&n).protected(&["ctl".into()]).is_some());
        assert!(NodeReport::of(&n).protected(&["workers".into()]).is_none());
    }
}
