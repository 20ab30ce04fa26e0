//! Phase `cluster` in process: a controller and workers, each a node root
//! in a temp dir whose `kubeadm` is the stand-in, against the test API
//! server, exchanging the join ticket through a directory rendezvous.
//!
//! Covers: init once and skip on re-run, the ticket (0600, token only
//! there), workers that start before the controller, addons applied with
//! flannel's network = podSubnet, a half-initialised control plane refused
//! before anything changes, a corrupted ticket and a CA-pin mismatch
//! refused with clear errors, and the token in no log, error or state file.
//! The same flow across real hosts with the real binary is `cluster_e2e.rs`.
#![allow(clippy::unwrap_used)] // test set-up helpers fail loudly

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use harness::kube_api::TestApiServer;
use harness::kubeadm_stand_in::runner::StandInRunner;
use harness::logs::CapturedLogs;
use harness::moto::Moto;
use lifecycle::cluster::context::{Context, cluster_key};
use lifecycle::cluster::join_ticket::JoinTicket;
use lifecycle::cluster::kubeadm;
use lifecycle::cluster::phase;
use lifecycle::cluster::rendezvous::{Rendezvous, TICKET_FILE};
use lifecycle::config::Config;
use lifecycle::host::{Cmd, CmdOutput, CommandError, CommandRunner, FixedInterfaces, Host};
use lifecycle::identity::{self, NodeIdentity, Overrides};
use serde_json::Value;

const CONTROLLER: &str = "10.20.0.1";
const REGION: &str = "us-west-2";
/// The default secret name for cluster `phase-test`.
const SECRET: &str = "hyperpod-k8s-phase-test";
const WORKERS: [&str; 2] = ["10.20.0.2", "10.20.0.3"];
/// A login node: in the inventory, not in the cluster.
const LOGIN: &str = "10.20.0.9";

/// Where the bed's nodes exchange the ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Directory,
    SecretsManager,
}

/// A cluster of node roots sharing one API server and one rendezvous: a
/// directory, or moto's Secrets Manager.
struct Bed {
    api: TestApiServer,
    shared: tempfile::TempDir,
    port: u16,
    moto: Option<(Moto, aws_config::SdkConfig)>,
}

/// One node: its root, host and resolved identity.
struct Node {
    root: tempfile::TempDir,
    host: Host,
    /// Commands run so far.
    commands: Arc<AtomicUsize>,
    config: Config,
    identity: NodeIdentity,
    rendezvous: Rendezvous,
}

impl Bed {
    async fn start() -> Bed {
        Bed::start_with(Kind::Directory).await
    }

    /// A bed whose rendezvous is `kind` (callers check moto first).
    async fn start_with(kind: Kind) -> Bed {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let api = TestApiServer::start().await.unwrap();
        let port = api.url().rsplit(':').next().unwrap().parse().unwrap();
        let moto = match kind {
            Kind::Directory => None,
            Kind::SecretsManager => {
                let moto = Moto::start().unwrap();
                let sdk = moto.sdk_config(REGION).await;
                Some((moto, sdk))
            }
        };
        Bed {
            api,
            shared: tempfile::tempdir().unwrap(),
            port,
            moto,
        }
    }

    fn rendezvous_toml(&self) -> String {
        match self.moto {
            None => format!(
                "kind = \"directory\"\ndirectory = \"{}\"\n",
                self.shared.path().display()
            ),
            Some(_) => "kind = \"secrets-manager\"\n".to_string(),
        }
    }

    fn config_toml(&self) -> String {
        let mut nodes = format!(
            "[[identity.nodes]]\nname = \"ctrl-0\"\naddress = \"{CONTROLLER}\"\nrole = \"controller\"\ngroup = \"controller-machine\"\n"
        );
        nodes.push_str(&format!(
            "[[identity.nodes]]\nname = \"login-0\"\naddress = \"{LOGIN}\"\nrole = \"login\"\n"
        ));
        for (i, w) in WORKERS.iter().enumerate() {
            nodes.push_str(&format!(
                "[[identity.nodes]]\nname = \"worker-{i}\"\naddress = \"{w}\"\nrole = \"worker\"\ngroup = \"worker-group-1\"\ninstance_type = \"p5.48xlarge\"\n"
            ));
        }
        format!(
            r#"[identity]
source = "static"
cluster_name = "phase-test"
{nodes}
[cluster]
control_plane_endpoint = "127.0.0.1:{port}"
token_ttl = "1h"

[rendezvous]
{rendezvous}poll_cap_ms = 100
deadline_secs = 20

[addons]
rollout_timeout_secs = 0
"#,
            port = self.port,
            rendezvous = self.rendezvous_toml()
        )
    }

