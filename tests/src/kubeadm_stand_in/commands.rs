//! The subcommands: `version`, `init`, `join`, `token`, `reset`, with the
//! real tool's flags, progress lines and failure wording.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::api::{Api, status_of};
use super::config::{self, BootstrapTokenSpec, NodeRegistration};
use super::tokens::{self, Token, TokenSecret};
use super::{StandInConfig, jws, pki, write_mode, write_private};
use crate::kube_api::authz::node_may_set_label;

/// Node paths kubeadm writes (joined to the configured root).
pub const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
/// The kubelet's kubeconfig.
pub const KUBELET_CONF: &str = "/etc/kubernetes/kubelet.conf";
/// The cluster CA certificate.
pub const CA_CRT: &str = "/etc/kubernetes/pki/ca.crt";
/// The cluster CA key (control plane only).
pub const CA_KEY: &str = "/etc/kubernetes/pki/ca.key";
/// Static pod manifests.
pub const MANIFESTS: &str = "/etc/kubernetes/manifests";
/// The API server's static pod.
pub const APISERVER_MANIFEST: &str = "/etc/kubernetes/manifests/kube-apiserver.yaml";
/// The controller manager's static pod.
pub const CONTROLLER_MANAGER_MANIFEST: &str =
    "/etc/kubernetes/manifests/kube-controller-manager.yaml";
/// The kubelet flags kubeadm writes.
pub const KUBEADM_FLAGS: &str = "/var/lib/kubelet/kubeadm-flags.env";
/// The PKI directory.
pub const PKI_DIR: &str = "/etc/kubernetes/pki";

const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";
const EXCLUDE_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
const HIDDEN_READY: &str = "__kubelet-ready";

/// A failed command: what to print (one or more lines) and exit 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Failure(pub String);

fn phase(name: &str, e: impl std::fmt::Display) -> anyhow::Error {
    Failure(format!("error execution phase {name}: {e}")).into()
}

fn preflight_errors(errors: &[(String, String)]) -> anyhow::Error {
    let mut s =
        String::from("error execution phase preflight: [preflight] Some fatal errors occurred:");
    for (check, msg) in errors {
        s.push_str(&format!("\n\t[ERROR {check}]: {msg}"));
    }
    s.push_str("\n[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`");
    Failure(s).into()
}

/// `FileAvailable--etc-kubernetes-kubelet.conf` for `/etc/kubernetes/kubelet.conf`.
fn file_available(cfg: &StandInConfig, path: &str, ignored: &[String]) -> Option<(String, String)> {
    let check = format!("FileAvailable-{}", path.replace('/', "-"));
    let ignore = ignored
        .iter()
        .any(|i| i.eq_ignore_ascii_case(&check) || i == "all");
    (cfg.host_path(path).exists() && !ignore).then(|| (check, format!("{path} already exists")))
}

/// Command-line flags: `--name value`, `--name=value`, bare flags, and
/// positional arguments.
struct Flags {
    positional: Vec<String>,
    named: Vec<(String, Option<String>)>,
}

impl Flags {
    fn parse(args: &[String], with_value: &[&str], bare: &[&str]) -> anyhow::Result<Self> {
        let mut positional = Vec::new();
        let mut named = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(flag) = a
                .strip_prefix("--")
                .or_else(|| a.strip_prefix('-'))
                .filter(|_| a.len() > 1)
            else {
                positional.push(a.clone());
                continue;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            if name == "v" || name == "verbosity" {
                if inline.is_none() {
                    it.next();
                }
                continue;
            }
            if bare.contains(&name) {
                named.push((name.to_string(), inline));
            } else if with_value.contains(&name) {
                let value = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .with_context(|| format!("flag needs an argument: --{name}"))?
                        .clone(),
                };
                named.push((name.to_string(), Some(value)));
            } else {
                bail!(Failure(format!("unknown flag: --{name}")));
            }
        }
        Ok(Self { positional, named })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.named
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    fn has(&self, name: &str) -> bool {
        self.named.iter().any(|(n, _)| n == name)
    }

    fn ignored_preflight(&self) -> Vec<String> {
        self.named
            .iter()
            .filter(|(n, _)| n == "ignore-preflight-errors")
            .filter_map(|(_, v)| v.as_deref())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .collect()
    }
}

