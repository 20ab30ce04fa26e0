//! Bootstrap-token rotation on the controller: a published join ticket
//! always carries a token with at least half its lifetime left, so a worker
//! booting hours after the cluster formed still joins, and a leaked ticket
//! stops working soon.
//!
//! Rotating creates a new `kube-system/bootstrap-token-<id>` Secret (what
//! `kubeadm token create` does), publishes a new ticket with it, and only
//! later deletes the tokens it superseded: a worker that read the old
//! ticket just before the rotation still joins during `grace`.
//!
//! hpk8s recognises the tokens it made by their Secret's `description`
//! starting with [`DESCRIPTION_PREFIX`] (the first token, made by
//! `kubeadm init` from hpk8s's config, carries the same description, see
//! [`token_description`]); it never touches any other token. Token ids are
//! public and logged; the secret part never appears in logs or errors.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use super::bootstrap_token::{
    self, BootstrapToken, SECRET_NAME_PREFIX, SECRET_NAMESPACE, SECRET_TYPE, TokenTtl,
};
use super::join_ticket::{JoinTicket, JoinToken, TicketError};
use super::labels::FIELD_MANAGER;
use super::rendezvous::{Rendezvous, RendezvousError};
use crate::error::class::classify;
use crate::kube::client::timed;
use crate::kube::errors::class_of;
use crate::kube::errors::is_transient;
use crate::values::time::whole_seconds;

/// Start of the `description` of every token hpk8s makes.
pub const DESCRIPTION_PREFIX: &str = "hpk8s:";
/// How long a superseded token keeps working by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(15 * 60);
/// Attempts at a token id that is not taken yet.
const CREATE_ATTEMPTS: usize = 3;

/// The endpoint of the bootstrap-token Secrets, for messages.
fn secrets_endpoint() -> String {
    format!("/api/v1/namespaces/{SECRET_NAMESPACE}/secrets")
}

/// Errors of bootstrap-token rotation. None ever contains a token's secret.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Generating a token failed (the OS random number generator).
    #[error("cannot rotate the bootstrap token: {source}")]
    Generate {
        /// The generator's failure.
        #[source]
        source: bootstrap_token::Error,
    },
    /// Creating the token's Secret failed.
    #[error(
        "creating bootstrap token Secret {secret} (POST {endpoint}) failed: {source}; check the API server and the controller's admin kubeconfig"
    )]
    Create {
        /// `bootstrap-token-<id>`.
        secret: String,
        /// The collection posted to.
        endpoint: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Reading the bootstrap-token Secrets failed.
    #[error(
        "reading bootstrap token Secrets (GET {endpoint}) failed: {source}; check the API server and the controller's admin kubeconfig"
    )]
    Read {
        /// The path read.
        endpoint: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Deleting a superseded token's Secret failed.
    #[error(
        "deleting superseded bootstrap token Secret {secret} (DELETE {endpoint}) failed: {source}; it expires on its own, or delete it with `kubeadm token delete`"
    )]
    Delete {
        /// `bootstrap-token-<id>`.
        secret: String,
        /// The path deleted.
        endpoint: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Publishing the new join ticket failed.
    #[error("publishing the rotated join ticket failed: {source}")]
    Publish {
        /// The rendezvous's failure.
        #[source]
        source: RendezvousError,
    },
    /// Reading the published join ticket failed.
    #[error("reading the published join ticket failed: {source}")]
    Fetch {
        /// The rendezvous's failure.
        #[source]
        source: RendezvousError,
    },
    /// The new ticket does not validate (a bug: its parts come from a
    /// validated ticket and a generated token).
    #[error("the rotated join ticket is invalid: {source}; report this bug")]
    Ticket {
        /// The invalid field.
        #[source]
        source: TicketError,
    },
}

classify!(TokenError {
    Generate { source } => via source;
    Create { source, .. } => Unavailable "token_create_failed" refine class_of(source);
    Read { source, .. } => Unavailable "token_read_failed" refine class_of(source);
    Delete { source, .. } => Unavailable "token_delete_failed" refine class_of(source);
    Publish { source } => via source;
    Fetch { source } => via source;
    Ticket { .. } => Internal "token_ticket_invalid_bug";
});

