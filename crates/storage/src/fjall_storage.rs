//! [`Storage`] on fjall, laid out as PaxosLog-as-value.
//!
//! Partitions:
//! * `entities`: key = entity id, value = [`EntityRow`] (applied entry, metadata, retained
//!   records, and the applied value itself while the entity's only key is the entity id).
//!   A single-key PaxosKV update is therefore ONE row write.
//! * `kv`: for entities with other keys, one row per applied key,
//!   key = u32-BE len(entity) ++ entity ++ user key. Once an entity spills it stays spilled
//!   until an `Apply { clear: true, .. }` (or snapshot install) makes it inline-able again:
//!   staying spilled avoids counting keys on every write.
//! * `node`: node-level metadata.
//!
//! Every value carries a version byte and a CRC32C (see `codec`). Writes are serialised by
//! a mutex (each batch is read-modify-write of rows) and committed as one fjall batch whose
//! journal write is fdatasync'd before `write_batch` returns.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

use crate::codec::{
    decode_row, decode_value, encode_row, encode_value, kv_key, kv_prefix, show, EntityRow, KvPlace,
};
use crate::format;
use crate::model::apply_kv;
use crate::{Apply, EntityImage, EntityUpdate, Snapshot, Storage, StorageError};

const P_ENTITIES: &str = "entities";
const P_KV: &str = "kv";
const P_NODE: &str = "node";

/// Below this many free bytes a poisoned engine is reported as [`StorageError::DiskFull`]
/// (fjall hides the io error of a failed journal sync behind `Poisoned`).
const LOW_SPACE_BYTES: u64 = 1 << 20;

/// Tuning knobs; the defaults suit a node with a few GiB of RAM.
#[derive(Debug, Clone)]
pub struct FjallOptions {
    /// Block cache size.
    pub cache_bytes: u64,
    /// Journal size that triggers memtable flushes (bounds recovery time and disk).
    pub max_journal_bytes: u64,
    /// Total memtable size across partitions.
    pub max_write_buffer_bytes: u64,
    /// Memtable size of one partition at which it is flushed to a segment.
    pub memtable_bytes: u32,
    /// Flush and compaction threads each (the machines have few cores).
    pub background_workers: usize,
    /// Memory for rows kept after writing them, so that the next update of the same
    /// entity skips reading its row back (0 = off).
    pub row_cache_bytes: usize,
    /// How on-disk segments are merged.
    pub compaction: Compaction,
    /// Size of a data block, the unit a point read fetches and decodes whole (1 KiB to
    /// 512 KiB). fjall keeps a partition's block size from its creation: this applies
    /// to data directories created with it.
    pub data_block_bytes: u32,
}

/// How the storage engine merges its on-disk segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compaction {
    /// Size-tiered: a level's runs are merged into the next once there are a few of
    /// them; every row is rewritten about once per level. Measured with 64 clients
    /// writing over 1 M keys: writes +32 % and server CPU per write -24 % against
    /// leveled, with cold reads within 2 % (bloom filters keep a point read to about
    /// one block).
    #[default]
    Tiered,
    /// Leveled: fewer overlapping runs (less space and read amplification), each
    /// row rewritten up to ten times per level.
    Leveled,
}

impl Default for FjallOptions {
    fn default() -> Self {
        FjallOptions {
            cache_bytes: 64 << 20,
            max_journal_bytes: 256 << 20,
            max_write_buffer_bytes: 64 << 20,
            memtable_bytes: 16 << 20,
            background_workers: 1,
            row_cache_bytes: 32 << 20,
            compaction: Compaction::default(),
            // fjall's 4 KiB. 1 KiB makes an isolated uncached point read cheaper
            // (benches/point_read.rs: 6.2-7.0 us against 8.2-8.3), and 3 M-key runs
            // were within noise of 4 KiB, but at 10 M keys the side-by-side run with
            // 1 KiB gave 2 169 writes/s (656 timeouts) and 9 504 reads/s, where
            // bench/after_preload.sh with 4 KiB gave 5 654 and 17 206 (one run each).
            data_block_bytes: 4 << 10,
        }
    }
}

