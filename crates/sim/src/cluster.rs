//! A whole cluster of the consensus core in one thread, driven from a seed.
//!
//! Everything that would be I/O is an event in one priority queue ordered by
//! (virtual time, sequence number): message deliveries, disk completions, timer
//! ticks, client steps and faults. The same seed always gives the same run.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use bytes::Bytes;
use paxos::rng::Rng;
use paxos::{
    Config, Entity, EntryId, Event, Message, Mutation, NodeId, Outcome, ProbeSummary, Record,
};

use crate::linearizability::{check_register, Op, OpKind};

/// What one simulated run does.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub replicas: u8,
    pub entities: u32,
    pub clients: u32,
    /// Operations per client during the fault phase.
    pub ops_per_client: u32,
    /// Operations per client after everything is healed (must all finish).
    pub ops_after_heal: u32,
    /// Length of the fault phase in virtual milliseconds.
    pub fault_ms: u64,
    pub faults: Faults,
    pub mutation: Mutation,
    /// Check that durable records never go back (off to let a mutation reach the
    /// end-to-end checks).
    pub check_monotonic: bool,
    pub trace: bool,
    /// Evict idle entities now and then (keeping probe summaries).
    pub evict: bool,
}

/// Which faults are injected during the fault phase.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Per-mille probability that a message is dropped.
    pub drop_permille: u64,
    /// Per-mille probability that a message is delivered twice.
    pub dup_permille: u64,
    /// Maximum extra delay of a message (reordering), ms.
    pub max_delay_ms: u64,
    pub partitions: bool,
    pub one_way_partitions: bool,
    pub crashes: bool,
    /// Disk completions take up to this long (ms) instead of up to 2 ms.
    pub slow_disk_ms: u64,
    /// Some restarts come back with an empty disk.
    pub wipes: bool,
}

impl Faults {
    pub fn all() -> Self {
        Self {
            drop_permille: 100,
            dup_permille: 50,
            max_delay_ms: 30,
            partitions: true,
            one_way_partitions: true,
            crashes: true,
            slow_disk_ms: 40,
            wipes: true,
        }
    }
}

impl SimConfig {
    pub fn new(seed: u64, replicas: u8) -> Self {
        Self {
            seed,
            replicas,
            entities: 4,
            clients: 8,
            ops_per_client: 25,
            ops_after_heal: 4,
            fault_ms: 5_000,
            faults: Faults::all(),
            mutation: Mutation::None,
            check_monotonic: true,
            trace: false,
            evict: true,
        }
    }
}

/// The result of one run.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub failure: Option<String>,
    pub trace: Vec<String>,
    pub ops_ok: u64,
    pub ops_unknown: u64,
    pub messages: u64,
    pub crashes: u64,
    pub wipes: u64,
    pub evictions: u64,
    /// Read probes answered by an evicted entity's summary.
    pub summary_answers: u64,
    pub end_ms: u64,
}

type EntityNo = u32;

#[derive(Clone, Debug)]
enum Ev {
    Deliver(EntityNo, Message),
    DiskDone {
        node: NodeId,
        epoch: u32,
    },
    Tick,
    ClientNext(u32),
    Fault,
    Heal,

    Restart(NodeId),
    /// Restart with an empty disk.
    RestartWiped(NodeId),
}

/// A client request waiting at a node.
#[derive(Clone, Debug)]
struct Req {
    client: u32,
    ent: EntityNo,
    op: usize,
    write: Option<u64>,
    attempts: u32,
}

/// A persist issued but not yet durable: (entity, seq, records, trim_below).
type PendingPersist = (EntityNo, u64, Vec<(EntryId, Record)>, EntryId);

#[derive(Default)]
struct Node {
    up: bool,
    epoch: u32,
    entities: BTreeMap<EntityNo, Entity>,
    /// Register value (a write's id) of each entity, from the last Apply.
    values: BTreeMap<EntityNo, State>,
    durable: BTreeMap<(EntityNo, EntryId), Record>,
    /// Persists issued but not yet durable, FIFO: (entity, seq, records, trim_below).
    disk: VecDeque<PendingPersist>,
    disk_busy_until: u64,
    queues: BTreeMap<EntityNo, VecDeque<Req>>,
    inflight: BTreeMap<EntityNo, Req>,
    /// Restarted after a disk wipe: entities follow the rejoin rule.
    rejoining: bool,
    /// Entities evicted from memory, with what answers read probes for them (as the
    /// shard does under its memory budget).
    summaries: BTreeMap<EntityNo, ProbeSummary>,
}

struct Client {
    node: NodeId,
    done: u32,
    busy: bool,
}

