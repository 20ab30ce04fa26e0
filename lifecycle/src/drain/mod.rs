//! Draining a node: every pod evicted through the Eviction API (budgets
//! honoured), with a deadline, bounded concurrency and a report that names
//! every pod still there and the budget holding it. Used by remediation
//! and by the operator commands that replace or reboot an instance.
//!
//! Which pods go follows kubectl's drain: DaemonSet pods and mirror
//! (static) pods stay; finished pods go; pods with `emptyDir` volumes go
//! when [`Options::evict_empty_dir`]; pods no controller owns only when
//! [`Options::evict_unmanaged`] (nothing would recreate them). Unlike
//! kubectl, a budget that blocks is named (from the 429's cause; the
//! several-budgets 500 names none, so the overlapping budgets are found by
//! their selectors), and the drain stops at its deadline instead of
//! waiting forever.
//!
//! The Eviction body is posted as `policy/v1` JSON here: kube 5's
//! `Api::evict` serialises the delete options under a key the API server
//! ignores, which silently drops the grace period and the UID
//! precondition. The client should be built with
//! [`crate::kube::client::Retries::Caller`]: kube's own retries would
//! hide a budget's 429 for minutes.

pub mod budgets;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::{Client, ResourceExt as _};
use serde::Serialize;
use tokio::time::Instant;

use crate::error::class::classify;
use crate::kube::client::timed;

/// The annotation of a mirror (static) pod.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Pods listed per page.
const PAGE: u32 = 500;

/// How a drain behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// When the drain stops and reports what is left.
    pub deadline: Duration,
    /// Evictions in flight at once.
    pub concurrency: usize,
    /// Evict pods with `emptyDir` volumes (their data is lost).
    pub evict_empty_dir: bool,
    /// Evict pods no controller owns (nothing recreates them).
    pub evict_unmanaged: bool,
    /// Delete instead of evicting: budgets are not consulted.
    pub ignore_budgets: bool,
    /// The grace period sent with each eviction; `None`: each pod's own.
    pub grace_period_secs: Option<i64>,
    /// How long to wait before trying a blocked pod again (jittered by
    /// ±20 %).
    pub retry_every: Duration,
    /// How often an evicted pod is looked for until it is gone.
    pub poll_every: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            deadline: Duration::from_secs(900),
            concurrency: 8,
            evict_empty_dir: true,
            evict_unmanaged: false,
            ignore_budgets: false,
            grace_period_secs: None,
            retry_every: Duration::from_secs(5),
            poll_every: Duration::from_secs(1),
        }
    }
}

impl Options {
    /// The drain `[remediation]` configures.
    pub fn from_config(c: &crate::config::RemediationConfig) -> Self {
        Options {
            deadline: Duration::from_secs(c.drain_timeout_secs),
            concurrency: usize::try_from(c.drain_concurrency).unwrap_or(8).max(1),
            evict_empty_dir: c.evict_empty_dir,
            evict_unmanaged: c.evict_unmanaged,
            ignore_budgets: c.ignore_budgets,
            ..Options::default()
        }
    }
}

/// Why a pod is still on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Blocker {
    /// A PodDisruptionBudget refused the eviction (429).
    Budget {
        /// The budget.
        budget: String,
        /// The API server's words (`needs 2 healthy pods and has 2 currently`).
        message: String,
    },
    /// Several budgets select the pod: the Eviction API refuses every
    /// eviction of it (500) until all but one are removed.
    OverlappingBudgets {
        /// The budgets selecting it.
        budgets: Vec<String>,
    },
    /// It has `emptyDir` volumes and `evict_empty_dir` is off.
    EmptyDir,
    /// No controller owns it and `evict_unmanaged` is off.
    Unmanaged,
    /// Evicted, still terminating at the deadline.
    Terminating,
    /// The API server refused (403: e.g. its namespace is terminating).
    Forbidden {
        /// The API server's message.
        message: String,
    },
    /// The eviction failed otherwise (the last error).
    Error {
        /// What went wrong.
        message: String,
    },
    /// The deadline came before the drain got to it.
    NotTried,
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blocker::Budget { budget, message } => write!(f, "budget {budget}: {message}"),
            Blocker::OverlappingBudgets { budgets } => write!(
                f,
                "selected by several budgets ({}); the Eviction API refuses it until one remains",
                budgets.join(", ")
            ),
            Blocker::EmptyDir => write!(
                f,
                "has emptyDir volumes (allow with remediation.evict_empty_dir or --delete-emptydir-data)"
            ),
            Blocker::Unmanaged => write!(
                f,
                "no controller owns it, nothing would recreate it (allow with remediation.evict_unmanaged or --force)"
            ),
            Blocker::Terminating => write!(f, "evicted, still terminating"),
            Blocker::Forbidden { message } => write!(f, "forbidden: {message}"),
            Blocker::Error { message } => write!(f, "{message}"),
            Blocker::NotTried => write!(f, "not evicted before the deadline"),
        }
    }
}

