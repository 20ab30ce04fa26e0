//! Node identity end to end: HyperPod, static and local topologies resolved
//! against a fake host root, the IMDSv2 client against the fake IMDS, and the
//! `hpk8s identity` binary on bad input (exit code, one-line message, host
//! root left untouched).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use harness::fixtures::hyperpod::{self, Inventory, PROVISIONING_PARAMETERS, RESOURCE_CONFIG};
use harness::imds::FakeImds;
use lifecycle::config::Config;
use lifecycle::host::{FixedInterfaces, Host, ScriptedRunner};
use lifecycle::identity::{
    self, IdentityError, ImdsClient, Lifecycle, NodeIdentity, Overrides, RetryPolicy, Role,
    TopologySource,
};
use sha2::{Digest, Sha256};

const ARN: &str = "arn:aws:sagemaker:us-west-2:111122223333:cluster/kb8v11zrrpvr";

fn inventory() -> Inventory {
    Inventory::new(ARN)
        .group("controller-machine", "ml.m5.2xlarge", 1)
        .group("worker-group-1", "ml.p5.48xlarge", 2)
        .group("login-group", "ml.m5.xlarge", 1)
        .controller_group("controller-machine")
        .login_group("login-group")
}

fn host(root: &Path, addrs: &[IpAddr]) -> Host {
    Host::new(
        root,
        Arc::new(ScriptedRunner::new()),
        Arc::new(FixedInterfaces(addrs.to_vec())),
    )
}

fn config(toml: &str) -> Config {
    Config::parse(toml, Path::new("/etc/hpk8s/config.toml")).expect("test config parses")
}

/// HyperPod config pointing at the fixture's provisioning parameters.
fn hyperpod_config(extra: &str) -> Config {
    config(&format!(
        "[identity]\nprovisioning_parameters = \"{PROVISIONING_PARAMETERS}\"\n{extra}"
    ))
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        retries: 3,
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
    }
}

fn overrides() -> Overrides {
    Overrides {
        imds_retry: fast_retry(),
        // Never the real link-local address, even if detection misfires.
        ec2_imds_endpoint: "http://127.0.0.1:9".into(),
        ..Overrides::default()
    }
}

