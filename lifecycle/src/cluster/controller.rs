//! The controller forms the cluster: `kubeadm init` once, the join ticket
//! published, the addons applied, the expected Nodes waited for and
//! labelled.
//!
//! Re-running on a formed controller skips `init`, re-publishes a ticket
//! (reusing the published one while its token is fresh) and re-applies the
//! addons, which server-side apply makes a no-op when nothing changed.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, SystemTime};

use futures::FutureExt as _;

use kube::Client;
use serde::{Deserialize, Serialize};

use super::addons::{self, AddonSettings};
use super::bootstrap_token::BootstrapToken;
use super::ca_pin;
use super::join_ticket::{JoinTicket, JoinToken, TICKET_VERSION};
use super::kubeadm::{self, Membership};
use super::kubeadm_config;
use super::nodes;
use super::phase::{self, ClusterError, Context};
use super::pod_network;
use super::rendezvous::RendezvousError;
use super::token_rotation::{self, DEFAULT_GRACE, TicketFields};
use crate::Error;
use crate::hardware::Hardware;
use crate::host::{CommandError, FileMode, Host};
use crate::plan::{Change, StepPlan};

/// What `kubeadm init` was given that later runs need (non-secret).
pub const CLUSTER_RECORD: &str = "/etc/kubernetes/hpk8s/cluster.json";

/// The pod network the cluster was formed with. Recorded at `init`,
/// because re-computing it from a grown inventory could give another size
/// than the one the control plane runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// `podSubnet`.
    pub pod_subnet: String,
    /// `serviceSubnet`.
    pub service_subnet: String,
    /// `node-cidr-mask-size`.
    pub node_cidr_mask_size: u8,
}

/// What forming the cluster would do (no remote call).
pub async fn plan(cx: &Context<'_>) -> Result<Vec<StepPlan>, Error> {
    let mut init = StepPlan::new("kubeadm-init");
    let membership = phase::check_membership(cx)?;
    let pod_subnet = if membership == Membership::ControlPlane {
        init.note(format!(
            "already initialised ({} exists): kubeadm init is skipped",
            kubeadm::APISERVER_MANIFEST
        ));
        recorded_pod_subnet(cx)?
    } else {
        let version = phase::kubeadm_version(cx, Some(&mut init))?;
        // A throw-away token: the plan shows the file's size, never its bytes.
        let (_, rendered, network) = init_documents(cx, version)?;
        init.note(format!(
            "pod network {} with /{} per node: {} nodes fit, {} needed (expected plus headroom); services {}",
            network.pod_subnet,
            network.node_cidr_mask_size,
            network.capacity,
            network.nodes_needed,
            network.service_subnet
        ));
        init.push_opt(Change::write_file(
            cx.host,
            kubeadm::INIT_CONFIG,
            rendered.into_bytes(),
            FileMode::SECRET,
            true,
        )?);
        init.push(Change::run(
            kubeadm::init_command(Path::new(kubeadm::INIT_CONFIG)),
            format!(
                "initialise the control plane ({} {})",
                kubeadm_config::api_endpoint(cx.identity, cx.config)?,
                version.api_version()?.as_str()
            ),
        ));
        init.note(format!(
            "{} is removed once kubeadm has read it",
            kubeadm::INIT_CONFIG
        ));
        network.pod_subnet.to_string()
    };

    let mut ticket = StepPlan::new("join-ticket");
    ticket.note(format!(
        "publish the join ticket (endpoint {}, token valid {}) to {}",
        phase::api_endpoint(cx)?,
        cx.config.cluster.token_ttl.go_duration(),
        phase::rendezvous_location(cx)
    ));

    let settings = AddonSettings::from_config(&cx.config.addons, &pod_subnet)?;
    let mut addons_plan = StepPlan::new("addons");
    for addon in addons::built_in(&settings)? {
        addons_plan.note(format!(
            "server-side apply {} ({} objects)",
            addon.name,
            addon.objects.len()
        ));
    }
    let extra = addons::manifest_dir::read(cx.host, &settings.manifest_dir)?;
    if !extra.is_empty() {
        addons_plan.note(format!(
            "server-side apply {} objects from {}",
            extra.len(),
            settings.manifest_dir.display()
        ));
    }

    let mut nodes = StepPlan::new("nodes");
    nodes.note(format!(
        "wait for the {} expected nodes to be Ready, then label them",
        cx.identity.expected_nodes
    ));
    Ok(vec![init, ticket, addons_plan, nodes])
}

