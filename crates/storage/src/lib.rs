//! Durable storage for PaxosStore-rs.
//!
//! The consensus layer owns the meaning of every record; this crate only stores
//! opaque bytes per *entity* (one Paxos log each) and guarantees that a
//! [`Storage::write_batch`] is atomic and durable when it returns `Ok`.
//!
//! * [`FjallStorage`] — the real engine (fjall LSM, PaxosLog-as-value rows).
//! * [`MemStorage`] — deterministic in-memory engine with crash semantics for the simulator.
//! * [`GroupCommit`] — funnels many small submissions into one batch / one fsync.
//! * [`FailingStorage`] — wrapper that injects errors, for tests of error paths.

mod codec;
mod error;
mod failing;
mod fjall_storage;
mod format;
#[doc(hidden)]
pub mod fuzz;
mod group_commit;
mod mem;
mod model;
mod traits;
mod types;

pub use error::StorageError;
pub use failing::{FailMode, FailingStorage};
pub use fjall_storage::{Compaction, FjallOptions, FjallStorage};
pub use format::FORMAT_VERSION;
pub use group_commit::{Busy, DoneFn, GroupCommit, GroupCommitConfig, GroupCommitStats};
pub use mem::MemStorage;
pub use traits::Storage;
pub use types::{Apply, EntityImage, EntityUpdate, Snapshot};
