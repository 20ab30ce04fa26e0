//! The cluster CA pin joining nodes check (`--discovery-token-ca-cert-hash`,
//! `caCertHashes`): `sha256:` + hex(SHA-256 of the DER SubjectPublicKeyInfo
//! of the CA certificate). Pinning the key, not the certificate, is what
//! kubeadm does, so a re-issued CA with the same key keeps its pin.

use crate::error::class::classify;
use sha2::{Digest as _, Sha256};
use x509_parser::pem::parse_x509_pem;

/// The prefix of every pin (kubeadm knows no other hash).
pub const PIN_PREFIX: &str = "sha256:";

/// Why a CA pin could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum CaPinError {
    /// The input has no PEM block at all.
    #[error(
        "the cluster CA is not PEM-encoded ({reason}): expected a `-----BEGIN CERTIFICATE-----` block such as /etc/kubernetes/pki/ca.crt"
    )]
    NotPem {
        /// What the PEM parser said.
        reason: String,
    },
    /// The first PEM block is not an X.509 certificate.
    #[error(
        "the first PEM block of the cluster CA is a {label:?}, not a CERTIFICATE: pass the CA certificate, not a key"
    )]
    NotCertificate {
        /// The PEM label found.
        label: String,
    },
    /// The certificate's DER does not parse.
    #[error(
        "the cluster CA certificate does not parse as X.509 ({reason}): the file is damaged or not a certificate"
    )]
    BadCertificate {
        /// What the X.509 parser said.
        reason: String,
    },
}

classify!(CaPinError {
    NotPem { .. } => Input "ca_not_pem";
    NotCertificate { .. } => Input "ca_not_certificate";
    BadCertificate { .. } => Input "ca_bad_certificate";
});

/// The pin of the first certificate in `pem`.
pub fn ca_pin(pem: &[u8]) -> Result<String, CaPinError> {
    let (_, block) = parse_x509_pem(pem).map_err(|e| CaPinError::NotPem {
        reason: e.to_string(),
    })?;
    if block.label != "CERTIFICATE" {
        return Err(CaPinError::NotCertificate { label: block.label });
    }
    let cert = block.parse_x509().map_err(|e| CaPinError::BadCertificate {
        reason: e.to_string(),
    })?;
    Ok(pin_of_spki(cert.public_key().raw))
}

/// The pin of a DER-encoded SubjectPublicKeyInfo.
pub fn pin_of_spki(spki_der: &[u8]) -> String {
    format!("{PIN_PREFIX}{}", hex::encode(Sha256::digest(spki_der)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// What kubeadm's documentation says to run, for comparison.
    #[allow(clippy::disallowed_methods)] // the test runs the reference tool
    fn openssl_pin(pem: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, pem).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | sha256sum",
                path.display()
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl: {out:?}");
        let hex = String::from_utf8(out.stdout).unwrap();
        format!("sha256:{}", hex.split_whitespace().next().unwrap())
    }

    fn ca(alg: &'static rcgen::SignatureAlgorithm) -> String {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kubernetes");
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn matches_openssl_for_generated_cas() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let pem = ca(alg);
            let pin = ca_pin(pem.as_bytes()).unwrap();
            assert_eq!(pin, openssl_pin(&pem), "{alg:?}");
            assert_eq!(pin.len(), PIN_PREFIX.len() + 64);
        }
    }

    #[test]
    fn matches_openssl_for_an_rsa_ca() {
        // rcgen (ring) cannot generate RSA keys: make one with openssl.
        let dir = tempfile::tempdir().unwrap();
        let crt = dir.path().join("ca.crt");
        #[allow(clippy::disallowed_methods)] // the test runs the reference tool
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=kubernetes",
            ])
            .args(["-days", "1", "-keyout"])
            .arg(dir.path().join("ca.key"))
            .arg("-out")
            .arg(&crt)
            .output()
            .unwrap();
        assert!(status.status.success(), "openssl req: {status:?}");
        let pem = std::fs::read_to_string(&crt).unwrap();
        assert_eq!(ca_pin(pem.as_bytes()).unwrap(), openssl_pin(&pem));
    }

    #[test]
    fn uses_the_first_certificate_of_a_bundle() {
        let (a, b) = (
            ca(&rcgen::PKCS_ECDSA_P256_SHA256),
            ca(&rcgen::PKCS_ECDSA_P256_SHA256),
        );
        let bundle = format!("{a}{b}");
        assert_eq!(
            ca_pin(bundle.as_bytes()).unwrap(),
            ca_pin(a.as_bytes()).unwrap()
        );
        assert_ne!(ca_pin(a.as_bytes()).unwrap(), ca_pin(b.as_bytes()).unwrap());
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let err = ca_pin(b"hello").unwrap_err();
        assert!(matches!(err, CaPinError::NotPem { .. }), "{err}");
        assert!(err.to_string().contains("not PEM-encoded"), "{err}");

        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let err = ca_pin(key.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("\"PRIVATE KEY\""), "{err}");
        assert!(!err.to_string().contains("MII"), "no key material: {err}");

        let junk = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        let err = ca_pin(junk.as_bytes()).unwrap_err();
        assert!(matches!(err, CaPinError::BadCertificate { .. }), "{err}");
        assert_ne!(
            err.kind(),
            CaPinError::NotPem {
                reason: String::new()
            }
            .kind()
        );
    }
}
