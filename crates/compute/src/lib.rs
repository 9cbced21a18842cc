//! The compute boundary: what the workflow needs from "somewhere to run an external worker".
//!
//! A [`ComputeProvider`] creates (or adopts) one unit of compute per run, reports whether it
//! is up, deletes it and lists what it manages. Implementations: one module each
//! ([`digitalocean`], [`docker`], [`kubernetes`], [`local`]), listed with their names and
//! defaults in [`registry`]. Each provider is built with a [`ComputeOwner`] and only ever lists
//! or sweeps compute carrying that mark (see [`owner`]). Each also says what it creates for a
//! run's resources, or refuses them before anything exists (see [`sizing`]). The workflow's
//! activities drive these calls; nothing here knows about Temporal.

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod digitalocean;
pub mod docker;
mod kept_log;
pub mod kubernetes;
pub mod local;
pub mod naming;
pub mod owner;
mod provider;
pub mod registry;
pub mod sizing;

pub use owner::{ComputeOwner, NotOurs};
pub use provider::*;
pub use sizing::UnitSize;
