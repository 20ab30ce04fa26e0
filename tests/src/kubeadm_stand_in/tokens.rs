//! Bootstrap tokens as Secrets (`kube-system/bootstrap-token-<id>`), Go
//! durations, RFC 3339 times, and the bootstrap signer's job: keeping one
//! `jws-kubeconfig-<id>` per valid signing token in `cluster-info`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::api::Api;
use super::jws;

/// Where bootstrap-token Secrets live.
pub const SECRETS: &str = "/api/v1/namespaces/kube-system/secrets";
/// The `cluster-info` ConfigMap.
pub const CLUSTER_INFO: &str = "/api/v1/namespaces/kube-public/configmaps/cluster-info";
/// ConfigMaps of `kube-public`.
pub const PUBLIC_CONFIGMAPS: &str = "/api/v1/namespaces/kube-public/configmaps";
/// The group kubeadm's tokens authenticate as.
pub const DEFAULT_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
/// The Secret type.
pub const TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";
/// kubeadm's default TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// A parsed `[a-z0-9]{6}.[a-z0-9]{16}` token. `Debug` shows the id only.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The public part.
    pub id: String,
    /// The secret part.
    pub secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}.<redacted>)", self.id)
    }
}

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl Token {
    /// Parses a token; the error never contains it.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s.split_once('.') {
            Some((id, secret)) if is_token_part(id, 6) && is_token_part(secret, 16) => Ok(Self {
                id: id.to_string(),
                secret: secret.to_string(),
            }),
            _ => bail!(
                "the bootstrap token was not of the form \"^([a-z0-9]{{6}})\\.([a-z0-9]{{16}})$\""
            ),
        }
    }

    /// A fresh random token.
    pub fn generate() -> anyhow::Result<Self> {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut bytes = [0u8; 22];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .context("reading /dev/urandom")?;
        let s: String = bytes
            .iter()
            .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
            .collect();
        Ok(Self {
            id: s[..6].to_string(),
            secret: s[6..].to_string(),
        })
    }

    /// `id.secret`.
    pub fn reveal(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

/// Parses a Go duration (`24h0m0s`, `90m`, `1h30m`, `10s`, `0`).
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        bail!("time: invalid duration \"{s}\"");
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n]
            .parse()
            .map_err(|_| anyhow::anyhow!("time: invalid duration \"{s}\""))?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => bail!("time: invalid duration \"{s}\""),
        };
        rest = &rest[u..];
        total += value * unit;
    }
    Ok(Duration::from_secs_f64(total))
}

/// Renders a duration as kubeadm's `token list` TTL column does (`23h`).
pub fn human_ttl(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h", s / 3600)
    } else if s >= 60 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Days since 1970-01-01 → (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `2026-11-22T15:30:00Z`.
pub fn rfc3339(epoch: i64) -> String {
    let (days, secs) = (epoch.div_euclid(86_400), epoch.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (or with `+00:00`).
pub fn parse_rfc3339(s: &str) -> anyhow::Result<i64> {
    let bad = || anyhow::anyhow!("{s:?} is not an RFC 3339 UTC time");
    let s2 = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix("+00:00"))
        .ok_or_else(bad)?;
    let (date, time) = s2.split_once('T').ok_or_else(bad)?;
    let num = |p: &str| p.parse::<i64>().map_err(|_| bad());
    let dp: Vec<&str> = date.split('-').collect();
    let tp: Vec<&str> = time.split(':').collect();
    if dp.len() != 3 || tp.len() != 3 {
        return Err(bad());
    }
    let secs: i64 = num(tp[2].split('.').next().unwrap_or("0"))?;
    Ok(
        days_from_civil(num(dp[0])?, num(dp[1])?, num(dp[2])?) * 86_400
            + num(tp[0])? * 3600
            + num(tp[1])? * 60
            + secs,
    )
}

/// What a token Secret says.
#[derive(Debug, Clone)]
pub struct TokenSecret {
    /// The token (secret part redacted in `Debug`).
    pub token: Token,
    /// Expiration (epoch seconds), if any.
    pub expires: Option<i64>,
    /// Usages (`authentication`, `signing`).
    pub usages: Vec<String>,
    /// Description.
    pub description: Option<String>,
    /// Extra groups.
    pub groups: Vec<String>,
}

impl TokenSecret {
    /// Whether the token has expired at `now`.
    pub fn expired(&self, now: i64) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

    /// The Secret object.
    pub fn to_secret(&self) -> Value {
        let mut data = BTreeMap::new();
        data.insert("token-id".to_string(), self.token.id.clone());
        data.insert("token-secret".to_string(), self.token.secret.clone());
        if let Some(e) = self.expires {
            data.insert("expiration".to_string(), rfc3339(e));
        }
        for u in &self.usages {
            data.insert(format!("usage-bootstrap-{u}"), "true".to_string());
        }
        if let Some(d) = &self.description {
            data.insert("description".to_string(), d.clone());
        }
        if !self.groups.is_empty() {
            data.insert("auth-extra-groups".to_string(), self.groups.join(","));
        }
        let data: serde_json::Map<String, Value> = data
            .into_iter()
            .map(|(k, v)| (k, Value::String(B64.encode(v))))
            .collect();
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": TOKEN_TYPE,
            "metadata": {"name": format!("bootstrap-token-{}", self.token.id), "namespace": "kube-system"},
            "data": data,
        })
    }

    /// Reads a token Secret; `None` when it is not a well-formed one.
    pub fn from_secret(secret: &Value) -> Option<Self> {
        if secret["type"] != TOKEN_TYPE {
            return None;
        }
        let data = secret["data"].as_object()?;
        let get = |k: &str| {
            data.get(k)
                .and_then(Value::as_str)
                .and_then(|v| B64.decode(v).ok())
                .and_then(|v| String::from_utf8(v).ok())
        };
        let token = Token::parse(&format!("{}.{}", get("token-id")?, get("token-secret")?)).ok()?;
        let mut usages: Vec<String> = data
            .keys()
            .filter_map(|k| k.strip_prefix("usage-bootstrap-"))
            .filter(|u| get(&format!("usage-bootstrap-{u}")).as_deref() == Some("true"))
            .map(String::from)
            .collect();
        usages.sort();
        Some(Self {
            token,
            expires: get("expiration").and_then(|e| parse_rfc3339(&e).ok()),
            usages,
            description: get("description"),
            groups: get("auth-extra-groups")
                .map(|g| g.split(',').map(String::from).collect())
                .unwrap_or_default(),
        })
    }
}