/// Runs a command line (without the program name). Output goes to stdout;
/// the error carries what the real tool prints on failure.
pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let Some((cmd, rest)) = args.split_first() else {
        bail!(Failure(
            "Usage:\n  kubeadm [command]\n\nAvailable Commands:\n  init join reset token version"
                .into()
        ));
    };
    match cmd.as_str() {
        "version" => version(rest),
        "init" => init(rest).await,
        "join" => join(rest).await,
        "token" => token(rest).await,
        "reset" => reset(rest),
        HIDDEN_READY => kubelet_ready(rest).await,
        other => bail!(Failure(format!(
            "unknown command \"{other}\" for \"kubeadm\"\nRun 'kubeadm --help' for usage."
        ))),
    }
}

fn version(args: &[String]) -> anyhow::Result<()> {
    let flags = Flags::parse(args, &["output", "o"], &[])?;
    let cfg = StandInConfig::from_env()?;
    let v = cfg.version.trim_start_matches('v');
    match flags.get("output").or(flags.get("o")) {
        Some("short") => println!("v{v}"),
        Some("json") => println!(
            "{}",
            json!({"clientVersion": {"gitVersion": format!("v{v}"), "major": v.split('.').next(),
                   "minor": config::minor_of(v).to_string(), "platform": "linux/amd64"}})
        ),
        Some(other) => bail!(Failure(format!("invalid output format: {other}"))),
        None => println!(
            "kubeadm version: &version.Info{{Major:\"{}\", Minor:\"{}\", GitVersion:\"v{v}\", Platform:\"linux/amd64\"}}",
            v.split('.').next().unwrap_or("1"),
            config::minor_of(v)
        ),
    }
    Ok(())
}

fn read_config_file(flags: &Flags) -> anyhow::Result<(PathBuf, String)> {
    let path = flags
        .get("config")
        .context("this kubeadm stand-in needs --config (flags-only init/join are not supported)")?;
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure(format!(
            "unable to read config from {path:?} : open {path}: {e}"
        ))
    })?;
    Ok((PathBuf::from(path), text))
}

/// The node name kubeadm defaults to: the host name, lower-cased.
fn host_name(cfg: &StandInConfig) -> String {
    std::fs::read_to_string(cfg.host_path("/etc/hostname"))
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
        })
        .unwrap_or_else(|| "localhost".to_string())
        .to_lowercase()
}

fn taint_list(taints: &[Value]) -> anyhow::Result<Vec<Value>> {
    taints
        .iter()
        .map(|t| {
            let key = t["key"].as_str().context("nodeRegistration.taints[].key is missing")?;
            let effect = t["effect"].as_str().context("nodeRegistration.taints[].effect is missing")?;
            if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
                bail!("nodeRegistration.taints: Unsupported value: {effect:?}: supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"");
            }
            let mut out = json!({"key": key, "effect": effect});
            if let Some(v) = t["value"].as_str() {
                out["value"] = json!(v);
            }
            Ok(out)
        })
        .collect()
}

