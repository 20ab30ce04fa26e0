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
//! removal of elastic nodes that vanished ([`scale_in`]).

pub mod gpu_health;
pub mod interruption;
pub mod metrics;
pub mod node_labels;
pub mod node_status;
pub mod scale_in;
pub mod token_rotation;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures::FutureExt as _;

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
    tokio::join!(gpu, metrics, interruptions, systemd);
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
    let pruning = scale_in::run_pruning(client, cx.config, scale_in::PRUNE_EVERY, shutdown);
    let (rotated, labelled, removed) = tokio::join!(rotation, labelling, pruning);
    tracing::info!(labelled, removed, "agent stopped");
    Ok(rotated?)
}
