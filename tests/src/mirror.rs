//! A stand-in Kubernetes binary mirror.
//!
//! [`MirrorBuilder`] writes a directory laid out exactly like `dl.k8s.io`
//! (`<root>/v<version>/bin/linux/<arch>/<binary>` plus `<binary>.sha256`)
//! holding small shell scripts that answer the version commands of kubelet,
//! kubeadm and kubectl. [`MirrorServer`] serves any directory over HTTP/1.1
//! on 127.0.0.1, records every request and can be told to answer every
//! request with an error status. The two are separate so the layout can also
//! be served another way (a `file://` URL, a server inside a container).

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// The binaries a mirror carries by default.
pub const BINARIES: [&str; 3] = ["kubelet", "kubeadm", "kubectl"];

/// The Kubernetes architecture name of the machine running the tests.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        // The agent supports only these two; anything else fails in the
        // agent with its own error, which is what a test would check.
        _ => "amd64",
    }
}

/// A stand-in for `binary` at `version` (no leading `v`): a POSIX shell
/// script answering the version queries the agent and tests use.
pub fn stand_in_script(binary: &str, version: &str) -> String {
    let body = match binary {
        // Anything else than --version: behave like a long-running daemon so
        // that a systemd unit using it stays active.
        "kubelet" => format!(
            "case \"$1\" in\n  --version) echo \"Kubernetes v{version}\" ;;\n  *) exec sleep 2147483647 ;;\nesac\n"
        ),
        "kubeadm" => format!(
            "if [ \"$1\" = version ]; then\n  case \"$*\" in\n    *short*) echo \"v{version}\" ;;\n    *) echo \"kubeadm version: &version.Info{{Major:\\\"1\\\", GitVersion:\\\"v{version}\\\", GoVersion:\\\"stand-in\\\"}}\" ;;\n  esac\n  exit 0\nfi\necho \"stand-in kubeadm v{version}: only 'version' is supported\" >&2\nexit 1\n"
        ),
        "kubectl" => format!(
            "if [ \"$1\" = version ]; then\n  case \"$*\" in\n    *json*) echo '{{\"clientVersion\":{{\"gitVersion\":\"v{version}\"}}}}' ;;\n    *) echo \"Client Version: v{version}\" ;;\n  esac\n  exit 0\nfi\necho \"stand-in kubectl v{version}: only 'version' is supported\" >&2\nexit 1\n"
        ),
        other => format!("echo \"stand-in {other} v{version}\"\n"),
    };
    format!("#!/bin/sh\n# hpk8s test stand-in for {binary} v{version}\n{body}")
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Builds a mirror tree for one Kubernetes version.
#[derive(Debug, Clone)]
pub struct MirrorBuilder {
    version: String,
    arch: String,
    binaries: Vec<String>,
    /// Binaries served from a real file instead of a stand-in script.
    files: Vec<(String, PathBuf)>,
    /// containerd and runc from this machine (`/usr/bin/containerd`, …)
    /// instead of stand-ins.
    real_containerd: bool,
}

/// The release versions the agent's defaults ask for.
fn release_versions() -> (String, String, String, String) {
    let c = lifecycle::config::Config::default();
    (
        c.containerd.version,
        c.containerd.runc_version,
        c.packages.cni_plugins_version,
        c.packages.crictl_version,
    )
}

/// Writes `<dir>/<name>` (mode 0755) for each `(name, contents)`, packs
/// `dir` into the gzipped tarball `archive`.
#[allow(clippy::disallowed_methods)] // test harness: packing a fixture with the real tar
fn tarball(archive: &Path, files: &[(String, Vec<u8>)]) -> io::Result<()> {
    let staging = tempfile::tempdir()?;
    for (name, contents) in files {
        let path = staging.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap_or(staging.path()))?;
        std::fs::write(&path, contents)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    // Byte-for-byte reproducible (no times, owners or gzip name), so two
    // mirrors built alike serve the same digests.
    let plain = staging.path().join("archive.tar");
    let status = std::process::Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
        ])
        .arg("-cf")
        .arg(&plain)
        .arg("-C")
        .arg(staging.path())
        .args(files.iter().map(|(n, _)| n.as_str()))
        .status()?;
    if !status.success() {
        return Err(io::Error::other(format!("tar exited with {status}")));
    }
    let out = std::process::Command::new("gzip")
        .args(["-n", "-c"])
        .arg(&plain)
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!("gzip exited with {}", out.status)));
    }
    std::fs::write(archive, out.stdout)
}