/// Every well-formed bootstrap-token Secret.
pub async fn list(admin: &Api) -> anyhow::Result<Vec<TokenSecret>> {
    let list = admin.get(SECRETS).await?.unwrap_or(Value::Null);
    let mut tokens: Vec<TokenSecret> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(TokenSecret::from_secret)
        .collect();
    tokens.sort_by(|a, b| a.token.id.cmp(&b.token.id));
    Ok(tokens)
}

/// Plays the bootstrap signer: `cluster-info` gets `kubeconfig` (when
/// given, else the stored one) and one `jws-kubeconfig-<id>` per
/// unexpired signing token; stale signatures go.
pub async fn sign_cluster_info(admin: &Api, kubeconfig: Option<&str>) -> anyhow::Result<()> {
    let current = admin.get(CLUSTER_INFO).await?;
    let content = match (kubeconfig, &current) {
        (Some(k), _) => k.to_string(),
        (None, Some(c)) => c["data"]["kubeconfig"]
            .as_str()
            .context("kube-public/cluster-info has no kubeconfig")?
            .to_string(),
        (None, None) => bail!("kube-public/cluster-info does not exist: run kubeadm init first"),
    };
    let now = now();
    let mut data = serde_json::Map::new();
    data.insert("kubeconfig".to_string(), Value::String(content.clone()));
    for t in list(admin).await? {
        if !t.expired(now) && t.usages.iter().any(|u| u == "signing") {
            data.insert(
                format!("jws-kubeconfig-{}", t.token.id),
                Value::String(jws::sign_detached(&content, &t.token.id, &t.token.secret)),
            );
        }
    }
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "cluster-info", "namespace": "kube-public"},
                    "data": data});
    admin
        .create_or_replace(PUBLIC_CONFIGMAPS, CLUSTER_INFO, &cm)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_parse_and_never_show_their_secret() {
        let t = Token::parse("abcdef.0123456789abcdef").unwrap();
        assert_eq!(t.id, "abcdef");
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
        let err = Token::parse("abcdef.0123456789ABCDEF").unwrap_err();
        assert!(!err.to_string().contains("0123456789ABCDEF"), "{err}");
        let g = Token::generate().unwrap();
        assert_eq!(Token::parse(&g.reveal()).unwrap(), g);
    }

    #[test]
    fn durations_and_times() {
        assert_eq!(parse_duration("24h0m0s").unwrap(), DEFAULT_TTL);
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("3 days").is_err());
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_880_000), "2026-11-28T15:33:20Z");
        for t in [0, 951_782_400, 1_795_880_000, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&rfc3339(t)).unwrap(), t);
        }
    }
}
