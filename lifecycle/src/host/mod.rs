//! The host seam: every read and write of the machine hpk8s runs on goes
//! through a [`Host`], which carries the host root (`/` in production, a temp
//! dir in tests or an image being inspected), the command runner and the
//! source of network interface addresses.

mod access;
pub mod command;
pub mod fs;
pub mod interfaces;
pub mod mounts;

pub use access::Host;
pub use command::{Cmd, CmdOutput, CommandError, CommandRunner, ScriptedRunner, SystemRunner};
pub use fs::{FileMode, FsError, Ownership};
pub use interfaces::{FixedInterfaces, InterfaceAddresses, SystemInterfaces};
