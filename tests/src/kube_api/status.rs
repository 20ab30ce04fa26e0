//! API errors as real `Status` objects (`kind: Status`, `reason`, `code`,
//! `details`), so clients' error handling is exercised as against a real
//! API server.

use serde_json::{Value, json};

use super::discovery::ResourceType;

/// A failed request: rendered as a `Status` body with `code` as the HTTP
/// status.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason` (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// Human-readable message, as the real API server words it.
    pub message: String,
    /// `Status.details`, when the error concerns one object.
    pub details: Option<Value>,
}

fn details(rt: &ResourceType, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": rt.plural});
    if !rt.group.is_empty() {
        d["group"] = json!(rt.group);
    }
    d
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String, details: Option<Value>) -> Self {
        Self {
            code,
            reason,
            message,
            details,
        }
    }

    /// 404 for a named object.
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        let message = format!("{} \"{name}\" not found", rt.qualified());
        Self::new(404, "NotFound", message, Some(details(rt, name)))
    }

    /// 404 for a path that serves nothing.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
            None,
        )
    }

    /// 409 on create of an existing name.
    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        let message = format!("{} \"{name}\" already exists", rt.qualified());
        Self::new(409, "AlreadyExists", message, Some(details(rt, name)))
    }

    /// 409 on a stale `resourceVersion` or a failed precondition.
    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            rt.qualified()
        );
        Self::new(409, "Conflict", message, Some(details(rt, name)))
    }

    /// 403 from authorization or admission.
    pub fn forbidden(rt: &ResourceType, name: &str, user: &str, verb: &str, why: &str) -> Self {
        let scope = if name.is_empty() {
            String::new()
        } else {
            format!(" \"{name}\"")
        };
        let message = format!(
            "{}{scope} is forbidden: User \"{user}\" cannot {verb} resource \"{}\" in API group \"{}\": {why}",
            rt.qualified(),
            rt.plural,
            rt.group
        );
        Self::new(403, "Forbidden", message, Some(details(rt, name)))
    }

    /// 422 for an object that fails validation.
    pub fn invalid(rt: &ResourceType, name: &str, why: &str) -> Self {
        let message = format!("{} \"{name}\" is invalid: {why}", rt.kind);
        let mut d = details(rt, name);
        d["kind"] = json!(rt.kind);
        Self::new(422, "Invalid", message, Some(d))
    }

    /// 400 for an unparseable request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into(), None)
    }

    /// 401 for an unknown bearer token.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".to_string(), None)
    }

    /// 405 for a verb the path does not support.
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
            None,
        )
    }

    /// 410 when a watch starts before the retained event history.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
            None,
        )
    }

    /// 410 for a list continue token that is unknown or outlived a compaction.
    pub fn continue_expired() -> Self {
        Self::new(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".to_string(),
            None,
        )
    }

    /// 415 for a patch content type the server does not know.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type}; the hpk8s test API server does not decode protobuf)"
            ),
            None,
        )
    }

    /// 429 from the eviction subresource when a budget forbids it.
    pub fn disruption_budget(budget: &str, message: String) -> Self {
        Self::new(
            429,
            "TooManyRequests",
            "Cannot evict pod as it would violate the pod's disruption budget.".to_string(),
            Some(
                json!({"causes": [{"reason": "DisruptionBudget", "message": format!("The disruption budget {budget} {message}")}]}),
            ),
        )
    }

    /// A status injected by a test fault (500, 429, 503, ...).
    pub fn injected(code: u16) -> Self {
        let reason = match code {
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        Self::new(
            code,
            reason,
            format!("injected fault: HTTP {code}"),
            Some(json!({"retryAfterSeconds": 1})),
        )
    }

    /// 500 for anything unexpected inside the server.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message.into(), None)
    }

    /// The `Status` body.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// A success `Status` (eviction answers 201 with one).
pub fn success(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}
