//! The join-ticket rendezvous against moto's Secrets Manager and a real
//! directory: idempotent publishing, a worker that waits before the
//! controller publishes, an outage of the service mid-poll (a pausable TCP
//! proxy in front of moto), throttling, expired tickets, unreachable API
//! endpoints, malformed tickets and denied access (a fault-injecting proxy
//! answering `AccessDeniedException`). No token ever shows in an error or
//! `Debug` output these tests capture.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_secretsmanager::Client;
use harness::moto::{DEFAULT_REGION, Moto};
use harness::require;
use lifecycle::cluster::join_ticket::{JoinTicket, JoinToken, TICKET_VERSION};
use lifecycle::cluster::rendezvous::{
    GET_ACTION, Rendezvous, RendezvousError, TICKET_FILE, WaitPolicy, tcp_probe, wait_for_ticket,
};
use lifecycle::config::{RendezvousConfig, RendezvousKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const CLUSTER: &str = "kb8v11zrrpvr";
const SECRET: &str = "hyperpod-k8s-kb8v11zrrpvr";

/// Every token a test here uses: none may appear in captured output.
const TOKENS: [&str; 4] = [
    "aaaaaa.0123456789abcdef",
    "bbbbbb.0123456789abcdef",
    "cccccc.fedcba9876543210",
    "dddddd.00112233445566ff",
];

fn moto() -> Option<Moto> {
    if require(Moto::available(), "moto (python3 with moto[server])") {
        return None;
    }
    Some(Moto::start().expect("moto starts"))
}

/// Fails when any test token, or its secret half, is in `captured`.
fn assert_no_token(captured: &str) {
    for t in TOKENS {
        let secret = &t[7..];
        assert!(
            !captured.contains(t) && !captured.contains(secret),
            "a token leaked into: {captured}"
        );
    }
}

/// Display and Debug of an error, checked for tokens, returned for asserts.
fn captured(e: &RendezvousError) -> String {
    let mut text = format!("{e} | {e:?}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(" | {s}"));
        source = s.source();
    }
    assert_no_token(&text);
    text
}

fn ticket(token: &str, endpoint: SocketAddr, expires_in: i64) -> JoinTicket {
    // The ticket carries whole seconds.
    let now = SystemTime::UNIX_EPOCH
        + Duration::from_secs(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs(),
        );
    let magnitude = Duration::from_secs(expires_in.unsigned_abs());
    let expires_at = if expires_in >= 0 {
        now + magnitude
    } else {
        now - magnitude
    };
    JoinTicket {
        version: TICKET_VERSION,
        cluster_id: CLUSTER.into(),
        endpoint: endpoint.to_string(),
        token: JoinToken::parse(token).expect("test token is well-formed"),
        ca_pins: vec![format!("sha256:{}", "0f".repeat(32))],
        expires_at,
        kubernetes_version: "1.34.1".into(),
    }
}

/// A listening "API server" (the OS accepts connections into the backlog).
async fn api_server() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    (l, addr)
}

/// An address nothing listens on.
async fn dead_endpoint() -> SocketAddr {
    let (l, addr) = api_server().await;
    drop(l);
    addr
}

fn policy(deadline_secs: u64) -> WaitPolicy {
    WaitPolicy {
        deadline: Duration::from_secs(deadline_secs),
        poll_cap: Duration::from_millis(400),
        first_delay: Duration::from_millis(50),
        expiry_margin: Duration::from_secs(120),
        request_timeout: Duration::from_secs(5),
        endpoints: Vec::new(),
    }
}

async fn secrets_manager(endpoint: &str) -> Rendezvous {
    let sdk = sdk_for(endpoint).await;
    let config = RendezvousConfig {
        tags: BTreeMap::from([("team".to_string(), "ml".to_string())]),
        ..RendezvousConfig::default()
    };
    Rendezvous::from_config(&config, CLUSTER, Some(&sdk)).expect("rendezvous")
}

async fn sdk_for(endpoint: &str) -> aws_config::SdkConfig {
    use aws_config::retry::RetryConfig;
    use aws_config::{BehaviorVersion, Region};
    aws_config::defaults(BehaviorVersion::latest())
        .empty_test_environment()
        .test_credentials()
        .region(Region::new(DEFAULT_REGION))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .load()
        .await
}

fn spawn_wait(r: &Rendezvous, p: WaitPolicy) -> JoinHandle<Result<JoinTicket, RendezvousError>> {
    let r = r.clone();
    tokio::spawn(async move { wait_for_ticket(&r, &p, SystemTime::now, tcp_probe).await })
}

