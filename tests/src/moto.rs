//! moto (a local AWS API double) with hpk8s's SageMaker HyperPod extensions
//! (`tests/moto/hpk8s_moto.py`): one server per test on a free 127.0.0.1
//! port, killed on drop, plus an AWS SDK config that can only ever reach it.
//!
//! The launcher needs Python with `moto[server]`: `$HPK8S_MOTO_PYTHON` (the
//! venv `scripts/test.sh` creates with a pinned moto), else `python3`. Tests
//! guard with `harness::require(Moto::available(), ...)` so that a missing
//! moto fails under CI instead of skipping.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use serde::Deserialize;
use serde_json::{Value, json};

/// Environment variable naming the Python interpreter that has moto.
pub const PYTHON_ENV: &str = "HPK8S_MOTO_PYTHON";

/// Interpreter used when `HPK8S_MOTO_PYTHON` is not set.
const DEFAULT_PYTHON: &str = "python3";

/// How long the server may take to import moto and bind its port (a few
/// seconds when several builds share the machine's two cores).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Region used when a test does not care.
pub const DEFAULT_REGION: &str = "us-west-2";

/// A running moto server; killed when dropped.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    host: IpAddr,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// A cluster seeded through [`Moto::seed_cluster`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SeededCluster {
    /// The cluster ARN.
    pub cluster_arn: String,
    /// The cluster name.
    pub cluster_name: String,
    /// Instance ids (`i-` + 17 hex digits), in seed order.
    pub node_ids: Vec<String>,
}

fn python() -> PathBuf {
    std::env::var_os(PYTHON_ENV).map_or_else(|| PathBuf::from(DEFAULT_PYTHON), PathBuf::from)
}

fn launcher() -> PathBuf {
    crate::workspace_root().join("tests/moto/hpk8s_moto.py")
}

