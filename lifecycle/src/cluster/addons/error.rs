//! Why the addons could not be built or applied.

use std::path::PathBuf;

use crate::error::class::classify;
use crate::host::FsError;
use crate::kube::errors::class_of;

/// Errors of the addons step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `addons.registry_mirror` is not `host[:port][/path]`.
    #[error(
        "config key addons.registry_mirror = {value:?} is not a registry (`host[:port][/path]`, no scheme): {why}"
    )]
    InvalidMirror {
        /// The configured value.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// An addon image setting is not an image reference.
    #[error("config key addons.{key} = {value:?} is not an image reference: {why}")]
    InvalidImage {
        /// The config key.
        key: &'static str,
        /// The configured value.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// The pod subnet handed to flannel is not a CIDR.
    #[error("pod subnet {value:?} is not a CIDR (like 10.244.0.0/16); fix the pod network setting")]
    InvalidPodSubnet {
        /// The value.
        value: String,
    },
    /// `addons.manifest_dir` or a file in it cannot be read.
    #[error("reading addon manifests: {0}")]
    ManifestRead(#[source] FsError),
    /// A manifest file is not valid YAML/JSON.
    #[error("manifest {file} document {document}: {message}; fix the file or remove it")]
    ManifestSyntax {
        /// The file (host path).
        file: PathBuf,
        /// 1-based document index within the file.
        document: usize,
        /// Parser message.
        message: String,
    },
    /// A manifest document lacks `apiVersion`, `kind` or `metadata.name`.
    #[error(
        "manifest {file} document {document}: {what}; every object needs apiVersion, kind and metadata.name"
    )]
    ManifestInvalid {
        /// The file (host path).
        file: PathBuf,
        /// 1-based document index within the file.
        document: usize,
        /// What is missing or wrong.
        what: String,
    },
    /// The API server serves no resource of this kind.
    #[error(
        "{origin}: kind {kind} (apiVersion {api_version}) is not served by the API server; install its CRD first or fix apiVersion/kind"
    )]
    UnknownKind {
        /// Where the object came from (`manifest FILE document N` or the addon).
        origin: String,
        /// apiVersion.
        api_version: String,
        /// kind.
        kind: String,
    },
    /// Discovery failed for another reason than the kind being unknown.
    #[error(
        "{origin}: looking up {kind} (apiVersion {api_version}) on the API server failed: {source}"
    )]
    Discovery {
        /// Where the object came from.
        origin: String,
        /// apiVersion.
        api_version: String,
        /// kind.
        kind: String,
        /// The client error (boxed: it is large).
        #[source]
        source: Box<kube::Error>,
    },
    /// The API server refused or failed a server-side apply.
    #[error("{origin}: server-side apply of {kind} {object} failed: {source}")]
    Apply {
        /// Where the object came from.
        origin: String,
        /// kind.
        kind: String,
        /// `namespace/name` or `name`.
        object: String,
        /// The client error (boxed: it is large).
        #[source]
        source: Box<kube::Error>,
    },
    /// Reading a DaemonSet's rollout status failed.
    #[error("reading the status of DaemonSet {namespace}/{name} failed: {source}")]
    RolloutRead {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The client error (boxed: it is large).
        #[source]
        source: Box<kube::Error>,
    },
    /// A built-in object could not be converted for applying (a bug).
    #[error("encoding addon object {object} failed: {source}; this is a bug in hpk8s")]
    Encode {
        /// The object.
        object: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

classify!(Error {
    InvalidMirror { .. } => Config "registry_mirror_invalid";
    InvalidImage { .. } => Config "addon_image_invalid";
    InvalidPodSubnet { .. } => Config "flannel_pod_subnet_invalid";
    ManifestRead { 0: e } => via e;
    ManifestSyntax { .. } => Input "manifest_syntax";
    ManifestInvalid { .. } => Input "manifest_invalid";
    UnknownKind { .. } => Input "manifest_unknown_kind";
    Discovery { source, .. } => Unavailable "api_discovery_failed" refine class_of(source);
    Apply { source, .. } => Unavailable "addon_apply_failed" refine class_of(source);
    RolloutRead { source, .. } => Unavailable "rollout_read_failed" refine class_of(source);
    Encode { .. } => Internal "addon_encode_bug";
});

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
