//! The rendezvous: where the controller publishes the [`JoinTicket`] and
//! where workers wait for it.
//!
//! Two kinds, with the same methods: an AWS Secrets Manager secret (the
//! default, [`SecretsManagerRendezvous`]) and a file in a shared directory
//! ([`DirectoryRendezvous`], for NFS/FSx or a Vagrant synced folder).
//! Publishing is idempotent (a re-run never fails because the ticket already
//! exists). Waiting ([`wait_for_ticket`]) polls with full-jitter exponential
//! backoff up to a deadline measured in tens of minutes, not the earlier
//! solution's fixed 300 s, and accepts only a ticket that parses, has not
//! expired and whose API endpoint accepts TCP connections.

mod directory;
mod secrets_manager;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;

pub use directory::{DirectoryRendezvous, TICKET_FILE};
pub use secrets_manager::{SecretsManagerRendezvous, default_secret_name};

use super::join_ticket::{JoinTicket, TicketError};
use crate::config::{RendezvousConfig, RendezvousKind};

/// The IAM action workers need to read the ticket.
pub const GET_ACTION: &str = "secretsmanager:GetSecretValue";

/// Errors publishing or fetching the join ticket. Exit codes 120–139.
#[derive(Debug, thiserror::Error)]
pub enum RendezvousError {
    /// The published ticket does not parse; waiting will not fix it.
    #[error(
        "the join ticket at {location} is malformed: {source}; re-run `hpk8s bootstrap` on the controller to publish a fresh one"
    )]
    MalformedTicket {
        /// `secret NAME` or `file PATH`.
        location: String,
        /// Which field is wrong.
        #[source]
        source: TicketError,
    },
    /// The node's IAM role may not perform `action`.
    #[error(
        "access denied: this node's IAM role may not call {action} on {location} ({detail}); grant {action} on that secret to this instance group's execution role"
    )]
    AccessDenied {
        /// The IAM action (`secretsmanager:GetSecretValue`, …).
        action: &'static str,
        /// `secret NAME`.
        location: String,
        /// The service's message.
        detail: String,
    },
    /// No usable ticket appeared before the deadline.
    #[error(
        "no usable join ticket at {location} after waiting {waited_secs} s (last: {last}); check that the controller finished `hpk8s bootstrap`, or raise rendezvous.deadline_secs"
    )]
    Deadline {
        /// `secret NAME` or `file PATH`.
        location: String,
        /// Seconds waited.
        waited_secs: u64,
        /// Why the last attempt did not succeed.
        last: String,
    },
    /// The service refused the request for a reason retrying cannot fix.
    #[error("{action} on {location} failed: {detail}")]
    Aws {
        /// The IAM action of the failed call.
        action: &'static str,
        /// `secret NAME`.
        location: String,
        /// Error code and message of the service.
        detail: String,
    },
    /// A failure that may go away (throttling, 5xx, connection refused, a
    /// time-out); waiting retries these, publishing gives up after a few.
    #[error(
        "{location} is not reachable right now: {detail}; check the network path to it and retry"
    )]
    Transient {
        /// `secret NAME` or `file PATH`.
        location: String,
        /// What failed.
        detail: String,
    },
    /// A file of the directory rendezvous could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// `read`, `write`, …
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The shared directory does not exist when publishing.
    #[error(
        "rendezvous directory {path} does not exist; mount the shared file system there (or fix rendezvous.directory)"
    )]
    DirectoryMissing {
        /// The directory.
        path: PathBuf,
    },
    /// The controller was asked to publish a ticket that does not validate.
    #[error("refusing to publish an invalid join ticket: {source}")]
    InvalidTicket {
        /// What is wrong.
        #[source]
        source: TicketError,
    },
    /// The `[rendezvous]` settings cannot be used.
    #[error("invalid setting {key}: {message}")]
    Setting {
        /// Dotted config key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl RendezvousError {
    /// Process exit code (see `docs/exit-codes.md`).
    pub fn exit_code(&self) -> u8 {
        match self {
            RendezvousError::MalformedTicket { .. } => 120,
            RendezvousError::AccessDenied { .. } => 121,
            RendezvousError::Deadline { .. } => 122,
            RendezvousError::Aws { .. } => 123,
            RendezvousError::Transient { .. } => 124,
            RendezvousError::Io { .. } => 125,
            RendezvousError::DirectoryMissing { .. } => 126,
            RendezvousError::InvalidTicket { .. } => 127,
            RendezvousError::Setting { .. } => 128,
        }
    }

    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, RendezvousError::Transient { .. })
    }
}

