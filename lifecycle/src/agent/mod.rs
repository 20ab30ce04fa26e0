//! `hpk8s agent`: the long-running loops, on every node, supervised by
//! systemd (`Type=notify`: `READY=1` after the first GPU probe and publish
//! attempt, `WATCHDOG=1` only while the GPU event thread and the probe
//! loop are both alive).
//!
//! On every node that joins: GPU health ([`gpu_health`], its metrics in
//! [`metrics`]) and, on EC2, interruption notices ([`interruption`]), both
//! published with the node's own credential ([`node_status`]). On the
//! controller also: the join ticket kept fresh ([`token_rotation`]), the
//! controller's labels on nodes that join later ([`node_labels`]) and the
//! removal of elastic nodes that vanished ([`scale_in`]) and remediation
//! ([`crate::remediation`]). On self-managed nodes also the reboot the
//! controller's remediation requests ([`reboot_request`]).

pub mod gpu_health;
pub mod interruption;
pub mod metrics;
pub mod node_labels;
pub mod node_status;
pub mod reboot_request;
pub mod scale_in;
pub mod token_rotation;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures::FutureExt as _;
use kube::Client;

use crate::Error;
use crate::cluster::context::Context;
use crate::cluster::token_rotation::{DEFAULT_GRACE, ensure_ticket};
use crate::identity::Role;

/// Runs the agent's loops for this node's role until `shutdown` resolves.
pub async fn run(
    cx: &Context<'_>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let shutdown = shutdown.shared();
    let health = node_loops(cx, shutdown.clone());
    let controller = async {
        if cx.identity.role == Role::Controller && cx.identity.joins {
            // Started by phase prepare before `kubeadm init`: wait for the
            // control plane rather than fail.
            let mut logged = false;
            loop {
                match cx.formed_controller().await {
                    Ok(_) => break run_controller(cx, shutdown.clone()).await,
                    Err(e) if e.kind() == "control_plane_not_formed" => {
                        if !logged {
                            tracing::info!(
                                "the control plane is not formed yet; the controller's loops wait for it"
                            );
                            logged = true;
                        }
                        tokio::select! {
                            () = shutdown.clone() => break Ok(()),
                            () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
                        }
                    }
                    Err(e) => break Err(e),
                }
            }
        } else {
            shutdown.clone().await;
            Ok(())
        }
    };
    let ((), result) = tokio::join!(health, controller);
    scale_in::on_shutdown(cx).await;
    tracing::info!("agent stopped");
    result
}

/// GPU health, metrics, interruption notices and the systemd protocol.
async fn node_loops(cx: &Context<'_>, shutdown: impl Future<Output = ()> + Clone + Send + 'static) {
    let cfg = &cx.config.gpu_health;
    let state = Arc::new(Mutex::new(gpu_health::HealthState::default()));
    let liveness = Arc::new(gpu_health::Liveness::default());
    let gpu = gpu_health::Loop {
        host: cx.host.clone(),
        config: cfg.clone(),
        instance_type: cx.identity.instance_type.clone(),
        node_name: cx.identity.node_name.clone(),
        status: None,
        state: state.clone(),
        liveness: liveness.clone(),
    };
    let gpu = gpu.run(shutdown.clone());
    let metrics = async {
        if !cfg.metrics {
            return;
        }
        match tokio::net::TcpListener::bind(cfg.metrics_address).await {
            Ok(listener) => {
                tracing::info!(address = %cfg.metrics_address, "serving GPU health metrics");
                tokio::select! {
                    () = metrics::serve(listener, state.clone()) => {}
                    () = shutdown.clone() => {}
                }
            }
            Err(e) => {
                tracing::warn!(address = %cfg.metrics_address, error = %e, "cannot serve metrics")
            }
        }
    };
    let interruptions = async {
        let every = std::time::Duration::from_secs(cfg.interruption_poll_secs);
        let endpoint = crate::identity::imds_endpoint(
            cx.host,
            cx.config,
            crate::identity::imds::DEFAULT_ENDPOINT,
        );
        match endpoint {
            Some(endpoint) if !every.is_zero() => {
                let timeout =
                    std::time::Duration::from_millis(cx.config.identity.imds_timeout_ms.max(1));
                match crate::identity::ImdsClient::new(endpoint, timeout) {
                    Ok(imds) => {
                        interruption::run(
                            imds,
                            every,
                            cx.host.clone(),
                            cx.identity.node_name.clone(),
                            shutdown.clone(),
                        )
                        .await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot poll IMDS for interruption notices")
                    }
                }
            }
            _ => {}
        }
    };
    let systemd = watchdog(state.clone(), liveness, cfg.clone(), shutdown.clone());
    let reboots = async {
        if cx.identity.source != crate::identity::TopologySource::Hyperpod && cx.identity.joins {
            reboot_request::run(
                cx.host.clone(),
                cx.identity.node_name.clone(),
                reboot_request::CHECK_EVERY,
                shutdown.clone(),
            )
            .await;
        }
    };
    tokio::join!(gpu, metrics, interruptions, systemd, reboots);
}