async fn resolve(host: &Host, config: &Config) -> Result<NodeIdentity, IdentityError> {
    identity::resolve_with(host, config, &overrides()).await
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

// ---------------------------------------------------------------- topology

#[tokio::test]
async fn hyperpod_worker_finds_itself_by_customer_address() {
    let root = tempfile::tempdir().unwrap();
    let inv = inventory();
    inv.write_to(root.path()).unwrap();
    // The agent address is on the host too: it must never be picked.
    let h = host(
        root.path(),
        &[
            ip("127.0.0.1"),
            inv.agent_ip("worker-group-1", 1),
            inv.customer_ip("worker-group-1", 1),
        ],
    );
    let id = resolve(&h, &hyperpod_config("")).await.unwrap();
    assert_eq!(id.source, TopologySource::Hyperpod);
    assert_eq!(id.address, inv.customer_ip("worker-group-1", 1));
    assert_eq!(id.role, Role::Worker);
    assert!(id.joins);
    assert_eq!(id.group, "worker-group-1");
    assert_eq!(id.instance_id, Some(inv.instance_id("worker-group-1", 1)));
    assert_eq!(id.instance_type.as_deref(), Some("p5.48xlarge"));
    assert_eq!(id.cluster.id.as_deref(), Some("kb8v11zrrpvr"));
    assert_eq!(id.cluster.name, "ml-cluster");
    assert_eq!(id.cluster.partition.as_deref(), Some("aws"));
    assert_eq!(id.cluster.region.as_deref(), Some("us-west-2"));
    assert_eq!(id.cluster.account.as_deref(), Some("111122223333"));
    // Login nodes do not join by default.
    assert_eq!(id.expected_nodes, 3);
    let groups: Vec<_> = id
        .groups
        .iter()
        .map(|g| (g.name.as_str(), g.role, g.count, g.instance_type.as_deref()))
        .collect();
    assert_eq!(
        groups,
        [
            (
                "controller-machine",
                Role::Controller,
                1,
                Some("m5.2xlarge")
            ),
            ("worker-group-1", Role::Worker, 2, Some("p5.48xlarge")),
            ("login-group", Role::Login, 1, Some("m5.xlarge")),
        ]
    );
    let text = identity::render_text(&id);
    assert!(
        text.contains("expected:      3 node(s) in 3 group(s)"),
        "{text}"
    );
}

#[tokio::test]
async fn roles_controller_and_login_with_join() {
    let root = tempfile::tempdir().unwrap();
    let inv = inventory();
    inv.write_to(root.path()).unwrap();
    let ctrl = host(root.path(), &[inv.customer_ip("controller-machine", 0)]);
    let id = resolve(&ctrl, &hyperpod_config("")).await.unwrap();
    assert_eq!((id.role, id.joins), (Role::Controller, true));

    let login = host(root.path(), &[inv.customer_ip("login-group", 0)]);
    let id = resolve(&login, &hyperpod_config("")).await.unwrap();
    assert_eq!((id.role, id.joins), (Role::Login, false));
    let id = resolve(&login, &hyperpod_config("login_nodes_join = true\n"))
        .await
        .unwrap();
    assert_eq!(
        (id.role, id.joins, id.expected_nodes),
        (Role::Login, true, 4)
    );
}

#[tokio::test]
async fn config_groups_win_and_work_without_provisioning_parameters() {
    let root = tempfile::tempdir().unwrap();
    let inv = Inventory::new("arn:aws-us-gov:sagemaker:us-gov-west-1:111122223333:cluster/gov1")
        .group("cp", "ml.m5.2xlarge", 1)
        .group("gpu", "ml.p4d.24xlarge", 3);
    inv.write_to(root.path()).unwrap();
    let h = host(root.path(), &[inv.customer_ip("cp", 0)]);
    let e = resolve(&h, &hyperpod_config("")).await.unwrap_err();
    assert_eq!(e.kind(), "no_controller_group", "{e}");
    let id = resolve(&h, &hyperpod_config("controller_groups = [\"cp\"]\n"))
        .await
        .unwrap();
    assert_eq!(id.role, Role::Controller);
    assert_eq!(id.cluster.partition.as_deref(), Some("aws-us-gov"));
    assert_eq!(id.expected_nodes, 4);
}

#[tokio::test]
async fn env_path_wins_and_node_address_disambiguates() {
    let root = tempfile::tempdir().unwrap();
    let inv = inventory();
    hyperpod::write_json(root.path(), "/srv/rc.json", &inv.resource_config()).unwrap();
    hyperpod::write_json(
        root.path(),
        PROVISIONING_PARAMETERS,
        &inv.provisioning_parameters(),
    )
    .unwrap();
    let both = [
        inv.customer_ip("worker-group-1", 0),
        inv.customer_ip("worker-group-1", 1),
    ];
    let h = host(root.path(), &both);
    let o = Overrides {
        resource_config: Some(PathBuf::from("/srv/rc.json")),
        ..overrides()
    };
    let e = identity::resolve_with(&h, &hyperpod_config(""), &o)
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::AmbiguousAddress { .. }), "{e}");
    assert!(e.to_string().contains("node.address"), "{e}");
    let pinned = hyperpod_config(&format!("[node]\naddress = \"{}\"\n", both[1]));
    let id = identity::resolve_with(&h, &pinned, &o).await.unwrap();
    assert_eq!(id.address, both[1]);
}

#[tokio::test]
async fn big_inventory_resolves() {
    let root = tempfile::tempdir().unwrap();
    let inv = Inventory::new(ARN)
        .group("controller-machine", "ml.m5.2xlarge", 3)
        .group("worker-group-1", "ml.p5.48xlarge", 1000)
        .group("worker-group-2", "ml.g5.8xlarge", 0)
        .controller_group("controller-machine");
    inv.write_to(root.path()).unwrap();
    let h = host(root.path(), &[inv.customer_ip("worker-group-1", 999)]);
    let id = resolve(&h, &hyperpod_config("")).await.unwrap();
    assert_eq!(id.expected_nodes, 1003);
    assert_eq!(id.group, "worker-group-1");
}

