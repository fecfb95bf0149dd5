//! The recorded history: one [`Record`] per client operation (JSON lines on disk).

use serde::{Deserialize, Serialize};

/// What kind of entity a key belongs to (decides the checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// One key: GET, SET, VGET, VSET.
    Register,
    /// One key: INCR, GET.
    Counter,
    /// Two keys `{tag}:a`, `{tag}:b` of one entity: MULTI/EXEC writes and reads.
    Txn,
    /// One key written with `SET .. PX` (short expiry) and read with GET.
    Expiry,
}

/// An operation and its arguments. Values are unique integers (as decimal strings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Op {
    Get {
        key: String,
    },
    Set {
        key: String,
        value: i64,
    },
    SetPx {
        key: String,
        value: i64,
        px: u64,
    },
    Vget {
        key: String,
    },
    Vset {
        key: String,
        value: i64,
        version: u64,
    },
    Incr {
        key: String,
    },
    TxnSet {
        keys: Vec<String>,
        value: i64,
    },
    TxnGet {
        keys: Vec<String>,
    },
}

impl Op {
    pub fn is_read(&self) -> bool {
        matches!(self, Op::Get { .. } | Op::Vget { .. } | Op::TxnGet { .. })
    }
}

/// A definite result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum Res {
    Ok,
    Value { v: Option<i64> },
    Versioned { v: Option<(i64, u64)> },
    Version { v: u64 },
    Mismatch { current: u64 },
    Int { v: i64 },
    Values { v: Vec<Option<i64>> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// Completed with this result.
    Ok { res: Res },
    /// Definitely had no effect (never sent, `-CLUSTERDOWN`, `-BUSY`).
    Fail { error: String },
    /// May or may not have taken effect (timeout, connection lost, `-TIMEOUT`,
    /// `-TRYAGAIN`, other errors).
    Unknown { error: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub round: u32,
    /// Client id; final reads use 10000 + node.
    pub client: u32,
    pub node: usize,
    /// The entity (a key, or a hash tag's entity for transactions).
    pub entity: String,
    pub class: Class,
    pub op: Op,
    /// Microseconds since the run started.
    pub invoke_us: u64,
    pub complete_us: u64,
    pub outcome: Outcome,
}

/// The ids of final-read clients.
pub const FINAL_CLIENT: u32 = 10000;
