//! A shard: the entities that hash to one worker, with no locks and no I/O.
//!
//! # Calling protocol
//!
//! Inputs: [`Shard::submit`] (a client request), [`Shard::on_message`] (a peer
//! message), [`Shard::on_loaded`] (an entity's records read from storage),
//! [`Shard::on_persisted`] / [`Shard::on_persist_failed`] (a persist completed) and
//! [`Shard::tick`] (time passed). After each input drain [`Shard::poll`]:
//!
//! * `Output::Load`: read the entity's records and call `on_loaded`.
//! * `Output::Persist`: write the records durably (group commit), then call
//!   `on_persisted` — per entity, in `seq` order.
//! * `Output::Send`: send to a peer (loss is fine).
//! * `Output::Reply`: answer a client.
//!
//! Per entity, requests queue (bounded) behind the one in flight; consecutive writes
//! are executed together on the entity's state and proposed as one Paxos entry, and
//! consecutive reads share one check-empty round.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;

use bytes::Bytes;
use foldhash::fast::FixedState;
use paxos::{Config, Entity, EntryId, Event, Message, Outcome, Record};
use resp::{Command, Reply};

use crate::exec::{self, Access};
use crate::kv::KvState;
use crate::round_trip::RoundTrip;
use crate::summaries::Summaries;

/// Memory a cached entity costs beyond its payload (see the end of `settle`).
const ENTITY_OVERHEAD: usize = 2 << 10;
/// How many of the least recently filed entities an eviction pass copies out at once.
const EVICTION_CANDIDATES: usize = 64;
/// How many an eviction pass looks at in all. Every entity loaded since the last pass
/// is usually re-filed once before it can go (it was touched after it was filed), so
/// a pass must look at more than twice as many as a wake-up can load: with 64, a
/// preload of 10 M keys grew the cache to 5.6 GiB per node.
const EVICTION_SCAN_LIMIT: usize = 8192;

/// Reply while this node may not vote on an entity's next entry (wiped-disk rule).
/// Given before anything is proposed, so the write may be proposed elsewhere.
pub const REJOINING: &str =
    "TRYAGAIN this replica is recovering this key after a disk wipe; retry on another node";

/// Opaque id the runtime uses to route a reply back to its connection.
pub type ClientId = u64;

/// Limits and timings of one shard.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    pub paxos: Config,
    /// A client request fails with a timeout after this long.
    pub op_timeout_ms: u64,
    /// Entries a write may lose to other proposers before `-TRYAGAIN`.
    pub write_attempts: u32,
    /// Requests waiting per entity; more get `-BUSY`.
    pub max_queue: usize,
    /// Requests executed together in one entry.
    pub max_batch: usize,
    /// Approximate bytes of cached entities before idle ones are evicted.
    pub max_cached_bytes: usize,
    /// Peer messages kept per entity while it loads (newest win).
    pub max_parked_messages: usize,
    /// This node's disk was wiped: every entity follows the rejoin rule
    /// ([`paxos::Entity::rejoin`]).
    pub rejoin: bool,
    /// Catch-up messages this shard may send per second (a token bucket); beyond it
    /// they are dropped and re-sent later, so a lagging node cannot flood its peers.
    pub catchup_max_per_sec: u64,
    /// Probe summaries of evicted entities kept (see [`crate::summaries`]); 0 = off.
    pub max_probe_summaries: usize,
    /// Largest entity (name plus encoded state) a write may produce. Every Paxos
    /// message carrying the value (a catch-up message carries two) must fit in one
    /// peer frame: a larger value would be accepted here and never reach a peer, and,
    /// being accepted, would be proposed again by every later write of the entity,
    /// none of which could complete. Such a write fails with `-ERR` instead and is not
    /// proposed.
    pub max_state_bytes: usize,
}

/// [`ShardConfig::max_state_bytes`] by default: half the transport's default 16 MiB
/// frame, less room for the other messages of a batch (the server sets it from its
/// frame).
pub const DEFAULT_MAX_STATE_BYTES: usize = ((16 << 20) - (512 << 10)) / 2;

impl ShardConfig {
    pub fn new(paxos: Config) -> Self {
        Self {
            paxos,
            op_timeout_ms: 2_000,
            write_attempts: 8,
            max_queue: 1_024,
            max_batch: 256,
            max_cached_bytes: 256 << 20,
            max_parked_messages: 16,
            rejoin: false,
            catchup_max_per_sec: 20_000,
            max_probe_summaries: 0,
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
        }
    }
}

