//! The one way hpk8s runs external commands.
//!
//! Everything goes through [`CommandRunner`] so that each command is logged,
//! its stderr lands in the error when it fails, secrets on its command line
//! are redacted, and tests can replace it with a [`ScriptedRunner`]. Only this
//! module may spawn processes (enforced by `clippy.toml`).

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::error::class::{ExitClass, classify};

/// Errors from running a command.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started at all (missing binary, permissions).
    #[error("failed to start `{command}`: {source}")]
    Spawn {
        /// Command line, secrets redacted.
        command: String,
        /// Underlying OS error.
        #[source]
        source: std::io::Error,
    },
    /// The program ran and exited non-zero.
    #[error("`{command}` exited with status {status}: {stderr}")]
    Failed {
        /// Command line, secrets redacted.
        command: String,
        /// Exit status (-1 when killed by a signal).
        status: i32,
        /// Last lines of stderr.
        stderr: String,
    },
}

classify!(CommandError {
    Spawn { source, .. } => Host "command_not_started" refine Some(ExitClass::of_io(source, ExitClass::Host));
    Failed { .. } => Host "command_failed";
});

/// One argument of a command line, possibly secret.
#[derive(Clone, PartialEq, Eq)]
enum Arg {
    Plain(String),
    Secret(String),
}

impl Arg {
    fn value(&self) -> &str {
        match self {
            Arg::Plain(s) | Arg::Secret(s) => s,
        }
    }
    fn shown(&self) -> &str {
        match self {
            Arg::Plain(s) => s,
            Arg::Secret(_) => "<redacted>",
        }
    }
}

/// A command to run on the host: program, arguments, environment and stdin.
#[derive(Clone, PartialEq, Eq)]
pub struct Cmd {
    program: String,
    args: Vec<Arg>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

impl Serialize for Cmd {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            std::iter::once(self.program.as_str()).chain(self.args.iter().map(Arg::shown)),
        )
    }
}

impl Cmd {
    /// A command running `program` (an absolute path or a name looked up on PATH).
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(Arg::Plain(a.into()));
        self
    }

    /// Adds several arguments.
    pub fn args<I, S>(mut self, it: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args
            .extend(it.into_iter().map(|a| Arg::Plain(a.into())));
        self
    }

    /// Adds an argument that is never shown in logs, plans or errors.
    pub fn secret_arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(Arg::Secret(a.into()));
        self
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Feeds `data` to the command's stdin.
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Variables set for this command on top of the child environment.
    pub fn env_vars(&self) -> &[(String, String)] {
        &self.env
    }

    /// What the command reads on stdin, if anything: for runners only
    /// (it may hold credentials, so it is never shown).
    pub fn stdin_bytes(&self) -> Option<&[u8]> {
        self.stdin.as_deref()
    }

    /// The program name.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The real argument values (secrets included): for runners only.
    pub fn arg_values(&self) -> impl Iterator<Item = &str> {
        self.args.iter().map(Arg::value)
    }

    /// The command line as shown to people: shell-quoted, secrets redacted.
    pub fn display(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(Arg::shown))
            .map(quote)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Whether the shown command line starts with `words` (for scripted rules).
    pub fn starts_with(&self, words: &[&str]) -> bool {
        let mut all =
            std::iter::once(self.program.as_str()).chain(self.args.iter().map(Arg::value));
        words.iter().all(|w| all.next() == Some(*w))
    }
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What a finished command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdOutput {
    /// Exit status; -1 when killed by a signal.
    pub status: i32,
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
}

impl CmdOutput {
    /// A successful run printing `stdout`.
    pub fn ok(stdout: impl Into<Vec<u8>>) -> Self {
        Self {
            status: 0,
            stdout: stdout.into(),
            stderr: Vec::new(),
        }
    }

