//! `hpk8s generate-new-token`: a new bootstrap token and a join ticket
//! with it, published whatever the current ticket is. Only on a formed
//! controller.

use std::time::SystemTime;

use crate::Error;
use crate::cluster::context::Context;
use crate::cluster::join_ticket::JoinTicket;
use crate::cluster::token_rotation::{self, DEFAULT_GRACE};

/// Creates and publishes a new token; returns the published ticket (its
/// token is for the caller to show only when asked).
pub async fn generate_new_token(cx: &Context<'_>) -> Result<JoinTicket, Error> {
    let client = cx.formed_controller().await?;
    Ok(token_rotation::publish_new_token(
        client,
        cx.rendezvous().await?,
        &cx.ticket_fields()?,
        cx.config.cluster.token_ttl,
        DEFAULT_GRACE,
        SystemTime::now(),
    )
    .await?)
}
