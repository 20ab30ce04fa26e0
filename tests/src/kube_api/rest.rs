//! The verbs on resources: get, list (selectors, pagination, Tables),
//! watch, create, update, patch, delete, deletecollection and the eviction
//! subresource, with authorization, admission and dry runs. Object
//! bookkeeping lives in [`super::objects`].

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use serde_json::{Value, json};

use super::authz::{self, Attributes, Identity};
use super::discovery::ResourceType;
use super::eviction;
use super::objects::{
    check_rv, commit_update, delete, merge_update, new_object, now, obj_name, obj_namespace, obj_rv,
};
use super::patch::{self, PatchKind};
use super::selectors::{FieldSelector, LabelSelector};
use super::server::Shared;
use super::status::{self, ApiError};
use super::store::{EventType, Store};
use super::table;
use super::tls::lock;
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
    let mut store = lock(&shared.store);
    authz::authorize(id, &attrs, restrict, &store)?;
    let admit =
        |old: Option<&Value>, new: Option<&Value>| authz::admit(id, &attrs, old, new, restrict);
    let dry_run = req.query.get("dryRun").is_some_and(|v| v == "All");
    let ns = req.namespace;
    let result = respond(shared, req, verb, &mut store, &admit, dry_run);
    let token_written = !matches!(verb, "get" | "list" | "watch")
        && req.rt.plural == "secrets"
        && ns == "kube-system";
    if result.is_ok() && !dry_run && token_written {
        super::bootstrap_signer::resign(&mut store);
    }
    result
}

/// The verb's effect on the store and the reply.
fn respond(
    shared: &Shared,
    req: &ApiRequest<'_>,
    verb: &'static str,
    store: &mut Store,
    admit: &Admit<'_>,
    dry_run: bool,
) -> Result<Reply, ApiError> {
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
            let l = list(store, req)?;
            Ok(Reply::Json(200, as_table(req, &l).unwrap_or(l)))
        }
        "watch" => watch(store, req),
        "create" if req.sub == "eviction" => {
            let pod = store.get_or_404(req.rt, ns, req.name)?;
            admit(Some(&pod), None)?;
            eviction::check(store, &pod)?;
            if !dry_run {
                let graceful = graceful(shared, req, &pod);
                delete(store, req.rt, ns, req.name, pod, graceful);
            }
            Ok(Reply::Json(201, status::success(201)))
        }
        "create" => {
            let obj = new_object(store, req.rt, ns, parse_body(req)?)?;
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
            commit_update(store, req.rt, ns, req.name, &old, new, dry_run)
                .map(|o| Reply::Json(200, o))
        }
        "patch" => patch(store, req, &admit, dry_run),
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
                delete(store, req.rt, ns, req.name, old, graceful),
            ))
        }
        "deletecollection" => {
            let victims = selected(store, req)?;
            let mut items = Vec::new();
            for obj in victims {
                admit(Some(&obj), None)?;
                let (vns, vname) = (obj_namespace(&obj).to_string(), obj_name(&obj).to_string());
                let graceful = graceful(shared, req, &obj);
                items.push(if dry_run {
                    obj
                } else {
                    delete(store, req.rt, &vns, &vname, obj, graceful)
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

/// `limit` / `continue` pagination. Later pages come from the snapshot the
/// first page was cut from, with its resourceVersion (a consistent list, as
/// the real API server serves it; a client that watches from that version
/// misses nothing). A token that is unknown or outlived a compaction gets
/// 410 Expired, and the client lists again.
fn list(store: &mut Store, req: &ApiRequest<'_>) -> Result<Value, ApiError> {
    let limit = req
        .query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let (rv, items) = match req.query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let raw = B64
                .decode(token)
                .ok()
                .and_then(|t| String::from_utf8(t).ok())
                .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
            store.page(&raw).ok_or_else(ApiError::continue_expired)?
        }
        None => (store.resource_version(), selected(store, req)?),
    };
    match limit {
        Some(limit) if items.len() > limit => {
            let mut page = items;
            let rest = page.split_off(limit);
            let remaining = rest.len();
            let token = B64.encode(store.keep_page(rv, rest));
            Ok(list_body(req.rt, rv, page, Some((token, remaining))))
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
    // Streaming lists (kube's `streaming_lists()`): the current objects as
    // ADDED, then a bookmark marking the end of the initial events.
    let streaming = req
        .query
        .get("sendInitialEvents")
        .is_some_and(|v| v == "true");
    let from = if streaming { None } else { from };
    let ns = (!req.namespace.is_empty()).then(|| req.namespace.to_string());
    let (replay, live) = store.watch(req.rt, ns.as_deref(), from)?;
    let initial_events_end = streaming.then(|| {
        json!({"kind": req.rt.kind, "apiVersion": req.rt.api_version(), "metadata": {
            "resourceVersion": store.resource_version().to_string(),
            "annotations": {"k8s.io/initial-events-end": "true"}}})
    });
    let filter = WatchFilter {
        rt: req.rt.index(),
        namespace: ns,
        labels: LabelSelector::parse(req.query.get("labelSelector").map_or("", String::as_str))
            .map_err(ApiError::bad_request)?,
        fields: FieldSelector::parse(req.query.get("fieldSelector").map_or("", String::as_str))
            .map_err(ApiError::bad_request)?,
        initial_events_end,
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
