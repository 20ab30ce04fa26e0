//! SageMaker HyperPod's inventory files.
//!
//! `resource_config.json` lists the cluster ARN and every instance group with
//! its instances; `provisioning_parameters.json` (from the Slurm base
//! lifecycle scripts) says which group is the controller and which the login
//! group. HyperPod adds fields over time, so unknown fields are ignored and
//! optional ones may be missing; `Instances` is empty or null for a group
//! scaled to 0.

use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

use super::arn::ClusterArn;
use super::error::IdentityError;
use super::node::{ClusterIdentity, Role, TopologySource, strip_ml};
use super::roles::ProvisioningParameters;
use super::topology::{Group, Member, Topology};

/// Environment variable through which HyperPod points at `resource_config.json`;
/// it wins over `identity.resource_config`.
pub const RESOURCE_CONFIG_ENV: &str = "SAGEMAKER_RESOURCE_CONFIG_PATH";

/// `resource_config.json`, as far as hpk8s reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResourceConfig {
    /// `ClusterConfig` (required).
    #[serde(default)]
    pub cluster_config: Option<ClusterConfig>,
    /// `InstanceGroups` (required).
    #[serde(default)]
    pub instance_groups: Option<Vec<InstanceGroup>>,
}

/// `ClusterConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClusterConfig {
    /// `ClusterArn` (required).
    #[serde(default)]
    pub cluster_arn: Option<String>,
    /// `ClusterName` (optional; the cluster id stands in).
    #[serde(default)]
    pub cluster_name: Option<String>,
}

/// One entry of `InstanceGroups`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceGroup {
    /// `Name` (required).
    #[serde(default)]
    pub name: Option<String>,
    /// `InstanceType`, e.g. `ml.p5.48xlarge`.
    #[serde(default)]
    pub instance_type: Option<String>,
    /// `Instances`: empty or null when the group is scaled to 0.
    #[serde(default)]
    pub instances: Option<Vec<Instance>>,
}

/// One entry of `Instances`. `AgentIpAddress` is deliberately not read:
/// it is HyperPod's management interface and must never be advertised.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Instance {
    /// `CustomerIpAddress`: the address in the customer VPC (required).
    #[serde(default)]
    pub customer_ip_address: Option<String>,
    /// `InstanceId`.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// `InstanceName`.
    #[serde(default)]
    pub instance_name: Option<String>,
}

/// A JSON parse failure: position, field path when known, and whether the
/// text itself (rather than a field's type) is broken.
struct JsonFailure {
    syntax: bool,
    line: usize,
    column: usize,
    field: String,
    message: String,
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonFailure> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        failure(&inner, field)
    })?;
    de.end().map_err(|e| failure(&e, String::new()))?;
    Ok(value)
}

fn failure(e: &serde_json::Error, field: String) -> JsonFailure {
    let full = e.to_string();
    // serde_json appends " at line L column C"; we report the position ourselves.
    let message = full
        .rsplit_once(" at line ")
        .map_or(full.as_str(), |(m, _)| m)
        .to_string();
    JsonFailure {
        syntax: !e.is_data(),
        line: e.line(),
        column: e.column(),
        field: if field == "." { String::new() } else { field },
        message,
    }
}

/// Parses `resource_config.json`; `path` is only used in messages.
pub fn parse_resource_config(bytes: &[u8], path: &Path) -> Result<ResourceConfig, IdentityError> {
    parse_json(bytes).map_err(|f| {
        if f.syntax {
            IdentityError::ResourceConfigMalformed {
                path: path.to_path_buf(),
                line: f.line,
                column: f.column,
                message: f.message,
            }
        } else {
            IdentityError::InvalidField {
                path: path.to_path_buf(),
                field: if f.field.is_empty() {
                    "(top level)".into()
                } else {
                    f.field
                },
                message: format!("{} (line {} column {})", f.message, f.line, f.column),
            }
        }
    })
}

/// Parses `provisioning_parameters.json`; `path` is only used in messages.
pub fn parse_provisioning(
    bytes: &[u8],
    path: &Path,
) -> Result<ProvisioningParameters, IdentityError> {
    parse_json(bytes).map_err(|f| IdentityError::ProvisioningMalformed {
        path: path.to_path_buf(),
        line: f.line,
        column: f.column,
        message: if f.field.is_empty() {
            f.message
        } else {
            format!("field `{}`: {}", f.field, f.message)
        },
    })
}

