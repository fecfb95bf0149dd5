//! The sans-IO replica: entities grouped into shards, Redis command semantics on each
//! entity's state, and the wire/disk encodings of records and messages.
//!
//! * [`kv`]: an entity's state (its keys, values, expiries, versions, recent request
//!   ids) and its binary encoding — the value of every chosen Paxos entry.
//! * [`exec`]: Redis command semantics on one entity's state.
//! * [`dedup`]: replies remembered with client request ids.
//! * [`codec`]: encodings of records (disk) and messages (peers).
//! * [`route`]: an entity's hash and home node.
//! * [`shard`]: many entities on one thread: queues, batching, lazy load, eviction.

pub mod codec;
pub mod dedup;
pub mod exec;
pub mod fuzz;
pub mod kv;
pub mod round_trip;
pub mod route;
pub mod shard;
pub mod summaries;