/// The simulated world.
pub struct Sim {
    cfg: SimConfig,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    evs: Vec<Option<Ev>>,
    nodes: Vec<Node>,
    clients: Vec<Client>,
    /// blocked[from][to]: messages on this link are lost.
    blocked: Vec<Vec<bool>>,
    healed: bool,
    heal_at: u64,
    history: BTreeMap<EntityNo, Vec<Op>>,
    /// (entity) per client op index into history
    chosen: BTreeMap<(EntityNo, EntryId), u64>,
    next_value: u64,
    next_token: u64,
    report: SimReport,
    faults_active: bool,
    /// The first round of final reads, where a rejoined node may refuse.
    final_warmup: bool,
    /// Write count of each chosen state, per (entity, entry).
    seqs: BTreeMap<(EntityNo, EntryId), u64>,
    /// Nodes that ever restarted with a wiped disk.
    wiped: std::collections::BTreeSet<NodeId>,
}

const TICK_MS: u64 = 5;
const OP_TIMEOUT_MS: u64 = 1_500;
const MAX_ATTEMPTS: u32 = 8;
const QUEUE_LIMIT: usize = 64;

impl Sim {
    pub fn new(cfg: SimConfig) -> Self {
        let n = cfg.replicas as usize;
        let mut rng = Rng::new(cfg.seed);
        let nodes = (0..n)
            .map(|_| Node {
                up: true,
                ..Node::default()
            })
            .collect();
        let clients = (0..cfg.clients)
            .map(|_| Client {
                node: rng.below(n as u64) as NodeId,
                done: 0,
                busy: false,
            })
            .collect();
        Self {
            heal_at: cfg.fault_ms,
            cfg,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            evs: Vec::new(),
            nodes,
            clients,
            blocked: vec![vec![false; n]; n],
            healed: false,
            history: BTreeMap::new(),
            chosen: BTreeMap::new(),
            next_value: 1,
            next_token: 1,
            report: SimReport::default(),
            faults_active: true,
            wiped: std::collections::BTreeSet::new(),
            seqs: BTreeMap::new(),
            final_warmup: false,
        }
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        let idx = self.evs.len();
        self.evs.push(Some(ev));
        self.queue.push(Reverse((t, self.seq, idx)));
    }

    fn trace(&mut self, line: impl FnOnce() -> String) {
        if self.cfg.trace {
            let l = format!("{:>6}ms {}", self.now, line());
            self.report.trace.push(l);
        }
    }

    fn fail(&mut self, why: String) {
        if self.report.failure.is_none() {
            if self.cfg.trace {
                let mut lines = Vec::new();
                for (x, node) in self.nodes.iter().enumerate() {
                    for (ent, e) in &node.entities {
                        lines.push(format!(
                            "  state: node {x} e{ent} applied {} max_chosen {} rejoining {} idle {} timer {:?} next {:?}",
                            e.applied(),
                            e.max_chosen(),
                            e.is_rejoining(),
                            e.is_idle(),
                            e.poll_timeout(),
                            e.local_record(e.applied() + 1).map(|r| (r.prepared, r.promised, r.accepted, r.chosen))
                        ));
                    }
                }
                self.report.trace.extend(lines);
            }
            self.trace(|| format!("VIOLATION: {why}"));
            self.report.failure = Some(why);
        }
    }

    fn paxos_config(&self, me: NodeId) -> Config {
        let mut c = Config::new(self.cfg.replicas, me);
        c.mutation = self.cfg.mutation;
        c
    }

    /// Run to the end and check the history.
    pub fn run(mut self) -> SimReport {
        self.at(0, Ev::Tick);
        for c in 0..self.cfg.clients {
            let t = self.rng.below(20);
            self.at(t, Ev::ClientNext(c));
        }
        if self.cfg.faults.partitions || self.cfg.faults.crashes {
            self.at(50, Ev::Fault);
        }
        self.at(self.heal_at, Ev::Heal);
        let horizon = self.heal_at + 60_000;
        while let Some(Reverse((t, _, idx))) = self.queue.pop() {
            if self.report.failure.is_some() {
                break;
            }
            if t > horizon {
                self.fail(format!(
                    "liveness: still running at {t} ms (heal at {})",
                    self.heal_at
                ));
                break;
            }
            self.now = t;
            let Some(ev) = self.evs[idx].take() else {
                continue;
            };
            let is_tick = matches!(ev, Ev::Tick);
            match ev {
                Ev::Deliver(ent, msg) => self.deliver(ent, msg),
                Ev::DiskDone { node, epoch } => self.disk_done(node, epoch),
                Ev::Tick => self.tick(),
                Ev::ClientNext(c) => self.client_next(c),
                Ev::Fault => self.fault(),
                Ev::Heal => self.heal(),

                Ev::Restart(n) => self.restart(n, false),
                Ev::RestartWiped(n) => self.restart(n, true),
            }
            if self.healed && is_tick && self.all_clients_done() && self.queue_only_ticks() {
                break;
            }
        }
        if self.report.failure.is_none() {
            self.final_checks();
        }
        self.report.end_ms = self.now;
        self.report
    }

