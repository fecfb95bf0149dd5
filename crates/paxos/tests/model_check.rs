//! Model check (stateright 0.30, BFS) of the consensus core for ONE entry.
//!
//! Measured (2-core machine shared with other builds; `cargo nextest run -p paxos
//! model_check`, debug, the two checks running side by side): the whole run took 45.3 s.
//!
//! | test                                   | unique states | generated | debug  | release |
//! |----------------------------------------|---------------|-----------|--------|---------|
//! | exhaustive, <= 3 messages in flight    |       697,547 | 2,250,141 | 41.9 s |   4.3 s |
//! | all executions <= 12 steps, 2 prepares |       541,088 | 1,738,153 | 45.3 s |   3.4 s |
//! | mutant: accept without majority        |         2,864 |     6,897 |  0.2 s |         |
//! | mutant: propose own value              |        13,817 |    36,214 |  0.7 s |         |
//! | crash-restart of nodes 0 and 2, <= 3   |    10,461,234 |39,657,216 |        |  68.1 s |
//! | mutant: acceptances not persisted      |     1,263,527 | 4,166,509 |        |   6.5 s |
//!
//! No property is violated by the real core; every mutant is caught. (The crash rows
//! were measured on 2026-11-29 on the same kind of machine, release.)
//!
//! # What runs
//!
//! Each node holds the real `paxos::EntryView` (`fold`, `promise`, `accept`,
//! `accept_eligible`, `status`, `local`, `get`); only the glue around it is modelled
//! here, after `Entity::on_sync` and reference §2.5, §4, §5:
//!
//! * 3 acceptors (ids 0, 1, 2). Nodes 0 and 1 are also proposers with the distinct
//!   values `b"1"` (v1) and `b"2"` (v2); the value id is the ballot returned by
//!   `promise`, as in the core. Node 2 is a pure acceptor.
//! * Prepare (a timer, so it can happen at any point, also after the node lost or
//!   learned): `promise(false)`, then broadcast the local record. Not done once the entry
//!   is chosen locally (the entity does not either).
//! * Fast path (node 0 only, once; acceptor 0 holds the pre-authorisation for entry 1):
//!   if its local record is untouched, `promise(true)` and `accept` at once, then
//!   broadcast.
//! * Receive `Msg { sender_record, view_of_receiver }`: `fold(from, sender_record)`; if
//!   the status is then `MajorityPromise` and `accept_eligible()`, accept (the
//!   proposer's value; the core itself substitutes the highest accepted value of the
//!   view) and broadcast; otherwise reply to the sender with (my local record, my view
//!   of the sender) iff my local record `is_newer_than(view_of_receiver)` or it changed.
//! * Network: `Network::new_unordered_duplicating` (reordering; a sent message stays
//!   deliverable forever) with `LossyNetwork::Yes` (any message may be dropped).
//!
//! Auxiliary (history) state, kept in each node's state so that it is part of the
//! explored state: every (accepted ballot, value id, value bytes) its local record ever
//! held, and the value its local record first carried with `chosen = true`. A value is
//! *chosen* iff some ballot was held with that value by a majority of acceptors, at any
//! times (the vote-history definition of Lamport's Voting spec; stronger than
//! "simultaneously"). Since the history only grows, "at most one value is ever chosen"
//! also means the chosen value never changes.
//!
//! # Bounds (why not one unbounded run)
//!
//! With a lossy, duplicating network every subset of the messages sent so far is a
//! distinct network state, so the space is exponential in the number of distinct
//! messages: even the smallest configuration (fast path + one prepare of node 1,
//! unbounded network) passed 6 million unique states at depth 14 in release without
//! finishing. The checks therefore bound what must be bounded and say so:
//!
//! * `model_check_exhaustive_with_at_most_3_messages_in_flight`: node 0 fast path + 1 prepare,
//!   node 1 one prepare; states whose network holds more than 3 envelopes (delivered
//!   ones stay, the network duplicates) are outside the boundary. No depth bound: every
//!   reachable state within that boundary is checked. Because the network is lossy, an
//!   execution is covered whenever it never needs more than 3 messages retained at once.
//! * `model_check_all_short_executions_two_prepares_each`: node 0 fast path + 2 prepares, node 1
//!   2 prepares (the full configuration), at most 4 envelopes in flight, and every
//!   execution of at most `SHORT_STEPS` steps (single-threaded BFS, so each state is
//!   first reached by a shortest path and the depth cut is exact).
//! * `model_check_mutated_glue_is_caught_*`: two deliberately broken glues (never the core) on the
//!   first configuration; the checker must find two chosen values.
//!
//! Crashes (`Scenario::crashes`): a node may crash and restart at any point; it comes
//! back with its durable local record only (`EntryView::from_local`, as the core's
//! `restore`), knowing nothing of its peers. The glue persists at the end of every
//! step, before its messages can be delivered (`NodeState::persist`): persist before
//! send. A glue that persists an acceptance only with a change of its promise is
//! caught (`Mutation::AcceptsNotPersisted`), which shows the crashes have teeth.
//!
//! Not modelled: value elision/restoration (§2.3), persists that complete later than
//! the step that made them, wiped disks, check-empty reads, and the entity's extra
//! broadcast when an entry becomes chosen (the glue follows the reply rule of §2.5
//! only).
//!
//! Note: stateright 0.30's `CheckerBuilder::timeout` sleeps while holding the job-market
//! lock (the workers then barely run), so no timeout is set here.

