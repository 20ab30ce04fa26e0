//! Kubernetes versions and the version-skew rules hpk8s enforces.

use std::fmt;

/// A Kubernetes (or kubeadm/kubelet) version `MAJOR.MINOR.PATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

/// How many minor versions a kubelet may trail its control plane (never
/// lead it).
pub const KUBELET_MAX_MINOR_SKEW: u32 = 3;

impl KubeVersion {
    /// Parses `1.31.4` or `v1.31.4` exactly (no suffix).
    pub fn parse(text: &str) -> Option<KubeVersion> {
        let v = text.strip_prefix('v').unwrap_or(text);
        let mut it = v.split('.');
        let parse = |s: Option<&str>| -> Option<u32> {
            s.filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))?
                .parse()
                .ok()
        };
        let out = KubeVersion {
            major: parse(it.next())?,
            minor: parse(it.next())?,
            patch: parse(it.next())?,
        };
        it.next().is_none().then_some(out)
    }

    /// Parses a tool's version output: the first line, a leading `v`, and
    /// a build suffix (`v1.31.2-eks-7f9249a`, `v1.31.2+k3s1`) ignored.
    pub fn parse_output(output: &str) -> Option<KubeVersion> {
        let line = output.lines().next().unwrap_or("").trim();
        KubeVersion::parse(line.split(['-', '+']).next().unwrap_or(""))
    }

    /// `(major, minor)`.
    pub fn minor_version(&self) -> (u32, u32) {
        (self.major, self.minor)
    }

    /// Whether a kubelet of this version may join a control plane of
    /// `control_plane`: same major, not newer, at most
    /// [`KUBELET_MAX_MINOR_SKEW`] minors older.
    pub fn may_join(&self, control_plane: &KubeVersion) -> bool {
        self.major == control_plane.major
            && self.minor <= control_plane.minor
            && control_plane.minor <= self.minor + KUBELET_MAX_MINOR_SKEW
    }

    /// Whether a kubeadm of this version can deploy `kubernetes`: its own
    /// minor or the one before.
    pub fn deploys(&self, kubernetes: &KubeVersion) -> bool {
        self.major == kubernetes.major
            && (kubernetes.minor == self.minor || kubernetes.minor + 1 == self.minor)
    }
}

impl fmt::Display for KubeVersion {
    /// `v1.34.1`, as Kubernetes tools print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KubeVersion {
        KubeVersion::parse(s).unwrap()
    }

    #[test]
    fn versions() {
        assert_eq!(KubeVersion::parse("v1.31.4"), Some(v("1.31.4")));
        assert_eq!(v("1.31.4").minor_version(), (1, 31));
        assert_eq!(KubeVersion::parse("1.31"), None);
        assert_eq!(KubeVersion::parse("1.31.4.1"), None);
        assert_eq!(KubeVersion::parse("1.x.4"), None);
        assert_eq!(
            KubeVersion::parse_output("v1.31.2-eks-7f9249a\n"),
            Some(v("1.31.2"))
        );
        assert_eq!(v("1.34.1").to_string(), "v1.34.1");
    }

    #[test]
    fn skew_rules() {
        assert!(v("1.31.0").may_join(&v("1.34.1")));
        assert!(!v("1.30.0").may_join(&v("1.34.1")));
        assert!(!v("1.35.0").may_join(&v("1.34.1")));
        assert!(!v("2.34.0").may_join(&v("1.34.1")));
        assert!(v("1.34.1").deploys(&v("1.34.0")));
        assert!(v("1.34.1").deploys(&v("1.33.9")));
        assert!(!v("1.34.1").deploys(&v("1.32.0")));
        assert!(!v("1.33.1").deploys(&v("1.34.0")));
    }
}
