//! The per-entry record of one acceptor and the relations on it (reference §1.2, §1.3).

use bytes::Bytes;

/// Proposal number. 0 means "none". Acceptor `i` owns `{i+1, i+1+n, i+1+2n, ...}`;
/// `1..=n` are reserved for the pre-authorised fast path.
pub type Ballot = u32;

/// Index of one slot of an entity's log, from 1.
pub type EntryId = u64;

/// Index of an acceptor in the replica set, `0..n`.
pub type NodeId = u8;

/// One acceptor's Paxos state for one (entity, entry).
///
/// Every numeric field only grows over the life of the record, across restarts,
/// which is what makes [`Record::is_newer_than`] a total order on snapshots of one
/// acceptor's record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Highest number this acceptor issued as a proposer.
    pub prepared: Ballot,
    /// Highest number this acceptor promised (its own or a peer's).
    pub promised: Ballot,
    /// Number under which the current value was accepted; 0 = nothing accepted.
    pub accepted: Ballot,
    /// Id of the accepted value; 0 iff nothing accepted. Unique per (entity, entry):
    /// the ballot in which the value was first proposed.
    pub value_id: u64,
    /// Accepted value bytes (empty bytes is a legal no-op value).
    pub value: Bytes,
    /// Client request ids carried with the value, for duplicate detection.
    pub request_ids: Vec<u64>,
    /// This acceptor knows the value is chosen.
    pub chosen: bool,
    /// Wire-only: `value`/`request_ids` were stripped; the receiver restores them by id.
    pub elided: bool,
}

/// Why a record was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidRecord {
    PreparedAbovePromised,
    AcceptedAbovePromised,
    ValueIdMismatch,
    ValueWithoutId,
    ElidedWithoutId,
}

impl Record {
    /// The record of an acceptor that has never seen the entry.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Nothing promised or accepted.
    pub fn is_empty(&self) -> bool {
        self.promised == 0 && self.accepted == 0 && !self.chosen
    }

    /// Structural validity (reference §1.2, rules 1–5).
    pub fn validate(&self) -> Result<(), InvalidRecord> {
        if self.prepared > self.promised {
            return Err(InvalidRecord::PreparedAbovePromised);
        }
        if self.accepted > self.promised {
            return Err(InvalidRecord::AcceptedAbovePromised);
        }
        if (self.accepted == 0) != (self.value_id == 0) {
            return Err(InvalidRecord::ValueIdMismatch);
        }
        if self.value_id == 0
            && (!self.value.is_empty() || !self.request_ids.is_empty() || self.chosen)
        {
            return Err(InvalidRecord::ValueWithoutId);
        }
        if self.elided
            && (self.value_id == 0 || !self.value.is_empty() || !self.request_ids.is_empty())
        {
            return Err(InvalidRecord::ElidedWithoutId);
        }
        Ok(())
    }

    /// The "newer record" relation (reference §1.3): is `self` a later snapshot than `old`?
    /// Nothing beats a chosen record; values are not compared.
    pub fn is_newer_than(&self, old: &Record) -> bool {
        if old.chosen {
            return false;
        }
        if self.chosen {
            return true;
        }
        self.prepared > old.prepared || self.promised > old.promised || self.accepted > old.accepted
    }

    /// The record with value bytes and request ids stripped, for shipping to a receiver
    /// that is known to hold the value already.
    pub fn elide(&mut self) {
        if self.value_id != 0 && !self.elided {
            self.value = Bytes::new();
            self.request_ids.clear();
            self.elided = true;
        }
    }

    /// Approximate memory and wire size, for cache accounting.
    pub fn size(&self) -> usize {
        32 + self.value.len() + self.request_ids.len() * 8
    }
}

/// Owner of a proposal number among `n` acceptors.
pub fn ballot_owner(ballot: Ballot, n: u8) -> Option<NodeId> {
    if ballot == 0 {
        None
    } else {
        Some(((ballot - 1) % n as u32) as NodeId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(prepared: Ballot, promised: Ballot, accepted: Ballot) -> Record {
        Record {
            prepared,
            promised,
            accepted,
            value_id: accepted as u64,
            value: if accepted > 0 {
                Bytes::from_static(b"v")
            } else {
                Bytes::new()
            },
            ..Record::default()
        }
    }

    #[test]
    fn validity_sequence_from_reference() {
        // IsValidRecord: empty; prepared 1; promised 2; accepted 2 without id; with id; accepted 3.
        let mut r = Record::empty();
        assert_eq!(r.validate(), Ok(()));
        r.prepared = 1;
        assert_eq!(r.validate(), Err(InvalidRecord::PreparedAbovePromised));
        r.promised = 2;
        assert_eq!(r.validate(), Ok(()));
        r.accepted = 2;
        assert_eq!(r.validate(), Err(InvalidRecord::ValueIdMismatch));
        r.value_id = 100;
        assert_eq!(r.validate(), Ok(()));
        r.accepted = 3;
        assert_eq!(r.validate(), Err(InvalidRecord::AcceptedAbovePromised));
    }

    #[test]
    fn value_without_id_and_bad_elision_are_invalid() {
        let mut r = Record::empty();
        r.value = Bytes::from_static(b"x");
        assert_eq!(r.validate(), Err(InvalidRecord::ValueWithoutId));
        let mut r = Record::empty();
        r.chosen = true;
        assert_eq!(r.validate(), Err(InvalidRecord::ValueWithoutId));
        let mut r = Record::empty();
        r.elided = true;
        assert_eq!(r.validate(), Err(InvalidRecord::ElidedWithoutId));
    }

    #[test]
    fn newer_relation() {
        assert!(rec(2, 2, 0).is_newer_than(&rec(1, 2, 0)));
        assert!(!rec(1, 2, 0).is_newer_than(&rec(1, 2, 0)));
        let mut chosen = rec(1, 1, 1);
        chosen.chosen = true;
        assert!(chosen.is_newer_than(&rec(9, 9, 9)));
        assert!(!rec(9, 9, 9).is_newer_than(&chosen));
        assert!(rec(0, 3, 0).is_newer_than(&rec(0, 2, 0)));
        assert!(rec(0, 3, 3).is_newer_than(&rec(0, 3, 0)));
    }

    #[test]
    fn elide_strips_value_only_when_there_is_one() {
        let mut r = rec(1, 1, 1);
        r.request_ids = vec![7];
        r.elide();
        assert!(r.elided && r.value.is_empty() && r.request_ids.is_empty());
        assert_eq!(r.validate(), Ok(()));
        let mut e = Record::empty();
        e.elide();
        assert!(!e.elided);
    }

    #[test]
    fn ballot_owners() {
        assert_eq!(ballot_owner(0, 3), None);
        assert_eq!(ballot_owner(1, 3), Some(0));
        assert_eq!(ballot_owner(4, 3), Some(0));
        assert_eq!(ballot_owner(5, 3), Some(1));
        assert_eq!(ballot_owner(7, 5), Some(1));
    }
}
