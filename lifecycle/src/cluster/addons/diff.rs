//! What applying the addons would change on a formed cluster, found
//! without changing anything: each object is read, and a server-side apply
//! dry run (`dryRun=All`) shows what it would become; the two are compared
//! with the fields the server maintains left out. A plan can then say
//! "DaemonSet kube-flannel/kube-flannel-ds: spec.template.spec.containers[0].image differs".

use kube::Client;
use kube::api::{Patch, PatchParams};
use serde_json::Value;

use super::apply::{object_api, place, resolve_kinds};
use super::error::{Error, Result};
use super::objects::Manifest;
use crate::cluster::labels::FIELD_MANAGER;
use crate::kube::client::timed;

/// How an object on the cluster compares with its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectState {
    /// Not there.
    Absent,
    /// There, and applying would change the field at this path (and
    /// maybe others).
    Differs(String),
    /// There and as applied.
    Current,
}

/// Each manifest's state on the cluster (kinds resolved through discovery
/// first). Only reads and dry runs: nothing is changed.
pub async fn compare(client: &Client, manifests: &mut [Manifest]) -> Result<Vec<ObjectState>> {
    resolve_kinds(client, manifests).await?;
    let mut states = Vec::with_capacity(manifests.len());
    for m in manifests.iter_mut() {
        let Some((ar, namespaced)) = m.resource.clone() else {
            return Err(Error::UnknownKind {
                origin: m.origin.clone(),
                api_version: m.gvk.api_version(),
                kind: m.gvk.kind.clone(),
            });
        };
        place(&mut m.object, namespaced);
        let api = object_api(client, &m.object, &ar);
        let name = m.object.metadata.name.clone().unwrap_or_default();
        let failed = |source| Error::Apply {
            origin: m.origin.clone(),
            kind: ar.kind.clone(),
            object: m.display_name(),
            source: Box::new(source),
        };
        let Some(live) = timed(api.get_opt(&name)).await.map_err(failed)? else {
            states.push(ObjectState::Absent);
            continue;
        };
        let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
        let applied = timed(api.patch(&name, &params, &Patch::Apply(&m.object)))
            .await
            .map_err(failed)?;
        let (live, applied) = (comparable(&live), comparable(&applied));
        states.push(match first_difference(&live, &applied, "") {
            Some(path) => ObjectState::Differs(path),
            None => ObjectState::Current,
        });
    }
    Ok(states)
}

/// The object as JSON without what the server maintains itself.
fn comparable(object: &impl serde::Serialize) -> Value {
    let mut v = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.remove("status");
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            for key in [
                "managedFields",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "uid",
                "selfLink",
            ] {
                meta.remove(key);
            }
        }
    }
    v
}

/// The first path (`spec.template.spec.containers[0].image`) where `a` and
/// `b` differ, if any.
pub fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => first_difference(p, q, &join(k)),
                (None, Some(Value::Null)) | (Some(Value::Null), None) => None,
                _ => Some(join(k)),
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Some(if path.is_empty() {
                    "[]".into()
                } else {
                    path.to_string()
                });
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (p, q))| first_difference(p, q, &format!("{path}[{i}]")))
        }
        _ if a == b => None,
        _ => Some(if path.is_empty() {
            "(the object)".into()
        } else {
            path.to_string()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_are_named_by_path() {
        let a = json!({"spec": {"template": {"spec": {"containers": [{"image": "a:1"}]}}}});
        let b = json!({"spec": {"template": {"spec": {"containers": [{"image": "a:2"}]}}}});
        assert_eq!(
            first_difference(&a, &b, "").as_deref(),
            Some("spec.template.spec.containers[0].image")
        );
        assert_eq!(first_difference(&a, &a, ""), None);
        let c = json!({"metadata": {"labels": {"x": "1"}}});
        let d = json!({"metadata": {"labels": {"x": "1", "y": "2"}}});
        assert_eq!(
            first_difference(&c, &d, "").as_deref(),
            Some("metadata.labels.y")
        );
        assert_eq!(
            first_difference(&json!({"a": [1]}), &json!({"a": [1, 2]}), "").as_deref(),
            Some("a")
        );
    }

    #[test]
    fn server_maintained_fields_are_left_out() {
        let live = json!({"metadata": {"name": "x", "resourceVersion": "5", "generation": 2,
            "managedFields": [], "uid": "u"}, "status": {"numberReady": 1}, "spec": {"a": 1}});
        let applied = json!({"metadata": {"name": "x", "resourceVersion": "6"}, "spec": {"a": 1}});
        assert_eq!(
            first_difference(&comparable(&live), &comparable(&applied), ""),
            None
        );
    }
}