#[tokio::test]
async fn static_topology_and_local_fallback() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(
        r#"[identity]
cluster_name = "lab"
[[identity.nodes]]
name = "cp-1"
address = "192.168.10.1"
role = "controller"
[[identity.nodes]]
name = "gpu-1"
address = "192.168.10.2"
role = "worker"
group = "gpu"
instance_type = "ml.g5.xlarge"
"#,
    );
    let h = host(root.path(), &[ip("192.168.10.2"), ip("10.0.0.5")]);
    let id = resolve(&h, &cfg).await.unwrap();
    assert_eq!(id.source, TopologySource::Static);
    assert_eq!(id.node_name, "gpu-1");
    assert_eq!(id.role, Role::Worker);
    assert_eq!(id.group, "gpu");
    assert_eq!(id.instance_type.as_deref(), Some("g5.xlarge"));
    assert_eq!(id.cluster.name, "lab");
    assert_eq!(id.expected_nodes, 2);

    // Nothing configured and no HyperPod file: a one-node local cluster.
    let id = resolve(&h, &Config::default()).await.unwrap();
    assert_eq!(id.source, TopologySource::Local);
    assert_eq!(id.role, Role::Controller);
    assert_eq!(id.address, ip("192.168.10.2"));
}

// ---------------------------------------------------------------- IMDS

fn client(imds: &FakeImds, timeout_ms: u64) -> ImdsClient {
    ImdsClient::new(imds.url(), Duration::from_millis(timeout_ms))
        .expect("IMDS client")
        .with_retry(fast_retry())
}

#[tokio::test]
async fn imds_facts_with_one_token() {
    let imds = FakeImds::start();
    imds.spot().set("instance-type", "ml.p5.48xlarge");
    let facts = client(&imds, 1000).instance_facts().await.unwrap();
    assert_eq!(facts.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    assert_eq!(facts.availability_zone.as_deref(), Some("us-west-2a"));
    assert_eq!(facts.region.as_deref(), Some("us-west-2"));
    assert_eq!(facts.local_ipv4.as_deref(), Some("10.1.0.1"));
    assert_eq!(facts.lifecycle, Some(Lifecycle::Spot));
    let log = imds.requests();
    assert_eq!(imds.tokens_issued(), 1);
    assert_eq!(
        (log[0].method.as_str(), log[0].path.as_str()),
        ("PUT", "/latest/api/token")
    );
    assert!(
        log[1..]
            .iter()
            .all(|r| r.method == "GET" && r.had_token && r.status == 200)
    );
    assert_eq!(log.len(), 8);
}

#[tokio::test]
async fn imds_enriches_the_identity_when_configured() {
    let root = tempfile::tempdir().unwrap();
    let inv = inventory();
    inv.write_to(root.path()).unwrap();
    let imds = FakeImds::start();
    imds.spot()
        .set("instance-id", &inv.instance_id("worker-group-1", 0))
        .set("placement/availability-zone", "us-west-2c");
    let h = host(root.path(), &[inv.customer_ip("worker-group-1", 0)]);
    let cfg = hyperpod_config(&format!("imds_endpoint = \"{}\"\n", imds.url()));
    let id = resolve(&h, &cfg).await.unwrap();
    assert_eq!(id.lifecycle, Some(Lifecycle::Spot));
    assert_eq!(id.availability_zone.as_deref(), Some("us-west-2c"));
    assert_eq!(id.instance_type.as_deref(), Some("p5.48xlarge"));
    // The inventory stays the topology.
    assert_eq!(id.group, "worker-group-1");
    assert_eq!(id.expected_nodes, 3);
    let json = serde_json::to_value(&id).unwrap();
    assert_eq!(json["lifecycle"], "spot");
    assert!(
        !serde_json::to_string(&id)
            .unwrap()
            .contains("FakeImdsToken")
    );
}

#[tokio::test]
async fn imds_401_fetches_a_new_token_once() {
    let imds = FakeImds::start();
    let c = client(&imds, 1000);
    assert!(c.get("instance-id").await.unwrap().is_some());
    imds.expire_tokens();
    assert_eq!(
        c.get("instance-type").await.unwrap().as_deref(),
        Some("p5.48xlarge")
    );
    assert_eq!(imds.tokens_issued(), 2);
    let statuses: Vec<u16> = imds.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 401, 200, 200]);
}

