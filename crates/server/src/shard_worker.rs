//! One worker per shard: it owns a sans-IO [`node::shard::Shard`] and is its thin
//! pump. It runs on an OS thread of its own (`shard_threads = true`) or as a task on
//! the IO runtime (`false`: on a machine with fewer cores than threads, every hand-off
//! between a connection and its shard was a thread wake-up and a context switch).
//! Its inbox is the only way in (bounded); storage loads are done inline (reads),
//! persists go to the group-commit writer and come back on a channel of their own.
//!
//! One wake-up takes everything queued (up to [`MAX_INPUTS_PER_WAKE`]) and holds back
//! what it produces for the outside until the end: the persists go to the writer as
//! one submission (one completion, one message back) and the Paxos messages to each
//! peer as one frame ([`codec::MessageBatch`]). Under load that turns per-message
//! costs (queueing, frames, thread wake-ups) into per-wake-up costs. The core's
//! persist-before-send rule is unaffected: it holds a message until the record it
//! shows is durable, whatever the worker does with its outputs.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use node::codec;
use node::shard::{Output, Request, Shard, ShardStats};
use paxos::Message;
use resp::Reply;
use storage::{EntityUpdate, GroupCommit, Storage};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::oneshot;

/// Peer frame type carrying one Paxos message (still accepted; shards send batches).
pub const MSG_PAXOS: u8 = 1;
/// Peer frame type carrying a [`codec::MessageBatch`].
pub const MSG_PAXOS_BATCH: u8 = 4;
/// Inputs taken per wake-up at most (the rest wait for the next one).
const MAX_INPUTS_PER_WAKE: usize = 1024;
/// A peer's batch is sent once it holds this many bytes, without waiting for the end
/// of the wake-up (bounds the frame and the worker's buffer).
const MAX_BATCH_BYTES: usize = 256 << 10;

/// The largest entity (name plus state) a write may produce when peer frames are at
/// most `max_frame` bytes: a batch is sent once it passes `MAX_BATCH_BYTES`, so the
/// message that passes it must fit in the rest, with room for its own fields; and a
/// catch-up message carries two values in full (the sender's record and its view of
/// the receiver's), which may differ.
pub fn max_state_bytes(max_frame: usize) -> usize {
    max_frame.saturating_sub(MAX_BATCH_BYTES + (64 << 10)) / 2
}

/// Everything a shard worker is told.
pub enum ShardInput {
    Request {
        entity: Bytes,
        req: Request,
        reply: oneshot::Sender<Reply>,
    },
    Message {
        entity: Bytes,
        msg: Message,
    },
    /// The messages of one peer frame that belong to this shard.
    Messages(Vec<(Bytes, Message)>),
    /// One submission to the writer finished: these (entity, persist seq) are durable,
    /// or all failed.
    Persisted {
        done: Vec<(Bytes, u64)>,
        result: Result<(), String>,
    },
    Stats(oneshot::Sender<ShardStats>),
    Stop,
}

/// The shard's inbox is full (or the shard stopped); the input was dropped.
#[derive(Debug, Clone, Copy)]
pub struct Full;

/// Handle to send work to a shard.
#[derive(Clone)]
pub struct ShardHandle {
    pub tx: mpsc::Sender<ShardInput>,
}

impl ShardHandle {
    /// Queue without blocking; `Err(Full)` when the shard's inbox is full (overload).
    pub fn try_send(&self, input: ShardInput) -> Result<(), Full> {
        self.tx.try_send(input).map_err(|e| match e {
            TrySendError::Full(_) | TrySendError::Closed(_) => Full,
        })
    }
}

/// A shard's inbox (bounded: `capacity` inputs) and the worker's half of it.
pub fn inbox(capacity: usize) -> (ShardHandle, mpsc::Receiver<ShardInput>) {
    let (tx, rx) = mpsc::channel(capacity);
    (ShardHandle { tx }, rx)
}