/// A pod still on the node when the drain stopped.
#[derive(Debug, Clone, Serialize)]
pub struct Remaining {
    /// `namespace/name`.
    pub pod: String,
    /// Why.
    pub blocker: Blocker,
    /// Every budget that selects it.
    pub budgets: Vec<String>,
}

/// A pod the drain leaves alone by design.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// `namespace/name`.
    pub pod: String,
    /// `daemonset` or `mirror`.
    pub reason: &'static str,
}

/// What a drain did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The node.
    pub node: String,
    /// Every pod that had to go is gone.
    pub finished: bool,
    /// Seconds the drain took.
    pub elapsed_secs: f64,
    /// Pods evicted (or deleted) and gone.
    pub evicted: Vec<String>,
    /// Pods evicted on a node that is not Ready and not waited for beyond
    /// their grace period (a dead kubelet never confirms; deleting the Node
    /// lets the garbage collector remove them).
    pub left_terminating: Vec<String>,
    /// Pods left alone by design.
    pub skipped: Vec<Skipped>,
    /// Pods still there, with what holds each.
    pub remaining: Vec<Remaining>,
}

impl Report {
    /// One line: the pods still there and why, for Events and errors.
    pub fn summary(&self) -> String {
        if self.finished {
            return format!(
                "node {} drained in {:.0} s: {} pod(s) evicted",
                self.node,
                self.elapsed_secs,
                self.evicted.len() + self.left_terminating.len()
            );
        }
        let pods: Vec<String> = self
            .remaining
            .iter()
            .map(|r| format!("{} ({})", r.pod, r.blocker))
            .collect();
        format!(
            "node {} not drained after {:.0} s: {} pod(s) still there: {}",
            self.node,
            self.elapsed_secs,
            self.remaining.len(),
            pods.join("; ")
        )
    }
}

/// Why a drain could not start.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The node's pods could not be listed.
    #[error("cannot list the pods of node {node}: {source}")]
    List {
        /// The node.
        node: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

classify!(DrainError {
    List { .. } => Unavailable "drain_list_failed";
});

fn pod_key(p: &Pod) -> String {
    format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
}

fn is_mirror(p: &Pod) -> bool {
    p.annotations().contains_key(MIRROR_ANNOTATION)
}

fn controller_kind(p: &Pod) -> Option<&str> {
    p.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.kind.as_str())
}

fn has_empty_dir(p: &Pod) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| v.iter().any(|v| v.empty_dir.is_some()))
}

fn finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// What became of one pod.
enum Outcome {
    Gone(String),
    LeftTerminating(String),
    Remaining(Box<Pod>, Blocker),
}

