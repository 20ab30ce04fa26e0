//! Which instance group plays which role.
//!
//! The config (`identity.controller_groups`, `identity.login_groups`) wins;
//! otherwise `provisioning_parameters.json` (`controller_group`,
//! `login_group`) decides; every other group is a worker. Without any
//! controller group hpk8s refuses to guess: two nodes both running
//! `kubeadm init` would make two clusters.

use std::path::Path;

use serde::Deserialize;

use super::error::IdentityError;
use super::node::Role;
use crate::config::IdentityConfig;

/// `provisioning_parameters.json`, as far as hpk8s reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ProvisioningParameters {
    /// The controller's instance group.
    #[serde(default)]
    pub controller_group: Option<String>,
    /// The login nodes' instance group.
    #[serde(default)]
    pub login_group: Option<String>,
}

/// Group names per role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleRules {
    controller: Vec<String>,
    login: Vec<String>,
}

impl RoleRules {
    /// Rules from explicit lists.
    pub fn new(controller: Vec<String>, login: Vec<String>) -> Self {
        Self { controller, login }
    }

    /// The role of the nodes of `group`.
    pub fn role_of(&self, group: &str) -> Role {
        if self.controller.iter().any(|g| g == group) {
            Role::Controller
        } else if self.login.iter().any(|g| g == group) {
            Role::Login
        } else {
            Role::Worker
        }
    }
}

/// A group name and where it was read, for messages.
struct Named {
    group: String,
    origin: String,
}