/// A client request on one entity: one command, or a MULTI/EXEC body.
#[derive(Clone, Debug)]
pub struct Request {
    pub cmds: Vec<Command>,
    /// Reply with one array (MULTI/EXEC).
    pub multi: bool,
    /// The connection accepts a possibly stale local read (READONLY).
    pub stale_ok: bool,
    /// Client-chosen request id for dedup of retried writes (0 = none).
    pub request_id: u64,
    /// WATCH: `(key, version)` pairs recorded by the connection (version 0 = missing).
    /// A MULTI/EXEC body runs only if every key still has its version; otherwise the
    /// reply is a null array and nothing changes. Keys belong to this entity.
    pub watch: Vec<(Bytes, u64)>,
}

impl Request {
    /// One command, no request id, no WATCH, linearizable.
    pub fn single(cmd: Command) -> Request {
        Request {
            cmds: vec![cmd],
            multi: false,
            stale_ok: false,
            request_id: 0,
            watch: Vec::new(),
        }
    }
}

/// An effect for the runtime.
#[derive(Clone, Debug)]
pub enum Output {
    Load {
        entity: Bytes,
    },
    Persist {
        entity: Bytes,
        seq: u64,
        records: Vec<(EntryId, Record)>,
        trim_below: EntryId,
    },
    Send {
        entity: Bytes,
        msg: Message,
    },
    Reply {
        client: ClientId,
        reply: Reply,
    },
}

/// Counters for metrics.
#[derive(Clone, Debug, Default)]
pub struct ShardStats {
    pub entities_cached: u64,
    pub cached_bytes: u64,
    pub evictions: u64,
    pub loads: u64,
    pub proposals: u64,
    pub fast_proposals: u64,
    pub conflicts: u64,
    pub reads: u64,
    pub local_reads: u64,
    pub busy_rejections: u64,
    pub timeouts: u64,
    pub persist_failures: u64,
    pub catchups: u64,
    pub catchups_dropped: u64,
    /// Entities that jumped ahead by a snapshot (the latest chosen state of a peer).
    pub recoveries: u64,
    /// Requests waiting in entity queues (at the time of the query).
    pub queued: u64,
    pub batched_requests: u64,
    pub duplicates: u64,
    /// Read probes answered from an evicted entity's summary, without a load.
    pub probes_from_summary: u64,
    /// Summaries kept (at the time of the query).
    pub probe_summaries: u64,
    /// A write round's first retry delay now, ms (see [`crate::round_trip`]).
    pub write_retry_ms: u64,
}

#[derive(Debug)]
struct Pending {
    client: ClientId,
    req: Request,
    deadline: u64,
    request_id: u64,
    attempts: u32,
}

#[derive(Debug)]
enum Batch {
    /// A write entry in flight with its precomputed replies.
    Write {
        token: u64,
        /// When its value went to the core (for the round-time estimate).
        started: u64,
        reqs: Vec<Pending>,
        replies: Vec<Reply>,
    },
    /// A read check in flight; `precomputed` holds replies of non-changing writes that
    /// are valid iff the check confirms `base_entry`.
    Read {
        token: u64,
        reqs: Vec<Pending>,
        precomputed: Option<Vec<Reply>>,
        base_entry: EntryId,
    },
}

struct Slot {
    core: Option<Entity>,
    /// The applied state, decoded. Stale while `undecoded` holds a later one.
    state: KvState,
    /// The last applied value, not yet decoded: a replica that only accepts writes
    /// proposed elsewhere never needs their states, so it decodes one only when a
    /// request here reads or changes the entity (decoding every applied value was a
    /// tenth of the shard's CPU on a write-only load, `benches/shard.rs`).
    undecoded: Option<Bytes>,
    queue: VecDeque<Pending>,
    batch: Option<Batch>,
    parked: VecDeque<Message>,
    /// Stamp of the last touch.
    lru: u64,
    /// Stamp under which the entity is filed in `Shard::lru` (at most `lru`).
    filed: u64,
    timer: Option<u64>,
    bytes: usize,
    /// Entry of the last applied state (None before the first Apply after a load).
    applied: Option<EntryId>,
}

