//! hpk8s's library: everything the agent does to a node.
//!
//! The binary (`agent/`) only parses the command line, loads the config and
//! wires real clients; all behaviour lives here, with every side effect
//! behind an injected seam: the host root and command runner ([`host`]),
//! the Kubernetes clients ([`kube`]), the AWS clients ([`aws`]) and the
//! IMDS base URL ([`identity`]). Work is organised as phases ([`prepare`],
//! [`cluster`]) made of steps that first *plan* ([`plan`]) by comparing
//! what is with what should be, then apply only the difference, all run by
//! one runner ([`phase`]). Long-running loops live in [`agent`], operator
//! commands in [`ops`]. `ARCHITECTURE.md` at the repository root is the
//! map.

pub mod agent;
pub mod aws;
pub mod cluster;
pub mod config;
pub mod download;
pub mod drain;
pub mod error;
pub mod gpu;
pub mod hardware;
pub mod host;
pub mod identity;
pub mod kube;
pub mod ops;
pub mod phase;
pub mod plan;
pub mod prepare;
pub mod remediation;
pub mod state;
pub mod values;

pub use error::{Error, Result};
