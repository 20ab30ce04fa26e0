//! A [`CommandRunner`] for in-process tests of the cluster phase: `kubeadm`
//! runs the stand-in binary for a node whose root is a directory, with the
//! `--config` host path mapped under that root. Every other command is
//! refused, so a test notices when the phase runs something unexpected.

use std::path::PathBuf;
use std::sync::Mutex;

use lifecycle::host::{Cmd, CmdOutput, CommandError, CommandRunner};

/// Runs `kubeadm` as the stand-in for one node root.
pub struct StandInRunner {
    root: PathBuf,
    env: Vec<(String, String)>,
    calls: Mutex<Vec<String>>,
}

impl StandInRunner {
    /// A runner for the node rooted at `root`, with the stand-in's
    /// environment `env` (from `TestApiServer::kubeadm_env`).
    pub fn new(root: impl Into<PathBuf>, env: Vec<(String, String)>) -> Self {
        Self {
            root: root.into(),
            env,
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Every command line run so far (secrets redacted as the runner shows them).
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn map_args(&self, cmd: &Cmd) -> Vec<String> {
        let mut out = Vec::new();
        let mut next_is_path = false;
        for a in cmd.arg_values() {
            if next_is_path && a.starts_with('/') {
                out.push(
                    self.root
                        .join(a.trim_start_matches('/'))
                        .display()
                        .to_string(),
                );
            } else {
                out.push(a.to_string());
            }
            next_is_path = a == "--config";
        }
        out
    }
}

impl CommandRunner for StandInRunner {
    #[allow(clippy::disallowed_methods)] // test harness runs the stand-in binary
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput, CommandError> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(cmd.display());
        }
        if cmd.program() != "kubeadm" {
            return Ok(CmdOutput::failed(
                127,
                format!("{}: not available in this test", cmd.program()),
            ));
        }
        let out = std::process::Command::new(crate::kubeadm_bin())
            .args(self.map_args(cmd))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .map_err(|source| CommandError::Spawn {
                command: cmd.display(),
                source,
            })?;
        Ok(CmdOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}
