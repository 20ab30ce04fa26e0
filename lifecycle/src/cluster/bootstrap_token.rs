//! Bootstrap tokens: the short-lived shared secret a worker presents to join.
//!
//! hpk8s generates the token itself (from the OS random number generator)
//! and hands it to `kubeadm init` in its config, so nothing has to be
//! scraped from kubeadm's output. A token is `<id>.<secret>`: the id is
//! public (it names the Secret), the secret is what authenticates. The
//! secret never appears in `Debug`, `Display`, errors or logs; code that
//! must write it out (the kubeadm config, the Secret object) asks for it
//! explicitly with [`BootstrapToken::expose_secret`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::error::class::classify;
pub use crate::values::duration::{DurationError, MAX_TTL, MIN_TTL, TokenTtl, parse_duration};
use crate::values::time::rfc3339;

/// Characters of a token, both parts (`[a-z0-9]`).
pub const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Length of the public token id.
pub const ID_LEN: usize = 6;
/// Length of the token secret (16 × log2(36) ≈ 82.7 bits of entropy).
pub const SECRET_LEN: usize = 16;
/// Namespace of bootstrap-token Secrets.
pub const SECRET_NAMESPACE: &str = "kube-system";
/// Name prefix of bootstrap-token Secrets (`bootstrap-token-<id>`).
pub const SECRET_NAME_PREFIX: &str = "bootstrap-token-";
/// Type of bootstrap-token Secrets.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The group kubeadm's RBAC lets join nodes through (CSR auto-approval,
/// `cluster-info`, the kubelet config).
pub const NODE_BOOTSTRAP_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
/// Label marking objects hpk8s created, so it removes only its own.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] (also hpk8s's field manager).
pub const MANAGED_BY: &str = super::labels::FIELD_MANAGER;

/// Errors of bootstrap tokens.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A token read from somewhere is not `[a-z0-9]{6}.[a-z0-9]{16}`; the
    /// token itself is never shown.
    #[error(
        "bootstrap token is malformed ({reason}); expected [a-z0-9]{{6}}.[a-z0-9]{{16}} (the token is not shown)"
    )]
    Malformed {
        /// What is wrong, without the token's characters.
        reason: &'static str,
    },
    /// The OS random number generator failed.
    #[error("cannot generate a bootstrap token: the OS random number generator failed: {source}")]
    Rng {
        /// The generator's error.
        #[source]
        source: getrandom::Error,
    },
}

classify!(Error {
    Malformed { .. } => Input "bootstrap_token_malformed";
    Rng { .. } => Host "rng_failed";
});

/// A bootstrap token `<id>.<secret>`. `Debug` and `Display` show only the id.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    id: String,
    secret: String,
}

impl BootstrapToken {
    /// A new token from the OS random number generator.
    pub fn generate() -> Result<BootstrapToken, Error> {
        let mut fill =
            |buf: &mut [u8]| getrandom::fill(buf).map_err(|source| Error::Rng { source });
        Ok(BootstrapToken {
            id: random_chars(ID_LEN, &mut fill)?,
            secret: random_chars(SECRET_LEN, &mut fill)?,
        })
    }

    /// Parses `<id>.<secret>`.
    pub fn parse(token: &str) -> Result<BootstrapToken, Error> {
        let malformed = |reason| Error::Malformed { reason };
        let (id, secret) = token
            .split_once('.')
            .ok_or(malformed("no `.` between id and secret"))?;
        if id.len() != ID_LEN {
            return Err(malformed("the id is not 6 characters"));
        }
        if secret.len() != SECRET_LEN {
            return Err(malformed("the secret is not 16 characters"));
        }
        let valid = |s: &str| s.bytes().all(|b| ALPHABET.contains(&b));
        if !valid(id) || !valid(secret) {
            return Err(malformed("characters other than a-z and 0-9"));
        }
        Ok(BootstrapToken {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The public token id (names the Secret; safe to log).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret part. Only for what must carry it: the kubeadm config
    /// and the bootstrap-token Secret. Never log it.
    pub fn expose_secret(&self) -> &str {
        &self.secret
    }

    /// The whole token `<id>.<secret>`, as kubeadm wants it. Never log it.
    pub fn expose_token(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// Name of the token's Secret (`bootstrap-token-<id>`).
    pub fn secret_name(&self) -> String {
        format!("{SECRET_NAME_PREFIX}{}", self.id)
    }

    /// The `kube-system/bootstrap-token-<id>` Secret that makes the token
    /// valid, expiring `ttl` after `now` (the token-cleaner controller then
    /// deletes it). The returned object holds the secret: never log it.
    pub fn secret_object(&self, ttl: TokenTtl, now: SystemTime, description: &str) -> Secret {
        let data: BTreeMap<String, ByteString> = [
            ("token-id", self.id.clone()),
            ("token-secret", self.secret.clone()),
            ("expiration", rfc3339(now + ttl.duration())),
            ("usage-bootstrap-authentication", "true".into()),
            ("usage-bootstrap-signing", "true".into()),
            ("auth-extra-groups", NODE_BOOTSTRAP_GROUP.into()),
            ("description", description.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
        .collect();
        Secret {
            metadata: ObjectMeta {
                name: Some(self.secret_name()),
                namespace: Some(SECRET_NAMESPACE.into()),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY_LABEL.to_string(),
                    MANAGED_BY.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some(SECRET_TYPE.into()),
            data: Some(data),
            ..Secret::default()
        }
    }
}

/// `count` characters drawn uniformly from [`ALPHABET`]: bytes ≥ 252 are
/// rejected so that `byte % 36` has no bias.
fn random_chars(
    count: usize,
    fill: &mut impl FnMut(&mut [u8]) -> Result<(), Error>,
) -> Result<String, Error> {
    const LIMIT: u8 = 252; // 7 × 36
    let mut out = String::with_capacity(count);
    let mut buf = [0u8; 32];
    while out.len() < count {
        fill(&mut buf)?;
        for &b in buf.iter().filter(|&&b| b < LIMIT) {
            if out.len() == count {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(b % 36)]));
        }
    }
    buf.fill(0);
    Ok(out)
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .field("secret", &format_args!("<redacted>"))
            .finish()
    }
}

impl fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.<redacted>", self.id)
    }
}

impl FromStr for BootstrapToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BootstrapToken::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_sampling_skips_biased_bytes() {
        // 252..=255 are skipped; 0 → 'a', 35 → '9', 36 → 'a', 251 → '9'.
        let mut calls = 0;
        let mut fill = |buf: &mut [u8]| {
            calls += 1;
            buf.fill(255);
            buf[..4].copy_from_slice(&[0, 252, 35, 251]);
            buf[4] = 36;
            Ok(())
        };
        assert_eq!(random_chars(4, &mut fill).unwrap(), "a99a");
        assert_eq!(calls, 1);
    }
}