impl TokenError {
    /// Whether retrying later may help (5xx, 429, unreachable API server or
    /// rendezvous).
    pub fn is_transient(&self) -> bool {
        match self {
            TokenError::Create { source, .. }
            | TokenError::Read { source, .. }
            | TokenError::Delete { source, .. } => is_transient(source),
            TokenError::Publish { source } | TokenError::Fetch { source } => source.is_transient(),
            TokenError::Generate { .. } | TokenError::Ticket { .. } => false,
        }
    }
}

/// The `description` of tokens hpk8s makes for cluster `cluster`; the
/// kubeadm config gives the first token the same one.
pub fn token_description(cluster: &str) -> String {
    format!("{DESCRIPTION_PREFIX} join token for cluster {cluster}")
}

/// Whether a bootstrap-token Secret is one hpk8s made.
pub fn is_hpk8s_token(secret: &Secret) -> bool {
    secret.type_.as_deref() == Some(SECRET_TYPE)
        && data_str(secret, "description").is_some_and(|d| d.starts_with(DESCRIPTION_PREFIX))
}

fn data_str<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| std::str::from_utf8(&v.0).ok());
    from_data.or_else(|| {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(String::as_str)
    })
}

/// Creates a new token from the OS random number generator as the
/// `kube-system/bootstrap-token-<id>` Secret, valid for `ttl` from `now`
/// (what `kubeadm token create` does). A taken id is drawn again.
pub async fn create_token(
    client: &Client,
    ttl: TokenTtl,
    now: SystemTime,
    cluster: &str,
) -> Result<BootstrapToken, TokenError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), SECRET_NAMESPACE);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let token = BootstrapToken::generate().map_err(|source| TokenError::Generate { source })?;
        let object = token.secret_object(ttl, now, &token_description(cluster));
        match timed(api.create(&params, &object)).await {
            Ok(_) => {
                tracing::info!(
                    token_id = token.id(),
                    ttl = %ttl,
                    "created bootstrap token {}",
                    token.secret_name()
                );
                return Ok(token);
            }
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < CREATE_ATTEMPTS => {
                tracing::debug!(token_id = token.id(), "token id taken; drawing another");
            }
            Err(source) => {
                return Err(TokenError::Create {
                    secret: token.secret_name(),
                    endpoint: secrets_endpoint(),
                    source: Box::new(source),
                });
            }
        }
    }
}

/// Rotation is due when less than half of `ttl` remains before the
/// ticket's token expires (so a published ticket always has at least half
/// its lifetime left).
pub fn rotation_due(ticket: &JoinTicket, ttl: TokenTtl, now: SystemTime) -> bool {
    let remaining = ticket
        .expires_at
        .duration_since(now)
        .unwrap_or(Duration::ZERO);
    remaining < ttl.duration() / 2
}

/// When rotation becomes due for `ticket`.
pub fn rotation_due_at(ticket: &JoinTicket, ttl: TokenTtl) -> SystemTime {
    ticket
        .expires_at
        .checked_sub(ttl.duration() / 2)
        .unwrap_or(UNIX_EPOCH)
}

/// A bootstrap-token Secret hpk8s made: its id and when it was created.
struct OwnToken {
    id: String,
    created: Option<SystemTime>,
}

/// The hpk8s-made bootstrap tokens (only ids and creation times are kept:
/// the listed Secrets hold the secrets and are dropped at once).
async fn own_tokens(client: &Client) -> Result<Vec<OwnToken>, TokenError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), SECRET_NAMESPACE);
    let params = ListParams::default().fields(&format!("type={SECRET_TYPE}"));
    let list = timed(api.list(&params))
        .await
        .map_err(|source| TokenError::Read {
            endpoint: secrets_endpoint(),
            source: Box::new(source),
        })?;
    Ok(list
        .items
        .iter()
        .filter(|s| is_hpk8s_token(s))
        .filter_map(|s| {
            let name = s.metadata.name.as_deref()?;
            let id = name.strip_prefix(SECRET_NAME_PREFIX)?.to_string();
            let created = s
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| SystemTime::from(t.0));
            Some(OwnToken { id, created })
        })
        .collect())
}

