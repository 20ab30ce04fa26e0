//! GPU health: what NVML says about each GPU ([`probe`]), what that means
//! ([`classify`]: informational, degraded, reboot, replace, probe-failed,
//! with NVIDIA's XID catalog as the default policy), what happened in
//! earlier boots ([`history`]) and how many GPUs the instance type has
//! ([`expected`]). `hpk8s gpu-check`, the pre-join gate and the node agent
//! all use these.

pub mod check;
pub mod classify;
pub mod condition;
pub mod events;
pub mod expected;
pub mod history;
pub mod probe;
pub mod record;
pub mod signals;