/// The real, durable engine. See the module docs for the layout.
pub struct FjallStorage {
    dir: PathBuf,
    keyspace: Keyspace,
    entities: PartitionHandle,
    kv: PartitionHandle,
    node: PartitionHandle,
    /// Serialises read-modify-write batches, and holds the rows they last wrote.
    write_lock: Mutex<RowCache>,
}

/// Rows as the last committed batches left them, so that the next update of an entity
/// skips the read and decode of its row (the group-commit writer's main cost when
/// every entity is written again and again). Bounded: oldest insertions go first.
/// Only touched under the write lock; an entity's entry is dropped when a batch
/// writing it fails, so a hit always equals the row on disk.
struct RowCache {
    /// Row, its size, and the generation of its latest insertion.
    /// Boxed so that growing the table moves 24-byte values, not whole rows: with
    /// rows inline, each doubling copied the table into freshly faulted memory while
    /// holding the writer (and every write): 9 % of the writer's samples in a 15 s
    /// write run over 100 k keys.
    rows: HashMap<Bytes, (Box<EntityRow>, usize, u64)>,
    /// Insertion order; an item whose generation is not the row's current one is
    /// stale (the entity was written again, or forgotten) and is skipped.
    order: VecDeque<(Bytes, u64)>,
    next_gen: u64,
    bytes: usize,
    max_bytes: usize,
}

/// Approximate memory of a cached row (its buffers plus bookkeeping).
fn row_bytes(entity: &[u8], row: &EntityRow) -> usize {
    let inline = match &row.kv {
        KvPlace::Inline(Some(v)) => v.len(),
        _ => 0,
    };
    let records: usize = row.records.values().map(|r| r.len() + 48).sum();
    128 + entity.len() * 2 + row.meta.len() + inline + records
}

impl RowCache {
    fn new(max_bytes: usize) -> Self {
        Self {
            rows: HashMap::new(),
            order: VecDeque::new(),
            next_gen: 0,
            bytes: 0,
            max_bytes,
        }
    }

    fn get(&self, entity: &[u8]) -> Option<&EntityRow> {
        self.rows.get(entity).map(|(r, _, _)| &**r)
    }

    fn put(&mut self, entity: Bytes, row: EntityRow) {
        let size = row_bytes(&entity, &row);
        self.forget(&entity);
        // A row too big for its share is read from disk when next needed.
        if size > self.max_bytes / 16 {
            return;
        }
        self.next_gen += 1;
        let gen = self.next_gen;
        self.bytes += size;
        self.order.push_back((entity.clone(), gen));
        self.rows.insert(entity, (Box::new(row), size, gen));
        while self.bytes > self.max_bytes {
            let Some((old, g)) = self.order.pop_front() else {
                break;
            };
            if self.rows.get(&old).is_some_and(|(_, _, cur)| *cur == g) {
                self.forget(&old);
            }
        }
        // Stale items (rewritten or forgotten entities) stay in `order` until they come
        // up; drop them once they outnumber the live ones. After this pass `order`
        // holds exactly one item per row, so the pass runs at most once per
        // `rows.len() + 1024` insertions: amortised O(1).
        if self.order.len() > 2 * self.rows.len() + 1024 {
            let rows = &self.rows;
            self.order
                .retain(|(k, g)| rows.get(k).is_some_and(|(_, _, cur)| cur == g));
        }
    }

    fn forget(&mut self, entity: &[u8]) {
        if let Some((_, size, _)) = self.rows.remove(entity) {
            self.bytes -= size;
        }
    }
}

impl std::fmt::Debug for FjallStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStorage")
            .field("dir", &self.dir)
            .finish()
    }
}

