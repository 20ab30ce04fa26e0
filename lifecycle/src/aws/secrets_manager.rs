//! The Secrets Manager client: the join ticket in an AWS Secrets Manager
//! secret.
//!
//! Publishing creates the secret when absent and otherwise puts a new
//! version, so a re-run never fails on `ResourceExistsException` (the
//! earlier solution's `CreateSecret`-only bug). The `ClientRequestToken`
//! (the version id) is a hash of the ticket, so a retried call is a no-op
//! rather than a second version. Readers ask for the `AWSCURRENT` stage
//! explicitly.
//!
//! IAM: the controller needs `CreateSecret`, `PutSecretValue`,
//! `DescribeSecret`, `UpdateSecretVersionStage` (and `TagResource` with
//! tags); workers only `GetSecretValue` on this one secret.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::types::Tag;
use backon::{ExponentialBuilder, Retryable};
use sha2::{Digest, Sha256};

use crate::cluster::join_ticket::JoinTicket;
use crate::cluster::rendezvous::error::RendezvousError;

/// The version stage readers ask for.
const CURRENT: &str = "AWSCURRENT";
/// Prefix of the default secret name (kept from the earlier solution so its
/// IAM policies on `hyperpod-k8s-*` still apply).
const NAME_PREFIX: &str = "hyperpod-k8s-";
/// Attempts of one publish call on throttling, 5xx or connection errors.
const PUBLISH_ATTEMPTS: usize = 5;

/// The IAM action workers need to read the ticket.
pub const GET_ACTION: &str = "secretsmanager:GetSecretValue";
const CREATE_ACTION: &str = "secretsmanager:CreateSecret";
const PUT_ACTION: &str = "secretsmanager:PutSecretValue";
const DESCRIBE_ACTION: &str = "secretsmanager:DescribeSecret";
const STAGE_ACTION: &str = "secretsmanager:UpdateSecretVersionStage";

/// `hyperpod-k8s-<cluster id>`.
pub fn default_secret_name(cluster_id: &str) -> String {
    format!("{NAME_PREFIX}{cluster_id}")
}

/// A Secrets Manager secret holding the ticket.
#[derive(Debug, Clone)]
pub struct SecretsManagerRendezvous {
    client: Client,
    name: String,
    tags: BTreeMap<String, String>,
    kms_key_id: Option<String>,
}

/// How the service answered, in the terms the rendezvous cares about.
enum Failure {
    NotFound,
    Exists,
    Denied(String),
    Transient(String),
    Other(String),
}