impl ResourceConfig {
    /// Checks required fields and builds the topology; every group is a
    /// worker until [`Topology::assign_roles`] says otherwise.
    pub fn topology(&self, path: &Path) -> Result<Topology, IdentityError> {
        let missing = |field: &str| IdentityError::MissingField {
            path: path.to_path_buf(),
            field: field.to_string(),
        };
        let arn = self
            .cluster_config
            .as_ref()
            .and_then(|c| c.cluster_arn.as_deref())
            .ok_or_else(|| missing("ClusterConfig.ClusterArn"))?;
        let parsed = ClusterArn::parse(arn).map_err(|reason| IdentityError::BadArn {
            path: path.to_path_buf(),
            arn: arn.to_string(),
            reason,
        })?;
        let groups_in = self
            .instance_groups
            .as_ref()
            .ok_or_else(|| missing("InstanceGroups"))?;
        let mut groups = Vec::with_capacity(groups_in.len());
        for (gi, g) in groups_in.iter().enumerate() {
            let name = g
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| missing(&format!("InstanceGroups[{gi}].Name")))?;
            let mut members = Vec::new();
            for (ii, inst) in g.instances.iter().flatten().enumerate() {
                let location = format!("InstanceGroups[{gi}].Instances[{ii}]");
                let field = format!("{location}.CustomerIpAddress");
                let raw = inst
                    .customer_ip_address
                    .as_deref()
                    .ok_or_else(|| missing(&field))?;
                let address: IpAddr =
                    raw.trim()
                        .parse()
                        .map_err(|_| IdentityError::InvalidField {
                            path: path.to_path_buf(),
                            field: field.clone(),
                            message: format!("`{raw}` is not an IP address"),
                        })?;
                members.push(Member {
                    address,
                    name: None,
                    instance_id: inst.instance_id.clone(),
                    location,
                });
            }
            groups.push(Group {
                role: Role::Worker,
                name,
                instance_type: g.instance_type.as_deref().map(strip_ml),
                members,
            });
        }
        let name = self
            .cluster_config
            .as_ref()
            .and_then(|c| c.cluster_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| parsed.id.clone());
        Ok(Topology {
            source: TopologySource::Hyperpod,
            cluster: ClusterIdentity {
                name,
                id: Some(parsed.id),
                arn: Some(arn.to_string()),
                partition: Some(parsed.partition),
                region: Some(parsed.region),
                account: Some(parsed.account),
            },
            inventory: path.display().to_string(),
            groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::roles::RoleRules;

    const EXAMPLE: &str = r#"{
      "ClusterConfig": {
        "ClusterArn": "arn:aws:sagemaker:us-west-2:111122223333:cluster/kb8v11zrrpvr",
        "ClusterName": "ml-cluster",
        "ClusterType": "Slurm"
      },
      "SlurmConfig": {"ControllerIps": ["10.1.113.28"]},
      "InstanceGroups": [
        { "Name": "controller-machine", "InstanceType": "ml.m5.2xlarge",
          "Instances": [ { "AgentIpAddress": "172.16.102.203", "CustomerIpAddress": "10.1.113.28",
                           "InstanceId": "i-07259dd159a1c7130", "InstanceName": "controller-machine-1",
                           "SomethingNew": {"x": 1} } ] },
        { "Name": "worker-group-1", "InstanceType": "ml.p5.48xlarge",
          "Instances": [ { "AgentIpAddress": "172.16.100.157", "CustomerIpAddress": "10.1.38.128",
                           "InstanceId": "i-0cbbe3075137ffa1d", "InstanceName": "worker-group-1-1" } ] },
        { "Name": "scaled-to-zero", "InstanceType": "ml.p5.48xlarge", "Instances": null },
        { "Name": "empty", "Instances": [] },
        { "Name": "no-instances-key" }
      ]
    }"#;

    fn rules(controller: &[&str], login: &[&str]) -> RoleRules {
        RoleRules::new(
            controller.iter().map(|s| s.to_string()).collect(),
            login.iter().map(|s| s.to_string()).collect(),
        )
    }

    #[test]
    fn example_with_unknown_fields_and_null_instances() {
        let p = Path::new("/rc.json");
        let rc = parse_resource_config(EXAMPLE.as_bytes(), p).unwrap();
        let mut t = rc.topology(p).unwrap();
        assert_eq!(t.groups[0].role, Role::Worker);
        t.assign_roles(&rules(&["controller-machine"], &[]));
        assert_eq!(t.cluster.id.as_deref(), Some("kb8v11zrrpvr"));
        assert_eq!(t.cluster.name, "ml-cluster");
        assert_eq!(t.cluster.region.as_deref(), Some("us-west-2"));
        assert_eq!(t.groups.len(), 5);
        assert_eq!(t.groups[0].role, Role::Controller);
        assert_eq!(t.groups[1].role, Role::Worker);
        assert_eq!(t.groups[1].instance_type.as_deref(), Some("p5.48xlarge"));
        assert_eq!(t.groups[1].members[0].address.to_string(), "10.1.38.128");
        assert!(t.groups[2].members.is_empty() && t.groups[3].members.is_empty());
        assert!(t.groups[4].instance_type.is_none());
    }

    #[test]
    fn missing_required_fields_are_named() {
        let p = Path::new("/rc.json");
        for (json, field) in [
            (r#"{"InstanceGroups": []}"#, "ClusterConfig.ClusterArn"),
            (
                r#"{"ClusterConfig": {}, "InstanceGroups": []}"#,
                "ClusterConfig.ClusterArn",
            ),
            (
                r#"{"ClusterConfig": {"ClusterArn": "arn:aws:sagemaker:us-west-2:111122223333:cluster/x"}}"#,
                "InstanceGroups",
            ),
            (
                r#"{"ClusterConfig": {"ClusterArn": "arn:aws:sagemaker:us-west-2:111122223333:cluster/x"},
                   "InstanceGroups": [{"Name": "a", "Instances": [{"CustomerIpAddress": "10.0.0.1"}, {"AgentIpAddress": "172.16.0.1"}]}]}"#,
                "InstanceGroups[0].Instances[1].CustomerIpAddress",
            ),
            (
                r#"{"ClusterConfig": {"ClusterArn": "arn:aws:sagemaker:us-west-2:111122223333:cluster/x"},
                   "InstanceGroups": [{"Instances": []}]}"#,
                "InstanceGroups[0].Name",
            ),
        ] {
            let e = parse_resource_config(json.as_bytes(), p)
                .and_then(|rc| rc.topology(p))
                .unwrap_err();
            assert!(matches!(e, IdentityError::MissingField { .. }), "{e}");
            assert!(e.to_string().contains(&format!("`{field}`")), "{e}");
        }
    }

