//! Operator commands, run by a person (or a script) on the controller,
//! one module each.
//!
//! - [`generate_new_token`]: a new bootstrap token and join ticket now.
//! - [`remediation`]: the remediation breaker's state, holds, resume.

pub mod generate_new_token;
pub mod remediation;
