//! EC2 instance metadata (IMDSv2): a session token from `PUT
//! /latest/api/token`, then `GET /latest/meta-data/...` with that token.
//!
//! The client takes its base URL as a constructor argument so tests point it
//! at a local fake; production uses [`DEFAULT_ENDPOINT`], and only after
//! [`super::ec2::is_ec2`] said yes. A 404 means "not there" (a field this
//! instance does not have), not an error. 5xx answers, refused connections
//! and time-outs are retried a few times with exponential backoff; a 401
//! (token expired) fetches a new token once.

use std::fmt;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::StatusCode;
use serde::Serialize;
use tokio::sync::Mutex;

use super::error::IdentityError;
use super::node::Lifecycle;
use crate::download::body_limited;

/// The link-local IMDS address. Never contacted unless the machine is EC2.
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
/// The most read from one IMDS answer (real ones are under 4 KiB).
pub const MAX_BODY: u64 = 64 * 1024;
/// Where IMDSv2 session tokens are issued.
pub const TOKEN_PATH: &str = "/latest/api/token";
/// Prefix of every metadata path.
pub const META_DATA_PATH: &str = "/latest/meta-data/";
/// Request header asking for a token with this lifetime.
pub const TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
/// Request header carrying the token.
pub const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// Token lifetime asked for: the maximum, 6 hours.
const TOKEN_TTL_SECS: u32 = 21_600;

/// How failed requests (5xx, time-outs, refused connections) are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: usize,
    /// First backoff delay (doubled each time, with jitter).
    pub min_delay: Duration,
    /// Longest backoff delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Four retries from 200 ms to 2 s: rides out an IMDS that comes up a
    /// few seconds after boot without stalling a machine that has none.
    fn default() -> Self {
        Self {
            retries: 4,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
        }
    }
}

/// An IMDSv2 session token. Its Debug form never shows the value.
#[derive(Clone)]
struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// What IMDS says about this instance; `None` where it answered 404.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InstanceFacts {
    /// `instance-id`.
    pub instance_id: Option<String>,
    /// `instance-type`, e.g. `p5.48xlarge`.
    pub instance_type: Option<String>,
    /// `local-ipv4`.
    pub local_ipv4: Option<String>,
    /// `local-hostname`.
    pub local_hostname: Option<String>,
    /// `placement/region`.
    pub region: Option<String>,
    /// `placement/availability-zone`.
    pub availability_zone: Option<String>,
    /// `instance-life-cycle`: `spot`, or anything else meaning on-demand.
    pub lifecycle: Option<Lifecycle>,
}

/// One attempt's failure, sorted into "try again" and "give up".
#[derive(Debug)]
enum Failure {
    /// Time-out, refused connection, 5xx: worth another try.
    Transient(String),
    /// Anything retrying cannot fix.
    Fatal(IdentityError),
}

/// An IMDSv2 client.
#[derive(Debug)]
pub struct ImdsClient {
    endpoint: String,
    http: reqwest::Client,
    timeout: Duration,
    retry: RetryPolicy,
    token: Mutex<Option<Token>>,
}

impl ImdsClient {
    /// A client for the IMDS at `endpoint` (e.g. `http://127.0.0.1:8080`),
    /// each request limited to `timeout`.
    pub fn new(endpoint: impl Into<String>, timeout: Duration) -> Result<Self, IdentityError> {
        let endpoint = endpoint.into().trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            // A proxy from the environment must never see metadata requests.
            .no_proxy()
            .connect_timeout(timeout)
            .build()
            .map_err(|e| IdentityError::ImdsProtocol {
                endpoint: endpoint.clone(),
                problem: format!("cannot build an HTTP client: {e}"),
            })?;
        Ok(Self {
            endpoint,
            http,
            timeout,
            retry: RetryPolicy::default(),
            token: Mutex::new(None),
        })
    }

    /// Replaces the retry policy (tests shorten it).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The base URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Everything hpk8s wants to know about this instance.
    pub async fn instance_facts(&self) -> Result<InstanceFacts, IdentityError> {
        Ok(InstanceFacts {
            instance_id: self.get("instance-id").await?,
            instance_type: self.get("instance-type").await?,
            local_ipv4: self.get("local-ipv4").await?,
            local_hostname: self.get("local-hostname").await?,
            region: self.get("placement/region").await?,
            availability_zone: self.get("placement/availability-zone").await?,
            lifecycle: self.get("instance-life-cycle").await?.map(|l| {
                if l == "spot" {
                    Lifecycle::Spot
                } else {
                    Lifecycle::OnDemand
                }
            }),
        })
    }

