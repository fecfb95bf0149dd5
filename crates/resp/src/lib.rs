//! `resp`: the pure Redis-protocol layer of PaxosStore-rs.
//!
//! Bytes in, values out: this crate does no I/O and depends on no runtime, so
//! the same code serves the TCP server, the simulator and the fuzz tests.
//!
//! * [`parse`]: incremental, zero-copy request parser (multibulk + inline).
//! * [`reply`]: reply values and their RESP2/RESP3 encodings.
//! * [`command`]: typed commands parsed from argument vectors.
//! * [`entity`]: Redis Cluster hash-tag rules mapping keys to entities/slots.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod command;
pub mod entity;
pub mod num;
pub mod parse;
pub mod reply;

pub use command::{parse_command, Command, CommandError};
pub use entity::{crc16, entity_of, key_slot, SLOTS};
pub use parse::{encode_request, parse_request, Limits, ProtocolError};
pub use reply::Reply;