impl MirrorBuilder {
    /// kubelet, kubeadm and kubectl stand-ins for `version` (a leading `v`
    /// is dropped) and the host's architecture.
    pub fn new(version: &str) -> Self {
        Self {
            version: version.trim_start_matches('v').to_string(),
            arch: host_arch().to_string(),
            binaries: BINARIES.iter().map(|b| b.to_string()).collect(),
            files: Vec::new(),
            real_containerd: false,
        }
    }

    /// Packs this machine's containerd (`/usr/bin/containerd`, `ctr`,
    /// `containerd-shim-runc-v2`) and runc (`/usr/sbin/runc`) as the
    /// release assets, so a node installing them gets a working runtime.
    pub fn real_containerd(mut self) -> Self {
        self.real_containerd = true;
        self
    }

    /// Serves the file at `path` as `binary` (e.g. the real kubeadm
    /// stand-in, [`crate::kubeadm_bin`], as `kubeadm`) instead of a script.
    /// The tree gets a copy, so rebuilding the file later does not change
    /// what the mirror serves or its checksum.
    pub fn binary_file(mut self, binary: &str, path: impl Into<PathBuf>) -> Self {
        self.files.retain(|(b, _)| b != binary);
        self.files.push((binary.to_string(), path.into()));
        if !self.binaries.iter().any(|b| b == binary) {
            self.binaries.push(binary.to_string());
        }
        self
    }

    /// Another architecture (`amd64`, `arm64`).
    pub fn arch(mut self, arch: &str) -> Self {
        self.arch = arch.to_string();
        self
    }

    /// Only these binaries.
    pub fn binaries(mut self, binaries: &[&str]) -> Self {
        self.binaries = binaries.iter().map(|b| b.to_string()).collect();
        self
    }

    /// Writes the tree under `dir` (which becomes the mirror's root, i.e.
    /// what `mirror_url` points at).
    pub fn write(&self, dir: &Path) -> io::Result<MirrorLayout> {
        let layout = MirrorLayout {
            root: dir.to_path_buf(),
            version: self.version.clone(),
            arch: self.arch.clone(),
        };
        std::fs::create_dir_all(layout.binary_dir())?;
        for binary in &self.binaries {
            let contents = match self.files.iter().find(|(b, _)| b == binary) {
                Some((_, file)) => std::fs::read(file).map_err(|e| {
                    io::Error::new(e.kind(), format!("reading {}: {e}", file.display()))
                })?,
                None => stand_in_script(binary, &self.version).into_bytes(),
            };
            let path = layout.binary(binary);
            std::fs::write(&path, &contents)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            std::fs::write(
                layout.checksum_file(binary),
                format!("{}  {binary}\n", sha256_hex(&contents)),
            )?;
        }
        self.write_releases(dir)?;
        Ok(layout)
    }

