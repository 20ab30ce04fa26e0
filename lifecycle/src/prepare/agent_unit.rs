//! Step `agent` of phase `prepare`: the node agent's systemd unit
//! (`systemd/hpk8s-agent.service`, shipped in the binary) installed,
//! enabled and started on every node that joins, so that nodes bootstrapped
//! by a HyperPod lifecycle script (which runs `hpk8s bootstrap` directly)
//! get GPU health reporting too. The agent waits for what it needs (the
//! kubelet's credential, a formed control plane) by itself.

use crate::host::{Cmd, FileMode, FsError, Host};
use crate::plan::{Change, ServiceOperation, StepPlan};

use super::context::Context;

/// Step name.
pub const STEP: &str = "agent";
/// The unit.
pub const UNIT: &str = "hpk8s-agent.service";
/// Where it is installed.
pub const UNIT_PATH: &str = "/etc/systemd/system/hpk8s-agent.service";
/// Its text.
pub const UNIT_TEXT: &str = include_str!("../../../systemd/hpk8s-agent.service");

/// What installing the agent would change.
pub fn plan(cx: &Context<'_>) -> Result<StepPlan, FsError> {
    let mut plan = StepPlan::new(STEP);
    let changed = Change::write_file(cx.host, UNIT_PATH, UNIT_TEXT, FileMode::CONFIG, false)?;
    let written = changed.is_some();
    plan.push_opt(changed);
    if written {
        plan.push(Change::service(
            UNIT,
            ServiceOperation::DaemonReload,
            "the agent's unit changed",
        ));
    }
    let (enabled, active) = state(cx.host);
    // `--no-block`: the agent reports ready after its first GPU probe,
    // which bootstrap does not wait for (a hung driver would hold it).
    if !enabled || !active || written {
        let (args, why): (&[&str], &str) = match (enabled, active) {
            (false, _) => (
                &["enable", "--now", "--no-block"],
                "the agent is not enabled",
            ),
            (true, false) => (&["restart", "--no-block"], "the agent is not running"),
            (true, true) => (&["restart", "--no-block"], "its unit changed"),
        };
        plan.push(Change::run(
            Cmd::new("systemctl").args(args.iter().copied()).arg(UNIT),
            why,
        ));
    }
    Ok(plan)
}

/// Whether systemd says the agent is enabled and active (anything but a
/// clean answer, e.g. no systemd under a test root, is a no).
fn state(host: &Host) -> (bool, bool) {
    let ask = |verb: &str| {
        host.runner()
            .run(&Cmd::new("systemctl").args([verb, UNIT]))
            .is_ok_and(|out| out.status == 0)
    };
    (ask("is-enabled"), ask("is-active"))
}
