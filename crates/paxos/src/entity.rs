//! One entity's Paxos log as a sans-IO state machine.
//!
//! # Calling protocol
//!
//! Inputs: [`Entity::write`], [`Entity::read`], [`Entity::handle_message`],
//! [`Entity::persisted`] and [`Entity::handle_timeout`], each with the caller's `now`
//! in milliseconds. After every input, drain [`Entity::poll_event`] until it returns
//! `None`, acting on each event in order, then re-arm a timer from
//! [`Entity::poll_timeout`].
//!
//! * `Event::Persist { seq, .. }`: write the records durably (group-commit freely),
//!   then call `persisted(seq)`. Persists of one entity must complete in `seq` order.
//! * `Event::Send(msg)`: hand to the network; loss is tolerated.
//! * `Event::Apply { .. }`: the entity's state is now this chosen value. Values are
//!   whole states (PaxosLog-as-value), so applying may skip entries.
//! * `Event::Done { token, outcome }`: the command `token` finished.
//!
//! # Invariants kept here
//!
//! * Persist before send: a message that shows a local record is released only after
//!   the persist that contains that record is reported durable (`held`).
//! * An entry counts as chosen for the entity (apply, `max_chosen`, pre-authorisation,
//!   client answers) only once its chosen record is durable locally.
//! * Writes and reads only target `applied + 1`; a record at `e` anywhere implies
//!   `e - 1` is chosen.
//! * Memory is bounded: entries below `applied` are dropped, entries beyond
//!   `applied + AHEAD` are never created, held messages are coalesced per (peer, entry).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::config::{Config, Mutation};
use crate::entry::{quorum, EntryView, Status};
use crate::message::{Kind, Message};
use crate::record::{Ballot, EntryId, InvalidRecord, NodeId, Record};
use crate::rng::Rng;

/// How far beyond `applied` a node takes part in entries. Further entries are only
/// used to learn that it must catch up (not voting is always safe).
const AHEAD: EntryId = 16;
/// Cap on the retry back-off multiplier (2^4).
const MAX_BACKOFF_SHIFT: u32 = 4;

/// An effect the runtime must carry out, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Make these records durable, then call [`Entity::persisted`] with `seq`.
    /// `records` are all the records the entity holds, in entry order, none below
    /// `trim_below`: they replace whatever an earlier persist left (records of
    /// entries below `trim_below` are obsolete).
    Persist {
        seq: u64,
        records: Vec<(EntryId, Record)>,
        trim_below: EntryId,
    },
    /// Send this message to `msg.to`.
    Send(Message),
    /// The entity's state is now the chosen value of `entry`.
    Apply {
        entry: EntryId,
        value_id: u64,
        value: Bytes,
        request_ids: Vec<u64>,
    },
    /// A command finished.
    Done { token: u64, outcome: Outcome },
}

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The write's value was chosen at `entry` (applied before this event).
    Written { entry: EntryId },
    /// Another value was chosen at `entry`; the write did not happen there and will
    /// not happen later. Retry with a value computed from the new state.
    Lost { entry: EntryId },
    /// The entity jumped past `entry` by a snapshot before this write's fate was
    /// learnt: it may or may not have happened (check request ids in the state).
    Superseded { entry: EntryId },
    /// The applied state (at `entry`) was current when the read started.
    ReadOk { entry: EntryId },
    /// The deadline passed; a write may or may not have happened.
    Timeout,
    /// This node's disk was wiped and it has not voted at `entry` since: it may not
    /// propose there (it could reuse a forgotten ballot). Retry on another node; this
    /// node learns the entry by catch-up once someone else decides it.
    Rejoining { entry: EntryId },
}

/// Another command is in flight on this entity; queue and retry after its `Done`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Busy;

/// A durable record could not be used at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreError {
    Invalid { entry: EntryId, why: InvalidRecord },
    NotOwnBallot { entry: EntryId },
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid { entry, why } => write!(f, "invalid record at entry {entry}: {why:?}"),
            Self::NotOwnBallot { entry } => {
                write!(
                    f,
                    "record at entry {entry} prepared a ballot of another acceptor"
                )
            }
        }
    }
}
impl std::error::Error for RestoreError {}

#[derive(Clone, Debug)]
struct Slot {
    view: EntryView,
    /// The local record changed during the current input and must be persisted.
    dirty: bool,
    /// Sequence number of the last persist that carries the local record.
    persisted_seq: u64,
    /// Sequence number of the persist that carries the chosen flag.
    chosen_seq: Option<u64>,
    durably_chosen: bool,
    /// Earliest time for the next catch-up message about this entry.
    catchup_at: u64,
    /// Catch-up requests for this entry that went unanswered by a chosen record.
    catchup_misses: u8,
    /// (accepted, value id) of the local record as last made durable.
    durable_accepted: (Ballot, u64),
    /// Persists in flight for this entry: (seq, accepted, value id).
    inflight: Vec<(u64, Ballot, u64)>,
}

impl Slot {
    fn new(cfg: &Config) -> Self {
        let mut view = EntryView::new(cfg.me, cfg.n);
        view.set_broken_minority_quorum(cfg.mutation == Mutation::MinorityQuorum);
        Self {
            view,
            dirty: false,
            persisted_seq: 0,
            chosen_seq: None,
            durably_chosen: false,
            catchup_at: 0,
            catchup_misses: 0,
            durable_accepted: (0, 0),
            inflight: Vec::new(),
        }
    }