pub struct ShardWorker {
    /// This shard's index: picks the peer connection its batches use.
    pub index: usize,
    pub shard: Shard,
    pub rx: mpsc::Receiver<ShardInput>,
    /// Persist completions. Unbounded channel, bounded by construction: one message
    /// per submission the group-commit writer accepted, and its queue is bounded.
    /// Apart from the inbox so that a full inbox can never lose one (an entity whose
    /// persist is never answered would stay stuck).
    pub done_rx: mpsc::UnboundedReceiver<ShardInput>,
    pub done_tx: mpsc::UnboundedSender<ShardInput>,
    pub storage: Arc<dyn Storage>,
    pub group_commit: Arc<GroupCommit>,
    pub transport: net::Transport,
    /// Set while this node's persists fail (disk full, I/O errors); cleared by the
    /// next one that succeeds. Forwarded writes are refused meanwhile.
    pub disk_failing: Arc<std::sync::atomic::AtomicBool>,
}

fn wall_ms() -> i64 {
    crate::wallclock::wall_ms()
}

/// Stable route of an entity (picks the peer connection, and the shard).
pub use node::route::route;

impl ShardWorker {
    /// Run until `Stop` or until every sender is gone.
    pub async fn run(mut self, epoch: Instant) {
        let mut out = Held::default();
        let mut inputs: Vec<ShardInput> = Vec::new();
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        loop {
            let now = epoch.elapsed().as_millis() as u64;
            let wait = self
                .shard
                .next_timer()
                .map_or(Duration::from_millis(20), |t| {
                    Duration::from_millis(t.saturating_sub(now))
                })
                .min(Duration::from_millis(20));
            timer.as_mut().reset(tokio::time::Instant::now() + wait);
            tokio::select! {
                biased;
                Some(i) = self.done_rx.recv() => inputs.push(i),
                i = self.rx.recv() => match i {
                    Some(i) => inputs.push(i),
                    // Every sender is gone: stop as on `Stop`.
                    None => inputs.push(ShardInput::Stop),
                },
                () = &mut timer => {}
            }
            // Take what else is queued (bounded), so one wake-up serves many.
            while let Ok(i) = self.done_rx.try_recv() {
                inputs.push(i);
            }
            while inputs.len() < MAX_INPUTS_PER_WAKE {
                match self.rx.try_recv() {
                    Ok(i) => inputs.push(i),
                    Err(_) => break,
                }
            }
            let now = epoch.elapsed().as_millis() as u64;
            let wall = wall_ms();
            self.shard.set_live_peers(self.live_peers());
            for input in inputs.drain(..) {
                match input {
                    ShardInput::Request { entity, req, reply } => {
                        out.next_client += 1;
                        out.replies.insert(out.next_client, reply);
                        self.shard.submit(now, wall, out.next_client, entity, req);
                    }
                    ShardInput::Message { entity, msg } => {
                        self.shard.on_message(now, wall, entity, msg)
                    }
                    ShardInput::Messages(msgs) => {
                        for (entity, msg) in msgs {
                            self.shard.on_message(now, wall, entity, msg);
                            self.pump(now, wall, &mut out);
                        }
                    }
                    ShardInput::Persisted { done, result } => match result {
                        Ok(()) => {
                            self.disk_failing.store(false, Ordering::Relaxed);
                            for (entity, seq) in done {
                                self.shard.on_persisted(now, wall, entity, seq);
                                self.pump(now, wall, &mut out);
                            }
                        }
                        Err(why) => {
                            self.disk_failing.store(true, Ordering::Relaxed);
                            for (entity, _) in done {
                                self.shard.on_persist_failed(entity, &why);
                            }
                        }
                    },
                    ShardInput::Stats(tx) => {
                        let _ = tx.send(self.shard.stats());
                    }
                    ShardInput::Stop => {
                        for (_, tx) in out.replies.drain() {
                            let _ = tx.send(Reply::error("ERR server is shutting down"));
                        }
                        return;
                    }
                }
                self.pump(now, wall, &mut out);
            }
            self.shard.tick(now, wall);
            self.pump(now, wall, &mut out);
            self.flush(now, wall, &mut out);
        }
    }

    /// The peers with a live connection, as a bit per node id.
    fn live_peers(&self) -> u8 {
        (0..=7u8)
            .filter(|&p| self.transport.live_channels(p) > 0)
            .fold(0, |m, p| m | (1 << p))
    }

