//! Group commit: many small submissions, one `write_batch` (one fsync) per round.
//!
//! Runtime-agnostic on purpose (a std thread and a bounded `sync_channel`), so the tokio
//! server and the deterministic simulator can both drive it. The queue is bounded:
//! when it is full, [`GroupCommit::submit`] hands the work back ([`Busy`]) instead of
//! growing memory. Submissions are written in FIFO order and their callbacks run in
//! submission order on the writer thread, after the batch is durable.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{EntityUpdate, Storage, StorageError};

/// Completion callback: called once, on the writer thread, with the batch's outcome.
/// Keep it short (e.g. send on a channel): it delays the next batch.
pub type DoneFn = Box<dyn FnOnce(Result<(), StorageError>) + Send>;

/// Limits of the writer.
#[derive(Debug, Clone)]
pub struct GroupCommitConfig {
    /// Submissions that may wait in the queue.
    pub queue_capacity: usize,
    /// A batch stops growing at this many updates (a single larger submission is still
    /// written whole: submissions are never split, to stay atomic).
    pub max_batch_updates: usize,
    /// A batch stops growing at about this many bytes (same caveat).
    pub max_batch_bytes: usize,
    /// If the batch is below the limits, wait up to this long for more submissions.
    /// Zero (the default) relies on submissions piling up during the previous fsync.
    pub max_wait: Duration,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        GroupCommitConfig {
            queue_capacity: 4096,
            max_batch_updates: 1024,
            max_batch_bytes: 4 << 20,
            max_wait: Duration::ZERO,
        }
    }
}

/// Counters, plain atomics so a metrics exporter can read them without locks.
#[derive(Debug, Default)]
pub struct GroupCommitStats {
    /// Submissions accepted into the queue.
    pub submitted: AtomicU64,
    /// Submissions refused because the queue was full.
    pub rejected_busy: AtomicU64,
    /// `write_batch` calls (= fsyncs).
    pub batches: AtomicU64,
    /// Updates written (summed over batches).
    pub updates: AtomicU64,
    /// Batches whose `write_batch` failed.
    pub failed_batches: AtomicU64,
    /// Sum and maximum of `write_batch` latency, in nanoseconds.
    pub fsync_nanos_total: AtomicU64,
    pub fsync_nanos_max: AtomicU64,
    /// Latency of the most recent `write_batch`, in nanoseconds.
    pub fsync_nanos_last: AtomicU64,
    /// Callbacks that panicked (caught so the writer keeps running).
    pub callback_panics: AtomicU64,
}

/// The submission was not queued; everything is handed back so nothing is lost.
pub struct Busy {
    /// True if the writer has shut down (retrying will not help); false if the queue was full.
    pub closed: bool,
    pub updates: Vec<EntityUpdate>,
    pub done: DoneFn,
}

impl std::fmt::Debug for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Busy")
            .field("closed", &self.closed)
            .field("updates", &self.updates.len())
            .finish()
    }
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.closed {
            f.write_str("group commit is shut down")
        } else {
            f.write_str("group commit queue is full")
        }
    }
}

impl std::error::Error for Busy {}

struct Job {
    updates: Vec<EntityUpdate>,
    bytes: usize,
    done: DoneFn,
}

/// Handle to the writer thread. Dropping it shuts down gracefully (drains the queue).
pub struct GroupCommit {
    tx: Mutex<Option<SyncSender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<GroupCommitStats>,
}

impl GroupCommit {
    /// Starts the writer thread.
    pub fn start(storage: Arc<dyn Storage>, cfg: GroupCommitConfig) -> Self {
        let (tx, rx) = mpsc::sync_channel(cfg.queue_capacity.max(1));
        let stats = Arc::new(GroupCommitStats::default());
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name("storage-group-commit".into())
            .spawn(move || writer_loop(storage, cfg, rx, st));
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                // Without a writer every submission must fail fast rather than hang.
                tracing::error!("cannot spawn group-commit writer: {e}");
                None
            }
        };
        let tx = if thread.is_some() { Some(tx) } else { None };
        GroupCommit {
            tx: Mutex::new(tx),
            thread: Mutex::new(thread),
            stats,
        }
    }

    /// Queues `updates` to be written atomically with (possibly) other submissions;
    /// `done` is called once they are durable or failed. Never blocks.
    pub fn submit(&self, updates: Vec<EntityUpdate>, done: DoneFn) -> Result<(), Busy> {
        let bytes = updates.iter().map(EntityUpdate::approx_bytes).sum();
        let job = Job {
            updates,
            bytes,
            done,
        };
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = guard.as_ref() else {
            return Err(Busy {
                closed: true,
                updates: job.updates,
                done: job.done,
            });
        };
        match tx.try_send(job) {
            Ok(()) => {
                self.stats.submitted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(job)) => {
                self.stats.rejected_busy.fetch_add(1, Ordering::Relaxed);
                Err(Busy {
                    closed: false,
                    updates: job.updates,
                    done: job.done,
                })
            }
            Err(TrySendError::Disconnected(job)) => Err(Busy {
                closed: true,
                updates: job.updates,
                done: job.done,
            }),
        }
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &Arc<GroupCommitStats> {
        &self.stats
    }

    /// Stops accepting submissions, writes everything already queued, waits for the
    /// writer to finish. Idempotent.
    pub fn shutdown(&self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let t = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = t {
            if t.join().is_err() {
                tracing::error!("group-commit writer thread panicked");
            }
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn writer_loop(
    storage: Arc<dyn Storage>,
    cfg: GroupCommitConfig,
    rx: Receiver<Job>,
    stats: Arc<GroupCommitStats>,
) {
    let max_updates = cfg.max_batch_updates.max(1);
    let max_bytes = cfg.max_batch_bytes.max(1);
    // A job that did not fit the previous batch opens the next one (FIFO kept).
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return, // all senders gone and queue drained
            },
        };
        let mut n_updates = first.updates.len();
        let mut n_bytes = first.bytes;
        let mut jobs = vec![first];
        let deadline = Instant::now() + cfg.max_wait;
        while n_updates < max_updates && n_bytes < max_bytes {
            let next = match rx.try_recv() {
                Ok(j) => Some(j),
                Err(_) if cfg.max_wait.is_zero() => None,
                Err(_) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    // Timeout or disconnect: write what we have.
                    rx.recv_timeout(left).ok()
                }
            };
            let Some(j) = next else { break };
            if n_updates + j.updates.len() > max_updates || n_bytes + j.bytes > max_bytes {
                carry = Some(j);
                break;
            }
            n_updates += j.updates.len();
            n_bytes += j.bytes;
            jobs.push(j);
        }
        let mut merged = Vec::with_capacity(n_updates);
        let mut dones = Vec::with_capacity(jobs.len());
        for j in jobs {
            merged.extend(j.updates);
            dones.push(j.done);
        }
        let t0 = Instant::now();
        let res = storage.write_batch(&merged);
        let nanos = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .updates
            .fetch_add(merged.len() as u64, Ordering::Relaxed);
        stats.fsync_nanos_total.fetch_add(nanos, Ordering::Relaxed);
        stats.fsync_nanos_max.fetch_max(nanos, Ordering::Relaxed);
        stats.fsync_nanos_last.store(nanos, Ordering::Relaxed);
        if let Err(e) = &res {
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(updates = merged.len(), "group commit batch failed: {e}");
        }
        for done in dones {
            let r = res.clone();
            if catch_unwind(AssertUnwindSafe(move || done(r))).is_err() {
                stats.callback_panics.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
