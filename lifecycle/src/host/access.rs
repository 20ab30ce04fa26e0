//! [`Host`]: the machine hpk8s works on, through its root, its command
//! runner and its interface addresses.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::command::{Cmd, CmdOutput, CommandError, CommandRunner};
use super::interfaces::InterfaceAddresses;

/// The machine being prepared, seen through injected seams.
#[derive(Clone)]
pub struct Host {
    root: PathBuf,
    runner: Arc<dyn CommandRunner>,
    interfaces: Arc<dyn InterfaceAddresses>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// A host rooted at `root`, running commands with `runner`.
    pub fn new(
        root: impl Into<PathBuf>,
        runner: Arc<dyn CommandRunner>,
        interfaces: Arc<dyn InterfaceAddresses>,
    ) -> Self {
        Self {
            root: root.into(),
            runner,
            interfaces,
        }
    }

    /// The host root directory (`/` on a real node).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this host is the machine we are running on (root is `/`).
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// Maps an absolute host path (`/etc/containerd/config.toml`) to where it
    /// lives under the host root.
    pub fn path(&self, host_path: impl AsRef<Path>) -> PathBuf {
        let p = host_path.as_ref();
        let relative = p.strip_prefix("/").unwrap_or(p);
        if relative.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(relative)
        }
    }

    /// The runner through which every external command goes.
    pub fn runner(&self) -> &dyn CommandRunner {
        self.runner.as_ref()
    }

    /// Runs `cmd` and fails with the command line and its stderr when it
    /// exits non-zero.
    pub fn run(&self, cmd: &Cmd) -> Result<CmdOutput, CommandError> {
        let out = self.runner.run(cmd)?;
        if out.status != 0 {
            return Err(CommandError::Failed {
                command: cmd.display(),
                status: out.status,
                stderr: out.stderr_tail(),
            });
        }
        Ok(out)
    }

    /// Addresses configured on the host's network interfaces (loopback and
    /// link-local excluded).
    pub fn interface_addresses(&self) -> Result<Vec<IpAddr>, std::io::Error> {
        self.interfaces.addresses()
    }
}

impl Host {
    /// The host name: the kernel's on a live host, `/etc/hostname` under a
    /// fake root (`localhost` when absent).
    pub fn hostname(&self) -> String {
        if self.is_live()
            && let Ok(h) = nix::unistd::gethostname()
        {
            return h.to_string_lossy().trim().to_string();
        }
        self.read_string_opt("/etc/hostname")
            .ok()
            .flatten()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".into())
    }
}