// ---------------------------------------------------------------------------
// A TCP proxy in front of moto that can go away (connection refused) and
// come back on the same port, or answer every request with AccessDenied.

struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    deny: Arc<AtomicBool>,
    denied: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let mut p = Proxy {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            target,
            deny: Arc::default(),
            denied: Arc::default(),
            task: None,
        };
        p.up().await;
        p
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Listens (again) on the same port.
    async fn up(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("proxy bind");
        self.addr = listener.local_addr().expect("proxy addr");
        let (target, deny, denied) = (self.target, self.deny.clone(), self.denied.clone());
        self.task = Some(tokio::spawn(async move {
            // Connections die with the listener task: aborting it drops this
            // guard, which aborts them.
            struct AbortAll(Vec<JoinHandle<()>>);
            impl Drop for AbortAll {
                fn drop(&mut self) {
                    self.0.iter().for_each(JoinHandle::abort);
                }
            }
            let mut conns = AbortAll(Vec::new());
            while let Ok((mut client, _)) = listener.accept().await {
                let (deny, denied) = (deny.clone(), denied.clone());
                conns.0.push(tokio::spawn(async move {
                    if deny.load(Ordering::SeqCst) {
                        // Counted before answering: the client may
                        // finish (and the test look) before this task runs on.
                        denied.fetch_add(1, Ordering::SeqCst);
                        answer_access_denied(&mut client).await;
                    } else if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        }));
    }

    /// Stops listening and cuts open connections: the service is unreachable.
    async fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Reads one HTTP request and answers what Secrets Manager answers a role
/// without `secretsmanager:GetSecretValue`.
async fn answer_access_denied(client: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let body_start = loop {
        let Ok(n) = client.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..body_start]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < body_start + length {
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = format!(
        "{{\"__type\":\"AccessDeniedException\",\"Message\":\"User: arn:aws:sts::111122223333:assumed-role/worker/i-0 is not authorized to perform: {GET_ACTION} on resource: {SECRET} because no identity-based policy allows the {GET_ACTION} action\"}}"
    );
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-RequestId: hpk8s-denied\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(response.as_bytes()).await;
    let _ = client.shutdown().await;
}

fn moto_addr(moto: &Moto) -> SocketAddr {
    moto.endpoint()
        .trim_start_matches("http://")
        .parse()
        .expect("moto address")
}

// ---------------------------------------------------------------------------
// Secrets Manager.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_twice_creates_then_puts_and_readers_see_the_latest() {
    let Some(moto) = moto() else { return };
    let r = secrets_manager(&moto.endpoint()).await;
    assert_eq!(r.location(), format!("secret {SECRET}"));
    let (_api, addr) = api_server().await;
    let first = ticket(TOKENS[0], addr, 3600);
    let second = ticket(TOKENS[1], addr, 7200);

    assert_eq!(r.fetch().await.expect("fetch before publishing"), None);
    r.publish(&first).await.expect("create");
    r.publish(&first)
        .await
        .expect("the same ticket again (retry)");
    assert_eq!(r.fetch().await.expect("fetch"), Some(first.clone()));
    r.publish(&second)
        .await
        .expect("a re-run puts a new version");
    assert_eq!(r.fetch().await.expect("fetch"), Some(second.clone()));
    // Re-publishing an older ticket makes it current again.
    r.publish(&first).await.expect("older ticket again");
    assert_eq!(r.fetch().await.expect("fetch"), Some(first.clone()));

    // The secret carries the configured tags and exactly two versions.
    let client = Client::new(&moto.sdk_config(DEFAULT_REGION).await);
    let described = client
        .describe_secret()
        .secret_id(SECRET)
        .send()
        .await
        .expect("describe");
    let tags: Vec<(&str, &str)> = described
        .tags()
        .iter()
        .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()))
        .collect();
    assert_eq!(tags, [("team", "ml")]);
    let versions = described.version_ids_to_stages().expect("versions");
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_no_token(&format!("{first:?} {second:?} {r:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_waiting_before_the_controller_gets_the_ticket_once_published() {
    let Some(moto) = moto() else { return };
    let r = secrets_manager(&moto.endpoint()).await;
    let (_api, addr) = api_server().await;
    let started = Instant::now();
    let waiter = spawn_wait(&r, policy(60));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiter.is_finished(), "the worker must still wait");
    let published = ticket(TOKENS[0], addr, 3600);
    r.publish(&published).await.expect("publish");
    let got = waiter.await.expect("join").expect("ticket");
    assert_eq!(got, published);
    assert!(started.elapsed() >= Duration::from_secs(1));
    // The poll cap keeps the delay after publishing short.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_survives_the_service_going_away_mid_poll() {
    let Some(moto) = moto() else { return };
    let mut proxy = Proxy::start(moto_addr(&moto)).await;
    let worker = secrets_manager(&proxy.endpoint()).await;
    let controller = secrets_manager(&moto.endpoint()).await;
    let (_api, addr) = api_server().await;

    let started = Instant::now();
    let waiter = spawn_wait(&worker, policy(60));
    tokio::time::sleep(Duration::from_millis(800)).await;
    proxy.down().await;
    // Published while the worker cannot reach the service.
    let published = ticket(TOKENS[2], addr, 3600);
    controller.publish(&published).await.expect("publish");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!waiter.is_finished(), "the service was unreachable");
    proxy.up().await;
    let got = waiter.await.expect("join").expect("the wait succeeds");
    assert_eq!(got, published);
    assert!(started.elapsed() >= Duration::from_millis(3800));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried() {
    let Some(moto) = moto() else { return };
    let r = secrets_manager(&moto.endpoint()).await;
    let (_api, addr) = api_server().await;
    let published = ticket(TOKENS[0], addr, 3600);
    r.publish(&published).await.expect("publish");
    moto.throttle_next(4, &["GetSecretValue"])
        .await
        .expect("inject throttling");
    let got = wait_for_ticket(&r, &policy(30), SystemTime::now, tcp_probe)
        .await
        .expect("ticket after throttling");
    assert_eq!(got, published);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_ticket_is_never_accepted_but_a_later_fresh_one_is() {
    let Some(moto) = moto() else { return };
    let r = secrets_manager(&moto.endpoint()).await;
    let (_api, addr) = api_server().await;
    // Expired, and one that expires inside the safety margin.
    r.publish(&ticket(TOKENS[0], addr, -10))
        .await
        .expect("publish");
    let waiter = spawn_wait(&r, policy(60));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!waiter.is_finished(), "an expired ticket was accepted");
    r.publish(&ticket(TOKENS[1], addr, 60))
        .await
        .expect("publish");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        !waiter.is_finished(),
        "a ticket inside the margin was accepted"
    );
    let fresh = ticket(TOKENS[2], addr, 3600);
    r.publish(&fresh).await.expect("publish");
    assert_eq!(waiter.await.expect("join").expect("ticket"), fresh);

    // Only ever expired: the deadline error says why.
    r.publish(&ticket(TOKENS[3], addr, -10))
        .await
        .expect("publish");
    let e = wait_for_ticket(&r, &policy(2), SystemTime::now, tcp_probe)
        .await
        .expect_err("expired");
    let text = captured(&e);
    assert!(matches!(e, RendezvousError::Deadline { .. }), "{text}");
    assert!(text.contains("expires at"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_refusing_connections_keeps_the_worker_waiting() {
    let Some(moto) = moto() else { return };
    let r = secrets_manager(&moto.endpoint()).await;
    let dead = dead_endpoint().await;
    r.publish(&ticket(TOKENS[0], dead, 3600))
        .await
        .expect("publish");

    let started = Instant::now();
    let e = wait_for_ticket(&r, &policy(2), SystemTime::now, tcp_probe)
        .await
        .expect_err("nothing listens");
    let text = captured(&e);
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(e.kind(), "ticket_wait_deadline", "{text}");
    assert!(text.contains(&format!("secret {SECRET}")), "{text}");
    assert!(text.contains("after waiting 2 s"), "{text}");
    assert!(text.contains(&format!("API endpoint {dead}")), "{text}");

    // Once something listens on the endpoint, the same ticket is accepted.
    let waiter = spawn_wait(&r, policy(60));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!waiter.is_finished());
    let _api = TcpListener::bind(dead).await.expect("rebind the endpoint");
    let got = waiter.await.expect("join").expect("ticket");
    assert_eq!(got.endpoint, dead.to_string());
}

/// Writes a raw secret string, as a broken or foreign controller would.
async fn put_raw(moto: &Moto, text: &str) {
    let client = Client::new(&moto.sdk_config(DEFAULT_REGION).await);
    client
        .create_secret()
        .name(SECRET)
        .secret_string(text)
        .send()
        .await
        .expect("create raw secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_ticket_fails_fast_naming_the_field() {
    let Some(moto) = moto() else { return };
    let r = secrets_manager(&moto.endpoint()).await;
    let (_api, addr) = api_server().await;
    let good: serde_json::Value =
        serde_json::from_str(&ticket(TOKENS[0], addr, 3600).to_secret_json()).expect("json");
    let cases: [(&str, serde_json::Value, &str); 4] = [
        // Upper case is not a bootstrap token.
        ("token", "AAAAAA.0123456789ABCDEF".into(), "`token`"),
        (
            "ca_pins",
            serde_json::json!(["sha256:1234"]),
            "`ca_pins[0]`",
        ),
        ("endpoint", "10.1.113.28".into(), "`endpoint`"),
        ("version", 7.into(), "`version`"),
    ];
    for (field, value, named) in cases {
        moto.reset().await.expect("reset");
        let mut bad = good.clone();
        bad[field] = value;
        put_raw(&moto, &bad.to_string()).await;
        let started = Instant::now();
        let e = wait_for_ticket(&r, &policy(60), SystemTime::now, tcp_probe)
            .await
            .expect_err("malformed");
        let text = captured(&e);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not fast: {text}"
        );
        assert_eq!(e.kind(), "ticket_malformed", "{text}");
        assert!(text.contains(named), "{field}: {text}");
        assert!(text.contains(&format!("secret {SECRET}")), "{text}");
        assert!(!text.contains("AAAAAA.0123456789ABCDEF"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_json_fails_fast() {
    let Some(moto) = moto() else { return };
    let r = secrets_manager(&moto.endpoint()).await;
    let (_api, addr) = api_server().await;
    let text = ticket(TOKENS[1], addr, 3600).to_secret_json();
    // Cut in the middle of the token.
    let cut = text.find(TOKENS[1]).expect("token in json") + 10;
    put_raw(&moto, &text[..cut]).await;
    let started = Instant::now();
    let e = wait_for_ticket(&r, &policy(60), SystemTime::now, tcp_probe)
        .await
        .expect_err("corrupted");
    let shown = captured(&e);
    assert!(started.elapsed() < Duration::from_secs(5), "{shown}");
    assert!(shown.contains("not valid JSON"), "{shown}");
    assert!(!shown.contains(&TOKENS[1][..10]), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_fails_fast_naming_the_iam_action() {
    let Some(moto) = moto() else { return };
    let proxy = Proxy::start(moto_addr(&moto)).await;
    proxy.deny.store(true, Ordering::SeqCst);
    let r = secrets_manager(&proxy.endpoint()).await;
    let started = Instant::now();
    let e = wait_for_ticket(&r, &policy(60), SystemTime::now, tcp_probe)
        .await
        .expect_err("denied");
    let text = captured(&e);
    assert!(started.elapsed() < Duration::from_secs(5), "{text}");
    assert_eq!(e.kind(), "rendezvous_access_denied", "{text}");
    assert!(matches!(e, RendezvousError::AccessDenied { .. }), "{text}");
    assert!(text.contains("secretsmanager:GetSecretValue"), "{text}");
    assert!(text.contains(&format!("secret {SECRET}")), "{text}");
    assert_eq!(
        proxy.denied.load(Ordering::SeqCst),
        1,
        "one request, no retries"
    );
}

// ---------------------------------------------------------------------------
// Directory.

fn directory(dir: &std::path::Path) -> Rendezvous {
    let config = RendezvousConfig {
        kind: RendezvousKind::Directory,
        directory: Some(dir.to_path_buf()),
        ..RendezvousConfig::default()
    };
    Rendezvous::from_config(&config, CLUSTER, None).expect("directory rendezvous")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_rendezvous_writes_atomically_0600_and_workers_wait() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let shared = tmp.path().join("shared");
    let r = directory(&shared);
    let file = shared.join(TICKET_FILE);
    assert_eq!(r.location(), format!("file {}", file.display()));
    let (_api, addr) = api_server().await;
    let first = ticket(TOKENS[0], addr, 3600);

    // The shared file system is not mounted yet: the worker waits, the
    // controller refuses to write to a local directory nobody else sees.
    assert_eq!(r.fetch().await.expect("fetch"), None);
    let e = r.publish(&first).await.expect_err("no directory");
    let text = captured(&e);
    assert_eq!(e.kind(), "rendezvous_directory_missing", "{text}");
    assert!(text.contains(&shared.display().to_string()), "{text}");

    let waiter = spawn_wait(&r, policy(60));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!waiter.is_finished());
    std::fs::create_dir(&shared).expect("mkdir");
    r.publish(&first).await.expect("publish");
    assert_eq!(waiter.await.expect("join").expect("ticket"), first);

    let mode = std::fs::metadata(&file).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let inode = |p: &std::path::Path| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).expect("stat"))
    };
    let before = inode(&file);
    r.publish(&first).await.expect("same ticket again");
    assert_eq!(inode(&file), before, "an unchanged ticket is not rewritten");

    let second = ticket(TOKENS[1], addr, 7200);
    r.publish(&second).await.expect("publish twice");
    assert_ne!(
        inode(&file),
        before,
        "replaced by rename, not rewritten in place"
    );
    assert_eq!(r.fetch().await.expect("fetch"), Some(second));
    let entries: Vec<String> = std::fs::read_dir(&shared)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, [TICKET_FILE], "no temporary files left behind");
    let mode = std::fs::metadata(&file).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // A corrupted file (anyone on the share could have written it) keeps
    // the worker waiting; at the deadline the error names the file and why.
    std::fs::write(&file, "{\"version\": 1, \"cluster_id\": ").expect("corrupt");
    let started = Instant::now();
    let e = wait_for_ticket(&r, &policy(2), SystemTime::now, tcp_probe)
        .await
        .expect_err("corrupt");
    let text = captured(&e);
    assert!(started.elapsed() >= Duration::from_secs(2), "{text}");
    assert_eq!(e.kind(), "ticket_wait_deadline", "{text}");
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(text.contains("not a join ticket"), "{text}");
}

/// What a shared directory may hold that another user planted, and what
/// hpk8s must say about it.
struct Planted {
    name: &'static str,
    plant: fn(&std::path::Path, &std::path::Path, &JoinTicket),
    says: &'static str,
}

fn write_ticket_file(path: &std::path::Path, t: &JoinTicket) {
    std::fs::write(path, t.to_secret_json()).expect("write ticket");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_tickets_are_refused_quickly_naming_the_path_and_reason() {
    if require(
        nix::unistd::geteuid().is_root(),
        "root (to own files as another uid)",
    ) {
        return;
    }
    let (_api, addr) = api_server().await;
    let good = ticket(TOKENS[0], addr, 3600);
    let cases = [
        Planted {
            name: "world-writable directory",
            plant: |dir, file, t| {
                write_ticket_file(file, t);
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
                    .expect("chmod");
            },
            says: "writable by group or others (mode 0777)",
        },
        Planted {
            name: "symlinked ticket",
            plant: |dir, file, t| {
                let real = dir.parent().expect("parent").join("elsewhere.json");
                write_ticket_file(&real, t);
                std::os::unix::fs::symlink(&real, file).expect("symlink");
            },
            says: "symbolic link",
        },
        Planted {
            name: "ticket owned by another uid",
            plant: |_, file, t| {
                write_ticket_file(file, t);
                std::os::unix::fs::chown(file, Some(1000), Some(1000)).expect("chown");
            },
            says: "owned by uid 1000",
        },
        Planted {
            name: "FIFO",
            plant: |_, file, _| {
                nix::unistd::mkfifo(file, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .expect("mkfifo");
            },
            says: "a FIFO",
        },
        Planted {
            name: "1 GiB file",
            plant: |_, file, _| {
                let f = std::fs::File::create(file).expect("create");
                f.set_len(1 << 30).expect("grow");
                std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod");
            },
            says: "1073741824 bytes, more than 65536",
        },
    ];
    for case in cases {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("shared");
        std::fs::create_dir(&dir).expect("mkdir");
        let file = dir.join(TICKET_FILE);
        (case.plant)(&dir, &file, &good);
        let r = directory(&dir);
        let started = Instant::now();
        let e = r.fetch().await.expect_err(case.name);
        let text = captured(&e);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{}: slow: {text}",
            case.name
        );
        assert_eq!(e.kind(), "rendezvous_untrusted", "{}: {text}", case.name);
        assert!(text.contains(case.says), "{}: {text}", case.name);
        assert!(
            text.contains(&dir.display().to_string()),
            "{}: the path is named: {text}",
            case.name
        );
        // A waiting worker never takes it: it waits, and says why at the deadline.
        let e = wait_for_ticket(&r, &policy(1), SystemTime::now, tcp_probe)
            .await
            .expect_err(case.name);
        let text = captured(&e);
        assert_eq!(e.kind(), "ticket_wait_deadline", "{}: {text}", case.name);
        assert!(text.contains(case.says), "{}: {text}", case.name);
        // The controller refuses to publish into a directory others control.
        if case.name == "world-writable directory" {
            let e = r.publish(&good).await.expect_err("untrusted directory");
            assert_eq!(e.kind(), "rendezvous_untrusted", "{}", captured(&e));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_naming_another_api_server_is_never_used() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("shared");
    std::fs::create_dir(&dir).expect("mkdir");
    let r = directory(&dir);
    let (_api, ours) = api_server().await;
    let (_theirs, theirs) = api_server().await;
    r.publish(&ticket(TOKENS[1], theirs, 3600))
        .await
        .expect("publish");
    let only_ours = WaitPolicy {
        endpoints: vec![ours.to_string()],
        ..policy(1)
    };
    let e = wait_for_ticket(&r, &only_ours, SystemTime::now, tcp_probe)
        .await
        .expect_err("another API server");
    let text = captured(&e);
    assert_eq!(e.kind(), "ticket_wait_deadline", "{text}");
    assert!(
        text.contains(&format!("refusing a ticket for API endpoint {theirs}")),
        "{text}"
    );
    // The same ticket naming our server is taken.
    r.publish(&ticket(TOKENS[2], ours, 3600))
        .await
        .expect("publish");
    let got = wait_for_ticket(&r, &only_ours, SystemTime::now, tcp_probe)
        .await
        .expect("our ticket");
    assert_eq!(got.endpoint, ours.to_string());
}

// ---------------------------------------------------------------------------
// Logs and configuration.

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn progress_is_logged_at_info_without_the_token() {
    let Some(moto) = moto() else { return };
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Thread-local, and this runtime has one thread: every task logs here.
    let _guard = tracing_subscriber::util::SubscriberInitExt::set_default(subscriber);

    let r = secrets_manager(&moto.endpoint()).await;
    let (_api, addr) = api_server().await;
    r.publish(&ticket(TOKENS[0], addr, -10))
        .await
        .expect("publish");
    let waiter = spawn_wait(&r, policy(30));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let fresh = ticket(TOKENS[1], addr, 3600);
    r.publish(&fresh).await.expect("publish");
    assert_eq!(waiter.await.expect("join").expect("ticket"), fresh);

    let text = String::from_utf8_lossy(&logs.0.lock().expect("log buffer")).into_owned();
    assert!(text.contains("waiting for the join ticket"), "{text}");
    assert!(text.contains("join ticket not usable yet"), "{text}");
    assert!(text.contains("published the join ticket"), "{text}");
    assert!(text.contains("found a usable join ticket"), "{text}");
    assert!(text.contains(SECRET), "{text}");
    assert_no_token(&text);
}

#[test]
fn the_rendezvous_section_is_validated() {
    let parse = |t: &str| lifecycle::config::Config::parse(t, std::path::Path::new("c.toml"));
    let c = parse("[rendezvous]\nkind = \"directory\"\ndirectory = \"/fsx/hpk8s\"\ntags = { team = \"ml\" }\n")
        .expect("valid");
    assert_eq!(c.rendezvous.kind, RendezvousKind::Directory);
    assert_eq!(c.rendezvous.poll_cap_ms, 5000);
    assert_eq!(c.rendezvous.deadline_secs, 3600);
    for (text, key) in [
        ("[rendezvous]\nkind = \"directory\"\n", "rendezvous.kind"),
        (
            "[rendezvous]\nkind = \"directory\"\ndirectory = \"shared\"\n",
            "rendezvous.kind",
        ),
        ("[rendezvous]\npoll_cap_ms = 0\n", "rendezvous.poll_cap_ms"),
        (
            "[rendezvous]\ndeadline_secs = 0\n",
            "rendezvous.deadline_secs",
        ),
    ] {
        let e = parse(text).expect_err(text);
        assert!(e.to_string().contains(key), "{text}: {e}");
    }
    assert!(parse("[rendezvous]\nkind = \"s3\"\n").is_err());
    let sm = Rendezvous::from_config(&RendezvousConfig::default(), CLUSTER, None)
        .expect_err("secrets-manager without AWS config");
    assert_eq!(sm.kind(), "rendezvous_setting_invalid");
}
