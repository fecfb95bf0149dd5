//! Static configuration of one replica's consensus core.

use crate::record::NodeId;

/// Configuration shared by every entity on one replica. Times are in milliseconds of
/// the caller's clock (the core never reads a clock).
#[derive(Clone, Debug)]
pub struct Config {
    /// Number of acceptors (odd, 3..=7).
    pub n: u8,
    /// This replica's acceptor id, `0..n`.
    pub me: NodeId,
    /// Use the pre-authorised fast path (skip prepare after an own chosen entry).
    pub pre_auth: bool,
    /// Base delay before a proposer re-prepares an undecided entry it is driving.
    /// The actual delay is randomised between 1× and 2× and doubles per attempt (capped).
    pub retry_ms: u64,
    /// Earliest re-send of a catch-up message for one entry.
    pub catchup_ms: u64,
    /// Entries asked for at once by catch-up.
    pub catchup_window: u64,
    /// The entity's home: the one node pre-authorised for entry 1. Every replica
    /// must agree on it (the runtime derives it from a hash of the entity), so that
    /// at most one node skips prepare there. Later entries are pre-authorised to
    /// whoever introduced the previous chosen value.
    pub home: NodeId,
    /// Deliberate bugs, for proving that the simulator and checkers find them.
    #[doc(hidden)]
    pub mutation: Mutation,
}

/// A deliberately broken behaviour (tests only).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mutation {
    #[default]
    None,
    /// Count a minority of equal accepted numbers as chosen.
    MinorityQuorum,
    /// Forget promises (but not accepted values) when restoring from disk.
    ForgetPromiseOnRestart,
    /// (Simulator) a node whose disk was wiped rejoins as if it were new.
    IgnoreWipe,
    /// A probe summary forgets the records above the chosen entry, so an evicted
    /// entity answers "empty" where it holds a promise or an accepted value.
    SummaryForgetsRecords,
}

impl Config {
    /// A configuration with the defaults used by the server.
    pub fn new(n: u8, me: NodeId) -> Self {
        Self {
            n,
            me,
            pre_auth: true,
            retry_ms: 20,
            catchup_ms: 200,
            catchup_window: 8,
            home: 0,
            mutation: Mutation::None,
        }
    }

    /// Check the invariants the core relies on.
    pub fn validate(&self) -> Result<(), &'static str> {
        if !(3..=7).contains(&self.n) || self.n.is_multiple_of(2) {
            return Err("n must be an odd number from 3 to 7");
        }
        if self.me >= self.n {
            return Err("me must be below n");
        }
        if self.home >= self.n {
            return Err("home must be below n");
        }
        if self.retry_ms == 0 || self.catchup_ms == 0 || self.catchup_window == 0 {
            return Err("timeouts and catch-up window must be positive");
        }
        Ok(())
    }
}