/// Decides the rules and checks them against the inventory's group names.
///
/// A login group from `provisioning_parameters.json` that the inventory does
/// not have is only warned about: the Slurm templates carry one whether or
/// not the cluster has login nodes.
pub fn decide(
    config: &IdentityConfig,
    provisioning: Option<&ProvisioningParameters>,
    provisioning_path: &Path,
    inventory_groups: &[&str],
    inventory: &Path,
) -> Result<RoleRules, IdentityError> {
    let pp_origin = |field: &str| format!("{} field `{field}`", provisioning_path.display());
    let from_config = |groups: &[String], key: &str| -> Vec<Named> {
        groups
            .iter()
            .map(|g| Named {
                group: g.clone(),
                origin: format!("config key {key}"),
            })
            .collect()
    };
    let from_pp = |field: &str, value: Option<&String>| -> Vec<Named> {
        value
            .filter(|g| !g.is_empty())
            .map(|g| Named {
                group: g.clone(),
                origin: pp_origin(field),
            })
            .into_iter()
            .collect()
    };
    let controller = if config.controller_groups.is_empty() {
        from_pp(
            "controller_group",
            provisioning.and_then(|p| p.controller_group.as_ref()),
        )
    } else {
        from_config(&config.controller_groups, "identity.controller_groups")
    };
    let (login, login_strict) = if config.login_groups.is_empty() {
        (
            from_pp(
                "login_group",
                provisioning.and_then(|p| p.login_group.as_ref()),
            ),
            false,
        )
    } else {
        (
            from_config(&config.login_groups, "identity.login_groups"),
            true,
        )
    };
    if controller.is_empty() {
        return Err(IdentityError::NoControllerGroup {
            provisioning: provisioning_path.to_path_buf(),
        });
    }
    let unknown = |n: &Named| IdentityError::UnknownGroup {
        origin: n.origin.clone(),
        group: n.group.clone(),
        inventory: inventory.to_path_buf(),
        known: inventory_groups.join(", "),
    };
    for n in &controller {
        if !inventory_groups.contains(&n.group.as_str()) {
            return Err(unknown(n));
        }
    }
    let mut login_names = Vec::new();
    for n in login {
        if inventory_groups.contains(&n.group.as_str()) {
            login_names.push(n.group);
        } else if login_strict {
            return Err(unknown(&n));
        } else {
            tracing::warn!(
                group = %n.group,
                "{} names a login group that {} does not have; ignoring it",
                n.origin,
                inventory.display()
            );
        }
    }
    if let Some(both) = controller.iter().find(|c| login_names.contains(&c.group)) {
        return Err(IdentityError::ConflictingRoles {
            group: both.group.clone(),
        });
    }
    Ok(RoleRules::new(
        controller.into_iter().map(|n| n.group).collect(),
        login_names,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUPS: &[&str] = &["controller-machine", "worker-group-1", "login-group"];

    fn cfg(controller: &[&str], login: &[&str]) -> IdentityConfig {
        IdentityConfig {
            controller_groups: controller.iter().map(|s| s.to_string()).collect(),
            login_groups: login.iter().map(|s| s.to_string()).collect(),
            ..IdentityConfig::default()
        }
    }

    fn pp(controller: Option<&str>, login: Option<&str>) -> ProvisioningParameters {
        ProvisioningParameters {
            controller_group: controller.map(String::from),
            login_group: login.map(String::from),
        }
    }

    fn decide_(
        c: &IdentityConfig,
        p: Option<&ProvisioningParameters>,
    ) -> Result<RoleRules, IdentityError> {
        decide(
            c,
            p,
            Path::new("/lc/provisioning_parameters.json"),
            GROUPS,
            Path::new("/rc.json"),
        )
    }

    #[test]
    fn provisioning_parameters_decide_by_default() {
        let r = decide_(
            &cfg(&[], &[]),
            Some(&pp(Some("controller-machine"), Some("login-group"))),
        )
        .unwrap();
        assert_eq!(r.role_of("controller-machine"), Role::Controller);
        assert_eq!(r.role_of("login-group"), Role::Login);
        assert_eq!(r.role_of("worker-group-1"), Role::Worker);
    }

    #[test]
    fn config_wins_over_provisioning_parameters() {
        let r = decide_(
            &cfg(&["worker-group-1"], &[]),
            Some(&pp(Some("controller-machine"), None)),
        )
        .unwrap();
        assert_eq!(r.role_of("worker-group-1"), Role::Controller);
        assert_eq!(r.role_of("controller-machine"), Role::Worker);
    }

    #[test]
    fn no_controller_is_an_error() {
        for p in [
            None,
            Some(pp(None, Some("login-group"))),
            Some(pp(Some(""), None)),
        ] {
            let e = decide_(&cfg(&[], &[]), p.as_ref()).unwrap_err();
            assert!(matches!(e, IdentityError::NoControllerGroup { .. }), "{e}");
            assert!(e.to_string().contains("identity.controller_groups"), "{e}");
        }
    }

    #[test]
    fn unknown_groups_are_named_with_their_origin() {
        let e = decide_(&cfg(&["ctrl"], &[]), None).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("identity.controller_groups") && s.contains("`ctrl`"),
            "{s}"
        );
        assert!(
            s.contains("controller-machine, worker-group-1, login-group"),
            "{s}"
        );
        let e = decide_(&cfg(&[], &[]), Some(&pp(Some("ctrl"), None))).unwrap_err();
        assert!(e.to_string().contains("field `controller_group`"), "{e}");
        let e = decide_(&cfg(&["controller-machine"], &["nope"]), None).unwrap_err();
        assert!(matches!(e, IdentityError::UnknownGroup { .. }), "{e}");
        // A stale login group in provisioning parameters is tolerated.
        let r = decide_(
            &cfg(&[], &[]),
            Some(&pp(Some("controller-machine"), Some("gone"))),
        )
        .unwrap();
        assert_eq!(r.role_of("gone"), Role::Worker);
    }

    #[test]
    fn a_group_cannot_be_both() {
        let e = decide_(&cfg(&["controller-machine"], &["controller-machine"]), None).unwrap_err();
        assert!(matches!(e, IdentityError::ConflictingRoles { .. }), "{e}");
    }
}