#[tokio::test]
async fn imds_404_is_absent_not_an_error() {
    let imds = FakeImds::start();
    imds.remove("instance-life-cycle");
    let c = client(&imds, 1000);
    assert_eq!(c.get("spot/instance-action").await.unwrap(), None);
    assert_eq!(
        c.get("events/recommendations/rebalance").await.unwrap(),
        None
    );
    assert_eq!(c.get("events/maintenance/scheduled").await.unwrap(), None);
    assert_eq!(c.instance_facts().await.unwrap().lifecycle, None);
    imds.set_spot_interruption("terminate", "2026-11-22T15:00:00Z");
    imds.set_rebalance_recommendation("2026-11-22T14:58:00Z");
    let action = c.get("spot/instance-action").await.unwrap().unwrap();
    assert!(action.contains("\"terminate\""), "{action}");
    assert!(
        c.get("events/recommendations/rebalance")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        c.get("mac").await.unwrap().as_deref(),
        Some("0e:12:34:56:78:9a")
    );
}

#[tokio::test]
async fn imds_retries_5xx_then_succeeds_and_gives_up_naming_the_endpoint() {
    let imds = FakeImds::start();
    imds.fail_next(2);
    let c = client(&imds, 1000);
    assert!(c.instance_facts().await.unwrap().instance_id.is_some());
    assert_eq!(
        imds.requests()[..2]
            .iter()
            .map(|r| r.status)
            .collect::<Vec<_>>(),
        [500, 500]
    );

    imds.fail_next(1000);
    let c = client(&imds, 1000);
    let e = c.get("instance-id").await.unwrap_err();
    assert_eq!(e.kind(), "imds_unreachable", "{e}");
    assert!(e.to_string().contains(&imds.url()), "{e}");
    assert!(e.to_string().contains("HTTP 500"), "{e}");
}

#[tokio::test]
async fn imds_time_out_is_retried_then_reported() {
    let imds = FakeImds::start();
    imds.set_delay(Duration::from_millis(400));
    let e = client(&imds, 100).get("instance-id").await.unwrap_err();
    assert!(matches!(e, IdentityError::ImdsUnreachable { .. }), "{e}");
    assert!(e.to_string().contains("timed out"), "{e}");
    // A slow but in-time IMDS is fine.
    imds.set_delay(Duration::from_millis(50));
    assert!(
        client(&imds, 1000)
            .get("instance-id")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn imds_that_comes_up_late_is_waited_for() {
    let imds = FakeImds::start_late(Duration::from_millis(300));
    let c = ImdsClient::new(imds.url(), Duration::from_millis(500))
        .unwrap()
        .with_retry(RetryPolicy {
            retries: 8,
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
        });
    assert!(c.instance_facts().await.unwrap().instance_id.is_some());
}

#[tokio::test]
async fn imds_is_contacted_only_when_the_machine_is_ec2() {
    let root = tempfile::tempdir().unwrap();
    let imds = FakeImds::start();
    let h = host(root.path(), &[ip("10.0.0.5")]);
    let o = Overrides {
        ec2_imds_endpoint: imds.url(),
        ..overrides()
    };
    hyperpod::write_text(root.path(), "/sys/class/dmi/id/sys_vendor", "QEMU\n").unwrap();
    let id = identity::resolve_with(&h, &Config::default(), &o)
        .await
        .unwrap();
    assert_eq!(id.instance_id, None);
    assert_eq!(
        imds.request_count(),
        0,
        "IMDS contacted on a non-EC2 machine"
    );

    hyperpod::write_text(root.path(), "/sys/class/dmi/id/sys_vendor", "Amazon EC2\n").unwrap();
    let id = identity::resolve_with(&h, &Config::default(), &o)
        .await
        .unwrap();
    assert_eq!(id.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    assert!(imds.request_count() > 0);

    // EC2 detected but IMDS does not answer: the inventory (here, this
    // machine alone) names the node, so it goes on without instance facts,
    // saying so.
    drop(imds);
    let logs = harness::logs::CapturedLogs::global();
    let id = identity::resolve_with(&h, &Config::default(), &o)
        .await
        .unwrap();
    assert_eq!(id.instance_id, None);
    let text = logs.text();
    assert!(
        text.contains("continuing without this instance's facts from IMDS")
            && text.contains(&o.ec2_imds_endpoint),
        "{text}"
    );
}

// ---------------------------------------------------------------- binary

/// Digest of every path, mode and content under `root`.
fn tree_digest(root: &Path) -> String {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("walk the fake root")
            .map(|e| e.expect("walk the fake root"))
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path).expect("walk the fake root");
            let rel = path
                .strip_prefix(root)
                .expect("walk the fake root")
                .display()
                .to_string();
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode();
            if meta.is_dir() {
                out.insert(rel, format!("dir {mode:o}"));
                walk(&path, root, out);
            } else {
                let content = hex::encode(Sha256::digest(
                    std::fs::read(&path).expect("walk the fake root"),
                ));
                out.insert(rel, format!("file {mode:o} {content}"));
            }
        }
    }
    let mut all = BTreeMap::new();
    walk(root, root, &mut all);
    hex::encode(Sha256::digest(format!("{all:?}")))
}

