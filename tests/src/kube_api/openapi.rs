//! A minimal OpenAPI v3 surface. kubectl (apply, create, replace with the
//! default `--validate=strict`) asks `/openapi/v3` whether each kind's PATCH
//! accepts the `fieldValidation` query parameter; without an answer it falls
//! back to client-side validation, which needs the full `/openapi/v2`
//! schema. So each group-version document lists one PATCH operation per
//! kind carrying that parameter and nothing else (no schemas: `kubectl
//! explain` is not supported).

use serde_json::{Map, Value, json};

use super::discovery::RESOURCES;

/// The `/openapi/v3` key of a group version (`api/v1`, `apis/apps/v1`).
fn gv_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`: where each group version's document lives.
pub fn root() -> Value {
    let mut paths = Map::new();
    for r in RESOURCES {
        let key = gv_key(r.group, r.version);
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash=0")}),
        );
    }
    json!({"paths": paths})
}

/// `GET /openapi/v3/<api/v1|apis/group/version>`.
pub fn group_version(key: &str) -> Option<Value> {
    let mut paths = Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| gv_key(r.group, r.version) == key)
    {
        let scope = if r.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let path = format!("/{key}{scope}/{}/{{name}}", r.plural);
        paths.insert(
            path,
            json!({"patch": {
                "operationId": format!("patch{}", r.kind),
                "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "OK"}},
            }}),
        );
    }
    (!paths.is_empty()).then(|| {
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": paths})
    })
}
