//! Test-controlled misbehaviour and the request log: the next N requests
//! under a path prefix fail, stall or lose their connection, and every
//! request is recorded so tests can assert call patterns.

use std::time::Duration;

/// What an injected fault does to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this HTTP status and a matching `Status` body (500, 429,
    /// 503, ...).
    Status(u16),
    /// Wait this long, then handle the request normally.
    Delay(Duration),
    /// Close the connection without answering.
    Drop,
}

/// A fault armed for the next `remaining` requests whose path starts with
/// `prefix` (or equals it, when `exact`), of `method` when given.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Path prefix (`/api/v1/nodes`).
    pub prefix: String,
    /// Only requests with exactly this path.
    pub exact: bool,
    /// Only requests with this HTTP method.
    pub method: Option<String>,
    /// What happens.
    pub kind: FaultKind,
    /// How many more requests it hits.
    pub remaining: usize,
}

/// Takes one hit from the first armed fault matching `method` and `path`.
pub fn take(faults: &mut Vec<Fault>, method: &str, path: &str) -> Option<FaultKind> {
    let pos = faults.iter().position(|f| {
        f.remaining > 0
            && f.method.as_deref().is_none_or(|m| m == method)
            && if f.exact {
                path == f.prefix
            } else {
                path.starts_with(&f.prefix)
            }
    })?;
    let fault = &mut faults[pos];
    fault.remaining -= 1;
    let kind = fault.kind;
    if fault.remaining == 0 {
        faults.remove(pos);
    }
    Some(kind)
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw query string ("" when none).
    pub query: String,
    /// The authenticated user (`kubernetes-admin`, `system:node:n1`,
    /// `system:anonymous`).
    pub user: String,
    /// `Content-Type` of the request ("" when none).
    pub content_type: String,
    /// The request body (lossy UTF-8; "" when none).
    pub body: String,
}

impl RequestRecord {
    /// Whether this is `method` on exactly `path`.
    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }
}
