//! hpk8s's library: everything the agent does to a node.
//!
//! The binary (`agent/`) only parses the command line, loads the config and
//! wires real clients; all behaviour lives here, with every side effect
//! behind an injected seam: the host root and command runner ([`host`]),
//! and the endpoints of remote services. Work is organised as phases
//! ([`prepare`]) made of steps that first *plan* ([`plan`]) by comparing the
//! host with what it should be, then apply only the difference.

pub mod aws;
pub mod cluster;
pub mod config;
pub mod error;
pub mod hardware;
pub mod host;
pub mod identity;
pub mod plan;
pub mod prepare;
pub mod state;

pub use error::{Error, Result};
