//! Detached JWS (HS256) over `cluster-info`'s kubeconfig, as Kubernetes'
//! bootstrap signer writes them: `<header>..<signature>`, header
//! `{"alg":"HS256","kid":"<token-id>"}`, key = the token secret.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use sha2::{Digest as _, Sha256};

const BLOCK: usize = 64;

/// HMAC-SHA256 (RFC 2104), small enough to keep a dependency out.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The detached signature of `content` for token `id` with `secret`.
pub fn sign_detached(content: &str, id: &str, secret: &str) -> String {
    let header = B64URL.encode(format!(r#"{{"alg":"HS256","kid":"{id}"}}"#));
    let signing_input = format!("{header}.{}", B64URL.encode(content));
    let sig = B64URL.encode(hmac_sha256(secret.as_bytes(), signing_input.as_bytes()));
    format!("{header}..{sig}")
}

/// Whether `detached` is a valid HS256 signature of `content` for token
/// `id` (header algorithm and key id checked too).
pub fn verify_detached(detached: &str, content: &str, id: &str, secret: &str) -> bool {
    let mut parts = detached.split('.');
    let (Some(header), Some(""), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(header_json) = B64URL.decode(header) else {
        return false;
    };
    let Ok(h) = serde_json::from_slice::<serde_json::Value>(&header_json) else {
        return false;
    };
    if h["alg"] != "HS256" || h["kid"] != id {
        return false;
    }
    let signing_input = format!("{header}.{}", B64URL.encode(content));
    let expected = B64URL.encode(hmac_sha256(secret.as_bytes(), signing_input.as_bytes()));
    // Not constant-time: a test double, not a verifier facing attackers.
    expected == sig
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn long_keys_are_hashed_first() {
        // RFC 4231 case 6: a 131-byte key.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex::encode(mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn signatures_verify_only_with_the_right_token() {
        let sig = sign_detached("kubeconfig", "abcdef", "0123456789abcdef");
        assert!(sig.contains(".."));
        assert!(verify_detached(
            &sig,
            "kubeconfig",
            "abcdef",
            "0123456789abcdef"
        ));
        assert!(!verify_detached(
            &sig,
            "kubeconfig",
            "abcdef",
            "0123456789abcdeX"
        ));
        assert!(!verify_detached(
            &sig,
            "kubeconfig",
            "bcdefa",
            "0123456789abcdef"
        ));
        assert!(!verify_detached(
            &sig,
            "other",
            "abcdef",
            "0123456789abcdef"
        ));
    }
}