/// The pod subnet of a formed cluster: recorded at `init`, else (a cluster
/// formed by an older hpk8s) what the inventory gives now.
fn recorded_pod_subnet(cx: &Context<'_>) -> Result<String, Error> {
    if let Some(text) = cx.host.read_string_opt(CLUSTER_RECORD)? {
        if let Ok(record) = serde_json::from_str::<ClusterRecord>(&text) {
            return Ok(record.pod_subnet);
        }
        tracing::warn!(
            path = CLUSTER_RECORD,
            "unreadable cluster record; re-computing the pod network"
        );
    }
    let network = pod_network::plan(
        &cx.config.cluster,
        cx.identity.expected_nodes,
        &cx.identity.node_addresses,
    )
    .map_err(|e| Error::ClusterConfig(e.into()))?;
    Ok(network.pod_subnet.to_string())
}

/// Forms the cluster (or brings a formed one up to date).
pub async fn apply(cx: &Context<'_>) -> Result<Vec<StepPlan>, Error> {
    let mut init = StepPlan::new("kubeadm-init");
    let fresh_token = match phase::check_membership(cx)? {
        Membership::ControlPlane => {
            init.note("already initialised: kubeadm init skipped");
            None
        }
        _ => Some(kubeadm_init(cx, &mut init).await?),
    };
    restrict_admin_kubeconfig(cx.host)?;
    let client = admin_client(cx.host).await?;

    let mut ticket_step = StepPlan::new("join-ticket");
    let rendezvous = cx.rendezvous()?;
    let fields = ticket_fields(cx)?;
    let now = SystemTime::now();
    let ttl = cx.config.cluster.token_ttl;
    let ticket = match fresh_token {
        Some((token, expires_at)) => {
            let ticket = first_ticket(&fields, &token, expires_at)?;
            rendezvous.publish(&ticket).await?;
            ticket
        }
        None => {
            token_rotation::ensure_ticket(&client, rendezvous, &fields, ttl, DEFAULT_GRACE, now)
                .await?
                .0
        }
    };
    ticket_step.note(format!(
        "{} holds a ticket for token {} (expires {})",
        rendezvous.location(),
        ticket.token.id(),
        ticket.expires_at_rfc3339()
    ));
    tracing::info!(rendezvous = %rendezvous.location(), token_id = ticket.token.id(), expires_at = %ticket.expires_at_rfc3339(), "join ticket published");

    let mut addons_step = StepPlan::new("addons");
    let settings = AddonSettings::from_config(&cx.config.addons, &recorded_pod_subnet(cx)?)?;
    let report = addons::apply::apply_all(&client, cx.host, &settings).await?;
    for outcome in &report.outcomes {
        addons_step.note(outcome.to_string());
    }

    let mut nodes_step = StepPlan::new("nodes");
    let expected = nodes::expected_nodes(cx.identity);
    let deadline = nodes::ready_deadline(expected.len(), &cx.config.cluster);
    let ready = nodes::wait_until_ready(&client, &expected, deadline).await?;
    let labelled = nodes::apply_controller_labels(&client, &ready).await?;
    nodes_step.note(format!(
        "{}/{} expected nodes Ready after {} s ({} more not in the inventory); labels changed on {labelled}",
        ready.ready.len(),
        expected.len(),
        ready.waited.as_secs(),
        ready.unexpected.len()
    ));

    // The DaemonSets can only roll out once nodes are there; reported,
    // never waited on beyond addons.rollout_timeout_secs.
    let rollout = addons::rollout::rollout_status(
        &client,
        &report.daemon_sets,
        settings.rollout_timeout,
        ROLLOUT_POLL,
    )
    .await?;
    for entry in &rollout.entries {
        addons_step.note(entry.to_string());
    }
    if !rollout.all_ready() {
        tracing::warn!(report = %rollout, "some addons are not rolled out yet; check `kubectl get ds -A`");
    }
    Ok(vec![init, ticket_step, addons_step, nodes_step])
}