/// Registers the Node as its kubelet would (own credential): labels from
/// `--node-labels` plus the kubelet's own, registration taints, the
/// address; NotReady until [`mark_ready`].
async fn register_node(
    cfg: &StandInConfig,
    node_api: &Api,
    name: &str,
    reg: &NodeRegistration,
    address: Option<&str>,
    taints: Vec<Value>,
) -> anyhow::Result<()> {
    let mut labels = serde_json::Map::new();
    for (k, v) in [
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", "amd64"),
    ] {
        labels.insert(k.to_string(), json!(v));
    }
    let requested = reg.node_labels();
    let mut refused: Vec<&str> = requested
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !node_may_set_label(k))
        .collect();
    refused.sort_unstable();
    if !refused.is_empty() {
        bail!(phase(
            "kubelet-start",
            format!(
                "the kubelet refused to start: unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: [{}]",
                refused.join(" ")
            )
        ));
    }
    for (k, v) in requested {
        labels.insert(k, json!(v));
    }
    let mut addresses = vec![json!({"type": "Hostname", "address": name})];
    if let Some(ip) = address {
        addresses.insert(0, json!({"type": "InternalIP", "address": ip}));
    }
    let mut annotations = json!({"node.alpha.kubernetes.io/ttl": "0",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true"});
    if let Some(sock) = &reg.cri_socket {
        annotations["kubeadm.alpha.kubernetes.io/cri-socket"] = json!(sock);
    }
    let mut spec = json!({"taints": taints});
    // kubelet's --provider-id becomes spec.providerID at registration.
    if let Some(id) = reg.kubelet_arg("provider-id") {
        spec["providerID"] = json!(id);
    }
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": spec,
        "status": {
            "addresses": addresses,
            "conditions": [condition(false)],
            "nodeInfo": {"kubeletVersion": format!("v{}", cfg.version.trim_start_matches('v')),
                         "operatingSystem": "linux", "architecture": "amd64",
                         "containerRuntimeVersion": "containerd://2.0.0"},
        },
    });
    match node_api.create("/api/v1/nodes", &node).await {
        Ok(_) => Ok(()),
        // A node re-joining under its old name: the kubelet adopts it.
        Err(e) if status_of(&e) == Some(reqwest::StatusCode::CONFLICT) => Ok(()),
        Err(e) => Err(phase(
            "kubelet-start",
            format!("the kubelet could not register node {name:?}: {e}"),
        )),
    }
}

fn condition(ready: bool) -> Value {
    let now = tokens::rfc3339(tokens::now());
    let (status, reason, message) = if ready {
        ("True", "KubeletReady", "kubelet is posting ready status")
    } else {
        (
            "False",
            "KubeletNotReady",
            "container runtime network not ready",
        )
    };
    json!({"type": "Ready", "status": status, "reason": reason, "message": message,
           "lastHeartbeatTime": now, "lastTransitionTime": now})
}

/// Turns the node Ready: now, or after the configured delay from a
/// detached copy of this program (as a kubelet would, later).
#[allow(clippy::disallowed_methods)] // test double: re-launches itself
async fn mark_ready(cfg: &StandInConfig, node_api: &Api, name: &str) -> anyhow::Result<()> {
    if cfg.node_ready_delay_ms == 0 {
        return set_ready(node_api, name).await;
    }
    let exe = std::env::current_exe().context("locating the kubeadm stand-in")?;
    std::process::Command::new(exe)
        .arg(HIDDEN_READY)
        .arg(name)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting the delayed kubelet-ready helper")?;
    Ok(())
}

async fn set_ready(node_api: &Api, name: &str) -> anyhow::Result<()> {
    node_api
        .merge_patch(
            &format!("/api/v1/nodes/{name}/status"),
            &json!({"status": {"conditions": [condition(true)]}}),
        )
        .await
        .map(|_| ())
}

async fn kubelet_ready(args: &[String]) -> anyhow::Result<()> {
    let cfg = StandInConfig::from_env()?;
    let name = args.first().context("node name missing")?;
    tokio::time::sleep(Duration::from_millis(cfg.node_ready_delay_ms)).await;
    let api = Api::new(&cfg, &pki::node(&cfg, name)?)?;
    set_ready(&api, name).await
}

fn flags_env(args: &[(String, String)]) -> String {
    let flags: Vec<String> = args.iter().map(|(n, v)| format!("--{n}={v}")).collect();
    format!("KUBELET_KUBEADM_ARGS=\"{}\"\n", flags.join(" "))
}

fn static_pod(component: &str, flags: &[(String, String)]) -> String {
    let mut command = format!("    - {component}\n");
    for (n, v) in flags {
        command.push_str(&format!("    - --{n}={v}\n"));
    }
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {component}\n  namespace: kube-system\n  labels:\n    component: {component}\n    tier: control-plane\nspec:\n  hostNetwork: true\n  containers:\n  - name: {component}\n    image: registry.k8s.io/{component}\n    command:\n{command}"
    )
}

