//! Why step `packages` cannot plan.

use crate::error::class::classify;
use crate::host::FsError;

/// Errors of this step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host file could not be read.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// `source = "apt"` on a host without dpkg.
    #[error(
        "packages.source is `apt` but this host is not Debian/Ubuntu (no {debian_version} and no {dpkg_query}); set packages.source = \"mirror\" with packages.mirror_url, or \"none\" for a pre-baked image"
    )]
    NotDebian {
        /// The marker file looked for.
        debian_version: &'static str,
        /// The dpkg query tool looked for.
        dpkg_query: &'static str,
    },
    /// A query of the package database failed.
    #[error("cannot query installed packages: `{command}` exited with status {status}: {stderr}")]
    Query {
        /// Command line.
        command: String,
        /// Exit status (-1 when it could not run).
        status: i32,
        /// Last lines of stderr.
        stderr: String,
    },
    /// `source = "mirror"` without a URL.
    #[error(
        "packages.source is `mirror` but packages.mirror_url is not set; set it to the mirror's base URL"
    )]
    MirrorUrlMissing,
    /// The machine's architecture has no Kubernetes release binaries.
    #[error(
        "no Kubernetes binaries for this machine's architecture `{arch}` (the mirror source supports x86_64 and aarch64); use packages.source = \"apt\" or \"none\""
    )]
    UnsupportedArch {
        /// `std::env::consts::ARCH`.
        arch: &'static str,
    },
    /// The mirror could not be reached at all.
    #[error(
        "cannot reach the package mirror at {url}: {message}; check packages.mirror_url and the network path to the mirror"
    )]
    MirrorUnreachable {
        /// URL, credentials redacted.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The mirror does not have a file the step needs.
    #[error(
        "the package mirror has no {url} (not found); check packages.mirror_url and that the mirror carries Kubernetes v{version} for {arch}"
    )]
    MirrorNotFound {
        /// URL, credentials redacted.
        url: String,
        /// Kubernetes version looked for.
        version: String,
        /// Kubernetes architecture name (`amd64`, `arm64`).
        arch: &'static str,
    },
    /// The release mirror lacks a release archive or its checksum file.
    #[error(
        "the release mirror has no {url} (not found); check packages.release_mirror_url and that it carries {what} laid out like GitHub releases"
    )]
    ReleaseNotFound {
        /// URL, credentials redacted.
        url: String,
        /// The release looked for, e.g. `containerd 1.7.29`.
        what: String,
    },
    /// The mirror answered with an error status.
    #[error(
        "the package mirror answered HTTP {status} for {url}; check the mirror's health and credentials"
    )]
    MirrorStatus {
        /// URL, credentials redacted.
        url: String,
        /// HTTP status code.
        status: u16,
    },
    /// A `.sha256` file does not hold a SHA-256 digest.
    #[error(
        "{url} is not a checksum file ({problem}); expected 64 hex digits, optionally followed by whitespace and a file name"
    )]
    MalformedChecksum {
        /// URL, credentials redacted.
        url: String,
        /// What is wrong with it (never its contents).
        problem: String,
    },
    /// A setting this step relies on is unusable.
    #[error("invalid value for `{key}`: {message}")]
    InvalidSetting {
        /// Dotted config key.
        key: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
}

classify!(Error {
    Fs { 0: e } => via e;
    NotDebian { .. } => Precondition "apt_unavailable";
    Query { .. } => Host "package_query_failed";
    MirrorUrlMissing {} => Config "mirror_url_missing";
    UnsupportedArch { .. } => Precondition "architecture_unsupported";
    MirrorUnreachable { .. } => Unavailable "mirror_unreachable";
    MirrorNotFound { .. } => Config "mirror_file_missing";
    ReleaseNotFound { .. } => Config "release_file_missing";
    MirrorStatus { .. } => Unavailable "mirror_http_error";
    MalformedChecksum { .. } => Verification "mirror_checksum_malformed";
    InvalidSetting { .. } => Config "packages_setting_invalid";
});