use bytes::Bytes;
use paxos::{Ballot, EntryView, NodeId, Record, Status};
use stateright::actor::{
    model_timeout, Actor, ActorModel, ActorModelState, Id, LossyNetwork, Network, Out,
};
use stateright::{Checker, Expectation, HasDiscoveries, Model};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::time::Instant;

const N: u8 = 3;
/// Steps (actions: timer, delivery, drop) of `model_check_all_short_executions_two_prepares_each`.
const SHORT_STEPS: usize = 12;

// ---- hashable images of the core's types ---------------------------------------------

/// The proposers' values; every value the core hands around must be one of these.
const VALUES: [&[u8]; 2] = [b"1", b"2"];

/// Interned value bytes (`paxos::Record` is not `Hash`, and cheap states matter here).
fn intern(v: &Bytes) -> &'static [u8] {
    match VALUES.iter().find(|x| **x == &v[..]) {
        Some(x) => x,
        None if v.is_empty() => b"",
        None => panic!("unexpected value bytes {v:?}"),
    }
}

/// A hashable, `Copy` image of a `paxos::Record`. The conversion is checked to be
/// lossless: request ids are always empty and nothing is elided in this model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Rec {
    prepared: Ballot,
    promised: Ballot,
    accepted: Ballot,
    value_id: u64,
    value: &'static [u8],
    chosen: bool,
}

impl Rec {
    fn of(r: &Record) -> Rec {
        // Destructured, so a new field in the core breaks this file instead of being
        // silently ignored.
        let Record {
            prepared,
            promised,
            accepted,
            value_id,
            value,
            request_ids,
            chosen,
            elided,
        } = r;
        assert!(request_ids.is_empty() && !elided, "unmodelled record {r:?}");
        Rec {
            prepared: *prepared,
            promised: *promised,
            accepted: *accepted,
            value_id: *value_id,
            value: intern(value),
            chosen: *chosen,
        }
    }

    fn record(self) -> Record {
        Record {
            prepared: self.prepared,
            promised: self.promised,
            accepted: self.accepted,
            value_id: self.value_id,
            value: Bytes::from_static(self.value),
            request_ids: Vec::new(),
            chosen: self.chosen,
            elided: false,
        }
    }
}

/// The semi-symmetric message: the sender's record and its view of the receiver's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Msg {
    sender_record: Rec,
    view_of_receiver: Rec,
}

/// `Status` is not `Hash`.
fn status_code(s: Status) -> u8 {
    match s {
        Status::Normal => 0,
        Status::PromiseLocal => 1,
        Status::PromiseRemote => 2,
        Status::MajorityPromise => 3,
        Status::AcceptRemote => 4,
        Status::AcceptLocal => 5,
        Status::Chosen => 6,
    }
}

/// The real `EntryView`, compared and hashed by its complete observable state (`me`,
/// `n`, `status`, every record of the view). Its only other field is the test-only
/// broken-quorum switch, never turned on here.
#[derive(Clone, Debug)]
struct View(EntryView);

impl View {
    fn records(&self) -> impl Iterator<Item = &Record> + '_ {
        (0..self.0.n()).map(move |p| self.0.get(p))
    }
}

impl PartialEq for View {
    fn eq(&self, o: &Self) -> bool {
        self.0.me() == o.0.me()
            && self.0.n() == o.0.n()
            && self.0.status() == o.0.status()
            && self.records().eq(o.records())
    }
}