/// How often the addons' rollout is looked at.
const ROLLOUT_POLL: Duration = Duration::from_secs(5);

/// `hpk8s generate-new-token`: a new bootstrap token and a ticket with it,
/// published whatever the current ticket is. Only on a formed controller.
pub async fn generate_new_token(cx: &Context<'_>) -> Result<JoinTicket, Error> {
    let client = formed_controller(cx).await?;
    Ok(token_rotation::publish_new_token(
        &client,
        cx.rendezvous()?,
        &ticket_fields(cx)?,
        cx.config.cluster.token_ttl,
        DEFAULT_GRACE,
        SystemTime::now(),
    )
    .await?)
}

/// `hpk8s agent` on the controller: keeps a fresh join ticket published
/// (rotating the token before it expires) and labels nodes that join later,
/// until `shutdown` resolves.
pub async fn run_agent(cx: &Context<'_>, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let client = formed_controller(cx).await?;
    let rendezvous = cx.rendezvous()?;
    let ttl = cx.config.cluster.token_ttl;
    let (ticket, _) = token_rotation::ensure_ticket(
        &client,
        rendezvous,
        &ticket_fields(cx)?,
        ttl,
        DEFAULT_GRACE,
        SystemTime::now(),
    )
    .await?;
    let shutdown = shutdown.shared();
    let rotation = token_rotation::run_rotation(
        &client,
        rendezvous,
        ticket,
        ttl,
        DEFAULT_GRACE,
        shutdown.clone(),
    );
    let labelling = nodes::label_joining_nodes(&client, shutdown);
    let (rotated, labelled) = tokio::join!(rotation, labelling);
    tracing::info!(labelled, "agent stopped");
    Ok(rotated?)
}

/// The admin client of a controller whose `kubeadm init` finished.
async fn formed_controller(cx: &Context<'_>) -> Result<Client, Error> {
    match phase::check_membership(cx)? {
        Membership::ControlPlane => Ok(admin_client(cx.host).await?),
        _ => Err(ClusterError::NotFormed.into()),
    }
}

/// Runs `kubeadm init` with a token generated here, and records the pod
/// network. Returns the token and when it expires.
async fn kubeadm_init(
    cx: &Context<'_>,
    done: &mut StepPlan,
) -> Result<(BootstrapToken, SystemTime), Error> {
    let version = phase::kubeadm_version(cx, None)?;
    let (token, rendered, network) = init_documents(cx, version)?;
    // kubeadm counts the TTL from its own start: taking `now` first makes
    // the ticket's expiry a little early, never late.
    let expires_at = SystemTime::now() + cx.config.cluster.token_ttl.duration();
    cx.host
        .write_secret(kubeadm::INIT_CONFIG, rendered.as_bytes())?;
    let cmd = kubeadm::init_command(Path::new(kubeadm::INIT_CONFIG));
    tracing::info!(endpoint = %phase::api_endpoint(cx)?, pod_subnet = %network.pod_subnet, "running kubeadm init");
    let result = phase::run_blocking(cx, &cmd).await;
    phase::remove_secret_file(cx.host, kubeadm::INIT_CONFIG);
    match result {
        Ok(()) => {}
        Err(CommandError::Failed { stderr, .. }) => {
            return Err(ClusterError::InitFailed { stderr }.into());
        }
        Err(e) => return Err(e.into()),
    }
    let record = ClusterRecord {
        pod_subnet: network.pod_subnet.to_string(),
        service_subnet: network.service_subnet.to_string(),
        node_cidr_mask_size: network.node_cidr_mask_size,
    };
    let mut text = serde_json::to_string_pretty(&record).unwrap_or_default();
    text.push('\n');
    cx.host
        .write_atomic(CLUSTER_RECORD, text.as_bytes(), FileMode::CONFIG)?;
    done.push(Change::run(cmd, "initialised the control plane"));
    Ok((token, expires_at))
}

