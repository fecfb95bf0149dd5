//! What a quiescent entity needs to answer a read probe, kept after the entity itself
//! is dropped from memory.
//!
//! A linearizable read asks a peer whether the entry after the reader's chosen one is
//! still empty there (`Kind::CheckEmpty`). Under a key space far larger than the
//! cache, the peer has usually evicted the entity, and loading it from disk only to
//! say "empty" was half of the storage work of a cold read. A quiescent entity
//! (nothing in flight, everything durable, all chosen entries applied) changes only
//! through its node's own shard, so what it would have answered stays what it would
//! answer until it is loaded again: the summary answers in its place, and answers
//! only where that answer is certain. Anything else falls back to loading.

use crate::entity::Entity;
use crate::message::{Kind, Message};
use crate::record::{EntryId, NodeId, Record};

/// The probe-answering part of a quiescent entity. See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSummary {
    /// The highest entry the entity knew chosen.
    pub max_chosen: EntryId,
    /// How far above `max_chosen` its highest non-empty local record is (usually 0):
    /// entries in between may hold a promise or an accepted value.
    pub above: u32,
}

impl ProbeSummary {
    /// The answer `me` gives to `msg` for this entity, or `None` when only the full
    /// entity can answer it (not a probe, an entry that may hold a record, or a message
    /// the entity would ignore).
    pub fn answer(&self, me: NodeId, n: u8, msg: &Message) -> Option<Message> {
        if msg.kind != Kind::CheckEmpty || msg.to != me || msg.from == me || msg.from >= n {
            return None;
        }
        // The entity adopts a higher max_chosen from any message before answering.
        let max_chosen = self.max_chosen.max(msg.max_chosen);
        let kind = if msg.entry <= max_chosen {
            Kind::Behind
        } else if msg.entry > self.max_chosen + u64::from(self.above) {
            Kind::Empty
        } else {
            return None;
        };
        Some(Message {
            from: me,
            to: msg.from,
            entry: msg.entry,
            kind,
            catchup: false,
            max_chosen,
            read_id: msg.read_id,
            sender: Record::empty(),
            receiver: Record::empty(),
        })
    }
}

impl Entity {
    /// The summary that answers probes for this entity once it is dropped from memory,
    /// or `None` when it must be loaded to answer: it is not quiescent, it is still
    /// learning or below its voting floor (after a wiped disk), or its records reach
    /// too far above its chosen entry.
    pub fn probe_summary(&self) -> Option<ProbeSummary> {
        if !self.is_quiescent() || self.is_rejoining() || self.voting_floor() != 0 {
            return None;
        }
        let max_chosen = self.max_chosen();
        let mut above = self.max_entry().saturating_sub(max_chosen);
        if self.mutation() == crate::config::Mutation::SummaryForgetsRecords {
            above = 0;
        }
        Some(ProbeSummary {
            max_chosen,
            above: u32::try_from(above).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn probe(entry: EntryId, max_chosen: EntryId) -> Message {
        Message {
            from: 1,
            to: 0,
            entry,
            kind: Kind::CheckEmpty,
            catchup: false,
            max_chosen,
            read_id: 9,
            sender: Record::empty(),
            receiver: Record::empty(),
        }
    }

    const S: ProbeSummary = ProbeSummary {
        max_chosen: 5,
        above: 2,
    };

    #[test]
    fn a_chosen_entry_is_answered_behind_and_one_past_the_records_empty() {
        let a = S.answer(0, 3, &probe(5, 4)).expect("answered");
        assert_eq!(
            (a.kind, a.to, a.entry, a.max_chosen, a.read_id),
            (Kind::Behind, 1, 5, 5, 9)
        );
        let a = S.answer(0, 3, &probe(8, 5)).expect("answered");
        assert_eq!((a.kind, a.max_chosen), (Kind::Empty, 5));
    }

    #[test]
    fn an_entry_that_may_hold_a_record_is_left_to_the_entity() {
        assert_eq!(S.answer(0, 3, &probe(6, 5)), None);
        assert_eq!(S.answer(0, 3, &probe(7, 5)), None);
    }

    #[test]
    fn the_probers_higher_chosen_entry_is_adopted_first() {
        let a = S.answer(0, 3, &probe(7, 7)).expect("answered");
        assert_eq!((a.kind, a.max_chosen), (Kind::Behind, 7));
    }

    #[test]
    fn anything_but_a_probe_to_this_node_is_left_to_the_entity() {
        let mut m = probe(8, 5);
        m.kind = Kind::Sync;
        assert_eq!(S.answer(0, 3, &m), None);
        assert_eq!(
            S.answer(2, 3, &probe(8, 5)),
            None,
            "addressed to another node"
        );
        let mut m = probe(8, 5);
        m.from = 0;
        assert_eq!(S.answer(0, 3, &m), None, "from itself");
        m.from = 3;
        assert_eq!(S.answer(0, 3, &m), None, "from a non-member");
    }

    #[test]
    fn a_quiet_entity_has_a_summary_and_none_exists_mid_read() {
        let mut e = Entity::restore(Config::new(3, 0), 1, Vec::new()).expect("restores");
        while e.poll_event().is_some() {}
        assert_eq!(
            e.probe_summary(),
            Some(ProbeSummary {
                max_chosen: 0,
                above: 0
            })
        );
        e.read(0, 1, 1_000).expect("starts");
        assert_eq!(e.probe_summary(), None, "a read in flight is not quiescent");
    }
}
