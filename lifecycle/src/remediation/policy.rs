//! The decision, as a pure function: what the controller does about one
//! Node, given what the Node reports, what hpk8s already holds on it, how
//! much of the cluster is already out of service and whether the circuit
//! breaker is open. No cluster needed to test it.
//!
//! Order of the checks, and why:
//! 1. `probe-failed` and informational reports are Events only: a monitor
//!    that could not look is not evidence of broken hardware.
//! 2. The control-plane node and the controller group are never taken out
//!    (cordoning the only API server's node, or rebooting the Slurm
//!    controller, takes the whole cluster with it).
//! 3. A node already held continues where it stands (drained → reboot or
//!    replace when configured) instead of counting again.
//! 4. New GPU actions stop while the breaker is open, beyond the share
//!    of the cluster hpk8s may hold and beyond the hourly rate.
//! 5. Interruption notices bypass budget and breaker: the instance leaves
//!    whatever hpk8s does; draining first only saves the pods.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::aws::sagemaker::Restart;
use crate::config::{ClassAction, NoticeAction, RemediationConfig};
use crate::gpu::classify::Class;

/// Restarts (reboot or replace) requested for a node within a day after
/// which hpk8s stops restarting it and leaves it held for a person: a
/// fault that survives two restarts is not fixed by a third.
pub const MAX_RESTARTS_PER_DAY: usize = 2;
/// Failed restart requests after which hpk8s stops asking.
pub const MAX_REQUEST_FAILURES: u32 = 3;

/// What a Node reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trouble {
    /// GPUs healthy (or no GPU condition) and no interruption notice.
    Healthy,
    /// The GPU condition is `Unknown`: hpk8s could not look.
    Unknown,
    /// A GPU fault of this class (condition `GPUHealthy=False`).
    Gpu {
        /// The worst class.
        class: Class,
        /// The condition's reason, e.g. `GPUNeedsReboot`.
        reason: String,
    },
    /// An interruption notice.
    Notice(Notice),
}

/// An interruption notice as the controller reads it from the condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// What kind.
    pub kind: NoticeKind,
    /// The taint value: the action (`terminate`, `stop`, the event code,
    /// `rebalance`).
    pub action: String,
    /// When the instance goes (spot) or the event starts (maintenance).
    pub at: Option<SystemTime>,
}

/// Kinds of interruption notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeKind {
    /// Spot interruption (two minutes).
    Spot,
    /// Scheduled maintenance.
    Maintenance,
    /// Rebalance recommendation.
    Rebalance,
}

/// Where hpk8s's hold on a node stands (recorded on the Node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Taint (and cordon) set; draining when the action says so.
    Holding,
    /// Drained: every pod that had to go is gone.
    Drained,
    /// The drain stopped at its deadline; pods named in an Event.
    DrainBlocked,
    /// A reboot or replacement was requested.
    Requested,
    /// Someone else acts (HyperPod's own recovery: `InstanceIdInUse`), or
    /// hpk8s gave up asking: left held for a person.
    Stopped,
}

/// What hpk8s holds on a node, from its ownership record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The action the hold was taken for.
    pub action: ClassAction,
    /// Where it stands.
    pub stage: Stage,
    /// Failed restart requests.
    pub failures: u32,
    /// Whether an interruption notice (not a GPU fault) started it.
    pub notice: bool,
}

/// What the controller knows about one Node besides its trouble.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Facts {
    /// Why this node is never acted on (control plane, controller group).
    pub protected: Option<String>,
    /// hpk8s's hold, if any.
    pub held: Option<Held>,
    /// Since when the node has been healthy (the condition's transition).
    pub healthy_since: Option<SystemTime>,
    /// Restarts hpk8s requested for this node in the last day.
    pub restarts_last_day: usize,
}

/// The cluster-wide limits at the time of the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Nodes hpk8s holds out of service (cordoned) now.
    pub held: usize,
    /// Holds started in the last hour.
    pub actions_last_hour: usize,
    /// Whether the circuit breaker is open.
    pub breaker_open: bool,
}

