//! The built-in addons against the upstream manifests they follow, field
//! by field on the parts that decide whether the pod works: command and
//! args, env, mounts and their host paths, security context, host network.
//! Each expectation names the upstream file and version it was read from;
//! bumping a default image without re-reading upstream fails here.
//!
//! hpk8s departs from upstream on purpose only where a comment says so.

#![allow(clippy::unwrap_used)] // test code: a panic with its location is the failure report

use lifecycle::cluster::addons::images::AddonImages;
use lifecycle::cluster::addons::{efa_device_plugin, flannel, nvidia_device_plugin};
use lifecycle::config::{AddonsConfig, DeviceListStrategy};
use serde_json::{Value, json};

fn images() -> AddonImages {
    AddonImages::from_config(&AddonsConfig::default()).unwrap()
}

fn pod(ds: &impl serde::Serialize) -> Value {
    serde_json::to_value(ds).unwrap()["spec"]["template"]["spec"].clone()
}

fn container<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {list}"))
}

/// Every mount of `upstream` (`[name, mountPath, hostPath, hostPath type]`)
/// is in `ours`, at the same path, from the same host path and type.
fn has_mounts(pod: &Value, ctr: &Value, upstream: &[(&str, &str, &str, Option<&str>)]) {
    for (name, mount_path, host_path, type_) in upstream {
        let mount = ctr["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == *mount_path)
            .unwrap_or_else(|| {
                panic!("{mount_path} ({name}) not mounted: {}", ctr["volumeMounts"])
            });
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        assert_eq!(volume["hostPath"]["path"], *host_path, "{volume}");
        assert_eq!(
            volume["hostPath"]["type"].as_str(),
            *type_,
            "hostPath type of {host_path}: {volume}"
        );
    }
}

fn env_names(ctr: &Value) -> Vec<String> {
    ctr["env"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|v| v["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// flannel-io/flannel `Documentation/kube-flannel.yml` at v0.26.7, with
/// `ghcr.io/flannel-io/flannel-cni-plugin:v1.6.2-flannel1`.
#[test]
fn flannel_follows_kube_flannel_yml_v0_26_7() {
    let images = images();
    assert_eq!(images.flannel, "ghcr.io/flannel-io/flannel:v0.26.7");
    assert_eq!(
        images.flannel_cni_plugin,
        "ghcr.io/flannel-io/flannel-cni-plugin:v1.6.2-flannel1"
    );
    let pod = pod(&flannel::daemon_set(&images));
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["serviceAccountName"], "flannel");

    let init = &pod["initContainers"];
    let plugin = container(init, "install-cni-plugin");
    assert_eq!(plugin["image"], images.flannel_cni_plugin);
    assert_eq!(plugin["command"], json!(["cp"]));
    assert_eq!(
        plugin["args"],
        json!(["-f", "/flannel", "/opt/cni/bin/flannel"])
    );
    has_mounts(
        &pod,
        plugin,
        &[("cni-plugin", "/opt/cni/bin", "/opt/cni/bin", None)],
    );
    let cni = container(init, "install-cni");
    assert_eq!(cni["command"], json!(["cp"]));
    assert_eq!(
        cni["args"],
        json!([
            "-f",
            "/etc/kube-flannel/cni-conf.json",
            "/etc/cni/net.d/10-flannel.conflist"
        ])
    );
    has_mounts(
        &pod,
        cni,
        &[("cni", "/etc/cni/net.d", "/etc/cni/net.d", None)],
    );

    let flanneld = container(&pod["containers"], "kube-flannel");
    assert_eq!(flanneld["command"], json!(["/opt/bin/flanneld"]));
    let args = flanneld["args"].as_array().unwrap();
    // Upstream's two, then hpk8s's `--iface` (multi-homed nodes).
    assert_eq!(args[..2], [json!("--ip-masq"), json!("--kube-subnet-mgr")]);
    assert_eq!(args[2], "--iface=$(POD_IP)");
    for name in ["POD_NAME", "POD_NAMESPACE", "EVENT_QUEUE_DEPTH"] {
        assert!(env_names(flanneld).contains(&name.to_string()), "{name}");
    }
    assert_eq!(
        flanneld["securityContext"],
        json!({"privileged": false, "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}})
    );
    assert_eq!(
        flanneld["resources"]["requests"],
        json!({"cpu": "100m", "memory": "50Mi"})
    );
    has_mounts(
        &pod,
        flanneld,
        &[
            ("run", "/run/flannel", "/run/flannel", None),
            (
                "xtables-lock",
                "/run/xtables.lock",
                "/run/xtables.lock",
                Some("FileOrCreate"),
            ),
        ],
    );
    let cfg = flanneld["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/etc/kube-flannel/")
        .unwrap();
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == cfg["name"])
        .unwrap();
    assert_eq!(volume["configMap"]["name"], "kube-flannel-cfg");
}

/// aws/eks-charts `stable/aws-efa-k8s-device-plugin` chart 0.5.30 (image
/// v0.5.20): `templates/daemonset.yaml` with the default values.
#[test]
fn efa_device_plugin_follows_the_eks_chart_0_5_30() {
    let images = images();
    assert_eq!(
        images.efa_device_plugin,
        "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/aws-efa-k8s-device-plugin:v0.5.20"
    );
    let pod = pod(&efa_device_plugin::daemon_set(
        &images.efa_device_plugin,
        &[],
    ));
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert!(
        pod["tolerations"]
            .as_array()
            .unwrap()
            .contains(&json!({"key": "CriticalAddonsOnly", "operator": "Exists"})),
        "{}",
        pod["tolerations"]
    );
    let ctr = container(&pod["containers"], "aws-efa-k8s-device-plugin");
    // The image's entrypoint, no command or args.
    assert!(ctr["command"].is_null() && ctr["args"].is_null(), "{ctr}");
    assert_eq!(
        ctr["securityContext"],
        json!({
            "allowPrivilegeEscalation": true,
            "privileged": true,
            "runAsNonRoot": false,
            "runAsUser": 0
        })
    );
    assert_eq!(
        ctr["resources"]["requests"],
        json!({"cpu": "10m", "memory": "20Mi"})
    );
    has_mounts(
        &pod,
        ctr,
        &[
            (
                "device-plugin",
                "/var/lib/kubelet/device-plugins",
                "/var/lib/kubelet/device-plugins",
                None,
            ),
            (
                "infiniband-volume",
                "/dev/infiniband/",
                "/dev/infiniband/",
                None,
            ),
            (
                "neuron-tools",
                "/opt/aws/neuron/",
                "/opt/aws/neuron/",
                Some("DirectoryOrCreate"),
            ),
        ],
    );
    // 0.5.10 is the first that does not count p6-b200's `ibp*` NVLink
    // controllers as EFA devices.
    let tag = images.efa_device_plugin.rsplit(':').next().unwrap();
    let minor_patch: Vec<u32> = tag
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(minor_patch >= vec![0, 5, 10], "{tag}");
}

/// NVIDIA/k8s-device-plugin `deployments/static/nvidia-device-plugin.yml`
/// at v0.17.1 (the envvar strategy), and the Helm chart's security context
/// for `volume-mounts` (`templates/_helpers.tpl`: SYS_ADMIN added).
#[test]
fn nvidia_device_plugin_follows_the_static_manifest_v0_17() {
    let images = images();
    assert_eq!(
        images.nvidia_device_plugin,
        "nvcr.io/nvidia/k8s-device-plugin:v0.17.1"
    );
    let pod = pod(&nvidia_device_plugin::daemon_set(
        &images.nvidia_device_plugin,
        DeviceListStrategy::Envvar,
        &[],
    ));
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert!(pod["hostNetwork"].is_null() || pod["hostNetwork"] == false);
    let ctr = container(&pod["containers"], "nvidia-device-plugin-ctr");
    assert!(ctr["command"].is_null() && ctr["args"].is_null(), "{ctr}");
    assert!(env_names(ctr).contains(&"FAIL_ON_INIT_ERROR".to_string()));
    assert_eq!(ctr["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        ctr["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    let mount = ctr["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/lib/kubelet/device-plugins")
        .unwrap();
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(
        volume["hostPath"]["path"],
        "/var/lib/kubelet/device-plugins"
    );

    let pod = pod_of_strategy(DeviceListStrategy::VolumeMounts);
    let ctr = container(&pod["containers"], "nvidia-device-plugin-ctr");
    assert_eq!(
        ctr["securityContext"]["capabilities"],
        json!({"add": ["SYS_ADMIN"]})
    );
}

fn pod_of_strategy(strategy: DeviceListStrategy) -> Value {
    pod(&nvidia_device_plugin::daemon_set(
        &images().nvidia_device_plugin,
        strategy,
        &[],
    ))
}
