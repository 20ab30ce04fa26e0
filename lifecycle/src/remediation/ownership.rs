//! What hpk8s set on a Node, recorded on the Node itself (annotation
//! `hpk8s.io/remediation`, JSON), so that recovery removes exactly that and
//! nothing a person set: a node a person cordoned stays cordoned, a taint
//! a person added stays. The record survives controller restarts; the
//! restart history (`hpk8s.io/remediation-history`) survives releases.
//!
//! Every change is one merge patch carrying the Node's `resourceVersion`:
//! a concurrent change (a person's `kubectl cordon`, the kubelet) makes it
//! fail with 409 and the controller decides again on the fresh object.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Node, Taint};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::policy::{Held, NoticeKind, Stage};
use crate::aws::sagemaker::Restart;
use crate::cluster::gpu_gate::TAINT_KEY as GPU_TAINT;
use crate::config::ClassAction;
use crate::values::time::{parse_rfc3339, rfc3339};

/// The ownership record's annotation.
pub const RECORD: &str = "hpk8s.io/remediation";
/// Restart requests of the last day (kept after a release).
pub const HISTORY: &str = "hpk8s.io/remediation-history";
/// The interruption taint's key (value: the notice's action).
pub const INTERRUPTION_TAINT: &str = "hpk8s.io/interruption";
/// The HyperPod-compatible health label (when `health_label` is on).
pub const HEALTH_LABEL: &str = "sagemaker.amazonaws.com/node-health-status";
/// Set by the controller on a drained EC2 node whose reboot it wants; the
/// node's agent reboots when the value is later than its boot.
pub const REBOOT_REQUESTED: &str = "hpk8s.io/reboot-requested";

/// A taint hpk8s added, by key and effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaintRef {
    /// Key.
    pub key: String,
    /// Effect.
    pub effect: String,
}

/// The record on the Node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The condition reason that started it (`GPUNeedsReboot`,
    /// `SpotInterruption`).
    pub reason: String,
    /// The action taken.
    pub action: ClassAction,
    /// Since when (RFC 3339).
    pub since: String,
    /// Where it stands.
    pub stage: Stage,
    /// Whether hpk8s cordoned the node (false: it was already cordoned).
    #[serde(default)]
    pub cordoned: bool,
    /// Taints hpk8s added.
    #[serde(default)]
    pub taints: Vec<TaintRef>,
    /// Labels hpk8s set.
    #[serde(default)]
    pub labels: Vec<String>,
    /// The restart requested, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    /// Failed restart requests.
    #[serde(default)]
    pub failures: u32,
    /// The notice that started it, if it was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<NoticeKind>,
}

impl Record {
    /// The policy's view.
    pub fn held(&self) -> Held {
        Held {
            action: self.action,
            stage: self.stage,
            failures: self.failures,
            notice: self.notice.is_some(),
        }
    }

    /// When the hold started.
    pub fn since(&self) -> Option<SystemTime> {
        parse_rfc3339(&self.since)
    }
}

fn annotations(node: &Node) -> Option<&BTreeMap<String, String>> {
    node.metadata.annotations.as_ref()
}

/// The record on `node`, if hpk8s holds it. An unreadable record (edited by
/// hand) counts as none: hpk8s then owns nothing it would remove.
pub fn record(node: &Node) -> Option<Record> {
    let text = annotations(node)?.get(RECORD)?;
    match serde_json::from_str(text) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(
                node = node.metadata.name.as_deref().unwrap_or(""),
                error = %e,
                "unreadable {RECORD} annotation: treated as no hold"
            );
            None
        }
    }
}

/// Restart requests on `node` within the last day.
pub fn restarts_since(node: &Node, since: SystemTime) -> Vec<SystemTime> {
    annotations(node)
        .and_then(|a| a.get(HISTORY))
        .and_then(|t| serde_json::from_str::<Vec<String>>(t).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|t| parse_rfc3339(t))
        .filter(|t| *t >= since)
        .collect()
}

/// A change to a Node: the merge patch body and the record it leaves.
#[derive(Debug, Clone)]
pub struct Change {
    /// Merge patch (with `metadata.resourceVersion`).
    pub patch: Value,
    /// The record after it (`None`: released).
    pub record: Option<Record>,
}

