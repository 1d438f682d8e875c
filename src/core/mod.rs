//! The pure core: sessions, policies, protections and the decisions about them.
//! No async, no IO, no clock: `now` is always passed in. Every "why was this
//! session killed or spared" has its answer here.

pub mod breaker;
pub mod glob;
mod index;
pub mod plan;
pub mod policy;
pub mod protected;
pub mod recheck;
pub mod session;

pub use plan::{Plan, plan};
pub use session::{Session, Snapshot};
