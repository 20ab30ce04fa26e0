//! What the operator commands share: the kubeconfig, the cluster (its
//! instance inventory), the output format, progress on a terminal.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use lifecycle::aws::sagemaker::{SageMaker, parse_cluster_arn};
use lifecycle::identity::{Role, TopologySource};
use lifecycle::kube::client::{self as kube_client, Credential, Retries};
use lifecycle::ops::inventory::{Instances, static_instances};

use super::node::{Local, Node};
use super::{Cli, Output};

/// Common arguments of the operator commands.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Kubeconfig with cluster-admin rights (default: $KUBECONFIG, else the
    /// controller's /etc/kubernetes/admin.conf under --root).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The HyperPod cluster, by name or ARN (the region comes from the
    /// ARN, else AWS_REGION). Default: the cluster of this node's config
    /// (resource_config.json on HyperPod, the node list of a static one).
    #[arg(long, env = "HPK8S_CLUSTER")]
    pub cluster: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// A connected operator command.
pub struct Connected {
    /// Admin client (kube's own retries off: evictions see 429 at once).
    pub client: kube::Client,
    /// Where instances come from.
    pub instances: Instances,
    /// Controller groups from the config, when it could be read.
    pub controller_groups: Vec<String>,
    /// The node, when its identity resolved (for the join ticket).
    pub node: Option<Node>,
    /// The host seams.
    pub host: lifecycle::host::Host,
}

/// Connects to the cluster and its inventory.
pub async fn connect(cli: &Cli, args: &ClusterArgs) -> anyhow::Result<Connected> {
    let local = Local::load(cli)?;
    let kubeconfig = args.kubeconfig.clone().or_else(|| {
        std::env::var_os("KUBECONFIG")
            .map(PathBuf::from)
            .and_then(|p| std::env::split_paths(&p).next())
    });
    let client = match &kubeconfig {
        Some(path) => kube_client::from_kubeconfig_with(path, path, Retries::Caller).await,
        None => kube_client::client_with(&local.host, Credential::Admin, Retries::Caller).await,
    }
    .map_err(lifecycle::Error::from)?;
    // The node's identity gives the cluster and the controller groups;
    // with --cluster it is optional.
    let node = match Node::load(cli).await {
        Ok(n) => Some(n),
        Err(e) => {
            if args.cluster.is_none() {
                tracing::warn!(error = %e, "this node's identity is unknown: no instance inventory unless --cluster");
            }
            None
        }
    };
    let controller_groups = node
        .as_ref()
        .map(|n| {
            n.identity
                .groups
                .iter()
                .filter(|g| g.role == Role::Controller)
                .map(|g| g.name.clone())
                .collect()
        })
        .unwrap_or_default();
    let host = &local.host;
    let hyperpod = |cluster: String, region: Option<String>| async move {
        let sdk = lifecycle::aws::sdk_config_in(host, region)
            .await
            .map_err(lifecycle::Error::from)?;
        anyhow::Ok(Instances::HyperPod(SageMaker::new(&sdk, &cluster)))
    };
    let instances = match (&args.cluster, &node) {
        (Some(c), _) => {
            let region = parse_cluster_arn(c).map(|(_, r)| r);
            hyperpod(c.clone(), region).await?
        }
        (None, Some(n)) if n.identity.source == TopologySource::Hyperpod => {
            let c = &n.identity.cluster;
            match c.arn.clone().or_else(|| c.id.clone()) {
                Some(cluster) => hyperpod(cluster, n.identity.region.clone()).await?,
                None => Instances::None,
            }
        }
        (None, Some(n)) if n.identity.source == TopologySource::Static => {
            Instances::Static(static_instances(&n.identity.peers))
        }
        _ => Instances::None,
    };
    Ok(Connected {
        client,
        instances,
        controller_groups,
        node,
        host: local.host.clone(),
    })
}

/// Progress on stderr, only at a terminal.
pub fn progress() -> Box<dyn Fn(&str) + Send + Sync> {
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Box::new(move |m: &str| bar.set_message(m.to_string()))
    } else {
        Box::new(|_: &str| {})
    }
}
