//! The PaxosStore-rs runtime: the only crate (with `net`) that knows tokio exists.
//! It pumps the sans-IO shards, the storage group commit and the peer transport, and
//! serves Redis clients and the admin HTTP endpoint.

pub mod acl;
pub mod admin;
pub mod client;
pub mod cluster;
pub mod config;
pub mod forward;
pub mod glob;
pub mod info;
pub mod metrics_upkeep;
pub mod runtime;
pub mod shard_worker;
pub mod tls;
pub mod wallclock;

pub use config::{ConfigError, MemberConfig, NodeConfig};
pub use runtime::{run, ServerError};
