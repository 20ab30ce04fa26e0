//! The AWS doubles the agent will talk to, checked through the real AWS SDK
//! for Rust: moto's Secrets Manager, and SageMaker HyperPod cluster-node APIs
//! as patched by `tests/moto/hpk8s_moto.py` (pagination, `i-…` ids, host
//! names and addresses, Batch calls, replacement states, throttling).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_sagemaker::error::ProvideErrorMetadata;
use aws_sdk_sagemaker::types::ClusterInstanceStatus;
use harness::moto::{DEFAULT_REGION, Moto, SeededCluster, resource_config};

/// A fresh server, or `None` (outside CI only) when moto is not installed.
fn moto() -> Option<Moto> {
    if harness::moto::skip_without_moto() {
        return None;
    }
    Some(Moto::start().expect("start moto"))
}

async fn sagemaker(moto: &Moto) -> aws_sdk_sagemaker::Client {
    aws_sdk_sagemaker::Client::new(&moto.sdk_config(DEFAULT_REGION).await)
}

/// 250 nodes in three groups, as a 250-node HyperPod cluster would report.
async fn seed_250(moto: &Moto) -> (SeededCluster, serde_json::Value) {
    let doc = resource_config(
        "ml-cluster",
        DEFAULT_REGION,
        &[
            ("controller-machine", "ml.m5.2xlarge", 1),
            ("worker-group-1", "ml.p5.48xlarge", 200),
            ("worker-group-2", "ml.g5.8xlarge", 49),
        ],
    );
    let seeded = moto.seed_cluster(&doc).await.expect("seed the cluster");
    assert_eq!(seeded.node_ids.len(), 250);
    (seeded, doc)
}

