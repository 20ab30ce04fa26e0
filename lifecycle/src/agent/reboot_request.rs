//! The node's half of a self-managed reboot: the controller's remediation
//! annotates a drained Node with `hpk8s.io/reboot-requested=<time>`; the
//! node's agent sees it (its own Node, read with the kubelet's credential,
//! every [`CHECK_EVERY`]) and reboots through systemd when the request is
//! later than this boot and the node is still cordoned. After the reboot
//! the request predates the boot, so it never reboots twice for one
//! request. HyperPod nodes are rebooted by HyperPod instead.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Node;
use kube::api::Api;

use crate::host::{Cmd, Host};
use crate::kube::client::{self as kube_client, Credential, Retries, timed};
use crate::remediation::ownership::REBOOT_REQUESTED;
use crate::values::time::parse_rfc3339;

/// How often the node looks at its own Node.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

/// When this machine booted (`btime` of `/proc/stat`).
pub fn boot_time(host: &Host) -> Option<SystemTime> {
    let stat = host.read_string_opt("/proc/stat").ok()??;
    let secs: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Whether `node` asks this boot to reboot.
pub fn requested(node: &Node, booted: SystemTime) -> bool {
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let at = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REBOOT_REQUESTED))
        .and_then(|t| parse_rfc3339(t));
    cordoned && at.is_some_and(|t| t > booted)
}

/// Looks for a reboot request every `every` ([`CHECK_EVERY`] in the
/// agent) until `shutdown` resolves or it reboots.
pub async fn run(host: Host, node: String, every: Duration, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let Some(booted) = boot_time(&host) else {
        tracing::warn!(
            "cannot read the boot time from /proc/stat: reboot requests are not watched"
        );
        return;
    };
    let mut client = None;
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(every) => {}
        }
        if client.is_none() {
            client = kube_client::client_with(&host, Credential::Node, Retries::Caller)
                .await
                .ok();
        }
        let Some(c) = &client else { continue };
        let api: Api<Node> = Api::all(c.clone());
        match timed(api.get_opt(&node)).await {
            Ok(Some(n)) if requested(&n, booted) => {
                tracing::warn!(node = %node, "the controller requested a reboot of this drained node: rebooting");
                let cmd = Cmd::new("systemctl").args(["reboot", "--no-block"]);
                match host.run(&cmd) {
                    Ok(_) => return,
                    Err(e) => tracing::error!(error = %e, "cannot reboot"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read this node's Node"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use kube::api::ObjectMeta;

    #[test]
    fn only_a_request_after_this_boot_on_a_cordoned_node() {
        let booted = UNIX_EPOCH + Duration::from_secs(1_000);
        let node = |cordoned: bool, at: &str| Node {
            metadata: ObjectMeta {
                annotations: Some([(REBOOT_REQUESTED.to_string(), at.to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                unschedulable: Some(cordoned),
                ..NodeSpec::default()
            }),
            status: None,
        };
        assert!(requested(&node(true, "1970-01-01T00:20:00Z"), booted));
        assert!(
            !requested(&node(true, "1970-01-01T00:10:00Z"), booted),
            "before this boot"
        );
        assert!(
            !requested(&node(false, "1970-01-01T00:20:00Z"), booted),
            "uncordoned meanwhile"
        );
        assert!(!requested(&node(true, "garbage"), booted));
    }
}