fn validate_token_spec(i: usize, spec: &BootstrapTokenSpec) -> anyhow::Result<TokenSecret> {
    let token = Token::parse(&spec.token)
        .map_err(|e| anyhow::anyhow!("bootstrapTokens[{i}].token: Invalid value: {e}"))?;
    let usages = if spec.usages.is_empty() {
        vec!["authentication".to_string(), "signing".to_string()]
    } else {
        spec.usages.clone()
    };
    for u in &usages {
        if u != "authentication" && u != "signing" {
            bail!(
                "bootstrapTokens[{i}].usages: Invalid value: {u:?}: valid usages are [authentication signing]"
            );
        }
    }
    let ttl = match &spec.ttl {
        Some(t) => tokens::parse_duration(t)
            .map_err(|e| anyhow::anyhow!("bootstrapTokens[{i}].ttl: {e}"))?,
        None => tokens::DEFAULT_TTL,
    };
    Ok(TokenSecret {
        token,
        expires: expiry(ttl),
        usages,
        description: spec.description.clone(),
        groups: if spec.groups.is_empty() {
            vec![tokens::DEFAULT_GROUP.to_string()]
        } else {
            spec.groups.clone()
        },
    })
}

fn expiry(ttl: Duration) -> Option<i64> {
    (!ttl.is_zero()).then(|| tokens::now() + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2))
}