    fn queue_only_ticks(&self) -> bool {
        self.queue.iter().all(|Reverse((_, _, i))| {
            matches!(self.evs[*i], None | Some(Ev::Tick) | Some(Ev::Fault))
        }) && self
            .nodes
            .iter()
            .all(|n| n.inflight.is_empty() && n.disk.is_empty())
    }

    fn all_clients_done(&self) -> bool {
        self.clients
            .iter()
            .all(|c| !c.busy && c.done >= self.cfg.ops_per_client + self.cfg.ops_after_heal)
    }

    // ---- faults --------------------------------------------------------------------

    fn fault(&mut self) {
        if self.healed {
            return;
        }
        let n = self.cfg.replicas as u64;
        let f = &self.cfg.faults;
        let (partitions, one_way, crashes) = (f.partitions, f.one_way_partitions, f.crashes);
        match self.rng.below(6) {
            0 | 1 if partitions => {
                // Isolate one node (symmetric), or heal all links.
                for row in self.blocked.iter_mut() {
                    row.iter_mut().for_each(|b| *b = false);
                }
                if self.rng.below(3) > 0 {
                    let x = self.rng.below(n) as usize;
                    for o in 0..n as usize {
                        if o != x {
                            self.blocked[x][o] = true;
                            self.blocked[o][x] = true;
                        }
                    }
                    self.trace(|| format!("partition: isolate {x}"));
                } else {
                    self.trace(|| "partition: heal".into());
                }
            }
            2 if one_way => {
                let a = self.rng.below(n) as usize;
                let b = (a + 1 + self.rng.below(n - 1) as usize) % n as usize;
                self.blocked[a][b] = true;
                self.trace(|| format!("partition: one-way {a} -> {b}"));
            }
            3 | 4 if crashes => {
                let x = self.rng.below(n) as NodeId;
                if self.nodes[x as usize].up {
                    self.crash(x);
                    let back = self.now + 20 + self.rng.below(400);
                    // One restart in four finds its disk wiped — on at most n - q distinct
                    // nodes: wiping a majority of disks can lose chosen values, and the
                    // wiped nodes cannot vote on entries they forgot.
                    let max_wiped = n as usize - paxos::quorum(n as u8);
                    let may_wipe = self.wiped.contains(&x) || self.wiped.len() < max_wiped;
                    if self.cfg.faults.wipes && may_wipe && self.rng.below(4) == 0 {
                        self.wiped.insert(x);
                        self.at(back, Ev::RestartWiped(x));
                    } else {
                        self.at(back, Ev::Restart(x));
                    }
                }
            }
            _ => {}
        }
        let next = self.now + 50 + self.rng.below(250);
        if next < self.heal_at {
            self.at(next, Ev::Fault);
        }
    }

    fn heal(&mut self) {
        self.trace(|| "heal: all links up, all nodes up, no loss".into());
        self.healed = true;
        self.faults_active = false;
        for row in self.blocked.iter_mut() {
            row.iter_mut().for_each(|b| *b = false);
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up {
                self.restart(i as NodeId, false);
            }
        }
    }

    fn crash(&mut self, x: NodeId) {
        let node = &mut self.nodes[x as usize];
        if !node.up {
            return;
        }
        node.up = false;
        node.epoch += 1;
        node.entities.clear();
        node.values.clear();
        node.summaries.clear();
        node.disk.clear();
        node.disk_busy_until = 0;
        let lost: Vec<Req> = std::mem::take(&mut node.inflight)
            .into_values()
            .chain(std::mem::take(&mut node.queues).into_values().flatten())
            .collect();
        self.report.crashes += 1;
        self.trace(|| format!("crash node {x}, unsynced persists lost"));
        for req in lost {
            self.respond(req, None, true);
        }
    }

    fn restart(&mut self, x: NodeId, wiped: bool) {
        let ignore_wipe = self.cfg.mutation == Mutation::IgnoreWipe;
        let node = &mut self.nodes[x as usize];
        if node.up {
            return;
        }
        node.up = true;
        if wiped {
            node.durable.clear();
            // The operator restarts a wiped node in rejoin mode (it stays in it).
            node.rejoining = !ignore_wipe;
            self.report.wipes += 1;
        }
        self.trace(|| {
            format!(
                "restart node {x}{}",
                if wiped { " with a wiped disk" } else { "" }
            )
        });
    }

