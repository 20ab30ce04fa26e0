//! Value types every layer shares: networks, durations, Kubernetes
//! versions, points in time and URLs with credentials. A leaf: nothing here imports anything else
//! from the crate, so the configuration (`crate::config`) can be read
//! without the rest of hpk8s.

pub mod cidr;
pub mod duration;
pub mod label;
pub mod taint;
pub mod time;
pub mod url;
pub mod version;

pub use cidr::{CidrParseError, Ipv4Cidr};
pub use duration::{DurationError, TokenTtl, parse_duration};
pub use version::KubeVersion;
