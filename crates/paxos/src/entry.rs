//! The entry state machine: one node's view of every acceptor's record for one
//! (entity, entry), the acceptor rules and the proposer's promise/accept steps
//! (reference §1.4, §3, §4).

use crate::record::{Ballot, NodeId, Record};
use bytes::Bytes;

/// Classification of an entry from the local node's point of view (reference §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Nothing promised or accepted locally.
    Normal,
    /// I prepared my own number; fewer than a majority show it promised.
    PromiseLocal,
    /// My promise belongs to another proposer.
    PromiseRemote,
    /// I prepared `n_p` and a majority (me included) show `promised == n_p`.
    MajorityPromise,
    /// I accepted another proposer's ballot at my current promise.
    AcceptRemote,
    /// I accepted under my own prepared number.
    AcceptLocal,
    /// The local record carries the chosen flag.
    Chosen,
}

/// Why a fold was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FoldError {
    BadAcceptor,
    Invalid(crate::record::InvalidRecord),
    Elided,
}

/// Why a proposer step was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepError {
    /// `promise` did not leave the entry in `PromiseLocal` (already chosen, n = 1...).
    PromiseFailed,
    /// `accept` called outside `MajorityPromise` / fast-path `PromiseLocal`.
    NotAcceptEligible,
}

/// One node's view of one entry.
#[derive(Clone, Debug)]
pub struct EntryView {
    me: NodeId,
    n: u8,
    view: Vec<Record>,
    status: Status,
    minority_quorum: bool,
}

impl EntryView {
    /// A fresh view: every record empty.
    pub fn new(me: NodeId, n: u8) -> Self {
        debug_assert!(me < n);
        Self {
            me,
            n,
            view: vec![Record::empty(); n as usize],
            status: Status::Normal,
            minority_quorum: false,
        }
    }

    /// A view rebuilt from the local durable record (peers' records are soft state).
    pub fn from_local(me: NodeId, n: u8, local: Record) -> Self {
        let mut v = Self::new(me, n);
        v.view[me as usize] = local;
        v.classify();
        v
    }

    pub fn me(&self) -> NodeId {
        self.me
    }
    pub fn n(&self) -> u8 {
        self.n
    }
    pub fn quorum(&self) -> usize {
        quorum(self.n)
    }
    pub fn status(&self) -> Status {
        self.status
    }
    /// The local, authoritative record.
    pub fn local(&self) -> &Record {
        &self.view[self.me as usize]
    }
    /// The last record heard from `p` (or the local record for `p == me`).
    pub fn get(&self, p: NodeId) -> &Record {
        &self.view[p as usize]
    }
    pub fn is_chosen(&self) -> bool {
        self.status == Status::Chosen
    }

    /// Fold a record of acceptor `p` into the view (reference §3.1). Returns whether
    /// the view changed. The local record is updated by the acceptor rules:
    /// raise the promise first, then adopt a chosen value, or an accepted proposal at
    /// least as high as the raised promise and higher than what is accepted locally.
    pub fn fold(&mut self, p: NodeId, r: Record) -> Result<bool, FoldError> {
        if p >= self.n {
            return Err(FoldError::BadAcceptor);
        }
        r.validate().map_err(FoldError::Invalid)?;
        if r.elided {
            return Err(FoldError::Elided);
        }
        if !r.is_newer_than(&self.view[p as usize]) {
            return Ok(false);
        }
        if p == self.me {
            self.view[p as usize] = r;
            self.classify();
            return Ok(true);
        }
        self.view[p as usize] = r;
        if self.status == Status::Chosen {
            return Ok(true);
        }
        let r = &self.view[p as usize];
        let (r_promised, r_accepted, r_chosen) = (r.promised, r.accepted, r.chosen);
        let (vid, value, reqs) = (r.value_id, r.value.clone(), r.request_ids.clone());
        let l = &mut self.view[self.me as usize];
        l.promised = l.promised.max(r_promised);
        if r_chosen && l.value_id == vid {
            // The value I accepted is the chosen one (possibly under a higher ballot of
            // mine): keep my accepted number, so the record never goes back.
            l.chosen = true;
        } else if r_chosen || (l.promised <= r_accepted && l.accepted < r_accepted) {
            l.accepted = r_accepted;
            l.chosen = r_chosen;
            if l.value_id != vid {
                l.value_id = vid;
                l.value = value;
                l.request_ids = reqs;
            }
        }
        self.classify();
        Ok(true)
    }

