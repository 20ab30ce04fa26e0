//! The controller's view of the cluster's Nodes: which it expects, waiting
//! until they are Ready, and the labels a node may not set on itself
//! (NodeRestriction) that the controller applies with its cluster
//! credential.
//!
//! - [`inventory`]: the expected nodes, how Nodes are matched to them (by
//!   `InternalIP`), and the controller's labels for each.
//! - [`readiness`]: the Ready wait (a watch), labelling nodes as they turn
//!   Ready.
//! - [`labelling`]: one label update, retried on transient failures.
//! - [`watch`]: the Node watch these share.

mod error;
pub mod inventory;
pub mod labelling;
pub mod readiness;
pub mod watch;

pub use self::error::{LABEL_RETRY_TOTAL, NodesError};
pub use self::inventory::{
    BASE_READY_TIMEOUT, CONTROL_PLANE_LABEL, Expectations, ExpectedNode, GroupLabels,
    READY_TIMEOUT_PER_NODE, ReadyNode, ReadyReport, UnexpectedNode, address_name,
    controller_labels, expected_nodes, group_labels, is_ready, ready_deadline,
};
pub use self::labelling::{
    LABEL_CONCURRENCY, apply_controller_labels, label_node, missing_labels, patch_labels,
};
pub use self::readiness::{
    NodesSnapshot, PROGRESS_EVERY, snapshot, wait_and_label, wait_until_ready,
};