    async fn node(&self, address: &str) -> Node {
        self.node_with(address, |_| {}).await
    }

    async fn node_with(&self, address: &str, prepare_root: impl FnOnce(&Path)) -> Node {
        self.node_failing_at(address, prepare_root, usize::MAX)
            .await
    }

    /// A node of this bed with its own config text instead of the bed's.
    async fn node_configured(&self, address: &str, toml: &str) -> Node {
        let root = tempfile::tempdir().unwrap();
        let env = self.api.kubeadm_env(root.path()).unwrap();
        let commands = Arc::new(AtomicUsize::new(0));
        let host = Host::new(
            root.path(),
            Arc::new(FailAt {
                inner: StandInRunner::new(root.path(), env),
                at: usize::MAX,
                calls: commands.clone(),
            }),
            Arc::new(FixedInterfaces(vec![address.parse().unwrap()])),
        );
        let config = Config::parse(toml, Path::new("config.toml")).unwrap();
        let identity = identity::resolve_with(&host, &config, &Overrides::default())
            .await
            .unwrap();
        let rendezvous = Rendezvous::from_config(
            &config.rendezvous,
            cluster_key(&identity),
            self.moto.as_ref().map(|(_, sdk)| sdk),
        )
        .unwrap();
        Node {
            root,
            host,
            commands,
            config,
            identity,
            rendezvous,
        }
    }

    /// An `identity.source = "ec2"` config: addresses and names given (no
    /// IMDS here), a GPU spot group scaling from zero.
    fn elastic_toml(&self, role: &str, group: &str, address: &str, name: &str) -> String {
        format!(
            r#"[identity]
source = "ec2"
cluster_name = "elastic"
controllers = ["{CONTROLLER}"]

[node]
role = "{role}"
group = "{group}"
address = "{address}"
name = "{name}"

[cluster]
control_plane_endpoint = "127.0.0.1:{port}"
token_ttl = "1h"

[rendezvous]
{rendezvous}poll_cap_ms = 100
deadline_secs = 30

[addons]
rollout_timeout_secs = 0

[groups.gpu-spot]
labels = {{ "lifecycle" = "Ec2Spot", "node-role.kubernetes.io/gpu" = "" }}
taints = ["nvidia.com/gpu=true:NoSchedule"]
min_nodes = 0
max_nodes = 8
"#,
            port = self.port,
            rendezvous = self.rendezvous_toml()
        )
    }

    /// A node whose `fail_at`-th command (0-based) fails with status 99.
    async fn node_failing_at(
        &self,
        address: &str,
        prepare_root: impl FnOnce(&Path),
        fail_at: usize,
    ) -> Node {
        let root = tempfile::tempdir().unwrap();
        prepare_root(root.path());
        let env = self.api.kubeadm_env(root.path()).unwrap();
        let address: IpAddr = address.parse().unwrap();
        let commands = Arc::new(AtomicUsize::new(0));
        let host = Host::new(
            root.path(),
            Arc::new(FailAt {
                inner: StandInRunner::new(root.path(), env),
                at: fail_at,
                calls: commands.clone(),
            }),
            Arc::new(FixedInterfaces(vec![address])),
        );
        let config = Config::parse(&self.config_toml(), Path::new("config.toml")).unwrap();
        let identity = identity::resolve_with(&host, &config, &Overrides::default())
            .await
            .unwrap();
        let sdk = self.moto.as_ref().map(|(_, sdk)| sdk);
        let rendezvous =
            Rendezvous::from_config(&config.rendezvous, cluster_key(&identity), sdk).unwrap();
        Node {
            root,
            host,
            commands,
            config,
            identity,
            rendezvous,
        }
    }

    fn ticket_path(&self) -> PathBuf {
        self.shared.path().join(TICKET_FILE)
    }

    /// The published ticket's text (the secret's AWSCURRENT value).
    async fn ticket_text(&self) -> Option<String> {
        match &self.moto {
            None => std::fs::read_to_string(self.ticket_path()).ok(),
            Some((_, sdk)) => aws_sdk_secretsmanager::Client::new(sdk)
                .get_secret_value()
                .secret_id(SECRET)
                .version_stage("AWSCURRENT")
                .send()
                .await
                .ok()
                .and_then(|v| v.secret_string().map(str::to_string)),
        }
    }

