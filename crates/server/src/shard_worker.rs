//! One OS thread per shard: it owns a sans-IO [`node::shard::Shard`] and is its thin
//! pump. Its inbox is the only way in (bounded); storage loads are done inline
//! (reads), persists go to the group-commit writer and come back as inbox messages.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use node::codec;
use node::shard::{Output, Request, Shard, ShardStats};
use paxos::Message;
use resp::Reply;
use storage::{EntityUpdate, GroupCommit, Storage};
use tokio::sync::oneshot;

/// Peer frame type carrying one Paxos message.
pub const MSG_PAXOS: u8 = 1;

/// Everything a shard thread is told.
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
    Persisted {
        entity: Bytes,
        seq: u64,
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
    pub tx: SyncSender<ShardInput>,
}

impl ShardHandle {
    /// Queue without blocking; `Err(Full)` when the shard's inbox is full (overload).
    pub fn try_send(&self, input: ShardInput) -> Result<(), Full> {
        self.tx.try_send(input).map_err(|e| match e {
            TrySendError::Full(_) | TrySendError::Disconnected(_) => Full,
        })
    }
}

pub struct ShardWorker {
    pub shard: Shard,
    pub rx: Receiver<ShardInput>,
    pub me: SyncSender<ShardInput>,
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
    pub fn run(mut self, epoch: Instant) {
        let mut replies: HashMap<u64, oneshot::Sender<Reply>> = HashMap::new();
        let mut next_client: u64 = 1;
        loop {
            let now = epoch.elapsed().as_millis() as u64;
            let wait = self
                .shard
                .next_timer()
                .map_or(Duration::from_millis(20), |t| {
                    Duration::from_millis(t.saturating_sub(now))
                })
                .min(Duration::from_millis(20));
            let first = match self.rx.recv_timeout(wait) {
                Ok(i) => Some(i),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut inputs: Vec<ShardInput> = first.into_iter().collect();
            // Take what else is queued (bounded), so one wake-up serves many.
            while inputs.len() < 1024 {
                match self.rx.try_recv() {
                    Ok(i) => inputs.push(i),
                    Err(_) => break,
                }
            }
            let now = epoch.elapsed().as_millis() as u64;
            let wall = wall_ms();
            self.shard.set_live_peers(self.live_peers());
            for input in inputs {
                match input {
                    ShardInput::Request { entity, req, reply } => {
                        next_client += 1;
                        replies.insert(next_client, reply);
                        self.shard.submit(now, wall, next_client, entity, req);
                    }
                    ShardInput::Message { entity, msg } => {
                        self.shard.on_message(now, wall, entity, msg)
                    }
                    ShardInput::Persisted {
                        entity,
                        seq,
                        result,
                    } => match result {
                        Ok(()) => {
                            self.disk_failing.store(false, Ordering::Relaxed);
                            self.shard.on_persisted(now, wall, entity, seq)
                        }
                        Err(why) => {
                            self.disk_failing.store(true, Ordering::Relaxed);
                            self.shard.on_persist_failed(entity, &why)
                        }
                    },
                    ShardInput::Stats(tx) => {
                        let _ = tx.send(self.shard.stats());
                    }
                    ShardInput::Stop => {
                        for (_, tx) in replies.drain() {
                            let _ = tx.send(Reply::error("ERR server is shutting down"));
                        }
                        return;
                    }
                }
                self.pump(now, wall, &mut replies);
            }
            self.shard.tick(now, wall);
            self.pump(now, wall, &mut replies);
        }
    }

    /// The peers with a live connection, as a bit per node id.
    fn live_peers(&self) -> u8 {
        (0..=7u8)
            .filter(|&p| self.transport.live_channels(p) > 0)
            .fold(0, |m, p| m | (1 << p))
    }

    /// Carry out the shard's outputs until there are none.
    fn pump(&mut self, now: u64, wall: i64, replies: &mut HashMap<u64, oneshot::Sender<Reply>>) {
        while let Some(out) = self.shard.poll() {
            match out {
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
                    u.put_records = records
                        .iter()
                        .map(|(e, r)| (*e, codec::encode_record(r)))
                        .collect();
                    if trim_below > 0 {
                        u.trim_below = Some(trim_below);
                    }
                    let tx = self.me.clone();
                    let ent = entity.clone();
                    let done = Box::new(move |res: Result<(), storage::StorageError>| {
                        let result = res.map_err(|e| e.to_string());
                        // Blocking send is fine: the shard thread never waits on us.
                        let _ = tx.send(ShardInput::Persisted {
                            entity: ent,
                            seq,
                            result,
                        });
                    });
                    if self.group_commit.submit(vec![u], done).is_err() {
                        metrics::counter!("paxosstore_persist_busy_total").increment(1);
                        self.shard
                            .on_persist_failed(entity, "storage queue full (BUSY)");
                    }
                }
                Output::Send { entity, msg } => {
                    let to = msg.to;
                    let payload = codec::encode_message(&entity, &msg);
                    if self
                        .transport
                        .send(to, route(&entity), MSG_PAXOS, payload)
                        .is_err()
                    {
                        metrics::counter!("paxosstore_peer_send_dropped_total").increment(1);
                    }
                }
                Output::Reply { client, reply } => {
                    if let Some(tx) = replies.remove(&client) {
                        let _ = tx.send(reply);
                    }
                }
            }
        }
    }
}