async fn init(args: &[String]) -> anyhow::Result<()> {
    let flags = Flags::parse(
        args,
        &[
            "config",
            "ignore-preflight-errors",
            "skip-phases",
            "upload-certs",
        ],
        &["skip-token-print", "dry-run"],
    )?;
    let cfg = StandInConfig::from_env()?;
    let (_, text) = read_config_file(&flags)?;
    let init = config::parse_init(&text, &cfg.version).map_err(|e| Failure(format!("{e:#}")))?;
    let version = init
        .kubernetes_version
        .clone()
        .unwrap_or_else(|| format!("v{}", cfg.version.trim_start_matches('v')));
    println!("[init] Using Kubernetes version: {version}");
    println!("[preflight] Running pre-flight checks");
    let ignored = flags.ignored_preflight();
    let errors: Vec<_> = [APISERVER_MANIFEST, CONTROLLER_MANAGER_MANIFEST]
        .iter()
        .filter_map(|p| file_available(&cfg, p, &ignored))
        .collect();
    if !errors.is_empty() {
        return Err(preflight_errors(&errors));
    }
    let mut token_secrets = Vec::new();
    for (i, spec) in init.bootstrap_tokens.iter().enumerate() {
        token_secrets.push(validate_token_spec(i, spec).map_err(|e| Failure(e.to_string()))?);
    }
    if token_secrets.is_empty() {
        token_secrets.push(TokenSecret {
            token: Token::generate()?,
            expires: expiry(tokens::DEFAULT_TTL),
            usages: vec!["authentication".into(), "signing".into()],
            description: None,
            groups: vec![tokens::DEFAULT_GROUP.into()],
        });
    }
    let name = init
        .node_registration
        .name
        .clone()
        .unwrap_or_else(|| host_name(&cfg));
    let address = init
        .advertise_address
        .clone()
        .unwrap_or_else(|| "127.0.0.1".to_string());

    println!("[certs] Using certificateDir folder \"{PKI_DIR}\"");
    write_mode(&cfg.host_path(CA_CRT), cfg.ca_cert_pem.as_bytes(), 0o644)?;
    write_private(&cfg.host_path(CA_KEY), cfg.ca_key_pem.as_bytes())?;
    println!("[kubeconfig] Writing \"admin.conf\" kubeconfig file");
    let admin_cred = pki::admin(&cfg)?;
    let admin_conf = pki::kubeconfig(&cfg, "kubernetes-admin", &admin_cred);
    write_private(
        &cfg.host_path(ADMIN_CONF),
        &serde_json::to_vec_pretty(&admin_conf)?,
    )?;
    println!("[kubeconfig] Writing \"kubelet.conf\" kubeconfig file");
    let node_cred = pki::node(&cfg, &name)?;
    let kubelet_conf = pki::kubeconfig(&cfg, &format!("system:node:{name}"), &node_cred);
    write_private(
        &cfg.host_path(KUBELET_CONF),
        &serde_json::to_vec_pretty(&kubelet_conf)?,
    )?;

    println!("[control-plane] Using manifest folder \"{MANIFESTS}\"");
    let mut apiserver = vec![
        ("advertise-address".to_string(), address.clone()),
        ("secure-port".to_string(), init.bind_port.to_string()),
        (
            "service-cluster-ip-range".to_string(),
            init.service_subnet
                .clone()
                .unwrap_or_else(|| "10.96.0.0/12".into()),
        ),
        (
            "enable-admission-plugins".to_string(),
            "NodeRestriction".to_string(),
        ),
    ];
    apiserver.extend(init.api_server_args.iter().cloned());
    write_private(
        &cfg.host_path(APISERVER_MANIFEST),
        static_pod("kube-apiserver", &apiserver).as_bytes(),
    )?;
    let mut cm = Vec::new();
    if let Some(pods) = &init.pod_subnet {
        cm.push(("allocate-node-cidrs".to_string(), "true".to_string()));
        cm.push(("cluster-cidr".to_string(), pods.clone()));
    }
    cm.extend(init.controller_manager_args.iter().cloned());
    write_private(
        &cfg.host_path(CONTROLLER_MANAGER_MANIFEST),
        static_pod("kube-controller-manager", &cm).as_bytes(),
    )?;
    let mut kubelet_args = init.node_registration.kubelet_extra_args.clone();
    if let Some(driver) = &init.cgroup_driver {
        kubelet_args.push(("cgroup-driver".to_string(), driver.clone()));
    }
    write_mode(
        &cfg.host_path(KUBEADM_FLAGS),
        flags_env(&kubelet_args).as_bytes(),
        0o644,
    )?;

    println!("[kubelet-start] Starting the kubelet");
    let admin = Api::new(&cfg, &admin_cred)?;
    let node_api = Api::new(&cfg, &node_cred)?;
    let taints = match &init.node_registration.taints {
        Some(t) => taint_list(t).map_err(|e| Failure(e.to_string()))?,
        None => vec![json!({"key": CONTROL_PLANE_LABEL, "effect": "NoSchedule"})],
    };
    let ip = init
        .node_registration
        .kubelet_arg("node-ip")
        .unwrap_or(&address)
        .to_string();
    register_node(
        &cfg,
        &node_api,
        &name,
        &init.node_registration,
        Some(&ip),
        taints,
    )
    .await?;
    println!(
        "[mark-control-plane] Marking the node {name} as control-plane by adding the labels: [{CONTROL_PLANE_LABEL} {EXCLUDE_LB_LABEL}]"
    );
    admin
        .merge_patch(
            &format!("/api/v1/nodes/{name}"),
            &json!({"metadata": {"labels": {CONTROL_PLANE_LABEL: "", EXCLUDE_LB_LABEL: ""}}}),
        )
        .await
        .map_err(|e| phase("mark-control-plane", e))?;

    println!("[bootstrap-token] Configuring bootstrap tokens, cluster-info ConfigMap, RBAC Roles");
    for t in &token_secrets {
        admin
            .create_or_replace(
                tokens::SECRETS,
                &format!("{}/bootstrap-token-{}", tokens::SECRETS, t.token.id),
                &t.to_secret(),
            )
            .await
            .map_err(|e| phase("bootstrap-token", e))?;
    }
    tokens::sign_cluster_info(&admin, Some(&pki::cluster_info_kubeconfig(&cfg)))
        .await
        .map_err(|e| phase("bootstrap-token", e))?;
    mark_ready(&cfg, &node_api, &name).await?;
    let pin = lifecycle::cluster::ca_pin::ca_pin(cfg.ca_cert_pem.as_bytes())?;
    let endpoint = init
        .control_plane_endpoint
        .clone()
        .unwrap_or_else(|| format!("{address}:{}", init.bind_port));
    println!("\nYour Kubernetes control-plane has initialized successfully!\n");
    println!(
        "To start using your cluster, you need to run the following as a regular user:\n\n  mkdir -p $HOME/.kube\n  sudo cp -i {ADMIN_CONF} $HOME/.kube/config\n"
    );
    println!(
        "Then you can join any number of worker nodes by running the following on each as root:\n"
    );
    println!(
        "kubeadm join {endpoint} --token <value withheld> \\\n\t--discovery-token-ca-cert-hash {pin}"
    );
    Ok(())
}

/// The CA of a `cluster-info` kubeconfig, PEM.
fn cluster_info_ca(kubeconfig: &str) -> anyhow::Result<Vec<u8>> {
    let v: Value =
        serde_saphyr::from_str(kubeconfig).context("the cluster-info kubeconfig does not parse")?;
    let data = v
        .pointer("/clusters/0/cluster/certificate-authority-data")
        .and_then(Value::as_str)
        .context("the cluster-info kubeconfig has no certificate-authority-data")?;
    B64.decode(data)
        .context("certificate-authority-data is not base64")
}

