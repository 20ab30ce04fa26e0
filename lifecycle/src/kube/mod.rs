//! Everything hpk8s says to the Kubernetes API goes through here: clients
//! built from the node's credentials with time-outs ([`client`]), what an
//! API failure means ([`errors`]) and how calls are retried ([`retry`]).

pub mod client;
pub mod errors;
pub mod retry;

pub use client::{ADMIN_CONF, ClientError, Credential, KUBELET_CONF, client};
pub use errors::{class_of, is_transient};
