//! Deterministic in-memory storage with explicit crash semantics, for the simulator.
//!
//! Two layers: `durable` (survives [`MemStorage::crash`]) and an ordered list of staged
//! batches (visible to reads, lost whole on crash unless made durable). Only `BTreeMap`
//! and `Vec` are used so that iteration order never depends on hashing.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

use crate::model::EntityState;
use crate::{EntityImage, EntityUpdate, Snapshot, Storage, StorageError};

#[derive(Debug, Clone, Default)]
struct State {
    entities: BTreeMap<Bytes, EntityState>,
    node_meta: BTreeMap<String, Bytes>,
}

#[derive(Debug, Default)]
struct Inner {
    durable: State,
    /// Durable state plus every staged batch, i.e. what reads see.
    visible: State,
    /// Staged (not yet durable) batches, ascending ticket.
    staged: Vec<(u64, Vec<EntityUpdate>)>,
    next_ticket: u64,
}

/// In-memory [`Storage`]. Writes through the trait are durable at once; use
/// [`MemStorage::stage`] + [`MemStorage::make_durable`] to model an in-flight fsync.
#[derive(Debug, Default)]
pub struct MemStorage {
    inner: Mutex<Inner>,
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated in a way we
        // care about (every mutation is a whole-batch clone-and-apply), so recover.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `batch` (visible to reads at once) without making it durable. Returns a
    /// ticket; tickets are increasing, starting at 1.
    pub fn stage(&self, batch: Vec<EntityUpdate>) -> u64 {
        let mut g = self.lock();
        g.next_ticket += 1;
        let t = g.next_ticket;
        apply_batch(&mut g.visible, &batch);
        g.staged.push((t, batch));
        t
    }

    /// Makes every staged batch with ticket <= `upto_ticket` durable, in order.
    pub fn make_durable(&self, upto_ticket: u64) {
        let mut g = self.lock();
        let n = g.staged.partition_point(|(t, _)| *t <= upto_ticket);
        let done: Vec<_> = g.staged.drain(..n).collect();
        for (_, batch) in &done {
            apply_batch(&mut g.durable, batch);
        }
    }

    /// Number of staged, not yet durable batches.
    pub fn staged_len(&self) -> usize {
        self.lock().staged.len()
    }

    /// Simulated power loss: every staged batch not yet durable disappears, whole.
    pub fn crash(&self) {
        let mut g = self.lock();
        g.staged.clear();
        g.visible = g.durable.clone();
    }

    /// Simulated disk replacement: everything is gone, durable or not.
    pub fn wipe(&self) {
        let mut g = self.lock();
        *g = Inner {
            next_ticket: g.next_ticket,
            ..Inner::default()
        };
    }

    /// An immediately durable write. Staged batches precede it in log order, so (like a
    /// journal fsync) it makes all of them durable first, then applies `f` to both layers.
    fn write_durable(&self, f: impl Fn(&mut State)) {
        let mut g = self.lock();
        let staged: Vec<_> = g.staged.drain(..).collect();
        for (_, b) in &staged {
            apply_batch(&mut g.durable, b);
        }
        f(&mut g.durable);
        f(&mut g.visible);
    }
}

fn apply_batch(s: &mut State, batch: &[EntityUpdate]) {
    for u in batch {
        s.entities
            .entry(u.entity.clone())
            .or_default()
            .apply_update(u);
    }
}

impl Storage for MemStorage {
    fn load(&self, entity: &[u8]) -> Result<EntityImage, StorageError> {
        Ok(self
            .lock()
            .visible
            .entities
            .get(entity)
            .map(EntityState::image)
            .unwrap_or_default())
    }

    fn write_batch(&self, batch: &[EntityUpdate]) -> Result<(), StorageError> {
        self.write_durable(|s| apply_batch(s, batch));
        Ok(())
    }

    fn read_record(&self, entity: &[u8], entry: u64) -> Result<Option<Bytes>, StorageError> {
        Ok(self
            .lock()
            .visible
            .entities
            .get(entity)
            .and_then(|e| e.records.get(&entry).cloned()))
    }

    fn snapshot(&self, entity: &[u8]) -> Result<Snapshot, StorageError> {
        Ok(self
            .lock()
            .visible
            .entities
            .get(entity)
            .map(EntityState::snapshot)
            .unwrap_or_default())
    }

    fn install_snapshot(&self, entity: &[u8], snap: &Snapshot) -> Result<(), StorageError> {
        let key = Bytes::copy_from_slice(entity);
        self.write_durable(|s| {
            s.entities
                .entry(key.clone())
                .or_default()
                .install_snapshot(snap)
        });
        Ok(())
    }

    fn for_each_entity(&self, f: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), StorageError> {
        // Collect first so the callback may call back into this storage.
        let keys: Vec<Bytes> = self.lock().visible.entities.keys().cloned().collect();
        for k in keys {
            if !f(&k) {
                break;
            }
        }
        Ok(())
    }

    fn disk_usage(&self) -> Result<u64, StorageError> {
        let g = self.lock();
        let ents: usize = g
            .durable
            .entities
            .iter()
            .map(|(k, e)| {
                k.len()
                    + e.meta.len()
                    + e.records.values().map(|r| r.len() + 8).sum::<usize>()
                    + e.kv.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
            })
            .sum();
        Ok(ents as u64)
    }

    fn get_node_meta(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        Ok(self.lock().visible.node_meta.get(key).cloned())
    }

    fn put_node_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        let v = Bytes::copy_from_slice(value);
        self.write_durable(|s| {
            s.node_meta.insert(key.to_string(), v.clone());
        });
        Ok(())
    }
}
