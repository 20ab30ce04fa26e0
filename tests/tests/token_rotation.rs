//! Bootstrap-token rotation against the test API server and a directory
//! rendezvous (and once against moto's Secrets Manager): the new Secret is
//! what `kubeadm token create` makes, the published ticket carries the new
//! token and a later expiry, superseded hpk8s tokens go only after the
//! grace, tokens hpk8s did not make are never touched, re-runs adopt
//! instead of rotating twice, the agent's loop rotates when due and
//! survives transient failures, and no token secret ever shows in logs or
//! errors.
#![allow(clippy::unwrap_used)] // test set-up helpers fail loudly

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use harness::kube_api::{FaultKind, TestApiServer};
use harness::moto::{DEFAULT_REGION, Moto};
use harness::require;
use lifecycle::agent::token_rotation::run_rotation;
use lifecycle::cluster::bootstrap_token::{BootstrapToken, SECRET_TYPE, TokenTtl};
use lifecycle::cluster::join_ticket::{JoinTicket, JoinToken, TICKET_VERSION};
use lifecycle::cluster::rendezvous::Rendezvous;
use lifecycle::cluster::token_rotation::{
    TokenError, create_token, delete_superseded_tokens, rotate, rotation_due, token_description,
};
use lifecycle::config::{RendezvousConfig, RendezvousKind};
use serde_json::json;

const CLUSTER: &str = "kb8v11zrrpvr";
const GRACE: Duration = Duration::from_secs(600);

fn ttl() -> TokenTtl {
    "1h".parse().unwrap()
}

async fn client_for(path: &Path) -> kube::Client {
    // One process-wide rustls provider, whatever else is linked.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

struct Setup {
    api: TestApiServer,
    client: kube::Client,
    _dir: tempfile::TempDir,
    rendezvous: Rendezvous,
}

async fn setup() -> Setup {
    let api = TestApiServer::start().await.unwrap();
    let client = client_for(api.admin_kubeconfig_path()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = RendezvousConfig {
        kind: RendezvousKind::Directory,
        directory: Some(dir.path().to_path_buf()),
        ..RendezvousConfig::default()
    };
    let rendezvous = Rendezvous::from_config(&config, CLUSTER, None).unwrap();
    Setup {
        api,
        client,
        _dir: dir,
        rendezvous,
    }
}

fn whole(t: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.duration_since(UNIX_EPOCH).unwrap().as_secs())
}

fn ticket(token: &BootstrapToken, expires_at: SystemTime) -> JoinTicket {
    JoinTicket {
        version: TICKET_VERSION,
        cluster_id: CLUSTER.into(),
        endpoint: "10.1.0.10:6443".into(),
        token: JoinToken::parse(&token.expose_token()).unwrap(),
        ca_pins: vec![format!("sha256:{}", "0f".repeat(32))],
        expires_at: whole(expires_at),
        kubernetes_version: "1.34.1".into(),
    }
}

/// A token someone else made (`kubeadm token create` by an operator).
fn seed_foreign_token(api: &TestApiServer, description: Option<&str>) -> String {
    let token = BootstrapToken::generate().unwrap();
    let mut secret = serde_json::to_value(token.secret_object(
        ttl(),
        SystemTime::now(),
        description.unwrap_or(""),
    ))
    .unwrap();
    if description.is_none() {
        secret["data"]
            .as_object_mut()
            .unwrap()
            .remove("description");
    }
    secret["apiVersion"] = json!("v1");
    secret["kind"] = json!("Secret");
    api.apply_json(secret).unwrap();
    token.id().to_string()
}

fn token_ids(api: &TestApiServer) -> BTreeSet<String> {
    api.names("secrets", Some("kube-system"))
        .into_iter()
        .filter_map(|n| n.strip_prefix("bootstrap-token-").map(String::from))
        .collect()
}

fn secret_data(api: &TestApiServer, id: &str) -> BTreeMap<String, String> {
    let s = api
        .get_json("secrets", "kube-system", &format!("bootstrap-token-{id}"))
        .unwrap();
    assert_eq!(s["type"], SECRET_TYPE);
    s["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let bytes = B64.decode(v.as_str().unwrap()).unwrap();
            (k.clone(), String::from_utf8(bytes).unwrap())
        })
        .collect()
}

/// Every token secret the server holds: none may show in logs or errors.
fn all_secrets(api: &TestApiServer) -> Vec<String> {
    token_ids(api)
        .iter()
        .map(|id| secret_data(api, id)["token-secret"].clone())
        .collect()
}

fn assert_no_secret(text: &str, secrets: &[String]) {
    for s in secrets {
        assert!(
            !text.contains(s.as_str()),
            "a token secret leaked into: {text}"
        );
    }
}

