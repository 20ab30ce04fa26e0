//! Step `join-ticket` (controller): a join ticket (endpoint, bootstrap
//! token, CA pin) published where workers look for it.
//!
//! Right after `kubeadm init` the ticket carries the token init was given.
//! On a formed cluster the published ticket is kept while it describes this
//! cluster, has at least half its lifetime left and its token exists;
//! otherwise a new token is created and published.

use std::time::{Duration, SystemTime};

use crate::Error;
use crate::cluster::context::Context;
use crate::cluster::error::ClusterError;
use crate::cluster::join_ticket::{JoinTicket, JoinToken, TICKET_VERSION};
use crate::cluster::kubeadm::Membership;
use crate::cluster::rendezvous::RendezvousError;
use crate::cluster::token_rotation::{self, DEFAULT_GRACE, PublishedTicket, TicketFields};
use crate::plan::{Change, StepPlan, TicketToken};
use crate::values::time::human;

/// Step name.
pub const STEP: &str = "join-ticket";

/// What publishing the ticket would do. On a formed controller this reads
/// the published ticket and its token (no change); on a fresh one it makes
/// no remote call.
pub async fn plan(cx: &Context<'_>) -> Result<StepPlan, Error> {
    let mut plan = StepPlan::new(STEP);
    let ttl = cx.config.cluster.token_ttl;
    let valid_secs = ttl.duration().as_secs();
    plan.note(format!(
        "workers join {} with the ticket at {}",
        cx.api_endpoint()?,
        cx.rendezvous_location()
    ));
    if cx.initialised_at().is_some() || cx.membership()? != Membership::ControlPlane {
        plan.push(Change::PublishTicket {
            location: cx.rendezvous_location(),
            token: TicketToken::First,
            valid_secs,
        });
        return Ok(plan);
    }
    let client = cx.admin().await?;
    let rendezvous = cx.rendezvous().await?;
    let fields = cx.ticket_fields()?;
    let now = SystemTime::now();
    match token_rotation::assess_published(client, rendezvous, &fields, ttl, now).await? {
        PublishedTicket::Current(ticket) => plan.note(format!(
            "{} holds a current join ticket (expires in {})",
            rendezvous.location(),
            human(
                ticket
                    .expires_at
                    .duration_since(now)
                    .unwrap_or(Duration::ZERO)
            )
        )),
        PublishedTicket::Replace(reason) => {
            plan.push(Change::CreateBootstrapToken {
                ttl_secs: valid_secs,
                reason,
            });
            plan.push(Change::PublishTicket {
                location: rendezvous.location(),
                token: TicketToken::New,
                valid_secs,
            });
        }
    }
    Ok(plan)
}

/// Publishes the ticket the plan describes.
pub async fn apply(cx: &Context<'_>, plan: StepPlan) -> Result<StepPlan, Error> {
    let rendezvous = cx.rendezvous().await?;
    let fields = cx.ticket_fields()?;
    let first = plan.changes.iter().any(|c| {
        matches!(
            c,
            Change::PublishTicket {
                token: TicketToken::First,
                ..
            }
        )
    });
    let ticket = if first {
        // Planned only when kubeadm init ran in this run, or will.
        let initialised = cx.initialised_at().ok_or(ClusterError::NotFormed)?;
        let ticket = first_ticket(cx, &fields, initialised)?;
        rendezvous.publish(&ticket).await?;
        ticket
    } else {
        let client = cx.admin().await?;
        token_rotation::publish_new_token(
            client,
            rendezvous,
            &fields,
            cx.config.cluster.token_ttl,
            DEFAULT_GRACE,
            SystemTime::now(),
        )
        .await?
    };
    tracing::info!(rendezvous = %rendezvous.location(), token_id = ticket.token.id(), expires_at = %ticket.expires_at_rfc3339(), "join ticket published");
    Ok(plan)
}

/// The first ticket, for the token `kubeadm init` was given at `initialised`.
fn first_ticket(
    cx: &Context<'_>,
    fields: &TicketFields,
    initialised: SystemTime,
) -> Result<JoinTicket, Error> {
    let token = cx.first_token()?;
    Ok(JoinTicket {
        version: TICKET_VERSION,
        cluster_id: fields.cluster_id.clone(),
        endpoint: fields.endpoint.clone(),
        token: JoinToken::parse(&token.expose_token())
            .map_err(|source| Error::Rendezvous(RendezvousError::InvalidTicket { source }))?,
        ca_pins: fields.ca_pins.clone(),
        expires_at: crate::values::time::whole_seconds(
            initialised + cx.config.cluster.token_ttl.duration(),
        ),
        kubernetes_version: fields.kubernetes_version.clone(),
    })
}