    /// The entry is chosen in memory and the decision rests only on durable records:
    /// the peers' records came in messages sent after their persists, and this node's
    /// own acceptance of that ballot is durable (or the chosen record it adopted was
    /// durable at its sender). Then the value is on disk on a majority and may be
    /// applied and acknowledged before the chosen flag itself is persisted — saving
    /// the proposer one fsync per write.
    fn chosen_on_durable_majority(&self) -> bool {
        let l = self.view.local();
        self.view.is_chosen()
            && !self.durably_chosen
            && l.accepted > 0
            && self.durable_accepted == (l.accepted, l.value_id)
    }
}

#[derive(Clone, Debug)]
enum OpKind {
    Write {
        value: Bytes,
        request_ids: Vec<u64>,
        /// The value was computed from the state at this entry, so it may only be
        /// proposed at `base + 1`.
        base: EntryId,
    },
    Read {
        read_id: u64,
        empties: u8,
        probing: bool,
    },
}

#[derive(Clone, Debug)]
struct Op {
    token: u64,
    kind: OpKind,
    deadline: u64,
    /// The entry this command currently works on.
    entry: Option<EntryId>,
    /// Value ids this command proposed at `entry` (its value keeps the first id it got).
    ids: Vec<u64>,
    retry_at: u64,
    attempt: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Intent {
    /// Send my record (and my view of `to`) for `entry`.
    Sync {
        to: NodeId,
        entry: EntryId,
        catchup: bool,
    },
    /// Sync to every peer not known to have the entry chosen.
    Broadcast { entry: EntryId },
    /// A record-less answer or probe.
    Bare {
        to: NodeId,
        entry: EntryId,
        kind: Kind,
        read_id: u64,
    },
}

/// A rejoining node collecting peers' highest entries (see [`Entity::rejoin`]).
#[derive(Clone, Debug)]
struct Learner {
    reported: u8,
    max_entry: EntryId,
    probe_at: u64,
}

/// One entity's replicated log at one replica. See the module docs for the protocol.
#[derive(Clone, Debug)]
pub struct Entity {
    cfg: Config,
    /// Boxed: a B-tree leaf reserves room for 11 values, so unboxed slots would cost
    /// every entity several KiB even with one entry (measured: ~8 KiB of RSS per
    /// cached entity before, against a few hundred bytes of real content).
    slots: BTreeMap<EntryId, Box<Slot>>,
    /// Highest entry whose (durably) chosen value is the entity's state.
    applied: EntryId,
    /// Highest entry known chosen, here or at any peer.
    max_chosen: EntryId,
    /// This node may fast-propose at `pre_auth + 1`.
    pre_auth: Option<EntryId>,
    /// Wiped-disk rule: this node neither votes nor proposes at entries `<= floor`.
    floor: EntryId,
    /// While a rejoining node waits for enough peers to report their highest entry.
    learner: Option<Learner>,
    /// The peer asked by catch-up (the one last seen ahead).
    active_peer: NodeId,
    op: Option<Op>,
    persist_seq: u64,
    durable_seq: u64,
    held: Vec<(u64, Message)>,
    intents: Vec<Intent>,
    events: VecDeque<Event>,
    rng: Rng,
    /// Peers the runtime believes reachable (bit per node id); a read's first
    /// check-empty round asks only as many of them as a majority needs.
    live_peers: u8,
    /// First retry delay of a write's round, in ms (`cfg.retry_ms` unless the runtime
    /// measured slower rounds): see `set_write_retry_ms`.
    write_retry_ms: u32,
}

impl Entity {
    /// A fresh entity with no durable state. The entity's home (`cfg.home`) holds
    /// pre-authorisation for entry 1.
    pub fn new(cfg: Config, seed: u64) -> Self {
        let active_peer = (cfg.me + 1) % cfg.n;
        let pre_auth = (cfg.me == cfg.home).then_some(0);
        Self {
            slots: BTreeMap::new(),
            applied: 0,
            max_chosen: 0,
            pre_auth,
            active_peer,
            op: None,
            persist_seq: 0,
            durable_seq: 0,
            held: Vec::new(),
            intents: Vec::new(),
            events: VecDeque::new(),
            rng: Rng::new(seed),
            floor: 0,
            learner: None,
            live_peers: u8::MAX,
            write_retry_ms: u32::try_from(cfg.retry_ms).unwrap_or(u32::MAX),
            cfg,
        }
    }

    /// Which peers the runtime believes reachable (bit `1 << id`), a hint for whom a
    /// read asks first. Never affects safety: a read still needs a majority of
    /// empties, and its retry asks every peer.
    pub fn set_live_peers(&mut self, mask: u8) {
        self.live_peers = mask;
    }

    /// How long a write's round waits for answers before it starts a new ballot (the
    /// base of its backoff), at least `cfg.retry_ms`. Never affects safety. The
    /// runtime raises it while rounds are slow: under load a round waits behind other
    /// fsyncs, and a retry that fires before the answers arrive starts a prepare round
    /// (two more persists per node) that adds to the very queue that delayed it. Reads
    /// keep `cfg.retry_ms`: their probes persist nothing, and a probe to a dead peer
    /// should be repeated to another one soon.
    pub fn set_write_retry_ms(&mut self, ms: u64) {
        let ms = ms.max(self.cfg.retry_ms);
        self.write_retry_ms = u32::try_from(ms).unwrap_or(u32::MAX);
    }