/// Deletes the hpk8s-made bootstrap tokens other than `keep_id` once a
/// newer hpk8s token (`keep_id` counts as newer than all others) has
/// existed for longer than `grace` at `now`. Tokens hpk8s did not make are
/// never touched. Returns the deleted token ids.
pub async fn delete_superseded_tokens(
    client: &Client,
    keep_id: &str,
    grace: Duration,
    now: SystemTime,
) -> Result<Vec<String>, TokenError> {
    let tokens = own_tokens(client).await?;
    let old_enough = |t: &OwnToken| {
        t.created
            .and_then(|c| now.duration_since(c).ok())
            .is_some_and(|age| age > grace)
    };
    let superseded = |t: &OwnToken| {
        t.id != keep_id
            && tokens.iter().any(|n| {
                n.id != t.id
                    && (n.id == keep_id
                        || matches!((n.created, t.created), (Some(a), Some(b)) if a > b))
                    && old_enough(n)
            })
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), SECRET_NAMESPACE);
    let mut deleted = Vec::new();
    for t in tokens.iter().filter(|t| superseded(t)) {
        let name = format!("{SECRET_NAME_PREFIX}{}", t.id);
        match timed(api.delete(&name, &DeleteParams::default())).await {
            Ok(_) => {
                tracing::info!(token_id = %t.id, kept = keep_id, "deleted superseded bootstrap token {name}");
                deleted.push(t.id.clone());
            }
            // Deleted meanwhile (the token cleaner, another run): done.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(TokenError::Delete {
                    endpoint: format!("{}/{name}", secrets_endpoint()),
                    secret: name,
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(deleted)
}

/// Whether the token `id`'s Secret exists.
async fn token_exists(client: &Client, id: &str) -> Result<bool, TokenError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), SECRET_NAMESPACE);
    let name = format!("{SECRET_NAME_PREFIX}{id}");
    timed(api.get_metadata_opt(&name))
        .await
        .map(|s| s.is_some())
        .map_err(|source| TokenError::Read {
            endpoint: format!("{}/{name}", secrets_endpoint()),
            source: Box::new(source),
        })
}

/// The published ticket. A malformed one counts as none: the controller
/// owns the rendezvous, and its next rotation publishes a good ticket.
pub(crate) async fn fetch_published(
    rendezvous: &Rendezvous,
) -> Result<Option<JoinTicket>, TokenError> {
    match rendezvous.fetch().await {
        Ok(t) => Ok(t),
        Err(e @ (RendezvousError::MalformedTicket { .. } | RendezvousError::Untrusted { .. })) => {
            tracing::warn!(error = %e, "ignoring the published join ticket; the next one published replaces it");
            Ok(None)
        }
        Err(source) => Err(TokenError::Fetch { source }),
    }
}

/// Whether `published` is a later ticket of the same cluster than
/// `current`: same cluster, API endpoint, CA pins and version (a ticket
/// anyone else wrote names another server or CA and is never adopted).
pub(crate) fn is_newer(published: &JoinTicket, current: &JoinTicket) -> bool {
    published.cluster_id == current.cluster_id
        && published.endpoint == current.endpoint
        && published.ca_pins == current.ca_pins
        && published.kubernetes_version == current.kubernetes_version
        && published.expires_at > current.expires_at
}

/// What a join ticket says besides its token: fixed for a formed cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketFields {
    /// Cluster id.
    pub cluster_id: String,
    /// API endpoint `host:port`.
    pub endpoint: String,
    /// CA pins.
    pub ca_pins: Vec<String>,
    /// The control plane's Kubernetes version.
    pub kubernetes_version: String,
}

