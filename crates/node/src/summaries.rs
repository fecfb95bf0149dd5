//! Probe summaries of evicted entities ([`paxos::ProbeSummary`]), so that a read probe
//! for an entity no longer in memory is answered without loading it.
//!
//! Memory is what bounds this: a key space of 10 M entities leaves most of them
//! evicted. An entity is therefore not stored by name: the map key is a 64-bit keyed
//! hash of it, and the value packs a second, independent 24-bit hash (the check), the
//! distance of its records above the chosen entry (8 bits) and its chosen entry (32
//! bits); an entity whose figures do not fit keeps no summary. That is 16 bytes a
//! summary, 17 with the map's control byte. Two entities agreeing on all 88 bits
//! would share a summary and one could be answered "empty" for the other; with the
//! hash keys drawn from the shard's seed, the chance is about n / 2^88 per probe for
//! n stored summaries (4e-20 for 10 M). The count is capped: when full, further
//! evictions keep no summary and those entities load to answer.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use paxos::ProbeSummary;

/// Summaries kept by one shard, bounded in count.
pub struct Summaries {
    /// Keyed hash -> check (24 bits) | above (8) | max_chosen (32).
    map: HashMap<u64, u64, BuildHasherDefault<KeyIsHash>>,
    max: usize,
    /// Keys of the two hashes (see the module docs).
    key: u64,
    check_key: u64,
}

const CHECK_BITS: u32 = 24;

fn pack(check: u32, s: ProbeSummary) -> Option<u64> {
    let above = u8::try_from(s.above).ok()?;
    let max_chosen = u32::try_from(s.max_chosen).ok()?;
    Some(u64::from(check) << 40 | u64::from(above) << 32 | u64::from(max_chosen))
}

fn unpack(v: u64) -> (u32, ProbeSummary) {
    let s = ProbeSummary {
        max_chosen: v & 0xffff_ffff,
        above: ((v >> 32) & 0xff) as u32,
    };
    ((v >> 40) as u32, s)
}

impl Summaries {
    /// At most `max` summaries; `seed` keys the hashes.
    pub fn new(max: usize, seed: u64) -> Self {
        Summaries {
            map: HashMap::default(),
            max,
            key: seed ^ 0x9e37_79b9_7f4a_7c15,
            check_key: seed.rotate_left(32) ^ 0xc2b2_ae3d_27d4_eb4f,
        }
    }

    /// The map key of `entity`.
    fn key_of(&self, entity: &[u8]) -> u64 {
        keyed_hash(self.key, entity)
    }

    /// The check stored with `entity`'s summary.
    fn check_of(&self, entity: &[u8]) -> u32 {
        (keyed_hash(self.check_key, entity) >> (64 - CHECK_BITS)) as u32
    }

    /// Keep `s` for `entity`, just evicted (no summary when full, or when its figures
    /// do not fit).
    pub fn insert(&mut self, entity: &[u8], s: ProbeSummary) {
        let k = self.key_of(entity);
        let Some(v) = pack(self.check_of(entity), s) else {
            self.map.remove(&k);
            return;
        };
        if self.map.len() >= self.max && !self.map.contains_key(&k) {
            return;
        }
        self.map.insert(k, v);
    }

    /// The summary of `entity`, if one is kept.
    pub fn get(&self, entity: &[u8]) -> Option<ProbeSummary> {
        if self.map.is_empty() {
            return None;
        }
        let (stored_check, s) = unpack(*self.map.get(&self.key_of(entity))?);
        (stored_check == self.check_of(entity)).then_some(s)
    }

    /// Forget the summary of `entity`: it is in memory again and will change. Whatever
    /// is stored under its hash goes, even another entity's (that one then loads).
    pub fn remove(&mut self, entity: &[u8]) {
        if self.map.is_empty() {
            return;
        }
        let k = self.key_of(entity);
        self.map.remove(&k);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// SipHash-1-3 of `entity` behind a secret 64-bit prefix.
fn keyed_hash(key: u64, entity: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    h.write_u64(key);
    h.write(entity);
    h.finish()
}

/// The map's keys are already keyed hashes: hash them to themselves.
#[derive(Default)]
struct KeyIsHash(u64);

impl Hasher for KeyIsHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(max_chosen: u64) -> ProbeSummary {
        ProbeSummary {
            max_chosen,
            above: 0,
        }
    }

    #[test]
    fn a_summary_is_found_by_its_entity_only_and_goes_when_removed() {
        let mut m = Summaries::new(10, 7);
        m.insert(b"a", s(3));
        assert_eq!(m.get(b"a"), Some(s(3)));
        assert_eq!(m.get(b"b"), None);
        m.insert(b"a", s(4));
        assert_eq!(m.get(b"a"), Some(s(4)));
        m.remove(b"a");
        assert_eq!(m.get(b"a"), None);
        assert!(m.is_empty());
    }

    #[test]
    fn a_full_map_keeps_what_it_has_and_takes_nothing_new() {
        let mut m = Summaries::new(2, 7);
        m.insert(b"a", s(1));
        m.insert(b"b", s(2));
        m.insert(b"c", s(3));
        assert_eq!(m.len(), 2);
        assert_eq!(m.get(b"c"), None);
        // An update of a kept one still lands.
        m.insert(b"a", s(5));
        assert_eq!(m.get(b"a"), Some(s(5)));
    }

    #[test]
    fn figures_that_do_not_fit_keep_no_summary() {
        let mut m = Summaries::new(10, 7);
        m.insert(b"a", s(3));
        m.insert(b"a", s(1 << 32));
        assert_eq!(m.get(b"a"), None, "the old summary went too");
        let big = ProbeSummary {
            max_chosen: 1,
            above: 256,
        };
        m.insert(b"b", big);
        assert_eq!(m.get(b"b"), None);
        let edge = ProbeSummary {
            max_chosen: u64::from(u32::MAX),
            above: 255,
        };
        m.insert(b"c", edge);
        assert_eq!(m.get(b"c"), Some(edge));
    }

    #[test]
    fn a_matching_key_with_another_check_is_no_match() {
        let mut m = Summaries::new(10, 7);
        m.insert(b"a", s(3));
        // Forge a stored entry under b's key with a's check: b must not see it.
        let (ka, kb) = (m.key_of(b"a"), m.key_of(b"b"));
        let stored = m.map[&ka];
        m.map.insert(kb, stored);
        assert_eq!(m.get(b"b"), None);
    }
}