/// An entity being changed by a batch: its row plus what we know of its key/values.
struct Work {
    row: EntityRow,
    kv: WorkKv,
    /// The entity had rows in `kv` before this batch.
    disk_spilled: bool,
    /// Those rows must all be deleted (a clear happened).
    clear_disk: bool,
    /// Started from an empty row (`EntityUpdate::whole`): the row cache is not
    /// needed for the next update, which will be whole too.
    whole: bool,
}

enum WorkKv {
    /// The complete key/value set.
    Known(BTreeMap<Bytes, Bytes>),
    /// Spilled entity: only the changes; unchanged keys stay on disk.
    Partial(BTreeMap<Bytes, Option<Bytes>>),
}

impl Work {
    fn from_row(entity: &Bytes, mut row: EntityRow) -> Work {
        let (kv, disk_spilled) = match std::mem::replace(&mut row.kv, KvPlace::Inline(None)) {
            KvPlace::Inline(None) => (WorkKv::Known(BTreeMap::new()), false),
            KvPlace::Inline(Some(v)) => {
                (WorkKv::Known(BTreeMap::from([(entity.clone(), v)])), false)
            }
            KvPlace::Spilled => (WorkKv::Partial(BTreeMap::new()), true),
        };
        Work {
            row,
            kv,
            disk_spilled,
            clear_disk: false,
            whole: false,
        }
    }

    fn apply(&mut self, a: &Apply) {
        if a.clear {
            self.kv = WorkKv::Known(BTreeMap::new());
            self.clear_disk = self.disk_spilled;
        }
        match &mut self.kv {
            WorkKv::Known(m) => apply_kv(
                m,
                &Apply {
                    clear: false,
                    ..a.clone()
                },
            ),
            WorkKv::Partial(o) => {
                for k in &a.deletes {
                    o.insert(k.clone(), None);
                }
                for (k, v) in &a.puts {
                    o.insert(k.clone(), Some(v.clone()));
                }
            }
        }
        self.row.applied_entry = a.applied_entry;
    }

    fn update(&mut self, u: &EntityUpdate) {
        for (entry, rec) in &u.put_records {
            self.row.records.insert(*entry, rec.clone());
        }
        if let Some(t) = u.trim_below {
            self.row.records = self.row.records.split_off(&t);
        }
        if let Some(a) = &u.apply {
            self.apply(a);
        }
        if let Some(m) = &u.meta {
            self.row.meta = m.clone();
        }
    }
}