    /// Carry out the shard's outputs until there are none: loads and replies at once,
    /// persists and peer messages into `out` until [`ShardWorker::flush`].
    fn pump(&mut self, now: u64, wall: i64, out: &mut Held) {
        while let Some(output) = self.shard.poll() {
            match output {
                Output::Load { entity } => {
                    let loaded = self
                        .storage
                        .load(&entity)
                        .map_err(|e| e.to_string())
                        .and_then(|img| {
                            img.records
                                .iter()
                                .map(|(e, b)| codec::decode_record(b).map(|r| (*e, r)))
                                .collect::<Result<Vec<_>, _>>()
                                .map_err(|e| format!("corrupt record: {e}"))
                        });
                    if let Err(e) = &loaded {
                        tracing::error!(entity = ?String::from_utf8_lossy(&entity), error = %e, "entity load failed");
                    }
                    self.shard.on_loaded(now, wall, entity, loaded);
                }
                Output::Persist {
                    entity,
                    seq,
                    records,
                    trim_below,
                } => {
                    let mut u = EntityUpdate::new(entity.clone());
                    // The core's persists carry every record the entity holds, and
                    // the server keeps no key/values apart from them.
                    u.whole = true;
                    u.put_records = records
                        .iter()
                        .map(|(e, r)| (*e, codec::encode_record(r)))
                        .collect();
                    if trim_below > 0 {
                        u.trim_below = Some(trim_below);
                    }
                    out.updates.push(u);
                    out.persisted.push((entity, seq));
                }
                Output::Send { entity, msg } => {
                    let to = msg.to as usize;
                    if let Some(batch) = out.batches.get_mut(to) {
                        batch.push(&entity, &msg);
                        if batch.bytes() >= MAX_BATCH_BYTES {
                            let payload = batch.take();
                            self.send_batch(to as u8, payload);
                        }
                    }
                }
                Output::Reply { client, reply } => {
                    if let Some(tx) = out.replies.remove(&client) {
                        let _ = tx.send(reply);
                    }
                }
            }
        }
    }

    /// Hand what this wake-up produced to the writer and to the peers.
    fn flush(&mut self, now: u64, wall: i64, out: &mut Held) {
        if !out.updates.is_empty() {
            let updates = std::mem::take(&mut out.updates);
            let done_list = std::mem::take(&mut out.persisted);
            let tx = self.done_tx.clone();
            let done = Box::new(move |res: Result<(), storage::StorageError>| {
                let _ = tx.send(ShardInput::Persisted {
                    done: done_list,
                    result: res.map_err(|e| e.to_string()),
                });
            });
            if let Err(busy) = self.group_commit.submit(updates, done) {
                metrics::counter!("paxosstore_persist_busy_total").increment(1);
                // The submission came back whole: fail each persist in it.
                for u in busy.updates {
                    self.shard
                        .on_persist_failed(u.entity, "storage queue full (BUSY)");
                }
                // Their clients' error replies (a new persist waits for the next wake-up).
                self.pump(now, wall, out);
            }
        }
        for to in 0..out.batches.len() {
            if out.batches[to].count() > 0 {
                let payload = out.batches[to].take();
                self.send_batch(to as u8, payload);
            }
        }
    }

    fn send_batch(&self, to: u8, payload: Bytes) {
        if self
            .transport
            .send(to, self.index as u64, MSG_PAXOS_BATCH, payload)
            .is_err()
        {
            metrics::counter!("paxosstore_peer_send_dropped_total").increment(1);
        }
    }
}

/// What a wake-up holds back until its end, and the clients waiting for replies.
struct Held {
    replies: HashMap<u64, oneshot::Sender<Reply>>,
    next_client: u64,
    updates: Vec<EntityUpdate>,
    persisted: Vec<(Bytes, u64)>,
    /// One batch per node id (at most 8 nodes).
    batches: Vec<codec::MessageBatch>,
}

impl Default for Held {
    fn default() -> Self {
        Held {
            replies: HashMap::new(),
            next_client: 1,
            updates: Vec::new(),
            persisted: Vec::new(),
            batches: (0..8).map(|_| codec::MessageBatch::default()).collect(),
        }
    }
}
