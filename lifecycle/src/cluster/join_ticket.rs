//! The join ticket: everything a worker needs to join the cluster, published
//! by the controller through a [rendezvous](super::rendezvous).
//!
//! It travels as one JSON document:
//!
//! ```json
//! { "version": 1, "cluster_id": "kb8v11zrrpvr", "endpoint": "10.1.113.28:6443",
//!   "token": "abcdef.0123456789abcdef", "ca_pins": ["sha256:<64 hex>"],
//!   "expires_at": "2026-11-23T15:00:00Z", "kubernetes_version": "1.34.1" }
//! ```
//!
//! Instead of the earlier solution's scraped `kubeadm join` line, every field
//! is typed and checked when read, and an error names the field. The token is
//! a [`JoinToken`] whose `Debug`/`Display` never show it, and no error
//! message ever quotes the value of the `token` field.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::values::time::rfc3339;

/// The ticket format this build writes and understands.
pub const TICKET_VERSION: u32 = 1;

/// What replaces a secret in any output.
const REDACTED: &str = "<redacted>";

/// A bootstrap token (`[a-z0-9]{6}.[a-z0-9]{16}`) that never shows itself in
/// `Debug` or `Display`; [`JoinToken::expose`] is the only way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken(String);

impl JoinToken {
    /// Checks the bootstrap-token format. The error never contains `value`.
    pub fn parse(value: &str) -> Result<JoinToken, TicketError> {
        if is_bootstrap_token(value) {
            Ok(JoinToken(value.to_string()))
        } else {
            Err(TicketError::InvalidField {
                field: "token".into(),
                reason:
                    "is not a bootstrap token of the form [a-z0-9]{6}.[a-z0-9]{16} (value withheld)"
                        .into(),
            })
        }
    }

    /// The token itself, for `kubeadm join` and for publishing. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The public token id (the part before the dot), safe to log.
    pub fn id(&self) -> &str {
        self.0.split('.').next().unwrap_or_default()
    }
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JoinToken({REDACTED})")
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

fn is_bootstrap_token(s: &str) -> bool {
    let ok = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    s.split_once('.')
        .is_some_and(|(id, secret)| ok(id, 6) && ok(secret, 16))
}

/// Why a ticket could not be read. Messages name the field and never quote
/// the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// The document is not JSON (only the position is reported: the text
    /// around it may be the token).
    #[error("not valid JSON ({category} error at line {line} column {column})")]
    Json {
        /// serde_json's error class (`syntax`, `eof`, `data`, `io`).
        category: &'static str,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// The document is JSON but not an object.
    #[error("not a JSON object")]
    NotAnObject,
    /// A required field is absent.
    #[error("field `{field}` is missing")]
    MissingField {
        /// The field.
        field: &'static str,
    },
    /// A field has the wrong type or value.
    #[error("field `{field}` {reason}")]
    InvalidField {
        /// The field (`ca_pins[1]` for an element).
        field: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// The ticket was written by a newer (or unknown) format.
    #[error(
        "field `version` is {found}, but this hpk8s understands only version {TICKET_VERSION}; upgrade hpk8s on this node"
    )]
    UnsupportedVersion {
        /// The version found.
        found: u64,
    },
}

impl TicketError {
    /// The field this error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            TicketError::MissingField { field } => Some(field),
            TicketError::InvalidField { field, .. } => Some(field),
            TicketError::UnsupportedVersion { .. } => Some("version"),
            TicketError::Json { .. } | TicketError::NotAnObject => None,
        }
    }
}

/// What a worker needs to join: the API endpoint, a bootstrap token and the
/// CA pins that keep it from being redirected to a foreign API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTicket {
    /// Format version ([`TICKET_VERSION`]).
    pub version: u32,
    /// The cluster this ticket is for (HyperPod cluster id or configured name).
    pub cluster_id: String,
    /// The API server, `host:port` (IPv6 hosts in brackets).
    pub endpoint: String,
    /// The bootstrap token (secret).
    pub token: JoinToken,
    /// `sha256:<64 hex>` pins of the cluster CA's public key (at least one;
    /// several during a CA rotation).
    pub ca_pins: Vec<String>,
    /// When the token stops working (carried in whole seconds: a fraction is
    /// dropped when published).
    pub expires_at: SystemTime,
    /// The control plane's Kubernetes version (`MAJOR.MINOR.PATCH`).
    pub kubernetes_version: String,
}