/// `READY=1` once the first probe and publish attempt are done; then
/// `WATCHDOG=1` every half watchdog interval while both halves of the GPU
/// loop are alive. Outside systemd (no `NOTIFY_SOCKET`) nothing is sent.
async fn watchdog(
    state: Arc<Mutex<gpu_health::HealthState>>,
    liveness: Arc<gpu_health::Liveness>,
    cfg: crate::config::GpuHealthConfig,
    shutdown: impl Future<Output = ()>,
) {
    use sd_notify::NotifyState;
    tokio::pin!(shutdown);
    let mut usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut usec);
    let ping =
        std::time::Duration::from_micros(usec / 2).max(std::time::Duration::from_millis(500));
    // Both halves stamp at least every probe interval (plus a probe's
    // time-out and the event thread's wait).
    let window =
        std::time::Duration::from_secs(cfg.probe_interval_secs + cfg.probe_timeout_secs + 10);
    let mut ready = false;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200).min(ping));
    loop {
        tokio::select! {
            () = &mut shutdown => {
                let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
                return;
            }
            _ = tick.tick() => {}
        }
        if !ready && state.lock().map(|s| s.ready).unwrap_or(false) {
            ready = true;
            tracing::info!("agent ready");
            let _ = sd_notify::notify(false, &[NotifyState::Ready]);
            tick = tokio::time::interval(ping);
        }
        if ready && watchdog {
            if liveness.alive(window) {
                let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
            } else {
                tracing::error!(
                    "a GPU health loop is stuck: no watchdog ping, systemd will restart the agent"
                );
            }
        }
    }
}

async fn run_controller(
    cx: &Context<'_>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let client = cx.formed_controller().await?;
    let rendezvous = cx.rendezvous().await?;
    let ttl = cx.config.cluster.token_ttl;
    let (ticket, _) = ensure_ticket(
        client,
        rendezvous,
        &cx.ticket_fields()?,
        ttl,
        DEFAULT_GRACE,
        SystemTime::now(),
    )
    .await?;
    let shutdown = shutdown.shared();
    let rotation = token_rotation::run_rotation(
        client,
        rendezvous,
        ticket,
        ttl,
        DEFAULT_GRACE,
        shutdown.clone(),
    );
    let labelling = node_labels::label_joining_nodes(
        client,
        crate::cluster::nodes::group_labels(cx.config),
        shutdown.clone(),
    );
    let pruning = scale_in::run_pruning(client, cx.config, scale_in::PRUNE_EVERY, shutdown.clone());
    let remediation = remediation(cx, client, shutdown);
    let (rotated, labelled, removed, ()) = tokio::join!(rotation, labelling, pruning, remediation);
    tracing::info!(labelled, removed, "agent stopped");
    Ok(rotated?)
}

