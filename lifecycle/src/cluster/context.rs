//! What the steps of phase `cluster` (and the agent and operator commands
//! that act on the formed cluster) share: the node, and the remote ends it
//! talks to, connected lazily so that a dry run on a fresh host makes no
//! remote call at all.

use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use kube::Client;
use tokio::sync::OnceCell;

use super::bootstrap_token::BootstrapToken;
use super::ca_pin;
use super::error::ClusterError;
use super::kubeadm::{self, Membership};
use super::kubeadm_config::{self, KubeadmVersion};
use super::rendezvous::{self, Rendezvous, RendezvousError};
use super::token_rotation::TicketFields;
use crate::Error;
use crate::config::{Config, RendezvousKind};
use crate::host::{Cmd, CommandError, Host};
use crate::identity::{NodeIdentity, Role};
use crate::kube::client::{self as kube_client, Credential};
use crate::plan::StepPlan;

/// The node and its remote ends, for phase `cluster`, `hpk8s agent` and
/// the operator commands.
pub struct Context<'a> {
    /// The node.
    pub host: &'a Host,
    /// Effective configuration.
    pub config: &'a Config,
    /// Who this node is.
    pub identity: &'a NodeIdentity,
    rendezvous: OnceCell<Rendezvous>,
    admin: OnceCell<Client>,
    /// The token `kubeadm init` is given: drawn once per run, so the plan
    /// and the apply render the same documents, and the first ticket
    /// carries it.
    first_token: OnceLock<BootstrapToken>,
    /// When `kubeadm init` succeeded in this run (its token's TTL counts
    /// from then).
    initialised_at: Mutex<Option<SystemTime>>,
    /// The pre-join GPU gate, decided once per run (plan and apply agree).
    gpu_gate: OnceLock<crate::cluster::gpu_gate::Gate>,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("node", &self.identity.node_name)
            .field(
                "rendezvous",
                &self.rendezvous.get().map(Rendezvous::location),
            )
            .finish_non_exhaustive()
    }
}

impl<'a> Context<'a> {
    /// A context that connects to the rendezvous and the API server when
    /// first needed.
    pub fn new(host: &'a Host, config: &'a Config, identity: &'a NodeIdentity) -> Self {
        Context {
            host,
            config,
            identity,
            rendezvous: OnceCell::new(),
            admin: OnceCell::new(),
            first_token: OnceLock::new(),
            initialised_at: Mutex::new(None),
            gpu_gate: OnceLock::new(),
        }
    }

    /// Uses `rendezvous` instead of connecting to the configured one (tests,
    /// callers that connected already).
    pub fn with_rendezvous(self, rendezvous: Rendezvous) -> Self {
        let _ = self.rendezvous.set(rendezvous);
        self
    }

    /// Uses `client` as the admin client instead of reading the admin
    /// kubeconfig.
    pub fn with_admin_client(self, client: Client) -> Self {
        let _ = self.admin.set(client);
        self
    }

    /// The id the join ticket and the default secret name carry: the
    /// HyperPod cluster id, else the cluster's name.
    pub fn cluster_key(&self) -> &str {
        cluster_key(self.identity)
    }

    /// The pre-join GPU gate (probed once per run).
    pub fn gpu_gate(&self) -> &crate::cluster::gpu_gate::Gate {
        self.gpu_gate
            .get_or_init(|| crate::cluster::gpu_gate::decide(self.host, self.config, self.identity))
    }

    /// The join-ticket rendezvous, connected on first use.
    pub async fn rendezvous(&self) -> Result<&Rendezvous, RendezvousError> {
        self.rendezvous
            .get_or_try_init(|| {
                Rendezvous::connect(
                    self.host,
                    &self.config.rendezvous,
                    self.identity,
                    cluster_key(self.identity),
                )
            })
            .await
    }

    /// The cluster-admin client of this controller, built on first use.
    pub async fn admin(&self) -> Result<&Client, Error> {
        Ok(self
            .admin
            .get_or_try_init(|| kube_client::client(self.host, Credential::Admin))
            .await?)
    }

    /// `secret NAME` or `file PATH`, for plans and messages: from the
    /// connected rendezvous, else from the config alone (a dry run).
    pub fn rendezvous_location(&self) -> String {
        match self.rendezvous.get() {
            Some(r) => r.location(),
            None => match (
                &self.config.rendezvous.kind,
                &self.config.rendezvous.directory,
            ) {
                (RendezvousKind::Directory, Some(d)) => {
                    format!("file {}", d.join(rendezvous::TICKET_FILE).display())
                }
                _ => format!(
                    "secret {}",
                    self.config
                        .rendezvous
                        .secret_name
                        .clone()
                        .unwrap_or_else(|| rendezvous::default_secret_name(self.cluster_key()))
                ),
            },
        }
    }

