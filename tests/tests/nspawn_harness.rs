//! The real-systemd-node harness itself: a node boots with systemd as PID 1
//! and containerd running, owns its network sysctls, sees a loop-mounted xfs
//! as a mount point, reaches servers on its namespace's loopback, and leaves
//! nothing behind (process, namespace, mount, loop device) when dropped.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use harness::netns::{self, Netns};
use harness::node::{self, LoopXfs, NspawnNode};

const HOST_IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

fn host_ip_forward() -> String {
    std::fs::read_to_string(HOST_IP_FORWARD)
        .expect("read host ip_forward")
        .trim()
        .to_string()
}

#[test]
fn node_boots_owns_its_sysctls_and_cleans_up() {
    if node::require() || harness::require(node::loop_xfs_available(), "losetup and mkfs.xfs") {
        return;
    }
    let host_forward = host_ip_forward();
    let xfs = LoopXfs::new(512 << 20).expect("loop xfs");
    let device = xfs.device().to_string();
    let image = xfs.image();

    let netns = Netns::new().expect("netns");
    netns.add_address("10.1.38.128/32", "lo").expect("address");
    netns
        .set_sysctl("net.ipv4.ip_forward", "0")
        .expect("ip_forward off");
    let listener = netns
        .listen_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("listener inside the namespace");
    let port = listener.local_addr().expect("port").port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.write_all(b"hello from the namespace\n")
            .expect("write");
    });

    let mut node = NspawnNode::builder()
        .netns(netns)
        .bind(xfs.mount_point(), "/opt/dlami/nvme")
        .file("/etc/hpk8s-test/fixture", "fixture-contents", 0o600)
        .boot()
        .expect("node boots");
    let ns_path = node.netns().path();
    let node_dir = node.root().parent().expect("node dir").to_path_buf();
    let leader = node.leader_pid();

    // Its host name is the machine name.
    assert_eq!(node.exec_ok(&["hostname"]).unwrap(), node.name());

    // systemd is PID 1 and containerd runs as its service.
    assert_eq!(node.exec_ok(&["cat", "/proc/1/comm"]).unwrap(), "systemd");
    assert_eq!(
        node.exec_ok(&["systemctl", "is-active", "containerd"])
            .unwrap_or_else(|e| panic!("{e:#}\n{}", node.journal("containerd"))),
        "active"
    );
    assert!(node.journal("containerd").contains("containerd"));

    // Files placed before boot are there, with their mode.
    assert_eq!(
        node.exec_ok(&["stat", "-c", "%a %s", "/etc/hpk8s-test/fixture"])
            .unwrap(),
        "600 16"
    );

    // The xfs is a mount point inside, and writes land on the loop device.
    let mountinfo = node.exec_ok(&["cat", "/proc/self/mountinfo"]).unwrap();
    assert!(
        mountinfo
            .lines()
            .any(|l| l.split(' ').nth(4) == Some("/opt/dlami/nvme") && l.contains(" - xfs ")),
        "{mountinfo}"
    );
    node.exec_ok(&["sh", "-c", "echo probe > /opt/dlami/nvme/probe"])
        .unwrap();
    assert!(xfs.mount_point().join("probe").exists());

    // The node's address and sysctls are its own.
    let addrs = node
        .exec_ok(&["ip", "-o", "addr", "show", "dev", "lo"])
        .unwrap();
    assert!(addrs.contains("10.1.38.128/32"), "{addrs}");
    node.exec_ok(&["sysctl", "-w", "net.ipv4.ip_forward=1"])
        .unwrap();
    assert_eq!(
        node.exec_ok(&["sysctl", "-n", "net.ipv4.ip_forward"])
            .unwrap(),
        "1"
    );
    assert_eq!(node.netns().sysctl("net.ipv4.ip_forward").unwrap(), "1");
    assert_eq!(
        host_ip_forward(),
        host_forward,
        "the host's ip_forward changed"
    );

    // A server on the namespace's loopback is reachable from inside.
    let got = node
        .exec_ok(&[
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/127.0.0.1/{port}; cat <&3"),
        ])
        .unwrap();
    assert_eq!(got, "hello from the namespace");
    server.join().expect("server thread");

    // Stop, then nothing is left behind.
    node.stop().expect("stop");
    assert!(
        !node::pid_running(leader),
        "the node's systemd survived stop"
    );
    drop(node);
    assert!(!ns_path.exists(), "{} left behind", ns_path.display());
    assert!(!node_dir.exists(), "{} left behind", node_dir.display());
    assert!(node::mounts_under(&node_dir).is_empty());
    let xfs_dir = xfs.mount_point().parent().expect("xfs dir").to_path_buf();
    drop(xfs);
    assert!(node::mounts_under(&xfs_dir).is_empty());
    assert!(!xfs_dir.exists());
    assert!(
        !node::loop_devices()
            .iter()
            .any(|(dev, back)| *dev == device || back == &image),
        "loop device {device} still attached"
    );
}