impl JoinTicket {
    /// Checks every field as [`JoinTicket::parse`] would.
    pub fn validate(&self) -> Result<(), TicketError> {
        if self.version != TICKET_VERSION {
            return Err(TicketError::UnsupportedVersion {
                found: u64::from(self.version),
            });
        }
        check_cluster_id(&self.cluster_id)?;
        check_endpoint(&self.endpoint)?;
        if self.ca_pins.is_empty() {
            return Err(invalid(
                "ca_pins",
                "is empty: at least one CA pin is needed",
            ));
        }
        for (i, pin) in self.ca_pins.iter().enumerate() {
            check_pin(i, pin)?;
        }
        check_kubernetes_version(&self.kubernetes_version)?;
        unix_seconds(self.expires_at)?;
        Ok(())
    }

    /// Whether the token is still usable at `now` with `margin` to spare
    /// (time for `kubeadm join` to run).
    pub fn is_fresh(&self, now: SystemTime, margin: Duration) -> bool {
        now.checked_add(margin)
            .is_some_and(|limit| self.expires_at > limit)
    }

    /// `expires_at` as RFC 3339 (UTC), for messages.
    pub fn expires_at_rfc3339(&self) -> String {
        rfc3339(self.expires_at)
    }

    /// The ticket as JSON. Contains the token: only for the rendezvous itself.
    pub fn to_secret_json(&self) -> String {
        json!({
            "version": self.version,
            "cluster_id": self.cluster_id,
            "endpoint": self.endpoint,
            "token": self.token.expose(),
            "ca_pins": self.ca_pins,
            "expires_at": rfc3339(self.expires_at),
            "kubernetes_version": self.kubernetes_version,
        })
        .to_string()
    }

    /// Parses and validates a ticket; unknown fields are ignored so that a
    /// newer controller can add optional ones without a version bump.
    pub fn parse(text: &str) -> Result<JoinTicket, TicketError> {
        let value: Value = serde_json::from_str(text).map_err(|e| TicketError::Json {
            category: match e.classify() {
                serde_json::error::Category::Io => "io",
                serde_json::error::Category::Syntax => "syntax",
                serde_json::error::Category::Data => "data",
                serde_json::error::Category::Eof => "eof",
            },
            line: e.line(),
            column: e.column(),
        })?;
        let Value::Object(map) = value else {
            return Err(TicketError::NotAnObject);
        };
        // The version first: a newer format may change everything else.
        let version = match field(&map, "version")? {
            Value::Number(n) => n
                .as_u64()
                .ok_or_else(|| invalid("version", "is not a non-negative integer"))?,
            _ => return Err(invalid("version", "is not a number")),
        };
        if version != u64::from(TICKET_VERSION) {
            return Err(TicketError::UnsupportedVersion { found: version });
        }
        let cluster_id = string(&map, "cluster_id")?;
        check_cluster_id(&cluster_id)?;
        let endpoint = string(&map, "endpoint")?;
        check_endpoint(&endpoint)?;
        let token = match field(&map, "token")? {
            Value::String(s) => JoinToken::parse(s)?,
            _ => return Err(invalid("token", "is not a string")),
        };
        let ca_pins = match field(&map, "ca_pins")? {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => check_pin(i, s).map(|()| s.clone()),
                    _ => Err(invalid(&format!("ca_pins[{i}]"), "is not a string")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(invalid("ca_pins", "is not an array of strings")),
        };
        if ca_pins.is_empty() {
            return Err(invalid(
                "ca_pins",
                "is empty: at least one CA pin is needed",
            ));
        }
        let expires_at = parse_time(field(&map, "expires_at")?)?;
        let kubernetes_version = string(&map, "kubernetes_version")?;
        check_kubernetes_version(&kubernetes_version)?;
        Ok(JoinTicket {
            version: TICKET_VERSION,
            cluster_id,
            endpoint,
            token,
            ca_pins,
            expires_at,
            kubernetes_version,
        })
    }
}

fn invalid(field: &str, reason: &str) -> TicketError {
    TicketError::InvalidField {
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

fn field<'a>(map: &'a Map<String, Value>, name: &'static str) -> Result<&'a Value, TicketError> {
    map.get(name)
        .ok_or(TicketError::MissingField { field: name })
}

fn string(map: &Map<String, Value>, name: &'static str) -> Result<String, TicketError> {
    match field(map, name)? {
        Value::String(s) => Ok(s.clone()),
        _ => Err(invalid(name, "is not a string")),
    }
}

fn check_cluster_id(id: &str) -> Result<(), TicketError> {
    let ok = !id.is_empty()
        && id.len() <= 256
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "cluster_id",
            &format!("`{id}` is not a cluster id (1-256 letters, digits, `-`, `_`, `.`, `:`, `/`)"),
        ))
    }
}

