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
pub mod error;

use std::future::Future;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;

pub use self::directory::{DirectoryRendezvous, TICKET_FILE};
pub use self::error::RendezvousError;
pub use crate::aws::secrets_manager::{GET_ACTION, SecretsManagerRendezvous, default_secret_name};

use super::join_ticket::JoinTicket;
use crate::config::{RendezvousConfig, RendezvousKind};

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
                Ok(Rendezvous::Directory(DirectoryRendezvous::new(
                    dir,
                    config.directory_owner_uid,
                )))
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
    ) -> Result<Rendezvous, RendezvousError> {
        let sdk = match config.kind {
            RendezvousKind::SecretsManager => Some(crate::aws::sdk_config(host, identity).await?),
            RendezvousKind::Directory => None,
        };
        Rendezvous::from_config(config, cluster_id, sdk.as_ref())
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
        let publish = async {
            match self {
                Rendezvous::SecretsManager(r) => r.publish(ticket).await,
                Rendezvous::Directory(r) => r.publish(ticket).await,
            }
        };
        // A service that accepts and never answers, or a hung network file
        // system, must not hold the controller forever.
        tokio::time::timeout(PUBLISH_DEADLINE, publish)
            .await
            .unwrap_or_else(|_| {
                Err(RendezvousError::Transient {
                    location: self.location(),
                    detail: format!(
                        "publishing did not finish within {} s",
                        PUBLISH_DEADLINE.as_secs()
                    ),
                })
            })
    }

    /// The current ticket, or `None` when none is published yet.
    pub async fn fetch(&self) -> Result<Option<JoinTicket>, RendezvousError> {
        match self {
            Rendezvous::SecretsManager(r) => r.fetch().await,
            Rendezvous::Directory(r) => r.fetch().await,
        }
    }
}

/// The longest publishing a ticket may take, retries included.
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(120);

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
    /// The API endpoints a ticket may name (the inventory's controller or
    /// `cluster.control_plane_endpoint`); empty accepts any, with the CA
    /// pin as the only check.
    pub endpoints: Vec<String>,
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
            endpoints: Vec::new(),
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
        let mut refused = false;
        let reason = match tokio::time::timeout(limit, rendezvous.fetch()).await {
            Err(_) => format!("{location} did not answer within {} ms", limit.as_millis()),
            Ok(Err(e)) if e.keeps_waiting() => {
                refused = matches!(e, RendezvousError::Untrusted { .. });
                e.to_string()
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(None)) => "no ticket published yet".to_string(),
            Ok(Ok(Some(ticket)))
                if !policy.endpoints.is_empty() && !policy.endpoints.contains(&ticket.endpoint) =>
            {
                refused = true;
                format!(
                    "{location}: refusing a ticket for API endpoint {}: this cluster's is {}",
                    ticket.endpoint,
                    policy.endpoints.join(" or ")
                )
            }
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
        } else if refused {
            tracing::warn!(
                rendezvous = %location,
                attempt,
                waited_secs = start.elapsed().as_secs(),
                %reason,
                "refusing the join ticket found; waiting for a trustworthy one"
            );
            logged = Some((reason.clone(), Instant::now()));
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