impl TicketFields {
    /// Whether `ticket` says the same.
    fn describe(&self, ticket: &JoinTicket) -> bool {
        ticket.cluster_id == self.cluster_id
            && ticket.endpoint == self.endpoint
            && ticket.ca_pins == self.ca_pins
            && ticket.kubernetes_version == self.kubernetes_version
    }

    /// A ticket with these fields for `token`, valid `ttl` from `now`.
    fn ticket(
        &self,
        token: &BootstrapToken,
        ttl: TokenTtl,
        now: SystemTime,
    ) -> Result<JoinTicket, TokenError> {
        Ok(JoinTicket {
            version: super::join_ticket::TICKET_VERSION,
            cluster_id: self.cluster_id.clone(),
            endpoint: self.endpoint.clone(),
            token: JoinToken::parse(&token.expose_token())
                .map_err(|source| TokenError::Ticket { source })?,
            ca_pins: self.ca_pins.clone(),
            expires_at: whole_seconds(now + ttl.duration()),
            kubernetes_version: self.kubernetes_version.clone(),
        })
    }
}

/// Creates a token and publishes a ticket with it, whatever is published
/// now (`hpk8s generate-new-token`); superseded hpk8s tokens are deleted
/// once older than `grace`.
pub async fn publish_new_token(
    client: &Client,
    rendezvous: &Rendezvous,
    fields: &TicketFields,
    ttl: TokenTtl,
    grace: Duration,
    now: SystemTime,
) -> Result<JoinTicket, TokenError> {
    let token = create_token(client, ttl, now, &fields.cluster_id).await?;
    let ticket = fields.ticket(&token, ttl, now)?;
    rendezvous
        .publish(&ticket)
        .await
        .map_err(|source| TokenError::Publish { source })?;
    tracing::info!(
        token_id = token.id(),
        expires_at = %ticket.expires_at_rfc3339(),
        rendezvous = %rendezvous.location(),
        "published a join ticket with a new bootstrap token"
    );
    delete_superseded_tokens(client, ticket.token.id(), grace, now).await?;
    Ok(ticket)
}

/// What the published join ticket is worth to a controller re-run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishedTicket {
    /// It describes this cluster, is not due for rotation and its token
    /// exists: keep it.
    Current(JoinTicket),
    /// A new token and ticket are needed, for this reason.
    Replace(String),
}

/// Looks at the published ticket (read-only: one fetch, at most one GET of
/// the token's Secret).
pub async fn assess_published(
    client: &Client,
    rendezvous: &Rendezvous,
    fields: &TicketFields,
    ttl: TokenTtl,
    now: SystemTime,
) -> Result<PublishedTicket, TokenError> {
    let Some(published) = fetch_published(rendezvous).await? else {
        return Ok(PublishedTicket::Replace(
            "no usable join ticket is published".into(),
        ));
    };
    if !fields.describe(&published) {
        return Ok(PublishedTicket::Replace(
            "the published ticket names another cluster, endpoint, CA or version".into(),
        ));
    }
    if rotation_due(&published, ttl, now) {
        let left = published
            .expires_at
            .duration_since(now)
            .unwrap_or(Duration::ZERO);
        return Ok(PublishedTicket::Replace(if left.is_zero() {
            "the published ticket has expired".into()
        } else {
            format!(
                "the published ticket expires in {}",
                crate::values::time::human(left)
            )
        }));
    }
    if !token_exists(client, published.token.id()).await? {
        return Ok(PublishedTicket::Replace(
            "the published ticket's token no longer exists".into(),
        ));
    }
    Ok(PublishedTicket::Current(published))
}

/// The ticket a controller re-run publishes: the published one when it
/// still describes this cluster, is not due for rotation and its token
/// exists; otherwise a new token's. Returns the ticket and whether it is new.
pub async fn ensure_ticket(
    client: &Client,
    rendezvous: &Rendezvous,
    fields: &TicketFields,
    ttl: TokenTtl,
    grace: Duration,
    now: SystemTime,
) -> Result<(JoinTicket, bool), TokenError> {
    match assess_published(client, rendezvous, fields, ttl, now).await? {
        PublishedTicket::Current(published) => {
            tracing::info!(
                token_id = published.token.id(),
                expires_at = %published.expires_at_rfc3339(),
                "the published join ticket is current; keeping it"
            );
            Ok((published, false))
        }
        PublishedTicket::Replace(reason) => {
            tracing::info!(%reason, "publishing a join ticket with a new bootstrap token");
            let ticket = publish_new_token(client, rendezvous, fields, ttl, grace, now).await?;
            Ok((ticket, true))
        }
    }
}

