//! Why the join ticket could not be published or fetched.

use std::path::PathBuf;

use crate::aws::AwsSetupError;
use crate::cluster::join_ticket::TicketError;
use crate::error::class::{ExitClass, classify};

/// Errors publishing or fetching the join ticket.
#[derive(Debug, thiserror::Error)]
pub enum RendezvousError {
    /// The published ticket does not parse; waiting will not fix it.
    #[error(
        "the join ticket at {location} is malformed: {source}; re-run `hpk8s bootstrap` on the controller to publish a fresh one"
    )]
    MalformedTicket {
        /// `secret NAME` or `file PATH`.
        location: String,
        /// Which field is wrong.
        #[source]
        source: TicketError,
    },
    /// A shared directory or the ticket in it cannot be trusted (another
    /// user could have planted or replaced it); a waiting worker warns and
    /// keeps waiting, the controller refuses to publish there.
    #[error(
        "{path}: refusing the join ticket rendezvous: {reason}; it must be owned by uid {trusted_uid}, not writable by group or others, a regular file (no symlink, FIFO or device) of at most 64 KiB naming this cluster's API endpoint"
    )]
    Untrusted {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// The owner the rendezvous trusts.
        trusted_uid: u32,
    },
    /// The node's IAM role may not perform `action`.
    #[error(
        "access denied: this node's IAM role may not call {action} on {location} ({detail}); grant {action} on that secret to this instance group's execution role"
    )]
    AccessDenied {
        /// The IAM action (`secretsmanager:GetSecretValue`, …).
        action: &'static str,
        /// `secret NAME`.
        location: String,
        /// The service's message.
        detail: String,
    },
    /// No usable ticket appeared before the deadline.
    #[error(
        "no usable join ticket at {location} after waiting {waited_secs} s (last: {last}); check that the controller finished `hpk8s bootstrap`, or raise rendezvous.deadline_secs"
    )]
    Deadline {
        /// `secret NAME` or `file PATH`.
        location: String,
        /// Seconds waited.
        waited_secs: u64,
        /// Why the last attempt did not succeed.
        last: String,
    },
    /// The service refused the request for a reason retrying cannot fix.
    #[error("{action} on {location} failed: {detail}")]
    Aws {
        /// The IAM action of the failed call.
        action: &'static str,
        /// `secret NAME`.
        location: String,
        /// Error code and message of the service.
        detail: String,
    },
    /// A failure that may go away (throttling, 5xx, connection refused, a
    /// time-out); waiting retries these, publishing gives up after a few.
    #[error(
        "{location} is not reachable right now: {detail}; check the network path to it and retry"
    )]
    Transient {
        /// `secret NAME` or `file PATH`.
        location: String,
        /// What failed.
        detail: String,
    },
    /// A file of the directory rendezvous could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// `read`, `write`, …
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The shared directory does not exist when publishing.
    #[error(
        "rendezvous directory {path} does not exist; mount the shared file system there (or fix rendezvous.directory)"
    )]
    DirectoryMissing {
        /// The directory.
        path: PathBuf,
    },
    /// The controller was asked to publish a ticket that does not validate.
    #[error("refusing to publish an invalid join ticket: {source}")]
    InvalidTicket {
        /// What is wrong.
        #[source]
        source: TicketError,
    },
    /// The AWS SDK cannot be configured (no region).
    #[error(transparent)]
    AwsSetup(#[from] AwsSetupError),
    /// The `[rendezvous]` settings cannot be used.
    #[error("invalid setting {key}: {message}")]
    Setting {
        /// Dotted config key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

classify!(RendezvousError {
    MalformedTicket { .. } => Input "ticket_malformed";
    Untrusted { .. } => Refused "rendezvous_untrusted";
    AccessDenied { .. } => Permission "rendezvous_access_denied";
    Deadline { .. } => Deadline "ticket_wait_deadline";
    Aws { .. } => Precondition "secrets_manager_refused";
    Transient { .. } => Unavailable "rendezvous_unavailable";
    Io { source, .. } => Host "rendezvous_io" refine Some(ExitClass::of_io(source, ExitClass::Host));
    DirectoryMissing { .. } => Precondition "rendezvous_directory_missing";
    InvalidTicket { .. } => Internal "ticket_invalid_bug";
    Setting { .. } => Config "rendezvous_setting_invalid";
    AwsSetup { 0: e } => via e;
});

impl RendezvousError {
    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, RendezvousError::Transient { .. })
    }

    /// Whether a waiting worker should keep waiting (with a warning)
    /// rather than stop: the failure may pass, or is something another
    /// user planted that the controller's next ticket replaces.
    pub fn keeps_waiting(&self) -> bool {
        matches!(
            self,
            RendezvousError::Transient { .. } | RendezvousError::Untrusted { .. }
        )
    }
}