/// `host:port` with a DNS name, an IPv4 address or a bracketed IPv6 address.
fn check_endpoint(endpoint: &str) -> Result<(), TicketError> {
    let bad = |why: &str| {
        invalid(
            "endpoint",
            &format!("`{endpoint}` is not host:port ({why})"),
        )
    };
    let (host, port) = endpoint.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    match port.parse::<u16>() {
        Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => {}
        _ => return Err(bad("the port is not 1-65535")),
    }
    if let Some(inner) = host.strip_prefix('[') {
        let ip = inner.strip_suffix(']').ok_or_else(|| bad("unclosed `[`"))?;
        ip.parse::<std::net::Ipv6Addr>()
            .map_err(|_| bad("not an IPv6 address in brackets"))?;
        return Ok(());
    }
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if host_ok {
        Ok(())
    } else {
        Err(bad("the host is not a DNS name or IP address"))
    }
}

fn check_pin(index: usize, pin: &str) -> Result<(), TicketError> {
    let ok = pin.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            &format!("ca_pins[{index}]"),
            &format!("`{pin}` is not sha256:<64 lowercase hex digits>"),
        ))
    }
}

fn check_kubernetes_version(v: &str) -> Result<(), TicketError> {
    if crate::values::version::KubeVersion::parse(v).is_some() {
        Ok(())
    } else {
        Err(invalid(
            "kubernetes_version",
            &format!("`{v}` is not MAJOR.MINOR.PATCH"),
        ))
    }
}

/// RFC 3339 text or integer Unix seconds.
fn parse_time(value: &Value) -> Result<SystemTime, TicketError> {
    let seconds = match value {
        Value::String(s) => {
            return crate::values::time::parse_rfc3339(s).ok_or_else(|| {
                invalid(
                    "expires_at",
                    &format!(
                        "`{s}` is not an RFC 3339 time after 1970 (e.g. 2026-11-23T15:00:00Z)"
                    ),
                )
            });
        }
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| invalid("expires_at", "is not whole Unix seconds"))?,
        _ => {
            return Err(invalid(
                "expires_at",
                "is neither an RFC 3339 string nor Unix seconds",
            ));
        }
    };
    let seconds = u64::try_from(seconds).map_err(|_| invalid("expires_at", "is before 1970"))?;
    UNIX_EPOCH
        .checked_add(Duration::from_secs(seconds))
        .ok_or_else(|| invalid("expires_at", "is too far in the future"))
}