    // ---- node plumbing -------------------------------------------------------------

    /// The entity at a node, restored from its durable records on first touch.
    fn entity(&mut self, x: NodeId, ent: EntityNo) -> Option<&mut Entity> {
        if !self.nodes[x as usize].entities.contains_key(&ent) {
            let records: Vec<(EntryId, Record)> = self.nodes[x as usize]
                .durable
                .range((ent, 0)..=(ent, EntryId::MAX))
                .map(|(&(_, e), r)| (e, r.clone()))
                .collect();
            let seed = self.rng.next_u64();
            let mut cfg = self.paxos_config(x);
            // Homes vary by entity, as in the server (a hash of the entity there).
            cfg.home = (ent as u64 % self.cfg.replicas as u64) as NodeId;
            let entity = match Entity::restore(cfg, seed, records) {
                Ok(mut e) => {
                    if self.nodes[x as usize].rejoining {
                        e.rejoin();
                    }
                    e
                }
                Err(e) => {
                    self.fail(format!("node {x} entity {ent}: restore failed: {e}"));
                    return None;
                }
            };
            self.nodes[x as usize].summaries.remove(&ent);
            self.nodes[x as usize].entities.insert(ent, entity);
            self.drain(x, ent);
        }
        self.nodes[x as usize].entities.get_mut(&ent)
    }

    fn drain(&mut self, x: NodeId, ent: EntityNo) {
        loop {
            let Some(e) = self.nodes[x as usize].entities.get_mut(&ent) else {
                return;
            };
            let Some(ev) = e.poll_event() else { return };
            match ev {
                Event::Persist {
                    seq,
                    records,
                    trim_below,
                } => {
                    let slow = self.faults_active
                        && self.cfg.faults.slow_disk_ms > 0
                        && self.rng.below(10) == 0;
                    let lat = if slow {
                        self.rng.below(self.cfg.faults.slow_disk_ms) + 1
                    } else {
                        self.rng.below(2) + 1
                    };
                    let node = &mut self.nodes[x as usize];
                    node.disk.push_back((ent, seq, records, trim_below));
                    let done = node.disk_busy_until.max(self.now) + lat;
                    node.disk_busy_until = done;
                    let epoch = node.epoch;
                    self.at(done, Ev::DiskDone { node: x, epoch });
                }
                Event::Send(m) => self.send(ent, m),
                Event::Apply {
                    entry,
                    value_id,
                    value,
                    ..
                } => {
                    let v = State::decode(&value, entry);
                    self.trace(|| {
                        format!(
                            "node {x} e{ent} apply entry {entry} = {:?} (vid {value_id})",
                            v.value
                        )
                    });
                    if let Some(&prev) = self.chosen.get(&(ent, entry)) {
                        if prev != value_id {
                            self.fail(format!(
                                "agreement: entity {ent} entry {entry}: node {x} applied value id {value_id}, another node {prev}"
                            ));
                        }
                    } else {
                        self.chosen.insert((ent, entry), value_id);
                    }
                    // Each chosen state derives from the one chosen just before it.
                    self.seqs.insert((ent, entry), v.seq);
                    if let Some(&prev) = self.seqs.get(&(ent, entry.wrapping_sub(1))) {
                        if v.seq != prev && v.seq != prev + 1 {
                            self.fail(format!(
                                "derivation: entity {ent} entry {entry}: state has {} writes, the state at entry {} had {prev}",
                                v.seq,
                                entry - 1
                            ));
                        }
                    }
                    self.nodes[x as usize].values.insert(ent, v);
                }
                Event::Done { token: _, outcome } => self.on_done(x, ent, outcome),
            }
        }
    }

    fn send(&mut self, ent: EntityNo, m: Message) {
        self.report.messages += 1;
        if self.cfg.trace {
            let r = (
                &m.sender.prepared,
                m.sender.promised,
                m.sender.accepted,
                m.sender.value_id,
                m.sender.chosen,
                m.sender.elided,
            );
            let v = (
                m.receiver.promised,
                m.receiver.accepted,
                m.receiver.value_id,
            );
            self.trace(|| {
                format!(
                    "send e{ent} {}->{} entry {} {:?} catchup {} rec {:?} view {:?} mc {}",
                    m.from, m.to, m.entry, m.kind, m.catchup, r, v, m.max_chosen
                )
            });
        }
        let (from, to) = (m.from as usize, m.to as usize);
        if self.blocked[from][to] {
            return;
        }
        let f = self.cfg.faults.clone();
        let active = self.faults_active;
        if active && self.rng.below(1000) < f.drop_permille {
            return;
        }
        let delay = 1 + if active {
            self.rng.below(f.max_delay_ms + 1)
        } else {
            self.rng.below(2)
        };
        if active && self.rng.below(1000) < f.dup_permille {
            let d2 = 1 + self.rng.below(f.max_delay_ms + 1);
            self.at(self.now + d2, Ev::Deliver(ent, m.clone()));
        }
        self.at(self.now + delay, Ev::Deliver(ent, m));
    }

