//! The phase runner: every phase (`prepare`, `cluster`) is a list of steps,
//! each of which plans by comparing what is with what should be, and is
//! then applied. One runner plans and applies every phase the same way and
//! records progress in the state file.
//!
//! A dry run is [`plan`]: every step planned against the host as it is.
//! [`apply`] first plans every step once, so bad input that any step
//! detects fails the run before anything changed; then, step by step, it
//! plans again right before applying (a step must see what the steps
//! before it did) and records the step in the state file.

use tracing::Instrument;

use crate::Error;
use crate::host::Host;
use crate::plan::{Plan, StepPlan};
use crate::state::{State, now_unix};

/// A phase: an ordered list of steps over a context.
///
/// `async fn` is fine here: phases are driven with static dispatch on the
/// caller's task, never boxed or sent across threads.
#[allow(async_fn_in_trait)]
pub trait Phase {
    /// A step of the phase.
    type Step: Copy;

    /// The phase's name in plans and the state file.
    fn name(&self) -> &'static str;

    /// The host the phase works on (its state file lives there).
    fn host(&self) -> &Host;

    /// The directories this phase writes files into (a killed run's
    /// temporary files are removed from them before the phase applies).
    fn directories(&self) -> Vec<std::path::PathBuf> {
        Vec::new()
    }

    /// The steps this node runs, in order.
    fn steps(&self) -> Vec<Self::Step>;

    /// A step's name in plans, logs and the state file.
    fn step_name(&self, step: Self::Step) -> &'static str;

    /// What `step` would change now.
    async fn plan_step(&self, step: Self::Step) -> Result<StepPlan, Error>;

    /// Makes the changes of `plan` (just computed by [`Phase::plan_step`])
    /// and returns what was done. Called only for plans with changes.
    async fn apply_step(&self, step: Self::Step, plan: StepPlan) -> Result<StepPlan, Error>;
}

/// Plans every step against the host as it is (a dry run).
pub async fn plan<P: Phase>(phase: &P) -> Result<Plan, Error> {
    let mut steps = Vec::new();
    for step in phase.steps() {
        let name = phase.step_name(step);
        let span = tracing::info_span!("plan", phase = phase.name(), step = name);
        steps.push(phase.plan_step(step).instrument(span).await?);
    }
    Ok(Plan {
        phase: phase.name().into(),
        steps,
    })
}

/// Plans every step, then plans and applies each in turn, recording
/// progress in the state file after each. Returns what was applied.
pub async fn apply<P: Phase>(phase: &P) -> Result<Plan, Error> {
    let name = phase.name();
    let preflight = plan(phase).await?;
    let host = phase.host();
    let dirs = phase.directories();
    host.remove_stale_temp_files(&dirs.iter().map(|d| d.as_path()).collect::<Vec<_>>());
    let mut state = State::load(host)?;
    let record = state.phase(name);
    if !record.finished && !record.completed.is_empty() {
        tracing::info!(phase = name, completed = ?record.completed, "resuming");
    }
    if preflight.is_empty() && record.finished {
        tracing::info!(phase = name, "up to date");
        return Ok(preflight);
    }
    record.finished = false;
    let mut applied = Vec::new();
    for step in phase.steps() {
        let step_name = phase.step_name(step);
        let span = tracing::info_span!("step", phase = name, step = step_name);
        let done = async {
            let step_plan = phase.plan_step(step).await?;
            if step_plan.changes.is_empty() {
                tracing::info!("up to date");
                return Ok::<_, Error>(step_plan);
            }
            tracing::info!(changes = step_plan.changes.len(), "applying");
            phase.apply_step(step, step_plan).await
        }
        .instrument(span)
        .await?;
        let record = state.phase(name);
        if !record.completed.iter().any(|s| s == step_name) {
            record.completed.push(step_name.into());
        }
        if !done.changes.is_empty() {
            record.last_change_unix = Some(now_unix());
        }
        state.save(host)?;
        applied.push(done);
    }
    state.phase(name).finished = true;
    state.save(host)?;
    Ok(Plan {
        phase: name.into(),
        steps: applied,
    })
}

/// Applies the host changes of `plan` (the default for steps whose changes
/// are all on the host), naming the step in a failure.
pub async fn apply_host_changes(host: &Host, plan: StepPlan) -> Result<StepPlan, Error> {
    crate::plan::apply(host, &plan.changes)
        .await
        .map_err(|source| Error::Apply {
            step: plan.step.clone(),
            source,
        })?;
    Ok(plan)
}