/// Rotates: creates a token, publishes a ticket with it (same cluster,
/// endpoint, CA pins and Kubernetes version as `current`, expiring `ttl`
/// after `now`), then deletes superseded tokens older than `grace`.
/// Safe to re-run after a crash at any point: a newer published ticket
/// whose token exists and is not due is adopted instead of rotating again,
/// and a token created but never published is deleted as superseded.
pub async fn rotate(
    client: &Client,
    rendezvous: &Rendezvous,
    current: &JoinTicket,
    ttl: TokenTtl,
    grace: Duration,
    now: SystemTime,
) -> Result<JoinTicket, TokenError> {
    let published = fetch_published(rendezvous).await?;
    let adoptable = match published {
        Some(p) if is_newer(&p, current) && !rotation_due(&p, ttl, now) => {
            token_exists(client, p.token.id()).await?.then_some(p)
        }
        _ => None,
    };
    let ticket = match adoptable {
        Some(p) => {
            tracing::info!(
                token_id = p.token.id(),
                expires_at = %p.expires_at_rfc3339(),
                "the published join ticket was already rotated; keeping it"
            );
            p
        }
        None => {
            let token = create_token(client, ttl, now, &current.cluster_id).await?;
            let ticket = JoinTicket {
                token: JoinToken::parse(&token.expose_token())
                    .map_err(|source| TokenError::Ticket { source })?,
                expires_at: whole_seconds(now + ttl.duration()),
                ..current.clone()
            };
            rendezvous
                .publish(&ticket)
                .await
                .map_err(|source| TokenError::Publish { source })?;
            tracing::info!(
                token_id = token.id(),
                previous_token_id = current.token.id(),
                expires_at = %ticket.expires_at_rfc3339(),
                rendezvous = %rendezvous.location(),
                "rotated the bootstrap token and published a new join ticket"
            );
            ticket
        }
    };
    delete_superseded_tokens(client, ticket.token.id(), grace, now).await?;
    Ok(ticket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(expires_at: SystemTime) -> JoinTicket {
        JoinTicket {
            version: super::super::join_ticket::TICKET_VERSION,
            cluster_id: "c1".into(),
            endpoint: "10.0.0.1:6443".into(),
            token: JoinToken::parse("abcdef.0123456789abcdef").unwrap(),
            ca_pins: vec![format!("sha256:{}", "ab".repeat(32))],
            expires_at,
            kubernetes_version: "1.34.1".into(),
        }
    }

    #[test]
    fn rotation_is_due_with_less_than_half_the_ttl_left() {
        let ttl = TokenTtl::new(Duration::from_secs(3600)).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |left: u64| ticket(now + Duration::from_secs(left));
        assert!(!rotation_due(&at(3600), ttl, now));
        assert!(!rotation_due(&at(1800), ttl, now), "exactly half left");
        assert!(rotation_due(&at(1799), ttl, now));
        assert!(rotation_due(&at(0), ttl, now));
        assert!(rotation_due(
            &ticket(now - Duration::from_secs(5)),
            ttl,
            now
        ));
        assert_eq!(
            rotation_due_at(&at(3600), ttl),
            now + Duration::from_secs(1800)
        );
    }

    #[test]
    fn the_description_is_recognised() {
        let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let ttl = TokenTtl::default();
        let ours = token.secret_object(ttl, UNIX_EPOCH, &token_description("ml"));
        assert!(is_hpk8s_token(&ours));
        let theirs = token.secret_object(ttl, UNIX_EPOCH, "made by kubeadm token create");
        assert!(!is_hpk8s_token(&theirs));
    }
}