/// Drains `node` (cordoning is the caller's). Returns the report; the
/// drain itself never fails for a pod, it reports it.
pub async fn drain(client: &Client, node: &str, opts: &Options) -> Result<Report, DrainError> {
    let started = Instant::now();
    let deadline = started + opts.deadline;
    let pods_api: Api<Pod> = Api::all(client.clone());
    let mut pods = Vec::new();
    let mut lp = ListParams::default()
        .fields(&format!("spec.nodeName={node}"))
        .limit(PAGE);
    loop {
        let page = timed(pods_api.list(&lp))
            .await
            .map_err(|source| DrainError::List {
                node: node.to_string(),
                source,
            })?;
        pods.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => break,
        }
    }
    let ready = match timed(Api::<Node>::all(client.clone()).get_opt(node)).await {
        Ok(Some(n)) => crate::cluster::nodes::inventory::is_ready(&n),
        // Gone or unreadable: do not wait for a kubelet that may be dead.
        Ok(None) | Err(_) => false,
    };

    let mut report = Report {
        node: node.to_string(),
        finished: false,
        elapsed_secs: 0.0,
        evicted: Vec::new(),
        left_terminating: Vec::new(),
        skipped: Vec::new(),
        remaining: Vec::new(),
    };
    let mut held: Vec<(Pod, Blocker)> = Vec::new();
    let mut to_evict = Vec::new();
    for p in pods {
        if is_mirror(&p) {
            report.skipped.push(Skipped {
                pod: pod_key(&p),
                reason: "mirror",
            });
        } else if controller_kind(&p) == Some("DaemonSet") {
            report.skipped.push(Skipped {
                pod: pod_key(&p),
                reason: "daemonset",
            });
        } else if finished(&p) || p.metadata.deletion_timestamp.is_some() {
            to_evict.push(p);
        } else if has_empty_dir(&p) && !opts.evict_empty_dir {
            held.push((p, Blocker::EmptyDir));
        } else if controller_kind(&p).is_none() && !opts.evict_unmanaged {
            held.push((p, Blocker::Unmanaged));
        } else {
            to_evict.push(p);
        }
    }
    tracing::info!(
        node,
        pods = to_evict.len(),
        held = held.len(),
        skipped = report.skipped.len(),
        ready,
        "draining"
    );

    let budgets_cache: Arc<Mutex<BTreeMap<String, Vec<PodDisruptionBudget>>>> = Arc::default();
    let outcomes: Vec<Outcome> = futures::stream::iter(to_evict)
        .map(|p| evict_one(client, p, opts, deadline, ready, &budgets_cache))
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    for o in outcomes {
        match o {
            Outcome::Gone(k) => report.evicted.push(k),
            Outcome::LeftTerminating(k) => report.left_terminating.push(k),
            Outcome::Remaining(p, b) => held.push((*p, b)),
        }
    }
    for (p, blocker) in held {
        let budgets = match &blocker {
            Blocker::Budget { budget, .. } => vec![budget.clone()],
            Blocker::OverlappingBudgets { budgets } => budgets.clone(),
            _ => budgets_of(client, &p, &budgets_cache).await,
        };
        report.remaining.push(Remaining {
            pod: pod_key(&p),
            blocker,
            budgets,
        });
    }
    report.evicted.sort();
    report.left_terminating.sort();
    report.remaining.sort_by(|a, b| a.pod.cmp(&b.pod));
    report.skipped.sort_by(|a, b| a.pod.cmp(&b.pod));
    report.finished = report.remaining.is_empty();
    report.elapsed_secs = started.elapsed().as_secs_f64();
    if report.finished {
        tracing::info!(node, "{}", report.summary());
    } else {
        tracing::warn!(node, "{}", report.summary());
    }
    Ok(report)
}

/// The budgets selecting `p` (its namespace's budgets listed once per drain).
async fn budgets_of(
    client: &Client,
    p: &Pod,
    cache: &Mutex<BTreeMap<String, Vec<PodDisruptionBudget>>>,
) -> Vec<String> {
    let ns = p.namespace().unwrap_or_default();
    let cached = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&ns)
        .cloned();
    let list = match cached {
        Some(l) => l,
        None => {
            let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
            match timed(api.list(&ListParams::default())).await {
                Ok(l) => {
                    cache
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(ns.clone(), l.items.clone());
                    l.items
                }
                Err(e) => {
                    tracing::debug!(namespace = %ns, error = %e, "cannot list the budgets");
                    Vec::new()
                }
            }
        }
    };
    budgets::selecting(&list, p.labels())
}

/// `base` ±20 %.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(0.8 + fastrand::f64() * 0.4)
}

