//! The verbs on resources: get, list, watch, create, update, patch, delete,
//! deletecollection and the eviction subresource, with the bookkeeping a
//! real API server does (uid, creationTimestamp, generateName, generation,
//! resourceVersion preconditions, status subresource separation,
//! finalizers, dry runs).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::authz::{self, Attributes, Identity};
use super::discovery::{ResourceType, find};
use super::eviction;
use super::patch::{self, PatchKind};
use super::selectors::{FieldSelector, LabelSelector};
use super::server::Shared;
use super::status::{self, ApiError};
use super::store::{EventType, Store};
use super::table;
use super::tls::lock;
use super::validation;
use super::watch::{self, ChannelBody, WatchFilter};

/// Watches without `timeoutSeconds` end after this long.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// A parsed resource request.
pub struct ApiRequest<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Resource type.
    pub rt: &'static ResourceType,
    /// Namespace from the path ("" when none).
    pub namespace: &'a str,
    /// Object name from the path ("" when none).
    pub name: &'a str,
    /// Subresource ("", "status", "eviction").
    pub sub: &'a str,
    /// Decoded query parameters.
    pub query: HashMap<String, String>,
    /// Request `Content-Type`.
    pub content_type: &'a str,
    /// Request body.
    pub body: Bytes,
    /// Request `Accept` header.
    pub accept: &'a str,
}

/// Object-level admission for one request: `(stored, resulting)`.
type Admit<'a> = dyn Fn(Option<&Value>, Option<&Value>) -> Result<(), ApiError> + 'a;

/// A successful answer.
pub enum Reply {
    /// JSON with this HTTP status.
    Json(u16, Value),
    /// A streamed watch.
    Stream(ChannelBody),
    /// A plain-text health answer.
    Text(&'static str),
}

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

fn verb(req: &ApiRequest<'_>) -> Result<&'static str, ApiError> {
    let watch = matches!(
        req.query.get("watch").map(String::as_str),
        Some("true" | "1")
    );
    Ok(match (req.method, req.name.is_empty()) {
        ("GET", true) if watch => "watch",
        ("GET", true) => "list",
        ("GET", false) => "get",
        ("POST", true) => "create",
        ("POST", false) if req.sub == "eviction" => "create",
        ("PUT", false) => "update",
        ("PATCH", false) => "patch",
        ("DELETE", false) => "delete",
        ("DELETE", true) => "deletecollection",
        (m, _) => return Err(ApiError::method_not_allowed(m)),
    })
}

/// Handles one resource request.
pub fn handle(shared: &Shared, id: &Identity, req: &ApiRequest<'_>) -> Result<Reply, ApiError> {
    let verb = verb(req)?;
    let attrs = Attributes {
        verb,
        rt: req.rt,
        namespace: req.namespace,
        name: req.name,
        sub: req.sub,
    };
    let restrict = shared.node_restriction();
    authz::authorize(id, &attrs, restrict)?;
    let admit =
        |old: Option<&Value>, new: Option<&Value>| authz::admit(id, &attrs, old, new, restrict);
    let dry_run = req.query.get("dryRun").is_some_and(|v| v == "All");
    let mut store = lock(&shared.store);
    let ns = req.namespace;
    match verb {
        "get" => {
            let obj = store.get_or_404(req.rt, ns, req.name)?;
            let rv = store.resource_version();
            let wrapped =
                json!({"items": [obj.clone()], "metadata": {"resourceVersion": rv.to_string()}});
            Ok(Reply::Json(200, as_table(req, &wrapped).unwrap_or(obj)))
        }
        "list" => {
            let l = list(&store, req)?;
            Ok(Reply::Json(200, as_table(req, &l).unwrap_or(l)))
        }
        "watch" => watch(&store, req),
        "create" if req.sub == "eviction" => {
            let pod = store.get_or_404(req.rt, ns, req.name)?;
            admit(Some(&pod), None)?;
            eviction::check(&store, &pod)?;
            if !dry_run {
                let graceful = graceful(shared, req, &pod);
                delete(&mut store, req.rt, ns, req.name, pod, graceful);
            }
            Ok(Reply::Json(201, status::success(201)))
        }
        "create" => {
            let obj = new_object(&mut store, req.rt, ns, parse_body(req)?)?;
            admit(None, Some(&obj))?;
            let name = obj_name(&obj).to_string();
            let out = if dry_run {
                obj
            } else {
                store.put(req.rt, ns, &name, obj, EventType::Added)
            };
            Ok(Reply::Json(201, out))
        }
        "update" => {
            let old = store.get_or_404(req.rt, ns, req.name)?;
            let body = parse_body(req)?;
            if obj_name(&body) != req.name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({})",
                    obj_name(&body),
                    req.name
                )));
            }
            check_rv(req.rt, req.name, &old, &body)?;
            let new = merge_update(req.rt, req.sub, &old, body);
            admit(Some(&old), Some(&new))?;
            commit_update(&mut store, req.rt, ns, req.name, &old, new, dry_run)
                .map(|o| Reply::Json(200, o))
        }
        "patch" => patch(&mut store, req, &admit, dry_run),
        "delete" => {
            let old = store.get_or_404(req.rt, ns, req.name)?;
            check_preconditions(req, &old)?;
            admit(Some(&old), None)?;
            if dry_run {
                return Ok(Reply::Json(200, old));
            }
            let graceful = graceful(shared, req, &old);
            Ok(Reply::Json(
                200,
                delete(&mut store, req.rt, ns, req.name, old, graceful),
            ))
        }
        "deletecollection" => {
            let victims = selected(&store, req)?;
            let mut items = Vec::new();
            for obj in victims {
                admit(Some(&obj), None)?;
                let (vns, vname) = (obj_namespace(&obj).to_string(), obj_name(&obj).to_string());
                let graceful = graceful(shared, req, &obj);
                items.push(if dry_run {
                    obj
                } else {
                    delete(&mut store, req.rt, &vns, &vname, obj, graceful)
                });
            }
            Ok(Reply::Json(
                200,
                list_body(req.rt, store.resource_version(), items, None),
            ))
        }
        _ => Err(ApiError::method_not_allowed(req.method)),
    }
}

