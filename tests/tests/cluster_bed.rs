//! The multi-host bed itself (`harness::cluster_bed`): four real systemd
//! nodes on one LAN, each with its own address; the controller's
//! `address:6443` is the test API server (TLS, verified against the
//! cluster CA from a worker); moto answers on the gateway; nothing reaches
//! IMDS or addresses beyond the LAN; fake GPUs and EFA are what the node
//! (and hpk8s) sees; `hpk8s bootstrap --phase prepare` runs on all four at
//! once and installs the kubeadm stand-in, which then inits on the
//! controller and joins a worker across the LAN (token never in an argument
//! list); dropping the bed leaves nothing behind.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::cluster_bed::{self, ArgvRecorder, ClusterBed, Lan, lan};
use harness::node;

const PREPARE_TIMEOUT: Duration = Duration::from_secs(300);
/// A bootstrap token for the stand-in's init and join.
const TOKEN: &str = "bedtst.0123456789abcdef";

fn text(out: &std::process::Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn lans_get_distinct_subnets_and_go_away() {
    if harness::require(harness::netns::available(), "root with iproute2") {
        return;
    }
    let a = Lan::new().expect("first LAN");
    let b = Lan::new().expect("second LAN");
    assert_ne!(a.index(), b.index());
    let bridges = [a.bridge(), b.bridge()];
    for br in &bridges {
        assert!(lan::link_exists(br), "{br} missing");
    }
    drop(a);
    drop(b);
    for br in &bridges {
        assert!(!lan::link_exists(br), "{br} left behind");
    }
}

#[test]
fn four_nodes_on_one_lan_prepare_in_parallel_and_leave_nothing() {
    if cluster_bed::require() {
        return;
    }
    let t0 = Instant::now();
    let argv = ArgvRecorder::start();
    let bed = ClusterBed::builder()
        .workers(3)
        .gpu_worker(0, 4)
        .efa_worker(0, 2)
        .build()
        .expect("bed builds");
    let booted = t0.elapsed();
    eprintln!(
        "bed on {} booted in {booted:?}: {:?}",
        bed.lan().cidr(),
        bed.nodes()
            .iter()
            .map(|n| (n.instance(), n.address()))
            .collect::<Vec<_>>()
    );
    assert_eq!(bed.nodes().len(), 4);
    let controller = bed.controller();
    let worker = &bed.workers()[0];
    let gw = bed.lan().gateway();

    // Each node has its own address on eth0, and an EC2-style host name.
    for n in bed.nodes() {
        assert_eq!(n.exec_ok(&["hostname"]).expect("hostname"), n.hostname());
        let addrs = n
            .exec_ok(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
            .expect("ip addr");
        assert!(
            addrs.contains(&format!("{}/24", n.address())),
            "{}: {addrs}",
            n.instance()
        );
    }

    // hpk8s on each node finds itself in resource_config.json.
    for n in bed.nodes() {
        let id = n
            .exec_ok(&["hpk8s", "identity", "--output", "json"])
            .expect("hpk8s identity");
        let id: serde_json::Value = serde_json::from_str(&id).expect("identity JSON");
        assert_eq!(id["address"], n.address().to_string(), "{id}");
        assert_eq!(id["group"], n.group(), "{id}");
        assert_eq!(id["instance_id"], n.instance_id(), "{id}");
        assert_eq!(id["node_name"], n.hostname(), "{id}");
        assert_eq!(id["expected_nodes"], 4, "{id}");
        assert_eq!(id["cluster"]["id"], cluster_bed::CLUSTER_ID, "{id}");
    }

    // systemd units get the bed's environment too (an `hpk8s agent` unit).
    let unit_env = controller
        .node()
        .exec_ok(&[
            "systemd-run",
            "--wait",
            "--pipe",
            "--quiet",
            "printenv",
            "AWS_ENDPOINT_URL",
        ])
        .expect("systemd-run");
    assert_eq!(unit_env, bed.moto().endpoint());

    // From a worker, the controller's address:6443 is the test API server:
    // TLS verified against the cluster CA for that IP, /version answers.
    let script = format!(
        "printf 'GET /version HTTP/1.1\\r\\nHost: {ip}\\r\\nConnection: close\\r\\n\\r\\n' | \
         timeout 20 openssl s_client -quiet -verify_return_error -verify_ip {ip} \
         -CAfile {ca} -connect {ip}:6443 2>&1",
        ip = controller.address(),
        ca = cluster_bed::CA_CERT
    );
    let version = worker
        .exec_ok(&["bash", "-c", &script])
        .expect("TLS to the controller from a worker");
    assert!(
        version.contains("HTTP/1.1 200") && version.contains("gitVersion"),
        "{version}"
    );
    // The test process (root namespace) reaches it too, with real kubectl.
    let out = bed.kubectl(&["get", "--raw", "/version"]).expect("kubectl");
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("gitVersion"));
    let client = bed.admin_client().expect("admin client");
    let info = bed
        .block_on(client.apiserver_version())
        .expect("kube client /version");
    assert!(!info.git_version.is_empty());

    // moto answers on the gateway, from a worker.
    let moto_port = bed
        .moto()
        .endpoint()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let probe = worker
        .exec_ok(&[
            "bash",
            "-c",
            &format!(
                "exec 3<>/dev/tcp/{gw}/{moto_port}; printf 'GET /moto-api/data.json HTTP/1.0\\r\\n\\r\\n' >&3; timeout 10 cat <&3"
            ),
        ])
        .expect("moto from a worker");
    assert!(probe.starts_with("HTTP/1.1 200"), "{probe}");
    assert_eq!(bed.read_secret().expect("GetSecretValue"), None);

    // Nothing beyond the LAN: IMDS is unreachable at once, a TEST-NET
    // address (never routed) is not forwarded by the gateway.
    for target in ["169.254.169.254/80", "203.0.113.7/80"] {
        let out = worker
            .exec(&[
                "timeout",
                "5",
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{target}"),
            ])
            .expect("probe");
        assert!(!out.status.success(), "{target} answered: {}", text(&out));
    }

    // The fake PCI bus: the GPU worker sees its GPUs and EFA, the
    // controller none; hpk8s counts them.
    let vendors = |n: &cluster_bed::BedNode| {
        n.exec_ok(&[
            "bash",
            "-c",
            "cat /sys/bus/pci/devices/*/vendor | sort | uniq -c",
        ])
        .expect("read PCI vendors")
    };
    let gpu_vendors = vendors(worker);
    assert!(gpu_vendors.contains("4 0x10de"), "{gpu_vendors}");
    let efa = worker
        .exec_ok(&[
            "bash",
            "-c",
            "grep -l 0xefa1 /sys/bus/pci/devices/*/device | wc -l",
        ])
        .expect("EFA");
    assert_eq!(efa, "2");
    assert!(!vendors(controller).contains("0x10de"));
    let plan = worker
        .exec_ok(&[
            "hpk8s",
            "bootstrap",
            "--phase",
            "prepare",
            "--dry-run",
            "--output",
            "json",
        ])
        .expect("dry run on the GPU worker");
    assert!(plan.contains("4 NVIDIA GPU(s)"), "{plan}");

    // Phase prepare on all four at once.
    let t_prepare = Instant::now();
    let mut runs = bed
        .spawn_all(&["hpk8s", "bootstrap", "--phase", "prepare"])
        .expect("spawn prepare");
    for r in &mut runs {
        let out = r.wait(PREPARE_TIMEOUT).expect("prepare finishes");
        assert!(
            out.status.success(),
            "{} failed: {}\n{}",
            r.label(),
            text(&out),
            bed.all_logs()
        );
    }
    let prepared = t_prepare.elapsed();
    let stand_in =
        std::fs::read(bed.mirror_layout().binary("kubeadm")).expect("the mirror's kubeadm");
    for n in bed.nodes() {
        assert_eq!(
            n.read("/usr/bin/kubeadm").as_ref(),
            Some(&stand_in),
            "{}: /usr/bin/kubeadm is not the stand-in",
            n.instance()
        );
        let v = n
            .exec_ok(&["kubeadm", "version", "-o", "short"])
            .expect("kubeadm version");
        assert_eq!(v, "v1.34.1", "{}", n.instance());
    }
    // It is the Rust stand-in (a script would answer without its JSON).
    let bare = worker
        .node()
        .exec(&["kubeadm", "version", "-o", "short"])
        .expect("kubeadm without the bed's environment");
    assert!(
        !bare.status.success()
            && String::from_utf8_lossy(&bare.stderr).contains("HPK8S_FAKE_KUBEADM"),
        "{}",
        text(&bare)
    );
    let logs = bed.all_logs();
    assert!(logs.contains("applying"), "{logs}");

    // The installed stand-in forms a cluster across the LAN: init on the
    // controller, join from a worker through the controller's address,
    // both nodes registered and Ready in the API server.
    let ctl_ip = controller.address();
    let init = format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nbootstrapTokens:\n- token: {TOKEN}\n  ttl: 10m0s\nlocalAPIEndpoint:\n  advertiseAddress: {ctl_ip}\n  bindPort: 6443\nnodeRegistration:\n  name: {}\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: v1.34.1\nnetworking:\n  podSubnet: 10.244.0.0/16\n",
        controller.hostname()
    );
    let pin = lifecycle::cluster::ca_pin::ca_pin(bed.api().ca_pem().as_bytes()).expect("CA pin");
    let join = format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\ndiscovery:\n  bootstrapToken:\n    apiServerEndpoint: {ctl_ip}:6443\n    token: {TOKEN}\n    caCertHashes:\n    - {pin}\nnodeRegistration:\n  name: {}\n",
        worker.hostname()
    );
    for (n, cmd, config) in [(controller, "init", init), (worker, "join", join)] {
        std::fs::write(n.root().join("root/kubeadm.yaml"), config).expect("kubeadm config");
        let out = n
            .exec(&["kubeadm", cmd, "--config", "/root/kubeadm.yaml"])
            .expect("kubeadm");
        assert!(out.status.success(), "kubeadm {cmd}: {}", text(&out));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in [controller, worker] {
        loop {
            let node = bed.api().get_json("nodes", "", &n.hostname());
            let ready = node
                .as_ref()
                .and_then(|o| o.pointer("/status/conditions"))
                .and_then(|c| c.as_array())
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} not Ready: {node:?}",
                n.hostname()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(
        !argv.saw(TOKEN),
        "the bootstrap token was in an argument list"
    );
    assert!(
        argv.saw("kubeadm join --config"),
        "the recorder missed kubeadm join"
    );
    assert_eq!(
        bed.node_files(controller, "/opt/ml/config/*.json").len(),
        1,
        "node_files"
    );
    assert!(
        argv.saw("bootstrap --phase prepare"),
        "the recorder missed hpk8s"
    );
    assert!(!argv.saw(cluster_bed::SECRET_ACCESS_KEY));
    // The mirror URL's password reached no argument list, and nothing hpk8s
    // ran (kubeadm, systemctl, ctr, tar) got its AWS secret or the password.
    assert!(!argv.saw(cluster_bed::MIRROR_PASSWORD));
    for needle in [cluster_bed::SECRET_ACCESS_KEY, cluster_bed::MIRROR_PASSWORD] {
        let leaked = argv.environ_matching(needle);
        assert!(leaked.is_empty(), "{leaked:#?}");
    }
    assert!(
        !argv.environ_matching("PATH=").is_empty(),
        "the recorder saw no process run by hpk8s"
    );
    assert!(
        bed.mirror().requests().iter().all(|r| r.authorized),
        "the mirror's credentials were not used"
    );

    // Drop leaves nothing behind.
    let netns: Vec<String> = bed
        .nodes()
        .iter()
        .map(|n| n.netns().name().to_string())
        .collect();
    let mut links = bed.lan().veths().to_vec();
    links.push(bed.lan().bridge());
    let roots: Vec<PathBuf> = bed.nodes().iter().map(|n| n.root()).collect();
    let machines: Vec<String> = bed.nodes().iter().map(|n| n.name().to_string()).collect();
    let moto_endpoint = bed.moto().endpoint();
    let t_drop = Instant::now();
    drop(bed);
    let dropped = t_drop.elapsed();
    for ns in &netns {
        assert!(
            !std::path::Path::new(harness::netns::NETNS_DIR)
                .join(ns)
                .exists(),
            "namespace {ns} left"
        );
    }
    for l in &links {
        assert!(!lan::link_exists(l), "link {l} left");
    }
    for r in &roots {
        assert!(
            node::mounts_under(r).is_empty(),
            "mounts under {}",
            r.display()
        );
        assert!(!r.exists(), "{} left", r.display());
    }
    for m in &machines {
        assert!(
            cluster_bed::pids_whose_cmdline_contains(&format!("--machine={m}")).is_empty(),
            "nspawn {m} left"
        );
    }
    let moto_port = moto_endpoint.rsplit(':').next().unwrap();
    assert!(
        cluster_bed::pids_whose_cmdline_contains(&format!("--port\0{moto_port}")).is_empty(),
        "moto left"
    );
    eprintln!(
        "timings: boot {booted:?}, prepare on 4 nodes {prepared:?}, drop {dropped:?}, total {:?}",
        t0.elapsed()
    );
}

#[test]
fn moto_pauses_and_resumes() {
    if harness::require(
        harness::moto::Moto::available(),
        "moto (set HPK8S_MOTO_PYTHON)",
    ) {
        return;
    }
    use std::io::{Read as _, Write as _};
    let moto = harness::moto::Moto::start().expect("moto");
    let addr: std::net::SocketAddr = moto
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .expect("moto address");
    let get = || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /moto-api/data.json HTTP/1.0\r\n\r\n")?;
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    assert_eq!(get().expect("moto answers").trim(), "HTTP/1.1 200");
    moto.pause().expect("pause");
    let frozen = get();
    assert!(frozen.is_err(), "a paused moto answered: {frozen:?}");
    moto.resume().expect("resume");
    assert_eq!(get().expect("moto answers again").trim(), "HTTP/1.1 200");
}
