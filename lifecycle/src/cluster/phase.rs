//! Phase `cluster`: the controller forms the cluster, workers join it.
//!
//! Controller ([`super::controller`]): `kubeadm init` once, the join ticket
//! published, the addons applied, then every expected Node watched until
//! Ready and labelled. Worker ([`super::worker`]): wait for a usable join
//! ticket, then `kubeadm join`. A login node that does not join has nothing
//! to do here.
//!
//! A dry run ([`plan`]) makes no remote call: it renders and checks the
//! kubeadm documents (so a CIDR too small for the cluster is refused before
//! anything changes) and describes the rest.

use std::path::PathBuf;

use super::kubeadm::{self, Membership};
use super::kubeadm_config::{self, KubeadmVersion};
use super::rendezvous::Rendezvous;
use crate::Error;
use crate::config::Config;
use crate::host::{CommandError, Host};
use crate::identity::{NodeIdentity, Role};
use crate::plan::{Plan, StepPlan};
use crate::state::{State, now_unix};

/// Phase name in plans and the state file.
pub const PHASE: &str = "cluster";

/// What the cluster phase works with.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The node.
    pub host: &'a Host,
    /// Effective configuration.
    pub config: &'a Config,
    /// Who this node is.
    pub identity: &'a NodeIdentity,
    /// Where the join ticket is exchanged. `None` only in a dry run, which
    /// makes no remote call.
    pub rendezvous: Option<&'a Rendezvous>,
}

impl Context<'_> {
    /// The id the join ticket and the default secret name carry: the
    /// HyperPod cluster id, else the cluster's name.
    pub fn cluster_key(&self) -> &str {
        cluster_key(self.identity)
    }

    pub(super) fn rendezvous(&self) -> Result<&Rendezvous, ClusterError> {
        self.rendezvous.ok_or(ClusterError::NoRendezvous)
    }
}

/// The id the join ticket and the default secret name carry.
pub fn cluster_key(identity: &NodeIdentity) -> &str {
    identity
        .cluster
        .id
        .as_deref()
        .unwrap_or(&identity.cluster.name)
}

/// Errors of the cluster phase itself (exit codes 190–200).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// kubeadm is not installed.
    #[error(
        "kubeadm is not installed on this node; run `hpk8s bootstrap` (phase prepare installs it) before phase cluster"
    )]
    KubeadmMissing,
    /// `kubeadm init` stopped half-way earlier.
    #[error(
        "this node holds a half-initialised control plane ({present} present, {missing} missing); start over with `{reset}`",
        present = .present.join(", "),
        missing = .missing.join(", "),
        reset = kubeadm::RESET_COMMAND
    )]
    PartialControlPlane {
        /// Control-plane files present.
        present: Vec<&'static str>,
        /// Control-plane files missing.
        missing: Vec<&'static str>,
    },
    /// The node already belongs to a cluster in another role.
    #[error(
        "this node is a {role:?} in the inventory but kubeadm already set it up as a {found} ({evidence} exists); if the role changed on purpose, run `{reset}`",
        reset = kubeadm::RESET_COMMAND
    )]
    RoleConflict {
        /// Role in the inventory.
        role: Role,
        /// What kubeadm set up.
        found: &'static str,
        /// The file proving it.
        evidence: &'static str,
    },
    /// `kubeadm init` failed.
    #[error(
        "`kubeadm init` failed: {stderr}; fix the cause, then run `{reset}` if it left files behind",
        reset = kubeadm::RESET_COMMAND
    )]
    InitFailed {
        /// The last lines kubeadm printed on stderr.
        stderr: String,
    },
    /// `kubeadm join` failed.
    #[error("`kubeadm join` to {endpoint} failed: {stderr}")]
    JoinFailed {
        /// The API endpoint of the ticket.
        endpoint: String,
        /// The last lines kubeadm printed on stderr.
        stderr: String,
    },
    /// The API server's CA is not the one the join ticket pins.
    #[error(
        "refusing to join {endpoint}: its cluster CA does not match the join ticket's CA pin ({location}); the ticket is stale or the endpoint is not this cluster's API server. Re-run `hpk8s bootstrap` on the controller to publish a fresh ticket"
    )]
    CaPinMismatch {
        /// The API endpoint of the ticket.
        endpoint: String,
        /// Where the ticket came from.
        location: String,
    },
    /// The ticket is for a different cluster.
    #[error(
        "the join ticket at {location} is for cluster `{found}`, but this node belongs to `{expected}`; check rendezvous.secret_name / rendezvous.directory"
    )]
    OtherCluster {
        /// Where the ticket came from.
        location: String,
        /// The ticket's cluster id.
        found: String,
        /// This node's cluster id.
        expected: String,
    },
    /// The worker's Kubernetes is newer than the control plane's, or too old.
    #[error(
        "this node's kubeadm {node} cannot join a control plane running Kubernetes {control_plane} (a node may be up to 3 minor versions older, never newer); set kubernetes.version to match the controller"
    )]
    VersionSkew {
        /// This node's kubeadm.
        node: String,
        /// The ticket's Kubernetes version.
        control_plane: String,
    },
    /// The admin kubeconfig cannot be used.
    #[error("cannot use the admin kubeconfig {path}: {message}")]
    AdminKubeconfig {
        /// Host path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A controller command ran before the cluster was formed here.
    #[error(
        "this node has no formed control plane ({manifest} or {admin} missing); run `hpk8s bootstrap` on the controller first",
        manifest = kubeadm::APISERVER_MANIFEST,
        admin = kubeadm::ADMIN_CONF
    )]
    NotFormed,
    /// The rendezvous is needed but none was given (programming error in a
    /// caller; the binary always builds one for a real run).
    #[error("phase cluster needs the join-ticket rendezvous; only a dry run can do without")]
    NoRendezvous,
}