    /// Rebuild from the durable records (any order). Emits `Apply` for the latest
    /// chosen entry so the runtime learns the state.
    pub fn restore(
        cfg: Config,
        seed: u64,
        records: Vec<(EntryId, Record)>,
    ) -> Result<Self, RestoreError> {
        let mut e = Self::new(cfg, seed);
        let mut max_entry = 0;
        for (entry, mut rec) in records {
            if e.cfg.mutation == Mutation::ForgetPromiseOnRestart {
                // Forget promises made to other proposers.
                rec.promised = rec.accepted.max(rec.prepared);
            }
            rec.validate()
                .map_err(|why| RestoreError::Invalid { entry, why })?;
            if rec.elided {
                return Err(RestoreError::Invalid {
                    entry,
                    why: InvalidRecord::ElidedWithoutId,
                });
            }
            if rec.prepared > 0
                && crate::record::ballot_owner(rec.prepared, e.cfg.n) != Some(e.cfg.me)
            {
                return Err(RestoreError::NotOwnBallot { entry });
            }
            max_entry = max_entry.max(entry);
            let mut slot = Slot::new(&e.cfg);
            slot.durably_chosen = rec.chosen;
            slot.durable_accepted = (rec.accepted, rec.value_id);
            slot.view = EntryView::from_local(e.cfg.me, e.cfg.n, rec);
            slot.view
                .set_broken_minority_quorum(e.cfg.mutation == Mutation::MinorityQuorum);
            if slot.durably_chosen && entry > e.applied {
                e.applied = entry;
            }
            e.slots.insert(entry, Box::new(slot));
        }
        // A record at `max_entry` exists only if `max_entry - 1` was chosen.
        e.max_chosen = e.applied.max(max_entry.saturating_sub(1));
        let applied = e.applied;
        e.slots.retain(|&k, _| k >= applied);
        if applied > 0 {
            e.pre_auth = None;
            if let Some(slot) = e.slots.get(&applied) {
                let l = slot.view.local().clone();
                if e.owns_value(l.value_id) {
                    e.pre_auth = Some(applied);
                }
                e.events.push_back(Event::Apply {
                    entry: applied,
                    value_id: l.value_id,
                    value: l.value,
                    request_ids: l.request_ids,
                });
            }
        }
        Ok(e)
    }

    /// Mark this entity as living on a node whose disk was wiped. Such a node may have
    /// promised or accepted at entries it no longer remembers, so it must not vote or
    /// propose there. It asks every peer for the highest entry it holds a record for;
    /// once `n - q + 1` peers answered (enough to intersect every majority that could
    /// include a forgotten vote) it sets `floor = max + 1` — a forgotten vote at
    /// `max + 1` is possible (its majority may be outside those who answered), but one
    /// at `max + 2` would need `max + 1` chosen, hence a record at `max + 1` on a
    /// majority, hence on someone who answered. It votes only above `floor` and learns
    /// the entries up to it as chosen records (catch-up).
    pub fn rejoin(&mut self) {
        self.learner = Some(Learner {
            reported: 0,
            max_entry: 0,
            probe_at: 0,
        });
    }

    /// May this node vote (promise, accept, answer "empty") or propose at `entry`?
    fn may_vote(&self, entry: EntryId) -> bool {
        self.learner.is_none() && entry > self.floor
    }

    /// Highest entry with a non-empty local record (or the applied one).
    pub(crate) fn max_entry(&self) -> EntryId {
        self.slots
            .iter()
            .rev()
            .find(|(_, s)| !s.view.local().is_empty())
            .map_or(self.applied, |(&e, _)| e.max(self.applied))
    }

    /// Entries at or below this one this node neither votes nor proposes at (0 unless
    /// its disk was wiped).
    pub(crate) fn voting_floor(&self) -> EntryId {
        self.floor
    }

    pub(crate) fn mutation(&self) -> crate::config::Mutation {
        self.cfg.mutation
    }

    /// Whether this node is still waiting to learn its voting floor.
    pub fn is_rejoining(&self) -> bool {
        self.learner.is_some()
    }

    // ---- getters -------------------------------------------------------------------

    /// Highest entry whose chosen value is the current state.
    pub fn applied(&self) -> EntryId {
        self.applied
    }
    /// Highest entry known chosen anywhere.
    pub fn max_chosen(&self) -> EntryId {
        self.max_chosen
    }
    /// The entity's current state: the chosen value at `applied` (empty before entry 1).
    pub fn current_value(&self) -> Bytes {
        self.slots
            .get(&self.applied)
            .filter(|s| s.durably_chosen)
            .map_or_else(Bytes::new, |s| s.view.local().value.clone())
    }

    /// No command in flight.
    pub fn is_idle(&self) -> bool {
        self.op.is_none()
    }
    /// Nothing waits for I/O or a peer: safe to evict from memory.
    pub fn is_quiescent(&self) -> bool {
        self.op.is_none()
            && self.held.is_empty()
            && self.durable_seq == self.persist_seq
            && self.applied == self.max_chosen
    }
    /// The local record of `entry`, if it is in memory.
    pub fn local_record(&self, entry: EntryId) -> Option<&Record> {
        self.slots.get(&entry).map(|s| s.view.local())
    }
    /// The entry status of `entry`, if it is in memory.
    pub fn status(&self, entry: EntryId) -> Option<Status> {
        self.slots.get(&entry).map(|s| s.view.status())
    }
    /// Entry at which this node may use the fast path next.
    pub fn pre_authorised_entry(&self) -> Option<EntryId> {
        self.pre_auth.map(|e| e + 1)
    }
    /// Free the capacity of empty work buffers. A cached entity is idle most of the
    /// time, and buffers of events and held messages (~200 bytes an item) keep the
    /// capacity their busiest moment needed. Freeing them, and the shard's request
    /// queues, cut RSS by ~2.5 KiB per cached entity (200 k entities: 1 315 MiB →
    /// 815 MiB per node).
    pub fn shrink_idle_buffers(&mut self) {
        if self.events.is_empty() {
            self.events.shrink_to_fit();
        }
        if self.held.is_empty() {
            self.held.shrink_to_fit();
        }
        if self.intents.is_empty() {
            self.intents.shrink_to_fit();
        }
    }