fn check_hash_format(h: &str) -> anyhow::Result<()> {
    let Some((kind, hex)) = h.split_once(':') else {
        bail!("invalid hash {h:?}, expected \"format:hex-value\"");
    };
    if kind != "sha256" {
        bail!("unknown hash format {kind:?} (in {h:?})");
    }
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("invalid hash {h:?}, expected a 64-digit hex SHA-256 value");
    }
    Ok(())
}

async fn join(args: &[String]) -> anyhow::Result<()> {
    let flags = Flags::parse(
        args,
        &["config", "ignore-preflight-errors", "skip-phases"],
        &["dry-run"],
    )?;
    let cfg = StandInConfig::from_env()?;
    let (_, text) = read_config_file(&flags)?;
    let join = config::parse_join(&text, &cfg.version).map_err(|e| Failure(format!("{e:#}")))?;
    println!("[preflight] Running pre-flight checks");
    let ignored = flags.ignored_preflight();
    let errors: Vec<_> = [KUBELET_CONF, CA_CRT]
        .iter()
        .filter_map(|p| file_available(&cfg, p, &ignored))
        .collect();
    if !errors.is_empty() {
        return Err(preflight_errors(&errors));
    }
    let d = &join.discovery;
    let token =
        Token::parse(&d.token).map_err(|e| Failure(format!("invalid discovery token: {e}")))?;
    for h in &d.ca_cert_hashes {
        check_hash_format(h).map_err(|e| phase("preflight", e))?;
    }
    let identity = |e: String| {
        phase(
            "preflight",
            format!("couldn't validate the identity of the API Server: {e}"),
        )
    };

    // Discovery: cluster-info fetched without trusting the server; the
    // JWS (made with the token) and the CA pin establish trust.
    let anonymous = Api::insecure_anonymous(&cfg)?;
    let info = anonymous
        .get(tokens::CLUSTER_INFO)
        .await
        .map_err(|e| identity(e.to_string()))?
        .ok_or_else(|| identity("configmaps \"cluster-info\" not found".to_string()))?;
    let kubeconfig = info["data"]["kubeconfig"].as_str().ok_or_else(|| {
        identity("there is no kubeconfig key in the cluster-info ConfigMap".to_string())
    })?;
    let Some(sig) = info["data"][format!("jws-kubeconfig-{}", token.id)].as_str() else {
        return Err(identity(format!(
            "could not find a JWS signature in the cluster-info ConfigMap for token ID {:?}",
            token.id
        )));
    };
    if !jws::verify_detached(sig, kubeconfig, &token.id, &token.secret) {
        return Err(identity("failed to verify JWS signature of received cluster info object, can't trust this API Server".to_string()));
    }
    let ca = cluster_info_ca(kubeconfig).map_err(|e| identity(format!("{e:#}")))?;
    let pin = lifecycle::cluster::ca_pin::ca_pin(&ca).map_err(|e| identity(e.to_string()))?;
    if !d.unsafe_skip_ca_verification
        && !d
            .ca_cert_hashes
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&pin))
    {
        return Err(identity(format!(
            "cluster CA found in cluster-info ConfigMap is invalid: none of the public keys {pin:?} are pinned"
        )));
    }
    println!(
        "[discovery] Successfully established connection with API Server {:?}",
        d.api_server_endpoint
    );

    // TLS bootstrap: the API server's token authenticator refuses expired
    // or deleted tokens (the stand-in checks the Secret as it would).
    let admin = Api::new(&cfg, &pki::admin(&cfg)?)?;
    let secret = admin
        .get(&format!("{}/bootstrap-token-{}", tokens::SECRETS, token.id))
        .await?
        .as_ref()
        .and_then(TokenSecret::from_secret);
    let unauthorized = |why: String| {
        phase(
            "kubelet-start",
            format!(
                "TLS bootstrap with token ID {:?} failed: {why}: Unauthorized",
                token.id
            ),
        )
    };
    match secret {
        None => return Err(unauthorized("no such bootstrap token".into())),
        Some(s) if s.token != token => {
            return Err(unauthorized("the token secret does not match".into()));
        }
        Some(s) if s.expired(tokens::now()) => {
            return Err(unauthorized(format!(
                "the token expired at {}",
                tokens::rfc3339(s.expires.unwrap_or_default())
            )));
        }
        Some(s) if !s.usages.iter().any(|u| u == "authentication") => {
            return Err(unauthorized(
                "the token is not valid for authentication".into(),
            ));
        }
        Some(_) => {}
    }

    let reg = &join.node_registration;
    let name = reg.name.clone().unwrap_or_else(|| host_name(&cfg));
    let taints = taint_list(reg.taints.as_deref().unwrap_or_default())
        .map_err(|e| Failure(e.to_string()))?;
    let node_cred = pki::node(&cfg, &name)?;
    let node_api = Api::new(&cfg, &node_cred)?;
    println!(
        "[kubelet-start] Writing kubelet configuration to file \"/var/lib/kubelet/config.yaml\""
    );
    write_mode(
        &cfg.host_path(KUBEADM_FLAGS),
        flags_env(&reg.kubelet_extra_args).as_bytes(),
        0o644,
    )?;
    println!("[kubelet-start] Starting the kubelet");
    register_node(
        &cfg,
        &node_api,
        &name,
        reg,
        reg.kubelet_arg("node-ip"),
        taints,
    )
    .await?;
    write_mode(&cfg.host_path(CA_CRT), &ca, 0o644)?;
    let kubelet_conf = pki::kubeconfig(&cfg, &format!("system:node:{name}"), &node_cred);
    write_private(
        &cfg.host_path(KUBELET_CONF),
        &serde_json::to_vec_pretty(&kubelet_conf)?,
    )?;
    mark_ready(&cfg, &node_api, &name).await?;
    println!(
        "\nThis node has joined the cluster:\n* Certificate signing request was sent to apiserver and a response was received.\n* The Kubelet was informed of the new secure connection details.\n\nRun 'kubectl get nodes' on the control-plane to see this node join the cluster."
    );
    Ok(())
}