/// Many entities on one worker. See the module docs for the protocol.
pub struct Shard {
    cfg: ShardConfig,
    /// Boxed: a `Slot` is over 600 bytes, and a table holding them inline copied
    /// every one of them into freshly faulted memory when it grew (at 100 k entities,
    /// a 300 ms pause of the shard with all three nodes pausing together under a
    /// uniform load).
    ///
    /// Keyed by foldhash seeded from the shard's seed: every operation looks its entity
    /// up several times, and SipHash (std's default) took 4 % of the shard's time in
    /// `benches/shard.rs`.
    slots: HashMap<Bytes, Box<Slot>, FixedState>,
    /// Cached entities by the stamp they were filed under. A touch only stamps the
    /// slot; eviction re-files an entity touched since it was filed when it reaches
    /// the front, so the front is the least recently used and a touch costs no
    /// B-tree work (moving the entity on each touch was two thirds of looking it
    /// up, `benches/shard.rs`).
    lru: BTreeMap<u64, Bytes>,
    timers: BTreeSet<(u64, Bytes)>,
    out: VecDeque<Output>,
    touch: u64,
    next_token: u64,
    next_request: u64,
    seed: u64,
    cached_bytes: usize,
    stats: ShardStats,
    catchup_tokens: u64,
    catchup_refill_at: u64,
    /// Peers the runtime sees connected (bit per node id), passed to each read.
    live_peers: u8,
    /// How evicted entities answer read probes without being loaded.
    summaries: Summaries,
    /// How long this shard's write rounds take: the cores' first retry delay.
    round_trip: RoundTrip,
}

/// The longest first retry delay of a write, in units of the configured `retry_ms`
/// (500 ms by default): a round slower than that is more likely lost than late.
const MAX_WRITE_RETRY_FACTOR: u64 = 25;

impl Shard {
    /// `seed` feeds the cores' randomness (jitter, read ids).
    pub fn new(cfg: ShardConfig, seed: u64) -> Self {
        Self {
            slots: HashMap::with_hasher(FixedState::with_seed(seed)),
            lru: BTreeMap::new(),
            timers: BTreeSet::new(),
            out: VecDeque::new(),
            touch: 0,
            next_token: 1,
            next_request: 1,
            seed,
            cached_bytes: 0,
            stats: ShardStats::default(),
            catchup_tokens: 0,
            catchup_refill_at: 0,
            live_peers: u8::MAX,
            summaries: Summaries::new(cfg.max_probe_summaries, seed),
            round_trip: RoundTrip::new(
                cfg.paxos.retry_ms,
                cfg.paxos.retry_ms.saturating_mul(MAX_WRITE_RETRY_FACTOR),
            ),
            cfg,
        }
    }

    /// Which peers are connected (bit `1 << id`): reads ask those first.
    pub fn set_live_peers(&mut self, mask: u8) {
        self.live_peers = mask;
    }

    pub fn stats(&self) -> ShardStats {
        let mut s = self.stats.clone();
        s.entities_cached = self.slots.len() as u64;
        s.cached_bytes = self.cached_bytes as u64;
        s.queued = self.slots.values().map(|sl| sl.queue.len() as u64).sum();
        s.probe_summaries = self.summaries.len() as u64;
        s.write_retry_ms = self.round_trip.retry_ms();
        s
    }

