//! The node a command works on: its host seams, configuration and
//! identity, each loaded once.

use std::sync::Arc;

use lifecycle::config::{self, Config};
use lifecycle::host::{Host, SystemInterfaces, SystemRunner};
use lifecycle::identity::{self, NodeIdentity};

use super::Cli;

/// Host and configuration (enough for commands that need no identity).
pub struct Local {
    /// The host seams.
    pub host: Host,
    /// The effective configuration.
    pub config: Config,
}

impl Local {
    /// Loads the configuration and wires the real host seams.
    pub fn load(cli: &Cli) -> Result<Local, lifecycle::Error> {
        let config = match &cli.config {
            Some(path) => Config::load(path, true)?,
            None => {
                let host_path = cli.root.join(config::DEFAULT_PATH.trim_start_matches('/'));
                Config::load(&host_path, false)?
            }
        };
        lifecycle::kube::client::set_call_deadline(std::time::Duration::from_secs(
            config.cluster.api_timeout_secs,
        ));
        let host = Host::new(
            &cli.root,
            Arc::new(SystemRunner::new(&cli.root)),
            Arc::new(SystemInterfaces),
        );
        Ok(Local { host, config })
    }
}

/// A node whose identity is resolved.
pub struct Node {
    /// The host seams.
    pub host: Host,
    /// The effective configuration.
    pub config: Config,
    /// Who this node is.
    pub identity: NodeIdentity,
}

impl Node {
    /// Loads everything a command about this node needs.
    pub async fn load(cli: &Cli) -> Result<Node, lifecycle::Error> {
        let Local { host, config } = Local::load(cli)?;
        let identity = identity::resolve(&host, &config).await?;
        Ok(Node {
            host,
            config,
            identity,
        })
    }

    /// The cluster context of this node (remote ends connected on use).
    pub fn cluster(&self) -> lifecycle::cluster::Context<'_> {
        lifecycle::cluster::Context::new(&self.host, &self.config, &self.identity)
    }

    /// The prepare-phase context of this node.
    pub fn prepare(&self) -> lifecycle::prepare::Context<'_> {
        lifecycle::prepare::Context {
            host: &self.host,
            config: &self.config,
            identity: &self.identity,
        }
    }
}
