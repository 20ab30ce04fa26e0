//! The steps of phase `cluster`, one module each. Every step plans
//! concrete changes, local (files, commands) and remote (tokens, tickets,
//! objects, waits), and applies exactly what it planned.
//!
//! Controller: [`kubeadm_init`], [`join_ticket`], [`addons`], [`nodes`].
//! Worker: [`kubeadm_join`].

pub mod addons;
pub mod join_ticket;
pub mod kubeadm_init;
pub mod kubeadm_join;
pub mod nodes;