fn classify<E>(err: &SdkError<E>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = || DisplayErrorContext(err).to_string();
    match err {
        SdkError::ServiceError(ctx) => {
            let code = ctx.err().code().unwrap_or_default();
            let status = ctx.raw().status().as_u16();
            let detail = format!(
                "{} (HTTP {status}): {}",
                if code.is_empty() { "error" } else { code },
                ctx.err().message().unwrap_or_default()
            );
            match code {
                "ResourceNotFoundException" => Failure::NotFound,
                "ResourceExistsException" => Failure::Exists,
                c if c.contains("AccessDenied")
                    || c == "UnrecognizedClientException"
                    || status == 403 =>
                {
                    Failure::Denied(detail)
                }
                c if c.contains("Throttl")
                    || c == "TooManyRequestsException"
                    || c == "InternalServiceError"
                    || status == 429
                    || status >= 500 =>
                {
                    Failure::Transient(detail)
                }
                _ => Failure::Other(detail),
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Failure::Transient(detail())
        }
        _ => Failure::Other(detail()),
    }
}

impl SecretsManagerRendezvous {
    /// A rendezvous on secret `name`, reached through `sdk` (its region,
    /// credentials and, in tests, endpoint).
    pub fn new(
        sdk: &SdkConfig,
        name: &str,
        tags: BTreeMap<String, String>,
        kms_key_id: Option<String>,
    ) -> Result<SecretsManagerRendezvous, RendezvousError> {
        let valid = !name.is_empty()
            && name.len() <= 512
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b));
        if !valid {
            return Err(RendezvousError::Setting {
                key: "rendezvous.secret_name",
                message: format!(
                    "`{name}` is not a secret name (1-512 letters, digits and /_+=.@-)"
                ),
            });
        }
        Ok(SecretsManagerRendezvous {
            client: Client::new(sdk),
            name: name.to_string(),
            tags,
            kms_key_id,
        })
    }

    /// The secret's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn location(&self) -> String {
        format!("secret {}", self.name)
    }

    fn error(&self, action: &'static str, failure: Failure) -> RendezvousError {
        let location = self.location();
        match failure {
            Failure::Denied(detail) => RendezvousError::AccessDenied {
                action,
                location,
                detail,
            },
            Failure::Transient(detail) => RendezvousError::Transient {
                location,
                detail: format!("{action}: {detail}"),
            },
            Failure::NotFound => RendezvousError::Aws {
                action,
                location,
                detail: "the secret does not exist".into(),
            },
            Failure::Exists => RendezvousError::Aws {
                action,
                location,
                detail: "the secret already exists".into(),
            },
            Failure::Other(detail) => RendezvousError::Aws {
                action,
                location,
                detail,
            },
        }
    }

    pub(crate) async fn fetch(&self) -> Result<Option<JoinTicket>, RendezvousError> {
        let answer = self
            .client
            .get_secret_value()
            .secret_id(&self.name)
            // Explicitly: without a stage some implementations (moto after
            // a stage move) return an older version.
            .version_stage(CURRENT)
            .send()
            .await;
        let output = match answer {
            Ok(o) => o,
            Err(e) => {
                return match classify(&e) {
                    Failure::NotFound => Ok(None),
                    other => Err(self.error(GET_ACTION, other)),
                };
            }
        };
        let Some(text) = output.secret_string() else {
            return Err(RendezvousError::MalformedTicket {
                location: self.location(),
                source: crate::cluster::join_ticket::TicketError::NotAnObject,
            });
        };
        JoinTicket::parse(text)
            .map(Some)
            .map_err(|source| RendezvousError::MalformedTicket {
                location: self.location(),
                source,
            })
    }

    pub(crate) async fn publish(&self, ticket: &JoinTicket) -> Result<(), RendezvousError> {
        let body = ticket.to_secret_json();
        let version = version_id(&body);
        (|| self.publish_once(&body, &version))
            .retry(
                ExponentialBuilder::default()
                    .with_jitter()
                    .with_max_times(PUBLISH_ATTEMPTS - 1),
            )
            .when(RendezvousError::is_transient)
            .notify(|e, pause| {
                tracing::warn!(rendezvous = %self.location(), error = %e, ?pause, "publishing the join ticket failed; retrying");
            })
            .await?;
        tracing::info!(
            rendezvous = %self.location(),
            version = %version,
            cluster = %ticket.cluster_id,
            endpoint = %ticket.endpoint,
            expires_at = %ticket.expires_at_rfc3339(),
            "published the join ticket"
        );
        Ok(())
    }

    async fn publish_once(&self, body: &str, version: &str) -> Result<(), RendezvousError> {
        let stages = match self.put(body, version).await {
            Ok(stages) => stages,
            Err(Failure::NotFound) => match self.create(body, version).await {
                Ok(()) => return Ok(()),
                // Another controller process created it meanwhile.
                Err(Failure::Exists) => self
                    .put(body, version)
                    .await
                    .map_err(|f| self.error(PUT_ACTION, f))?,
                Err(f) => return Err(self.error(CREATE_ACTION, f)),
            },
            Err(f) => return Err(self.error(PUT_ACTION, f)),
        };
        if stages.iter().any(|s| s == CURRENT) {
            return Ok(());
        }
        // The service ignores a put whose version id and content already
        // exist, without moving AWSCURRENT back to it (publishing A, B, then
        // A again). Move the stage explicitly.
        self.make_current(version).await
    }

    async fn put(&self, body: &str, version: &str) -> Result<Vec<String>, Failure> {
        self.client
            .put_secret_value()
            .secret_id(&self.name)
            .secret_string(body)
            .client_request_token(version)
            .send()
            .await
            .map(|o| o.version_stages().to_vec())
            .map_err(|e| classify(&e))
    }

    async fn create(&self, body: &str, version: &str) -> Result<(), Failure> {
        let tags: Vec<Tag> = self
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        self.client
            .create_secret()
            .name(&self.name)
            .description("hpk8s join ticket: API endpoint, bootstrap token and CA pins")
            .secret_string(body)
            .client_request_token(version)
            .set_kms_key_id(self.kms_key_id.clone())
            .set_tags((!tags.is_empty()).then_some(tags))
            .send()
            .await
            .map(drop)
            .map_err(|e| classify(&e))
    }

    async fn make_current(&self, version: &str) -> Result<(), RendezvousError> {
        let described = self
            .client
            .describe_secret()
            .secret_id(&self.name)
            .send()
            .await
            .map_err(|e| self.error(DESCRIBE_ACTION, classify(&e)))?;
        let current = described.version_ids_to_stages().and_then(|m| {
            m.iter()
                .find(|(_, stages)| stages.iter().any(|s| s == CURRENT))
                .map(|(id, _)| id.clone())
        });
        if current.as_deref() == Some(version) {
            return Ok(());
        }
        self.client
            .update_secret_version_stage()
            .secret_id(&self.name)
            .version_stage(CURRENT)
            .move_to_version_id(version)
            .set_remove_from_version_id(current)
            .send()
            .await
            .map(drop)
            .map_err(|e| self.error(STAGE_ACTION, classify(&e)))
    }
}

/// The version id (`ClientRequestToken`) of a ticket: a hash of its JSON, so
/// a retried publish of the same ticket is recognised as the same version.
fn version_id(body: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"hpk8s-join-ticket\0")
        .chain_update(body.as_bytes())
        .finalize();
    // 32 hex digits: within the 32-64 characters the API allows.
    hex::encode(&digest[..16])
}