    /// Replaces the published ticket with `text` (as a broken or stale
    /// controller would have).
    async fn put_ticket_text(&self, text: &str) {
        match &self.moto {
            None => std::fs::write(self.ticket_path(), text).unwrap(),
            Some((_, sdk)) => {
                aws_sdk_secretsmanager::Client::new(sdk)
                    .put_secret_value()
                    .secret_id(SECRET)
                    .secret_string(text)
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    async fn ticket(&self) -> JoinTicket {
        JoinTicket::parse(&self.ticket_text().await.unwrap()).unwrap()
    }

    async fn ticket_json(&self) -> Value {
        serde_json::from_str(&self.ticket_text().await.unwrap()).unwrap()
    }

    /// `secret NAME` or `file PATH`: how errors name the rendezvous.
    fn location(&self) -> String {
        match self.moto {
            None => self.ticket_path().display().to_string(),
            Some(_) => SECRET.to_string(),
        }
    }
}

impl Node {
    /// A context without the rendezvous: it would connect on first use.
    fn fresh_cx(&self) -> Context<'_> {
        Context::new(&self.host, &self.config, &self.identity)
    }

    fn cx(&self) -> Context<'_> {
        Context::new(&self.host, &self.config, &self.identity)
            .with_rendezvous(self.rendezvous.clone())
    }

    async fn bootstrap(&self) -> Result<lifecycle::plan::Plan, lifecycle::Error> {
        phase::apply(&self.cx()).await
    }

    fn path(&self, host_path: &str) -> PathBuf {
        self.root.path().join(host_path.trim_start_matches('/'))
    }

    fn mode(&self, host_path: &str) -> u32 {
        std::fs::metadata(self.path(host_path))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    /// Every file under the root, as text (for leak checks).
    fn all_text(&self) -> String {
        let mut out = String::new();
        let mut stack = vec![self.root.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(text) = std::fs::read(&p) {
                    out.push_str(&String::from_utf8_lossy(&text));
                }
            }
        }
        out
    }
}

/// The stand-in runner, with its `at`-th command failing (status 99).
struct FailAt {
    inner: StandInRunner,
    at: usize,
    calls: Arc<AtomicUsize>,
}

impl CommandRunner for FailAt {
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput, CommandError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == self.at {
            return Ok(CmdOutput::failed(99, "injected failure"));
        }
        self.inner.run(cmd)
    }
}

/// `admin.conf` is never removed or rewritten by hpk8s: whichever command
/// of the controller's run fails, once kubeadm has written it, it is there
/// afterwards (a kill at any point leaves it, since its mode is changed in
/// place), and a clean re-run leaves it private.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_conf_is_present_after_a_failure_at_any_command() {
    let bed = Bed::start().await;
    // The controller alone: waiting for the workers ends after a second.
    let alone = |mut node: Node| {
        node.config.cluster.nodes_ready_timeout_secs = Some(1);
        node
    };
    let clean = alone(bed.node(CONTROLLER).await);
    let _ = clean.bootstrap().await;
    let commands = clean.commands.load(Ordering::SeqCst);
    assert!(
        commands >= 2,
        "expected kubeadm version and init, got {commands}"
    );
    assert!(clean.path(kubeadm::ADMIN_CONF).exists());
    assert_eq!(clean.mode(kubeadm::ADMIN_CONF), 0o600);

    for k in 0..commands {
        let bed = Bed::start().await;
        let node = alone(bed.node_failing_at(CONTROLLER, |_| {}, k).await);
        let first = node.bootstrap().await;
        assert!(
            first.is_err(),
            "k={k}: the run went on past a failed command"
        );
        let existed = node.path(kubeadm::ADMIN_CONF).exists();
        // An operator loosening it meanwhile, or kubeadm writing it 0644.
        if existed {
            std::fs::set_permissions(
                node.path(kubeadm::ADMIN_CONF),
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
        }
        let node = Node {
            host: Host::new(
                node.root.path(),
                Arc::new(StandInRunner::new(
                    node.root.path(),
                    bed.api.kubeadm_env(node.root.path()).unwrap(),
                )),
                Arc::new(FixedInterfaces(vec![CONTROLLER.parse().unwrap()])),
            ),
            ..node
        };
        let _ = node.bootstrap().await;
        assert!(
            node.path(kubeadm::ADMIN_CONF).exists(),
            "k={k}: admin.conf is missing after a re-run (it existed: {existed})"
        );
        assert_eq!(node.mode(kubeadm::ADMIN_CONF), 0o600, "k={k}");
        assert!(
            !std::fs::read(node.path(kubeadm::ADMIN_CONF))
                .unwrap()
                .is_empty(),
            "k={k}: admin.conf is empty"
        );
    }
}