impl Hash for View {
    fn hash<H: Hasher>(&self, h: &mut H) {
        (self.0.me(), self.0.n(), status_code(self.0.status())).hash(h);
        for r in self.records() {
            Rec::of(r).hash(h);
        }
    }
}

// ---- the actor --------------------------------------------------------------------------

/// (accepted ballot, value id, value bytes).
type Vote = (Ballot, u64, &'static [u8]);
/// (value id, value bytes).
type Value = (u64, &'static [u8]);

#[derive(Clone, Debug, PartialEq, Hash)]
struct NodeState {
    view: View,
    /// The local record as last persisted: what a crash leaves.
    durable: Rec,
    prepares_left: u8,
    crashes_left: u8,
    /// Aux: this node has restarted with an acceptance on disk.
    restarted_holding: bool,
    /// Aux: every accepted proposal the local record ever held.
    held: BTreeSet<Vote>,
    /// Aux: the value the local record held when it first said chosen.
    learned: Option<Value>,
    /// Aux: the core refused a step the glue expected to succeed.
    fault: Option<String>,
}

impl NodeState {
    fn local(&self) -> &Record {
        self.view.0.local()
    }

    /// Update the auxiliary history after a step.
    fn note(&mut self) {
        let l = Rec::of(self.view.0.local());
        if l.accepted > 0 {
            self.held.insert((l.accepted, l.value_id, l.value));
        }
        if l.chosen && self.learned.is_none() {
            self.learned = Some((l.value_id, l.value));
        }
    }

    /// The core's persist rule, applied at the end of every step (before its messages
    /// can be delivered): every change of the local record is made durable.
    fn persist(&mut self, mutation: Mutation) {
        let l = self.local();
        let skip = mutation == Mutation::AcceptsNotPersisted
            && l.promised == self.durable.promised
            && l.prepared == self.durable.prepared;
        if !skip {
            self.durable = Rec::of(l);
        }
    }

    fn fault(&mut self, what: String) {
        if self.fault.is_none() {
            self.fault = Some(what);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Timer {
    Prepare,
    FastPath,
    /// Crash and restart: the view is rebuilt from the durable local record alone.
    Crash,
}

/// Deliberate bugs in the glue (never in the core), to prove the check can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mutation {
    None,
    /// The proposer accepts its own value right after `promise(false)`, without a
    /// majority of promises (not `accept_eligible`).
    AcceptWithoutMajority,
    /// At majority-promise the proposer accepts its own value, ignoring accepted values
    /// reported in phase 1.
    ProposeOwnValue,
    /// Persist before send broken: an acceptance is persisted only together with a
    /// change of the promise, so a crash can forget a vote a peer has counted.
    AcceptsNotPersisted,
}

struct Node {
    /// The proposer's value, `None` for a pure acceptor.
    value: Option<Bytes>,
    prepares: u8,
    fast_path: bool,
    crashes: u8,
    mutation: Mutation,
}

fn msg_to(view: &EntryView, to: NodeId) -> Msg {
    Msg {
        sender_record: Rec::of(view.local()),
        view_of_receiver: Rec::of(view.get(to)),
    }
}

fn broadcast(me: NodeId, view: &EntryView, o: &mut Out<Node>) {
    for p in (0..N).filter(|&p| p != me) {
        o.send(Id::from(p as usize), msg_to(view, p));
    }
}

impl Node {
    /// The core's accept with the proposer's value; value id = the ballot.
    fn accept(&self, st: &mut NodeState) {
        let value = self.value.clone().expect("only proposers accept");
        let b = st.local().promised;
        if let Err(e) = st.view.0.accept(b as u64, value, Vec::new()) {
            st.fault(format!("accept at {b} refused: {e:?}"));
        }
    }

    /// Mutations only: write an accepted record for my own value at my promise,
    /// bypassing the core's precondition and value selection (through `fold(me, ..)`,
    /// the self-load path, since the core's `accept` would refuse).
    fn forced_accept(&self, st: &mut NodeState) {
        let mut l = st.local().clone();
        l.accepted = l.promised;
        l.value_id = l.promised as u64;
        l.value = self.value.clone().expect("only proposers accept");
        l.request_ids.clear();
        let me = st.view.0.me();
        if let Err(e) = st.view.0.fold(me, l) {
            st.fault(format!("forced accept refused: {e:?}"));
        }
    }
}

impl Actor for Node {
    type Msg = Msg;
    type Timer = Timer;
    type State = NodeState;

    fn on_start(&self, id: Id, o: &mut Out<Self>) -> NodeState {
        let me = usize::from(id) as NodeId;
        let prepares = if self.value.is_some() {
            self.prepares
        } else {
            0
        };
        if prepares > 0 {
            o.set_timer(Timer::Prepare, model_timeout());
        }
        if self.fast_path {
            o.set_timer(Timer::FastPath, model_timeout());
        }
        if self.crashes > 0 {
            o.set_timer(Timer::Crash, model_timeout());
        }
        NodeState {
            view: View(EntryView::new(me, N)),
            durable: Rec::of(&Record::empty()),
            prepares_left: prepares,
            crashes_left: self.crashes,
            restarted_holding: false,
            held: BTreeSet::new(),
            learned: None,
            fault: None,
        }
    }

    fn on_msg(&self, id: Id, state: &mut Cow<NodeState>, src: Id, msg: Msg, o: &mut Out<Self>) {
        let me = usize::from(id) as NodeId;
        let from = usize::from(src) as NodeId;
        let mut st = (**state).clone();
        let old_local = st.local().clone();
        if let Err(e) = st.view.0.fold(from, msg.sender_record.record()) {
            st.fault(format!("fold from {from} refused: {e:?}"));
        }
        let mut bcast = false;
        if st.view.0.status() == Status::MajorityPromise && st.view.0.accept_eligible() {
            if self.value.is_none() {
                st.fault("MajorityPromise at a pure acceptor".into());
            } else if self.mutation == Mutation::ProposeOwnValue {
                self.forced_accept(&mut st);
            } else {
                self.accept(&mut st);
            }
            bcast = true;
        }
        st.note();
        st.persist(self.mutation);
        let local = st.local();
        if bcast {
            broadcast(me, &st.view.0, o);
        } else if local.is_newer_than(&msg.view_of_receiver.record()) || *local != old_local {
            o.send(src, msg_to(&st.view.0, from));
        }
        if st != **state {
            *state = Cow::Owned(st);
        }
    }

    fn on_timeout(&self, id: Id, state: &mut Cow<NodeState>, timer: &Timer, o: &mut Out<Self>) {
        let me = usize::from(id) as NodeId;
        let mut st = (**state).clone();
        match timer {
            Timer::Prepare => {
                st.prepares_left = st.prepares_left.saturating_sub(1);
                if st.prepares_left > 0 {
                    o.set_timer(Timer::Prepare, model_timeout());
                }
                if st.view.0.status() != Status::Chosen {
                    match st.view.0.promise(false) {
                        Ok(_) => {
                            if self.mutation == Mutation::AcceptWithoutMajority {
                                self.forced_accept(&mut st);
                            }
                            broadcast(me, &st.view.0, o);
                        }
                        Err(e) => st.fault(format!("promise refused: {e:?}")),
                    }
                }
            }
            Timer::FastPath => {
                // Pre-authorised: usable only while the local record is untouched.
                if st.local().promised == 0 {
                    match st.view.0.promise(true) {
                        Ok(_) if st.view.0.accept_eligible() => {
                            self.accept(&mut st);
                            broadcast(me, &st.view.0, o);
                        }
                        Ok(b) => st.fault(format!("fast path ballot {b} not accept-eligible")),
                        Err(e) => st.fault(format!("fast promise refused: {e:?}")),
                    }
                }
            }
            Timer::Crash => {
                st.crashes_left = st.crashes_left.saturating_sub(1);
                if st.crashes_left > 0 {
                    o.set_timer(Timer::Crash, model_timeout());
                }
                // Restart: only the durable record survives (the core's `restore`);
                // what this node knew of its peers is gone.
                st.view = View(EntryView::from_local(me, N, st.durable.record()));
                st.restarted_holding |= st.durable.accepted > 0;
            }
        }
        st.note();
        st.persist(self.mutation);
        if st != **state {
            *state = Cow::Owned(st);
        }
    }
}

// ---- the model and its properties -------------------------------------------------------

/// Bounds of one run.
#[derive(Clone, Copy, Debug)]
struct Scenario {
    /// Prepares of node 0 and node 1.
    prepares: [u8; 2],
    /// Node 0 may use the pre-authorised fast path once.
    fast_path: bool,
    /// States with more envelopes in the network are outside the boundary.
    max_in_flight: usize,
    /// Crash-restarts per node.
    crashes: [u8; 3],
    mutation: Mutation,
}

/// A small configuration that can be explored exhaustively.
const SMALL: Scenario = Scenario {
    prepares: [1, 1],
    fast_path: true,
    max_in_flight: 3,
    crashes: [0, 0, 0],
    mutation: Mutation::None,
};

type Sys = ActorModel<Node, Scenario>;
type SysState = ActorModelState<Node>;

/// Votes of all acceptors: vote -> number of acceptors that ever held it.
fn votes(s: &SysState) -> BTreeMap<Vote, usize> {
    let mut m = BTreeMap::new();
    for n in &s.actor_states {
        for v in &n.held {
            *m.entry(*v).or_insert(0) += 1;
        }
    }
    m
}

/// Votes held, over time, by a majority.
fn chosen_votes(s: &SysState) -> impl Iterator<Item = Vote> {
    votes(s)
        .into_iter()
        .filter(|(_, c)| *c >= paxos::quorum(N))
        .map(|(v, _)| v)
}

fn chosen_values(s: &SysState) -> BTreeSet<Value> {
    chosen_votes(s).map(|(_, id, v)| (id, v)).collect()
}

const AT_MOST_ONE_CHOSEN: &str = "(1) at most one value is ever chosen";

fn model(scn: Scenario) -> Sys {
    let node = |value: Option<&'static [u8]>, prepares, fast_path, crashes| Node {
        value: value.map(Bytes::from_static),
        prepares,
        fast_path,
        crashes,
        mutation: scn.mutation,
    };
    ActorModel::new(scn, ())
        .actor(node(
            Some(VALUES[0]),
            scn.prepares[0],
            scn.fast_path,
            scn.crashes[0],
        ))
        .actor(node(
            Some(VALUES[1]),
            scn.prepares[1],
            false,
            scn.crashes[1],
        ))
        .actor(node(None, 0, false, scn.crashes[2]))
        .init_network(Network::new_unordered_duplicating([]))
        .lossy_network(LossyNetwork::Yes)
        .within_boundary(|scn, s| s.network.len() <= scn.max_in_flight)
        .property(Expectation::Always, AT_MOST_ONE_CHOSEN, |_, s| {
            chosen_values(s).len() <= 1
        })
        // What makes counting equal ballots a sound chosen test (§3.3, §4.5).
        .property(Expectation::Always, "one value per ballot", |_, s| {
            let mut by_ballot: BTreeMap<Ballot, Value> = BTreeMap::new();
            s.actor_states
                .iter()
                .flat_map(|n| &n.held)
                .all(|&(b, id, v)| *by_ballot.entry(b).or_insert((id, v)) == (id, v))
        })
        .property(
            Expectation::Always,
            "(2) a node's chosen flag and value never change",
            |_, s| {
                s.actor_states.iter().all(|n| {
                    let l = n.local();
                    match n.learned {
                        None => !l.chosen,
                        Some((id, v)) => l.chosen && l.value_id == id && l.value == v,
                    }
                })
            },
        )
        .property(
            Expectation::Always,
            "(3) a node that says chosen holds the chosen value",
            |_, s| {
                let chosen = chosen_values(s);
                s.actor_states.iter().all(|n| {
                    let l = n.local();
                    !l.chosen || chosen.contains(&(l.value_id, intern(&l.value)))
                })
            },
        )
        .property(
            Expectation::Always,
            "the core never refuses a step the glue expects to succeed",
            |_, s| s.actor_states.iter().all(|n| n.fault.is_none()),
        )
        .property(Expectation::Always, "local records stay valid", |_, s| {
            s.actor_states.iter().all(|n| n.local().validate().is_ok())
        })
        // §5: at most one reserved number (1..=n) is ever used at an entry.
        .property(
            Expectation::Always,
            "at most one reserved ballot in use",
            |_, s| {
                let reserved: BTreeSet<Ballot> = s
                    .actor_states
                    .iter()
                    .flat_map(|n| {
                        let l = n.local();
                        n.held.iter().map(|v| v.0).chain([l.prepared, l.accepted])
                    })
                    .filter(|&b| b >= 1 && b <= N as Ballot)
                    .collect();
                reserved.len() <= 1
            },
        )
        // Non-vacuity.
        .property(Expectation::Sometimes, "v1 is chosen", |_, s| {
            chosen_values(s).iter().any(|&(_, v)| v == VALUES[0])
        })
        .property(Expectation::Sometimes, "v2 is chosen", |_, s| {
            chosen_values(s).iter().any(|&(_, v)| v == VALUES[1])
        })
        .property(
            Expectation::Sometimes,
            "the fast-path ballot is chosen",
            |_, s| chosen_votes(s).any(|(b, _, _)| b == 1),
        )
        .property(
            Expectation::Sometimes,
            "a value is chosen under the other proposer's ballot (adopted in phase 1)",
            |_, s| {
                chosen_votes(s).any(|(b, _, v)| {
                    paxos::ballot_owner(b, N).map(|o| VALUES[o as usize]) != Some(v)
                })
            },
        )
        .property(
            Expectation::Sometimes,
            "some acceptor accepts a retry ballot (above 6)",
            |_, s| votes(s).keys().any(|&(b, _, _)| b > 6),
        )
        .property(
            Expectation::Sometimes,
            "a node restarts holding an acceptance",
            |scn, s| {
                scn.cfg.crashes.iter().all(|&c| c == 0)
                    || s.actor_states.iter().any(|n| n.restarted_holding)
            },
        )
        .property(
            Expectation::Sometimes,
            "every node learns the chosen value",
            |_, s| s.actor_states.iter().all(|n| n.local().chosen),
        )
}

fn report(what: &str, c: &impl Checker<Sys>, start: Instant) {
    eprintln!(
        "{what}: {} unique states ({} generated), max depth {}, {:.1?}",
        c.unique_state_count(),
        c.state_count(),
        c.max_depth(),
        start.elapsed()
    );
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[test]
fn model_check_exhaustive_with_at_most_3_messages_in_flight() {
    let start = Instant::now();
    let checker = model(SMALL).checker().threads(threads()).spawn_bfs().join();
    report("exhaustive (<= 3 in flight)", &checker, start);
    checker.assert_properties();
}

#[test]
fn model_check_all_short_executions_two_prepares_each() {
    let start = Instant::now();
    let scn = Scenario {
        prepares: [2, 2],
        fast_path: true,
        max_in_flight: 4,
        crashes: [0, 0, 0],
        mutation: Mutation::None,
    };
    // One thread: BFS order is then exact, so every state is first generated at its
    // shortest depth. Depth 1 is the initial state; states at the target depth are not
    // checked, hence + 2.
    let checker = model(scn)
        .checker()
        .threads(1)
        .target_max_depth(SHORT_STEPS + 2)
        .spawn_bfs()
        .join();
    report("all executions of <= SHORT_STEPS steps", &checker, start);
    checker.assert_properties();
}

/// The fast-path proposer and the pure acceptor each crash and restart once, at any
/// point: only the durable record survives. (Letting all three crash took 200 s in
/// release here; this bound keeps the check in CI.)
const CRASHES: Scenario = Scenario {
    crashes: [1, 0, 1],
    ..SMALL
};

#[test]
fn model_check_exhaustive_with_the_proposer_and_an_acceptor_crashing() {
    let start = Instant::now();
    let checker = model(CRASHES)
        .checker()
        .threads(threads())
        .spawn_bfs()
        .join();
    report("exhaustive with crashes (<= 3 in flight)", &checker, start);
    checker.assert_properties();
}

fn assert_caught(mutation: Mutation) {
    assert_caught_in(Scenario { mutation, ..SMALL });
}

fn assert_caught_in(scn: Scenario) {
    let mutation = scn.mutation;
    let start = Instant::now();
    let checker = model(scn)
        .checker()
        .threads(threads())
        .finish_when(HasDiscoveries::AnyOf([AT_MOST_ONE_CHOSEN].into()))
        .spawn_bfs()
        .join();
    report(&format!("{mutation:?}"), &checker, start);
    let path = checker
        .discovery(AT_MOST_ONE_CHOSEN)
        .unwrap_or_else(|| panic!("{mutation:?}: no two chosen values found"));
    let last = path.last_state().clone();
    eprintln!("counterexample ({mutation:?}):");
    for a in path.into_actions() {
        eprintln!("  {a:?}");
    }
    assert!(chosen_values(&last).len() >= 2);
}

#[test]
fn model_check_mutated_glue_is_caught_accept_without_majority() {
    assert_caught(Mutation::AcceptWithoutMajority);
}

#[test]
fn model_check_mutated_glue_is_caught_propose_own_value() {
    assert_caught(Mutation::ProposeOwnValue);
}

#[test]
fn model_check_mutated_glue_is_caught_accepts_not_persisted() {
    assert_caught_in(Scenario {
        mutation: Mutation::AcceptsNotPersisted,
        ..CRASHES
    });
}