fn admin_api(cfg: &StandInConfig, flags: &Flags) -> anyhow::Result<Api> {
    let path = flags
        .get("kubeconfig")
        .map(PathBuf::from)
        .unwrap_or_else(|| cfg.host_path(ADMIN_CONF));
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Failure(format!(
            "failed to load admin kubeconfig: open {}: {e}",
            path.display()
        ))
    })?;
    Api::new(cfg, &pki::credential_from_kubeconfig(&text)?)
}

async fn token(args: &[String]) -> anyhow::Result<()> {
    let flags = Flags::parse(
        args,
        &[
            "kubeconfig",
            "ttl",
            "description",
            "usages",
            "groups",
            "config",
        ],
        &["print-join-command"],
    )?;
    let cfg = StandInConfig::from_env()?;
    let Some((sub, rest)) = flags.positional.split_first() else {
        bail!(Failure(
            "missing subcommand; \"token\" is not meant to be run on its own".into()
        ));
    };
    let admin = admin_api(&cfg, &flags)?;
    match sub.as_str() {
        "create" => {
            let token = match rest.first() {
                Some(t) => Token::parse(t).map_err(|e| Failure(e.to_string()))?,
                None => Token::generate()?,
            };
            let ttl = tokens::parse_duration(flags.get("ttl").unwrap_or("24h0m0s"))
                .map_err(|e| Failure(format!("invalid argument for \"--ttl\" flag: {e}")))?;
            let csv = |name: &str, default: &str| -> Vec<String> {
                flags
                    .get(name)
                    .unwrap_or(default)
                    .split(',')
                    .map(String::from)
                    .collect()
            };
            let secret = TokenSecret {
                token,
                expires: expiry(ttl),
                usages: csv("usages", "signing,authentication"),
                description: flags.get("description").map(String::from),
                groups: csv("groups", tokens::DEFAULT_GROUP),
            };
            match admin.create(tokens::SECRETS, &secret.to_secret()).await {
                Err(e) if status_of(&e) == Some(reqwest::StatusCode::CONFLICT) => {
                    bail!(Failure(format!(
                        "failed to create bootstrap token with name \"bootstrap-token-{}\": a token with id {:?} already exists",
                        secret.token.id, secret.token.id
                    )));
                }
                other => other.map(|_| ())?,
            }
            tokens::sign_cluster_info(&admin, None).await?;
            if flags.has("print-join-command") {
                let pin = lifecycle::cluster::ca_pin::ca_pin(cfg.ca_cert_pem.as_bytes())?;
                let endpoint = cfg.api_url.trim_start_matches("https://");
                println!(
                    "kubeadm join {endpoint} --token {} --discovery-token-ca-cert-hash {pin} ",
                    secret.token.reveal()
                );
            } else {
                println!("{}", secret.token.reveal());
            }
            Ok(())
        }
        "list" => {
            let now = tokens::now();
            println!(
                "{:<24}  {:<9}  {:<21}  {:<23}  {:<30}  EXTRA GROUPS",
                "TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION"
            );
            for t in tokens::list(&admin).await? {
                let (ttl, expires) = match t.expires {
                    None => ("<forever>".to_string(), "<never>".to_string()),
                    Some(e) if e <= now => ("<invalid>".to_string(), tokens::rfc3339(e)),
                    Some(e) => (
                        tokens::human_ttl(Duration::from_secs(u64::try_from(e - now).unwrap_or(0))),
                        tokens::rfc3339(e),
                    ),
                };
                println!(
                    "{:<24}  {ttl:<9}  {expires:<21}  {:<23}  {:<30}  {}",
                    t.token.reveal(),
                    t.usages.join(","),
                    t.description.as_deref().unwrap_or("<none>"),
                    t.groups.join(",")
                );
            }
            Ok(())
        }
        "delete" => {
            if rest.is_empty() {
                bail!(Failure("missing argument; 'token delete' is missing token of form \"[a-z0-9]{6}\" or \"[a-z0-9]{6}\\.[a-z0-9]{16}\"".into()));
            }
            for arg in rest {
                let id = arg.split('.').next().unwrap_or_default();
                if id.len() != 6
                    || !id
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                {
                    bail!(Failure(
                        "given token didn't match pattern \"[a-z0-9]{6}\" or \"[a-z0-9]{6}\\.[a-z0-9]{16}\""
                            .to_string()
                    ));
                }
                let path = format!("{}/bootstrap-token-{id}", tokens::SECRETS);
                if !admin.delete(&path).await? {
                    bail!(Failure(format!(
                        "failed to delete bootstrap token with ID {id:?}: secrets \"bootstrap-token-{id}\" not found"
                    )));
                }
                println!("bootstrap token {id:?} deleted");
            }
            tokens::sign_cluster_info(&admin, None).await
        }
        other => bail!(Failure(format!(
            "unknown command \"{other}\" for \"kubeadm token\""
        ))),
    }
}