/// Evicts one pod and waits for it to go, until `deadline`.
async fn evict_one(
    client: &Client,
    pod: Pod,
    opts: &Options,
    deadline: Instant,
    node_ready: bool,
    cache: &Mutex<BTreeMap<String, Vec<PodDisruptionBudget>>>,
) -> Outcome {
    let key = pod_key(&pod);
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let uid = pod.uid().unwrap_or_default();
    let grace = opts.grace_period_secs.or_else(|| {
        pod.spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
    });
    let mut blocker = Blocker::NotTried;
    let mut evicted_at = pod
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|_| Instant::now());
    while evicted_at.is_none() {
        if Instant::now() >= deadline {
            return Outcome::Remaining(Box::new(pod), blocker);
        }
        // Bounded by the deadline even when the client itself retries
        // (kube's own 429 backoff would otherwise overrun it).
        let call = async {
            if opts.ignore_budgets {
                delete(client, &ns, &name, &uid, grace).await
            } else {
                evict(client, &ns, &name, &uid, grace).await
            }
        };
        let Ok(result) = tokio::time::timeout_at(deadline, call).await else {
            return Outcome::Remaining(Box::new(pod), blocker);
        };
        match result {
            Ok(()) => {
                tracing::debug!(pod = %key, "evicted");
                evicted_at = Some(Instant::now());
            }
            Err(kube::Error::Api(s)) if s.code == 404 => return Outcome::Gone(key),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // The UID precondition failed: a new pod of the same name;
                // the one we were asked to move is gone.
                return Outcome::Gone(key);
            }
            Err(kube::Error::Api(s)) if s.code == 429 => {
                blocker = match budgets::named_in(&s) {
                    Some(budget) => Blocker::Budget {
                        message: s
                            .details
                            .as_ref()
                            .and_then(|d| d.causes.first())
                            .map(|c| {
                                c.message
                                    .strip_prefix(&format!("The disruption budget {budget} "))
                                    .unwrap_or(&c.message)
                                    .to_string()
                            })
                            .unwrap_or_else(|| s.message.clone()),
                        budget,
                    },
                    None => Blocker::Error {
                        message: format!("the API server asks to slow down: {}", s.message),
                    },
                };
                tracing::debug!(pod = %key, "{blocker}");
            }
            Err(kube::Error::Api(s))
                if s.code == 500 && s.message.contains("more than one PodDisruptionBudget") =>
            {
                blocker = Blocker::OverlappingBudgets {
                    budgets: budgets_of(client, &pod, cache).await,
                };
            }
            Err(kube::Error::Api(s)) if s.code == 403 => {
                blocker = Blocker::Forbidden { message: s.message };
            }
            Err(e) => {
                blocker = Blocker::Error {
                    message: e.to_string(),
                };
            }
        }
        if evicted_at.is_none() {
            let wait = jittered(opts.retry_every);
            tokio::time::sleep_until((Instant::now() + wait).min(deadline)).await;
        }
    }
    // Evicted: wait until it is gone (404, or a new pod under its name).
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let evicted_at = evicted_at.unwrap_or_else(Instant::now);
    let grace_wait = Duration::from_secs(u64::try_from(grace.unwrap_or(30)).unwrap_or(30));
    loop {
        match timed(pods.get_opt(&name)).await {
            Ok(None) => return Outcome::Gone(key),
            Ok(Some(p)) if p.uid().unwrap_or_default() != uid => return Outcome::Gone(key),
            Ok(Some(_)) | Err(_) => {}
        }
        if !node_ready && evicted_at.elapsed() >= grace_wait {
            tracing::debug!(pod = %key, "left terminating on a node that is not Ready");
            return Outcome::LeftTerminating(key);
        }
        if Instant::now() >= deadline {
            return Outcome::Remaining(Box::new(pod), Blocker::Terminating);
        }
        tokio::time::sleep_until((Instant::now() + opts.poll_every).min(deadline)).await;
    }
}

/// Posts a `policy/v1` Eviction with the grace period and a UID precondition.
async fn evict(
    client: &Client,
    ns: &str,
    name: &str,
    uid: &str,
    grace: Option<i64>,
) -> Result<(), kube::Error> {
    let mut delete_options = serde_json::json!({"preconditions": {"uid": uid}});
    if let Some(g) = grace {
        delete_options["gracePeriodSeconds"] = serde_json::json!(g);
    }
    let body = serde_json::json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": ns},
        "deleteOptions": delete_options,
    });
    let request = http::Request::post(format!("/api/v1/namespaces/{ns}/pods/{name}/eviction"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).unwrap_or_default())
        .map_err(|e| kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(e)))?;
    timed(client.request::<serde_json::Value>(request)).await?;
    Ok(())
}

/// Deletes the pod (budgets not consulted), UID precondition kept.
async fn delete(
    client: &Client,
    ns: &str,
    name: &str,
    uid: &str,
    grace: Option<i64>,
) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let params = DeleteParams {
        grace_period_seconds: grace.and_then(|g| u32::try_from(g).ok()),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    timed(api.delete(name, &params)).await?;
    Ok(())
}