/// Where the join ticket is exchanged.
#[derive(Debug, Clone)]
pub enum Rendezvous {
    /// An AWS Secrets Manager secret.
    SecretsManager(SecretsManagerRendezvous),
    /// A file in a shared directory.
    Directory(DirectoryRendezvous),
}

impl Rendezvous {
    /// The rendezvous `[rendezvous]` describes for cluster `cluster_id`.
    /// `sdk` is needed for `secrets-manager` only (built by the caller, so
    /// tests can point it at a local endpoint).
    pub fn from_config(
        config: &RendezvousConfig,
        cluster_id: &str,
        sdk: Option<&SdkConfig>,
    ) -> Result<Rendezvous, RendezvousError> {
        match config.kind {
            RendezvousKind::SecretsManager => {
                let sdk = sdk.ok_or(RendezvousError::Setting {
                    key: "rendezvous.kind",
                    message: "`secrets-manager` needs AWS credentials and a region".into(),
                })?;
                let name = config
                    .secret_name
                    .clone()
                    .unwrap_or_else(|| default_secret_name(cluster_id));
                SecretsManagerRendezvous::new(
                    sdk,
                    &name,
                    config.tags.clone(),
                    config.kms_key_id.clone(),
                )
                .map(Rendezvous::SecretsManager)
            }
            RendezvousKind::Directory => {
                let dir = config.directory.clone().ok_or(RendezvousError::Setting {
                    key: "rendezvous.directory",
                    message: "must be set with kind = \"directory\"".into(),
                })?;
                Ok(Rendezvous::Directory(DirectoryRendezvous::new(dir)))
            }
        }
    }

    /// The rendezvous of this node's cluster, with a real AWS SDK
    /// configuration when it is Secrets Manager (see [`crate::aws`]).
    pub async fn connect(
        host: &crate::host::Host,
        config: &RendezvousConfig,
        identity: &crate::identity::NodeIdentity,
        cluster_id: &str,
    ) -> Result<Rendezvous, crate::Error> {
        let sdk = match config.kind {
            RendezvousKind::SecretsManager => Some(crate::aws::sdk_config(host, identity).await?),
            RendezvousKind::Directory => None,
        };
        Ok(Rendezvous::from_config(config, cluster_id, sdk.as_ref())?)
    }

    /// `secret NAME` or `file PATH`, for messages.
    pub fn location(&self) -> String {
        match self {
            Rendezvous::SecretsManager(r) => r.location(),
            Rendezvous::Directory(r) => r.location(),
        }
    }

    /// Publishes `ticket` (idempotent: publishing the same ticket again, or a
    /// newer one over an older one, succeeds).
    pub async fn publish(&self, ticket: &JoinTicket) -> Result<(), RendezvousError> {
        ticket
            .validate()
            .map_err(|source| RendezvousError::InvalidTicket { source })?;
        match self {
            Rendezvous::SecretsManager(r) => r.publish(ticket).await,
            Rendezvous::Directory(r) => r.publish(ticket).await,
        }
    }

    /// The current ticket, or `None` when none is published yet.
    pub async fn fetch(&self) -> Result<Option<JoinTicket>, RendezvousError> {
        match self {
            Rendezvous::SecretsManager(r) => r.fetch().await,
            Rendezvous::Directory(r) => r.fetch().await,
        }
    }
}

/// How a worker waits for the ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitPolicy {
    /// Give up after this long.
    pub deadline: Duration,
    /// Longest pause between polls.
    pub poll_cap: Duration,
    /// Base of the exponential backoff (the first retry's upper bound).
    pub first_delay: Duration,
    /// A ticket expiring sooner than this is not accepted (time to join).
    pub expiry_margin: Duration,
    /// Longest time one fetch may take before it counts as failed (the
    /// wait may overrun `deadline` by this much plus the probe's time-out).
    pub request_timeout: Duration,
}

impl WaitPolicy {
    /// The policy `[rendezvous]` describes.
    pub fn from_config(config: &RendezvousConfig) -> WaitPolicy {
        WaitPolicy {
            deadline: Duration::from_secs(config.deadline_secs),
            poll_cap: Duration::from_millis(config.poll_cap_ms),
            ..WaitPolicy::default()
        }
    }
}