    /// Recompute the status; may set the local chosen flag (reference §3.2, §3.3).
    fn classify(&mut self) {
        let me = self.me as usize;
        let l = &self.view[me];
        if l.chosen {
            self.status = Status::Chosen;
            return;
        }
        if l.accepted > 0 {
            let same = self
                .view
                .iter()
                .filter(|r| r.accepted == l.accepted && r.value_id == l.value_id)
                .count();
            if same >= self.chosen_threshold() {
                self.view[me].chosen = true;
                self.status = Status::Chosen;
                return;
            }
        }
        let l = &self.view[me];
        self.status = if l.promised > l.prepared {
            if l.accepted == l.promised {
                Status::AcceptRemote
            } else {
                Status::PromiseRemote
            }
        } else if l.promised == 0 {
            Status::Normal
        } else if l.accepted == l.promised {
            Status::AcceptLocal
        } else if self
            .view
            .iter()
            .filter(|r| r.promised == l.promised)
            .count()
            >= self.quorum()
        {
            Status::MajorityPromise
        } else {
            Status::PromiseLocal
        };
    }

    fn chosen_threshold(&self) -> usize {
        if self.minority_quorum {
            // Deliberately broken (tests only): a minority counts as chosen.
            (self.quorum() - 1).max(1)
        } else {
            self.quorum()
        }
    }

    /// Test-only mutation: count a minority of equal accepted records as chosen.
    #[doc(hidden)]
    pub fn set_broken_minority_quorum(&mut self, on: bool) {
        self.minority_quorum = on;
    }

    /// An own proposal number strictly above the local promise (reference §4.1).
    /// Reserved numbers `1..=n` are used only on the pre-authorised fast path.
    pub fn next_ballot(&self, pre_auth: bool) -> Ballot {
        let n = self.n as u32;
        let p = self.local().promised;
        let mut b = p.div_ceil(n) * n + self.me as u32 + 1;
        if b <= p {
            b += n;
        }
        if !pre_auth && b <= n {
            b += n;
        }
        b
    }

    /// Prepare: take a new own number as prepared and promised. Must leave the entry
    /// in `PromiseLocal` (reference §4.2).
    pub fn promise(&mut self, pre_auth: bool) -> Result<Ballot, StepError> {
        if self.status == Status::Chosen {
            return Err(StepError::PromiseFailed);
        }
        let b = self.next_ballot(pre_auth);
        let l = &mut self.view[self.me as usize];
        l.prepared = b;
        l.promised = b;
        self.classify();
        if self.status != Status::PromiseLocal {
            return Err(StepError::PromiseFailed);
        }
        Ok(b)
    }

    /// Whether `accept` may run now (reference §4.5): a majority promised my ballot,
    /// or the fast path with a reserved number; in both cases my own acceptor has not
    /// promised higher since and has not accepted in this ballot yet.
    pub fn accept_eligible(&self) -> bool {
        let l = self.local();
        match self.status {
            Status::MajorityPromise => true,
            Status::PromiseLocal => l.promised <= self.n as u32 && l.accepted != l.promised,
            _ => false,
        }
    }

    /// Accept: choose the value for my ballot — the highest accepted value in the whole
    /// view, else mine — and accept it locally. Returns whether my own value was used.
    pub fn accept(
        &mut self,
        value_id: u64,
        value: Bytes,
        request_ids: Vec<u64>,
    ) -> Result<bool, StepError> {
        if !self.accept_eligible() {
            return Err(StepError::NotAcceptEligible);
        }
        let b = self.local().promised;
        let best = self
            .view
            .iter()
            .filter(|r| r.accepted > 0)
            .max_by_key(|r| r.accepted)
            .map(|r| (r.value_id, r.value.clone(), r.request_ids.clone()));
        let own = best.is_none();
        let (vid, v, reqs) = best.unwrap_or((value_id, value, request_ids));
        let l = &mut self.view[self.me as usize];
        l.accepted = b;
        l.value_id = vid;
        l.value = v;
        l.request_ids = reqs;
        self.classify();
        debug_assert!(matches!(self.status, Status::AcceptLocal | Status::Chosen));
        Ok(own)
    }

    /// Restore an elided record from any record in the view holding that value id
    /// (reference §2.3). `false` means the value is unknown here: drop the message.
    pub fn restore(&self, r: &mut Record) -> bool {
        if !r.elided {
            return true;
        }
        match self
            .view
            .iter()
            .find(|v| v.value_id == r.value_id && !v.elided)
        {
            Some(src) => {
                r.value = src.value.clone();
                r.request_ids = src.request_ids.clone();
                r.elided = false;
                true
            }
            None => false,
        }
    }

    /// Peers whose last-known record shows they promised my current ballot.
    pub fn peers_promised_mine(&self) -> impl Iterator<Item = NodeId> + '_ {
        let b = self.local().promised;
        (0..self.n).filter(move |&p| p != self.me && self.view[p as usize].promised == b)
    }

    /// Peers not yet known to hold the chosen flag.
    pub fn peers_not_chosen(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.n).filter(move |&p| p != self.me && !self.view[p as usize].chosen)
    }
}

/// Majority of `n`.
pub fn quorum(n: u8) -> usize {
    n as usize / 2 + 1
}

#[cfg(test)]
mod tests;