    /// Approximate memory held, for cache accounting.
    pub fn size(&self) -> usize {
        let slots: usize = self
            .slots
            .values()
            .map(|s| (0..self.cfg.n).map(|p| s.view.get(p).size()).sum::<usize>())
            .sum();
        128 + slots + self.held.iter().map(|(_, m)| m.size()).sum::<usize>()
    }

    // ---- commands ------------------------------------------------------------------

    /// Propose `value` (the entity's whole new state) at `applied + 1`.
    /// Ends with `Written`, `Lost`, `Superseded` or `Timeout`.
    pub fn write(
        &mut self,
        now: u64,
        token: u64,
        value: Bytes,
        request_ids: Vec<u64>,
        deadline: u64,
    ) -> Result<(), Busy> {
        let kind = OpKind::Write {
            value,
            request_ids,
            base: self.applied,
        };
        self.start_op(now, token, kind, deadline)
    }

    /// Linearizable read: ends with `ReadOk { entry }` once a majority showed entry
    /// `applied + 1` empty (the state at `entry` is current), or `Timeout`.
    pub fn read(&mut self, now: u64, token: u64, deadline: u64) -> Result<(), Busy> {
        let kind = OpKind::Read {
            read_id: 0,
            empties: 0,
            probing: false,
        };
        self.start_op(now, token, kind, deadline)
    }

    /// Attach the single command this entity runs at a time and start it.
    fn start_op(&mut self, now: u64, token: u64, kind: OpKind, deadline: u64) -> Result<(), Busy> {
        if self.op.is_some() {
            return Err(Busy);
        }
        self.op = Some(Op {
            token,
            kind,
            deadline,
            entry: None,
            ids: Vec::new(),
            retry_at: now,
            attempt: 0,
        });
        self.drive(now);
        self.flush();
        Ok(())
    }

    // ---- inputs --------------------------------------------------------------------

    /// A message from a peer.
    pub fn handle_message(&mut self, now: u64, mut msg: Message) {
        let (me, n) = (self.cfg.me, self.cfg.n);
        if msg.to != me || msg.from == me || msg.from >= n {
            return;
        }
        let from = msg.from;
        if msg.max_chosen > self.max_chosen {
            self.max_chosen = msg.max_chosen;
            self.active_peer = from;
        }
        match msg.kind {
            Kind::CheckEmpty => self.answer_probe(from, msg.entry, msg.read_id),
            Kind::Empty => self.on_empty(now, from, msg.entry, msg.read_id),
            Kind::Behind => self.on_behind(now, msg.entry, msg.read_id),
            Kind::Sync => self.on_sync(&mut msg),
            Kind::Rejoin => {
                let max_entry = self.max_entry();
                self.intents.push(Intent::Bare {
                    to: from,
                    entry: max_entry,
                    kind: Kind::RejoinReport,
                    read_id: 0,
                });
            }
            Kind::RejoinReport => self.on_rejoin_report(from, msg.entry),
        }
        self.settle_chosen(now);
        self.drive(now);
        self.try_catchup(now);
        self.flush();
    }

    /// The persist `seq` (and every earlier one) is durable.
    pub fn persisted(&mut self, now: u64, seq: u64) {
        if seq <= self.durable_seq {
            return;
        }
        self.durable_seq = seq.min(self.persist_seq);
        let durable = self.durable_seq;
        let mut i = 0;
        while i < self.held.len() {
            if self.held[i].0 <= durable {
                let (_, msg) = self.held.remove(i);
                // Meanwhile the peer showed it knows the choice: the message (typically
                // the proposer's "chosen" to the peer whose answer came second) has
                // nothing left to tell it.
                let stale = msg.kind == Kind::Sync
                    && !msg.catchup
                    && self
                        .slots
                        .get(&msg.entry)
                        .is_some_and(|s| s.view.is_chosen() && s.view.get(msg.to).chosen);
                if !stale {
                    self.events.push_back(Event::Send(msg));
                }
            } else {
                i += 1;
            }
        }
        for slot in self.slots.values_mut() {
            while let Some(&(s, acc, vid)) = slot.inflight.first() {
                if s > durable {
                    break;
                }
                slot.durable_accepted = (acc, vid);
                slot.inflight.remove(0);
            }
        }
        let newly: Vec<EntryId> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.durably_chosen && s.chosen_seq.is_some_and(|c| c <= durable))
            .map(|(&e, _)| e)
            .collect();
        for e in newly {
            self.on_durably_chosen(now, e);
        }
        self.settle_chosen(now);
        self.drive(now);
        self.try_catchup(now);
        self.flush();
    }

    /// Timers: command deadlines, proposer retries, catch-up re-sends.
    pub fn handle_timeout(&mut self, now: u64) {
        if let Some(l) = &mut self.learner {
            if l.probe_at <= now {
                l.probe_at = now + self.cfg.catchup_ms;
                let me = self.cfg.me;
                for to in (0..self.cfg.n).filter(|&p| p != me) {
                    self.intents.push(Intent::Bare {
                        to,
                        entry: 0,
                        kind: Kind::Rejoin,
                        read_id: 0,
                    });
                }
            }
        }
        if let Some(op) = &self.op {
            if op.deadline <= now {
                let token = op.token;
                self.op = None;
                self.events.push_back(Event::Done {
                    token,
                    outcome: Outcome::Timeout,
                });
            } else if op.entry.is_some() && op.retry_at <= now {
                self.retry(now);
            }
        }
        self.settle_chosen(now);
        self.drive(now);
        self.try_catchup(now);
        self.flush();
    }