fn reset(args: &[String]) -> anyhow::Result<()> {
    let flags = Flags::parse(
        args,
        &["cri-socket", "ignore-preflight-errors", "kubeconfig"],
        &["force", "f"],
    )?;
    let cfg = StandInConfig::from_env()?;
    if !(flags.has("force") || flags.has("f")) {
        println!("[reset] Are you sure you want to proceed? [y/N]: ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).ok();
        if !answer.trim().eq_ignore_ascii_case("y") {
            bail!(Failure("aborted reset operation".into()));
        }
    }
    for dir in [MANIFESTS, PKI_DIR] {
        remove_dir_contents(&cfg.host_path(dir))?;
    }
    println!("[reset] Deleted contents of the etc directories: [{MANIFESTS} {PKI_DIR}]");
    let mut deleted = Vec::new();
    for file in [
        ADMIN_CONF,
        KUBELET_CONF,
        "/etc/kubernetes/super-admin.conf",
        "/etc/kubernetes/controller-manager.conf",
        "/etc/kubernetes/scheduler.conf",
        KUBEADM_FLAGS,
    ] {
        match std::fs::remove_file(cfg.host_path(file)) {
            Ok(()) => deleted.push(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("removing {file}: {e}"),
        }
    }
    println!("[reset] Deleting files: [{}]", deleted.join(" "));
    Ok(())
}

fn remove_dir_contents(dir: &Path) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries {
        let path = e?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}