/// One bad-input case for `hpk8s identity`.
struct Case {
    name: &'static str,
    /// Exit code (the class) and the kind the error line names.
    code: (i32, &'static str),
    expect: &'static [&'static str],
}

/// Runs `hpk8s identity` against `root` with `env` and returns (code, stderr).
#[allow(clippy::disallowed_methods)] // test harness launches real components
fn run_identity(root: &Path, cwd: &Path, setup: &Setup) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(harness::hpk8s_bin());
    cmd.arg("--root")
        .arg(root)
        .arg("identity")
        .current_dir(cwd)
        .env("HPK8S_LOG", "off")
        .env_remove("SAGEMAKER_RESOURCE_CONFIG_PATH")
        .env_remove("HPK8S_CONFIG")
        .env_remove("HPK8S_ROOT");
    for (k, v) in &setup.env {
        cmd.env(k, v);
    }
    cmd.args(&setup.args);
    let out = cmd.output().expect("run hpk8s");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const RC: &str = RESOURCE_CONFIG;
const CONFIG: &str = "/etc/hpk8s/config.toml";

fn good_rc() -> serde_json::Value {
    inventory().resource_config()
}

/// Extra environment and arguments for one case.
#[derive(Default)]
struct Setup {
    env: Vec<(&'static str, String)>,
    args: Vec<String>,
}

/// Sets up case `name` under `root` (and `cwd`, the binary's working directory).
fn setup(name: &str, root: &Path, cwd: &Path) -> Setup {
    let w = |p: &str, t: &str| {
        hyperpod::write_text(root, p, t).expect("set up the case");
    };
    let pp = format!("[identity]\nprovisioning_parameters = \"{PROVISIONING_PARAMETERS}\"\n");
    let mut env = Vec::new();
    let mut args = Vec::new();
    match name {
        "missing" => w(CONFIG, "[identity]\nsource = \"hyperpod\"\n"),
        "unreadable" => {
            std::fs::create_dir_all(root.join(RC.trim_start_matches('/'))).expect("set up the case")
        }
        "malformed" => w(RC, "{\n  \"ClusterConfig\": {\n    \"ClusterArn\": \n}\n"),
        "wrong-type" => w(
            RC,
            r#"{"ClusterConfig": {"ClusterArn": "x"}, "InstanceGroups": {"Name": "a"}}"#,
        ),
        "no-arn" => {
            let mut rc = good_rc();
            rc["ClusterConfig"]
                .as_object_mut()
                .expect("set up the case")
                .remove("ClusterArn");
            hyperpod::write_json(root, RC, &rc).expect("set up the case");
        }
        "no-customer-ip" => {
            let mut rc = good_rc();
            rc["InstanceGroups"][1]["Instances"][1]
                .as_object_mut()
                .expect("set up the case")
                .remove("CustomerIpAddress");
            hyperpod::write_json(root, RC, &rc).expect("set up the case");
        }
        "bad-arn" => {
            let mut rc = good_rc();
            rc["ClusterConfig"]["ClusterArn"] =
                "arn:aws:sagemaker:us-west-2:1234:cluster/kb8v11zrrpvr".into();
            hyperpod::write_json(root, RC, &rc).expect("set up the case");
        }
        "env-path" => {
            w("/elsewhere/rc.json", "not json");
            env.push((
                "SAGEMAKER_RESOURCE_CONFIG_PATH",
                "/elsewhere/rc.json".to_string(),
            ));
            // The configured path is fine; the environment must win.
            hyperpod::write_json(root, RC, &good_rc()).expect("set up the case");
        }
        "pp-malformed" => {
            hyperpod::write_json(root, RC, &good_rc()).expect("set up the case");
            // Relative default path, read from the current directory.
            hyperpod::write_text(
                cwd,
                "provisioning_parameters.json",
                "{\"controller_group\": [1}",
            )
            .expect("set up the case");
        }
        "address-absent" => {
            inventory().write_to(root).expect("set up the case");
            w(CONFIG, &pp);
        }
        "pinned-absent" => {
            inventory().write_to(root).expect("set up the case");
            w(CONFIG, &format!("{pp}[node]\naddress = \"10.9.9.9\"\n"));
        }
        "duplicate" => {
            let mut rc = good_rc();
            rc["InstanceGroups"][1]["Instances"][1]["CustomerIpAddress"] =
                rc["InstanceGroups"][1]["Instances"][0]["CustomerIpAddress"].clone();
            hyperpod::write_json(root, RC, &rc).expect("set up the case");
            w(
                CONFIG,
                "[identity]\ncontroller_groups = [\"controller-machine\"]\n",
            );
        }
        "no-controller" => {
            hyperpod::write_json(root, RC, &good_rc()).expect("set up the case");
        }
        "pp-world-writable" => {
            // A provisioning_parameters.json anyone could have written names
            // the controller group: ignored, so nothing names one.
            hyperpod::write_json(root, RC, &good_rc()).expect("set up the case");
            let path = cwd.join("provisioning_parameters.json");
            std::fs::write(&path, inventory().provisioning_parameters().to_string())
                .expect("set up the case");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
                .expect("set up the case");
        }
        "unknown-group" => {
            hyperpod::write_json(root, RC, &good_rc()).expect("set up the case");
            w(
                CONFIG,
                "[identity]\ncontroller_groups = [\"controller-group\"]\n",
            );
        }
        "conflict" => {
            hyperpod::write_json(root, RC, &good_rc()).expect("set up the case");
            w(
                CONFIG,
                "[identity]\ncontroller_groups = [\"login-group\"]\nlogin_groups = [\"login-group\"]\n",
            );
        }
        "static-empty" => {
            // An explicit --config outside the host root.
            let path = hyperpod::write_text(cwd, "site.toml", "[identity]\nsource = \"static\"\n")
                .expect("set up the case");
            args = vec!["--config".to_string(), path.display().to_string()];
        }
        "static-no-controller" => w(
            CONFIG,
            "[[identity.nodes]]\nname = \"w\"\naddress = \"10.0.0.2\"\nrole = \"worker\"\n",
        ),
        "imds-down" => {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("set up the case");
                l.local_addr().expect("set up the case").port()
            };
            w(
                CONFIG,
                &format!(
                    "[identity]\nsource = \"local\"\nimds_endpoint = \"http://127.0.0.1:{port}\"\nimds_timeout_ms = 200\n[node]\naddress = \"10.0.0.1\"\n"
                ),
            );
        }
        other => panic!("unknown case {other}"),
    }
    Setup { env, args }
}

