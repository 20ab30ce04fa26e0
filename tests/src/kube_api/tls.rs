//! The test cluster's PKI: a CA made fresh per server, the serving
//! certificate for 127.0.0.1, and client certificates whose subject carries
//! the Kubernetes identity (CN = user, O = groups), exactly as kubeadm's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;

use super::authz::Identity;

/// A client certificate and its key, PEM-encoded.
pub struct ClientCert {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// The CA, the server's TLS configuration and the identities of the client
/// certificates issued so far (looked up by their DER bytes, since every
/// client certificate the server accepts was issued here).
pub struct Pki {
    ca_pem: String,
    ca_key_pem: String,
    issuer: Issuer<'static, KeyPair>,
    issued: Mutex<HashMap<Vec<u8>, Identity>>,
    server_config: Arc<ServerConfig>,
}

impl Pki {
    /// Makes a CA and a serving certificate valid for `127.0.0.1` and
    /// `localhost`.
    pub fn new() -> anyhow::Result<Self> {
        Self::with_ip_sans(&[])
    }

    /// As [`Pki::new`], the serving certificate also valid for `extra_ips`
    /// (a server listening on a test node's LAN address).
    pub fn with_ip_sans(extra_ips: &[std::net::IpAddr]) -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate().context("generating the test CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "kubernetes");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("self-signing the test CA")?;
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let mut names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        names.extend(extra_ips.iter().map(ToString::to_string));
        let mut server_params = CertificateParams::new(names)?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let server_cert = server_params.signed_by(&server_key, &issuer)?;

        // One explicit provider, so the process-wide default (which may be
        // ambiguous when both ring and aws-lc-rs are linked) never matters.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca_cert.der().clone())
            .context("adding the test CA to the client roots")?;
        // Unauthenticated clients are allowed at the TLS layer: they may
        // still present a bearer token, or be anonymous for discovery.
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .context("building the client certificate verifier")?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![server_cert.der().clone(), ca_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )
            .context("building the server TLS configuration")?;
        // HTTP/1.1 only: watches stream as chunked newline-delimited JSON.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];

        Ok(Self {
            ca_pem: ca_cert.pem(),
            ca_key_pem,
            issuer,
            issued: Mutex::new(HashMap::new()),
            server_config: Arc::new(config),
        })
    }

    /// The CA certificate, PEM-encoded.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA's private key, PEM-encoded: for test doubles that sign client
    /// certificates out of process (the kubeadm stand-in), as the real
    /// cluster's `/etc/kubernetes/pki/ca.key` does.
    pub fn ca_key_pem(&self) -> &str {
        &self.ca_key_pem
    }

    /// The rustls configuration for the listener.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server_config.clone()
    }

    /// Issues a client certificate for `identity` (CN = user, one O per
    /// group) and remembers it so connections presenting it are identified.
    pub fn issue_client(&self, identity: &Identity) -> anyhow::Result<ClientCert> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, identity.user.as_str());
        for group in &identity.groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, group.as_str());
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = params.signed_by(&key, &self.issuer)?;
        lock(&self.issued).insert(cert.der().to_vec(), identity.clone());
        Ok(ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The identity of a presented client certificate chain: one this PKI
    /// issued, else (as a real API server does) CN = user and O = groups of
    /// any certificate signed with the CA key, which the TLS layer has
    /// already verified.
    pub fn identify(&self, chain: Option<&[CertificateDer<'_>]>) -> Option<Identity> {
        let leaf = chain?.first()?;
        if let Some(id) = lock(&self.issued).get(leaf.as_ref()) {
            return Some(id.clone());
        }
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        let subject = cert.subject();
        let user = subject
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_string();
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(String::from))
            .collect();
        Some(Identity { user, groups })
    }
}

/// Locks a mutex, recovering from poisoning: a panicking test thread must not
/// turn every later request into a second panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
