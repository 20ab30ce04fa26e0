//! Durations written in config files and join tickets (`30m`, `4h`,
//! `1h30m`), and the bootstrap-token lifetime built on them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Shortest token lifetime accepted: joins take a while after a reboot.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// Longest token lifetime accepted (a week): a leaked token is a way into
/// the cluster until it expires, and tokens are renewed as nodes join.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A token lifetime (`cluster.token_ttl`): `30m`, `4h`, `1h30m`, `90s`,
/// between one minute and a week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenTtl(Duration);

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not hours, minutes and seconds like `1h30m`.
    #[error("`{0}` is not a duration like 30m, 4h or 1h30m (units h, m, s, in that order)")]
    Syntax(String),
    /// Outside what a token lifetime may be.
    #[error("`{0}` is out of range; a token lifetime must be from 1m to 168h (a week)")]
    Range(String),
}

impl TokenTtl {
    /// The lifetime; `None` outside [`MIN_TTL`]..=[`MAX_TTL`] or when not
    /// whole seconds.
    pub fn new(d: Duration) -> Option<TokenTtl> {
        (d.subsec_nanos() == 0 && (MIN_TTL..=MAX_TTL).contains(&d)).then_some(TokenTtl(d))
    }

    /// The lifetime.
    pub fn duration(&self) -> Duration {
        self.0
    }

    /// Go's `time.Duration` spelling, as kubeadm prints it (`4h0m0s`).
    pub fn go_duration(&self) -> String {
        let s = self.0.as_secs();
        let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
        match (h, m) {
            (0, 0) => format!("{s}s"),
            (0, _) => format!("{m}m{s}s"),
            _ => format!("{h}h{m}m{s}s"),
        }
    }
}

impl Default for TokenTtl {
    /// Four hours: long enough for a large cluster to come up, short enough
    /// that a leaked token soon stops working.
    fn default() -> Self {
        TokenTtl(Duration::from_secs(4 * 3600))
    }
}

/// Parses `1h30m`, `30m`, `4h`, `90s`, `1h30m15s`: whole numbers, units
/// `h`, `m`, `s`, each at most once and in that order.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let syntax = || DurationError::Syntax(text.to_string());
    let mut rest = text;
    let mut total: u64 = 0;
    let mut next_unit = 0; // units must come in the order of UNITS
    const UNITS: [(char, u64); 3] = [('h', 3600), ('m', 60), ('s', 1)];
    if rest.is_empty() {
        return Err(syntax());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return Err(syntax());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| syntax())?;
        let unit = rest[digits..].chars().next().ok_or_else(syntax)?;
        let index = UNITS
            .iter()
            .position(|(u, _)| *u == unit)
            .ok_or_else(syntax)?;
        if index < next_unit {
            return Err(syntax());
        }
        next_unit = index + 1;
        total += n * UNITS[index].1;
        rest = &rest[digits + 1..];
    }
    Ok(Duration::from_secs(total))
}

impl FromStr for TokenTtl {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TokenTtl::new(parse_duration(s)?).ok_or_else(|| DurationError::Range(s.to_string()))
    }
}

impl fmt::Display for TokenTtl {
    /// The shortest spelling (`4h`, `1h30m`, `90s` → `1m30s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        let parts = [(s / 3600, 'h'), (s / 60 % 60, 'm'), (s % 60, 's')];
        let mut any = false;
        for (n, unit) in parts {
            if n > 0 {
                write!(f, "{n}{unit}")?;
                any = true;
            }
        }
        if !any {
            f.write_str("0s")?;
        }
        Ok(())
    }
}

impl Serialize for TokenTtl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TokenTtl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