    /// A failed run with `status` and `stderr`.
    pub fn failed(status: i32, stderr: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            stdout: Vec::new(),
            stderr: stderr.into(),
        }
    }

    /// Stdout as (lossy) UTF-8.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The last few lines of stderr, trimmed, for error messages. Anything
    /// shaped like a bootstrap token is masked: a tool that echoes one
    /// (kubeadm does on some errors) must not put it into our error.
    pub fn stderr_tail(&self) -> String {
        let text = mask_bootstrap_tokens(&String::from_utf8_lossy(&self.stderr));
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let start = lines.len().saturating_sub(5);
        let tail = lines[start..].join(" | ");
        if tail.is_empty() {
            "(no stderr)".into()
        } else {
            tail
        }
    }
}

/// Replaces every `[a-z0-9]{6}.[a-z0-9]{16}` word (a Kubernetes bootstrap
/// token) in `text` with `<redacted token>`.
pub fn mask_bootstrap_tokens(text: &str) -> String {
    const ID: usize = 6;
    const SECRET: usize = 16;
    let token_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i + ID + 1 + SECRET <= bytes.len() {
        let starts_word = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        let end = i + ID + 1 + SECRET;
        let ends_word = end == bytes.len() || !bytes[end].is_ascii_alphanumeric();
        if starts_word
            && ends_word
            && bytes[i..i + ID].iter().all(|b| token_char(*b))
            && bytes[i + ID] == b'.'
            && bytes[i + ID + 1..end].iter().all(|b| token_char(*b))
        {
            out.push_str(&text[copied..i]);
            out.push_str("<redacted token>");
            i = end;
            copied = end;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// Runs commands on the host.
pub trait CommandRunner: Send + Sync {
    /// Runs `cmd` to completion, capturing stdout and stderr. A non-zero exit
    /// is not an error here: see [`crate::host::Host::run`].
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput, CommandError>;
}

/// The `PATH` every command gets.
pub const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Variables a command inherits from hpk8s's own environment, on purpose:
/// the proxies a private subnet needs.
pub const PASSED_VARIABLES: [&str; 6] = [
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];
/// hpk8s's own variables (`HPK8S_*`) are passed too.
const OWN_PREFIX: &str = "HPK8S_";

/// The environment a command starts with, from hpk8s's own `parent`: a
/// fixed `PATH`, `LANG=C`, the proxy variables and hpk8s's own `HPK8S_*`
/// ones; nothing else (no AWS credentials, no `LD_PRELOAD`, no locale
/// that changes what tools print).
pub fn child_environment(
    parent: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_string(), CHILD_PATH.to_string()),
        ("LANG".to_string(), "C".to_string()),
        ("LC_ALL".to_string(), "C".to_string()),
        ("HOME".to_string(), "/root".to_string()),
    ];
    env.extend(
        parent
            .into_iter()
            .filter(|(k, _)| PASSED_VARIABLES.contains(&k.as_str()) || k.starts_with(OWN_PREFIX)),
    );
    env
}

/// Runs commands for real. With a host root other than `/`, commands run
/// inside it through `chroot`, so that `--root` never touches the machine
/// we run on. Commands start from [`child_environment`], not hpk8s's own.
#[derive(Debug, Clone)]
pub struct SystemRunner {
    chroot: Option<PathBuf>,
}

impl SystemRunner {
    /// A runner for the host rooted at `root`.
    pub fn new(root: &Path) -> Self {
        let chroot = (root != Path::new("/")).then(|| root.to_path_buf());
        Self { chroot }
    }
}

impl CommandRunner for SystemRunner {
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput, CommandError> {
        use std::io::Write;
        use std::process::Stdio;

        let shown = cmd.display();
        tracing::debug!(command = %shown, "running");
        #[allow(clippy::disallowed_methods)] // this is the one place allowed to spawn
        let mut command = match &self.chroot {
            Some(root) => {
                let mut c = std::process::Command::new("chroot");
                c.arg(root).arg(cmd.program());
                c
            }
            None => std::process::Command::new(cmd.program()),
        };
        command
            .args(cmd.arg_values())
            .env_clear()
            .envs(child_environment(std::env::vars()))
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_err = |source| CommandError::Spawn {
            command: shown.clone(),
            source,
        };
        let mut child = command.spawn().map_err(spawn_err)?;
        if let (Some(data), Some(mut stdin)) = (&cmd.stdin, child.stdin.take()) {
            stdin.write_all(data).map_err(spawn_err)?;
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        let status = out.status.code().unwrap_or(-1);
        tracing::debug!(command = %shown, status, "finished");
        Ok(CmdOutput {
            status,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

type Responder = dyn Fn(&Cmd) -> CmdOutput + Send + Sync;

struct Rule {
    prefix: Vec<String>,
    respond: Arc<Responder>,
}

#[derive(Default)]
struct ScriptState {
    rules: Vec<Rule>,
    once: VecDeque<(Vec<String>, CmdOutput)>,
    calls: Vec<String>,
    fail_at: Option<usize>,
}

/// A runner for tests: answers commands from rules (matched by the longest
/// command-line prefix), records every call and can be told to fail the k-th
/// call to prove crash safety. Unknown commands fail loudly.
#[derive(Clone, Default)]
pub struct ScriptedRunner {
    state: Arc<Mutex<ScriptState>>,
}

impl fmt::Debug for ScriptedRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedRunner").finish_non_exhaustive()
    }
}

impl ScriptedRunner {
    /// An empty script: every command fails as unknown.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ScriptState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers every command starting with `prefix` with `out`.
    pub fn on(&self, prefix: &[&str], out: CmdOutput) -> &Self {
        self.on_with(prefix, move |_| out.clone())
    }

    /// Answers every command starting with `prefix` by calling `f` (which
    /// may change the fake root to mimic the command's effect).
    pub fn on_with(
        &self,
        prefix: &[&str],
        f: impl Fn(&Cmd) -> CmdOutput + Send + Sync + 'static,
    ) -> &Self {
        let prefix = prefix.iter().map(|s| s.to_string()).collect();
        self.lock().rules.push(Rule {
            prefix,
            respond: Arc::new(f),
        });
        self
    }

    /// Answers the next command starting with `prefix` with `out`, once,
    /// before any rule.
    pub fn once(&self, prefix: &[&str], out: CmdOutput) -> &Self {
        let prefix = prefix.iter().map(|s| s.to_string()).collect();
        self.lock().once.push_back((prefix, out));
        self
    }

    /// Makes the `k`-th call (0-based, counted from now on) fail with status 99.
    pub fn fail_at(&self, k: usize) -> &Self {
        let mut st = self.lock();
        st.fail_at = Some(st.calls.len() + k);
        self
    }

    /// Clears a pending `fail_at`.
    pub fn clear_failure(&self) -> &Self {
        self.lock().fail_at = None;
        self
    }

    /// Every command line run so far, secrets redacted.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Forgets recorded calls.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }
}

impl CommandRunner for ScriptedRunner {
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput, CommandError> {
        let shown = cmd.display();
        let respond = {
            let mut st = self.lock();
            let n = st.calls.len();
            st.calls.push(shown.clone());
            if st.fail_at == Some(n) {
                return Ok(CmdOutput::failed(
                    99,
                    format!("scripted failure of call {n}"),
                ));
            }
            let matches = |p: &Vec<String>| {
                cmd.starts_with(&p.iter().map(String::as_str).collect::<Vec<_>>())
            };
            if let Some(i) = st.once.iter().position(|(p, _)| matches(p)) {
                let (_, out) = st.once.remove(i).unwrap_or_default();
                return Ok(out);
            }
            st.rules
                .iter()
                .filter(|r| matches(&r.prefix))
                .max_by_key(|r| r.prefix.len())
                .map(|r| Arc::clone(&r.respond))
        };
        match respond {
            Some(f) => Ok(f(cmd)),
            None => Ok(CmdOutput::failed(
                127,
                format!("scripted runner: unexpected command `{shown}`"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_get_a_clean_environment() {
        let parent = [
            ("AWS_SECRET_ACCESS_KEY", "wJalr"),
            ("AWS_SESSION_TOKEN", "FwoG"),
            ("LD_PRELOAD", "/tmp/x.so"),
            ("PATH", "/home/me/bin:/usr/bin"),
            ("https_proxy", "http://proxy:3128"),
            ("HPK8S_FAKE_KUBEADM", "/tmp/k.json"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let env = child_environment(parent);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("AWS_SECRET_ACCESS_KEY"), None);
        assert_eq!(get("AWS_SESSION_TOKEN"), None);
        assert_eq!(get("LD_PRELOAD"), None);
        assert_eq!(get("PATH"), Some(CHILD_PATH));
        assert_eq!(get("LANG"), Some("C"));
        assert_eq!(get("https_proxy"), Some("http://proxy:3128"));
        assert_eq!(get("HPK8S_FAKE_KUBEADM"), Some("/tmp/k.json"));
        // A real child sees exactly that (plus what the command sets).
        let out = SystemRunner::new(Path::new("/"))
            .run(&Cmd::new("env").env("X_SET", "1"))
            .unwrap();
        let text = out.stdout_str();
        assert!(text.contains(&format!("PATH={CHILD_PATH}\n")), "{text}");
        assert!(
            text.contains("LANG=C\n") && text.contains("X_SET=1\n"),
            "{text}"
        );
        assert!(!text.contains("AWS_"), "{text}");
    }

    #[test]
    fn token_shaped_words_are_masked_in_stderr() {
        let out = CmdOutput::failed(
            1,
            "error: token abcdef.0123456789abcdef is invalid\n[x] kubeadm join 10.0.0.1:6443 --token zz9zz9.zz9zz9zz9zz9zz9z\n",
        );
        let tail = out.stderr_tail();
        assert!(
            !tail.contains("0123456789abcdef") && !tail.contains("zz9zz9."),
            "{tail}"
        );
        assert_eq!(tail.matches("<redacted token>").count(), 2, "{tail}");
        // Not tokens: wrong lengths, upper case, part of a longer word.
        for keep in [
            "abcdefg.0123456789abcdef",
            "ABCDEF.0123456789ABCDEF",
            "v1.34.1",
            "x-abcdef.0123456789abcdef0",
        ] {
            assert_eq!(mask_bootstrap_tokens(keep), keep);
        }
        assert_eq!(
            mask_bootstrap_tokens("abcdef.0123456789abcdef"),
            "<redacted token>"
        );
    }

    #[test]
    fn secrets_never_shown() {
        let c = Cmd::new("kubeadm")
            .arg("join")
            .secret_arg("abcdef.0123456789abcdef");
        assert_eq!(c.display(), "kubeadm join '<redacted>'");
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"["kubeadm","join","<redacted>"]"#
        );
        assert!(!format!("{c:?}").contains("0123456789"));
        assert_eq!(c.arg_values().nth(1), Some("abcdef.0123456789abcdef"));
    }

    #[test]
    fn scripted_longest_prefix_and_failure() {
        let r = ScriptedRunner::new();
        r.on(&["systemctl"], CmdOutput::ok("a"));
        r.on(&["systemctl", "is-active"], CmdOutput::ok("b"));
        assert_eq!(
            r.run(&Cmd::new("systemctl").arg("is-active").arg("x"))
                .unwrap()
                .stdout,
            b"b"
        );
        assert_eq!(
            r.run(&Cmd::new("systemctl").arg("restart")).unwrap().stdout,
            b"a"
        );
        assert_eq!(r.run(&Cmd::new("nope")).unwrap().status, 127);
        r.fail_at(0);
        assert_eq!(r.run(&Cmd::new("systemctl")).unwrap().status, 99);
        assert_eq!(r.calls().len(), 4);
    }

    #[test]
    fn system_runner_captures_stderr() {
        let r = SystemRunner::new(Path::new("/"));
        let out = r
            .run(&Cmd::new("sh").args(["-c", "echo out; echo oops >&2; exit 3"]))
            .unwrap();
        assert_eq!(out.status, 3);
        assert_eq!(out.stdout_str(), "out\n");
        assert_eq!(out.stderr_tail(), "oops");
    }
}
