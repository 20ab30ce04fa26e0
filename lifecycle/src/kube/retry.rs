//! Retry policies for API calls: jittered exponential backoff bounded by a
//! total time, so a flapping API server is retried and a dead one is
//! reported.

use std::time::Duration;

use backon::ExponentialBuilder;

/// Backoff for one write the caller retries on transient failures
/// (5xx, 429, unreachable) for at most `total`.
pub fn transient(total: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_total_delay(Some(total))
        .without_max_times()
}

/// Full-jitter exponential pause after `failures` consecutive failures of
/// a long-running loop: at least half of `first × 2^(failures−1)`, capped.
pub fn loop_pause(failures: u32, first: Duration, cap: Duration) -> Duration {
    let base = first
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(cap);
    base.mul_f64(0.5 + fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_pauses_grow_and_stay_capped() {
        let first = Duration::from_secs(1);
        let cap = Duration::from_secs(300);
        let p1 = loop_pause(1, first, cap);
        assert!(p1 >= Duration::from_millis(500) && p1 <= first, "{p1:?}");
        let p30 = loop_pause(30, first, cap);
        assert!(p30 >= cap / 2 && p30 <= cap, "{p30:?}");
    }
}