#[test]
fn namespaces_of_dead_test_processes_are_swept() {
    if harness::require(netns::available(), "root with iproute2") {
        return;
    }
    let live = Netns::new().expect("netns");
    // A pid that certainly belonged to a process that has exited.
    #[allow(clippy::disallowed_methods)] // test harness launches real components
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let dead = child.id();
    child.wait().expect("wait");
    let name = format!("{}{dead}-0", netns::PREFIX);
    #[allow(clippy::disallowed_methods)] // test harness launches real components
    let status = std::process::Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .expect("ip netns add");
    assert!(status.success());

    let swept = netns::sweep_stale();
    // A sweep in a parallel test process may have taken it first.
    assert!(
        !Path::new(netns::NETNS_DIR).join(&name).exists(),
        "{name} not swept ({swept:?})"
    );
    assert!(live.path().exists(), "a live process's namespace was swept");
}

#[test]
fn node_directories_of_dead_test_processes_are_swept() {
    if harness::require(node::loop_xfs_available(), "root with losetup") {
        return;
    }
    // Set up under a name no sweeper looks at, then move it into place:
    // sweeps in parallel test processes must not see it half-built.
    let staging = tempfile::Builder::new()
        .prefix("hpk8s-staging-")
        .tempdir_in(node::WORK_DIR)
        .expect("staging dir");
    let mnt = staging.path().join("root/mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let image = staging.path().join("disk.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(1 << 20))
        .expect("image");
    let device = run(&["losetup", "-f", "--show", &image.to_string_lossy()]);
    run(&["mount", "-t", "tmpfs", "tmpfs", &mnt.to_string_lossy()]);
    let dir = Path::new(node::WORK_DIR).join(format!(
        "{}{}-sweeptest",
        node::NODE_DIR_PREFIX,
        dead_pid()
    ));
    std::fs::rename(staging.keep(), &dir).expect("move into place");

    node::sweep_stale();
    // A sweep in another test process may be finishing the same work.
    let deadline = Instant::now() + Duration::from_secs(10);
    let leftovers = || {
        let mut left = Vec::new();
        if !node::mounts_under(&dir).is_empty() {
            left.push("a mount".to_string());
        }
        if dir.exists() {
            left.push(dir.display().to_string());
        }
        if node::loop_devices().iter().any(|(d, _)| *d == device) {
            left.push(format!("loop device {device}"));
        }
        left
    };
    while !leftovers().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(leftovers().is_empty(), "left behind: {:?}", leftovers());
}

/// A pid that certainly belonged to a process that has exited.
fn dead_pid() -> u32 {
    #[allow(clippy::disallowed_methods)] // test harness launches real components
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait");
    pid
}

/// Runs a command that must succeed; returns its trimmed stdout.
fn run(argv: &[&str]) -> String {
    #[allow(clippy::disallowed_methods)] // test harness launches real components
    let out = std::process::Command::new(netns::resolve(argv[0]).expect("program on PATH"))
        .args(&argv[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn namespaces_connected_by_veth_reach_each_other() {
    if harness::require(netns::available(), "root with iproute2") {
        return;
    }
    let a = Netns::new().expect("netns a");
    let b = Netns::new().expect("netns b");
    a.connect("eth0", "10.77.0.1/24", &b, "eth0", "10.77.0.2/24")
        .expect("veth");
    let server = b
        .listen_tcp(SocketAddr::from(([10, 77, 0, 2], 0)))
        .expect("listen in b");
    let addr = server.local_addr().expect("addr");
    let accepted = std::thread::spawn(move || {
        let (mut conn, peer) = server.accept().expect("accept");
        conn.write_all(b"hi").expect("write");
        peer.ip()
    });
    let mut got = String::new();
    a.run_in(|| {
        use std::io::Read as _;
        std::net::TcpStream::connect(addr)?.read_to_string(&mut got)
    })
    .expect("connect from a");
    assert_eq!(got, "hi");
    assert_eq!(
        accepted.join().expect("server"),
        Ipv4Addr::new(10, 77, 0, 1)
    );
}
