//! Plain data types exchanged with the consensus layer. Records, keys, values and
//! metadata are opaque bytes: this crate never interprets them.

use bytes::Bytes;

/// Everything stored for one entity, as returned by [`crate::Storage::load`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntityImage {
    /// Retained or pending log records, ascending by entry.
    pub records: Vec<(u64, Bytes)>,
    /// Highest entry whose value has been applied to `kv`.
    pub applied_entry: u64,
    /// Applied keys and values, sorted by key.
    pub kv: Vec<(Bytes, Bytes)>,
    /// Opaque per-entity metadata; empty if none was ever written.
    pub meta: Bytes,
}

/// Application of chosen entries to the entity's key/value state.
///
/// Order inside one `Apply`: `clear` first, then `deletes`, then `puts`
/// (so a key both deleted and put ends up present).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Apply {
    /// New applied entry (replaces the old one).
    pub applied_entry: u64,
    /// Delete all keys of the entity before applying `deletes` and `puts`.
    pub clear: bool,
    pub puts: Vec<(Bytes, Bytes)>,
    pub deletes: Vec<Bytes>,
}

/// One entity's part of an atomic [`crate::Storage::write_batch`].
///
/// Order inside one update: `whole`, `put_records`, then `trim_below`, then `apply`,
/// then `meta`. Several updates for the same entity in one batch are applied in slice
/// order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntityUpdate {
    pub entity: Bytes,
    /// The update states the entity's entire stored state: it starts from an empty
    /// entity (no records, key/values, metadata or applied entry), so storage writes
    /// it without reading what was there. For entities that keep their state in
    /// their records (the server's PaxosLog-as-value), never for one whose key/values
    /// were written through `apply` (their rows stored apart would be orphaned).
    pub whole: bool,
    /// Records to insert or overwrite, by entry.
    pub put_records: Vec<(u64, Bytes)>,
    /// Delete records with `entry < trim_below`.
    pub trim_below: Option<u64>,
    pub apply: Option<Apply>,
    /// Replace the entity's metadata.
    pub meta: Option<Bytes>,
}

impl EntityUpdate {
    /// An update that does nothing yet for `entity`; fill the fields you need.
    pub fn new(entity: impl Into<Bytes>) -> Self {
        EntityUpdate {
            entity: entity.into(),
            ..Default::default()
        }
    }

    /// Approximate encoded size, used by group commit to bound batch bytes.
    pub fn approx_bytes(&self) -> usize {
        let recs: usize = self.put_records.iter().map(|(_, r)| 8 + r.len()).sum();
        let apply = self.apply.as_ref().map_or(0, |a| {
            a.puts.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
                + a.deletes.iter().map(|k| k.len()).sum::<usize>()
                + 16
        });
        self.entity.len() + recs + apply + self.meta.as_ref().map_or(0, |m| m.len()) + 16
    }
}

/// The applied state of an entity, transferred to a replica whose peers trimmed the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub applied_entry: u64,
    /// Keys and values, sorted by key.
    pub kv: Vec<(Bytes, Bytes)>,
}
