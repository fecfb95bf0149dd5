//! In-memory entity state and the one definition of how an [`EntityUpdate`] changes it.
//! [`crate::MemStorage`] uses it directly; [`crate::FjallStorage`] mirrors it row-wise.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::{Apply, EntityImage, EntityUpdate, Snapshot};

/// Full state of one entity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EntityState {
    pub records: BTreeMap<u64, Bytes>,
    pub applied_entry: u64,
    pub kv: BTreeMap<Bytes, Bytes>,
    pub meta: Bytes,
}

impl EntityState {
    pub fn apply_update(&mut self, u: &EntityUpdate) {
        if u.whole {
            *self = EntityState::default();
        }
        for (entry, rec) in &u.put_records {
            self.records.insert(*entry, rec.clone());
        }
        if let Some(t) = u.trim_below {
            self.records = self.records.split_off(&t);
        }
        if let Some(a) = &u.apply {
            apply_kv(&mut self.kv, a);
            self.applied_entry = a.applied_entry;
        }
        if let Some(m) = &u.meta {
            self.meta = m.clone();
        }
    }

    pub fn install_snapshot(&mut self, snap: &Snapshot) {
        self.kv = snap.kv.iter().cloned().collect();
        self.applied_entry = snap.applied_entry;
        self.records = self
            .records
            .split_off(&snap.applied_entry.saturating_add(1));
        if snap.applied_entry == u64::MAX {
            self.records.clear();
        }
    }

    pub fn image(&self) -> EntityImage {
        EntityImage {
            records: self.records.iter().map(|(e, r)| (*e, r.clone())).collect(),
            applied_entry: self.applied_entry,
            kv: self
                .kv
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            meta: self.meta.clone(),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            applied_entry: self.applied_entry,
            kv: self
                .kv
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// `clear`, then `deletes`, then `puts` (documented on [`Apply`]).
pub(crate) fn apply_kv(kv: &mut BTreeMap<Bytes, Bytes>, a: &Apply) {
    if a.clear {
        kv.clear();
    }
    for k in &a.deletes {
        kv.remove(k);
    }
    for (k, v) in &a.puts {
        kv.insert(k.clone(), v.clone());
    }
}