impl ClusterError {
    /// Process exit code (see `docs/exit-codes.md`).
    pub fn exit_code(&self) -> u8 {
        match self {
            ClusterError::KubeadmMissing => 190,
            ClusterError::PartialControlPlane { .. } => 191,
            ClusterError::RoleConflict { .. } => 192,
            ClusterError::InitFailed { .. } => 193,
            ClusterError::JoinFailed { .. } => 194,
            ClusterError::CaPinMismatch { .. } => 195,
            ClusterError::OtherCluster { .. } => 196,
            ClusterError::VersionSkew { .. } => 197,
            ClusterError::AdminKubeconfig { .. } => 198,
            ClusterError::NoRendezvous => 200,
            ClusterError::NotFormed => 199,
        }
    }
}

/// The kubeadm version to render documents for: the installed one, or in a
/// dry run before phase prepare the configured Kubernetes version.
pub(super) fn kubeadm_version(
    cx: &Context<'_>,
    plan: Option<&mut StepPlan>,
) -> Result<KubeadmVersion, Error> {
    let installed = kubeadm::installed_version(cx.host).map_err(|e| match e {
        kubeadm::VersionError::Command(c) => Error::Command(c),
        kubeadm::VersionError::Parse(p) => Error::ClusterConfig(p),
    })?;
    match (installed, plan) {
        (Some(v), _) => Ok(v),
        (None, Some(plan)) => {
            plan.note(format!(
                "kubeadm is not installed yet; assuming kubeadm {} (kubernetes.version)",
                cx.config.kubernetes.version
            ));
            Ok(KubeadmVersion::parse(&cx.config.kubernetes.version)?)
        }
        (None, None) => Err(ClusterError::KubeadmMissing.into()),
    }
}

