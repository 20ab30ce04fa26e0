//! The listener: TLS with client-certificate identification, HTTP/1.1 via
//! hyper, bearer tokens, fault injection, the request log, and routing of
//! discovery and resource paths.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::authz::Identity;
use super::discovery;
use super::faults::{self, Fault, FaultKind, RequestRecord};
use super::openapi;
use super::rest::{self, ApiRequest, Reply};
use super::status::ApiError;
use super::store::Store;
use super::tls::{Pki, lock};

/// State shared by the listener, every connection and the test's handle.
pub struct Shared {
    /// The objects.
    pub store: Mutex<Store>,
    /// CA and issued client certificates.
    pub pki: Pki,
    /// Bearer token → identity.
    pub tokens: Mutex<HashMap<String, Identity>>,
    /// Armed faults.
    pub faults: Mutex<Vec<Fault>>,
    /// Every request so far.
    pub log: Mutex<Vec<RequestRecord>>,
    /// Whether node identities are restricted (NodeRestriction).
    pub node_restriction: AtomicBool,
    /// Whether deleted pods stay Terminating until the test releases them.
    pub hold_pods: AtomicBool,
    /// `127.0.0.1:<port>`.
    pub address: String,
}

impl Shared {
    /// Whether deleted pods stay Terminating.
    pub fn hold_pods(&self) -> bool {
        self.hold_pods.load(Ordering::Relaxed)
    }

    /// Whether NodeRestriction applies.
    pub fn node_restriction(&self) -> bool {
        self.node_restriction.load(Ordering::Relaxed)
    }
}

type HttpResponse = Response<BoxBody<Bytes, Infallible>>;

/// Returned by the service to make hyper close the connection unanswered.
#[derive(Debug)]
struct DroppedByFault;

impl std::fmt::Display for DroppedByFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for DroppedByFault {}

/// Accepts connections until the task is aborted. Connections live in a
/// `JoinSet` owned by this task, so aborting it (dropping the handle) also
/// closes open connections and ends their watches, as a stopped API server
/// would.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let acceptor = TlsAcceptor::from(shared.pki.server_config());
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        let (shared, acceptor) = (shared.clone(), acceptor.clone());
        connections.spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let cert_identity = shared.pki.identify(tls.get_ref().1.peer_certificates());
            let service = service_fn(move |req| handle(shared.clone(), cert_identity.clone(), req));
            // Connection errors (client hung up mid-watch) are normal here.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn json_response(code: u16, body: &Value) -> HttpResponse {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *resp.status_mut() =
        hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(e: &ApiError) -> HttpResponse {
    let mut resp = json_response(e.code, &e.to_status());
    // Only where the Status says so: the eviction API's 429 carries no
    // Retry-After, and clients must see it rather than silently retry.
    let retry_after = e
        .details
        .as_ref()
        .and_then(|d| d.get("retryAfterSeconds"))
        .and_then(Value::as_u64);
    if let Some(secs) = retry_after
        && let Ok(v) = hyper::header::HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(hyper::header::RETRY_AFTER, v);
    }
    resp
}