impl Budget {
    /// The most nodes hpk8s may hold: `max(1, P % of the nodes)`.
    pub fn allowed(&self, percent: u32) -> usize {
        (self.nodes * percent as usize / 100).max(1)
    }
}

/// Why a new action waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Deferral {
    /// The circuit breaker is open.
    Breaker,
    /// hpk8s already holds its share of the cluster.
    Budget,
    /// The hourly action limit is reached.
    Rate,
}

impl Deferral {
    /// The Event reason.
    pub fn reason(self) -> &'static str {
        match self {
            Deferral::Breaker => "RemediationBreakerOpen",
            Deferral::Budget => "RemediationBudgetFull",
            Deferral::Rate => "RemediationRateLimited",
        }
    }
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing (healthy, or a hold progressing on its own).
    Nothing,
    /// An Event, no change to the node.
    Report {
        /// Event reason.
        reason: &'static str,
        /// Why nothing more.
        why: String,
    },
    /// A `PreferNoSchedule` taint: prefer other nodes.
    Avoid,
    /// Take the node out: taint `NoSchedule`, cordon, drain when `drain`.
    Hold {
        /// The action recorded.
        action: ClassAction,
        /// Whether to drain.
        drain: bool,
        /// For notices: the drain's deadline.
        deadline: Option<SystemTime>,
    },
    /// Request a reboot or replacement (the node is drained).
    Restart(Restart),
    /// Healthy long enough: remove what hpk8s set.
    Release,
    /// A new action waits.
    Defer(Deferral),
    /// Never acted on, and why.
    Refuse(String),
}

/// The action configured for a GPU fault class.
pub fn class_action(cfg: &RemediationConfig, class: Class) -> ClassAction {
    match class {
        Class::Healthy | Class::Informational | Class::ProbeFailed => ClassAction::Report,
        Class::Degraded => cfg.degraded,
        Class::Reboot => cfg.needs_reboot,
        Class::Replace => cfg.needs_replacement,
    }
}

/// The action configured for a notice.
pub fn notice_action(cfg: &RemediationConfig, kind: NoticeKind) -> ClassAction {
    let a = match kind {
        NoticeKind::Spot => cfg.spot_interruption,
        NoticeKind::Maintenance => cfg.scheduled_maintenance,
        NoticeKind::Rebalance => cfg.rebalance_recommendation,
    };
    match a {
        NoticeAction::Report => ClassAction::Report,
        NoticeAction::Cordon => ClassAction::Cordon,
        NoticeAction::Drain => ClassAction::Drain,
    }
}

fn restart_of(action: ClassAction) -> Option<Restart> {
    match action {
        ClassAction::Reboot => Some(Restart::Reboot),
        ClassAction::Replace => Some(Restart::Replace),
        _ => None,
    }
}

/// Decides what to do about one node.
pub fn decide(
    cfg: &RemediationConfig,
    trouble: &Trouble,
    facts: &Facts,
    budget: &Budget,
    now: SystemTime,
) -> Decision {
    match trouble {
        Trouble::Healthy => match (&facts.held, facts.healthy_since) {
            (None, _) => Decision::Nothing,
            (Some(_), since) => {
                let stable = Duration::from_secs(cfg.recovery_after_secs);
                // Without a healthy condition's transition hpk8s cannot
                // tell the node recovered (the agent has not published
                // yet): the hold stays.
                let healthy_for = since.map(|s| now.duration_since(s).unwrap_or(Duration::ZERO));
                if healthy_for.is_some_and(|d| d >= stable) {
                    Decision::Release
                } else {
                    Decision::Nothing
                }
            }
        },
        Trouble::Unknown => Decision::Report {
            reason: "GPUProbeFailed",
            why: "the node could not probe its GPUs: reported, never acted on".into(),
        },
        Trouble::Gpu { class, reason } => {
            let action = class_action(cfg, *class);
            if action == ClassAction::Report {
                return Decision::Report {
                    reason: "GPUFaultReported",
                    why: format!("{reason}: configured to report only"),
                };
            }
            gpu_step(cfg, action, facts, budget)
        }
        Trouble::Notice(n) => {
            let action = notice_action(cfg, n.kind);
            if action == ClassAction::Report {
                return Decision::Report {
                    reason: "InterruptionReported",
                    why: format!("{:?} notice: configured to report only", n.kind),
                };
            }
            if !cfg.enabled {
                return disabled();
            }
            if let Some(why) = &facts.protected {
                return Decision::Refuse(why.clone());
            }
            match &facts.held {
                Some(h) if h.action >= action => Decision::Nothing,
                _ => Decision::Hold {
                    action,
                    drain: action >= ClassAction::Drain,
                    deadline: n
                        .at
                        .map(|t| t - Duration::from_secs(cfg.interruption_margin_secs)),
                },
            }
        }
    }
}

