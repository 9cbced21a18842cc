//! The wire contract between the workflow side and the external worker.
//!
//! Everything another implementation (the Go proof of concept, a Python worker) must agree on
//! lives here and only here: the workflow type and task queue names, the workflow input, the
//! name and argument encoding of the long-running activity, and the environment variable that
//! tells an external worker which queue to poll.

mod activity_input;
pub mod duration;
pub mod input;
mod names;
mod payloads;
pub mod resources;
pub mod status;

pub use activity_input::{MAX_ACTIVITY_ATTEMPTS_LIMIT, MIN_ACTIVITY_START_TO_CLOSE};
pub use duration::GoDuration;
pub use input::*;
pub use names::*;
pub use payloads::*;
pub use resources::*;
pub use status::*;
