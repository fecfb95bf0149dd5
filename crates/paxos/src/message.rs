//! The single message type of semi-symmetric Paxos (reference §2).
//!
//! Every protocol step is "here is my record, and here is what I believe yours is".
//! There is no separate prepare/accept/ack: `kind` only marks the read probe and the
//! answers that carry no record.

use crate::record::{EntryId, NodeId, Record};

/// What a message is, beyond the records it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Ordinary traffic: the sender's record and its view of the receiver.
    Sync,
    /// Read probe (check-empty): "is `entry` still empty at your place?" No records.
    CheckEmpty,
    /// Answer to a probe: the entry is empty here.
    Empty,
    /// Answer to a probe: the sender knows `entry` chosen already; see `max_chosen`.
    Behind,
    /// From a node whose disk was wiped: "which entries do you hold records for?"
    Rejoin,
    /// Answer to `Rejoin`: `entry` is the highest entry the sender holds a record for.
    RejoinReport,
}

/// One message between two replicas about one (entity, entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub entry: EntryId,
    pub kind: Kind,
    /// Sent by the rate-limited catch-up path; handled like any Sync.
    pub catchup: bool,
    /// The sender's highest entry known chosen.
    pub max_chosen: EntryId,
    /// Id of the read a probe belongs to (probes and their answers only).
    pub read_id: u64,
    /// The sender's own record (empty for probes and their answers).
    pub sender: Record,
    /// The sender's view of the receiver's record.
    pub receiver: Record,
}

impl Message {
    /// Value elision (reference §2.3): the receiver certainly once held the value named
    /// in the sender's view of it, so ship ids only where that value is repeated.
    pub fn elide_values(&mut self) {
        if self.receiver.value_id == 0 {
            return;
        }
        if self.sender.value_id == self.receiver.value_id {
            self.sender.elide();
        }
        self.receiver.elide();
    }

    /// Approximate encoded size, for accounting.
    pub fn size(&self) -> usize {
        40 + self.sender.size() + self.receiver.size()
    }
}
