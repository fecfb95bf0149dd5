//! Error injection: a [`Storage`] wrapper whose writes (or all operations) fail on demand,
//! so error paths (group-commit fan-out, server error replies) can be tested without
//! breaking a real disk.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::{EntityImage, EntityUpdate, Snapshot, Storage, StorageError};

/// What [`FailingStorage`] does to each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FailMode {
    /// Pass everything through.
    Never = 0,
    /// Writes return [`StorageError::Injected`]; reads pass through.
    Writes = 1,
    /// Writes return [`StorageError::DiskFull`]; reads pass through.
    DiskFull = 2,
    /// Every call returns [`StorageError::Injected`].
    Everything = 3,
}

/// Wraps another storage; the failure mode can be flipped at any time from any thread.
pub struct FailingStorage {
    inner: Arc<dyn Storage>,
    mode: AtomicU8,
    failures: AtomicU64,
}

impl FailingStorage {
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        FailingStorage {
            inner,
            mode: AtomicU8::new(FailMode::Never as u8),
            failures: AtomicU64::new(0),
        }
    }

    pub fn set_mode(&self, m: FailMode) {
        self.mode.store(m as u8, Ordering::SeqCst);
    }

    pub fn mode(&self) -> FailMode {
        match self.mode.load(Ordering::SeqCst) {
            1 => FailMode::Writes,
            2 => FailMode::DiskFull,
            3 => FailMode::Everything,
            _ => FailMode::Never,
        }
    }

    /// How many calls were failed on purpose so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }

    fn check(&self, write: bool) -> Result<(), StorageError> {
        let err = match (self.mode(), write) {
            (FailMode::Never, _) | (FailMode::Writes | FailMode::DiskFull, false) => return Ok(()),
            (FailMode::DiskFull, true) => StorageError::DiskFull {
                path: PathBuf::from("<injected>"),
                detail: "injected ENOSPC".into(),
            },
            _ => StorageError::Injected(if write { "write" } else { "read" }.into()),
        };
        self.failures.fetch_add(1, Ordering::SeqCst);
        Err(err)
    }
}

impl Storage for FailingStorage {
    fn load(&self, entity: &[u8]) -> Result<EntityImage, StorageError> {
        self.check(false)?;
        self.inner.load(entity)
    }
    fn write_batch(&self, batch: &[EntityUpdate]) -> Result<(), StorageError> {
        self.check(true)?;
        self.inner.write_batch(batch)
    }
    fn read_record(&self, entity: &[u8], entry: u64) -> Result<Option<Bytes>, StorageError> {
        self.check(false)?;
        self.inner.read_record(entity, entry)
    }
    fn snapshot(&self, entity: &[u8]) -> Result<Snapshot, StorageError> {
        self.check(false)?;
        self.inner.snapshot(entity)
    }
    fn install_snapshot(&self, entity: &[u8], snap: &Snapshot) -> Result<(), StorageError> {
        self.check(true)?;
        self.inner.install_snapshot(entity, snap)
    }
    fn for_each_entity(&self, f: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), StorageError> {
        self.check(false)?;
        self.inner.for_each_entity(f)
    }
    fn disk_usage(&self) -> Result<u64, StorageError> {
        self.check(false)?;
        self.inner.disk_usage()
    }
    fn get_node_meta(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        self.check(false)?;
        self.inner.get_node_meta(key)
    }
    fn put_node_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.check(true)?;
        self.inner.put_node_meta(key, value)
    }
}