fn is_instance_id(id: &str) -> bool {
    id.strip_prefix("i-")
        .is_some_and(|hex| hex.len() == 17 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Seeded addresses by instance name order = seed order.
fn seeded_ips(doc: &serde_json::Value) -> Vec<String> {
    doc["InstanceGroups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["Instances"].as_array().cloned().unwrap_or_default())
        .map(|i| {
            i["CustomerIpAddress"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn list_cluster_nodes_pages_through_250_unique_nodes() {
    let Some(moto) = moto() else { return };
    let (seeded, doc) = seed_250(&moto).await;
    let client = sagemaker(&moto).await;

    // By hand: 100 + 100 + 50, tokens until the last page.
    let mut token: Option<String> = None;
    let mut sizes = Vec::new();
    let mut ids = Vec::new();
    let mut hosts = HashMap::new();
    loop {
        let page = client
            .list_cluster_nodes()
            .cluster_name("ml-cluster")
            .max_results(100)
            .set_next_token(token.take())
            .send()
            .await
            .expect("ListClusterNodes");
        let summaries = page.cluster_node_summaries();
        sizes.push(summaries.len());
        for node in summaries {
            let id = node.instance_id().expect("InstanceId").to_owned();
            let host = node
                .private_dns_hostname()
                .expect("PrivateDnsHostname")
                .to_owned();
            assert!(node.launch_time().is_some() && node.instance_status().is_some());
            hosts.insert(id.clone(), host);
            ids.push(id);
        }
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(sizes, [100, 100, 50]);
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 250, "duplicate nodes across pages");
    assert!(ids.iter().all(|id| is_instance_id(id)), "{:?}", &ids[..3]);
    // Stable order: seed order, and every seeded node comes back.
    assert_eq!(ids, seeded.node_ids);
    let want_hosts: BTreeSet<String> = seeded_ips(&doc)
        .iter()
        .map(|ip| {
            format!(
                "ip-{}.{DEFAULT_REGION}.compute.internal",
                ip.replace('.', "-")
            )
        })
        .collect();
    assert_eq!(hosts.values().cloned().collect::<BTreeSet<_>>(), want_hosts);

    // The SDK's own paginator terminates and yields each node once.
    let mut pages = client
        .list_cluster_nodes()
        .cluster_name(&seeded.cluster_arn)
        .into_paginator()
        .page_size(7)
        .send();
    let mut paged = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.expect("a page");
        paged.extend(
            page.cluster_node_summaries()
                .iter()
                .filter_map(|n| n.instance_id().map(str::to_owned)),
        );
    }
    assert_eq!(paged, seeded.node_ids);

    // MaxResults outside 1..=100 is a validation error, as in the service.
    for bad in [0, 101] {
        let err = client
            .list_cluster_nodes()
            .cluster_name("ml-cluster")
            .max_results(bad)
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some("ValidationException"),
            "MaxResults {bad}: {err:?}"
        );
    }
    let groups = client
        .list_cluster_nodes()
        .cluster_name("ml-cluster")
        .instance_group_name_contains("worker-group-2")
        .send()
        .await
        .unwrap();
    assert_eq!(groups.cluster_node_summaries().len(), 49);
}

#[tokio::test]
async fn describe_cluster_node_returns_the_private_address() {
    let Some(moto) = moto() else { return };
    let (seeded, doc) = seed_250(&moto).await;
    let client = sagemaker(&moto).await;
    let ips = seeded_ips(&doc);
    for i in [0, 1, 249] {
        let out = client
            .describe_cluster_node()
            .cluster_name(&seeded.cluster_arn)
            .node_id(&seeded.node_ids[i])
            .send()
            .await
            .expect("DescribeClusterNode");
        let node = out.node_details().expect("NodeDetails");
        assert_eq!(node.instance_id(), Some(seeded.node_ids[i].as_str()));
        assert_eq!(node.private_primary_ip(), Some(ips[i].as_str()));
        let host = format!(
            "ip-{}.{DEFAULT_REGION}.compute.internal",
            ips[i].replace('.', "-")
        );
        assert_eq!(node.private_dns_hostname(), Some(host.as_str()));
        assert_eq!(
            node.instance_status().and_then(|s| s.status()),
            Some(&ClusterInstanceStatus::Running)
        );
    }
    let err = client
        .describe_cluster_node()
        .cluster_name("ml-cluster")
        .node_id("i-0123456789abcdef0")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_resource_not_found()),
        "{err:?}"
    );
    let err = client
        .describe_cluster_node()
        .cluster_name("no-such-cluster")
        .node_id(&seeded.node_ids[0])
        .send()
        .await;
    assert!(
        err.unwrap_err()
            .as_service_error()
            .is_some_and(|e| e.is_resource_not_found())
    );
}

#[tokio::test]
async fn batch_calls_answer_with_successful_and_failed_nodes() {
    let Some(moto) = moto() else { return };
    let (seeded, _) = seed_250(&moto).await;
    let client = sagemaker(&moto).await;
    let unknown = "i-0000000000000dead";

    let out = client
        .batch_reboot_cluster_nodes()
        .cluster_name("ml-cluster")
        .node_ids(&seeded.node_ids[10])
        .node_ids(unknown)
        .send()
        .await
        .expect("BatchRebootClusterNodes");
    assert_eq!(out.successful(), [seeded.node_ids[10].clone()]);
    let failed = out.failed();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].node_id(), Some(unknown));
    assert_eq!(
        failed[0].error_code().map(|c| c.as_str()),
        Some("InstanceIdNotFound")
    );
    assert!(failed[0].message().is_some_and(|m| !m.is_empty()));

    // A node that is already being rebooted cannot be replaced.
    let out = client
        .batch_replace_cluster_nodes()
        .cluster_name("ml-cluster")
        .node_ids(&seeded.node_ids[10])
        .send()
        .await
        .expect("BatchReplaceClusterNodes");
    assert!(out.successful().is_empty());
    assert_eq!(
        out.failed()[0].error_code().map(|c| c.as_str()),
        Some("InvalidInstanceStatus")
    );

    // At most 25 nodes per reboot/replace call.
    let mut too_many = client
        .batch_reboot_cluster_nodes()
        .cluster_name("ml-cluster");
    for id in &seeded.node_ids[20..46] {
        too_many = too_many.node_ids(id);
    }
    assert_eq!(
        too_many.send().await.unwrap_err().code(),
        Some("ValidationException")
    );

    let out = client
        .batch_delete_cluster_nodes()
        .cluster_name("ml-cluster")
        .node_ids(&seeded.node_ids[5])
        .node_ids(unknown)
        .send()
        .await
        .expect("BatchDeleteClusterNodes");
    assert_eq!(out.successful(), [seeded.node_ids[5].clone()]);
    let failed = out.failed();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].node_id(), Some(unknown));
    assert_eq!(failed[0].code().map(|c| c.as_str()), Some("NodeIdNotFound"));
    let listed = client
        .list_cluster_nodes()
        .cluster_name("ml-cluster")
        .max_results(100)
        .send()
        .await
        .unwrap();
    assert!(
        listed
            .cluster_node_summaries()
            .iter()
            .all(|n| n.instance_id() != Some(seeded.node_ids[5].as_str()))
    );
    let err = client
        .describe_cluster_node()
        .cluster_name("ml-cluster")
        .node_id(&seeded.node_ids[5])
        .send()
        .await;
    assert!(
        err.unwrap_err()
            .as_service_error()
            .is_some_and(|e| e.is_resource_not_found())
    );
}

