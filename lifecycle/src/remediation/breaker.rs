//! The circuit breaker: when more than `breaker_percent` of the nodes
//! started reporting a GPU fault within `breaker_window_secs`, the cause is
//! more likely systemic (a driver update, a monitoring bug, a bad image)
//! than many GPUs failing at once, so hpk8s stops taking new actions until
//! a person resumes it. Stricter than NVSentinel (50 % in 5 minutes) and
//! EKS node auto repair (20 %).
//!
//! The state lives in the ConfigMap `kube-system/hpk8s-remediation` (data
//! `state` = `open`|`closed`, `reason`, `since`, `resumed-at`), so it
//! survives a controller restart and `kubectl get` shows it. Resuming:
//! `hpk8s remediation resume`, or the annotation `hpk8s.io/resume` on that
//! ConfigMap (the controller closes the breaker and removes it). Faults
//! that began before the resume no longer count towards tripping it again.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::kube::client::timed;
use crate::values::time::{parse_rfc3339, rfc3339};

/// Namespace of the state ConfigMap.
pub const NAMESPACE: &str = "kube-system";
/// Name of the state ConfigMap.
pub const NAME: &str = "hpk8s-remediation";
/// Annotation a person sets on the ConfigMap to resume.
pub const RESUME_ANNOTATION: &str = "hpk8s.io/resume";

/// The breaker's state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Breaker {
    /// Whether new actions are stopped.
    pub open: bool,
    /// Why it opened.
    pub reason: String,
    /// When it opened.
    pub since: Option<SystemTime>,
    /// When a person last resumed (faults before this do not count).
    pub resumed_at: Option<SystemTime>,
    /// Whether a person asked to resume through the annotation.
    pub resume_requested: bool,
}

impl Breaker {
    /// From the ConfigMap (absent: closed).
    pub fn from_config_map(cm: Option<&ConfigMap>) -> Self {
        let Some(cm) = cm else {
            return Breaker::default();
        };
        let data = cm.data.clone().unwrap_or_default();
        let get = |k: &str| data.get(k).cloned().unwrap_or_default();
        Breaker {
            open: get("state") == "open",
            reason: get("reason"),
            since: parse_rfc3339(&get("since")),
            resumed_at: parse_rfc3339(&get("resumed-at")),
            resume_requested: cm
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(RESUME_ANNOTATION)),
        }
    }

    fn data(&self) -> BTreeMap<String, String> {
        let mut d = BTreeMap::new();
        d.insert(
            "state".into(),
            if self.open { "open" } else { "closed" }.into(),
        );
        d.insert("reason".into(), self.reason.clone());
        d.insert("since".into(), self.since.map(rfc3339).unwrap_or_default());
        d.insert(
            "resumed-at".into(),
            self.resumed_at.map(rfc3339).unwrap_or_default(),
        );
        d
    }
}

/// The largest number of nodes that may start reporting a fault within
/// the window without tripping: `max(1, T % of the nodes)`.
pub fn threshold(nodes: usize, percent: u32) -> usize {
    (nodes * percent as usize / 100).max(1)
}

/// Whether `recent` faulty nodes (their fault began within the window and
/// after the last resume) out of `nodes` trip the breaker.
pub fn trips(recent: usize, nodes: usize, percent: u32) -> bool {
    recent > threshold(nodes, percent)
}

/// Whether a fault that began at `began` counts towards the breaker now.
pub fn counts(
    began: Option<SystemTime>,
    window: Duration,
    resumed_at: Option<SystemTime>,
    now: SystemTime,
) -> bool {
    let Some(began) = began else {
        return false;
    };
    let recent = now
        .duration_since(began)
        .map(|d| d <= window)
        .unwrap_or(true);
    recent && resumed_at.is_none_or(|r| began > r)
}

/// Reads the state.
pub async fn load(client: &Client) -> Result<Breaker, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    Ok(Breaker::from_config_map(
        timed(api.get_opt(NAME)).await?.as_ref(),
    ))
}

/// Writes the state (creating the ConfigMap), removing a resume annotation.
pub async fn store(client: &Client, b: &Breaker) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    let patch = json!({
        "metadata": { "annotations": { RESUME_ANNOTATION: null } },
        "data": b.data(),
    });
    match timed(api.patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))).await {
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(NAME.into()),
                    namespace: Some(NAMESPACE.into()),
                    ..ObjectMeta::default()
                },
                data: Some(b.data()),
                ..ConfigMap::default()
            };
            timed(api.create(&PostParams::default(), &cm)).await?;
            Ok(())
        }
        r => r.map(|_| ()),
    }
}

/// `hpk8s remediation resume`: closes the breaker now. Returns the state
/// it found.
pub async fn resume(client: &Client, now: SystemTime) -> Result<Breaker, kube::Error> {
    let found = load(client).await?;
    let closed = Breaker {
        open: false,
        reason: String::new(),
        since: None,
        resumed_at: Some(now),
        resume_requested: false,
    };
    store(client, &closed).await?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        assert_eq!(threshold(40, 10), 4);
        assert!(!trips(4, 40, 10));
        assert!(trips(5, 40, 10));
        assert!(trips(12, 40, 10));
        // Tiny clusters: one fault never trips it, two do.
        assert!(!trips(1, 3, 10));
        assert!(trips(2, 3, 10));
    }

    #[test]
    fn only_recent_faults_after_a_resume_count() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let w = Duration::from_secs(600);
        assert!(counts(Some(t(1000)), w, None, t(1500)));
        assert!(!counts(Some(t(1000)), w, None, t(1700)));
        assert!(!counts(Some(t(1000)), w, Some(t(1100)), t(1200)));
        assert!(counts(Some(t(1200)), w, Some(t(1100)), t(1300)));
        assert!(!counts(None, w, None, t(1)));
    }

    #[test]
    fn round_trip() {
        let b = Breaker {
            open: true,
            reason: "12 of 40 nodes".into(),
            since: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(5)),
            resumed_at: None,
            resume_requested: false,
        };
        let cm = ConfigMap {
            data: Some(b.data()),
            ..ConfigMap::default()
        };
        assert_eq!(Breaker::from_config_map(Some(&cm)), b);
        assert_eq!(Breaker::from_config_map(None), Breaker::default());
    }
}