fn error_text(e: &TokenError) -> String {
    let mut text = format!("{e} | {e:?}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(" | {s}"));
        source = s.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_publishes_a_new_token_and_deletes_the_old_only_after_the_grace() {
    let s = setup().await;
    let now = SystemTime::now();
    // The first token (kubeadm init makes it with hpk8s's description).
    let first = create_token(&s.client, ttl(), now - Duration::from_secs(3000), CLUSTER)
        .await
        .unwrap();
    let foreign = seed_foreign_token(&s.api, Some("made by an operator"));
    let undescribed = seed_foreign_token(&s.api, None);
    let current = ticket(&first, now + Duration::from_secs(600));
    s.rendezvous.publish(&current).await.unwrap();
    assert!(rotation_due(&current, ttl(), now));

    let rotated = rotate(&s.client, &s.rendezvous, &current, ttl(), GRACE, now)
        .await
        .unwrap();
    let new_id = rotated.token.id().to_string();
    assert_ne!(new_id, first.id());
    assert_eq!(s.rendezvous.fetch().await.unwrap(), Some(rotated.clone()));
    assert_eq!(rotated.expires_at, whole(now + ttl().duration()));
    assert!(rotated.expires_at > current.expires_at);
    assert_eq!(
        (
            &rotated.cluster_id,
            &rotated.endpoint,
            &rotated.ca_pins,
            &rotated.kubernetes_version
        ),
        (
            &current.cluster_id,
            &current.endpoint,
            &current.ca_pins,
            &current.kubernetes_version
        )
    );
    assert!(!rotation_due(&rotated, ttl(), now));

    // The Secret is what `kubeadm token create` makes.
    let data = secret_data(&s.api, &new_id);
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "auth-extra-groups",
            "description",
            "expiration",
            "token-id",
            "token-secret",
            "usage-bootstrap-authentication",
            "usage-bootstrap-signing"
        ]
    );
    assert_eq!(data["token-id"], new_id);
    assert_eq!(
        format!("{}.{}", data["token-id"], data["token-secret"]),
        rotated.token.expose()
    );
    assert_eq!(data["description"], token_description(CLUSTER));
    assert_eq!(data["expiration"], rotated.expires_at_rfc3339());
    assert_eq!(data["usage-bootstrap-authentication"], "true");
    assert_eq!(
        data["auth-extra-groups"],
        "system:bootstrappers:kubeadm:default-node-token"
    );

    // Within the grace the old token still works.
    let all = BTreeSet::from([
        first.id().to_string(),
        new_id.clone(),
        foreign.clone(),
        undescribed.clone(),
    ]);
    assert_eq!(token_ids(&s.api), all);
    let deleted = delete_superseded_tokens(&s.client, &new_id, GRACE, now + GRACE / 2)
        .await
        .unwrap();
    assert!(deleted.is_empty());

    // A re-run (a crash after publishing) adopts the published ticket.
    let again = rotate(&s.client, &s.rendezvous, &current, ttl(), GRACE, now)
        .await
        .unwrap();
    assert_eq!(again, rotated);
    assert_eq!(token_ids(&s.api), all, "no second token");

    // After the grace only hpk8s's old token goes.
    let later = now + GRACE + Duration::from_secs(2);
    let deleted = delete_superseded_tokens(&s.client, &new_id, GRACE, later)
        .await
        .unwrap();
    assert_eq!(deleted, [first.id().to_string()]);
    assert_eq!(
        token_ids(&s.api),
        BTreeSet::from([new_id.clone(), foreign, undescribed])
    );
    let deleted = delete_superseded_tokens(&s.client, &new_id, GRACE, later)
        .await
        .unwrap();
    assert!(deleted.is_empty(), "nothing left to delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_orphaned_by_a_crash_before_publishing_is_cleaned_up() {
    let s = setup().await;
    let now = SystemTime::now();
    let first = create_token(&s.client, ttl(), now, CLUSTER).await.unwrap();
    let current = ticket(&first, now + Duration::from_secs(60));
    s.rendezvous.publish(&current).await.unwrap();
    // A run that crashed after creating its token, before publishing.
    let orphan = create_token(&s.client, ttl(), now, CLUSTER).await.unwrap();
    let rotated = rotate(&s.client, &s.rendezvous, &current, ttl(), GRACE, now)
        .await
        .unwrap();
    assert_ne!(rotated.token.id(), orphan.id());
    assert_eq!(token_ids(&s.api).len(), 3);
    let mut deleted = delete_superseded_tokens(
        &s.client,
        rotated.token.id(),
        GRACE,
        now + GRACE + Duration::from_secs(2),
    )
    .await
    .unwrap();
    deleted.sort();
    let mut want = vec![first.id().to_string(), orphan.id().to_string()];
    want.sort();
    assert_eq!(deleted, want);
    assert_eq!(
        token_ids(&s.api),
        BTreeSet::from([rotated.token.id().to_string()])
    );
}

#[test]
fn rotation_is_due_below_half_the_ttl() {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
    let ttl: TokenTtl = "4h".parse().unwrap();
    let due = |left_secs: u64| {
        rotation_due(
            &ticket(&token, now + Duration::from_secs(left_secs)),
            ttl,
            now,
        )
    };
    assert!(!due(4 * 3600));
    assert!(!due(2 * 3600), "exactly half left is not due yet");
    assert!(due(2 * 3600 - 1));
    assert!(due(0));
    assert!(rotation_due(
        &ticket(&token, now - Duration::from_secs(60)),
        ttl,
        now
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_loop_rotates_when_due_and_retries_transient_failures() {
    let s = setup().await;
    let now = SystemTime::now();
    let first = create_token(&s.client, ttl(), now, CLUSTER).await.unwrap();
    let current = ticket(&first, now + Duration::from_secs(60));
    s.rendezvous.publish(&current).await.unwrap();
    s.api.clear_requests();
    // The first attempt to create the new token's Secret fails with a 500.
    s.api.inject_fault(
        "/api/v1/namespaces/kube-system/secrets",
        FaultKind::Status(500),
        1,
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = {
        let client = s.client.clone();
        let rendezvous = s.rendezvous.clone();
        let current = current.clone();
        tokio::spawn(async move {
            run_rotation(&client, &rendezvous, current, ttl(), GRACE, async {
                let _ = stopped.await;
            })
            .await
        })
    };
    let start = std::time::Instant::now();
    let rotated = loop {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no rotation: {:?}",
            s.api.requests()
        );
        assert!(
            !agent.is_finished(),
            "the loop ended on a transient failure"
        );
        match s.rendezvous.fetch().await.unwrap() {
            Some(t) if t != current => break t,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert!(rotated.expires_at > current.expires_at);
    let posts: Vec<_> = s
        .api
        .requests()
        .into_iter()
        .filter(|r| r.is("POST", "/api/v1/namespaces/kube-system/secrets"))
        .collect();
    assert_eq!(posts.len(), 2, "one failure, one retry");
    // Not due again: the loop sleeps and makes no further token.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(token_ids(&s.api).len(), 2);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_loop_adopts_a_ticket_another_run_published() {
    let s = setup().await;
    let now = SystemTime::now();
    let first = create_token(&s.client, ttl(), now, CLUSTER).await.unwrap();
    let stale = ticket(&first, now + Duration::from_secs(60));
    // Another controller run rotated already.
    let newer_token = create_token(&s.client, ttl(), now, CLUSTER).await.unwrap();
    let newer = ticket(&newer_token, now + ttl().duration());
    s.rendezvous.publish(&newer).await.unwrap();
    s.api.clear_requests();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = {
        let client = s.client.clone();
        let rendezvous = s.rendezvous.clone();
        tokio::spawn(async move {
            run_rotation(&client, &rendezvous, stale, ttl(), GRACE, async {
                let _ = stopped.await;
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(s.rendezvous.fetch().await.unwrap(), Some(newer));
    assert_eq!(token_ids(&s.api).len(), 2, "no token created");
    assert!(
        !s.api.requests().iter().any(|r| r.method == "POST"),
        "{:?}",
        s.api.requests()
    );
    stop.send(()).unwrap();
    agent.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_api_ends_the_loop_with_the_endpoint_named() {
    let s = setup().await;
    let now = SystemTime::now();
    let first = create_token(&s.client, ttl(), now, CLUSTER).await.unwrap();
    let current = ticket(&first, now + Duration::from_secs(60));
    s.rendezvous.publish(&current).await.unwrap();
    // A kubelet's credential may not create Secrets.
    let node_client = client_for(&s.api.node_kubeconfig("n1").unwrap()).await;
    let e = run_rotation(
        &node_client,
        &s.rendezvous,
        current,
        ttl(),
        GRACE,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    let text = error_text(&e);
    assert_eq!(e.kind(), "token_create_failed", "{text}");
    assert!(!e.is_transient());
    assert!(
        e.to_string()
            .contains("POST /api/v1/namespaces/kube-system/secrets"),
        "{text}"
    );
    assert!(!e.to_string().contains('\n'), "{text}");
    assert_no_secret(&text, &all_secrets(&s.api));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_secret_in_any_log_line_or_error() {
    let logs = harness::logs::CapturedLogs::global();

    let s = setup().await;
    let now = SystemTime::now();
    let first = create_token(&s.client, ttl(), now, CLUSTER).await.unwrap();
    let current = ticket(&first, now + Duration::from_secs(60));
    s.rendezvous.publish(&current).await.unwrap();
    let mut errors = Vec::new();
    // A failure on the way (the Secret's POST answers 500).
    s.api.inject_fault(
        "/api/v1/namespaces/kube-system/secrets",
        FaultKind::Status(500),
        1,
    );
    errors.push(
        rotate(&s.client, &s.rendezvous, &current, ttl(), GRACE, now)
            .await
            .unwrap_err(),
    );
    let rotated = rotate(&s.client, &s.rendezvous, &current, ttl(), GRACE, now)
        .await
        .unwrap();
    delete_superseded_tokens(
        &s.client,
        rotated.token.id(),
        GRACE,
        now + GRACE + Duration::from_secs(2),
    )
    .await
    .unwrap();
    let node_client = client_for(&s.api.node_kubeconfig("n1").unwrap()).await;
    errors.push(
        rotate(
            &node_client,
            &s.rendezvous,
            &rotated,
            ttl(),
            GRACE,
            now + ttl().duration(),
        )
        .await
        .unwrap_err(),
    );
    errors.push(
        delete_superseded_tokens(&node_client, "abcdef", GRACE, now)
            .await
            .unwrap_err(),
    );
    let mut secrets = all_secrets(&s.api);
    secrets.push(first.expose_secret().to_string());
    let text = logs.text();
    assert!(
        text.contains("rotated the bootstrap token"),
        "the run logged: {text}"
    );
    assert!(text.contains(rotated.token.id()), "ids are logged");
    assert_no_secret(&text, &secrets);
    for e in &errors {
        assert_no_secret(&error_text(e), &secrets);
    }
    assert_no_secret(&format!("{rotated:?} {first:?} {first}"), &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_through_secrets_manager() {
    if require(Moto::available(), "moto (python3 with moto[server])") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let moto = Moto::start().expect("moto starts");
    let sdk = {
        use aws_config::retry::RetryConfig;
        use aws_config::{BehaviorVersion, Region};
        aws_config::defaults(BehaviorVersion::latest())
            .empty_test_environment()
            .test_credentials()
            .region(Region::new(DEFAULT_REGION))
            .endpoint_url(moto.endpoint())
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .load()
            .await
    };
    let rendezvous =
        Rendezvous::from_config(&RendezvousConfig::default(), CLUSTER, Some(&sdk)).unwrap();
    let api = TestApiServer::start().await.unwrap();
    let client = client_for(api.admin_kubeconfig_path()).await;
    let now = SystemTime::now();
    let first = create_token(&client, ttl(), now, CLUSTER).await.unwrap();
    let current = ticket(&first, now + Duration::from_secs(60));
    rendezvous.publish(&current).await.unwrap();
    let rotated = rotate(&client, &rendezvous, &current, ttl(), GRACE, now)
        .await
        .unwrap();
    assert_eq!(rendezvous.fetch().await.unwrap(), Some(rotated.clone()));
    assert_ne!(rotated.token, current.token);
    assert!(rotated.expires_at > current.expires_at);
    assert_eq!(
        token_ids(&api),
        BTreeSet::from([first.id().to_string(), rotated.token.id().to_string()])
    );
    // Re-running adopts what Secrets Manager holds.
    let again = rotate(&client, &rendezvous, &current, ttl(), GRACE, now)
        .await
        .unwrap();
    assert_eq!(again, rotated);
    assert_eq!(token_ids(&api).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_loop_never_adopts_a_ticket_for_another_server_and_publishes_its_own() {
    let s = setup().await;
    let now = SystemTime::now();
    let token = create_token(&s.client, ttl(), now, CLUSTER).await.unwrap();
    let ours = ticket(&token, now + ttl().duration());
    // Someone else's ticket: a later expiry, but their API server and CA.
    let mut planted = ours.clone();
    planted.endpoint = "10.66.6.6:6443".into();
    planted.ca_pins = vec![format!("sha256:{}", "66".repeat(32))];
    planted.expires_at = now + ttl().duration() * 2;
    s.rendezvous.publish(&planted).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = {
        let client = s.client.clone();
        let rendezvous = s.rendezvous.clone();
        let ours = ours.clone();
        tokio::spawn(async move {
            run_rotation(&client, &rendezvous, ours, ttl(), GRACE, async {
                let _ = stopped.await;
            })
            .await
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.rendezvous.fetch().await.unwrap() != Some(ours.clone()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the planted ticket is still published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(()).unwrap();
    agent.await.unwrap().unwrap();
}
