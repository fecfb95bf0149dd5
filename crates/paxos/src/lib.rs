//! PaxosStore's semi-symmetric, leaderless Paxos for one entity, as a deterministic,
//! sans-IO state machine.
//!
//! The crate performs no I/O and reads no clock or entropy: time (`now`, in
//! milliseconds of the caller's clock) and a random seed are inputs; persistence and
//! messages are outputs ([`Event`]). The tokio runtime and the deterministic simulator
//! drive the same code.
//!
//! * [`record`]: one acceptor's record for one entry, validity and the "newer" order.
//! * [`entry`]: one node's view of every acceptor's record for one entry; acceptor
//!   rules; the proposer's promise and accept steps; chosen detection.
//! * [`message`]: the single message type.
//! * [`entity`]: one entity's log — write/read commands, persistence ordering, catch-up,
//!   check-empty reads, pre-authorisation.

pub mod config;
pub mod entity;
pub mod entry;
pub mod message;
pub mod probe_summary;
pub mod record;
pub mod rng;

pub use config::{Config, Mutation};
pub use entity::{Busy, Entity, Event, Outcome, RestoreError};
pub use entry::{quorum, EntryView, Status};
pub use message::{Kind, Message};
pub use probe_summary::ProbeSummary;
pub use record::{ballot_owner, Ballot, EntryId, NodeId, Record};