impl FjallStorage {
    /// Opens (creating if missing or empty) the data directory `dir`.
    pub fn open(dir: &Path, opts: FjallOptions) -> Result<Self, StorageError> {
        let found = format::check_or_init(dir)?;
        let dirb = dir.to_path_buf();
        let workers = opts.background_workers.max(1);
        // fjall should never panic on bad files, but a panic here must not take the node
        // down with it: turn it into an error naming the directory.
        let opened = catch_unwind(AssertUnwindSafe(|| -> Result<_, StorageError> {
            let ks = Config::new(dir)
                .cache_size(opts.cache_bytes)
                .max_journaling_size(opts.max_journal_bytes)
                .max_write_buffer_size(opts.max_write_buffer_bytes)
                .flush_workers(workers)
                .compaction_workers(workers)
                .open()
                .map_err(|e| map_fjall(&dirb, e))?;
            let part = |name: &str| {
                let strategy = match opts.compaction {
                    Compaction::Tiered => fjall::compaction::Strategy::SizeTiered(
                        fjall::compaction::SizeTiered::default(),
                    ),
                    Compaction::Leveled => {
                        fjall::compaction::Strategy::Leveled(fjall::compaction::Leveled::default())
                    }
                };
                let opts = PartitionCreateOptions::default()
                    .block_size(opts.data_block_bytes.clamp(1 << 10, 512 << 10))
                    .max_memtable_size(opts.memtable_bytes.max(1 << 20))
                    .compaction_strategy(strategy);
                ks.open_partition(name, opts)
                    .map_err(|e| map_fjall(&dirb.join("partitions").join(name), e))
            };
            let entities = part(P_ENTITIES)?;
            let kv = part(P_KV)?;
            let node = part(P_NODE)?;
            Ok((ks, entities, kv, node))
        }));
        let (keyspace, entities, kv, node) = match opened {
            Ok(r) => r?,
            Err(_) => {
                return Err(StorageError::Corrupt {
                    what: dir.display().to_string(),
                    detail: "storage engine panicked while opening (corrupt files?)".into(),
                })
            }
        };
        if found == format::Found::Creating {
            // Every partition exists in full on disk now; only then is it ours to keep.
            keyspace
                .persist(PersistMode::SyncAll)
                .map_err(|e| map_fjall(dir, e))?;
            format::finish_creation(dir)?;
        }
        Ok(FjallStorage {
            dir: dir.to_path_buf(),
            keyspace,
            entities,
            kv,
            node,
            write_lock: Mutex::new(RowCache::new(opts.row_cache_bytes)),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn err(&self, e: fjall::Error) -> StorageError {
        map_fjall(&self.dir, e)
    }

    fn lock(&self) -> MutexGuard<'_, RowCache> {
        // A panic in another writer leaves the cache at worst missing entries (rows are
        // only inserted after their batch committed).
        self.write_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_row(&self, entity: &[u8]) -> Result<Option<EntityRow>, StorageError> {
        match self.entities.get(entity).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(v) => decode_row(&v, || row_what(entity)).map(Some),
        }
    }

    /// Keys (full kv-partition keys) currently on disk for a spilled entity.
    fn disk_kv_keys(&self, entity: &[u8]) -> Result<Vec<fjall::UserKey>, StorageError> {
        self.kv
            .prefix(kv_prefix(entity))
            .map(|r| r.map(|(k, _)| k).map_err(|e| self.err(e)))
            .collect()
    }

    /// Turns finished works into one fjall batch, commits it and fdatasyncs the journal.
    fn commit(
        &self,
        cache: &mut RowCache,
        works: BTreeMap<Bytes, Work>,
    ) -> Result<(), StorageError> {
        let mut written = Vec::with_capacity(works.len());
        let mut batch = self
            .keyspace
            .batch()
            .durability(Some(PersistMode::SyncData));
        for (entity, mut w) in works {
            let known_inline = |m: &BTreeMap<Bytes, Bytes>| {
                m.is_empty() || (m.len() == 1 && m.contains_key(&entity))
            };
            match w.kv {
                WorkKv::Known(m) if known_inline(&m) => {
                    if w.disk_spilled {
                        for k in self.disk_kv_keys(&entity)? {
                            batch.remove(&self.kv, k);
                        }
                    }
                    w.row.kv = KvPlace::Inline(m.get(&entity).cloned());
                }
                WorkKv::Known(m) => {
                    if w.clear_disk {
                        let prefix_len = kv_prefix(&entity).len();
                        for k in self.disk_kv_keys(&entity)? {
                            if !m.contains_key(&k[prefix_len..]) {
                                batch.remove(&self.kv, k);
                            }
                        }
                    }
                    for (k, v) in &m {
                        batch.insert(&self.kv, kv_key(&entity, k), encode_value(v));
                    }
                    w.row.kv = KvPlace::Spilled;
                }
                WorkKv::Partial(o) => {
                    for (k, op) in &o {
                        match op {
                            Some(v) => batch.insert(&self.kv, kv_key(&entity, k), encode_value(v)),
                            None => batch.remove(&self.kv, kv_key(&entity, k)),
                        }
                    }
                    w.row.kv = KvPlace::Spilled;
                }
            }
            batch.insert(&self.entities, entity.to_vec(), encode_row(&w.row));
            written.push((entity, w.row, w.whole));
        }
        match batch.commit() {
            Ok(()) => {
                for (entity, row, whole) in written {
                    if whole {
                        // Keeping a copy costs more than it saves: the next update
                        // of this entity will not read its row either.
                        cache.forget(&entity);
                    } else {
                        cache.put(entity, row);
                    }
                }
                Ok(())
            }
            Err(e) => {
                for (entity, _, _) in &written {
                    cache.forget(entity);
                }
                Err(self.err(e))
            }
        }
    }

    fn work_for<'a>(
        &self,
        cache: &RowCache,
        works: &'a mut BTreeMap<Bytes, Work>,
        entity: &Bytes,
    ) -> Result<&'a mut Work, StorageError> {
        if !works.contains_key(entity) {
            let row = match cache.get(entity) {
                Some(row) => row.clone(),
                None => self.read_row(entity)?.unwrap_or_default(),
            };
            works.insert(entity.clone(), Work::from_row(entity, row));
        }
        works.get_mut(entity).ok_or(StorageError::Closed)
    }
}