/// What to set for a hold.
#[derive(Debug, Clone)]
pub struct HoldSpec {
    /// The reason (condition reason).
    pub reason: String,
    /// The action.
    pub action: ClassAction,
    /// The taint to add.
    pub taint: Taint,
    /// Whether to cordon.
    pub cordon: bool,
    /// The health label's value, when configured.
    pub health_label: Option<&'static str>,
    /// The notice, if one started it.
    pub notice: Option<NoticeKind>,
}

fn taints_of(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
}

fn same(t: &Taint, key: &str, effect: &str) -> bool {
    t.key == key && t.effect == effect
}

fn base_patch(node: &Node) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert(
        "metadata".into(),
        json!({ "resourceVersion": node.metadata.resource_version }),
    );
    m
}

/// Takes (or strengthens) a hold: adds the taint unless a taint with that
/// key and effect is there already (then hpk8s owns it only when it is the
/// GPU gate's), cordons unless already cordoned, records what it did.
pub fn hold(node: &Node, spec: &HoldSpec, now: SystemTime) -> Change {
    let previous = record(node);
    let mut taints = taints_of(node);
    let mut owned: Vec<TaintRef> = previous
        .as_ref()
        .map(|r| r.taints.clone())
        .unwrap_or_default();
    // A weaker hpk8s taint (PreferNoSchedule for degraded) is replaced by
    // the new one when they share the key.
    owned.retain(|o| {
        let replaced = o.key == spec.taint.key && o.effect != spec.taint.effect;
        if replaced {
            taints.retain(|t| !same(t, &o.key, &o.effect));
        }
        !replaced
    });
    match taints
        .iter_mut()
        .find(|t| same(t, &spec.taint.key, &spec.taint.effect))
    {
        Some(existing) => {
            let ours = owned
                .iter()
                .any(|o| o.key == existing.key && o.effect == existing.effect)
                || existing.key == GPU_TAINT;
            if ours {
                existing.value = spec.taint.value.clone();
                existing.time_added = spec.taint.time_added.clone();
                push_unique(&mut owned, &existing.key, &existing.effect);
            }
        }
        None => {
            taints.push(spec.taint.clone());
            push_unique(&mut owned, &spec.taint.key, &spec.taint.effect);
        }
    }
    let unschedulable = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let we_cordon = spec.cordon && !unschedulable;
    let cordoned = previous.as_ref().is_some_and(|r| r.cordoned) || we_cordon;
    let mut labels = previous
        .as_ref()
        .map(|r| r.labels.clone())
        .unwrap_or_default();
    let mut patch = base_patch(node);
    if let Some(value) = spec.health_label {
        patch["metadata"]["labels"] = json!({ HEALTH_LABEL: value });
        if !labels.iter().any(|l| l == HEALTH_LABEL) {
            labels.push(HEALTH_LABEL.into());
        }
    }
    let record = Record {
        reason: spec.reason.clone(),
        action: spec.action,
        since: previous
            .as_ref()
            .map(|r| r.since.clone())
            .unwrap_or_else(|| rfc3339(now)),
        stage: Stage::Holding,
        cordoned,
        taints: owned,
        labels,
        restart: None,
        failures: previous.as_ref().map(|r| r.failures).unwrap_or(0),
        notice: spec.notice.or(previous.as_ref().and_then(|r| r.notice)),
    };
    let mut spec_patch = json!({ "taints": taints });
    if we_cordon {
        spec_patch["unschedulable"] = json!(true);
    }
    patch.insert("spec".into(), spec_patch);
    patch["metadata"]["annotations"] =
        json!({ RECORD: serde_json::to_string(&record).unwrap_or_default() });
    Change {
        patch: Value::Object(patch),
        record: Some(record),
    }
}

fn push_unique(owned: &mut Vec<TaintRef>, key: &str, effect: &str) {
    if !owned.iter().any(|o| o.key == key && o.effect == effect) {
        owned.push(TaintRef {
            key: key.into(),
            effect: effect.into(),
        });
    }
}

/// Updates the record only (a stage change), keeping the rest.
pub fn update(node: &Node, record: &Record, extra: &[(&str, String)]) -> Change {
    let mut patch = base_patch(node);
    let mut ann = serde_json::Map::new();
    ann.insert(
        RECORD.into(),
        json!(serde_json::to_string(record).unwrap_or_default()),
    );
    for (k, v) in extra {
        ann.insert((*k).into(), json!(v));
    }
    patch["metadata"]["annotations"] = Value::Object(ann);
    Change {
        patch: Value::Object(patch),
        record: Some(record.clone()),
    }
}