/// An API server that accepts connections and never answers: a run fails
/// at the request deadline with the server named, instead of hanging, and
/// the next run, with the server answering again, succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_api_server_fails_the_run_at_its_deadline_and_the_next_run_recovers() {
    lifecycle::kube::client::set_call_deadline(std::time::Duration::from_secs(1));
    let bed = Bed::start().await;
    let controller = formed(&bed).await;
    bed.api.inject_fault(
        "/",
        harness::kube_api::FaultKind::Delay(std::time::Duration::from_secs(3600)),
        100_000,
    );
    let started = std::time::Instant::now();
    let err = controller.bootstrap().await.unwrap_err();
    let took = started.elapsed();
    let msg = err.to_string();
    eprintln!("stalled run failed after {took:?}: [{}] {msg}", err.kind());
    assert!(
        msg.contains(&format!(
            "the API server https://127.0.0.1:{}/ did not answer within 1 s",
            bed.port
        )),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    assert!(took < std::time::Duration::from_secs(120), "{took:?}");

    bed.api.clear_faults();
    controller.bootstrap().await.unwrap();
}

/// Elastic groups: the controller's bootstrap finishes with no worker of
/// the GPU spot group (it scales from zero); three workers that join later
/// get their registration labels and taint, and the controller's agent
/// gives each the labels a kubelet may not set on itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elastic_group_scales_from_zero_and_late_workers_are_labelled() {
    let bed = Bed::start().await;
    let controller = bed
        .node_configured(
            CONTROLLER,
            &bed.elastic_toml("controller", "control-plane", CONTROLLER, "ctrl-0"),
        )
        .await;
    let started = std::time::Instant::now();
    controller.bootstrap().await.unwrap();
    eprintln!("controller formed alone in {:?}", started.elapsed());
    assert!(
        bed.api.names("nodes", None) == ["ctrl-0"],
        "{:?}",
        bed.api.names("nodes", None)
    );

    // The controller's agent runs from now on.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = {
        let controller = controller;
        tokio::spawn(async move {
            let cx = controller.cx();
            lifecycle::agent::run(&cx, async {
                let _ = stopped.await;
            })
            .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let workers = futures::future::join_all(WORKERS.iter().take(2).enumerate().map(|(i, w)| {
        let bed = &bed;
        async move {
            let name = format!("gpu-{i}");
            bed.node_configured(w, &bed.elastic_toml("worker", "gpu-spot", w, &name))
                .await
        }
    }))
    .await;
    // The third knows only what IMDS tells it: address, name, instance,
    // zone, spot.
    let imds = harness::imds::FakeImds::start();
    imds.spot()
        .set("local-ipv4", "10.20.0.4")
        .set("local-hostname", "gpu-2.internal");
    let toml = bed
        .elastic_toml("worker", "gpu-spot", "", "")
        .replace("address = \"\"\nname = \"\"\n", "")
        .replace(
            "[identity]\n",
            &format!("[identity]\nimds_endpoint = \"{}\"\n", imds.url()),
        );
    let mut workers = workers;
    workers.push(bed.node_configured("10.20.0.4", &toml).await);
    let results = futures::future::join_all(workers.iter().map(Node::bootstrap)).await;
    for r in results {
        r.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for name in ["gpu-0", "gpu-1", "gpu-2.internal"] {
        loop {
            let node = node_json(&bed.api, name);
            let labels = &node["metadata"]["labels"];
            if labels.get("node-role.kubernetes.io/gpu").is_some()
                && labels.get("node-role.kubernetes.io/worker").is_some()
            {
                assert_eq!(labels["lifecycle"], "Ec2Spot", "{node}");
                assert_eq!(labels["hpk8s.io/instance-group"], "gpu-spot", "{node}");
                assert!(
                    node["spec"]["taints"]
                        .as_array()
                        .is_some_and(|t| t.iter().any(|t| t["key"] == "nvidia.com/gpu")),
                    "{node}"
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} was not labelled by the controller's agent: {node}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    let imds_node = node_json(&bed.api, "gpu-2.internal");
    assert_eq!(
        imds_node["spec"]["providerID"], "aws:///us-west-2a/i-0123456789abcdef0",
        "{imds_node}"
    );
    assert_eq!(
        imds_node["metadata"]["labels"]["node.kubernetes.io/lifecycle"],
        "spot"
    );
    assert_eq!(
        imds_node["metadata"]["labels"]["topology.kubernetes.io/zone"],
        "us-west-2a"
    );
    let _ = stop.send(());
    agent.await.unwrap().unwrap();
}

fn node_json(api: &TestApiServer, name: &str) -> Value {
    api.get_json("nodes", "", name)
        .unwrap_or_else(|| panic!("node {name} is not registered"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_started_first_join_the_controller_and_nothing_leaks() {
    let logs = CapturedLogs::global();
    let bed = Bed::start().await;
    let controller = bed.node(CONTROLLER).await;
    let w0 = bed.node(WORKERS[0]).await;
    let w1 = bed.node(WORKERS[1]).await;

    // Workers first: they wait for the ticket the controller publishes.
    let workers = async { tokio::join!(w0.bootstrap(), w1.bootstrap()) };
    let controller_run = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        controller.bootstrap().await
    };
    let ((r0, r1), rc) = tokio::join!(workers, controller_run);
    let plan = rc.unwrap();
    r0.unwrap();
    r1.unwrap();
    let steps: Vec<&str> = plan.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(steps, ["kubeadm-init", "join-ticket", "addons", "nodes"]);

    // The control plane: admin kubeconfig root-only, no config left with the token.
    assert_eq!(controller.mode(kubeadm::ADMIN_CONF), 0o600);
    assert!(!controller.path(kubeadm::INIT_CONFIG).exists());
    for w in [&w0, &w1] {
        assert!(w.path(kubeadm::KUBELET_CONF).exists());
        assert!(
            !w.path(kubeadm::JOIN_CONFIG).exists(),
            "the join config (token) was left behind"
        );
    }

    // The ticket: 0600, this cluster, the API endpoint, the CA's pin.
    let ticket = bed.ticket().await;
    assert_eq!(
        std::fs::metadata(bed.ticket_path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(ticket.cluster_id, "phase-test");
    assert_eq!(ticket.endpoint, format!("127.0.0.1:{}", bed.port));
    assert_eq!(
        ticket.ca_pins,
        [lifecycle::cluster::ca_pin::ca_pin(bed.api.ca_pem().as_bytes()).unwrap()]
    );
    let token = ticket.token.expose().to_string();
    let token_id = ticket.token.id().to_string();
    assert!(
        bed.api
            .get_json(
                "secrets",
                "kube-system",
                &format!("bootstrap-token-{token_id}")
            )
            .is_some(),
        "the ticket's token is not a bootstrap token of the cluster"
    );

    // Registered nodes with their own labels; flannel's network = podSubnet.
    for name in ["ctrl-0", "worker-0", "worker-1"] {
        let node = node_json(&bed.api, name);
        assert!(
            node["metadata"]["labels"]["hpk8s.io/instance-group"].is_string(),
            "{node}"
        );
    }
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(controller.path(lifecycle::cluster::record::CLUSTER_RECORD))
            .unwrap(),
    )
    .unwrap();
    let cm = bed
        .api
        .get_json("configmaps", "kube-flannel", "kube-flannel-cfg")
        .unwrap();
    let net_conf: Value =
        serde_json::from_str(cm["data"]["net-conf.json"].as_str().unwrap()).unwrap();
    assert_eq!(net_conf["Network"], record["pod_subnet"]);

    // A re-run on every node changes nothing on the host.
    let again = controller.bootstrap().await.unwrap();
    assert_eq!(again.change_count(), 0, "{again}");
    for w in [&w0, &w1] {
        assert_eq!(w.bootstrap().await.unwrap().change_count(), 0);
    }

    // The token is in the ticket and the API only: no log line, plan,
    // state file or other file of any node carries it.
    let logs = logs.text();
    assert!(logs.contains("join ticket published"), "{logs}");
    assert!(!logs.contains(&token), "the token is in the logs");
    assert!(!format!("{plan}{again}").contains(&token));
    assert!(!serde_json::to_string(&plan).unwrap().contains(&token));
    for n in [&controller, &w0, &w1] {
        assert!(
            !n.all_text().contains(&token),
            "a file under {} holds the token",
            n.root.path().display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_node_neither_waits_nor_joins() {
    let bed = Bed::start().await;
    let login = bed.node(LOGIN).await;
    assert!(!login.identity.joins);
    let plan = login.bootstrap().await.unwrap();
    assert_eq!(plan.change_count(), 0, "{plan}");
    assert!(plan.to_string().contains("does not join"), "{plan}");
    assert!(!login.path(kubeadm::KUBELET_CONF).exists());
    assert!(bed.api.names("nodes", None).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_initialised_control_plane_is_refused_before_anything_changes() {
    let bed = Bed::start().await;
    let controller = bed
        .node_with(CONTROLLER, |root| {
            let manifest = root.join(kubeadm::APISERVER_MANIFEST.trim_start_matches('/'));
            std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
            std::fs::write(&manifest, "apiVersion: v1\nkind: Pod\n").unwrap();
        })
        .await;
    let before = harness::fixtures::host_root::tree_digest(controller.root.path());
    let err = controller.bootstrap().await.unwrap_err();
    assert_eq!(err.kind(), "partial_control_plane", "{err}");
    let message = err.to_string();
    assert!(message.contains("kubeadm reset -f"), "{message}");
    assert!(message.contains(kubeadm::ADMIN_CONF), "{message}");
    assert_eq!(
        harness::fixtures::host_root::tree_digest(controller.root.path()),
        before
    );
    assert!(!bed.ticket_path().exists());
}

/// Forms a one-controller cluster and returns the ticket file's text.
async fn formed(bed: &Bed) -> Node {
    let controller = bed.node(CONTROLLER).await;
    let w0 = bed.node(WORKERS[0]).await;
    let w1 = bed.node(WORKERS[1]).await;
    let (rc, r0, r1) = tokio::join!(controller.bootstrap(), w0.bootstrap(), w1.bootstrap());
    rc.unwrap();
    r0.unwrap();
    r1.unwrap();
    controller
}

/// Whether moto is missing (a failure under CI, a skip elsewhere).
fn moto_missing() -> bool {
    harness::require(
        Moto::available(),
        "moto's server (pip install 'moto[server]')",
    )
}

/// Both rendezvous kinds run each fault test.
macro_rules! for_both_rendezvous {
    ($case:ident: $directory:ident, $secrets_manager:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $directory() {
            $case(Kind::Directory).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $secrets_manager() {
            if moto_missing() {
                return;
            }
            $case(Kind::SecretsManager).await;
        }
    };
}

for_both_rendezvous!(corrupted_ticket: a_corrupted_ticket_file_keeps_the_worker_waiting, a_corrupted_secret_fails_fast);

async fn corrupted_ticket(kind: Kind) {
    let bed = Bed::start_with(kind).await;
    let _controller = formed(&bed).await;
    let mut ticket = bed.ticket_json().await;
    ticket["ca_pins"] = serde_json::json!(["sha256:nothex"]);
    bed.put_ticket_text(&ticket.to_string()).await;

    let late = bed.node_with("10.20.0.3", |_| {}).await;
    let started = std::time::Instant::now();
    let err = late.bootstrap().await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("ca_pins[0]"), "{message}");
    assert!(message.contains(&bed.location()), "{message}");
    match kind {
        // Only the controller's IAM role can write the secret: a broken
        // one will not fix itself, so the worker stops at once.
        Kind::SecretsManager => {
            assert!(
                started.elapsed().as_secs() < 10,
                "a malformed ticket must fail fast"
            );
            assert_eq!(err.kind(), "ticket_malformed", "{err}");
        }
        // Anyone on a shared file system may have written the file: the
        // worker warns and waits for the controller's ticket, and says at
        // its deadline why it found none.
        Kind::Directory => {
            assert!(started.elapsed().as_secs() >= 20, "{message}");
            assert_eq!(err.kind(), "ticket_wait_deadline", "{err}");
            assert!(message.contains("not a join ticket"), "{message}");
        }
    }
    assert!(!late.path(kubeadm::KUBELET_CONF).exists());
}

for_both_rendezvous!(ca_pin_mismatch: a_ca_pin_mismatch_in_a_file_refuses_to_join, a_ca_pin_mismatch_in_a_secret_refuses_to_join);

async fn ca_pin_mismatch(kind: Kind) {
    let bed = Bed::start_with(kind).await;
    let _controller = formed(&bed).await;
    let mut ticket = bed.ticket_json().await;
    let token = ticket["token"].as_str().unwrap().to_string();
    // A well-formed pin of some other CA: a redirected or stale ticket.
    ticket["ca_pins"] = serde_json::json!([format!("sha256:{}", "ab".repeat(32))]);
    bed.put_ticket_text(&ticket.to_string()).await;

    let late = bed.node_with("10.20.0.3", |_| {}).await;
    let err = late.bootstrap().await.unwrap_err();
    assert_eq!(err.kind(), "ticket_ca_pin_mismatch", "{err}");
    let message = err.to_string();
    assert!(message.contains("CA pin"), "{message}");
    assert!(!message.contains(&token), "the error shows the token");
    assert!(!late.path(kubeadm::KUBELET_CONF).exists());
    assert!(
        !late.path(kubeadm::JOIN_CONFIG).exists(),
        "the join config (token) was left behind"
    );
}

async fn admin_client(api: &TestApiServer) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(api.admin_kubeconfig_path()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

for_both_rendezvous!(rotation_while_polling: an_expired_file_ticket_is_never_used_and_rotation_lets_a_worker_join, an_expired_secret_is_never_used_and_rotation_lets_a_worker_join);

async fn rotation_while_polling(kind: Kind) {
    let bed = Bed::start_with(kind).await;
    let controller = formed(&bed).await;
    let old = bed.ticket().await;

    // The published ticket has expired, and its token is gone from the
    // cluster: a worker that used it would fail to join.
    let mut expired = bed.ticket_json().await;
    expired["expires_at"] = "2020-01-01T00:00:00Z".into();
    bed.put_ticket_text(&expired.to_string()).await;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(admin_client(&bed.api).await, "kube-system");
    secrets
        .delete(
            &format!("bootstrap-token-{}", old.token.id()),
            &Default::default(),
        )
        .await
        .unwrap();

    let late = bed.node(WORKERS[1]).await;
    let late_run = tokio::spawn(async move {
        let result = late.bootstrap().await;
        (late, result)
    });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        !late_run.is_finished(),
        "the worker did not wait for a usable ticket"
    );

    let fresh = lifecycle::ops::generate_new_token::generate_new_token(&controller.cx())
        .await
        .unwrap();
    assert_ne!(fresh.token.id(), old.token.id());
    let (late, result) = tokio::time::timeout(std::time::Duration::from_secs(15), late_run)
        .await
        .expect("the worker did not join after the rotation")
        .unwrap();
    result.unwrap();
    assert!(late.path(kubeadm::KUBELET_CONF).exists());
    assert_eq!(bed.ticket().await.token.id(), fresh.token.id());
    assert!(
        secrets
            .get_opt(&format!("bootstrap-token-{}", fresh.token.id()))
            .await
            .unwrap()
            .is_some()
    );
}

// ---------------------------------------------------------------------------
// Golden plans of phase cluster: what `hpk8s bootstrap --dry-run --phase
// cluster` shows on each kind of node, as text and JSON.

impl Bed {
    /// A plan as text and JSON with what varies between runs (the API
    /// server's port, temp paths, byte counts of secret files) replaced.
    fn normalized(&self, plan: &lifecycle::plan::Plan, node: &Node) -> (String, String) {
        let json = serde_json::to_string_pretty(plan).unwrap() + "\n";
        let fix = |s: String| {
            let s = s
                .replace(&format!("127.0.0.1:{}", self.port), "127.0.0.1:<port>")
                .replace(&self.shared.path().display().to_string(), "<shared>")
                .replace(&node.root.path().display().to_string(), "<root>");
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(at) = rest.find("(secret contents, ") {
                out.push_str(&rest[..at]);
                out.push_str("(secret contents, <n> bytes");
                let after = &rest[at..];
                let end = after
                    .find(" bytes")
                    .map_or(after.len(), |e| e + " bytes".len());
                rest = &after[end..];
            }
            out.push_str(rest);
            // How long the current ticket has left depends on the test's speed.
            match out.find("holds a current join ticket (expires in ") {
                Some(at) => {
                    let start = at + "holds a current join ticket (expires in ".len();
                    let end = out[start..].find(')').map_or(out.len(), |e| start + e);
                    out.replace_range(start..end, "<t>");
                    out
                }
                None => out,
            }
        };
        (fix(plan.to_string()), fix(json))
    }

    fn check_golden(&self, name: &str, plan: &lifecycle::plan::Plan, node: &Node) {
        let (text, json) = self.normalized(plan, node);
        harness::golden::check(&format!("cluster/{name}.plan"), &text);
        harness::golden::check(&format!("cluster/{name}.json"), &json);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn golden_plans_of_phase_cluster() {
    let bed = Bed::start().await;
    let controller = bed.node(CONTROLLER).await;
    let w0 = bed.node(WORKERS[0]).await;
    let w1 = bed.node(WORKERS[1]).await;

    // Fresh: the whole set planned, no remote call at all. The contexts
    // are not given the rendezvous: connecting would be visible.
    bed.api.clear_requests();
    let plan = phase::plan(&controller.fresh_cx()).await.unwrap();
    bed.check_golden("controller-fresh", &plan, &controller);
    assert!(
        plan.steps.iter().all(|s| !s.changes.is_empty()),
        "a fresh controller plans work in every step:\n{plan}"
    );
    let plan = phase::plan(&w0.fresh_cx()).await.unwrap();
    bed.check_golden("worker-fresh", &plan, &w0);
    assert!(
        bed.api.requests().is_empty(),
        "a dry run on fresh hosts called the API server: {:?}",
        bed.api.requests()
    );
    assert!(!bed.ticket_path().exists());

    // Formed and current: nothing to do, found with read-only calls.
    let (r0, r1, rc) = tokio::join!(w0.bootstrap(), w1.bootstrap(), controller.bootstrap());
    rc.unwrap();
    r0.unwrap();
    r1.unwrap();
    bed.api.clear_requests();
    let plan = phase::plan(&controller.cx()).await.unwrap();
    assert!(plan.is_empty(), "{plan}");
    let text = plan.to_string();
    assert!(
        text.contains("holds a current join ticket (expires in 5"),
        "the ticket has about an hour left: {text}"
    );
    let writes: Vec<_> = bed
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET" && !r.query.contains("dryRun=All"))
        .collect();
    assert!(
        writes.is_empty(),
        "the plan changed the cluster: {writes:?}"
    );
    bed.check_golden("controller-formed", &plan, &controller);
    let plan = phase::plan(&w0.cx()).await.unwrap();
    bed.check_golden("worker-joined", &plan, &w0);

    // A changed addon setting: only that object is planned, with the field.
    let mut newer = controller.config.clone();
    newer.addons.flannel_image = "ghcr.io/flannel-io/flannel:v0.26.8".into();
    let cx = Context::new(&controller.host, &newer, &controller.identity)
        .with_rendezvous(controller.rendezvous.clone());
    let plan = phase::plan(&cx).await.unwrap();
    let addons = plan.steps.iter().find(|s| s.step == "addons").unwrap();
    let changes: Vec<String> = addons.changes.iter().map(|c| c.summary()).collect();
    assert_eq!(
        changes,
        [
            "server-side apply DaemonSet kube-flannel/kube-flannel-ds from flannel (spec.template.spec.containers[0].image differs)"
        ],
        "{plan}"
    );

    // Formed, the ticket expiring in 12 minutes: a new token is planned.
    let mut expiring = bed.ticket().await;
    expiring.expires_at =
        std::time::SystemTime::now() + std::time::Duration::from_secs(12 * 60 + 30);
    controller.rendezvous.publish(&expiring).await.unwrap();
    let plan = phase::plan(&controller.cx()).await.unwrap();
    bed.check_golden("controller-ticket-expiring", &plan, &controller);
    let old = bed.ticket().await;
    // Applying it publishes a new token; then the plan is empty again.
    phase::apply(&controller.cx()).await.unwrap();
    assert_ne!(bed.ticket().await.token.id(), old.token.id());
    assert!(phase::plan(&controller.cx()).await.unwrap().is_empty());
}

/// PCI GPUs (H100) under a fake root, for the GPU gate to see.
fn with_pci_gpus(root: &Path, n: u32) {
    for i in 0..n {
        let d = root.join(format!(
            "sys/bus/pci/devices/0000:{:02x}:00.0",
            0x53 + i * 0x10
        ));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("vendor"), "0x10de\n").unwrap();
        std::fs::write(d.join("device"), "0x2330\n").unwrap();
        std::fs::write(d.join("class"), "0x030200\n").unwrap();
    }
}

/// Forms the bed's cluster with worker 0 on 8 stub GPUs, and returns the
/// taints its Node registered with.
async fn gated_worker_taints() -> Vec<Value> {
    let bed = Bed::start().await;
    let controller = bed.node(CONTROLLER).await;
    let mut w0 = bed
        .node_with(WORKERS[0], |root| with_pci_gpus(root, 8))
        .await;
    w0.config.gpu_health.library_path = Some(harness::nvml::stub_path());
    let w1 = bed.node(WORKERS[1]).await;
    let (rc, r0, r1) = tokio::join!(controller.bootstrap(), w0.bootstrap(), w1.bootstrap());
    rc.unwrap();
    r0.unwrap();
    r1.unwrap();
    let node = node_json(&bed.api, &w0.identity.node_name);
    // The other worker, without GPUs, is never gated.
    let other = node_json(&bed.api, &w1.identity.node_name);
    assert!(
        other["spec"]["taints"].as_array().is_none_or(|t| t
            .iter()
            .all(|t| t["key"] != lifecycle::cluster::gpu_gate::TAINT_KEY)),
        "{other}"
    );
    node["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_gpu_has_a_double_bit_error_joins_tainted_with_the_reason() {
    let fixture = harness::nvml::NvmlFixture::new().gpus((0..8).map(|i| {
        let g = harness::nvml::FakeGpu::h100(i);
        if i == 5 { g.ecc_volatile(0, 1) } else { g }
    }));
    if harness::nvml::run_with_fixture(
        "a_worker_whose_gpu_has_a_double_bit_error_joins_tainted_with_the_reason",
        &fixture,
    )
    .is_none()
    {
        return;
    }
    let taints = gated_worker_taints().await;
    assert!(
        taints.contains(&serde_json::json!({
            "key": lifecycle::cluster::gpu_gate::TAINT_KEY,
            "value": "ecc-uncorrected",
            "effect": "NoSchedule"
        })),
        "{taints:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_healthy_gpus_joins_without_the_gate_taint() {
    let fixture = harness::nvml::NvmlFixture::new().gpus((0..8).map(harness::nvml::FakeGpu::h100));
    if harness::nvml::run_with_fixture(
        "a_worker_with_healthy_gpus_joins_without_the_gate_taint",
        &fixture,
    )
    .is_none()
    {
        return;
    }
    let taints = gated_worker_taints().await;
    assert!(
        taints
            .iter()
            .all(|t| t["key"] != lifecycle::cluster::gpu_gate::TAINT_KEY),
        "{taints:?}"
    );
}
