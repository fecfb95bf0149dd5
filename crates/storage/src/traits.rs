//! The storage interface the consensus layer programs against.

use bytes::Bytes;

use crate::{EntityImage, EntityUpdate, Snapshot, StorageError};

/// Durable per-entity storage of Paxos records and applied key/value state.
pub trait Storage: Send + Sync + 'static {
    /// Everything stored for `entity`; an empty image if the entity is unknown.
    fn load(&self, entity: &[u8]) -> Result<EntityImage, StorageError>;

    /// Atomic: all updates or none. Durable (fdatasync'd) when it returns Ok.
    fn write_batch(&self, batch: &[EntityUpdate]) -> Result<(), StorageError>;

    /// One retained record, `None` if absent (never written or trimmed).
    fn read_record(&self, entity: &[u8], entry: u64) -> Result<Option<Bytes>, StorageError>;

    /// The entity's applied state, to send to a lagging peer.
    fn snapshot(&self, entity: &[u8]) -> Result<Snapshot, StorageError>;

    /// Replace the entity's applied kv with the snapshot, set applied_entry, drop records
    /// with entry <= applied_entry. Metadata is kept. Durable on return.
    fn install_snapshot(&self, entity: &[u8], snap: &Snapshot) -> Result<(), StorageError>;

    /// Calls `f` with every known entity id in ascending byte order, until it returns false.
    fn for_each_entity(&self, f: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), StorageError>;

    /// Bytes used on disk (approximate for real engines).
    fn disk_usage(&self) -> Result<u64, StorageError>;

    /// Node-level flags (e.g. "rejoin").
    fn get_node_meta(&self, key: &str) -> Result<Option<Bytes>, StorageError>;

    /// Durable when it returns Ok.
    fn put_node_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError>;
}
