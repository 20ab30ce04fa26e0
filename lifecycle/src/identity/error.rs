//! Why the node identity could not be resolved. Every variant is one line
//! naming the file, field or endpoint involved and what to do about it, and
//! has its own stable kind (`docs/exit-codes.md`).

use std::net::IpAddr;
use std::path::PathBuf;

use crate::error::class::{ExitClass, classify};

/// Errors resolving the node identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The host's interface addresses could not be listed.
    #[error("cannot list this host's network addresses: {0}")]
    Interfaces(#[source] std::io::Error),
    /// Local topology: the host has no usable address at all.
    #[error("this host has no non-loopback address; set node.address in the config")]
    NoAddress,
    /// `identity.source = "hyperpod"` but `resource_config.json` is absent.
    #[error(
        "HyperPod inventory {path} does not exist (identity.source = \"hyperpod\"); set identity.resource_config or SAGEMAKER_RESOURCE_CONFIG_PATH, or use another identity.source"
    )]
    ResourceConfigMissing {
        /// Host path looked at.
        path: PathBuf,
    },
    /// An identity input file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// Host path.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// An identity input file is larger than any real one.
    #[error("{path} is larger than {limit} bytes; it is not the inventory file HyperPod writes")]
    TooLarge {
        /// Host path.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// `resource_config.json` is not valid JSON.
    #[error("HyperPod inventory {path} line {line} column {column}: malformed JSON: {message}")]
    ResourceConfigMalformed {
        /// Host path.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Parser message.
        message: String,
    },
    /// A field of an inventory has the wrong type or an unusable value.
    #[error("{path}: field `{field}` is invalid: {message}")]
    InvalidField {
        /// File (or config key) holding the field.
        path: PathBuf,
        /// Field path, e.g. `InstanceGroups[1].Instances[0].CustomerIpAddress`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A required field of `resource_config.json` is absent.
    #[error("HyperPod inventory {path}: required field `{field}` is missing")]
    MissingField {
        /// Host path.
        path: PathBuf,
        /// Field path.
        field: String,
    },
    /// `ClusterConfig.ClusterArn` is not a SageMaker cluster ARN.
    #[error(
        "HyperPod inventory {path}: field `ClusterConfig.ClusterArn` = `{arn}` is not a cluster ARN ({reason}); expected arn:PARTITION:sagemaker:REGION:ACCOUNT:cluster/ID"
    )]
    BadArn {
        /// Host path.
        path: PathBuf,
        /// The value found.
        arn: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `provisioning_parameters.json` is not valid JSON or has wrong types.
    #[error("provisioning parameters {path} line {line} column {column}: {message}")]
    ProvisioningMalformed {
        /// Path (host path, or relative to the current directory).
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Parser message, with the field when known.
        message: String,
    },
    /// None of the host's addresses is in the inventory.
    #[error(
        "none of this host's addresses ({found}) is listed in {inventory}; check that this node belongs to that cluster or set node.address"
    )]
    AddressNotFound {
        /// Addresses found on the host, comma-separated (`none` when empty).
        found: String,
        /// The inventory (file or config key).
        inventory: String,
    },
    /// Several of the host's addresses are in the inventory.
    #[error(
        "several of this host's addresses are listed in {inventory} ({matches}); set node.address to the one this node uses on the cluster network"
    )]
    AmbiguousAddress {
        /// The matching addresses, comma-separated.
        matches: String,
        /// The inventory (file or config key).
        inventory: String,
    },
    /// `node.address` is set but not in the inventory.
    #[error(
        "node.address = {address} is not listed in {inventory}; use one of this node's inventory addresses"
    )]
    PinnedAddressNotInInventory {
        /// The configured address.
        address: IpAddr,
        /// The inventory (file or config key).
        inventory: String,
    },
    /// The inventory lists the same address for two nodes.
    #[error("{inventory} lists address {address} twice ({first} and {second}); fix the inventory")]
    DuplicateAddress {
        /// The inventory (file or config key).
        inventory: String,
        /// The repeated address.
        address: IpAddr,
        /// Where it first appears.
        first: String,
        /// Where it appears again.
        second: String,
    },
    /// Nothing says which instance group runs the control plane.
    #[error(
        "cannot tell which instance group is the controller: set identity.controller_groups or provide provisioning_parameters.json (looked for {provisioning})"
    )]
    NoControllerGroup {
        /// Where provisioning parameters were looked for.
        provisioning: PathBuf,
    },
    /// A group named as controller or login group is not in the inventory.
    #[error(
        "{origin} names instance group `{group}`, which is not in {inventory} (groups: {known})"
    )]
    UnknownGroup {
        /// Where the name comes from (a config key or a file and field).
        origin: String,
        /// The unknown group name.
        group: String,
        /// The inventory file.
        inventory: PathBuf,
        /// The groups the inventory has, comma-separated.
        known: String,
    },
    /// A group is named both as controller group and as login group.
    #[error(
        "instance group `{group}` is both a controller group and a login group; fix identity.controller_groups / identity.login_groups or provisioning_parameters.json"
    )]
    ConflictingRoles {
        /// The group.
        group: String,
    },
    /// `identity.source = "static"` but no nodes are configured.
    #[error(
        "identity.source = \"static\" but the config has no [[identity.nodes]]; add the cluster's nodes"
    )]
    NoStaticNodes,
    /// The static topology has no controller.
    #[error(
        "[[identity.nodes]] has no node with role = \"controller\"; mark the control-plane node"
    )]
    NoStaticController,
    /// EC2 was detected (or an endpoint configured) but IMDS did not answer.
    #[error(
        "EC2 instance metadata service at {endpoint} is unreachable ({reason}); check identity.imds_endpoint and the instance's metadata options"
    )]
    ImdsUnreachable {
        /// Base URL.
        endpoint: String,
        /// Last failure (time-out, connection refused, HTTP 5xx).
        reason: String,
    },
    /// `identity.source = "ec2"` lacks a setting it needs.
    #[error("{key}: {message}")]
    ElasticConfig {
        /// The config key.
        key: &'static str,
        /// What is missing or wrong, and what to do.
        message: String,
    },
    /// `identity.source = "ec2"` needs IMDS for facts the config does not give.
    #[error(
        "identity.source = \"ec2\" needs this instance's {missing} from IMDS, but {reason}; run on EC2 with IMDSv2 enabled, set identity.imds_endpoint, or set {keys} in the config"
    )]
    ElasticNeedsImds {
        /// The facts missing (`address and node name`).
        missing: String,
        /// Why IMDS gave none.
        reason: String,
        /// The config keys that would give them.
        keys: String,
    },
    /// IMDS answered, but not as IMDSv2 should.
    #[error("EC2 instance metadata service at {endpoint}: {problem}")]
    ImdsProtocol {
        /// Base URL.
        endpoint: String,
        /// What was unexpected (status and path).
        problem: String,
    },
}

