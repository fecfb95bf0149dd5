//! The fault-test harness of PaxosStore-rs: real clusters (processes, or containers
//! when Docker runs), concurrent clients recording histories of reads, writes,
//! compare-and-sets and transactions, a seeded nemesis, and the checks
//! (per-entity linearizability, lost acknowledged writes, expiry). See README.md.

pub mod check;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod proxy;
pub mod resp;
pub mod run;