    /// The next effect to carry out.
    pub fn poll(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The earliest time `tick` has work.
    pub fn next_timer(&self) -> Option<u64> {
        self.timers.iter().next().map(|(t, _)| *t)
    }

    // ---- inputs --------------------------------------------------------------------

    /// A client request; every key of `req` belongs to `entity`.
    pub fn submit(
        &mut self,
        now: u64,
        wall_ms: i64,
        client: ClientId,
        entity: Bytes,
        req: Request,
    ) {
        let max_queue = self.cfg.max_queue;
        let slot = self.slot(&entity);
        if slot.queue.len() >= max_queue {
            self.stats.busy_rejections += 1;
            self.reply(
                client,
                Reply::error("BUSY too many requests queued for this entity"),
            );
            return;
        }
        let request_id = if req.request_id != 0 {
            req.request_id
        } else {
            // Node-unique: high byte is the acceptor id.
            self.next_request += 1;
            ((self.cfg.paxos.me as u64) << 56) | (self.next_request & ((1 << 56) - 1))
        };
        let deadline = now + self.cfg.op_timeout_ms;
        let slot = self.slot(&entity);
        slot.queue.push_back(Pending {
            client,
            req,
            deadline,
            request_id,
            attempts: 0,
        });
        self.settle(now, wall_ms, &entity);
    }

    /// A peer message about `entity`.
    pub fn on_message(&mut self, now: u64, wall_ms: i64, entity: Bytes, msg: Message) {
        if !self.slots.contains_key(&entity) {
            let (me, n) = (self.cfg.paxos.me, self.cfg.paxos.n);
            let answer = self
                .summaries
                .get(&entity)
                .and_then(|s| s.answer(me, n, &msg));
            if let Some(answer) = answer {
                self.stats.probes_from_summary += 1;
                self.out.push_back(Output::Send {
                    entity,
                    msg: answer,
                });
                return;
            }
        }
        let max_parked = self.cfg.max_parked_messages;
        let slot = self.slot(&entity);
        match &mut slot.core {
            Some(core) => core.handle_message(now, msg),
            None => {
                if slot.parked.len() >= max_parked {
                    slot.parked.pop_front();
                }
                slot.parked.push_back(msg);
                return;
            }
        }
        self.settle(now, wall_ms, &entity);
    }

    /// The records of `entity` were read (or could not be).
    pub fn on_loaded(
        &mut self,
        now: u64,
        wall_ms: i64,
        entity: Bytes,
        records: Result<Vec<(EntryId, Record)>, String>,
    ) {
        let Some(slot) = self.slots.get_mut(&entity) else {
            return;
        };
        if slot.core.is_some() {
            return;
        }
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut cfg = self.cfg.paxos.clone();
        cfg.home = crate::route::home(&entity, cfg.n);
        let restored =
            records.and_then(|r| Entity::restore(cfg, self.seed, r).map_err(|e| e.to_string()));
        match restored {
            Ok(mut core) => {
                if self.cfg.rejoin {
                    core.rejoin();
                }
                let slot = self.slots.get_mut(&entity).expect("checked above");
                slot.core = Some(core);
                let parked: Vec<Message> = slot.parked.drain(..).collect();
                for m in parked {
                    if let Some(core) = slot.core.as_mut() {
                        core.handle_message(now, m);
                    }
                }
                self.settle(now, wall_ms, &entity);
            }
            Err(why) => {
                let reply = Reply::error(format!("ERR cannot load entity: {why}"));
                self.drop_entity(&entity, reply);
            }
        }
    }

    /// The persist `seq` of `entity` is durable.
    pub fn on_persisted(&mut self, now: u64, wall_ms: i64, entity: Bytes, seq: u64) {
        let Some(core) = self.slots.get_mut(&entity).and_then(|s| s.core.as_mut()) else {
            return;
        };
        core.persisted(now, seq);
        self.settle(now, wall_ms, &entity);
    }

    /// The persist failed (disk full, I/O error). The in-memory entity holds changes
    /// that never reached disk, so it is dropped whole: its requests fail and the next
    /// touch reloads it from what is durable.
    pub fn on_persist_failed(&mut self, entity: Bytes, why: &str) {
        self.stats.persist_failures += 1;
        let reply = Reply::error(format!("ERR write failed: {why}"));
        self.drop_entity(&entity, reply);
    }

    /// Time passed: fire due timers.
    pub fn tick(&mut self, now: u64, wall_ms: i64) {
        while let Some((t, e)) = self.timers.iter().next().cloned() {
            if t > now {
                break;
            }
            self.timers.remove(&(t, e.clone()));
            if let Some(slot) = self.slots.get_mut(&e) {
                slot.timer = None;
                if let Some(core) = slot.core.as_mut() {
                    core.handle_timeout(now);
                }
                self.settle(now, wall_ms, &e);
            }
        }
        self.evict();
    }

    // ---- internals -----------------------------------------------------------------

    fn reply(&mut self, client: ClientId, reply: Reply) {
        self.out.push_back(Output::Reply { client, reply });
    }

    /// The slot of `entity`, created (and its load requested) on first touch.
    fn slot(&mut self, entity: &Bytes) -> &mut Slot {
        self.touch += 1;
        let touch = self.touch;
        // One lookup (the key is hashed once); cloning the key is a reference count.
        let slot = match self.slots.entry(entity.clone()) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                self.stats.loads += 1;
                self.summaries.remove(entity);
                self.out.push_back(Output::Load {
                    entity: entity.clone(),
                });
                self.lru.insert(touch, entity.clone());
                v.insert(Box::new(Slot {
                    core: None,
                    state: KvState::default(),
                    undecoded: None,
                    queue: VecDeque::new(),
                    batch: None,
                    parked: VecDeque::new(),
                    lru: touch,
                    filed: touch,
                    timer: None,
                    bytes: 0,
                    applied: None,
                }))
            }
        };
        slot.lru = touch;
        slot
    }

    fn drop_entity(&mut self, entity: &Bytes, reply: Reply) {
        let Some(slot) = self.slots.remove(entity) else {
            return;
        };
        self.lru.remove(&slot.filed);
        if let Some(t) = slot.timer {
            self.timers.remove(&(t, entity.clone()));
        }
        self.cached_bytes = self.cached_bytes.saturating_sub(slot.bytes);
        let mut failed: Vec<Pending> = slot.queue.into_iter().collect();
        match slot.batch {
            Some(Batch::Write { reqs, .. }) | Some(Batch::Read { reqs, .. }) => failed.extend(reqs),
            None => {}
        }
        for p in failed {
            self.reply(p.client, reply.clone());
        }
    }

    /// Drain the core's events, start the next batch, repeat until stable; then re-arm
    /// the entity's timer and account its memory.
    fn settle(&mut self, now: u64, wall_ms: i64, entity: &Bytes) {
        for _ in 0..64 {
            let mut progressed = false;
            while let Some(ev) = self
                .slots
                .get_mut(entity)
                .and_then(|s| s.core.as_mut())
                .and_then(|c| c.poll_event())
            {
                progressed = true;
                self.on_event(now, wall_ms, entity, ev);
            }
            if self.start_batch(now, wall_ms, entity) {
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        let Some(slot) = self.slots.get_mut(entity) else {
            return;
        };
        // A timer at or before `now` would make `tick` spin: fire it next millisecond.
        let next = slot
            .core
            .as_ref()
            .and_then(|c| c.poll_timeout())
            .map(|t| t.max(now + 1));
        if next != slot.timer {
            if let Some(t) = slot.timer {
                self.timers.remove(&(t, entity.clone()));
            }
            if let Some(t) = next {
                self.timers.insert((t, entity.clone()));
            }
            slot.timer = next;
        }
        if slot.queue.is_empty() && slot.parked.is_empty() && slot.batch.is_none() {
            slot.queue.shrink_to_fit();
            slot.parked.shrink_to_fit();
            if let Some(core) = slot.core.as_mut() {
                core.shrink_idle_buffers();
            }
        }
        // The core's records (which hold the encoded state), the decoded state (about
        // as big again), and a fixed cost per cached entity: maps, queues and B-tree
        // nodes that hold no payload. The fixed cost is measured, not derived: 200 k
        // keys written once, all cached (cache_mb = 8192), cost 533 MiB of RSS per
        // node more than with cache_mb = 16, i.e. 2.7 KiB per entity, of which this
        // formula's payload part counts 1.0 KiB (`bench/rss_after_preload.sh`, see
        // BENCHMARKS.md's component notes). Before idle buffers were shrunk it was
        // 6.5 KiB; without a fixed cost at all the budget undercounted tenfold.
        let bytes = 2 * slot.core.as_ref().map_or(0, |c| c.size()) + entity.len() + ENTITY_OVERHEAD;
        self.cached_bytes = self.cached_bytes.saturating_sub(slot.bytes) + bytes;
        slot.bytes = bytes;
    }

    fn on_event(&mut self, now: u64, wall_ms: i64, entity: &Bytes, ev: Event) {
        match ev {
            Event::Persist {
                seq,
                records,
                trim_below,
            } => self.out.push_back(Output::Persist {
                entity: entity.clone(),
                seq,
                records,
                trim_below,
            }),
            Event::Send(msg) => {
                if msg.catchup {
                    // Token bucket, refilled by elapsed time.
                    let rate = self.cfg.catchup_max_per_sec.max(1);
                    let elapsed = now.saturating_sub(self.catchup_refill_at);
                    if elapsed > 0 {
                        self.catchup_tokens =
                            (self.catchup_tokens + elapsed * rate / 1000).min(rate);
                        self.catchup_refill_at = now;
                    }
                    if self.catchup_tokens == 0 {
                        self.stats.catchups_dropped += 1;
                        return;
                    }
                    self.catchup_tokens -= 1;
                    self.stats.catchups += 1;
                }
                self.out.push_back(Output::Send {
                    entity: entity.clone(),
                    msg,
                })
            }
            Event::Apply { entry, value, .. } => {
                let Some(slot) = self.slots.get_mut(entity) else {
                    return;
                };
                if slot.applied.is_some_and(|a| entry > a + 1) {
                    self.stats.recoveries += 1;
                }
                slot.applied = Some(entry);
                // The old state is of no more use: free it now.
                slot.state = KvState::default();
                slot.undecoded = Some(value);
            }
            Event::Done { token, outcome } => self.on_done(now, wall_ms, entity, token, outcome),
        }
    }

    fn on_done(&mut self, now: u64, wall_ms: i64, entity: &Bytes, token: u64, outcome: Outcome) {
        let write_attempts = self.cfg.write_attempts;
        let Some(slot) = self.slots.get_mut(entity) else {
            return;
        };
        let matches = match &slot.batch {
            Some(Batch::Write { token: t, .. }) | Some(Batch::Read { token: t, .. }) => *t == token,
            None => false,
        };
        if !matches {
            return;
        }
        let Some(batch) = slot.batch.take() else {
            return;
        };
        let mut replies: Vec<(ClientId, Reply)> = Vec::new();
        let mut requeue: Vec<Pending> = Vec::new();
        let mut corrupt = None;
        match (batch, outcome) {
            (
                Batch::Write {
                    reqs,
                    replies: r,
                    started,
                    ..
                },
                Outcome::Written { .. },
            ) => {
                self.round_trip.observe(now.saturating_sub(started));
                replies.extend(reqs.iter().map(|p| p.client).zip(r));
            }
            (Batch::Write { reqs, .. }, Outcome::Lost { .. }) => {
                self.stats.conflicts += 1;
                for mut p in reqs {
                    p.attempts += 1;
                    if p.attempts >= write_attempts {
                        replies.push((
                            p.client,
                            Reply::error("TRYAGAIN the write lost its entry to concurrent writers too many times"),
                        ));
                    } else {
                        requeue.push(p);
                    }
                }
            }
            (
                Batch::Write {
                    reqs, replies: r, ..
                },
                Outcome::Superseded { .. },
            ) => {
                // The entity jumped ahead by snapshot before the entry's fate was
                // learnt: the state remembers recent request ids, so a write found
                // there happened; otherwise its outcome is unknown.
                if let Err(e) = decode_applied(slot) {
                    corrupt = Some(e);
                }
                for (p, r) in reqs.into_iter().zip(r) {
                    if let Some(e) = &corrupt {
                        replies.push((p.client, corrupt_state(e.clone())));
                    } else if slot.state.recall(p.request_id).is_some() {
                        replies.push((p.client, r));
                    } else {
                        replies.push((
                            p.client,
                            Reply::error("TIMEOUT the write's outcome is unknown"),
                        ));
                    }
                }
            }
            (Batch::Write { reqs, .. } | Batch::Read { reqs, .. }, Outcome::Rejoining { .. }) => {
                let e = Reply::error(REJOINING);
                replies.extend(reqs.iter().map(|p| (p.client, e.clone())));
            }
            (Batch::Write { reqs, .. }, _) => {
                self.stats.timeouts += 1;
                for p in reqs {
                    replies.push((
                        p.client,
                        Reply::error("TIMEOUT the write's outcome is unknown"),
                    ));
                }
            }
            (
                Batch::Read {
                    reqs,
                    precomputed,
                    base_entry,
                    ..
                },
                Outcome::ReadOk { entry },
            ) => match precomputed {
                Some(r) if entry == base_entry => {
                    replies.extend(reqs.iter().map(|p| p.client).zip(r))
                }
                Some(_) => requeue.extend(reqs),
                None => {
                    if let Err(e) = decode_applied(slot) {
                        corrupt = Some(e);
                    }
                    for p in reqs {
                        let reply = match &corrupt {
                            Some(e) => corrupt_state(e.clone()),
                            None => run_read(&mut slot.state, &p.req, wall_ms),
                        };
                        replies.push((p.client, reply));
                    }
                }
            },
            (Batch::Read { reqs, .. }, _) => {
                self.stats.timeouts += 1;
                for p in reqs {
                    replies.push((
                        p.client,
                        Reply::error(
                            "TRYAGAIN the read could not be confirmed by a majority in time",
                        ),
                    ));
                }
            }
        }
        for p in requeue.into_iter().rev() {
            slot.queue.push_front(p);
        }
        for (c, r) in replies {
            self.reply(c, r);
        }
        if let Some(e) = corrupt {
            self.drop_entity(entity, corrupt_state(e));
        }
    }

    /// Start the next batch of queued requests if the entity is idle. Returns whether
    /// anything happened.
    fn start_batch(&mut self, now: u64, wall_ms: i64, entity: &Bytes) -> bool {
        let max_batch = self.cfg.max_batch;
        let Some(slot) = self.slots.get_mut(entity) else {
            return false;
        };
        if slot.batch.is_some() || slot.queue.is_empty() {
            return false;
        }
        if let Err(e) = decode_applied(slot) {
            self.drop_entity(entity, corrupt_state(e));
            return true;
        }
        let Some(core) = slot.core.as_mut() else {
            return false;
        };
        if !core.is_idle() {
            return false;
        }
        // Requests that waited past their deadline in the queue.
        let mut expired = Vec::new();
        while slot.queue.front().is_some_and(|p| p.deadline <= now) {
            if let Some(p) = slot.queue.pop_front() {
                expired.push(p.client);
            }
        }
        if !expired.is_empty() {
            self.stats.timeouts += expired.len() as u64;
            for c in expired {
                self.reply(c, Reply::error("TIMEOUT the request waited too long"));
            }
            return true;
        }
        let Some(front) = slot.queue.front() else {
            return false;
        };
        let want_write = is_write(&front.req);
        // Stale-ok reads are answered from local state at once.
        if !want_write && front.req.stale_ok {
            let Some(p) = slot.queue.pop_front() else {
                return false;
            };
            let r = run_read(&mut slot.state, &p.req, wall_ms);
            self.stats.local_reads += 1;
            self.reply(p.client, r);
            return true;
        }
        let mut reqs = Vec::new();
        while reqs.len() < max_batch
            && slot
                .queue
                .front()
                .is_some_and(|p| is_write(&p.req) == want_write && (want_write || !p.req.stale_ok))
        {
            if let Some(p) = slot.queue.pop_front() {
                reqs.push(p);
            }
        }
        let deadline = reqs.iter().map(|p| p.deadline).min().unwrap_or(now + 1);
        let base_entry = core.applied();
        self.next_token += 1;
        let token = self.next_token;
        self.stats.batched_requests += reqs.len() as u64;
        if want_write {
            let limit = self.cfg.max_state_bytes.saturating_sub(entity.len());
            let mut state = slot.state.clone();
            let mut applied = apply_writes(&mut state, &reqs, wall_ms, None);
            if state.encoded_len() > limit {
                // Rare (a client sent more than an entity may hold): apply the batch
                // again, refusing each write that would take the state over the limit.
                state = slot.state.clone();
                applied = apply_writes(&mut state, &reqs, wall_ms, Some(limit));
            }
            let Applied {
                replies,
                changed,
                ids,
                own,
                duplicates,
            } = applied;
            self.stats.duplicates += duplicates;
            state.forget_own_beyond(crate::kv::RECENT_OWN.max(own));
            if changed {
                self.stats.proposals += 1;
                if core.pre_authorised_entry() == Some(base_entry + 1) {
                    self.stats.fast_proposals += 1;
                }
                core.set_write_retry_ms(self.round_trip.retry_ms());
                let started = core.write(now, token, state.encode(), ids, deadline);
                if started.is_ok() {
                    slot.batch = Some(Batch::Write {
                        token,
                        started: now,
                        reqs,
                        replies,
                    });
                } else {
                    for p in reqs.into_iter().rev() {
                        slot.queue.push_front(p);
                    }
                    return false;
                }
            } else {
                // Nothing changes (e.g. SET NX on an existing key): confirm the state
                // is current with a read round instead of proposing.
                self.stats.reads += 1;
                core.set_live_peers(self.live_peers);
                if core.read(now, token, deadline).is_ok() {
                    slot.batch = Some(Batch::Read {
                        token,
                        reqs,
                        precomputed: Some(replies),
                        base_entry,
                    });
                }
            }
        } else {
            self.stats.reads += 1;
            core.set_live_peers(self.live_peers);
            if core.read(now, token, deadline).is_ok() {
                slot.batch = Some(Batch::Read {
                    token,
                    reqs,
                    precomputed: None,
                    base_entry,
                });
            }
        }
        true
    }

    /// Evict idle entities, least recently used first, while over the memory budget.
    fn evict(&mut self) {
        // Runs on every tick: return before collecting candidates when within budget.
        if self.cached_bytes <= self.cfg.max_cached_bytes {
            return;
        }
        // The least recently filed are candidates; one touched since it was filed is
        // filed again under its last touch, a busy one is skipped. Their stamps are
        // copied out a few at a time: this runs on every wake-up while the cache is
        // full.
        let mut after = None;
        let mut examined = 0;
        while self.cached_bytes > self.cfg.max_cached_bytes && examined < EVICTION_SCAN_LIMIT {
            let from = after.map_or(Bound::Unbounded, Bound::Excluded);
            let stamps: Vec<u64> = self
                .lru
                .range((from, Bound::Unbounded))
                .map(|(k, _)| *k)
                .take(EVICTION_CANDIDATES)
                .collect();
            let Some(&last) = stamps.last() else {
                break;
            };
            after = Some(last);
            examined += stamps.len();
            self.evict_among(&stamps);
        }
    }

    /// Evicts idle entities filed under `stamps` (oldest first) while over budget.
    fn evict_among(&mut self, stamps: &[u64]) {
        for &k in stamps {
            if self.cached_bytes <= self.cfg.max_cached_bytes {
                break;
            }
            let Some(e) = self.lru.get(&k).cloned() else {
                continue;
            };
            if let Some(slot) = self.slots.get_mut(&e) {
                if slot.lru != k {
                    self.lru.remove(&k);
                    slot.filed = slot.lru;
                    self.lru.insert(slot.lru, e);
                    continue;
                }
            }
            let idle = self.slots.get(&e).is_some_and(|s| {
                s.batch.is_none()
                    && s.queue.is_empty()
                    && s.core.as_ref().is_some_and(|c| c.is_quiescent())
            });
            if idle {
                if let Some(slot) = self.slots.remove(&e) {
                    if let Some(s) = slot.core.as_ref().and_then(|c| c.probe_summary()) {
                        self.summaries.insert(&e, s);
                    }
                    self.lru.remove(&k);
                    if let Some(t) = slot.timer {
                        self.timers.remove(&(t, e.clone()));
                    }
                    self.cached_bytes = self.cached_bytes.saturating_sub(slot.bytes);
                    self.stats.evictions += 1;
                }
            }
        }
    }
}

fn is_write(req: &Request) -> bool {
    req.cmds
        .iter()
        .any(|c| matches!(exec::access(c), Access::Write))
}

/// Decodes the slot's last applied value if that is still pending.
fn decode_applied(slot: &mut Slot) -> Result<(), crate::kv::KvDecodeError> {
    if let Some(value) = slot.undecoded.take() {
        slot.state = KvState::decode(&value)?;
    }
    Ok(())
}

/// The answer for an entity whose chosen value does not decode: it cannot be applied,
/// so the entity is not served rather than served from a wrong state.
fn corrupt_state(e: crate::kv::KvDecodeError) -> Reply {
    Reply::error(format!("ERR corrupt entity state: {e}"))
}

/// Execute a read-only request (no command in it writes) on the cached state itself.
/// No copy is needed: a command changes the state only through the executor's write
/// helpers, which report the change, and a read-only command never calls them
/// (`crates/node/tests/exec_redis.rs` checks, for every command it runs, that one
/// reporting no change left the state byte for byte as it was).
fn run_read(state: &mut KvState, req: &Request, wall_ms: i64) -> Reply {
    let (reply, changed) = run(state, req, wall_ms);
    debug_assert!(!changed, "a read-only request changed the state");
    reply
}

/// What applying a write batch to a copy of the state gave.
struct Applied {
    replies: Vec<Reply>,
    changed: bool,
    /// Request ids of the writes that changed the state.
    ids: Vec<u64>,
    /// How many of those are the shard's own (no client REQID).
    own: usize,
    /// Retries answered from the state's memory of their first reply.
    duplicates: u64,
}

/// Apply a batch's writes to `state` in order. With a `limit`, a write that grows the
/// encoded state past `limit` bytes is undone and refused.
fn apply_writes(
    state: &mut KvState,
    reqs: &[Pending],
    wall_ms: i64,
    limit: Option<usize>,
) -> Applied {
    let mut a = Applied {
        replies: Vec::with_capacity(reqs.len()),
        changed: false,
        ids: Vec::with_capacity(reqs.len()),
        own: 0,
        duplicates: 0,
    };
    for p in reqs {
        let client_id = p.req.request_id != 0;
        if let Some(memo) = state.recall(p.request_id).filter(|_| client_id) {
            // A retry of a write that is already in the state: answer it with the
            // first reply, do not apply it again.
            a.duplicates += 1;
            a.replies.push(crate::dedup::recall_reply(memo));
            continue;
        }
        let before = limit.map(|_| (state.clone(), state.encoded_len()));
        let (r, c) = run(state, &p.req, wall_ms);
        if c {
            let memo = if client_id {
                crate::dedup::memo(&r)
            } else {
                Bytes::new()
            };
            state.remember(p.request_id, memo);
        }
        if let (Some(limit), Some((before, before_len))) = (limit, before) {
            // A write that does not grow the state is let through, so that an
            // entity over the limit (a smaller limit than when it was written) can
            // still be shrunk.
            let len = state.encoded_len();
            if c && len > limit && len > before_len {
                *state = before;
                a.replies.push(Reply::error(format!(
                    "ERR value too large: the entity would hold {len} bytes, more than the \
                     {limit} one write can replicate"
                )));
                continue;
            }
        }
        if c {
            a.ids.push(p.request_id);
            a.own += usize::from(!client_id);
        }
        a.changed |= c;
        a.replies.push(r);
    }
    a
}

/// Execute a request on a state: one command, or a MULTI/EXEC body.
fn run(state: &mut KvState, req: &Request, wall_ms: i64) -> (Reply, bool) {
    if req.multi {
        if !exec::watch_holds(state, &req.watch, wall_ms) {
            return (Reply::NullArray, false);
        }
        exec::execute_all(state, &req.cmds, wall_ms)
    } else {
        match req.cmds.first() {
            Some(c) => exec::execute(state, c, wall_ms),
            None => (Reply::error("ERR empty request"), false),
        }
    }
}