    #[test]
    fn malformed_has_position_and_wrong_types_name_the_field() {
        let p = Path::new("/rc.json");
        let e = parse_resource_config(b"{\n  \"InstanceGroups\": [\n", p).unwrap_err();
        assert!(
            matches!(e, IdentityError::ResourceConfigMalformed { line: 3, .. }),
            "{e}"
        );
        let e = parse_resource_config(
            br#"{"InstanceGroups": [{"Name": "a", "Instances": "x"}]}"#,
            p,
        )
        .unwrap_err();
        assert!(matches!(e, IdentityError::InvalidField { .. }), "{e}");
        assert!(e.to_string().contains("InstanceGroups[0].Instances"), "{e}");
        let e = parse_resource_config(b"{} trailing", p).unwrap_err();
        assert!(
            matches!(e, IdentityError::ResourceConfigMalformed { .. }),
            "{e}"
        );
    }

    #[test]
    fn bad_customer_ip_and_bad_arn() {
        let p = Path::new("/rc.json");
        let rc = parse_resource_config(
            br#"{"ClusterConfig": {"ClusterArn": "arn:aws:sagemaker:us-west-2:111122223333:cluster/x"},
                 "InstanceGroups": [{"Name": "a", "Instances": [{"CustomerIpAddress": "ten"}]}]}"#,
            p,
        )
        .unwrap();
        let e = rc.topology(p).unwrap_err();
        assert!(
            e.to_string().contains("Instances[0].CustomerIpAddress"),
            "{e}"
        );
        let rc = parse_resource_config(
            br#"{"ClusterConfig": {"ClusterArn": "kb8v11zrrpvr"}, "InstanceGroups": []}"#,
            p,
        )
        .unwrap();
        let e = rc.topology(p).unwrap_err();
        assert!(matches!(e, IdentityError::BadArn { .. }), "{e}");
        assert!(e.to_string().contains("ClusterConfig.ClusterArn"), "{e}");
    }

    #[test]
    fn provisioning_parameters() {
        let p = Path::new("provisioning_parameters.json");
        let pp = parse_provisioning(
            br#"{"version": "1.0.0", "workload_manager": "slurm", "controller_group": "c",
                 "worker_groups": [{"instance_group_name": "w", "partition_name": "dev"}]}"#,
            p,
        )
        .unwrap();
        assert_eq!(pp.controller_group.as_deref(), Some("c"));
        assert_eq!(pp.login_group, None);
        let e = parse_provisioning(br#"{"controller_group": 3}"#, p).unwrap_err();
        assert!(
            matches!(e, IdentityError::ProvisioningMalformed { .. }),
            "{e}"
        );
        assert!(e.to_string().contains("controller_group"), "{e}");
        let e = parse_provisioning(b"{", p).unwrap_err();
        assert!(
            matches!(e, IdentityError::ProvisioningMalformed { .. }),
            "{e}"
        );
    }
}