/// Refuses to go on when kubeadm left this node in another role or half-done.
pub(super) fn check_membership(cx: &Context<'_>) -> Result<Membership, ClusterError> {
    let found = kubeadm::membership(cx.host);
    match (&found, cx.identity.role) {
        (Membership::Partial { present, missing }, _) => Err(ClusterError::PartialControlPlane {
            present: present.clone(),
            missing: missing.clone(),
        }),
        (Membership::Worker, Role::Controller) => Err(ClusterError::RoleConflict {
            role: Role::Controller,
            found: "worker",
            evidence: kubeadm::KUBELET_CONF,
        }),
        (Membership::ControlPlane, role) if role != Role::Controller => {
            Err(ClusterError::RoleConflict {
                role,
                found: "control plane",
                evidence: kubeadm::APISERVER_MANIFEST,
            })
        }
        _ => Ok(found),
    }
}

/// What the phase would do on this node, without any remote call.
pub async fn plan(cx: &Context<'_>) -> Result<Plan, Error> {
    let steps = match cx.identity.role {
        _ if !cx.identity.joins => vec![not_joining()],
        Role::Controller => super::controller::plan(cx).await?,
        _ => super::worker::plan(cx)?,
    };
    Ok(Plan {
        phase: PHASE.into(),
        steps,
    })
}

fn not_joining() -> StepPlan {
    let mut plan = StepPlan::new("kubeadm");
    plan.note("this node does not join the cluster (login node): nothing to do");
    plan
}

/// Forms or joins the cluster, recording each finished step in the state
/// file. Returns what was done, step by step.
pub async fn apply(cx: &Context<'_>) -> Result<Plan, Error> {
    // Everything a dry run would refuse (a CIDR too small, a half-initialised
    // control plane) is refused before anything changes.
    plan(cx).await?;
    let steps = match cx.identity.role {
        _ if !cx.identity.joins => vec![not_joining()],
        Role::Controller => super::controller::apply(cx).await?,
        _ => super::worker::apply(cx).await?,
    };
    let mut state = State::load(cx.host)?;
    let phase = state.phase(PHASE);
    phase.completed = steps.iter().map(|s| s.step.clone()).collect();
    phase.finished = true;
    if steps.iter().any(|s| !s.changes.is_empty()) {
        phase.last_change_unix = Some(now_unix());
    }
    state.save(cx.host)?;
    Ok(Plan {
        phase: PHASE.into(),
        steps,
    })
}

/// Removes a file holding a token once kubeadm has read it; a failure to
/// remove is logged, not fatal (the token expires anyway).
pub(super) fn remove_secret_file(host: &Host, path: &str) {
    if let Err(e) = host.discard_secret(path) {
        tracing::warn!(path, error = %e, "could not remove a file holding a bootstrap token; remove it by hand");
    }
}

/// Renders the API endpoint every node uses.
pub(super) fn api_endpoint(cx: &Context<'_>) -> Result<String, Error> {
    Ok(kubeadm_config::api_endpoint(cx.identity, cx.config)?)
}

/// Where the join ticket is exchanged, for plans and messages (from the
/// config alone in a dry run).
pub(super) fn rendezvous_location(cx: &Context<'_>) -> String {
    match cx.rendezvous {
        Some(r) => r.location(),
        None => match (&cx.config.rendezvous.kind, &cx.config.rendezvous.directory) {
            (crate::config::RendezvousKind::Directory, Some(d)) => {
                format!("file {}", d.join(super::rendezvous::TICKET_FILE).display())
            }
            _ => format!(
                "secret {}",
                cx.config.rendezvous.secret_name.clone().unwrap_or_else(|| {
                    super::rendezvous::default_secret_name(cx.cluster_key())
                })
            ),
        },
    }
}

/// Runs `cmd` on a blocking thread: kubeadm takes seconds to minutes and
/// must not stall the runtime's other tasks (progress logging, signals).
pub(super) async fn run_blocking(
    cx: &Context<'_>,
    cmd: &crate::host::Cmd,
) -> Result<(), CommandError> {
    let host = cx.host.clone();
    let cmd = cmd.clone();
    tokio::task::spawn_blocking(move || host.run(&cmd).map(|_| ()))
        .await
        .unwrap_or_else(|e| {
            Err(CommandError::Spawn {
                command: "kubeadm".into(),
                source: std::io::Error::other(e.to_string()),
            })
        })
}
