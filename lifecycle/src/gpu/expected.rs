//! How many GPUs and EFA adapters an instance type has, so that a node with
//! one GPU missing (fallen off the bus, not enumerated) is noticed. The
//! table covers the GPU families hpk8s is used on; `gpu_health.expected`
//! adds or overrides types. An unknown type has no expectation (never a
//! fault), and the probe says so.

use std::collections::BTreeMap;

use crate::config::ExpectedAccelerators;

/// `(type, GPUs, EFA adapters)` of the built-in table.
const TABLE: &[(&str, u32, u32)] = &[
    ("p4d.24xlarge", 8, 4),
    ("p4de.24xlarge", 8, 4),
    ("p5.4xlarge", 1, 1),
    ("p5.48xlarge", 8, 32),
    ("p5e.48xlarge", 8, 32),
    ("p5en.48xlarge", 8, 16),
    ("g5.xlarge", 1, 0),
    ("g5.2xlarge", 1, 0),
    ("g5.4xlarge", 1, 0),
    ("g5.8xlarge", 1, 1),
    ("g5.16xlarge", 1, 1),
    ("g5.12xlarge", 4, 1),
    ("g5.24xlarge", 4, 1),
    ("g5.48xlarge", 8, 1),
    ("g6.xlarge", 1, 0),
    ("g6.2xlarge", 1, 0),
    ("g6.4xlarge", 1, 0),
    ("g6.8xlarge", 1, 1),
    ("g6.16xlarge", 1, 1),
    ("g6.12xlarge", 4, 1),
    ("g6.24xlarge", 4, 1),
    ("g6.48xlarge", 8, 1),
    ("g6e.xlarge", 1, 0),
    ("g6e.2xlarge", 1, 0),
    ("g6e.4xlarge", 1, 0),
    ("g6e.8xlarge", 1, 1),
    ("g6e.16xlarge", 1, 1),
    ("g6e.12xlarge", 4, 1),
    ("g6e.24xlarge", 4, 2),
    ("g6e.48xlarge", 8, 4),
    ("p3.2xlarge", 1, 0),
    ("p3.8xlarge", 4, 0),
    ("p3.16xlarge", 8, 0),
    ("p3dn.24xlarge", 8, 1),
    ("trn1.32xlarge", 0, 8),
    ("trn1n.32xlarge", 0, 16),
];

/// GPUs and EFA adapters expected on `instance_type` (an `ml.` prefix is
/// dropped), from `extra` first, then the built-in table.
pub fn expected(
    instance_type: &str,
    extra: &BTreeMap<String, ExpectedAccelerators>,
) -> Option<(u32, u32)> {
    let t = instance_type.strip_prefix("ml.").unwrap_or(instance_type);
    if let Some(e) = extra.get(t) {
        return Some((e.gpus, e.efa));
    }
    TABLE
        .iter()
        .find(|(name, _, _)| *name == t)
        .map(|(_, g, e)| (*g, *e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_overrides() {
        let none = BTreeMap::new();
        assert_eq!(expected("ml.p5.48xlarge", &none), Some((8, 32)));
        assert_eq!(expected("g6e.24xlarge", &none), Some((4, 2)));
        assert_eq!(expected("x9.future", &none), None);
        let extra = BTreeMap::from([(
            "p6-b200.48xlarge".to_string(),
            ExpectedAccelerators { gpus: 8, efa: 8 },
        )]);
        assert_eq!(expected("p6-b200.48xlarge", &extra), Some((8, 8)));
    }
}