fn row_what(entity: &[u8]) -> String {
    format!("partition {P_ENTITIES}, entity \"{}\"", show(entity))
}

/// Sum of file sizes under `dir` (the engine nests at most a few levels; bounded anyway).
fn dir_size(dir: &Path, depth: u32) -> Result<u64, StorageError> {
    if depth > 8 {
        return Ok(0);
    }
    let mut total = 0;
    for ent in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let ent = ent.map_err(|e| StorageError::io(dir, e))?;
        let path = ent.path();
        match ent.metadata() {
            Ok(m) if m.is_dir() => total += dir_size(&path, depth + 1)?,
            Ok(m) => total += std::os::unix::fs::MetadataExt::blocks(&m) * 512,
            // Files vanish under us while compaction runs; that is not an error.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io(path, e)),
        }
    }
    Ok(total)
}

fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Maps a fjall error to a typed error naming `path`.
fn map_fjall(path: &Path, e: fjall::Error) -> StorageError {
    use fjall::Error as F;
    use fjall::LsmError as L;
    match e {
        F::Io(io) | F::Storage(L::Io(io)) => StorageError::io(path, io),
        F::Poisoned => match free_bytes(path) {
            Some(free) if free < LOW_SPACE_BYTES => StorageError::DiskFull {
                path: path.to_path_buf(),
                detail: format!("journal sync failed with {free} bytes free"),
            },
            _ => StorageError::Poisoned {
                path: path.to_path_buf(),
            },
        },
        F::InvalidVersion(v) => StorageError::UnsupportedFormat {
            dir: path.to_path_buf(),
            found: format!("fjall version {v:?}"),
            supported: format::FORMAT_VERSION,
        },
        e @ (F::Decode(_) | F::JournalRecovery(_) | F::Storage(_)) => StorageError::Corrupt {
            what: path.display().to_string(),
            detail: format!("{e:?}"),
        },
        other => StorageError::Engine {
            path: path.to_path_buf(),
            detail: format!("{other:?}"),
        },
    }
}

