//! What the server owns in an object's life: defaults on create (name from
//! generateName, uid, creationTimestamp, generation), what an update may
//! not change (identity, and the status/spec split of resources with a
//! status subresource), no-op detection (an unchanged write keeps its
//! resourceVersion), and deletion with finalizers or a grace period.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::discovery::{ResourceType, find};
use super::status::ApiError;
use super::store::{EventType, Store};
use super::validation;

/// The current time as RFC 3339 UTC with second precision, as Kubernetes
/// writes timestamps.
pub fn now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

pub(crate) fn obj_name(o: &Value) -> &str {
    o.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub(crate) fn obj_namespace(o: &Value) -> &str {
    o.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub(crate) fn obj_rv(o: &Value) -> &str {
    o.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Fills in what the server owns on create (name from generateName, uid,
/// creationTimestamp, generation) and checks the namespace and name.
pub fn new_object(
    store: &mut Store,
    rt: &ResourceType,
    ns: &str,
    mut obj: Value,
) -> Result<Value, ApiError> {
    for (field, want) in [
        ("apiVersion", rt.api_version()),
        ("kind", rt.kind.to_string()),
    ] {
        match obj.get(field).and_then(Value::as_str) {
            Some(got) if got != want => {
                return Err(ApiError::bad_request(format!(
                    "{field} {got:?} does not match the {} endpoint ({want})",
                    rt.plural
                )));
            }
            _ => obj[field] = json!(want),
        }
    }
    let meta = obj
        .as_object_mut()
        .map(|o| {
            o.entry("metadata")
                .or_insert_with(|| Value::Object(Map::new()))
        })
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
    if rt.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(got) if !got.is_empty() && got != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".into(), json!(ns));
            }
        }
    } else {
        meta.remove("namespace");
    }
    let serial = store.next_serial();
    let name = match meta
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        Some(n) => n.to_string(),
        None => match meta.get("generateName").and_then(Value::as_str) {
            Some(prefix) => format!("{prefix}{}", suffix(serial)),
            None => {
                return Err(ApiError::invalid(
                    rt,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        },
    };
    meta.insert("name".into(), json!(name));
    meta.insert(
        "uid".into(),
        json!(format!("7e57a9e0-0000-4000-8000-{serial:012x}")),
    );
    meta.insert("creationTimestamp".into(), json!(now()));
    meta.insert("generation".into(), json!(1));
    for k in ["resourceVersion", "deletionTimestamp", "selfLink"] {
        meta.remove(k);
    }
    let namespaces =
        find("", "v1", "namespaces").ok_or_else(|| ApiError::internal("namespaces not served"))?;
    if rt.namespaced && store.get(namespaces, "", ns).is_none() {
        return Err(ApiError::not_found(namespaces, ns));
    }
    if store.get(rt, ns, &name).is_some() {
        return Err(ApiError::already_exists(rt, &name));
    }
    validation::validate(rt, &obj)?;
    Ok(obj)
}

/// Five characters for generateName, from the server's serial.
pub(crate) fn suffix(serial: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = serial.wrapping_mul(2_654_435_761) % 14_348_907; // 27^5
    (0..5)
        .map(|_| {
            let c = ALPHABET[usize::try_from(n % 27).unwrap_or(0)] as char;
            n /= 27;
            c
        })
        .collect()
}

pub(crate) fn check_rv(
    rt: &ResourceType,
    name: &str,
    old: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    let want = obj_rv(new);
    if !want.is_empty() && want != obj_rv(old) {
        return Err(ApiError::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    Ok(())
}

/// The object an update stores: server-owned metadata kept, and the
/// status/spec split of resources with a status subresource enforced.
pub(crate) fn merge_update(rt: &ResourceType, sub: &str, old: &Value, mut new: Value) -> Value {
    if sub == "status" {
        let mut out = old.clone();
        out["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        return out;
    }
    for k in [
        "uid",
        "creationTimestamp",
        "namespace",
        "name",
        "generation",
        "deletionTimestamp",
    ] {
        match old.pointer(&format!("/metadata/{k}")) {
            Some(v) => new["metadata"][k] = v.clone(),
            None => {
                if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove(k);
                }
            }
        }
    }
    new["apiVersion"] = json!(rt.api_version());
    new["kind"] = json!(rt.kind);
    if rt.has_status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    if new.get("spec") != old.get("spec") {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        new["metadata"]["generation"] = json!(generation + 1);
    }
    new
}

/// Whether two versions differ beyond bookkeeping (a no-op write keeps the
/// resourceVersion, as on a real server).
pub(crate) fn changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        v
    };
    strip(old) != strip(new)
}

pub(crate) fn commit_update(
    store: &mut Store,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    old: &Value,
    new: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    validation::validate(rt, &new)?;
    if dry_run {
        return Ok(new);
    }
    let has_finalizers = |o: &Value| {
        o.pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
    };
    // Removing the last finalizer of an object being deleted completes the
    // deletion.
    if new.pointer("/metadata/deletionTimestamp").is_some()
        && has_finalizers(old)
        && !has_finalizers(&new)
    {
        return Ok(delete_now(store, rt, ns, name, new));
    }
    let managed_changed =
        old.pointer("/metadata/managedFields") != new.pointer("/metadata/managedFields");
    if !changed(old, &new) && !managed_changed {
        return Ok(old.clone());
    }
    Ok(store.put(rt, ns, name, new, EventType::Modified))
}

/// Deletes, honouring finalizers and held pod termination (the object then
/// only gets a deletionTimestamp). Returns the object as the response
/// shows it.
pub(crate) fn delete(
    store: &mut Store,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    old: Value,
    grace: Option<i64>,
) -> Value {
    let has_finalizers = old
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if has_finalizers || grace.is_some() {
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return old;
        }
        let mut marked = old;
        marked["metadata"]["deletionTimestamp"] = json!(now());
        if let Some(secs) = grace {
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(secs);
        }
        return store.put(rt, ns, name, marked, EventType::Modified);
    }
    delete_now(store, rt, ns, name, old)
}

/// Removes at once; deleting a namespace removes what lives in it.
pub fn delete_now(store: &mut Store, rt: &ResourceType, ns: &str, name: &str, old: Value) -> Value {
    if rt.kind == "Namespace" {
        for inner in super::discovery::RESOURCES.iter().filter(|r| r.namespaced) {
            let names: Vec<String> = store
                .list(inner, Some(name))
                .iter()
                .map(|(_, o)| obj_name(o).to_string())
                .collect();
            for n in names {
                store.remove(inner, name, &n);
            }
        }
    }
    store.remove(rt, ns, name).unwrap_or(old)
}

/// Creates or replaces an object as the test's seed (no authorization, the
/// status stored as given).
pub fn upsert(store: &mut Store, mut obj: Value) -> Result<Value, ApiError> {
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let rt = super::discovery::find_kind(&api_version, &kind).ok_or_else(|| {
        ApiError::bad_request(format!(
            "no resource serves apiVersion {api_version:?} kind {kind:?}"
        ))
    })?;
    let ns = if rt.namespaced {
        let ns = obj_namespace(&obj);
        if ns.is_empty() {
            "default".to_string()
        } else {
            ns.to_string()
        }
    } else {
        String::new()
    };
    let name = obj_name(&obj).to_string();
    match store.get(rt, &ns, &name).cloned() {
        None => {
            let created = new_object(store, rt, &ns, obj)?;
            let name = obj_name(&created).to_string();
            Ok(store.put(rt, &ns, &name, created, EventType::Added))
        }
        Some(old) => {
            for k in ["uid", "creationTimestamp", "generation"] {
                if let Some(v) = old.pointer(&format!("/metadata/{k}")) {
                    obj["metadata"][k] = v.clone();
                }
            }
            if !rt.namespaced {
                if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("namespace");
                }
            } else {
                obj["metadata"]["namespace"] = json!(ns);
            }
            validation::validate(rt, &obj)?;
            if !changed(&old, &obj) {
                return Ok(old);
            }
            Ok(store.put(rt, &ns, &name, obj, EventType::Modified))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(
            t.starts_with("20") && t.ends_with('Z') && &t[10..11] == "T",
            "{t}"
        );
    }

    #[test]
    fn generated_suffixes_differ() {
        let s: std::collections::HashSet<String> = (1..200).map(suffix).collect();
        assert_eq!(s.len(), 199);
    }
}