/// Records a restart request: stage `Requested` and the history entry
/// (and, for a reboot the node does itself, the request it watches for).
pub fn requested(
    node: &Node,
    record: &Record,
    kind: Restart,
    self_reboot: bool,
    now: SystemTime,
) -> Change {
    let mut r = record.clone();
    r.stage = Stage::Requested;
    r.restart = Some(kind);
    let day = now - Duration::from_secs(24 * 3600);
    let mut history: Vec<String> = restarts_since(node, day).into_iter().map(rfc3339).collect();
    history.push(rfc3339(now));
    let mut extra = vec![(HISTORY, serde_json::to_string(&history).unwrap_or_default())];
    if self_reboot {
        extra.push((REBOOT_REQUESTED, rfc3339(now)));
    }
    update(node, &r, &extra)
}

/// Releases the hold: removes the taints hpk8s added (and the GPU gate's),
/// uncordons only when hpk8s cordoned, resets the health label, removes
/// the record and any reboot request.
pub fn release(node: &Node, health_label: bool) -> Change {
    let record = record(node);
    let owned = record
        .as_ref()
        .map(|r| r.taints.clone())
        .unwrap_or_default();
    let taints: Vec<Taint> = taints_of(node)
        .into_iter()
        .filter(|t| t.key != GPU_TAINT && !owned.iter().any(|o| same(t, &o.key, &o.effect)))
        .collect();
    let mut patch = base_patch(node);
    let mut spec = json!({ "taints": taints });
    if record.as_ref().is_some_and(|r| r.cordoned) {
        spec["unschedulable"] = Value::Null;
    }
    patch.insert("spec".into(), spec);
    patch["metadata"]["annotations"] = json!({ RECORD: null, REBOOT_REQUESTED: null });
    let label_owned = record
        .as_ref()
        .is_some_and(|r| r.labels.iter().any(|l| l == HEALTH_LABEL));
    if health_label || label_owned {
        patch["metadata"]["labels"] = json!({ HEALTH_LABEL: "Schedulable" });
    }
    Change {
        patch: Value::Object(patch),
        record: None,
    }
}