    fn deliver(&mut self, ent: EntityNo, m: Message) {
        let to = m.to;
        if !self.nodes[to as usize].up || self.blocked[m.from as usize][to as usize] {
            return;
        }
        let now = self.now;
        let node = &self.nodes[to as usize];
        if !node.entities.contains_key(&ent) {
            let answer = node
                .summaries
                .get(&ent)
                .and_then(|s| s.answer(to, self.cfg.replicas, &m));
            if let Some(answer) = answer {
                self.report.summary_answers += 1;
                self.trace(|| format!("node {to} e{ent} answers from its probe summary"));
                self.send(ent, answer);
                return;
            }
        }
        if let Some(e) = self.entity(to, ent) {
            e.handle_message(now, m);
        }
        self.drain(to, ent);
    }

    fn disk_done(&mut self, x: NodeId, epoch: u32) {
        let node = &mut self.nodes[x as usize];
        if node.epoch != epoch || !node.up {
            return;
        }
        let Some((ent, seq, records, trim)) = node.disk.pop_front() else {
            return;
        };
        let mut violations = Vec::new();
        let check = self.cfg.check_monotonic;
        // A persist carries every record the entity holds and replaces the ones on
        // disk (storage writes the row without reading it): one that is durable at or
        // above the trim point must be in it.
        let held: Vec<EntryId> = node
            .durable
            .range((ent, trim)..=(ent, EntryId::MAX))
            .map(|(&(_, e), _)| e)
            .collect();
        for e in held {
            if !records.iter().any(|(re, _)| *re == e) {
                violations.push(format!(
                    "whole persist: node {x} entity {ent}: durable record at entry {e} missing from persist {seq}"
                ));
            }
        }
        for (e, r) in records {
            if let Some(old) = node.durable.get(&(ent, e)).filter(|_| check) {
                // Adopting a chosen record whose value differs from the one accepted
                // here takes that record's accepted number, which may be lower
                // (`EntryView::fold`): a chosen record is final, and `is_newer_than`
                // orders it above every unchosen one.
                let adopts_chosen = r.chosen && !old.chosen && r.value_id != old.value_id;
                if r.promised < old.promised
                    || (r.accepted < old.accepted && !adopts_chosen)
                    || r.prepared < old.prepared
                {
                    violations.push(format!(
                        "monotonicity: node {x} entity {ent} entry {e}: durable record went back from {:?} to {:?}",
                        (old.prepared, old.promised, old.accepted),
                        (r.prepared, r.promised, r.accepted)
                    ));
                }
                if old.chosen && (!r.chosen || r.value_id != old.value_id) {
                    violations.push(format!(
                        "stability: node {x} entity {ent} entry {e}: chosen record changed"
                    ));
                }
            }
            node.durable.insert((ent, e), r);
        }
        // PaxosLog-as-value: drop records below the applied entry.
        let stale: Vec<(EntityNo, EntryId)> = node
            .durable
            .range((ent, 0)..(ent, trim))
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            node.durable.remove(&k);
        }
        // A restart rebuilds the state from the highest record flagged chosen, so the
        // record a trim leaves at the bottom must carry its flag on disk. (A core that
        // wrote chosen flags lazily and trimmed past them failed this at once, and
        // agreement some seeds later: the restarted node voted again at entries it
        // had forgotten.)
        if trim > 0 && !node.durable.get(&(ent, trim)).is_some_and(|r| r.chosen) {
            violations.push(format!(
                "trim: node {x} entity {ent}: log trimmed below {trim} without that entry durably chosen"
            ));
        }
        for v in violations {
            self.fail(v);
        }
        let now = self.now;
        if let Some(e) = self.nodes[x as usize].entities.get_mut(&ent) {
            e.persisted(now, seq);
            self.drain(x, ent);
        }
    }

    fn tick(&mut self) {
        let now = self.now;
        for x in 0..self.nodes.len() {
            if !self.nodes[x].up {
                continue;
            }
            let due: Vec<EntityNo> = self.nodes[x]
                .entities
                .iter()
                .filter(|(_, e)| e.poll_timeout().is_some_and(|t| t <= now))
                .map(|(&k, _)| k)
                .collect();
            for ent in due {
                if let Some(e) = self.nodes[x].entities.get_mut(&ent) {
                    e.handle_timeout(now);
                }
                self.drain(x as NodeId, ent);
                // A timer that does not move past `now` would make a runtime spin.
                let stuck = self.nodes[x]
                    .entities
                    .get(&ent)
                    .is_some_and(|e| e.poll_timeout().is_some_and(|t| t <= now));
                if stuck {
                    self.fail(format!(
                        "timer: node {x} entity {ent} still due after handle_timeout at {now}"
                    ));
                }
            }
        }
        self.evict();
        self.at(now + TICK_MS, Ev::Tick);
    }

    /// Drop some idle, quiescent entities from memory, keeping their probe summaries,
    /// as a shard over its memory budget does: the next touch restores them from
    /// their durable records, and a read probe before that is answered by the summary.
    fn evict(&mut self) {
        if !self.cfg.evict {
            return;
        }
        for x in 0..self.nodes.len() {
            let node = &self.nodes[x];
            if !node.up {
                continue;
            }
            let idle: Vec<(EntityNo, Option<ProbeSummary>)> = node
                .entities
                .iter()
                .filter(|(ent, e)| {
                    e.is_quiescent()
                        && !node.inflight.contains_key(ent)
                        && node.queues.get(ent).is_none_or(|q| q.is_empty())
                        && !node.disk.iter().any(|p| p.0 == **ent)
                })
                .map(|(&ent, e)| (ent, e.probe_summary()))
                .collect();
            for (ent, summary) in idle {
                if self.rng.below(8) != 0 {
                    continue;
                }
                let node = &mut self.nodes[x];
                node.entities.remove(&ent);
                node.values.remove(&ent);
                if let Some(s) = summary {
                    node.summaries.insert(ent, s);
                }
                self.report.evictions += 1;
                self.trace(|| format!("node {x} e{ent} evicted, summary {summary:?}"));
            }
        }
    }

    // ---- clients -------------------------------------------------------------------

    fn client_next(&mut self, c: u32) {
        let total = self.cfg.ops_per_client + self.cfg.ops_after_heal;
        let cl = &self.clients[c as usize];
        if cl.busy || cl.done >= total {
            return;
        }
        if cl.done >= self.cfg.ops_per_client && !self.healed {
            return; // the after-heal ops start at heal time
        }
        let n = self.cfg.replicas as u64;
        // Clients spread over replicas and fail over at random.
        if self.rng.below(3) == 0 {
            self.clients[c as usize].node = self.rng.below(n) as NodeId;
        }
        let x = self.clients[c as usize].node;
        let ent = self.rng.below(self.cfg.entities as u64) as EntityNo;
        let write = if self.rng.below(2) == 0 {
            let v = self.next_value;
            self.next_value += 1;
            Some(v)
        } else {
            None
        };
        let kind = match write {
            Some(v) => OpKind::Write(v),
            None => OpKind::Read(None),
        };
        let h = self.history.entry(ent).or_default();
        h.push(Op {
            client: c,
            invoke: self.now,
            respond: None,
            kind,
        });
        let op = h.len() - 1;
        self.clients[c as usize].busy = true;
        self.trace(|| {
            format!(
                "client {c} -> node {x} e{ent} {:?}",
                write.map_or("read".into(), |v| format!("write {v}"))
            )
        });
        let req = Req {
            client: c,
            ent,
            op,
            write,
            attempts: 0,
        };
        if !self.nodes[x as usize].up {
            // Refused before it reached the system: it did nothing.
            self.respond_refused(ent, req);
            return;
        }
        let q = self.nodes[x as usize].queues.entry(ent).or_default();
        if q.len() >= QUEUE_LIMIT {
            self.respond_refused(ent, req);
            return;
        }
        q.push_back(req);
        self.pump(x, ent);
    }

    /// Start the next queued request of an entity if it is idle.
    fn pump(&mut self, x: NodeId, ent: EntityNo) {
        if self.nodes[x as usize].inflight.contains_key(&ent) {
            return;
        }
        let Some(req) = self.nodes[x as usize]
            .queues
            .get_mut(&ent)
            .and_then(|q| q.pop_front())
        else {
            return;
        };
        let now = self.now;
        let token = self.next_token;
        self.next_token += 1;
        let deadline = now + OP_TIMEOUT_MS;
        let write = req.write;
        self.nodes[x as usize].inflight.insert(ent, req);
        let Some(_) = self.entity(x, ent) else { return };
        let state = self.nodes[x as usize]
            .values
            .get(&ent)
            .cloned()
            .unwrap_or_default();
        // The runtime raises a write's retry delay while rounds are slow (up to 25 ×
        // `retry_ms`); any delay must be safe, so pick one at random.
        let retry_ms = Config::new(self.cfg.replicas, x).retry_ms * (1 + self.rng.below(25));
        let Some(e) = self.nodes[x as usize].entities.get_mut(&ent) else {
            return;
        };
        let started = match write {
            Some(v) => {
                let value = state.with_write(v).encode();
                e.set_write_retry_ms(retry_ms);
                e.write(now, token, value, vec![v], deadline)
            }
            None => e.read(now, token, deadline),
        };
        if started.is_err() {
            self.fail(format!(
                "node {x} entity {ent}: busy although no request in flight"
            ));
        }
        self.drain(x, ent);
    }

    fn on_done(&mut self, x: NodeId, ent: EntityNo, outcome: Outcome) {
        let Some(mut req) = self.nodes[x as usize].inflight.remove(&ent) else {
            return;
        };
        if req.client == u32::MAX {
            // The final convergence read. In the warm-up round a rejoined node may refuse
            // (its floor entry is in progress); the next round must succeed.
            if self.final_warmup && matches!(outcome, Outcome::Rejoining { .. }) {
                return;
            }
            if !matches!(outcome, Outcome::ReadOk { .. }) {
                self.fail(format!(
                    "liveness: final read at node {x} entity {ent} ended {outcome:?}"
                ));
            }
            return;
        }
        self.trace(|| format!("node {x} e{ent} client {} done {outcome:?}", req.client));
        match outcome {
            Outcome::Written { .. } => self.respond(req, None, false),
            Outcome::ReadOk { .. } => {
                let v = self.nodes[x as usize]
                    .values
                    .get(&ent)
                    .and_then(|s| s.value);
                self.respond(req, Some(v), false);
            }
            Outcome::Lost { .. } => {
                req.attempts += 1;
                if req.attempts < MAX_ATTEMPTS {
                    // Retry at the next entry, ahead of the queue.
                    self.nodes[x as usize]
                        .queues
                        .entry(ent)
                        .or_default()
                        .push_front(req);
                } else {
                    self.respond_refused(ent, req);
                }
            }
            Outcome::Superseded { entry } => {
                // The entity jumped past the write's entry: its recent-writes window
                // tells whether the write is in, definitely out, or unknown.
                let st = self.nodes[x as usize]
                    .values
                    .get(&ent)
                    .cloned()
                    .unwrap_or_default();
                let id = req.write.unwrap_or(0);
                if st.recent.contains(&id) {
                    self.respond(req, None, false);
                } else if st.entry.saturating_sub(entry) < RECENT as u64 {
                    req.attempts += 1;
                    if req.attempts < MAX_ATTEMPTS {
                        self.nodes[x as usize]
                            .queues
                            .entry(ent)
                            .or_default()
                            .push_front(req);
                    } else {
                        self.respond_refused(ent, req);
                    }
                } else {
                    self.respond(req, None, true);
                }
            }
            Outcome::Timeout => self.respond(req, None, true),
            // Refused before proposing: it did nothing.
            Outcome::Rejoining { .. } => self.respond_refused(ent, req),
        }
        self.pump(x, ent);
    }

    /// Record the response. `read`: the value a read returned; `unknown`: no answer.
    fn respond(&mut self, req: Req, read: Option<Option<u64>>, unknown: bool) {
        let ent = req.ent;
        if let Some(op) = self.history.get_mut(&ent).and_then(|h| h.get_mut(req.op)) {
            if !unknown {
                op.respond = Some(self.now);
                if let Some(v) = read {
                    op.kind = OpKind::Read(v);
                }
            }
        }
        if unknown {
            self.report.ops_unknown += 1;
            if self.healed && self.clients[req.client as usize].done >= self.cfg.ops_per_client {
                self.fail(format!(
                    "liveness: client {} op after heal ended without an answer",
                    req.client
                ));
            }
        } else {
            self.report.ops_ok += 1;
        }
        self.client_finished(req.client);
    }

    /// The request provably had no effect: drop it from the history.
    fn respond_refused(&mut self, ent: EntityNo, req: Req) {
        if let Some(op) = self.history.get_mut(&ent).and_then(|h| h.get_mut(req.op)) {
            // A refused write never took effect; a refused read observed nothing.
            op.kind = OpKind::Read(None);
            op.respond = None;
        }
        self.client_finished(req.client);
    }

    fn client_finished(&mut self, c: u32) {
        let cl = &mut self.clients[c as usize];
        cl.busy = false;
        cl.done += 1;
        let next = self.now + 1 + self.rng.below(10);
        let t = if cl.done == self.cfg.ops_per_client {
            next.max(self.heal_at)
        } else {
            next
        };
        self.at(t, Ev::ClientNext(c));
    }

    // ---- end of run ----------------------------------------------------------------

    fn final_checks(&mut self) {
        for (ent, h) in &self.history {
            if let Err(v) = check_register(h) {
                self.report.failure = Some(format!(
                    "linearizability: entity {ent} ({} ops):\n{}",
                    v.ops, v.detail
                ));
                return;
            }
        }
        // Convergence: every replica reads every entity and agrees. A warm-up round
        // first lets voters drive entries a rejoined node may not drive itself.
        self.final_warmup = true;
        for ent in 0..self.cfg.entities {
            for x in 0..self.cfg.replicas {
                let _ = self.final_read(x, ent);
            }
        }
        self.final_warmup = false;
        if self.report.failure.is_some() {
            return;
        }
        for ent in 0..self.cfg.entities {
            let mut seen: Option<(EntryId, Option<u64>)> = None;
            for x in 0..self.cfg.replicas {
                match self.final_read(x, ent) {
                    Ok(got) => match seen {
                        None => seen = Some(got),
                        Some(s) if s != got => {
                            self.report.failure = Some(format!(
                                "convergence: entity {ent}: node {x} has {got:?}, another node {s:?}"
                            ));
                            return;
                        }
                        _ => {}
                    },
                    Err(why) => {
                        self.report.failure = Some(format!(
                            "liveness: final read at node {x} entity {ent}: {why}"
                        ));
                        return;
                    }
                }
            }
        }
    }

    /// A read on a healed cluster, run to completion with no faults.
    fn final_read(&mut self, x: NodeId, ent: EntityNo) -> Result<(EntryId, Option<u64>), String> {
        let token = u64::MAX - 1;
        let now = self.now;
        let deadline = now + 5_000;
        let Some(e) = self.entity(x, ent) else {
            return Err("restore failed".into());
        };
        if e.read(now, token, deadline).is_err() {
            return Err("busy".into());
        }
        // Drive only this read: intercept its Done.
        self.nodes[x as usize].inflight.insert(
            ent,
            Req {
                client: u32::MAX,
                ent,
                op: usize::MAX,
                write: None,
                attempts: 0,
            },
        );
        let until = now + 10_000;
        while let Some(Reverse((t, _, idx))) = self.queue.pop() {
            if t > until || self.report.failure.is_some() {
                break;
            }
            self.now = t;
            let Some(ev) = self.evs[idx].take() else {
                continue;
            };
            match ev {
                Ev::Deliver(ent2, msg) => self.deliver(ent2, msg),
                Ev::DiskDone { node, epoch } => self.disk_done(node, epoch),
                Ev::Tick => self.tick(),
                _ => {}
            }
            if !self.nodes[x as usize].inflight.contains_key(&ent) {
                let e = self.nodes[x as usize]
                    .entities
                    .get(&ent)
                    .map_or(0, |e| e.applied());
                let v = self.nodes[x as usize]
                    .values
                    .get(&ent)
                    .and_then(|s| s.value);
                return Ok((e, v));
            }
        }
        Err(self
            .report
            .failure
            .clone()
            .unwrap_or_else(|| "did not finish".into()))
    }
}

