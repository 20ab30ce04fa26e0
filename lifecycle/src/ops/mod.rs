//! Operator commands, run by a person (or a script) on the controller,
//! one module each.
//!
//! - [`generate_new_token`]: a new bootstrap token and join ticket now.

pub mod generate_new_token;