/// Whether the Node carries anything hpk8s would release: its record or
/// the GPU gate's registration taint.
pub fn has_hold(node: &Node) -> bool {
    record(node).is_some() || taints_of(node).iter().any(|t| t.key == GPU_TAINT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use kube::api::ObjectMeta;

    fn node(unschedulable: bool, taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                unschedulable: Some(unschedulable),
                taints: Some(taints),
                ..NodeSpec::default()
            }),
            status: None,
        }
    }
    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: Some("x".into()),
            time_added: None,
        }
    }
    fn spec() -> HoldSpec {
        HoldSpec {
            reason: "GPUNeedsReboot".into(),
            action: ClassAction::Drain,
            taint: Taint {
                key: GPU_TAINT.into(),
                effect: "NoSchedule".into(),
                value: Some("GPUNeedsReboot".into()),
                time_added: None,
            },
            cordon: true,
            health_label: None,
            notice: None,
        }
    }
    fn apply(mut n: Node, c: &Change) -> Node {
        let p = &c.patch;
        if let Some(t) = p.pointer("/spec/taints") {
            n.spec.as_mut().unwrap().taints = serde_json::from_value(t.clone()).unwrap();
        }
        match p.pointer("/spec/unschedulable") {
            Some(Value::Bool(b)) => n.spec.as_mut().unwrap().unschedulable = Some(*b),
            Some(Value::Null) => n.spec.as_mut().unwrap().unschedulable = None,
            _ => {}
        }
        if let Some(Value::Object(a)) = p.pointer("/metadata/annotations") {
            let ann = n.metadata.annotations.get_or_insert_with(BTreeMap::new);
            for (k, v) in a {
                match v {
                    Value::String(s) => {
                        ann.insert(k.clone(), s.clone());
                    }
                    _ => {
                        ann.remove(k);
                    }
                }
            }
        }
        n
    }

    #[test]
    fn a_persons_cordon_and_taint_survive_a_hold_and_release() {
        let mine = taint("team/maintenance", "NoSchedule");
        let n = node(true, vec![mine.clone()]);
        let c = hold(&n, &spec(), SystemTime::UNIX_EPOCH);
        assert_eq!(c.patch["metadata"]["resourceVersion"], "7");
        assert!(
            c.patch.pointer("/spec/unschedulable").is_none(),
            "{}",
            c.patch
        );
        let r = c.record.clone().unwrap();
        assert!(!r.cordoned);
        assert_eq!(
            r.taints,
            vec![TaintRef {
                key: GPU_TAINT.into(),
                effect: "NoSchedule".into()
            }]
        );
        let held = apply(n, &c);
        let released = apply(held.clone(), &release(&held, false));
        let spec = released.spec.unwrap();
        assert_eq!(spec.unschedulable, Some(true), "the person's cordon stays");
        assert_eq!(spec.taints.unwrap(), vec![mine], "the person's taint stays");
        assert!(!released.metadata.annotations.unwrap().contains_key(RECORD));
    }

    #[test]
    fn hpk8s_removes_what_it_set() {
        let n = node(false, vec![]);
        let c = hold(&n, &spec(), SystemTime::UNIX_EPOCH);
        assert_eq!(c.patch["spec"]["unschedulable"], true);
        let held = apply(n, &c);
        let r = release(&held, false);
        assert!(r.patch["spec"]["unschedulable"].is_null());
        let released = apply(held, &r);
        assert_eq!(released.spec.as_ref().unwrap().unschedulable, None);
        assert!(released.spec.unwrap().taints.unwrap().is_empty());
    }

    #[test]
    fn a_same_keyed_person_taint_is_not_taken_over() {
        let person = taint(INTERRUPTION_TAINT, "NoSchedule");
        let n = node(false, vec![person.clone()]);
        let mut s = spec();
        s.taint.key = INTERRUPTION_TAINT.into();
        let c = hold(&n, &s, SystemTime::UNIX_EPOCH);
        assert!(c.record.as_ref().unwrap().taints.is_empty());
        let held = apply(n, &c);
        let released = apply(held.clone(), &release(&held, false));
        assert_eq!(released.spec.unwrap().taints.unwrap(), vec![person]);
    }

    #[test]
    fn the_gate_taint_is_hpk8s_and_a_degraded_taint_is_replaced() {
        let gate = taint(GPU_TAINT, "NoSchedule");
        let n = node(false, vec![gate]);
        assert!(has_hold(&n));
        let c = hold(&n, &spec(), SystemTime::UNIX_EPOCH);
        assert_eq!(c.record.as_ref().unwrap().taints.len(), 1);
        let taints: Vec<Taint> = serde_json::from_value(c.patch["spec"]["taints"].clone()).unwrap();
        assert_eq!(taints.len(), 1);
        assert_eq!(taints[0].value.as_deref(), Some("GPUNeedsReboot"));
        // Degraded first (PreferNoSchedule), then a reboot-class fault.
        let n = node(false, vec![]);
        let mut avoid = spec();
        avoid.taint.effect = "PreferNoSchedule".into();
        avoid.cordon = false;
        avoid.action = ClassAction::PreferAvoid;
        let avoided = apply(
            n,
            &hold(&node(false, vec![]), &avoid, SystemTime::UNIX_EPOCH),
        );
        let c = hold(&avoided, &spec(), SystemTime::UNIX_EPOCH);
        let taints: Vec<Taint> = serde_json::from_value(c.patch["spec"]["taints"].clone()).unwrap();
        assert_eq!(taints.len(), 1, "{taints:?}");
        assert_eq!(taints[0].effect, "NoSchedule");
        assert_eq!(c.record.unwrap().taints.len(), 1);
    }

    #[test]
    fn history_is_kept_for_a_day() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10 * 86_400);
        let n = node(false, vec![]);
        let c = hold(&n, &spec(), now);
        let held = apply(n, &c);
        let c = requested(
            &held,
            c.record.as_ref().unwrap(),
            Restart::Reboot,
            false,
            now,
        );
        let held = apply(held, &c);
        assert_eq!(
            restarts_since(&held, now - Duration::from_secs(86_400)).len(),
            1
        );
        let later = now + Duration::from_secs(90_000);
        assert!(restarts_since(&held, later - Duration::from_secs(86_400)).is_empty());
        let released = apply(held.clone(), &release(&held, false));
        assert_eq!(
            restarts_since(&released, now).len(),
            1,
            "history outlives the hold"
        );
    }
}