impl Default for WaitPolicy {
    fn default() -> Self {
        WaitPolicy {
            deadline: Duration::from_secs(3600),
            poll_cap: Duration::from_millis(5000),
            first_delay: Duration::from_millis(200),
            expiry_margin: Duration::from_secs(120),
            request_timeout: Duration::from_secs(15),
        }
    }
}

/// How long [`tcp_probe`] waits for the API server to accept a connection.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The real endpoint probe: does `endpoint` (host:port) accept a TCP
/// connection within [`PROBE_TIMEOUT`]?
pub async fn tcp_probe(endpoint: String) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(&endpoint)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
    }
}

/// Full jitter over backon's capped exponential schedule: each pause is
/// uniform in `[0, base)`, so workers that booted together spread out
/// instead of polling the rendezvous in lock-step.
fn poll_schedule(policy: &WaitPolicy) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(policy.first_delay)
        .with_max_delay(policy.poll_cap.max(policy.first_delay))
        .with_factor(2.0)
        .without_max_times()
        .build()
        .map(|base| base.mul_f64(fastrand::f64()))
}

/// How often the same "not yet" reason is repeated at info level.
const REPEAT_LOG_EVERY: Duration = Duration::from_secs(60);

/// Waits until `rendezvous` holds a usable ticket: it parses, expires more
/// than `policy.expiry_margin` after `now()`, and `probe(endpoint)`
/// succeeds. The first try is immediate. Not published yet, expired
/// tickets, unreachable endpoints and transient errors are retried until
/// `policy.deadline`; a malformed ticket or denied access fail at once.
pub async fn wait_for_ticket<C, P, F>(
    rendezvous: &Rendezvous,
    policy: &WaitPolicy,
    now: C,
    probe: P,
) -> Result<JoinTicket, RendezvousError>
where
    C: Fn() -> SystemTime,
    P: Fn(String) -> F,
    F: Future<Output = Result<(), String>>,
{
    let location = rendezvous.location();
    let start = Instant::now();
    let mut schedule = poll_schedule(policy);
    let mut logged: Option<(String, Instant)> = None;
    tracing::info!(
        rendezvous = %location,
        deadline_secs = policy.deadline.as_secs(),
        "waiting for the join ticket"
    );
    let mut attempt: u64 = 0;
    loop {
        attempt += 1;
        // Not cut short by the deadline: the last attempt, made at the
        // deadline, must be a real one so its failure can be reported.
        let limit = policy.request_timeout;
        let reason = match tokio::time::timeout(limit, rendezvous.fetch()).await {
            Err(_) => format!("{location} did not answer within {} ms", limit.as_millis()),
            Ok(Err(e)) if e.is_transient() => e.to_string(),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(None)) => "no ticket published yet".to_string(),
            Ok(Ok(Some(ticket))) if !ticket.is_fresh(now(), policy.expiry_margin) => format!(
                "the published ticket expires at {}, too soon to join",
                ticket.expires_at_rfc3339()
            ),
            Ok(Ok(Some(ticket))) => match probe(ticket.endpoint.clone()).await {
                Ok(()) => {
                    tracing::info!(
                        rendezvous = %location,
                        cluster = %ticket.cluster_id,
                        endpoint = %ticket.endpoint,
                        expires_at = %ticket.expires_at_rfc3339(),
                        attempt,
                        waited_secs = start.elapsed().as_secs(),
                        "found a usable join ticket"
                    );
                    return Ok(ticket);
                }
                Err(why) => format!(
                    "API endpoint {} does not accept connections yet: {why}",
                    ticket.endpoint
                ),
            },
        };
        let repeat = logged
            .as_ref()
            .is_some_and(|(r, at)| *r == reason && at.elapsed() < REPEAT_LOG_EVERY);
        if repeat {
            tracing::debug!(rendezvous = %location, attempt, %reason, "join ticket not usable yet");
        } else {
            tracing::info!(
                rendezvous = %location,
                attempt,
                waited_secs = start.elapsed().as_secs(),
                %reason,
                "join ticket not usable yet; retrying"
            );
            logged = Some((reason.clone(), Instant::now()));
        }
        let elapsed = start.elapsed();
        if elapsed >= policy.deadline {
            return Err(RendezvousError::Deadline {
                location,
                waited_secs: elapsed.as_secs(),
                last: reason,
            });
        }
        let pause = schedule.next().unwrap_or(policy.poll_cap);
        tokio::time::sleep(pause.min(policy.deadline - elapsed)).await;
    }
}