impl Storage for FjallStorage {
    fn load(&self, entity: &[u8]) -> Result<EntityImage, StorageError> {
        // No fjall snapshot here. fjall drops old versions of a key only below a
        // watermark that its snapshot tracker raises at every 50th snapshot closed, or,
        // while it tracks none, every 250 ms; a closed snapshot stays tracked until
        // such a 50th close. So once loads stop (the working set is cached), the
        // watermark froze where they stopped, and every later write of every entity
        // stayed on disk for good: 20 000 hot entities took 563 MiB after 300 s, and
        // growing; without snapshots, about 60 MiB and flat (`bench/growth.sh`).
        let Some(mut row) = self.read_row(entity)? else {
            return Ok(EntityImage::default());
        };
        if matches!(row.kv, KvPlace::Spilled) {
            // Row and key/values must come from one state: every writer commits under
            // the write lock, so read both under it (only entities written through
            // `apply` spill; the server's never do).
            let _writers = self.lock();
            row = match self.read_row(entity)? {
                Some(r) => r,
                None => return Ok(EntityImage::default()),
            };
        }
        let kv = match row.kv {
            KvPlace::Inline(None) => Vec::new(),
            KvPlace::Inline(Some(v)) => vec![(Bytes::copy_from_slice(entity), v)],
            KvPlace::Spilled => {
                let prefix = kv_prefix(entity);
                let mut out = Vec::new();
                for item in self.kv.prefix(&prefix) {
                    let (k, v) = item.map_err(|e| self.err(e))?;
                    let user_key = Bytes::copy_from_slice(&k[prefix.len()..]);
                    let v = decode_value(&v, || {
                        format!(
                            "partition {P_KV}, entity \"{}\", key \"{}\"",
                            show(entity),
                            show(&user_key)
                        )
                    })?;
                    out.push((user_key, v));
                }
                out
            }
        };
        Ok(EntityImage {
            records: row.records.into_iter().collect(),
            applied_entry: row.applied_entry,
            kv,
            meta: row.meta,
        })
    }