    /// containerd, runc, the CNI plugins and crictl under `dir`, laid out
    /// like GitHub releases, each with its project's checksum file format.
    fn write_releases(&self, dir: &Path) -> io::Result<()> {
        let (containerd, runc, cni, crictl) = release_versions();
        let arch = &self.arch;
        let release_dir = |repo: &str, version: &str| -> io::Result<PathBuf> {
            let d = dir
                .join(repo)
                .join("releases/download")
                .join(format!("v{version}"));
            std::fs::create_dir_all(&d)?;
            Ok(d)
        };
        let script = |name: &str, version: &str| stand_in_script(name, version).into_bytes();
        let read =
            |p: &str| std::fs::read(p).map_err(|e| io::Error::new(e.kind(), format!("{p}: {e}")));

        // containerd: `<asset>.sha256sum` holds `<hex>  <asset>`.
        let d = release_dir("containerd/containerd", &containerd)?;
        let asset = format!("containerd-{containerd}-linux-{arch}.tar.gz");
        let bins = ["containerd", "ctr", "containerd-shim-runc-v2"];
        let files: Vec<(String, Vec<u8>)> = bins
            .iter()
            .map(|b| {
                let contents = if self.real_containerd {
                    read(&format!("/usr/bin/{b}"))?
                } else {
                    script(b, &containerd)
                };
                Ok((format!("bin/{b}"), contents))
            })
            .collect::<io::Result<_>>()?;
        tarball(&d.join(&asset), &files)?;
        let digest = sha256_hex(&std::fs::read(d.join(&asset))?);
        std::fs::write(
            d.join(format!("{asset}.sha256sum")),
            format!("{digest}  {asset}\n"),
        )?;

        // runc: the raw binary; `runc.sha256sum` lists every asset.
        let d = release_dir("opencontainers/runc", &runc)?;
        let binary = if self.real_containerd {
            read("/usr/sbin/runc")?
        } else {
            script("runc", &runc)
        };
        std::fs::write(d.join(format!("runc.{arch}")), &binary)?;
        std::fs::write(
            d.join("runc.sha256sum"),
            format!(
                "{}  runc-{runc}.tar.xz\n{}  runc.{arch}\n",
                "0".repeat(64),
                sha256_hex(&binary)
            ),
        )?;

        // CNI plugins: `<asset>.sha256` holds `<hex>  <asset>`.
        let d = release_dir("containernetworking/plugins", &cni)?;
        let asset = format!("cni-plugins-linux-{arch}-v{cni}.tgz");
        let files: Vec<(String, Vec<u8>)> = ["bridge", "host-local", "loopback", "portmap"]
            .iter()
            .map(|p| (format!("./{p}"), script(p, &cni)))
            .collect();
        tarball(&d.join(&asset), &files)?;
        let digest = sha256_hex(&std::fs::read(d.join(&asset))?);
        std::fs::write(
            d.join(format!("{asset}.sha256")),
            format!("{digest}  {asset}\n"),
        )?;

        // crictl: `<asset>.sha256` holds the bare digest.
        let d = release_dir("kubernetes-sigs/cri-tools", &crictl)?;
        let asset = format!("crictl-v{crictl}-linux-{arch}.tar.gz");
        tarball(
            &d.join(&asset),
            &[("crictl".into(), script("crictl", &crictl))],
        )?;
        let digest = sha256_hex(&std::fs::read(d.join(&asset))?);
        std::fs::write(d.join(format!("{asset}.sha256")), format!("{digest}\n"))?;

        // ecr-credential-provider, laid out like artifacts.k8s.io/binaries.
        let path =
            dir.join(lifecycle::config::ECR_CREDENTIAL_PROVIDER_PATH.replace("{arch}", arch));
        std::fs::create_dir_all(path.parent().unwrap_or(dir))?;
        let binary = script("ecr-credential-provider", "1.34.0");
        std::fs::write(&path, &binary)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::fs::write(
            path.with_file_name(format!("{name}.sha256")),
            format!("{}  {name}\n", sha256_hex(&binary)),
        )?;
        Ok(())
    }
}

/// A mirror tree written by [`MirrorBuilder::write`].
#[derive(Debug, Clone)]
pub struct MirrorLayout {
    root: PathBuf,
    version: String,
    arch: String,
}

impl MirrorLayout {
    /// The mirror's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The version (no leading `v`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The architecture.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// `v<version>/bin/linux/<arch>` relative to the root, as a URL path.
    pub fn url_dir(&self) -> String {
        format!("/v{}/bin/linux/{}", self.version, self.arch)
    }