impl Moto {
    /// Whether the interpreter can import moto's server.
    #[allow(clippy::disallowed_methods)] // test harness launches real components
    pub fn available() -> bool {
        Command::new(python())
            .args(["-c", "import moto.server, werkzeug"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts the patched moto server on a free port and waits until it
    /// accepts connections.
    pub fn start() -> Result<Moto> {
        Self::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// Starts the server on a free port of `host`, an address of this
    /// (root) network namespace such as a test LAN's gateway, so that test
    /// nodes behind the bridge reach it.
    #[allow(clippy::disallowed_methods)] // test harness launches real components
    pub fn start_on(host: IpAddr) -> Result<Moto> {
        let port = TcpListener::bind((host, 0))
            .and_then(|l| l.local_addr())
            .with_context(|| format!("find a free {host} port for moto"))?
            .port();
        let dir = tempfile::tempdir().context("temp dir for the moto log")?;
        let log = dir.path().join("moto.log");
        // A file, not a pipe: werkzeug logs every request, and an undrained
        // pipe would stall the server.
        let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone().context("duplicate the moto log handle")?;
        let python = python();
        let child = Command::new(&python)
            .arg(launcher())
            .args(["--host", &host.to_string(), "--port", &port.to_string()])
            // Belt and braces: moto never needs real credentials or IMDS.
            .env("AWS_ACCESS_KEY_ID", "hpk8s-test")
            .env("AWS_SECRET_ACCESS_KEY", "hpk8s-test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start {} {}", python.display(), launcher().display()))?;
        let mut moto = Moto {
            child,
            host,
            port,
            log,
            _dir: dir,
            http: reqwest::Client::new(),
        };
        moto.wait_ready()?;
        Ok(moto)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let addr = SocketAddr::from((self.host, self.port));
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "moto exited with {status} before it was ready:\n{}",
                    self.log_tail()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "moto did not listen on {addr} within {START_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the server's output, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `http://127.0.0.1:PORT` (`http://<host>:PORT` from [`Moto::start_on`]).
    pub fn endpoint(&self) -> String {
        format!("http://{}", SocketAddr::from((self.host, self.port)))
    }

    /// The server's whole output so far (werkzeug logs every request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Freezes the server (SIGSTOP): connections are still accepted by the
    /// kernel but never answered, as with an unreachable endpoint, until
    /// [`Moto::resume`]. Dropping a paused server still kills it.
    pub fn pause(&self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGSTOP)
    }

    /// Lets a [`Moto::pause`]d server answer again (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGCONT)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let pid = i32::try_from(self.child.id()).context("moto's pid is out of range")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
            .with_context(|| format!("send {signal} to moto (pid {pid})"))
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.endpoint());
        let response = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("read the answer of POST {url}"))?;
        if !status.is_success() {
            bail!("POST {url} answered {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Forgets every resource and every injected fault (`POST /moto-api/reset`).
    pub async fn reset(&self) -> Result<()> {
        self.post("/moto-api/reset", &json!({})).await.map(drop)
    }

    /// Seeds a HyperPod cluster from a `resource_config.json`-style document
    /// (instance ids and addresses that are missing are generated).
    pub async fn seed_cluster(&self, resource_config: &Value) -> Result<SeededCluster> {
        let answer = self.post("/hpk8s-moto/clusters", resource_config).await?;
        serde_json::from_value(answer).context("parse the seeded cluster")
    }

    /// Makes the next `count` AWS calls fail with `ThrottlingException`
    /// (only the named operations, e.g. `ListClusterNodes`, when not empty).
    pub async fn throttle_next(&self, count: u32, operations: &[&str]) -> Result<()> {
        let body = if operations.is_empty() {
            json!({ "count": count })
        } else {
            json!({ "count": count, "operations": operations })
        };
        self.post("/hpk8s-moto/throttle", &body).await.map(drop)
    }

    /// How long a replaced or rebooted node stays `Pending`: until
    /// `delay_ms` passed and it was read `pending_reads` times (default 0 ms
    /// and 1 read: the first read after the Batch call sees `Pending`).
    pub async fn set_replace_timing(&self, delay_ms: u64, pending_reads: u32) -> Result<()> {
        let body = json!({ "replace_delay_ms": delay_ms, "pending_reads": pending_reads });
        self.post("/hpk8s-moto/config", &body).await.map(drop)
    }

    /// Makes Batch reboot/replace answer `ids` with `code` (e.g.
    /// `InstanceIdInUse`); an empty list clears.
    pub async fn force_node_error(&self, code: &str, ids: &[String]) -> Result<()> {
        self.post("/hpk8s-moto/node-errors", &json!({ code: ids }))
            .await
            .map(drop)
    }

    /// Makes `operations` fail with `ValidationException` (not available
    /// for the cluster).
    pub async fn set_unsupported(&self, operations: &[&str]) -> Result<()> {
        self.post(
            "/hpk8s-moto/unsupported",
            &json!({ "operations": operations }),
        )
        .await
        .map(drop)
    }

    /// Sets instance statuses (`(id, status, message)`) and removes
    /// instances.
    pub async fn set_instances(
        &self,
        status: &[(&str, &str, &str)],
        remove: &[&str],
    ) -> Result<()> {
        let status: serde_json::Map<String, Value> = status
            .iter()
            .map(|(id, st, msg)| ((*id).to_string(), json!([st, msg])))
            .collect();
        self.post(
            "/hpk8s-moto/instances",
            &json!({ "status": status, "remove": remove }),
        )
        .await
        .map(drop)
    }

    /// After `after` calls of `operation`, the next `count` are denied
    /// (`AccessDeniedException`).
    pub async fn deny(&self, operation: &str, after: u32, count: u32) -> Result<()> {
        self.post(
            "/hpk8s-moto/deny",
            &json!({ "operation": operation, "after": after, "count": count }),
        )
        .await
        .map(drop)
    }

    /// AWS calls received so far, by operation.
    pub async fn calls(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let v = self.post("/hpk8s-moto/calls", &json!({})).await?;
        Ok(serde_json::from_value(v).unwrap_or_default())
    }

    /// Replaced nodes come back as new instances (new id and address).
    pub async fn replace_with_new_instances(&self) -> Result<()> {
        self.post("/hpk8s-moto/config", &json!({ "replace_new_instance": 1 }))
            .await
            .map(drop)
    }

    /// The Batch* calls received: (operation, node ids) in order.
    pub async fn batch_calls(&self) -> Result<Vec<(String, Vec<String>)>> {
        let v = self.post("/hpk8s-moto/batch-calls", &json!({})).await?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let ids = c["NodeIds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect();
                (c["operation"].as_str().unwrap_or_default().to_string(), ids)
            })
            .collect())
    }

    /// An AWS SDK config that reaches only this server: its endpoint, a fixed
    /// region, static test credentials, no host environment and one attempt
    /// per call (so throttling and unimplemented calls surface at once).
    pub async fn sdk_config(&self, region: &str) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .empty_test_environment()
            .test_credentials()
            .region(Region::new(region.to_owned()))
            .endpoint_url(self.endpoint())
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .load()
            .await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a test must be skipped because moto is missing (outside CI
/// only: under CI a missing moto fails the test).
pub fn skip_without_moto() -> bool {
    crate::require(
        Moto::available(),
        "python3 with moto[server] ($HPK8S_MOTO_PYTHON)",
    )
}

/// A `resource_config.json` document with `groups` of (name, instance type,
/// count) whose instances have generated ids and addresses in `10.1.0.0/16`.
pub fn resource_config(cluster_name: &str, region: &str, groups: &[(&str, &str, usize)]) -> Value {
    let mut n: usize = 0;
    let groups: Vec<Value> = groups
        .iter()
        .map(|(name, instance_type, count)| {
            let instances: Vec<Value> = (0..*count)
                .map(|i| {
                    n += 1;
                    json!({
                        "CustomerIpAddress": format!("10.1.{}.{}", n / 250, 10 + n % 250),
                        "InstanceName": format!("{name}-{}", i + 1),
                    })
                })
                .collect();
            json!({ "Name": name, "InstanceType": instance_type, "Instances": instances })
        })
        .collect();
    json!({
        "ClusterConfig": {
            "ClusterArn": format!("arn:aws:sagemaker:{region}:111122223333:cluster/kb8v11zrrpvr"),
            "ClusterName": cluster_name,
        },
        "InstanceGroups": groups,
    })
}
