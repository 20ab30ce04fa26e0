//! Node taints as written in the config: `key[=value]:Effect`.

use std::fmt;

use serde::Serialize;

use super::label;

/// What a taint does to pods that do not tolerate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Effect {
    /// New pods are not scheduled.
    NoSchedule,
    /// The scheduler avoids the node.
    PreferNoSchedule,
    /// Running pods are evicted too.
    NoExecute,
}

impl Effect {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::NoSchedule => "NoSchedule",
            Effect::PreferNoSchedule => "PreferNoSchedule",
            Effect::NoExecute => "NoExecute",
        }
    }
}

/// A taint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Taint {
    /// Key (label-key syntax).
    pub key: String,
    /// Value (label-value syntax), empty when none.
    pub value: String,
    /// Effect.
    pub effect: Effect,
}

impl Taint {
    /// Parses `key[=value]:Effect`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Taint, String> {
        let (kv, effect) = text.rsplit_once(':').ok_or_else(|| {
            format!("`{text}` has no `:Effect` (e.g. `nvidia.com/gpu=true:NoSchedule`)")
        })?;
        let effect = match effect {
            "NoSchedule" => Effect::NoSchedule,
            "PreferNoSchedule" => Effect::PreferNoSchedule,
            "NoExecute" => Effect::NoExecute,
            other => {
                return Err(format!(
                    "`{text}`: effect `{other}` is not NoSchedule, PreferNoSchedule or NoExecute"
                ));
            }
        };
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        if !label::valid_key(key) {
            return Err(format!("`{text}`: `{key}` is not a valid taint key"));
        }
        if !label::valid_value(value) {
            return Err(format!("`{text}`: `{value}` is not a valid taint value"));
        }
        Ok(Taint {
            key: key.to_string(),
            value: value.to_string(),
            effect,
        })
    }
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.key, self.effect.as_str())
        } else {
            write!(f, "{}={}:{}", self.key, self.value, self.effect.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let t = Taint::parse("nvidia.com/gpu=true:NoSchedule").unwrap();
        assert_eq!(t.key, "nvidia.com/gpu");
        assert_eq!(t.value, "true");
        assert_eq!(t.effect, Effect::NoSchedule);
        assert_eq!(t.to_string(), "nvidia.com/gpu=true:NoSchedule");
        assert_eq!(
            Taint::parse("dedicated:NoExecute").unwrap().to_string(),
            "dedicated:NoExecute"
        );
        assert!(Taint::parse("x=y").unwrap_err().contains("no `:Effect`"));
        assert!(Taint::parse("x=y:Never").unwrap_err().contains("Never"));
        assert!(Taint::parse("bad key=y:NoSchedule").is_err());
        assert!(Taint::parse("x=-y:NoSchedule").is_err());
    }
}