/// The controller's remediation loop and its metrics endpoint.
async fn remediation(
    cx: &Context<'_>,
    admin: &Client,
    shutdown: impl Future<Output = ()> + Clone + Send + 'static,
) {
    use crate::remediation::{controller, metrics::Metrics, restart::Route};
    let cfg = cx.config.remediation.clone();
    // Evictions must see 429s at once (the budget's name is in them):
    // a client without kube's own retries.
    let client = match crate::kube::client::client_with(
        cx.host,
        crate::kube::client::Credential::Admin,
        crate::kube::client::Retries::Caller,
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "remediation cannot start");
            return;
        }
    };
    let route = if cx.identity.source == crate::identity::TopologySource::Hyperpod {
        let cluster = cx
            .identity
            .cluster
            .arn
            .clone()
            .or_else(|| cx.identity.cluster.id.clone());
        let api = match cluster {
            Some(cluster) => match crate::aws::sdk_config(cx.host, cx.identity).await {
                Ok(sdk) => Some(crate::aws::sagemaker::SageMaker::new(&sdk, &cluster)),
                Err(e) => {
                    tracing::warn!(error = %e, "no SageMaker client for remediation; Slurm only");
                    None
                }
            },
            None => None,
        };
        Route::HyperPod {
            api,
            route: cfg.route,
        }
    } else {
        Route::SelfManaged
    };
    let controller_groups = cx
        .identity
        .groups
        .iter()
        .filter(|g| g.role == Role::Controller)
        .map(|g| g.name.clone())
        .collect();
    let needed = std::time::Duration::from_secs(cfg.replace_deadline_secs);
    let ticket_check: controller::TicketCheck<'_> =
        Box::new(move || Box::pin(ticket_for_replacement(cx, admin, needed)));
    let metrics = Arc::new(Mutex::new(Metrics::default()));
    let serving = {
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        let address = cfg.metrics_address;
        async move {
            match tokio::net::TcpListener::bind(address).await {
                Ok(listener) => {
                    tracing::info!(%address, "serving remediation metrics");
                    tokio::select! {
                        () = metrics::serve_text(listener, move || {
                            metrics.lock().map(|m| m.render()).unwrap_or_default()
                        }) => {}
                        () = shutdown => {}
                    }
                }
                Err(e) => tracing::warn!(%address, error = %e, "cannot serve remediation metrics"),
            }
        }
    };
    let setup = controller::Setup {
        client,
        config: cfg,
        host: cx.host.clone(),
        route,
        controller_groups,
        ticket_check: Some(ticket_check),
        metrics,
        pass_every: controller::PASS_EVERY,
    };
    tokio::join!(controller::run(setup, shutdown), serving);
}

/// Before a replacement: a published join ticket valid for longer than
/// `needed` (the new instance joins with it), publishing one if not.
pub async fn ticket_for_replacement(
    cx: &Context<'_>,
    client: &Client,
    needed: std::time::Duration,
) -> Result<(), String> {
    let rendezvous = cx.rendezvous().await.map_err(|e| e.to_string())?;
    let fields = cx.ticket_fields().map_err(|e| e.to_string())?;
    let ttl = cx.config.cluster.token_ttl;
    let now = SystemTime::now();
    let (ticket, _) = ensure_ticket(client, rendezvous, &fields, ttl, DEFAULT_GRACE, now)
        .await
        .map_err(|e| e.to_string())?;
    let left = ticket.expires_at.duration_since(now).unwrap_or_default();
    if left > needed {
        return Ok(());
    }
    if ttl.duration() <= needed {
        return Err(format!(
            "cluster.token_ttl ({} s) is not longer than remediation.replace_deadline_secs ({} s): a replacement could not join; raise token_ttl",
            ttl.duration().as_secs(),
            needed.as_secs()
        ));
    }
    crate::cluster::token_rotation::publish_new_token(
        client,
        rendezvous,
        &fields,
        ttl,
        DEFAULT_GRACE,
        now,
    )
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}