    /// `GET /latest/meta-data/{path}`, trimmed; `None` on 404.
    pub async fn get(&self, path: &str) -> Result<Option<String>, IdentityError> {
        let path = format!("{META_DATA_PATH}{}", path.trim_start_matches('/'));
        let token = self.token(false).await?;
        let mut response = self.get_with(&path, &token).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            // The token expired or IMDS restarted: one fresh token, once.
            tracing::debug!(path, "IMDS answered 401; fetching a new token");
            let token = self.token(true).await?;
            response = self.get_with(&path, &token).await?;
        }
        match response.status() {
            StatusCode::OK => Ok(Some(self.body(&path, response).await?)),
            StatusCode::NOT_FOUND => Ok(None),
            status => Err(IdentityError::ImdsProtocol {
                endpoint: self.endpoint.clone(),
                problem: format!("GET {path} answered HTTP {status}"),
            }),
        }
    }

    /// An answer's body, trimmed: at most [`MAX_BODY`] bytes of UTF-8.
    async fn body(&self, path: &str, response: reqwest::Response) -> Result<String, IdentityError> {
        let problem = |why: String| IdentityError::ImdsProtocol {
            endpoint: self.endpoint.clone(),
            problem: format!("reading the answer to {path}: {why}"),
        };
        let bytes = body_limited(response, MAX_BODY)
            .await
            .map_err(|e| problem(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| problem("not UTF-8 text".into()))?;
        Ok(text.trim().to_string())
    }

    /// The cached token, or a new one when there is none or `renew` is set.
    async fn token(&self, renew: bool) -> Result<Token, IdentityError> {
        let mut cached = self.token.lock().await;
        if !renew && let Some(t) = cached.as_ref() {
            return Ok(t.clone());
        }
        let response = self
            .send(TOKEN_PATH, || {
                self.http
                    .put(format!("{}{TOKEN_PATH}", self.endpoint))
                    .header(TTL_HEADER, TOKEN_TTL_SECS.to_string())
            })
            .await?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(IdentityError::ImdsProtocol {
                endpoint: self.endpoint.clone(),
                problem: format!(
                    "PUT {TOKEN_PATH} answered HTTP {status}; is IMDSv2 enabled for this instance?"
                ),
            });
        }
        let text = self.body(TOKEN_PATH, response).await?;
        let token = Token(text);
        *cached = Some(token.clone());
        Ok(token)
    }

    async fn get_with(
        &self,
        path: &str,
        token: &Token,
    ) -> Result<reqwest::Response, IdentityError> {
        self.send(path, || {
            self.http
                .get(format!("{}{path}", self.endpoint))
                .header(TOKEN_HEADER, token.0.as_str())
        })
        .await
    }

    /// Sends the request `build` makes, retrying transient failures; any
    /// answer below 500 is returned for the caller to judge.
    async fn send(
        &self,
        path: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, IdentityError> {
        let attempt = || async {
            let result = build().timeout(self.timeout).send().await;
            match result {
                Ok(r) if r.status().is_server_error() => Err(Failure::Transient(format!(
                    "{path} answered HTTP {}",
                    r.status()
                ))),
                Ok(r) => Ok(r),
                Err(e) if e.is_builder() => Err(Failure::Fatal(IdentityError::ImdsProtocol {
                    endpoint: self.endpoint.clone(),
                    problem: format!("invalid request URL for {path}: {e}"),
                })),
                Err(e) if e.is_timeout() => Err(Failure::Transient(format!(
                    "{path} timed out after {} ms",
                    self.timeout.as_millis()
                ))),
                Err(e) => Err(Failure::Transient(format!("{path}: {}", root_cause(&e)))),
            }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.retries)
            .with_jitter();
        attempt
            .retry(backoff)
            .when(|f| matches!(f, Failure::Transient(_)))
            .notify(|f, after| tracing::debug!(?f, ?after, "IMDS request failed; retrying"))
            .await
            .map_err(|f| match f {
                Failure::Fatal(e) => e,
                Failure::Transient(reason) => IdentityError::ImdsUnreachable {
                    endpoint: self.endpoint.clone(),
                    reason,
                },
            })
    }
}

/// The innermost cause ("Connection refused (os error 111)"): reqwest's
/// outer messages repeat the URL, which the error names already.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(s) = cause.source() {
        cause = s;
    }
    cause.to_string()
}