fn unix_seconds(t: SystemTime) -> Result<u64, TicketError> {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| invalid("expires_at", "is before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "abcdef.0123456789abcdef";

    fn ticket() -> JoinTicket {
        JoinTicket {
            version: TICKET_VERSION,
            cluster_id: "kb8v11zrrpvr".into(),
            endpoint: "10.1.113.28:6443".into(),
            token: JoinToken::parse(TOKEN).unwrap(),
            ca_pins: vec![format!("sha256:{}", "ab".repeat(32))],
            expires_at: UNIX_EPOCH + Duration::from_secs(1_795_000_000),
            kubernetes_version: "1.34.1".into(),
        }
    }

    fn with(field: &str, value: Value) -> String {
        let mut v: Value = serde_json::from_str(&ticket().to_secret_json()).unwrap();
        if value.is_null() {
            v.as_object_mut().unwrap().remove(field);
        } else {
            v[field] = value;
        }
        v.to_string()
    }

    #[test]
    fn round_trip() {
        let t = ticket();
        t.validate().unwrap();
        let text = t.to_secret_json();
        assert!(
            text.contains("\"expires_at\":\"2026-11-18T11:06:40Z\""),
            "{text}"
        );
        assert_eq!(JoinTicket::parse(&text).unwrap(), t);
    }

    #[test]
    fn unix_seconds_accepted() {
        let t = JoinTicket::parse(&with("expires_at", json!(1_795_000_000))).unwrap();
        assert_eq!(t, ticket());
    }

    #[test]
    fn debug_and_display_redact_the_token() {
        let t = ticket();
        let shown = format!("{t:?} {} {:?}", t.token, t.token);
        assert!(
            !shown.contains(TOKEN) && !shown.contains("0123456789abcdef"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"), "{shown}");
        assert_eq!(t.token.id(), "abcdef");
    }

    #[test]
    fn every_field_is_checked_and_named() {
        let cases: &[(&str, Value, &str)] = &[
            ("version", json!(2), "version"),
            ("version", json!("1"), "version"),
            ("cluster_id", json!(""), "cluster_id"),
            ("cluster_id", Value::Null, "cluster_id"),
            ("endpoint", json!("10.1.113.28"), "endpoint"),
            ("endpoint", json!("10.1.113.28:0"), "endpoint"),
            ("endpoint", json!("[::1:6443"), "endpoint"),
            ("endpoint", json!("bad host:6443"), "endpoint"),
            ("token", json!("ABCDEF.0123456789abcdef"), "token"),
            ("token", json!("abcdef-0123456789abcdef"), "token"),
            ("token", json!(42), "token"),
            ("token", Value::Null, "token"),
            ("ca_pins", json!([]), "ca_pins"),
            ("ca_pins", json!(["sha256:abc"]), "ca_pins[0]"),
            ("ca_pins", json!("sha256:abc"), "ca_pins"),
            ("expires_at", json!("tomorrow"), "expires_at"),
            ("expires_at", json!(-5), "expires_at"),
            ("kubernetes_version", json!("1.34"), "kubernetes_version"),
        ];
        for (name, value, expected) in cases {
            let e = JoinTicket::parse(&with(name, value.clone())).unwrap_err();
            assert_eq!(e.field(), Some(*expected), "{name}={value}: {e}");
            assert!(e.to_string().contains(&format!("`{expected}`")), "{e}");
        }
    }

    #[test]
    fn errors_never_quote_the_token() {
        let bad_token = "zzzzzz.ZZZZZZZZZZZZZZZZ";
        let e = JoinTicket::parse(&with("token", json!(bad_token))).unwrap_err();
        assert!(!e.to_string().contains(bad_token), "{e}");
        // A syntax error right after the token does not echo it either.
        let broken = format!("{{\"token\": \"{TOKEN}\" \"x\"}}");
        let e = JoinTicket::parse(&broken).unwrap_err();
        assert!(matches!(e, TicketError::Json { .. }), "{e}");
        assert!(!format!("{e} {e:?}").contains(TOKEN), "{e}");
    }

    #[test]
    fn not_an_object_or_truncated() {
        assert_eq!(JoinTicket::parse("[1]"), Err(TicketError::NotAnObject));
        let text = ticket().to_secret_json();
        let e = JoinTicket::parse(&text[..text.len() / 2]).unwrap_err();
        assert!(
            matches!(
                e,
                TicketError::Json {
                    category: "eof",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn ipv6_and_dns_endpoints() {
        for ok in [
            "[fd00::1]:6443",
            "api.cluster.internal:443",
            "localhost:6443",
        ] {
            JoinTicket::parse(&with("endpoint", json!(ok))).unwrap();
        }
    }

    #[test]
    fn freshness_has_a_margin() {
        let t = ticket();
        let margin = Duration::from_secs(60);
        assert!(t.is_fresh(t.expires_at - Duration::from_secs(61), margin));
        assert!(!t.is_fresh(t.expires_at - Duration::from_secs(59), margin));
        assert!(!t.is_fresh(t.expires_at + Duration::from_secs(1), margin));
    }
}