    fn write_batch(&self, batch: &[EntityUpdate]) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut cache = self.lock();
        let mut works = BTreeMap::new();
        for u in batch {
            if u.whole {
                // The update replaces the row: no read, no cached copy needed.
                let mut w = Work::from_row(&u.entity, EntityRow::default());
                w.whole = true;
                works.insert(u.entity.clone(), w);
            }
            self.work_for(&cache, &mut works, &u.entity)?.update(u);
        }
        self.commit(&mut cache, works)
    }

    fn read_record(&self, entity: &[u8], entry: u64) -> Result<Option<Bytes>, StorageError> {
        Ok(self
            .read_row(entity)?
            .and_then(|mut r| r.records.remove(&entry)))
    }

    fn snapshot(&self, entity: &[u8]) -> Result<Snapshot, StorageError> {
        let img = self.load(entity)?;
        Ok(Snapshot {
            applied_entry: img.applied_entry,
            kv: img.kv,
        })
    }

    fn install_snapshot(&self, entity: &[u8], snap: &Snapshot) -> Result<(), StorageError> {
        let mut cache = self.lock();
        let entity = Bytes::copy_from_slice(entity);
        let mut works = BTreeMap::new();
        let w = self.work_for(&cache, &mut works, &entity)?;
        w.apply(&Apply {
            applied_entry: snap.applied_entry,
            clear: true,
            puts: snap.kv.clone(),
            deletes: Vec::new(),
        });
        w.row.records = match snap.applied_entry.checked_add(1) {
            Some(first_kept) => w.row.records.split_off(&first_kept),
            None => BTreeMap::new(),
        };
        self.commit(&mut cache, works)
    }

    fn for_each_entity(&self, f: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), StorageError> {
        for k in self.entities.keys() {
            let k = k.map_err(|e| self.err(e))?;
            if !f(&k) {
                break;
            }
        }
        Ok(())
    }

    fn disk_usage(&self) -> Result<u64, StorageError> {
        // Allocated blocks, not lengths: fjall pre-sizes its journal (sparse) to 32 MiB.
        dir_size(&self.dir, 0)
    }

    fn get_node_meta(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        match self.node.get(key).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(v) => decode_value(&v, || {
                format!("partition {P_NODE}, key \"{}\"", show(key.as_bytes()))
            })
            .map(Some),
        }
    }

    fn put_node_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        let _g = self.lock();
        let mut batch = self
            .keyspace
            .batch()
            .durability(Some(PersistMode::SyncData));
        batch.insert(&self.node, key, encode_value(value));
        batch.commit().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes to entities that stay cached (no more loads) must not pile up on disk:
    /// fjall drops a key's old versions only below its snapshot tracker's watermark.
    #[test]
    fn old_versions_are_dropped_once_loads_stop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FjallStorage::open(dir.path(), FjallOptions::default()).expect("open");
        let write = |entry: u64| {
            let mut u = EntityUpdate::new(Bytes::from_static(b"e"));
            u.whole = true;
            u.put_records = vec![(entry, Bytes::from(vec![entry as u8; 1000]))];
            s.write_batch(&[u]).expect("write");
        };
        write(1);
        // A node loads an entity when it first touches it, then keeps it cached.
        for _ in 0..3 {
            assert_eq!(s.load(b"e").expect("load").records.len(), 1);
        }
        for entry in 2..=1000 {
            write(entry);
        }
        // fjall's monitor raises the watermark (to 100 writes back) every 250 ms
        // while no snapshot is tracked; then a flush and a compaction drop the rest.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            s.entities.rotate_memtable_and_wait().expect("flush");
            s.entities.major_compact().expect("compact");
            let versions = s.entities.approximate_len();
            if versions <= 200 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "1000 writes of one entity still hold {versions} versions on disk"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let last = s.load(b"e").expect("load");
        assert_eq!(
            last.records,
            vec![(1000, Bytes::from(vec![1000u64 as u8; 1000]))]
        );
    }

    #[test]
    fn row_cache_stays_within_its_bytes_and_keeps_the_newest() {
        let mut c = RowCache::new(64 << 10);
        let row = |v: u8| EntityRow {
            kv: KvPlace::Inline(Some(Bytes::from(vec![v; 100]))),
            ..EntityRow::default()
        };
        for i in 0..10_000u32 {
            c.put(Bytes::from(i.to_be_bytes().to_vec()), row(i as u8));
            assert!(c.bytes <= 64 << 10);
            assert!(c.order.len() <= 2 * c.rows.len() + 1024);
        }
        assert!(c.get(&9_999u32.to_be_bytes()).is_some(), "newest kept");
        assert!(c.get(&0u32.to_be_bytes()).is_none(), "oldest evicted");
        // Rewriting one entity replaces its row and its size.
        c.put(Bytes::from_static(b"k"), row(1));
        c.put(Bytes::from_static(b"k"), row(2));
        assert_eq!(c.get(b"k"), Some(&row(2)));
        let total: usize = c.rows.values().map(|(_, s, _)| s).sum();
        assert_eq!(total, c.bytes);
        // Rewriting the same entities over and over keeps `order` bounded by the live
        // rows (stale items are dropped), and eviction skips stale items.
        for i in 0..50_000u32 {
            c.put(Bytes::from((i % 7).to_be_bytes().to_vec()), row(i as u8));
            assert!(
                c.order.len() <= 2 * c.rows.len() + 1024,
                "order grew at {i}"
            );
        }
        assert!(c.get(&6u32.to_be_bytes()).is_some());
        // A row bigger than its share is not kept.
        c.put(
            Bytes::from_static(b"big"),
            EntityRow {
                kv: KvPlace::Inline(Some(Bytes::from(vec![0; 8 << 10]))),
                ..EntityRow::default()
            },
        );
        assert!(c.get(b"big").is_none());
    }

    #[test]
    fn format_file_is_created_and_checked() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("data");
        drop(FjallStorage::open(&dir, FjallOptions::default()).unwrap());
        assert!(dir.join(format::FORMAT_FILE).exists());
        format::write_version(&dir, format::FORMAT_VERSION + 1).unwrap();
        match FjallStorage::open(&dir, FjallOptions::default()) {
            Err(StorageError::UnsupportedFormat { dir: d2, found, .. }) => {
                assert_eq!(d2, dir);
                assert_eq!(found, (format::FORMAT_VERSION + 1).to_string());
            }
            other => panic!("expected UnsupportedFormat, got {other:?}"),
        }
    }

    /// fjall writes an LSM tree's manifest before its level manifest; a process killed
    /// between the two left a directory that never opened again ("No such file or
    /// directory"). Rebuild that state by hand: the creation marker makes it ours to redo.
    #[test]
    fn creation_cut_short_by_a_kill_is_redone() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("data");
        drop(FjallStorage::open(&dir, FjallOptions::default()).unwrap());
        let levels = dir.join("partitions").join(P_KV).join("levels");
        assert!(levels.exists(), "fjall's layout changed: {levels:?}");
        std::fs::remove_file(&levels).unwrap();
        std::fs::remove_file(dir.join(format::FORMAT_FILE)).unwrap();
        std::fs::write(dir.join(format::CREATING_FILE), b"").unwrap();

        let s = FjallStorage::open(&dir, FjallOptions::default()).unwrap();
        assert!(dir.join(format::FORMAT_FILE).exists());
        assert!(!dir.join(format::CREATING_FILE).exists());
        let mut u = EntityUpdate::new("k");
        u.put_records = vec![(1, Bytes::from_static(b"r"))];
        s.write_batch(&[u]).unwrap();
        drop(s);
        let s = FjallStorage::open(&dir, FjallOptions::default()).unwrap();
        assert_eq!(s.load(b"k").unwrap().records.len(), 1);
    }

    #[test]
    fn half_created_directory_without_the_marker_is_still_refused() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("data");
        drop(FjallStorage::open(&dir, FjallOptions::default()).unwrap());
        std::fs::remove_file(dir.join(format::FORMAT_FILE)).unwrap();
        let err = FjallStorage::open(&dir, FjallOptions::default()).unwrap_err();
        assert!(
            matches!(err, StorageError::UnsupportedFormat { .. }),
            "{err}"
        );
        assert!(
            dir.join("partitions").exists(),
            "refusal must delete nothing"
        );
    }

    #[test]
    fn foreign_non_empty_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("something"), b"x").unwrap();
        let err = FjallStorage::open(d.path(), FjallOptions::default()).unwrap_err();
        assert!(
            matches!(err, StorageError::UnsupportedFormat { .. }),
            "{err}"
        );
    }

    #[test]
    fn single_key_entity_is_one_row() {
        let d = tempfile::tempdir().unwrap();
        let s = FjallStorage::open(d.path(), FjallOptions::default()).unwrap();
        let mut u = EntityUpdate::new("k");
        u.apply = Some(Apply {
            applied_entry: 1,
            puts: vec![(Bytes::from_static(b"k"), Bytes::from_static(b"v"))],
            ..Default::default()
        });
        s.write_batch(&[u]).unwrap();
        assert_eq!(
            s.kv.iter().count(),
            0,
            "inline value must not touch the kv partition"
        );
        assert_eq!(s.entities.iter().count(), 1);
        // A second key spills both into the kv partition...
        let mut u = EntityUpdate::new("k");
        u.apply = Some(Apply {
            applied_entry: 2,
            puts: vec![(Bytes::from_static(b"k2"), Bytes::from_static(b"v2"))],
            ..Default::default()
        });
        s.write_batch(&[u]).unwrap();
        assert_eq!(s.kv.iter().count(), 2);
        // ...and a clear back to the single key brings it inline again.
        let mut u = EntityUpdate::new("k");
        u.apply = Some(Apply {
            applied_entry: 3,
            clear: true,
            puts: vec![(Bytes::from_static(b"k"), Bytes::from_static(b"v3"))],
            ..Default::default()
        });
        s.write_batch(&[u]).unwrap();
        assert_eq!(s.kv.iter().count(), 0);
        let img = s.load(b"k").unwrap();
        assert_eq!(
            img.kv,
            vec![(Bytes::from_static(b"k"), Bytes::from_static(b"v3"))]
        );
        assert_eq!(img.applied_entry, 3);
    }
}