/// How many recent write ids the register state remembers (request-id dedup window).
const RECENT: usize = 16;

/// The simulated entity state: a register plus the ids of the last writes, carried in
/// every chosen value (PaxosLog-as-value: each value is the whole state).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct State {
    value: Option<u64>,
    /// Number of writes in this state's history: a write proposes `seq + 1` of the
    /// state it was computed from, so a chosen state at `e` must have the `seq` of the
    /// state at `e - 1` plus one (a write) or plus zero (a no-op).
    seq: u64,
    recent: Vec<u64>,
    /// Entry this state was chosen at (not encoded; known from the Apply).
    entry: EntryId,
}

impl State {
    fn with_write(&self, v: u64) -> State {
        let mut recent = self.recent.clone();
        recent.push(v);
        if recent.len() > RECENT {
            recent.remove(0);
        }
        State {
            value: Some(v),
            seq: self.seq + 1,
            recent,
            entry: 0,
        }
    }

    fn encode(&self) -> Bytes {
        let mut b = Vec::with_capacity(8 * (1 + self.recent.len()));
        b.extend_from_slice(&self.value.unwrap_or(0).to_be_bytes());
        b.extend_from_slice(&self.seq.to_be_bytes());
        for r in &self.recent {
            b.extend_from_slice(&r.to_be_bytes());
        }
        Bytes::from(b)
    }

    fn decode(b: &[u8], entry: EntryId) -> State {
        let mut words = b.chunks_exact(8).map(|c| {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            u64::from_be_bytes(w)
        });
        let value = words.next().filter(|&v| v != 0);
        let seq = words.next().unwrap_or(0);
        State {
            value,
            seq,
            recent: words.collect(),
            entry,
        }
    }
}