#[test]
fn binary_rejects_bad_identity_input_with_distinct_codes_and_changes_nothing() {
    let cases = [
        Case {
            name: "missing",
            code: (4, "resource_config_missing"),
            expect: &[RC, "does not exist", "SAGEMAKER_RESOURCE_CONFIG_PATH"],
        },
        Case {
            name: "unreadable",
            code: (4, "identity_file_unreadable"),
            expect: &[RC, "cannot read"],
        },
        Case {
            name: "malformed",
            code: (4, "resource_config_malformed"),
            expect: &[RC, "line 4 column 1", "malformed JSON"],
        },
        Case {
            name: "wrong-type",
            code: (4, "inventory_invalid_field"),
            expect: &[RC, "`InstanceGroups`"],
        },
        Case {
            name: "no-arn",
            code: (4, "inventory_missing_field"),
            expect: &[RC, "`ClusterConfig.ClusterArn`", "missing"],
        },
        Case {
            name: "no-customer-ip",
            code: (4, "inventory_missing_field"),
            expect: &[RC, "`InstanceGroups[1].Instances[1].CustomerIpAddress`"],
        },
        Case {
            name: "bad-arn",
            code: (4, "cluster_arn_invalid"),
            expect: &[RC, "ClusterConfig.ClusterArn", "account"],
        },
        Case {
            name: "env-path",
            code: (4, "resource_config_malformed"),
            expect: &["/elsewhere/rc.json", "line 1 column 2"],
        },
        Case {
            name: "pp-malformed",
            code: (4, "provisioning_parameters_malformed"),
            expect: &["provisioning_parameters.json", "line 1"],
        },
        Case {
            name: "address-absent",
            code: (4, "address_not_in_inventory"),
            expect: &[RC, "none of this host's addresses"],
        },
        Case {
            name: "pinned-absent",
            code: (3, "node_address_not_in_inventory"),
            expect: &["node.address = 10.9.9.9", RC],
        },
        Case {
            name: "duplicate",
            code: (4, "inventory_duplicate_address"),
            expect: &[
                "10.1.0.2",
                "InstanceGroups[1].Instances[0] and InstanceGroups[1].Instances[1]",
            ],
        },
        Case {
            name: "no-controller",
            code: (4, "no_controller_group"),
            expect: &[
                "cannot tell which instance group is the controller",
                "identity.controller_groups",
            ],
        },
        Case {
            name: "pp-world-writable",
            code: (4, "no_controller_group"),
            expect: &["cannot tell which instance group is the controller"],
        },
        Case {
            name: "unknown-group",
            code: (4, "unknown_instance_group"),
            expect: &["`controller-group`", "identity.controller_groups", RC],
        },
        Case {
            name: "conflict",
            code: (4, "conflicting_group_roles"),
            expect: &["`login-group`"],
        },
        Case {
            name: "static-empty",
            code: (3, "static_nodes_missing"),
            expect: &["identity.nodes"],
        },
        Case {
            name: "static-no-controller",
            code: (3, "static_controller_missing"),
            expect: &["identity.nodes", "controller"],
        },
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let cwd = dir.path().join("cwd");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&cwd).unwrap();
        let setup = setup(case.name, &root, &cwd);
        let before = tree_digest(&root);
        let (code, stdout, stderr) = run_identity(&root, &cwd, &setup);
        let lines: Vec<&str> = stderr.lines().collect();
        let ok = code == case.code.0
            && stdout.is_empty()
            && lines.len() == 1
            && lines[0].starts_with(&format!("error[{}]: ", case.code.1))
            && case.expect.iter().all(|e| lines[0].contains(e));
        if !ok {
            failures.push(format!(
                "{}: exit {code} (want {:?}), stderr: {stderr}",
                case.name, case.code
            ));
        }
        assert_eq!(
            tree_digest(&root),
            before,
            "{}: the host root changed",
            case.name
        );
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    let mut kinds: Vec<&str> = cases.iter().map(|c| c.code.1).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert!(kinds.len() >= 8);
}