/// A list rendered as a Table when the client asked for one and the kind
/// has server-side columns.
fn as_table(req: &ApiRequest<'_>, list: &Value) -> Option<Value> {
    if !table::wanted(req.accept) {
        return None;
    }
    let items = list.get("items").and_then(Value::as_array)?;
    let rv = list
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)?
        .parse()
        .ok()?;
    let include_object = req
        .query
        .get("includeObject")
        .is_some_and(|v| v == "Object");
    let mut t = table::render(req.rt, items, rv, include_object)?;
    if let Some(c) = list.pointer("/metadata/continue") {
        t["metadata"]["continue"] = c.clone();
    }
    Some(t)
}

fn parse_body(req: &ApiRequest<'_>) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

fn obj_name(o: &Value) -> &str {
    o.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn obj_namespace(o: &Value) -> &str {
    o.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn obj_rv(o: &Value) -> &str {
    o.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn selected(store: &Store, req: &ApiRequest<'_>) -> Result<Vec<Value>, ApiError> {
    let labels = LabelSelector::parse(req.query.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad_request(format!("invalid labelSelector: {e}")))?;
    let fields = FieldSelector::parse(req.query.get("fieldSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad_request(format!("invalid fieldSelector: {e}")))?;
    let ns = (!req.namespace.is_empty()).then_some(req.namespace);
    Ok(store
        .list(req.rt, ns)
        .into_iter()
        .map(|(_, o)| o)
        .filter(|o| labels.matches(o) && fields.matches(o))
        .cloned()
        .collect())
}

fn list_body(
    rt: &ResourceType,
    rv: u64,
    items: Vec<Value>,
    cont: Option<(String, usize)>,
) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some((token, remaining)) = cont {
        meta["continue"] = json!(token);
        meta["remainingItemCount"] = json!(remaining);
    }
    json!({"kind": rt.list_kind(), "apiVersion": rt.api_version(), "metadata": meta, "items": items})
}

/// `limit` / `continue` pagination: the continue token is the position
/// (`namespace/name`) of the last item returned.
fn list(store: &Store, req: &ApiRequest<'_>) -> Result<Value, ApiError> {
    let after = match req.query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let raw = B64
                .decode(token)
                .map_err(|_| ApiError::bad_request("invalid continue token"))?;
            Some(
                String::from_utf8(raw)
                    .map_err(|_| ApiError::bad_request("invalid continue token"))?,
            )
        }
        None => None,
    };
    let items: Vec<Value> = selected(store, req)?
        .into_iter()
        .filter(|o| {
            after
                .as_deref()
                .is_none_or(|a| format!("{}/{}", obj_namespace(o), obj_name(o)).as_str() > a)
        })
        .collect();
    let limit = req
        .query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let rv = store.resource_version();
    match limit {
        Some(limit) if items.len() > limit => {
            let page: Vec<Value> = items[..limit].to_vec();
            let last = &page[limit - 1];
            let token = B64.encode(format!("{}/{}", obj_namespace(last), obj_name(last)));
            Ok(list_body(
                req.rt,
                rv,
                page,
                Some((token, items.len() - limit)),
            ))
        }
        _ => Ok(list_body(req.rt, rv, items, None)),
    }
}

fn watch(store: &Store, req: &ApiRequest<'_>) -> Result<Reply, ApiError> {
    let from = match req.query.get("resourceVersion").map(String::as_str) {
        None | Some("") => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?,
        ),
    };
    let ns = (!req.namespace.is_empty()).then(|| req.namespace.to_string());
    let (replay, live) = store.watch(req.rt, ns.as_deref(), from)?;
    let filter = WatchFilter {
        rt: req.rt.index(),
        namespace: ns,
        labels: LabelSelector::parse(req.query.get("labelSelector").map_or("", String::as_str))
            .map_err(ApiError::bad_request)?,
        fields: FieldSelector::parse(req.query.get("fieldSelector").map_or("", String::as_str))
            .map_err(ApiError::bad_request)?,
        table: table::wanted(req.accept).then(|| {
            (
                req.rt,
                req.query
                    .get("includeObject")
                    .is_some_and(|v| v == "Object"),
            )
        }),
    };
    let timeout = req
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
    Ok(Reply::Stream(watch::stream(replay, live, filter, timeout)))
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
fn suffix(serial: u64) -> String {
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

fn check_rv(rt: &ResourceType, name: &str, old: &Value, new: &Value) -> Result<(), ApiError> {
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

fn check_preconditions(req: &ApiRequest<'_>, old: &Value) -> Result<(), ApiError> {
    if req.body.is_empty() {
        return Ok(());
    }
    let opts: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let pre = opts.get("preconditions");
    let uid = old
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(want) = pre.and_then(|p| p.get("uid")).and_then(Value::as_str)
        && want != uid
    {
        let why =
            format!("Precondition failed: UID in precondition: {want}, UID in object meta: {uid}");
        return Err(ApiError::conflict(req.rt, req.name, &why));
    }
    if let Some(want) = pre
        .and_then(|p| p.get("resourceVersion"))
        .and_then(Value::as_str)
        && want != obj_rv(old)
    {
        let why = format!(
            "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {}",
            obj_rv(old)
        );
        return Err(ApiError::conflict(req.rt, req.name, &why));
    }
    Ok(())
}

/// The object an update stores: server-owned metadata kept, and the
/// status/spec split of resources with a status subresource enforced.
fn merge_update(rt: &ResourceType, sub: &str, old: &Value, mut new: Value) -> Value {
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
fn changed(old: &Value, new: &Value) -> bool {
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

fn commit_update(
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

fn patch(
    store: &mut Store,
    req: &ApiRequest<'_>,
    admit: &Admit<'_>,
    dry_run: bool,
) -> Result<Reply, ApiError> {
    let kind = PatchKind::from_content_type(req.content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(req.content_type))?;
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        // Apply bodies may be YAML proper (kubectl and kube send JSON).
        Err(_) if kind == PatchKind::Apply => {
            serde_saphyr::from_str(&String::from_utf8_lossy(&req.body)).map_err(|e| {
                ApiError::bad_request(format!("the apply body is neither JSON nor YAML: {e}"))
            })?
        }
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "the patch is not valid JSON: {e}"
            )));
        }
    };
    let ns = req.namespace;
    let old = store.get(req.rt, ns, req.name).cloned();
    if kind == PatchKind::Apply {
        let manager = req
            .query
            .get("fieldManager")
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ApiError::bad_request("fieldManager is required for apply requests"))?;
        if old.is_none() {
            let mut applied =
                patch::apply(None, &body, manager, &now()).map_err(ApiError::bad_request)?;
            applied["metadata"]["name"] = json!(req.name);
            let obj = new_object(store, req.rt, ns, applied)?;
            admit(None, Some(&obj))?;
            let out = if dry_run {
                obj
            } else {
                store.put(req.rt, ns, req.name, obj, EventType::Added)
            };
            return Ok(Reply::Json(201, out));
        }
    }
    let old = old.ok_or_else(|| ApiError::not_found(req.rt, req.name))?;
    let mut doc = old.clone();
    match kind {
        PatchKind::Merge => patch::merge(&mut doc, &body),
        PatchKind::Json => patch::json_patch(&mut doc, &body)
            .map_err(|e| ApiError::invalid(req.rt, req.name, &e))?,
        PatchKind::Strategic => patch::strategic(&mut doc, &body).map_err(ApiError::bad_request)?,
        PatchKind::Apply => {
            let manager = req.query.get("fieldManager").map_or("", String::as_str);
            doc =
                patch::apply(Some(&old), &body, manager, &now()).map_err(ApiError::bad_request)?;
        }
    }
    if kind != PatchKind::Json {
        check_rv(req.rt, req.name, &old, &body)?;
    }
    if obj_name(&doc) != req.name {
        return Err(ApiError::invalid(
            req.rt,
            req.name,
            "metadata.name: Invalid value: field is immutable",
        ));
    }
    let new = merge_update(req.rt, req.sub, &old, doc);
    admit(Some(&old), Some(&new))?;
    commit_update(store, req.rt, ns, req.name, &old, new, dry_run).map(|o| Reply::Json(200, o))
}

/// The grace period of a pod deletion when the test holds pods in
/// Terminating (as a kubelet does until containers stop): `None` when the
/// pod goes at once (not held, or `gracePeriodSeconds: 0`, a force delete).
fn graceful(shared: &Shared, req: &ApiRequest<'_>, obj: &Value) -> Option<i64> {
    if req.rt.kind != "Pod" || !shared.hold_pods() {
        return None;
    }
    let opts: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let requested = opts
        .get("gracePeriodSeconds")
        .or_else(|| opts.pointer("/deleteOptions/gracePeriodSeconds"))
        .and_then(Value::as_i64);
    let default = obj
        .pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(30);
    match requested.unwrap_or(default) {
        0 => None,
        secs => Some(secs),
    }
}

/// Deletes, honouring finalizers and held pod termination (the object then
/// only gets a deletionTimestamp). Returns the object as the response
/// shows it.
fn delete(
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
