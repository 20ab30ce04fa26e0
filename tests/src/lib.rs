//! Test harness for hpk8s: fake hosts, test doubles and real-component launchers.
