//! The controller's remediation metrics (Prometheus text on a loopback
//! port, `remediation.metrics_address`): actions by kind and result,
//! nodes held out of service, the breaker's state, deferred nodes by why,
//! drain durations.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Counters and gauges.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    /// By (action, result).
    pub actions: BTreeMap<(String, String), u64>,
    /// Nodes hpk8s holds cordoned.
    pub held: usize,
    /// Nodes with a `PreferNoSchedule` taint from hpk8s.
    pub avoided: usize,
    /// Whether the breaker is open.
    pub breaker_open: bool,
    /// Times the breaker opened.
    pub breaker_trips: u64,
    /// Nodes whose action waits, by why.
    pub deferred: BTreeMap<&'static str, usize>,
    /// Finished drains: count, sum of seconds, by result.
    pub drains: BTreeMap<&'static str, (u64, f64)>,
    /// Drain duration buckets (upper bounds in seconds) and counts.
    pub drain_buckets: Vec<(f64, u64)>,
}

/// Drain-duration histogram buckets, in seconds.
const BUCKETS: [f64; 8] = [1.0, 5.0, 15.0, 60.0, 120.0, 300.0, 900.0, 1800.0];

impl Metrics {
    /// Counts one action.
    pub fn action(&mut self, action: &str, result: &str) {
        *self
            .actions
            .entry((action.to_string(), result.to_string()))
            .or_default() += 1;
    }

    /// Records a finished drain.
    pub fn drain(&mut self, finished: bool, secs: f64) {
        let e = self
            .drains
            .entry(if finished { "finished" } else { "deadline" })
            .or_default();
        e.0 += 1;
        e.1 += secs;
        if self.drain_buckets.is_empty() {
            self.drain_buckets = BUCKETS.iter().map(|b| (*b, 0)).collect();
        }
        for (le, n) in &mut self.drain_buckets {
            if secs <= *le {
                *n += 1;
            }
        }
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "# HELP hpk8s_remediation_actions_total Remediation actions by kind and result."
        );
        let _ = writeln!(t, "# TYPE hpk8s_remediation_actions_total counter");
        for ((a, r), n) in &self.actions {
            let _ = writeln!(
                t,
                "hpk8s_remediation_actions_total{{action=\"{a}\",result=\"{r}\"}} {n}"
            );
        }
        let _ = writeln!(
            t,
            "# HELP hpk8s_remediation_nodes_held Nodes hpk8s holds cordoned."
        );
        let _ = writeln!(t, "# TYPE hpk8s_remediation_nodes_held gauge");
        let _ = writeln!(t, "hpk8s_remediation_nodes_held {}", self.held);
        let _ = writeln!(
            t,
            "# HELP hpk8s_remediation_nodes_avoided Nodes with hpk8s's PreferNoSchedule taint."
        );
        let _ = writeln!(t, "# TYPE hpk8s_remediation_nodes_avoided gauge");
        let _ = writeln!(t, "hpk8s_remediation_nodes_avoided {}", self.avoided);
        let _ = writeln!(
            t,
            "# HELP hpk8s_remediation_breaker_open Whether the circuit breaker stops new actions."
        );
        let _ = writeln!(t, "# TYPE hpk8s_remediation_breaker_open gauge");
        let _ = writeln!(
            t,
            "hpk8s_remediation_breaker_open {}",
            u8::from(self.breaker_open)
        );
        let _ = writeln!(
            t,
            "# HELP hpk8s_remediation_breaker_trips_total Times the circuit breaker opened."
        );
        let _ = writeln!(t, "# TYPE hpk8s_remediation_breaker_trips_total counter");
        let _ = writeln!(
            t,
            "hpk8s_remediation_breaker_trips_total {}",
            self.breaker_trips
        );
        let _ = writeln!(
            t,
            "# HELP hpk8s_remediation_nodes_deferred Faulty nodes whose action waits, by why."
        );
        let _ = writeln!(t, "# TYPE hpk8s_remediation_nodes_deferred gauge");
        for why in ["breaker", "budget", "rate"] {
            let n = self.deferred.get(why).copied().unwrap_or(0);
            let _ = writeln!(
                t,
                "hpk8s_remediation_nodes_deferred{{reason=\"{why}\"}} {n}"
            );
        }
        let _ = writeln!(t, "# HELP hpk8s_remediation_drain_seconds Drain durations.");
        let _ = writeln!(t, "# TYPE hpk8s_remediation_drain_seconds histogram");
        let (count, sum) = self
            .drains
            .values()
            .fold((0, 0.0), |(c, s), (n, x)| (c + n, s + x));
        for (le, n) in &self.drain_buckets {
            let _ = writeln!(
                t,
                "hpk8s_remediation_drain_seconds_bucket{{le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            t,
            "hpk8s_remediation_drain_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(t, "hpk8s_remediation_drain_seconds_sum {sum}");
        let _ = writeln!(t, "hpk8s_remediation_drain_seconds_count {count}");
        for (result, (n, _)) in &self.drains {
            let _ = writeln!(
                t,
                "hpk8s_remediation_drains_total{{result=\"{result}\"}} {n}"
            );
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        let mut m = Metrics::default();
        m.action("hold", "ok");
        m.breaker_open = true;
        m.drain(true, 3.0);
        m.deferred.insert("breaker", 7);
        let t = m.render();
        assert!(
            t.contains("hpk8s_remediation_actions_total{action=\"hold\",result=\"ok\"} 1"),
            "{t}"
        );
        assert!(t.contains("hpk8s_remediation_breaker_open 1"));
        assert!(t.contains("hpk8s_remediation_nodes_deferred{reason=\"breaker\"} 7"));
        assert!(
            t.contains("hpk8s_remediation_drain_seconds_bucket{le=\"5\"} 1"),
            "{t}"
        );
        assert!(t.contains("hpk8s_remediation_drain_seconds_bucket{le=\"1\"} 0"));
    }
}