#[tokio::test]
async fn a_replaced_node_goes_pending_then_running_with_a_new_launch_time() {
    let Some(moto) = moto() else { return };
    let (seeded, doc) = seed_250(&moto).await;
    let client = sagemaker(&moto).await;
    let id = &seeded.node_ids[42];
    let describe = || {
        client
            .describe_cluster_node()
            .cluster_name("ml-cluster")
            .node_id(id)
            .send()
    };
    let before = describe().await.unwrap().node_details.expect("NodeDetails");
    tokio::time::sleep(Duration::from_millis(20)).await;

    let out = client
        .batch_replace_cluster_nodes()
        .cluster_name("ml-cluster")
        .node_ids(id)
        .send()
        .await
        .unwrap();
    assert_eq!(out.successful(), std::slice::from_ref(id));
    assert!(out.failed().is_empty());

    let pending = describe().await.unwrap().node_details.expect("NodeDetails");
    assert_eq!(
        pending.instance_status().and_then(|s| s.status()),
        Some(&ClusterInstanceStatus::Pending)
    );
    let running = describe().await.unwrap().node_details.expect("NodeDetails");
    assert_eq!(
        running.instance_status().and_then(|s| s.status()),
        Some(&ClusterInstanceStatus::Running)
    );
    assert!(
        running.launch_time() > before.launch_time(),
        "{:?} vs {:?}",
        running.launch_time(),
        before.launch_time()
    );
    assert_eq!(
        running.private_primary_ip(),
        Some(seeded_ips(&doc)[42].as_str())
    );
    assert_eq!(
        running.private_dns_hostname(),
        before.private_dns_hostname()
    );

    // With a delay, the node stays Pending until the delay has passed.
    moto.set_replace_timing(300, 0).await.unwrap();
    client
        .batch_replace_cluster_nodes()
        .cluster_name("ml-cluster")
        .node_ids(id)
        .send()
        .await
        .unwrap();
    let status = |d: &aws_sdk_sagemaker::types::ClusterNodeDetails| {
        d.instance_status().and_then(|s| s.status().cloned())
    };
    assert_eq!(
        status(&describe().await.unwrap().node_details.unwrap()),
        Some(ClusterInstanceStatus::Pending)
    );
    assert_eq!(
        status(&describe().await.unwrap().node_details.unwrap()),
        Some(ClusterInstanceStatus::Pending)
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        status(&describe().await.unwrap().node_details.unwrap()),
        Some(ClusterInstanceStatus::Running)
    );
}

#[tokio::test]
async fn throttling_surfaces_as_a_throttling_error() {
    let Some(moto) = moto() else { return };
    let (seeded, _) = seed_250(&moto).await;
    let config = moto.sdk_config(DEFAULT_REGION).await;
    let client = aws_sdk_sagemaker::Client::new(&config);

    moto.throttle_next(2, &["ListClusterNodes"]).await.unwrap();
    // Other operations are not throttled.
    client
        .describe_cluster_node()
        .cluster_name("ml-cluster")
        .node_id(&seeded.node_ids[0])
        .send()
        .await
        .unwrap();
    for _ in 0..2 {
        let err = client
            .list_cluster_nodes()
            .cluster_name("ml-cluster")
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("ThrottlingException"), "{err:?}");
        let raw = err.raw_response().map(|r| r.status().as_u16());
        assert_eq!(raw, Some(400));
    }
    client
        .list_cluster_nodes()
        .cluster_name("ml-cluster")
        .send()
        .await
        .expect("throttling is over");

    let secrets = aws_sdk_secretsmanager::Client::new(&config);
    moto.throttle_next(1, &[]).await.unwrap();
    let err = secrets.list_secrets().send().await.unwrap_err();
    assert_eq!(
        aws_sdk_secretsmanager::error::ProvideErrorMetadata::code(&err),
        Some("ThrottlingException")
    );
    secrets
        .list_secrets()
        .send()
        .await
        .expect("throttling is over");
}

#[tokio::test]
async fn secrets_manager_create_put_get_current_and_reset() {
    let Some(moto) = moto() else { return };
    let secrets = aws_sdk_secretsmanager::Client::new(&moto.sdk_config(DEFAULT_REGION).await);
    let name = "hyperpod-k8s-kb8v11zrrpvr";
    secrets
        .create_secret()
        .name(name)
        .secret_string(r#"{"token":"v1"}"#)
        .send()
        .await
        .expect("CreateSecret");
    let put = secrets
        .put_secret_value()
        .secret_id(name)
        .secret_string(r#"{"token":"v2"}"#)
        .send()
        .await
        .unwrap();
    assert!(put.version_stages().iter().any(|s| s == "AWSCURRENT"));
    let current = secrets
        .get_secret_value()
        .secret_id(name)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .unwrap();
    assert_eq!(current.secret_string(), Some(r#"{"token":"v2"}"#));
    let previous = secrets
        .get_secret_value()
        .secret_id(name)
        .version_stage("AWSPREVIOUS")
        .send()
        .await
        .unwrap();
    assert_eq!(previous.secret_string(), Some(r#"{"token":"v1"}"#));
    let again = secrets
        .create_secret()
        .name(name)
        .secret_string("x")
        .send()
        .await
        .unwrap_err();
    assert!(
        again
            .as_service_error()
            .is_some_and(|e| e.is_resource_exists_exception()),
        "{again:?}"
    );

    moto.reset().await.unwrap();
    let gone = secrets
        .get_secret_value()
        .secret_id(name)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .unwrap_err();
    assert!(
        gone.as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception()),
        "{gone:?}"
    );
}
