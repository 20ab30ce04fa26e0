//! Benchmark: the controller's side of forming a large cluster against the
//! test API server. N workers register and turn Ready in random order over
//! a window (as kubelets of a big HyperPod cluster do); the controller's
//! `wait_and_label` watches them and labels each as it turns Ready.
//!
//! Reports: how long after the last node turned Ready the wait returned
//! with every label set (`labelled_after_last_ready_ms`), how many API
//! requests the watch made (a list and a watch, not N × polls), and how
//! many label requests were sent (one per node). Usage:
//! `bench_formation [NODES] [WINDOW_MS]` (defaults 1000 and 5000). Numbers
//! go to stdout as one JSON object.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use harness::kube_api::{NodeSpec, TestApiServer};
use lifecycle::cluster::nodes::{self, ExpectedNode};
use lifecycle::identity::{Peer, Role};

fn address(i: usize) -> IpAddr {
    let i = u32::try_from(i).unwrap_or(u32::MAX);
    IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let window_ms: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5000);
    let _ = rustls::crypto::ring::default_provider().install_default();

    let api = TestApiServer::start().await?;
    let kubeconfig = kube::config::Kubeconfig::read_from(api.admin_kubeconfig_path())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;

    let expected: Vec<ExpectedNode> = (1..=count)
        .map(|i| {
            ExpectedNode::from_peer(&Peer {
                address: address(i),
                name: None,
                group: "worker-group-1".into(),
                role: Role::Worker,
                instance_id: Some(format!("i-{i:017x}")),
            })
        })
        .collect();
    for i in 1..=count {
        api.register_node(&NodeSpec {
            name: nodes::address_name(address(i)),
            addresses: vec![("InternalIP".into(), address(i).to_string())],
            labels: vec![("hpk8s.io/instance-group".into(), "worker-group-1".into())],
            taints: vec![],
        })?;
    }
    api.clear_requests();

    // Each node turns Ready at a random moment of the window.
    let mut order: Vec<usize> = (1..=count).collect();
    fastrand::shuffle(&mut order);
    let step = Duration::from_millis(window_ms) / u32::try_from(count.max(1)).unwrap_or(1);
    let started = Instant::now();
    let wait = tokio::spawn({
        let client = client.clone();
        let expected = expected.clone();
        async move {
            nodes::wait_and_label(
                &client,
                &nodes::Expectations::of_nodes(&expected),
                Duration::from_secs(600),
            )
            .await
        }
    });
    let mut last_ready = Duration::ZERO;
    for (n, i) in order.into_iter().enumerate() {
        api.set_ready(&nodes::address_name(address(i)), true)?;
        last_ready = started.elapsed();
        if n + 1 < count {
            tokio::time::sleep(step).await;
        }
    }
    let report = wait.await?.context("wait_and_label")?;
    let returned = started.elapsed();
    let requests = api.requests();
    let label_requests = requests
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.starts_with("/api/v1/nodes/"))
        .count();
    let watch_requests = requests.len() - label_requests;

    println!(
        "{}",
        serde_json::json!({
            "nodes": count,
            "ready_window_ms": window_ms,
            "last_ready_ms": last_ready.as_millis(),
            "wait_returned_ms": returned.as_millis(),
            "labelled_after_last_ready_ms": returned.saturating_sub(last_ready).as_millis(),
            "watch_api_requests": watch_requests,
            "labelled_nodes": report.labelled,
            "labelling_api_requests": label_requests,
        })
    );
    Ok(())
}
