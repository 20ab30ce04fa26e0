//! Credentials the stand-in signs with the cluster CA key: the admin's
//! (`kubernetes-admin` in `system:masters`) and each kubelet's
//! (`system:node:<name>` in `system:nodes`), as kubeconfigs.

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::{Value, json};

use super::StandInConfig;

/// A client certificate and key, PEM.
pub struct Credential {
    /// Certificate.
    pub cert_pem: String,
    /// Private key.
    pub key_pem: String,
}

/// Signs a client certificate for `user` in `group`.
pub fn sign_client(config: &StandInConfig, user: &str, group: &str) -> anyhow::Result<Credential> {
    let ca_key = KeyPair::from_pem(&config.ca_key_pem).context("loading the test CA key")?;
    let issuer = Issuer::from_ca_cert_pem(&config.ca_cert_pem, ca_key)
        .context("loading the test CA certificate")?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, user);
    params
        .distinguished_name
        .push(DnType::OrganizationName, group);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = params
        .signed_by(&key, &issuer)
        .with_context(|| format!("signing a client certificate for {user}"))?;
    Ok(Credential {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The admin credential.
pub fn admin(config: &StandInConfig) -> anyhow::Result<Credential> {
    sign_client(config, "kubernetes-admin", "system:masters")
}

/// A kubelet's credential.
pub fn node(config: &StandInConfig, name: &str) -> anyhow::Result<Credential> {
    sign_client(config, &format!("system:node:{name}"), "system:nodes")
}

/// A kubeconfig (as kubeadm writes it, YAML is JSON's superset) for `user`.
pub fn kubeconfig(config: &StandInConfig, user: &str, cred: &Credential) -> Value {
    let context = format!("{user}@kubernetes");
    json!({
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": "kubernetes", "cluster": {
            "server": config.api_url,
            "certificate-authority-data": B64.encode(&config.ca_cert_pem)}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": B64.encode(&cred.cert_pem),
            "client-key-data": B64.encode(&cred.key_pem)}}],
        "contexts": [{"name": context, "context": {"cluster": "kubernetes", "user": user}}],
        "current-context": context,
    })
}

/// The `cluster-info` kubeconfig: server and CA, no users.
pub fn cluster_info_kubeconfig(config: &StandInConfig) -> String {
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {}\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: null\n",
        B64.encode(&config.ca_cert_pem),
        config.api_url
    )
}

/// The client credential of a kubeconfig file (`--kubeconfig`).
pub fn credential_from_kubeconfig(text: &str) -> anyhow::Result<Credential> {
    let v: Value = serde_json::from_str(text)
        .or_else(|_| serde_saphyr::from_str(text))
        .context("the kubeconfig is neither JSON nor YAML")?;
    let user = v
        .pointer("/users/0/user")
        .context("the kubeconfig has no user")?;
    let field = |k: &str| -> anyhow::Result<String> {
        let data = user[k]
            .as_str()
            .with_context(|| format!("the kubeconfig's user has no {k}"))?;
        String::from_utf8(B64.decode(data)?).with_context(|| format!("{k} is not text"))
    };
    Ok(Credential {
        cert_pem: field("client-certificate-data")?,
        key_pem: field("client-key-data")?,
    })
}