    /// URL path of `binary` (`/v1.34.1/bin/linux/amd64/kubelet`).
    pub fn url_path(&self, binary: &str) -> String {
        format!("{}/{binary}", self.url_dir())
    }

    /// The directory holding the binaries.
    pub fn binary_dir(&self) -> PathBuf {
        self.root.join(self.url_dir().trim_start_matches('/'))
    }

    /// A binary's file.
    pub fn binary(&self, binary: &str) -> PathBuf {
        self.binary_dir().join(binary)
    }

    /// A binary's `.sha256` file.
    pub fn checksum_file(&self, binary: &str) -> PathBuf {
        self.binary_dir().join(format!("{binary}.sha256"))
    }

    /// The real SHA-256 of a binary.
    pub fn sha256(&self, binary: &str) -> io::Result<String> {
        Ok(sha256_hex(&std::fs::read(self.binary(binary))?))
    }

    /// Replaces a binary's `.sha256` with a well-formed but wrong digest.
    pub fn corrupt_checksum(&self, binary: &str) -> io::Result<()> {
        let real = self.sha256(binary)?;
        let wrong = if real.starts_with('0') { "1" } else { "0" }.repeat(64);
        std::fs::write(self.checksum_file(binary), format!("{wrong}  {binary}\n"))
    }

    /// Replaces a binary's `.sha256` with text that is not a digest.
    pub fn garble_checksum(&self, binary: &str) -> io::Result<()> {
        std::fs::write(self.checksum_file(binary), "<html>oops</html>\n")
    }
}

/// One request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// Request path (query string dropped).
    pub path: String,
    /// Status answered.
    pub status: u16,
    /// Whether the request carried an `Authorization` header.
    pub authorized: bool,
}

#[derive(Debug, Default)]
struct ServerState {
    log: Vec<LoggedRequest>,
    forced_status: Option<u16>,
}

/// A static HTTP/1.1 server on 127.0.0.1 serving a directory, one request
/// per connection. Runs on its own threads, so it works from synchronous
/// tests and from tests that block on a child process. Stops when dropped.
#[derive(Debug)]
pub struct MirrorServer {
    addr: SocketAddr,
    state: Arc<Mutex<ServerState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MirrorServer {
    /// Serves `root` on a free port of 127.0.0.1.
    pub fn serve(root: impl Into<PathBuf>) -> io::Result<Self> {
        Self::serve_on(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?, root)
    }

    /// Serves `root` on `listener`, e.g. one opened inside a test node's
    /// network namespace so the node reaches the mirror on its loopback.
    pub fn serve_on(listener: TcpListener, root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(ServerState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("mirror-server".into())
                .spawn(move || {
                    // Polls instead of blocking in accept(): the listener may
                    // live in another network namespace, where nothing from
                    // here could connect to wake it up for shutdown.
                    while !stop.load(Ordering::SeqCst) {
                        match listener.accept() {
                            Ok((stream, _)) => {
                                let _ = stream.set_nonblocking(false);
                                let (root, state) = (root.clone(), Arc::clone(&state));
                                std::thread::spawn(move || {
                                    let _ = handle(stream, &root, &state);
                                });
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(10)),
                        }
                    }
                })?
        };
        Ok(Self {
            addr,
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Base URL with `user:password@` (the server accepts any credentials
    /// and records that they were sent).
    pub fn url_with_credentials(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }

    /// Answers every request with `status` (e.g. 500 or 404) until
    /// called again with `None`.
    pub fn respond_with(&self, status: Option<u16>) {
        self.lock().forced_status = status;
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().log.clone()
    }

    /// Paths of every request answered so far.
    pub fn paths(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.path).collect()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.lock().log.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ServerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for MirrorServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A URL on 127.0.0.1 where nothing listens (connection refused).
pub fn unreachable_url() -> io::Result<String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(format!("http://{addr}"))
}

fn handle(stream: TcpStream, root: &Path, state: &Mutex<ServerState>) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorized = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if line
            .split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        {
            authorized = true;
        }
    }
    let mut words = request_line.split_whitespace();
    let method = words.next().unwrap_or_default().to_string();
    let target = words.next().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default().to_string();

    let forced = state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .forced_status;
    let (status, body) = match forced {
        Some(status) => (status, format!("forced status {status}\n").into_bytes()),
        None => match resolve(root, &path) {
            Some(file) if method == "GET" || method == "HEAD" => match std::fs::read(&file) {
                Ok(body) => (200, body),
                Err(_) => (404, b"not found\n".to_vec()),
            },
            Some(_) => (405, b"method not allowed\n".to_vec()),
            None => (404, b"not found\n".to_vec()),
        },
    };
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .log
        .push(LoggedRequest {
            method: method.clone(),
            path,
            status,
            authorized,
        });
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Status",
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        out.write_all(&body)?;
    }
    out.flush()
}

/// The regular file under `root` for a URL path, refusing `..`.
fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let relative = Path::new(url_path.trim_start_matches('/'));
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return None;
    }
    let file = root.join(relative);
    file.is_file().then_some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // test harness launches real components
    fn run(program: &str, args: &[&str]) -> std::process::Output {
        std::process::Command::new(program)
            .args(args)
            .output()
            .unwrap()
    }

