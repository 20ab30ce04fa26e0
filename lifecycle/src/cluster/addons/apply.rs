//! Server-side apply of every addon object: `PATCH` with
//! `application/apply-patch+yaml`, field manager `hpk8s`, `force` (hpk8s
//! owns these objects; a field someone changed by hand is taken back).
//! Applying what is already there changes nothing, not even the
//! resourceVersion, so re-runs are free and say `unchanged`.

use std::collections::HashMap;
use std::fmt;

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;

use super::catalog::{AddonSettings, built_in};
use super::error::{Error, Result};
use super::manifest_dir;
use super::objects::Manifest;
use super::rollout::RolloutTarget;
use crate::cluster::labels::FIELD_MANAGER;
use crate::host::Host;
use crate::kube::client::timed;

/// What applying one object did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The object did not exist.
    Created,
    /// The object existed and changed.
    Configured,
    /// The object was already as applied.
    Unchanged,
}

/// One applied object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Where it came from (`flannel`, `manifest FILE document N`).
    pub origin: String,
    /// Kind.
    pub kind: String,
    /// `namespace/name` or `name`.
    pub object: String,
    /// What happened.
    pub change: Change,
    /// resourceVersion after the apply.
    pub resource_version: String,
}

impl fmt::Display for ApplyOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let change = match self.change {
            Change::Created => "created",
            Change::Configured => "configured",
            Change::Unchanged => "unchanged",
        };
        write!(f, "{}: {} {} {change}", self.origin, self.kind, self.object)
    }
}

/// Everything applied, in order, and the DaemonSets whose rollout to follow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// One entry per object, in apply order.
    pub outcomes: Vec<ApplyOutcome>,
    /// The DaemonSets among them.
    pub daemon_sets: Vec<RolloutTarget>,
}

impl ApplyReport {
    /// Whether anything was created or changed.
    pub fn changed(&self) -> bool {
        self.outcomes.iter().any(|o| o.change != Change::Unchanged)
    }
}

/// Applies the built-in addons, then the manifests of
/// `settings.manifest_dir` (read from `host`). Every manifest is read and
/// its kind resolved before the first object is applied.
pub async fn apply_all(
    client: &Client,
    host: &Host,
    settings: &AddonSettings,
) -> Result<ApplyReport> {
    apply_objects(client, all_manifests(host, settings)?).await
}

/// Resolves (through discovery, once per kind) and applies `manifests` in
/// order.
pub async fn apply_objects(client: &Client, mut manifests: Vec<Manifest>) -> Result<ApplyReport> {
    resolve_kinds(client, &mut manifests).await?;
    let mut report = ApplyReport::default();
    for m in manifests {
        let outcome = apply_one(client, m, &mut report.daemon_sets).await?;
        tracing::info!(origin = %outcome.origin, kind = %outcome.kind, object = %outcome.object,
            resource_version = %outcome.resource_version, "{outcome}");
        report.outcomes.push(outcome);
    }
    Ok(report)
}

/// Looks up, through discovery (once per kind), the resource every
/// manifest of an unknown type is served as; an unknown kind fails before
/// anything is applied.
pub async fn resolve_kinds(client: &Client, manifests: &mut [Manifest]) -> Result<()> {
    let mut resolved: HashMap<GroupVersionKind, (ApiResource, bool)> = HashMap::new();
    for m in manifests.iter_mut() {
        if m.resource.is_some() {
            continue;
        }
        let found = match resolved.get(&m.gvk) {
            Some(r) => r.clone(),
            None => {
                let r = resolve(client, m).await?;
                resolved.insert(m.gvk.clone(), r.clone());
                r
            }
        };
        m.resource = Some(found);
    }
    Ok(())
}