fn header(req: &Request<Incoming>, name: hyper::header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn handle(
    shared: Arc<Shared>,
    cert_identity: Option<Identity>,
    req: Request<Incoming>,
) -> Result<HttpResponse, DroppedByFault> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let content_type = header(&req, hyper::header::CONTENT_TYPE);
    let accept = header(&req, hyper::header::ACCEPT);
    let auth = header(&req, hyper::header::AUTHORIZATION);
    let identity = match auth.strip_prefix("Bearer ") {
        Some(token) => lock(&shared.tokens).get(token.trim()).cloned(),
        None => Some(cert_identity.unwrap_or_else(Identity::anonymous)),
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(error_response(&ApiError::bad_request(format!(
                "reading the request body: {e}"
            ))));
        }
    };
    lock(&shared.log).push(RequestRecord {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        user: identity
            .as_ref()
            .map_or_else(|| "<invalid token>".to_string(), |i| i.user.clone()),
        content_type: content_type.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        // Typed client-go clientsets (kubectl create namespace|configmap|
        // secret ...) send protobuf, which this server cannot decode.
        let e = ApiError::unsupported_media_type(&content_type);
        return Ok(error_response(&e));
    }
    let Some(identity) = identity else {
        return Ok(error_response(&ApiError::unauthorized()));
    };
    let fault = faults::take(&mut lock(&shared.faults), &method, &path);
    match fault {
        Some(FaultKind::Status(code)) => return Ok(error_response(&ApiError::injected(code))),
        Some(FaultKind::Delay(d)) => tokio::time::sleep(d).await,
        Some(FaultKind::Drop) => return Err(DroppedByFault),
        None => {}
    }
    Ok(
        match route(
            &shared,
            &identity,
            &Head {
                method: &method,
                path: &path,
                query: &query,
                content_type: &content_type,
                accept: &accept,
            },
            body,
        ) {
            Ok(Reply::Json(code, v)) => json_response(code, &v),
            Ok(Reply::Text(text)) => {
                Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed())
            }
            Ok(Reply::Stream(body)) => {
                let mut resp = Response::new(body.boxed());
                resp.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                resp.headers_mut().insert(
                    hyper::header::TRANSFER_ENCODING,
                    hyper::header::HeaderValue::from_static("chunked"),
                );
                resp
            }
            Err(e) => error_response(&e),
        },
    )
}

/// Decodes a `application/x-www-form-urlencoded` query component.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a query string.
pub fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// What routing needs of a request besides its body.
struct Head<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    content_type: &'a str,
    accept: &'a str,
}

fn route(shared: &Shared, id: &Identity, head: &Head<'_>, body: Bytes) -> Result<Reply, ApiError> {
    let Head {
        method,
        path,
        query,
        content_type,
        accept,
    } = *head;
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let discovery_doc = match segs.as_slice() {
        ["version"] => Some(discovery::version()),
        ["healthz" | "livez" | "readyz"] => {
            return Ok(Reply::Text("ok"));
        }
        ["api"] => Some(discovery::core_versions(&shared.address)),
        ["api", v] => discovery::resource_list("", v),
        ["apis"] => Some(discovery::group_list()),
        ["apis", g] => discovery::group(g),
        ["apis", g, v] => discovery::resource_list(g, v),
        ["openapi", "v3"] => Some(openapi::root()),
        ["openapi", "v3", rest @ ..] => {
            Some(openapi::group_version(&rest.join("/")).ok_or_else(|| ApiError::no_route(path))?)
        }
        ["api", _, ..] | ["apis", _, _, ..] => None,
        _ => return Err(ApiError::no_route(path)),
    };
    if let Some(doc) = discovery_doc {
        if method != "GET" {
            return Err(ApiError::method_not_allowed(method));
        }
        return Ok(Reply::Json(200, doc));
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_route(path)),
    };
    let resource = |plural: &str| discovery::find(group, version, plural);
    let (namespace, rt, tail) = match rest {
        ["namespaces", ns, plural, tail @ ..] if resource(plural).is_some_and(|r| r.namespaced) => {
            (*ns, resource(plural), tail)
        }
        [plural, tail @ ..] => ("", resource(plural), tail),
        [] => ("", None, rest),
    };
    let Some(rt) = rt else {
        return Err(ApiError::no_route(path));
    };
    let (name, sub) = match tail {
        [] => ("", ""),
        [name] => (*name, ""),
        [name, sub] => (*name, *sub),
        _ => return Err(ApiError::no_route(path)),
    };
    let sub_ok = match sub {
        "" => true,
        "status" => rt.has_status,
        "eviction" => rt.kind == "Pod" && method == "POST",
        _ => false,
    };
    if !sub_ok || (rt.namespaced && namespace.is_empty() && !name.is_empty()) {
        return Err(ApiError::no_route(path));
    }
    let req = ApiRequest {
        method,
        rt,
        namespace,
        name,
        sub,
        query: parse_query(query),
        content_type,
        body,
        accept,
    };
    rest::handle(shared, id, &req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query(
            "labelSelector=app+in+%28a%2Cb%29&fieldSelector=spec.nodeName%3Dn1&watch=1",
        );
        assert_eq!(q["labelSelector"], "app in (a,b)");
        assert_eq!(q["fieldSelector"], "spec.nodeName=n1");
        assert_eq!(q["watch"], "1");
        assert_eq!(decode("a%2"), "a%2");
    }
}