#[test]
fn binary_prints_the_identity_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let cfg =
        "[identity]\ncluster_name = \"dev\"\n[node]\nname = \"box\"\naddress = \"10.0.0.1\"\n";
    hyperpod::write_text(&root, CONFIG, cfg).unwrap();
    let bin = harness::hpk8s_bin();
    #[allow(clippy::disallowed_methods)] // test harness launches real components
    let out = std::process::Command::new(bin)
        .args(["identity", "--output", "json", "--root"])
        .arg(&root)
        .current_dir(dir.path())
        .env("HPK8S_LOG", "off")
        .env_remove("SAGEMAKER_RESOURCE_CONFIG_PATH")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["source"], "local");
    assert_eq!(v["node_name"], "box");
    assert_eq!(v["cluster"]["name"], "dev");
    assert_eq!(v["expected_nodes"], 1);
}

/// IMDS configured but not answering, on a node the inventory (here: this
/// machine alone) already names: `hpk8s identity` warns and goes on.
#[test]
fn binary_continues_without_imds_when_the_inventory_names_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let cwd = dir.path().join("cwd");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&cwd).unwrap();
    let mut setup = setup("imds-down", &root, &cwd);
    setup.env.push(("HPK8S_LOG", "warn".to_string()));
    let (code, stdout, stderr) = run_identity(&root, &cwd, &setup);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("10.0.0.1"), "{stdout}");
    assert!(
        stderr.contains("continuing without this instance's facts from IMDS")
            && stderr.contains("http://127.0.0.1:"),
        "{stderr}"
    );
}