    /// The next event to act on.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest time `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t: Option<u64> = None;
        let mut min = |x: u64| t = Some(t.map_or(x, |t| t.min(x)));
        if let Some(l) = &self.learner {
            min(l.probe_at);
        }
        if let Some(op) = &self.op {
            min(op.deadline);
            if op.entry.is_some() {
                min(op.retry_at);
            }
        }
        if self.applied < self.max_chosen {
            let hi = self.max_chosen.min(self.applied + self.cfg.catchup_window);
            for (_, s) in self.slots.range(self.applied + 1..=hi) {
                if !s.view.is_chosen() {
                    min(s.catchup_at);
                }
            }
            if self.slots.range(self.applied + 1..=hi).next().is_none() {
                min(0);
            }
        }
        t
    }

    // ---- message handling ----------------------------------------------------------

    fn answer_probe(&mut self, from: NodeId, entry: EntryId, read_id: u64) {
        if entry > self.max_chosen && !self.may_vote(entry) {
            return; // an "empty" from a node that forgot its votes proves nothing
        }
        if entry <= self.max_chosen {
            self.intents.push(Intent::Bare {
                to: from,
                entry,
                kind: Kind::Behind,
                read_id,
            });
        } else if self
            .slots
            .get(&entry)
            .is_some_and(|s| !s.view.local().is_empty())
        {
            // Not empty here: show my record; the reader folds it and fails its check.
            self.intents.push(Intent::Sync {
                to: from,
                entry,
                catchup: false,
            });
        } else {
            // Records only grow, so an empty record in memory is empty on disk too.
            self.intents.push(Intent::Bare {
                to: from,
                entry,
                kind: Kind::Empty,
                read_id,
            });
        }
    }

    fn on_empty(&mut self, now: u64, from: NodeId, entry: EntryId, read_id: u64) {
        let q = quorum(self.cfg.n);
        let applied = self.applied;
        // A node below its voting floor does not count itself, so its own record
        // there does not matter.
        let local_empty = !self.may_vote(entry)
            || self
                .slots
                .get(&entry)
                .is_none_or(|s| s.view.local().is_empty());
        let Some(op) = &mut self.op else { return };
        let OpKind::Read {
            read_id: rid,
            empties,
            probing,
        } = &mut op.kind
        else {
            return;
        };
        if !*probing || *rid != read_id || op.entry != Some(entry) {
            return;
        }
        if entry != applied + 1 || !local_empty || self.max_chosen > applied {
            // Something moved: start over at the new position.
            *probing = false;
            op.entry = None;
            op.retry_at = now;
            return;
        }
        *empties |= 1 << from;
        if empties.count_ones() as usize >= q {
            let token = op.token;
            self.op = None;
            self.events.push_back(Event::Done {
                token,
                outcome: Outcome::ReadOk { entry: applied },
            });
        }
    }

    fn on_rejoin_report(&mut self, from: NodeId, max_entry: EntryId) {
        let n = self.cfg.n as usize;
        let Some(l) = &mut self.learner else { return };
        l.reported |= 1 << from;
        l.max_entry = l.max_entry.max(max_entry);
        // At least n - q + 1 peers answered.
        if l.reported.count_ones() as usize > n - quorum(self.cfg.n) {
            self.floor = self.floor.max(l.max_entry + 1);
            self.learner = None;
        }
    }

    fn on_behind(&mut self, now: u64, entry: EntryId, read_id: u64) {
        if let Some(op) = &mut self.op {
            if let OpKind::Read {
                read_id: rid,
                probing,
                ..
            } = &mut op.kind
            {
                if *probing && *rid == read_id && op.entry == Some(entry) {
                    *probing = false;
                    op.entry = None;
                    op.retry_at = now;
                }
            }
        }
    }

    fn on_sync(&mut self, msg: &mut Message) {
        let from = msg.from;
        let x = msg.entry;
        if x < self.applied
            || (x == self.applied && self.slots.get(&x).is_some_and(|s| s.durably_chosen))
        {
            // Decided and (maybe) trimmed here: answer with my latest chosen entry, which
            // is also the snapshot of the whole entity (PaxosLog-as-value).
            if !msg.sender.chosen || x < self.applied {
                self.intents.push(Intent::Sync {
                    to: from,
                    entry: self.applied,
                    catchup: msg.catchup,
                });
            }
            return;
        }
        if !self.may_vote(x) && !msg.sender.chosen {
            // Wiped-disk rule: no promise, no accept here; only chosen facts are taken.
            // A read waiting at `x` sees the entry in progress, which this node may not
            // drive: it ends now and the client retries elsewhere.
            let reading_x = matches!(
                &self.op,
                Some(Op { kind: OpKind::Read { probing: true, .. }, entry: Some(e), .. }) if *e == x
            );
            if reading_x && !msg.sender.is_empty() {
                if let Some(op) = self.op.take() {
                    self.events.push_back(Event::Done {
                        token: op.token,
                        outcome: Outcome::Rejoining { entry: x },
                    });
                }
            }
            return;
        }
        if x > self.applied + AHEAD && !msg.sender.chosen {
            // Too far ahead to vote on; the header already told us to catch up. A chosen
            // record is still taken: it is a snapshot that lets this node jump.
            return;
        }
        let slot = self
            .slots
            .entry(x)
            .or_insert_with(|| Box::new(Slot::new(&self.cfg)));
        let mut rec = std::mem::take(&mut msg.sender);
        if !slot.view.restore(&mut rec) {
            // The value named by id is gone here: drop rather than fold a hollow record.
            return;
        }
        let old_local = slot.view.local().clone();
        let old_status = slot.view.status();
        if slot.view.fold(from, rec).is_err() {
            return;
        }
        let mut broadcast = false;
        if slot.view.status() == Status::MajorityPromise && slot.view.accept_eligible() {
            self.accept_at(x);
            broadcast = true;
        }
        let slot = self.slots.get_mut(&x).expect("slot inserted above");
        let local = slot.view.local();
        let changed = *local != old_local;
        let need_sync =
            local.is_newer_than(&msg.receiver) || (local.chosen && !msg.receiver.chosen);
        if changed {
            slot.dirty = true;
        }
        let newly_chosen = slot.view.is_chosen() && old_status != Status::Chosen;
        // A node that learns the choice from a peer's message answers that peer only:
        // the peer is either the proposer (which tells the peers it has not heard
        // from once it learns the choice too) or already knows. Telling every peer
        // here as well cost two of the six messages of a 3-node write (each acceptor
        // told the other what it already knew) and a third of all messages in 5.
        // A node that misses every message learns later, from the next message about
        // the entity (its `max_chosen`) or a read's check.
        let learnt_from_peer = newly_chosen && !broadcast;
        if learnt_from_peer {
            if !msg.sender.chosen || need_sync {
                self.intents.push(Intent::Sync {
                    to: from,
                    entry: x,
                    catchup: false,
                });
            }
        } else if broadcast || newly_chosen {
            self.intents.push(Intent::Broadcast { entry: x });
        } else if need_sync {
            self.intents.push(Intent::Sync {
                to: from,
                entry: x,
                catchup: false,
            });
        }
    }

    /// Phase 2 at `entry`: the command's value if it targets this entry, else a no-op
    /// (the highest accepted value in the view wins in either case). Values are whole
    /// states, so a no-op re-proposes the current state (that of `entry - 1`, which is
    /// `applied`: a proposer only opens `applied + 1`).
    fn accept_at(&mut self, entry: EntryId) {
        let (value, reqs) = match &self.op {
            Some(Op {
                kind: OpKind::Write {
                    value, request_ids, ..
                },
                entry: Some(e),
                ..
            }) if *e == entry => (value.clone(), request_ids.clone()),
            _ => (self.current_value(), Vec::new()),
        };
        let Some(slot) = self.slots.get_mut(&entry) else {
            return;
        };
        let ballot = slot.view.local().promised as u64;
        if slot.view.accept(ballot, value, reqs).is_ok() {
            slot.dirty = true;
        }
    }

    // ---- proposer ------------------------------------------------------------------

    /// Start (or restart) the command at the current position if it has none.
    fn drive(&mut self, now: u64) {
        let Some(op) = &self.op else { return };
        if op.entry.is_some() || op.retry_at > now {
            return;
        }
        if (self.applied < self.max_chosen && !self.catchup_exhausted()) || self.learner.is_some() {
            return; // catch up (or learn the voting floor) first
        }
        let e = self.applied + 1;
        let is_read = matches!(op.kind, OpKind::Read { .. });
        if let OpKind::Write { base, .. } = op.kind {
            if base != self.applied {
                // The state moved on (this node was behind, or another value won the
                // entry): the value was computed from an older state and must not be
                // proposed at a later entry. The caller recomputes it.
                let (token, entry) = (op.token, base + 1);
                self.op = None;
                self.events.push_back(Event::Done {
                    token,
                    outcome: Outcome::Lost { entry },
                });
                return;
            }
        }
        let voter = self.may_vote(e);
        if !voter && !is_read {
            let token = op.token;
            self.op = None;
            self.events.push_back(Event::Done {
                token,
                outcome: Outcome::Rejoining { entry: e },
            });
            return;
        }
        let slot = self
            .slots
            .entry(e)
            .or_insert_with(|| Box::new(Slot::new(&self.cfg)));
        if slot.view.is_chosen() {
            return; // waiting for the chosen record to be durable
        }
        if is_read && (slot.view.local().is_empty() || !voter) {
            let read_id = self.rng.next_u64();
            let delay = self.backoff(self.op.as_ref().map_or(0, |o| o.attempt));
            let me = self.cfg.me;
            let op = self.op.as_mut().expect("checked above");
            // A node below its floor does not count itself: its empty record may be
            // one it forgot.
            let empties = if voter { 1 << me } else { 0 };
            op.kind = OpKind::Read {
                read_id,
                empties,
                probing: true,
            };
            op.entry = Some(e);
            op.retry_at = now + delay;
            let first_try = op.attempt == 0;
            let targets = self.probe_targets(voter, first_try);
            for p in self.peers().filter(|p| targets & (1 << p) != 0) {
                self.intents.push(Intent::Bare {
                    to: p,
                    entry: e,
                    kind: Kind::CheckEmpty,
                    read_id,
                });
            }
            return;
        }
        // A write, or a read that finds the next entry in progress: propose there.
        let fast = !is_read
            && self.cfg.pre_auth
            && self.pre_auth == Some(self.applied)
            && slot.view.local().promised == 0;
        let Ok(ballot) = slot.view.promise(fast) else {
            return;
        };
        slot.dirty = true;
        if fast {
            if let Some(Op {
                kind: OpKind::Write {
                    value, request_ids, ..
                },
                ..
            }) = &self.op
            {
                let _ = slot
                    .view
                    .accept(ballot as u64, value.clone(), request_ids.clone());
            }
        }
        let delay = self.backoff(self.op.as_ref().map_or(0, |o| o.attempt));
        let op = self.op.as_mut().expect("checked above");
        op.entry = Some(e);
        op.ids.push(ballot as u64);
        op.retry_at = now + delay;
        if let OpKind::Read { probing, .. } = &mut op.kind {
            *probing = false;
        }
        self.intents.push(Intent::Broadcast { entry: e });
        // With the fast path a majority may already be known (n = 1 is not allowed).
        if !fast {
            let slot = self.slots.get_mut(&e).expect("slot exists");
            if slot.view.status() == Status::MajorityPromise && slot.view.accept_eligible() {
                self.accept_at(e);
            }
        }
    }

    /// Whom a read's check-empty round asks (bit per node). The first try asks just
    /// enough reachable peers to complete a majority with this node's own empty
    /// record, starting at a random one to spread the load: in a 3-node cluster that
    /// halves the messages of a read. A retry (someone did not answer in time), or
    /// too few reachable peers, asks them all.
    fn probe_targets(&mut self, voter: bool, first_try: bool) -> u8 {
        let all: u8 = self.peers().fold(0, |m, p| m | (1 << p));
        let need = quorum(self.cfg.n) - usize::from(voter);
        let live = all & self.live_peers;
        if !first_try || (live.count_ones() as usize) < need {
            return all;
        }
        let start = self.rng.below(u64::from(self.cfg.n)) as u8;
        let mut picked = 0u8;
        for i in 0..self.cfg.n {
            let p = (start + i) % self.cfg.n;
            if picked.count_ones() as usize == need {
                break;
            }
            if live & (1 << p) != 0 {
                picked |= 1 << p;
            }
        }
        picked
    }

    /// The command's entry did not decide in time: prepare again with a higher number.
    fn retry(&mut self, now: u64) {
        let Some(op) = self.op.as_mut() else { return };
        op.attempt = op.attempt.saturating_add(1);
        let Some(e) = op.entry else { return };
        if let OpKind::Read { probing: true, .. } = op.kind {
            op.entry = None;
            op.retry_at = now;
            return;
        }
        if e != self.applied + 1 {
            op.entry = None;
            op.retry_at = now;
            return;
        }
        let attempt = op.attempt;
        let delay = self.backoff(attempt);
        let Some(slot) = self.slots.get_mut(&e) else {
            if let Some(op) = self.op.as_mut() {
                op.entry = None;
            }
            return;
        };
        if slot.view.is_chosen() {
            // Decided; waiting for the chosen record to be durable.
            if let Some(op) = self.op.as_mut() {
                op.retry_at = now + delay;
            }
            return;
        }
        if let Ok(ballot) = slot.view.promise(false) {
            slot.dirty = true;
            let op = self.op.as_mut().expect("checked above");
            op.ids.push(ballot as u64);
            op.retry_at = now + delay;
            self.intents.push(Intent::Broadcast { entry: e });
        }
    }

    fn backoff(&mut self, attempt: u32) -> u64 {
        let first = match &self.op {
            Some(Op {
                kind: OpKind::Write { .. },
                ..
            }) => u64::from(self.write_retry_ms),
            _ => self.cfg.retry_ms,
        };
        let base = first << attempt.min(MAX_BACKOFF_SHIFT);
        base + self.rng.below(base)
    }

    /// Pre-authorisation goes to the node that introduced the chosen value (its id is
    /// the ballot it was first proposed in), not to the owner of a ballot that carried
    /// it: several ballots of one entry can gather a majority for the same value, but
    /// the value has exactly one introducer, so exactly one node holds the grant.
    fn owns_value(&self, value_id: u64) -> bool {
        value_id > 0
            && value_id <= u32::MAX as u64
            && crate::record::ballot_owner(value_id as u32, self.cfg.n) == Some(self.cfg.me)
    }

    /// Apply entries whose decision already rests on durable records (see
    /// [`Slot::chosen_on_durable_majority`]), in entry order.
    fn settle_chosen(&mut self, now: u64) {
        let ready: Vec<EntryId> = self
            .slots
            .range(self.applied + 1..)
            .filter(|(_, s)| s.chosen_on_durable_majority())
            .map(|(&e, _)| e)
            .collect();
        for e in ready {
            self.on_durably_chosen(now, e);
        }
    }

    fn on_durably_chosen(&mut self, now: u64, e: EntryId) {
        let Some(slot) = self.slots.get_mut(&e) else {
            return;
        };
        slot.durably_chosen = true;
        let l = slot.view.local().clone();
        self.max_chosen = self.max_chosen.max(e);
        if self.owns_value(l.value_id) {
            self.pre_auth = Some(self.pre_auth.map_or(e, |p| p.max(e)));
        }
        if e <= self.applied {
            return;
        }
        self.applied = e;
        self.events.push_back(Event::Apply {
            entry: e,
            value_id: l.value_id,
            value: l.value.clone(),
            request_ids: l.request_ids.clone(),
        });
        self.slots.retain(|&k, _| k >= e);
        let Some(op) = self.op.as_mut() else { return };
        let Some(target) = op.entry else { return };
        if target > e {
            return;
        }
        match op.kind {
            OpKind::Write { .. } => {
                let outcome = if target < e {
                    Outcome::Superseded { entry: target }
                } else if op.ids.contains(&l.value_id) {
                    Outcome::Written { entry: e }
                } else {
                    Outcome::Lost { entry: e }
                };
                let token = op.token;
                self.op = None;
                self.events.push_back(Event::Done { token, outcome });
            }
            OpKind::Read { .. } => {
                op.entry = None;
                op.ids.clear();
                op.retry_at = now;
            }
        }
    }

    // ---- catch-up ------------------------------------------------------------------

    /// Every peer has been asked for the chosen record of `applied + 1` without
    /// sending it. The entry is known chosen (a peer said so) but no live peer may
    /// hold its chosen record any more: the node that knew crashed before persisting
    /// its flag, or lost its disk, while the acceptances that made the choice are
    /// still durable on some members. Then a command may drive the entry itself: a
    /// new ballot's phase 1 finds the chosen value (any majority of voters holds it;
    /// a wiped node votes only after rejoining) and chooses it again, so this is
    /// always safe, and without it the entity waited forever (the simulator found it
    /// in 2 of 10 000 five-replica seeds with wiped disks).
    fn catchup_exhausted(&self) -> bool {
        self.slots
            .get(&(self.applied + 1))
            .is_some_and(|s| s.catchup_misses as usize >= self.cfg.n as usize)
    }

    fn try_catchup(&mut self, now: u64) {
        if self.applied >= self.max_chosen {
            return;
        }
        let hi = self.max_chosen.min(self.applied + self.cfg.catchup_window);
        let mut rotate = false;
        for e in self.applied + 1..=hi {
            let slot = self
                .slots
                .entry(e)
                .or_insert_with(|| Box::new(Slot::new(&self.cfg)));
            if slot.view.is_chosen() || slot.catchup_at > now {
                continue;
            }
            if slot.catchup_at > 0 {
                rotate = true;
                slot.catchup_misses = slot.catchup_misses.saturating_add(1);
            }
            slot.catchup_at = now + self.cfg.catchup_ms;
            self.intents.push(Intent::Sync {
                to: self.active_peer,
                entry: e,
                catchup: true,
            });
        }
        if rotate {
            // The peer did not answer in time: ask another one next time.
            let mut p = (self.active_peer + 1) % self.cfg.n;
            if p == self.cfg.me {
                p = (p + 1) % self.cfg.n;
            }
            self.active_peer = p;
        }
    }

    // ---- output --------------------------------------------------------------------

    fn peers(&self) -> impl Iterator<Item = NodeId> {
        let me = self.cfg.me;
        (0..self.cfg.n).filter(move |&p| p != me)
    }

    /// Emit the persist for this input, then turn intents into messages, holding those
    /// that show a record not yet durable.
    fn flush(&mut self) {
        let dirty: Vec<EntryId> = self
            .slots
            .iter()
            .filter(|(_, s)| s.dirty)
            .map(|(&e, _)| e)
            .collect();
        if !dirty.is_empty() {
            self.persist_seq += 1;
            let seq = self.persist_seq;
            for e in dirty {
                let slot = self.slots.get_mut(&e).expect("listed above");
                slot.dirty = false;
                slot.persisted_seq = seq;
                let local = slot.view.local();
                let (accepted, value_id, chosen) = (local.accepted, local.value_id, local.chosen);
                slot.inflight.push((seq, accepted, value_id));
                if chosen && slot.chosen_seq.is_none() {
                    slot.chosen_seq = Some(seq);
                }
            }
            let mut records = Vec::with_capacity(2);
            // Every record this node holds, not only the changed ones: the persist
            // then describes the entity's whole durable state, and storage replaces
            // its row without reading it back (at a million entities that read was a
            // fifth of the writer thread's time). A record not changed here equals
            // the one an earlier persist carries; persists complete in order, so
            // writing it again changes nothing.
            let applied = self.applied;
            for (&e, slot) in self.slots.range(applied..) {
                let local = slot.view.local();
                if !local.is_empty() {
                    records.push((e, local.clone()));
                }
            }
            self.events.push_back(Event::Persist {
                seq,
                records,
                trim_below: self.applied,
            });
        }
        let intents = std::mem::take(&mut self.intents);
        let mut seen: Vec<Intent> = Vec::with_capacity(intents.len());
        for intent in intents {
            if seen.contains(&intent) {
                continue;
            }
            seen.push(intent);
            match intent {
                Intent::Sync { to, entry, catchup } => self.emit_sync(to, entry, catchup),
                Intent::Broadcast { entry } => {
                    let targets: Vec<NodeId> = match self.slots.get(&entry) {
                        Some(s) if s.view.is_chosen() => s.view.peers_not_chosen().collect(),
                        Some(_) => self.peers().collect(),
                        None => Vec::new(),
                    };
                    for to in targets {
                        self.emit_sync(to, entry, false);
                    }
                }
                Intent::Bare {
                    to,
                    entry,
                    kind,
                    read_id,
                } => {
                    let msg = Message {
                        from: self.cfg.me,
                        to,
                        entry,
                        kind,
                        catchup: false,
                        max_chosen: self.max_chosen,
                        read_id,
                        sender: Record::empty(),
                        receiver: Record::empty(),
                    };
                    self.events.push_back(Event::Send(msg));
                }
            }
        }
    }

    fn emit_sync(&mut self, to: NodeId, entry: EntryId, catchup: bool) {
        let Some(slot) = self.slots.get(&entry) else {
            // Nothing here (never touched): an empty record still asks the peer to answer.
            if entry > self.applied {
                let msg = self.sync_message(to, entry, catchup, Record::empty(), Record::empty());
                self.events.push_back(Event::Send(msg));
            }
            return;
        };
        let tag = slot.persisted_seq;
        let (sender, receiver) = (slot.view.local().clone(), slot.view.get(to).clone());
        let mut msg = self.sync_message(to, entry, catchup, sender, receiver);
        // Catch-up answers carry the value in full: the asker may have lost it (a wiped
        // disk), so the id alone might not be restorable there.
        if !catchup {
            msg.elide_values();
        }
        if tag <= self.durable_seq {
            self.events.push_back(Event::Send(msg));
        } else {
            // Coalesce: a newer message to the same peer about the same entry replaces it.
            self.held
                .retain(|(_, m)| !(m.to == to && m.entry == entry && m.kind == Kind::Sync));
            self.held.push((tag, msg));
        }
    }

    fn sync_message(
        &self,
        to: NodeId,
        entry: EntryId,
        catchup: bool,
        sender: Record,
        receiver: Record,
    ) -> Message {
        Message {
            from: self.cfg.me,
            to,
            entry,
            kind: Kind::Sync,
            catchup,
            max_chosen: self.max_chosen,
            read_id: 0,
            sender,
            receiver,
        }
    }
}

#[cfg(test)]
mod tests;