async fn resolve(client: &Client, m: &Manifest) -> Result<(ApiResource, bool)> {
    let unknown = || Error::UnknownKind {
        origin: m.origin.clone(),
        api_version: m.gvk.api_version(),
        kind: m.gvk.kind.clone(),
    };
    match timed(kube::discovery::pinned_kind(client, &m.gvk)).await {
        Ok((ar, caps)) => Ok((ar, caps.scope == Scope::Namespaced)),
        // 404: the group/version is not served; MissingKind: the kind is not in it.
        Err(kube::Error::Api(s)) if s.code == 404 => Err(unknown()),
        Err(kube::Error::Discovery(_)) => Err(unknown()),
        Err(source) => Err(Error::Discovery {
            origin: m.origin.clone(),
            api_version: m.gvk.api_version(),
            kind: m.gvk.kind.clone(),
            source: Box::new(source),
        }),
    }
}

async fn apply_one(
    client: &Client,
    mut m: Manifest,
    daemon_sets: &mut Vec<RolloutTarget>,
) -> Result<ApplyOutcome> {
    let Some((ar, namespaced)) = m.resource.clone() else {
        // apply_objects resolves every manifest first.
        return Err(Error::UnknownKind {
            origin: m.origin,
            api_version: m.gvk.api_version(),
            kind: m.gvk.kind,
        });
    };
    place(&mut m.object, namespaced);
    let name = m.object.metadata.name.clone().unwrap_or_default();
    let api = object_api(client, &m.object, &ar);
    let object = m.display_name();
    let failed = |source| Error::Apply {
        origin: m.origin.clone(),
        kind: ar.kind.clone(),
        object: object.clone(),
        source: Box::new(source),
    };
    let before = timed(api.get_opt(&name))
        .await
        .map_err(failed)?
        .and_then(|o| o.metadata.resource_version);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let after = timed(api.patch(&name, &params, &Patch::Apply(&m.object)))
        .await
        .map_err(failed)?;
    let resource_version = after.metadata.resource_version.unwrap_or_default();
    let change = match before {
        None => Change::Created,
        Some(rv) if rv == resource_version => Change::Unchanged,
        Some(_) => Change::Configured,
    };
    if ar.group == "apps" && ar.kind == "DaemonSet" {
        daemon_sets.push(RolloutTarget {
            label: if m.origin.starts_with("manifest ") {
                name.clone()
            } else {
                m.origin.clone()
            },
            namespace: m.object.metadata.namespace.clone().unwrap_or_default(),
            name,
        });
    }
    Ok(ApplyOutcome {
        origin: m.origin,
        kind: ar.kind,
        object,
        change,
        resource_version,
    })
}

/// Puts the object in its namespace as kubectl does (no namespace means
/// `default`), or in none when the kind is cluster-scoped.
pub(crate) fn place(object: &mut DynamicObject, namespaced: bool) {
    if namespaced {
        object
            .metadata
            .namespace
            .get_or_insert_with(|| "default".to_string());
    } else {
        object.metadata.namespace = None;
    }
}

/// The API of `object`'s kind in its namespace (or cluster-wide).
pub(crate) fn object_api(
    client: &Client,
    object: &DynamicObject,
    ar: &ApiResource,
) -> Api<DynamicObject> {
    match &object.metadata.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

/// Every manifest to apply: the built-in addons' objects, then the
/// manifests of `settings.manifest_dir` (read from `host`).
pub fn all_manifests(host: &Host, settings: &AddonSettings) -> Result<Vec<Manifest>> {
    let mut manifests = Vec::new();
    for addon in built_in(settings)? {
        for object in &addon.objects {
            manifests.push(object.to_manifest(addon.name)?);
        }
    }
    manifests.extend(manifest_dir::read(host, &settings.manifest_dir)?);
    Ok(manifests)
}

/// The DaemonSets among `manifests`, whose rollout the controller follows.
pub fn rollout_targets(manifests: &[Manifest]) -> Vec<RolloutTarget> {
    manifests
        .iter()
        .filter(|m| m.gvk.group == "apps" && m.gvk.kind == "DaemonSet")
        .map(|m| {
            let name = m.object.metadata.name.clone().unwrap_or_default();
            RolloutTarget {
                label: if m.origin.starts_with("manifest ") {
                    name.clone()
                } else {
                    m.origin.clone()
                },
                namespace: m
                    .object
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                name,
            }
        })
        .collect()
}
