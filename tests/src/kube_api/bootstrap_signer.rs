//! kube-controller-manager's bootstrap signer: keeps `kube-public/cluster-info`
//! signed (`jws-kubeconfig-<token id>`) with every valid bootstrap token that
//! may sign, so that a token created through the API (as `hpk8s`'s rotation
//! does, and `kubeadm token create`) can be used for discovery, and a
//! deleted or expired one no longer can.

use serde_json::{Map, Value};

use super::discovery;
use super::store::{EventType, Store};
use crate::kubeadm_stand_in::{jws, tokens};

/// Re-signs `cluster-info` after a change to the bootstrap-token Secrets.
pub fn resign(store: &mut Store) {
    let (Some(secrets), Some(configmaps)) = (
        discovery::find("", "v1", "secrets"),
        discovery::find("", "v1", "configmaps"),
    ) else {
        return;
    };
    let Some(info) = store
        .get(configmaps, "kube-public", "cluster-info")
        .cloned()
    else {
        return;
    };
    let Some(content) = info["data"]["kubeconfig"].as_str().map(str::to_string) else {
        return;
    };
    let now = tokens::now();
    let mut data = Map::new();
    data.insert("kubeconfig".into(), Value::String(content.clone()));
    for (_, secret) in store.list(secrets, Some("kube-system")) {
        if let Some(t) = tokens::TokenSecret::from_secret(secret)
            && !t.expired(now)
            && t.usages.iter().any(|u| u == "signing")
        {
            data.insert(
                format!("jws-kubeconfig-{}", t.token.id),
                Value::String(jws::sign_detached(&content, &t.token.id, &t.token.secret)),
            );
        }
    }
    let data = Value::Object(data);
    if info["data"] != data {
        let mut updated = info;
        updated["data"] = data;
        store.put(
            configmaps,
            "kube-public",
            "cluster-info",
            updated,
            EventType::Modified,
        );
    }
}