    #[test]
    fn layout_checksums_and_stand_ins() {
        let dir = tempfile::tempdir().unwrap();
        let layout = MirrorBuilder::new("v1.33.4")
            .arch("arm64")
            .write(dir.path())
            .unwrap();
        assert_eq!(
            layout.binary("kubectl"),
            dir.path().join("v1.33.4/bin/linux/arm64/kubectl")
        );
        for binary in BINARIES {
            let sums = std::fs::read_to_string(layout.checksum_file(binary)).unwrap();
            assert_eq!(
                sums,
                format!("{}  {binary}\n", layout.sha256(binary).unwrap())
            );
        }
        let version = |binary: &str, args: &[&str]| {
            let path = layout.binary(binary);
            let mut all = vec![path.to_str().unwrap()];
            all.extend_from_slice(args);
            let out = run("sh", &all);
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(version("kubelet", &["--version"]), "Kubernetes v1.33.4\n");
        assert_eq!(version("kubeadm", &["version", "-o", "short"]), "v1.33.4\n");
        assert_eq!(
            version("kubectl", &["version", "--client"]),
            "Client Version: v1.33.4\n"
        );
        assert!(
            version("kubectl", &["version", "--client", "-o", "json"])
                .contains("\"gitVersion\":\"v1.33.4\"")
        );

        layout.corrupt_checksum("kubelet").unwrap();
        let sums = std::fs::read_to_string(layout.checksum_file("kubelet")).unwrap();
        assert!(!sums.starts_with(&layout.sha256("kubelet").unwrap()));

        let shellcheck = run("sh", &["-c", "command -v shellcheck"]).status.success();
        if crate::require(shellcheck, "shellcheck") {
            return;
        }
        for binary in BINARIES {
            let out = run("shellcheck", &[layout.binary(binary).to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{binary}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }

    #[test]
    fn server_serves_logs_and_fails_on_request() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "hello").unwrap();
        let server = MirrorServer::serve(dir.path()).unwrap();
        let get = |path: &str| {
            let mut s = TcpStream::connect(server.addr()).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            io::Read::read_to_string(&mut s, &mut out).unwrap();
            out
        };
        let ok = get("/a.txt");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nhello"), "{ok}");
        assert!(get("/missing").starts_with("HTTP/1.1 404 "));
        assert!(get("/../etc/passwd").starts_with("HTTP/1.1 404 "));
        server.respond_with(Some(500));
        assert!(get("/a.txt").starts_with("HTTP/1.1 500 "));
        let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 404, 404, 500]);
        assert_eq!(server.paths()[0], "/a.txt");
    }
}