fn disabled() -> Decision {
    Decision::Report {
        reason: "RemediationDisabled",
        why: "remediation is disabled (remediation.enabled = false)".into(),
    }
}

fn gpu_step(
    cfg: &RemediationConfig,
    action: ClassAction,
    facts: &Facts,
    budget: &Budget,
) -> Decision {
    if !cfg.enabled {
        return disabled();
    }
    if let Some(why) = &facts.protected {
        return Decision::Refuse(why.clone());
    }
    if let Some(h) = &facts.held
        && h.action >= action
    {
        // Continue the hold already taken.
        let Some(kind) = restart_of(h.action) else {
            return Decision::Nothing;
        };
        return match h.stage {
            Stage::Drained if budget.breaker_open => Decision::Defer(Deferral::Breaker),
            Stage::Drained if facts.restarts_last_day >= MAX_RESTARTS_PER_DAY => Decision::Report {
                reason: "RemediationGaveUp",
                why: format!(
                    "{} restarts requested in the last day and the fault is back: left held for a person",
                    facts.restarts_last_day
                ),
            },
            Stage::Drained if h.failures >= MAX_REQUEST_FAILURES => Decision::Report {
                reason: "RemediationGaveUp",
                why: format!(
                    "{} restart requests failed: left held for a person",
                    h.failures
                ),
            },
            Stage::Drained => Decision::Restart(kind),
            Stage::Holding | Stage::DrainBlocked | Stage::Requested | Stage::Stopped => {
                Decision::Nothing
            }
        };
    }
    // A new action, or a stronger one than held (a degraded node that now
    // needs a reboot).
    if budget.breaker_open {
        return Decision::Defer(Deferral::Breaker);
    }
    if action == ClassAction::PreferAvoid {
        return Decision::Avoid;
    }
    let already_out = facts
        .held
        .as_ref()
        .is_some_and(|h| h.action >= ClassAction::Cordon);
    if !already_out {
        if budget.held >= budget.allowed(cfg.max_unavailable_percent) {
            return Decision::Defer(Deferral::Budget);
        }
        if budget.actions_last_hour >= cfg.max_actions_per_hour as usize {
            return Decision::Defer(Deferral::Rate);
        }
    }
    Decision::Hold {
        action,
        drain: action >= ClassAction::Drain,
        deadline: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RemediationConfig {
        RemediationConfig::default()
    }
    fn budget() -> Budget {
        Budget {
            nodes: 40,
            held: 0,
            actions_last_hour: 0,
            breaker_open: false,
        }
    }
    fn gpu(class: Class) -> Trouble {
        Trouble::Gpu {
            class,
            reason: "GPUNeedsReboot".into(),
        }
    }
    fn held(action: ClassAction, stage: Stage) -> Facts {
        Facts {
            held: Some(Held {
                action,
                stage,
                failures: 0,
                notice: false,
            }),
            ..Facts::default()
        }
    }
    const NOW: SystemTime = SystemTime::UNIX_EPOCH;
    fn now() -> SystemTime {
        NOW + Duration::from_secs(1_000_000)
    }

    #[test]
    fn every_class_under_every_setting() {
        let settings = [
            ClassAction::Report,
            ClassAction::PreferAvoid,
            ClassAction::Cordon,
            ClassAction::Drain,
            ClassAction::Reboot,
            ClassAction::Replace,
        ];
        for class in [Class::Degraded, Class::Reboot, Class::Replace] {
            for setting in settings {
                let mut c = cfg();
                c.degraded = setting;
                c.needs_reboot = setting;
                c.needs_replacement = setting;
                let d = decide(&c, &gpu(class), &Facts::default(), &budget(), now());
                let want = match setting {
                    ClassAction::Report => Decision::Report {
                        reason: "GPUFaultReported",
                        why: "GPUNeedsReboot: configured to report only".into(),
                    },
                    ClassAction::PreferAvoid => Decision::Avoid,
                    a => Decision::Hold {
                        action: a,
                        drain: a >= ClassAction::Drain,
                        deadline: None,
                    },
                };
                assert_eq!(d, want, "{class:?} under {setting:?}");
            }
        }
        // Never acted on, whatever the settings.
        for class in [Class::Healthy, Class::Informational, Class::ProbeFailed] {
            let mut c = cfg();
            c.needs_reboot = ClassAction::Replace;
            let d = decide(&c, &gpu(class), &Facts::default(), &budget(), now());
            assert!(matches!(d, Decision::Report { .. }), "{class:?}: {d:?}");
        }
        let d = decide(
            &cfg(),
            &Trouble::Unknown,
            &Facts::default(),
            &budget(),
            now(),
        );
        assert!(
            matches!(
                d,
                Decision::Report {
                    reason: "GPUProbeFailed",
                    ..
                }
            ),
            "{d:?}"
        );
    }

    #[test]
    fn defaults_drain_but_do_not_restart() {
        let c = cfg();
        assert_eq!(
            decide(&c, &gpu(Class::Reboot), &Facts::default(), &budget(), now()),
            Decision::Hold {
                action: ClassAction::Drain,
                drain: true,
                deadline: None
            }
        );
        assert_eq!(
            decide(
                &c,
                &gpu(Class::Degraded),
                &Facts::default(),
                &budget(),
                now()
            ),
            Decision::Avoid
        );
        // Drained under the default: no restart follows.
        let f = held(ClassAction::Drain, Stage::Drained);
        assert_eq!(
            decide(&c, &gpu(Class::Replace), &f, &budget(), now()),
            Decision::Nothing
        );
    }

    #[test]
    fn disabled_reports_only() {
        let mut c = cfg();
        c.enabled = false;
        let d = decide(&c, &gpu(Class::Reboot), &Facts::default(), &budget(), now());
        assert!(
            matches!(
                d,
                Decision::Report {
                    reason: "RemediationDisabled",
                    ..
                }
            ),
            "{d:?}"
        );
    }

    #[test]
    fn protected_nodes_are_refused() {
        let mut c = cfg();
        c.needs_reboot = ClassAction::Reboot;
        let f = Facts {
            protected: Some("control-plane node".into()),
            ..Facts::default()
        };
        assert_eq!(
            decide(&c, &gpu(Class::Reboot), &f, &budget(), now()),
            Decision::Refuse("control-plane node".into())
        );
        let spot = Trouble::Notice(Notice {
            kind: NoticeKind::Spot,
            action: "terminate".into(),
            at: None,
        });
        assert!(matches!(
            decide(&c, &spot, &f, &budget(), now()),
            Decision::Refuse(_)
        ));
    }

    #[test]
    fn budget_rate_and_breaker_defer_new_holds() {
        let c = cfg();
        let f = Facts::default();
        let full = Budget {
            held: 2,
            ..budget()
        }; // 5 % of 40
        assert_eq!(
            decide(&c, &gpu(Class::Reboot), &f, &full, now()),
            Decision::Defer(Deferral::Budget)
        );
        let room = Budget {
            held: 1,
            ..budget()
        };
        assert!(matches!(
            decide(&c, &gpu(Class::Reboot), &f, &room, now()),
            Decision::Hold { .. }
        ));
        // Small clusters may still hold one node.
        let small = Budget {
            nodes: 3,
            ..budget()
        };
        assert_eq!(small.allowed(5), 1);
        assert!(matches!(
            decide(&c, &gpu(Class::Reboot), &f, &small, now()),
            Decision::Hold { .. }
        ));
        let rated = Budget {
            actions_last_hour: 10,
            ..budget()
        };
        assert_eq!(
            decide(&c, &gpu(Class::Reboot), &f, &rated, now()),
            Decision::Defer(Deferral::Rate)
        );
        let open = Budget {
            breaker_open: true,
            ..budget()
        };
        assert_eq!(
            decide(&c, &gpu(Class::Reboot), &f, &open, now()),
            Decision::Defer(Deferral::Breaker)
        );
        assert_eq!(
            decide(&c, &gpu(Class::Degraded), &f, &open, now()),
            Decision::Defer(Deferral::Breaker)
        );
        // A node already out does not count again: escalation from cordon
        // to drain goes ahead with the budget full.
        let cordoned = held(ClassAction::Cordon, Stage::Holding);
        let mut c2 = cfg();
        c2.needs_reboot = ClassAction::Drain;
        assert!(matches!(
            decide(&c2, &gpu(Class::Reboot), &cordoned, &full, now()),
            Decision::Hold {
                action: ClassAction::Drain,
                ..
            }
        ));
        // Avoided (not out of service) does count.
        let avoided = held(ClassAction::PreferAvoid, Stage::Holding);
        assert_eq!(
            decide(&c2, &gpu(Class::Reboot), &avoided, &full, now()),
            Decision::Defer(Deferral::Budget)
        );
    }

    #[test]
    fn held_nodes_continue_to_their_restart() {
        let mut c = cfg();
        c.needs_reboot = ClassAction::Reboot;
        c.needs_replacement = ClassAction::Replace;
        let b = budget();
        for stage in [
            Stage::Holding,
            Stage::DrainBlocked,
            Stage::Requested,
            Stage::Stopped,
        ] {
            let f = held(ClassAction::Reboot, stage);
            assert_eq!(
                decide(&c, &gpu(Class::Reboot), &f, &b, now()),
                Decision::Nothing,
                "{stage:?}"
            );
        }
        let f = held(ClassAction::Reboot, Stage::Drained);
        assert_eq!(
            decide(&c, &gpu(Class::Reboot), &f, &b, now()),
            Decision::Restart(Restart::Reboot)
        );
        let f = held(ClassAction::Replace, Stage::Drained);
        assert_eq!(
            decide(&c, &gpu(Class::Replace), &f, &b, now()),
            Decision::Restart(Restart::Replace)
        );
        // The budget being full does not stop a held node's own restart...
        let full = Budget { held: 40, ..b };
        assert_eq!(
            decide(
                &c,
                &gpu(Class::Reboot),
                &held(ClassAction::Reboot, Stage::Drained),
                &full,
                now()
            ),
            Decision::Restart(Restart::Reboot)
        );
        // ...the breaker does.
        let open = Budget {
            breaker_open: true,
            ..b
        };
        assert_eq!(
            decide(
                &c,
                &gpu(Class::Reboot),
                &held(ClassAction::Reboot, Stage::Drained),
                &open,
                now()
            ),
            Decision::Defer(Deferral::Breaker)
        );
        // A reboot-class node that now needs replacing escalates.
        let f = held(ClassAction::Reboot, Stage::Requested);
        assert!(matches!(
            decide(&c, &gpu(Class::Replace), &f, &b, now()),
            Decision::Hold {
                action: ClassAction::Replace,
                ..
            }
        ));
    }

    #[test]
    fn history_stops_restart_loops() {
        let mut c = cfg();
        c.needs_reboot = ClassAction::Reboot;
        let mut f = held(ClassAction::Reboot, Stage::Drained);
        f.restarts_last_day = 1;
        assert_eq!(
            decide(&c, &gpu(Class::Reboot), &f, &budget(), now()),
            Decision::Restart(Restart::Reboot)
        );
        f.restarts_last_day = MAX_RESTARTS_PER_DAY;
        assert!(matches!(
            decide(&c, &gpu(Class::Reboot), &f, &budget(), now()),
            Decision::Report {
                reason: "RemediationGaveUp",
                ..
            }
        ));
        let mut f = held(ClassAction::Reboot, Stage::Drained);
        if let Some(h) = f.held.as_mut() {
            h.failures = MAX_REQUEST_FAILURES;
        }
        assert!(matches!(
            decide(&c, &gpu(Class::Reboot), &f, &budget(), now()),
            Decision::Report {
                reason: "RemediationGaveUp",
                ..
            }
        ));
    }

    #[test]
    fn release_waits_for_a_stable_recovery() {
        let c = cfg(); // 300 s
        let mut f = held(ClassAction::Drain, Stage::Drained);
        f.healthy_since = Some(now() - Duration::from_secs(299));
        assert_eq!(
            decide(&c, &Trouble::Healthy, &f, &budget(), now()),
            Decision::Nothing
        );
        f.healthy_since = Some(now() - Duration::from_secs(300));
        assert_eq!(
            decide(&c, &Trouble::Healthy, &f, &budget(), now()),
            Decision::Release
        );
        // No transition time known: not known to be healthy, kept.
        f.healthy_since = None;
        assert_eq!(
            decide(&c, &Trouble::Healthy, &f, &budget(), now()),
            Decision::Nothing
        );
        // Nothing held: nothing to do.
        assert_eq!(
            decide(&c, &Trouble::Healthy, &Facts::default(), &budget(), now()),
            Decision::Nothing
        );
        // Unknown never releases (nor acts).
        let d = decide(
            &c,
            &Trouble::Unknown,
            &held(ClassAction::Drain, Stage::Drained),
            &budget(),
            now(),
        );
        assert!(matches!(d, Decision::Report { .. }));
    }

    #[test]
    fn notices_bypass_budget_and_breaker_and_end_before_the_notice() {
        let c = cfg();
        let at = now() + Duration::from_secs(120);
        let spot = Trouble::Notice(Notice {
            kind: NoticeKind::Spot,
            action: "terminate".into(),
            at: Some(at),
        });
        let hostile = Budget {
            held: 40,
            actions_last_hour: 100,
            breaker_open: true,
            ..budget()
        };
        assert_eq!(
            decide(&c, &spot, &Facts::default(), &hostile, now()),
            Decision::Hold {
                action: ClassAction::Drain,
                drain: true,
                deadline: Some(at - Duration::from_secs(15)),
            }
        );
        let rebalance = Trouble::Notice(Notice {
            kind: NoticeKind::Rebalance,
            action: "rebalance".into(),
            at: None,
        });
        assert_eq!(
            decide(&c, &rebalance, &Facts::default(), &budget(), now()),
            Decision::Hold {
                action: ClassAction::Cordon,
                drain: false,
                deadline: None
            }
        );
        let maintenance = Trouble::Notice(Notice {
            kind: NoticeKind::Maintenance,
            action: "system-reboot".into(),
            at: Some(at),
        });
        assert!(matches!(
            decide(&c, &maintenance, &Facts::default(), &budget(), now()),
            Decision::Hold { drain: true, .. }
        ));
        // Already held for it: nothing more.
        let f = held(ClassAction::Drain, Stage::Holding);
        assert_eq!(decide(&c, &spot, &f, &budget(), now()), Decision::Nothing);
        // A rebalance cordon escalates to a drain when the spot notice comes.
        let f = held(ClassAction::Cordon, Stage::Holding);
        assert!(matches!(
            decide(&c, &spot, &f, &budget(), now()),
            Decision::Hold { drain: true, .. }
        ));
        let mut quiet = cfg();
        quiet.rebalance_recommendation = NoticeAction::Report;
        assert!(matches!(
            decide(&quiet, &rebalance, &Facts::default(), &budget(), now()),
            Decision::Report { .. }
        ));
    }
}
