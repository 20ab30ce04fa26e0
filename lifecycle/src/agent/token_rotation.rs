//! The agent's bootstrap-token rotation loop on the controller: sleeps
//! until rotation is due for the published ticket, rotates, and repeats
//! (see [`crate::cluster::token_rotation`] for what one rotation does).

use std::future::Future;
use std::time::{Duration, SystemTime};

use kube::Client;

use crate::cluster::join_ticket::JoinTicket;
use crate::cluster::rendezvous::Rendezvous;
use crate::cluster::token_rotation::{
    TokenError, delete_superseded_tokens, fetch_published, is_newer, rotate, rotation_due,
    rotation_due_at,
};
use crate::kube::retry;
use crate::values::duration::TokenTtl;
use crate::values::time::rfc3339;

/// The rotation loop wakes at least this often to look at the published
/// ticket (another controller run may have rotated) and at the clock.
pub const RECHECK_EVERY: Duration = Duration::from_secs(300);
/// First pause after a transient failure of the rotation loop.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest pause after transient failures of the rotation loop.
pub const RETRY_CAP: Duration = Duration::from_secs(300);

/// For the agent on the controller: sleeps until rotation is due for the
/// current ticket, rotates, and repeats, until `shutdown` resolves. It
/// wakes at least every [`RECHECK_EVERY`] to adopt a ticket another
/// controller run published, and once `grace` after a rotation to delete
/// the superseded tokens. Transient failures (API server or rendezvous
/// unreachable, 5xx, throttling) are logged and retried with backoff, never
/// returned; other failures end it with the error.
pub async fn run_rotation(
    client: &Client,
    rendezvous: &Rendezvous,
    current: JoinTicket,
    ttl: TokenTtl,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TokenError> {
    let work = rotation_loop(client, rendezvous, current, ttl, grace);
    tokio::select! {
        () = shutdown => Ok(()),
        r = work => r,
    }
}

async fn rotation_loop(
    client: &Client,
    rendezvous: &Rendezvous,
    mut current: JoinTicket,
    ttl: TokenTtl,
    grace: Duration,
) -> Result<(), TokenError> {
    // When superseded tokens become deletable (a second past the grace, as
    // creation times are whole seconds).
    let mut cleanup_at: Option<SystemTime> = Some(SystemTime::now());
    let mut failures: u32 = 0;
    tracing::info!(
        token_id = current.token.id(),
        due_at = %rfc3339(rotation_due_at(&current, ttl)),
        "bootstrap token rotation started"
    );
    loop {
        let step = rotation_step(
            client,
            rendezvous,
            &mut current,
            ttl,
            grace,
            &mut cleanup_at,
        );
        let pause = match step.await {
            Ok(()) => {
                failures = 0;
                let now = SystemTime::now();
                let next = cleanup_at.map_or(rotation_due_at(&current, ttl), |c| {
                    c.min(rotation_due_at(&current, ttl))
                });
                next.duration_since(now)
                    .unwrap_or(Duration::ZERO)
                    .min(RECHECK_EVERY)
            }
            Err(e) if e.is_transient() => {
                failures = failures.saturating_add(1);
                let pause = retry_pause(failures);
                tracing::warn!(error = %e, failures, pause_ms = pause.as_millis(), "bootstrap token rotation failed; retrying");
                pause
            }
            Err(e) => return Err(e),
        };
        tokio::time::sleep(pause).await;
    }
}

/// One look: adopt a newer published ticket, rotate when due, delete
/// superseded tokens when their grace is over.
async fn rotation_step(
    client: &Client,
    rendezvous: &Rendezvous,
    current: &mut JoinTicket,
    ttl: TokenTtl,
    grace: Duration,
    cleanup_at: &mut Option<SystemTime>,
) -> Result<(), TokenError> {
    let now = SystemTime::now();
    match fetch_published(rendezvous).await? {
        Some(published) if is_newer(&published, current) => {
            tracing::info!(
                token_id = published.token.id(),
                expires_at = %published.expires_at_rfc3339(),
                "adopting the join ticket another controller run published"
            );
            *current = published;
            *cleanup_at = Some(now + grace + Duration::from_secs(1));
        }
        Some(published) if published == *current => {}
        other => {
            // Gone, unreadable, or not this cluster's (another endpoint or CA:
            // never adopted): the workers need this controller's ticket.
            tracing::warn!(
                found = if other.is_some() { "a join ticket this controller did not publish" } else { "no usable join ticket" },
                rendezvous = %rendezvous.location(),
                "publishing this controller's join ticket again"
            );
            rendezvous
                .publish(current)
                .await
                .map_err(|source| TokenError::Publish { source })?;
        }
    }
    if rotation_due(current, ttl, now) {
        *current = rotate(client, rendezvous, current, ttl, grace, now).await?;
        *cleanup_at = Some(now + grace + Duration::from_secs(1));
    } else if cleanup_at.is_some_and(|c| now >= c) {
        delete_superseded_tokens(client, current.token.id(), grace, now).await?;
        *cleanup_at = None;
    }
    Ok(())
}

/// Full-jitter exponential pause after `failures` consecutive failures
/// (at least half the base, so retries never spin).
fn retry_pause(failures: u32) -> Duration {
    retry::loop_pause(failures, RETRY_FIRST, RETRY_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_pauses_grow_and_are_capped() {
        assert!(retry_pause(1) <= RETRY_FIRST && retry_pause(1) >= RETRY_FIRST / 2);
        assert!(retry_pause(4) >= RETRY_FIRST * 4);
        assert!(retry_pause(40) <= RETRY_CAP && retry_pause(40) >= RETRY_CAP / 2);
    }
}