    /// The API endpoint every node uses.
    pub fn api_endpoint(&self) -> Result<String, Error> {
        Ok(kubeadm_config::api_endpoint(self.identity, self.config)?)
    }

    /// The token `kubeadm init` is given in this run.
    pub fn first_token(&self) -> Result<&BootstrapToken, Error> {
        if let Some(t) = self.first_token.get() {
            return Ok(t);
        }
        let drawn = BootstrapToken::generate().map_err(|e| Error::ClusterConfig(e.into()))?;
        Ok(self.first_token.get_or_init(|| drawn))
    }

    /// Records that `kubeadm init` succeeded (at `at`) in this run.
    pub fn mark_initialised(&self, at: SystemTime) {
        if let Ok(mut g) = self.initialised_at.lock() {
            *g = Some(at);
        }
    }

    /// When `kubeadm init` succeeded in this run, if it did.
    pub fn initialised_at(&self) -> Option<SystemTime> {
        self.initialised_at.lock().ok().and_then(|g| *g)
    }

    /// The kubeadm version to render documents for: the installed one, or
    /// in a dry run before phase prepare (noted in `plan`) the configured
    /// Kubernetes version.
    pub fn kubeadm_version(&self, plan: Option<&mut StepPlan>) -> Result<KubeadmVersion, Error> {
        let installed = kubeadm::installed_version(self.host).map_err(|e| match e {
            kubeadm::VersionError::Command(c) => Error::Command(c),
            kubeadm::VersionError::Parse(p) => Error::ClusterConfig(p),
        })?;
        match (installed, plan) {
            (Some(v), _) => Ok(v),
            (None, Some(plan)) => {
                plan.note(format!(
                    "kubeadm is not installed yet; assuming kubeadm {} (kubernetes.version)",
                    self.config.kubernetes.version
                ));
                Ok(KubeadmVersion::parse(&self.config.kubernetes.version)?)
            }
            (None, None) => Err(ClusterError::KubeadmMissing.into()),
        }
    }

    /// What kubeadm left here, refusing to go on when it set this node up
    /// in another role or stopped half-way.
    pub fn membership(&self) -> Result<Membership, ClusterError> {
        let found = kubeadm::membership(self.host);
        match (&found, self.identity.role) {
            (Membership::Partial { present, missing }, _) => {
                Err(ClusterError::PartialControlPlane {
                    present: present.clone(),
                    missing: missing.clone(),
                })
            }
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

    /// The admin client of a controller whose `kubeadm init` finished.
    pub async fn formed_controller(&self) -> Result<&Client, Error> {
        match self.membership()? {
            Membership::ControlPlane => self.admin().await,
            _ => Err(ClusterError::NotFormed.into()),
        }
    }

    /// What this cluster's join tickets say besides the token (controller).
    pub fn ticket_fields(&self) -> Result<TicketFields, Error> {
        let pem = self.host.read_opt(kubeadm::CA_CERT)?.ok_or_else(|| {
            ClusterError::PartialControlPlane {
                present: vec![kubeadm::APISERVER_MANIFEST],
                missing: vec![kubeadm::CA_CERT],
            }
        })?;
        Ok(TicketFields {
            cluster_id: self.cluster_key().to_string(),
            endpoint: self.api_endpoint()?,
            ca_pins: vec![ca_pin::ca_pin(&pem)?],
            kubernetes_version: self
                .config
                .kubernetes
                .version
                .trim_start_matches('v')
                .to_string(),
        })
    }

    /// Runs `cmd` on a blocking thread: kubeadm takes seconds to minutes
    /// and must not stall the runtime's other tasks (progress logging,
    /// signals).
    pub async fn run_blocking(&self, cmd: &Cmd) -> Result<(), CommandError> {
        let host = self.host.clone();
        let cmd = cmd.clone();
        let program = cmd.display();
        tokio::task::spawn_blocking(move || host.run(&cmd).map(|_| ()))
            .await
            .unwrap_or_else(|e| {
                Err(CommandError::Spawn {
                    command: program,
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }

    /// Removes a file holding a token once kubeadm has read it; a failure
    /// to remove is logged, not fatal (the token expires anyway).
    pub fn remove_secret_file(&self, path: &str) {
        if let Err(e) = self.host.discard_secret(path) {
            tracing::warn!(path, error = %e, "could not remove a file holding a bootstrap token; remove it by hand");
        }
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