/// A new first token and the `kubeadm init` documents carrying it, with
/// the pod network they size.
fn init_documents(
    cx: &Context<'_>,
    version: kubeadm_config::KubeadmVersion,
) -> Result<
    (
        BootstrapToken,
        kubeadm_config::Rendered,
        pod_network::PodNetwork,
    ),
    Error,
> {
    let token = BootstrapToken::generate().map_err(|e| Error::ClusterConfig(e.into()))?;
    let rendered = kubeadm_config::render_init(
        cx.identity,
        cx.config,
        &Hardware::detect(cx.host)?,
        &token,
        version,
    )?;
    let network = rendered
        .pod_network()
        .cloned()
        .expect("render_init always sizes the pod network");
    Ok((token, rendered, network))
}

/// The admin kubeconfig is a cluster-admin credential: root only.
fn restrict_admin_kubeconfig(host: &Host) -> Result<(), Error> {
    if host
        .mode_of(kubeadm::ADMIN_CONF)
        .is_some_and(|m| m & 0o077 != 0)
    {
        let bytes = host.read_opt(kubeadm::ADMIN_CONF)?.unwrap_or_default();
        host.write_secret(kubeadm::ADMIN_CONF, &bytes)?;
    }
    Ok(())
}

/// A client with the cluster-admin credential kubeadm wrote.
pub async fn admin_client(host: &Host) -> Result<Client, ClusterError> {
    let path = host.path(kubeadm::ADMIN_CONF);
    let bad = |message: String| ClusterError::AdminKubeconfig {
        path: kubeadm::ADMIN_CONF.into(),
        message,
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).map_err(|e| bad(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| bad(e.to_string()))?;
    Client::try_from(config).map_err(|e| bad(e.to_string()))
}

/// The CA pins of the cluster, from `ca.crt`.
fn ca_pins(host: &Host) -> Result<Vec<String>, Error> {
    let pem =
        host.read_opt(kubeadm::CA_CERT)?
            .ok_or_else(|| ClusterError::PartialControlPlane {
                present: vec![kubeadm::APISERVER_MANIFEST],
                missing: vec![kubeadm::CA_CERT],
            })?;
    Ok(vec![ca_pin::ca_pin(&pem)?])
}

/// What this cluster's join tickets say besides the token.
fn ticket_fields(cx: &Context<'_>) -> Result<TicketFields, Error> {
    Ok(TicketFields {
        cluster_id: cx.cluster_key().to_string(),
        endpoint: phase::api_endpoint(cx)?,
        ca_pins: ca_pins(cx.host)?,
        kubernetes_version: cx
            .config
            .kubernetes
            .version
            .trim_start_matches('v')
            .to_string(),
    })
}

/// The first ticket, for the token `kubeadm init` just created.
fn first_ticket(
    fields: &TicketFields,
    token: &BootstrapToken,
    expires_at: SystemTime,
) -> Result<JoinTicket, Error> {
    Ok(JoinTicket {
        version: TICKET_VERSION,
        cluster_id: fields.cluster_id.clone(),
        endpoint: fields.endpoint.clone(),
        token: JoinToken::parse(&token.expose_token())
            .map_err(|source| Error::Rendezvous(RendezvousError::InvalidTicket { source }))?,
        ca_pins: fields.ca_pins.clone(),
        expires_at,
        kubernetes_version: fields.kubernetes_version.clone(),
    })
}