classify!(IdentityError {
    Interfaces { .. } => Precondition "interfaces_unreadable";
    NoAddress {} => Precondition "no_host_address";
    ResourceConfigMissing { .. } => Input "resource_config_missing";
    Unreadable { source, .. } => Input "identity_file_unreadable" refine Some(ExitClass::of_io(source, ExitClass::Input));
    ResourceConfigMalformed { .. } => Input "resource_config_malformed";
    TooLarge { .. } => Input "identity_file_too_large";
    InvalidField { .. } => Input "inventory_invalid_field";
    MissingField { .. } => Input "inventory_missing_field";
    BadArn { .. } => Input "cluster_arn_invalid";
    ProvisioningMalformed { .. } => Input "provisioning_parameters_malformed";
    AddressNotFound { .. } => Input "address_not_in_inventory";
    AmbiguousAddress { .. } => Input "address_ambiguous";
    PinnedAddressNotInInventory { .. } => Config "node_address_not_in_inventory";
    DuplicateAddress { .. } => Input "inventory_duplicate_address";
    NoControllerGroup { .. } => Input "no_controller_group";
    UnknownGroup { .. } => Input "unknown_instance_group";
    ConflictingRoles { .. } => Input "conflicting_group_roles";
    NoStaticNodes {} => Config "static_nodes_missing";
    NoStaticController {} => Config "static_controller_missing";
    ImdsUnreachable { .. } => Unavailable "imds_unreachable";
    ImdsProtocol { .. } => Precondition "imds_protocol";
    ElasticConfig { .. } => Config "elastic_config_incomplete";
    ElasticNeedsImds { .. } => Unavailable "imds_required";
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_distinct_and_messages_one_line() {
        let p = || PathBuf::from("/x");
        let ip: IpAddr = [10, 0, 0, 1].into();
        let all = [
            IdentityError::Interfaces(std::io::Error::other("x")),
            IdentityError::NoAddress,
            IdentityError::ResourceConfigMissing { path: p() },
            IdentityError::Unreadable {
                path: p(),
                source: std::io::Error::other("x"),
            },
            IdentityError::ResourceConfigMalformed {
                path: p(),
                line: 1,
                column: 1,
                message: String::new(),
            },
            IdentityError::TooLarge {
                path: p(),
                limit: 1,
            },
            IdentityError::InvalidField {
                path: p(),
                field: String::new(),
                message: String::new(),
            },
            IdentityError::MissingField {
                path: p(),
                field: String::new(),
            },
            IdentityError::BadArn {
                path: p(),
                arn: String::new(),
                reason: String::new(),
            },
            IdentityError::ProvisioningMalformed {
                path: p(),
                line: 1,
                column: 1,
                message: String::new(),
            },
            IdentityError::AddressNotFound {
                found: String::new(),
                inventory: String::new(),
            },
            IdentityError::AmbiguousAddress {
                matches: String::new(),
                inventory: String::new(),
            },
            IdentityError::PinnedAddressNotInInventory {
                address: ip,
                inventory: String::new(),
            },
            IdentityError::DuplicateAddress {
                inventory: String::new(),
                address: ip,
                first: String::new(),
                second: String::new(),
            },
            IdentityError::NoControllerGroup { provisioning: p() },
            IdentityError::UnknownGroup {
                origin: String::new(),
                group: String::new(),
                inventory: p(),
                known: String::new(),
            },
            IdentityError::ConflictingRoles {
                group: String::new(),
            },
            IdentityError::NoStaticNodes,
            IdentityError::NoStaticController,
            IdentityError::ImdsUnreachable {
                endpoint: String::new(),
                reason: String::new(),
            },
            IdentityError::ImdsProtocol {
                endpoint: String::new(),
                problem: String::new(),
            },
            IdentityError::ElasticConfig {
                key: "node.role",
                message: String::new(),
            },
            IdentityError::ElasticNeedsImds {
                missing: String::new(),
                reason: String::new(),
                keys: String::new(),
            },
        ];
        let mut kinds: Vec<&str> = all.iter().map(IdentityError::kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), all.len());
        assert_eq!(IdentityError::KINDS.len(), all.len());
        for e in &all {
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }
}
