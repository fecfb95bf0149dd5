//! One entity's state: its keys (values, expiries, per-key versions), a write
//! counter, and the replies of its most recent writes (for request dedup).
//!
//! The state is the value of every chosen Paxos entry (PaxosLog-as-value), so
//! [`KvState::encode`] is what replicas agree on. The encoding is canonical:
//! [`KvState::decode`] accepts exactly the byte strings `encode` produces
//! (plus the empty string, which is the empty state), so decoding and
//! re-encoding any accepted input gives the same bytes.
//!
//! # Encoding (format 1)
//!
//! ```text
//! u8      format = 1
//! varint  state version
//! varint  number of keys, then per key in strictly increasing key order:
//!           varint key length, key bytes,
//!           varint value length, value bytes,
//!           u8 flags (bit 0: has expiry; other bits must be 0),
//!           [zigzag varint expire_at_ms if bit 0],
//!           varint key version
//! varint  number of recent replies, then per reply (oldest first):
//!           varint request id, varint reply length, reply bytes
//! ```
//!
//! Varints are unsigned LEB128 of a `u64`, at most 10 bytes, minimal length.

use std::collections::{BTreeMap, VecDeque};

use bytes::{BufMut, Bytes, BytesMut};

/// How many recent write replies an entity remembers for dedup.
pub const RECENT: usize = 64;

/// How many of those may be ids a shard made for itself (empty reply): they only tell
/// a proposer whether its in-flight writes made it into a state it jumped to, so the
/// last few are enough. With all 64 kept (about 10 bytes each), every persist and
/// accept carried them: writes to entities that had each seen 80 writes ran at 11.1k/s
/// against 15.1k/s with 8 (`bench/cpu_per_op.sh`, BENCHMARKS.md, eleventh session).
pub const RECENT_OWN: usize = 8;

/// The format byte written first by [`KvState::encode`].
pub const FORMAT: u8 = 1;

/// One key of an entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub value: Bytes,
    /// Absolute Unix time in ms after which the key is gone (Redis semantics:
    /// the key is live while `now_ms <= expire_at_ms`).
    pub expire_at_ms: Option<i64>,
    /// The entity's [`KvState::version`] of the last write to this key
    /// (always >= 1 for a stored key; 0 means "absent" to `VSET`).
    pub version: u64,
}

impl KeyEntry {
    /// Whether the key is still visible at `now_ms`.
    pub fn is_live(&self, now_ms: i64) -> bool {
        match self.expire_at_ms {
            None => true,
            Some(at) => now_ms <= at,
        }
    }
}

/// One entity's whole state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KvState {
    /// Entity write counter: +1 per command that changes the state.
    pub version: u64,
    pub keys: BTreeMap<Bytes, KeyEntry>,
    /// `(request id, encoded reply)` of the last [`RECENT`] writes, oldest first.
    pub recent: VecDeque<(u64, Bytes)>,
}

/// Why [`KvState::decode`] rejected its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvDecodeError {
    #[error("unknown state format {0}")]
    Format(u8),
    #[error("state truncated")]
    Truncated,
    #[error("malformed varint")]
    Varint,
    #[error("keys not in strictly increasing order")]
    KeyOrder,
    #[error("unknown key flags {0:#04x}")]
    Flags(u8),
    #[error("{0} trailing bytes after state")]
    Trailing(usize),
}

impl KvState {
    /// An empty state (version 0, no keys, no recent replies).
    pub fn new() -> KvState {
        KvState::default()
    }

    /// The length of [`KvState::encode`]'s output, without encoding: a write checks
    /// it against the largest state a peer frame carries.
    pub fn encoded_len(&self) -> usize {
        let mut n = 1 + varint_len(self.version) + varint_len(self.keys.len() as u64);
        for (k, e) in &self.keys {
            n += varint_len(k.len() as u64) + k.len();
            n += varint_len(e.value.len() as u64) + e.value.len();
            n += 1 + e.expire_at_ms.map_or(0, |at| varint_len(zigzag(at)));
            n += varint_len(e.version);
        }
        n += varint_len(self.recent.len() as u64);
        for (id, r) in &self.recent {
            n += varint_len(*id) + varint_len(r.len() as u64) + r.len();
        }
        n
    }

    /// The canonical binary encoding (see the module docs).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        out.put_u8(FORMAT);
        put_varint(&mut out, self.version);
        put_varint(&mut out, self.keys.len() as u64);
        for (k, e) in &self.keys {
            put_varint(&mut out, k.len() as u64);
            out.put_slice(k);
            put_varint(&mut out, e.value.len() as u64);
            out.put_slice(&e.value);
            match e.expire_at_ms {
                None => out.put_u8(0),
                Some(at) => {
                    out.put_u8(1);
                    put_varint(&mut out, zigzag(at));
                }
            }
            put_varint(&mut out, e.version);
        }
        put_varint(&mut out, self.recent.len() as u64);
        for (id, r) in &self.recent {
            put_varint(&mut out, *id);
            put_varint(&mut out, r.len() as u64);
            out.put_slice(r);
        }
        out.freeze()
    }

    /// Decodes [`KvState::encode`]'s output; the empty input is the empty
    /// state. Never panics; allocations are bounded by the input length
    /// (every key and value is copied out of `b`, so the result does not
    /// keep `b` alive).
    pub fn decode(b: &[u8]) -> Result<KvState, KvDecodeError> {
        if b.is_empty() {
            return Ok(KvState::default());
        }
        let mut r = Reader { b, pos: 0 };
        let format = r.u8()?;
        if format != FORMAT {
            return Err(KvDecodeError::Format(format));
        }
        let version = r.varint()?;
        let nkeys = r.varint()?;
        let mut keys = BTreeMap::new();
        let mut last: Option<&[u8]> = None;
        for _ in 0..nkeys {
            // Each key takes at least 4 bytes, so a huge count runs out of
            // input (Truncated) long before memory becomes a concern.
            let key = r.bytes()?;
            if last.is_some_and(|l| l >= key) {
                return Err(KvDecodeError::KeyOrder);
            }
            last = Some(key);
            let value = r.bytes()?;
            let flags = r.u8()?;
            let expire_at_ms = match flags {
                0 => None,
                1 => Some(unzigzag(r.varint()?)),
                f => return Err(KvDecodeError::Flags(f)),
            };
            let kversion = r.varint()?;
            keys.insert(
                Bytes::copy_from_slice(key),
                KeyEntry {
                    value: Bytes::copy_from_slice(value),
                    expire_at_ms,
                    version: kversion,
                },
            );
        }
        let nrecent = r.varint()?;
        // Each reply takes at least 2 bytes.
        let cap = usize::try_from(nrecent)
            .unwrap_or(usize::MAX)
            .min(r.remaining() / 2)
            .min(RECENT);
        let mut recent = VecDeque::with_capacity(cap);
        for _ in 0..nrecent {
            let id = r.varint()?;
            let reply = r.bytes()?;
            recent.push_back((id, Bytes::copy_from_slice(reply)));
        }
        if r.remaining() != 0 {
            return Err(KvDecodeError::Trailing(r.remaining()));
        }
        Ok(KvState {
            version,
            keys,
            recent,
        })
    }

    /// The entry of `key` if it exists and has not expired at `now_ms`.
    pub fn get_live(&self, key: &[u8], now_ms: i64) -> Option<&KeyEntry> {
        self.keys.get(key).filter(|e| e.is_live(now_ms))
    }

    /// Number of keys that have not expired at `now_ms`.
    pub fn live_len(&self, now_ms: i64) -> usize {
        self.keys.values().filter(|e| e.is_live(now_ms)).count()
    }

    /// Records the encoded reply of write `request_id` (empty for an id the shard
    /// made itself), forgetting the oldest beyond [`RECENT`]. Remembering an id again
    /// replaces its reply. See [`KvState::forget_own_beyond`].
    pub fn remember(&mut self, request_id: u64, reply: Bytes) {
        if let Some(slot) = self.recent.iter_mut().find(|(id, _)| *id == request_id) {
            slot.1 = reply;
            return;
        }
        self.recent.push_back((request_id, reply));
        while self.recent.len() > RECENT {
            self.recent.pop_front();
        }
    }

    /// Forgets the oldest ids a shard made itself (empty reply) beyond the newest
    /// `keep`. Called once per batch with `keep` at least the batch's own writes, so
    /// that a batch larger than [`RECENT_OWN`] still finds all of its ids.
    pub fn forget_own_beyond(&mut self, keep: usize) {
        let own = self.recent.iter().filter(|(_, r)| r.is_empty()).count();
        let mut surplus = own.saturating_sub(keep);
        if surplus > 0 {
            self.recent.retain(|(_, r)| {
                let drop = surplus > 0 && r.is_empty();
                surplus -= usize::from(drop);
                !drop
            });
        }
    }

    /// The remembered reply of write `request_id`, if still recent.
    pub fn recall(&self, request_id: u64) -> Option<&Bytes> {
        self.recent
            .iter()
            .rev()
            .find(|(id, _)| *id == request_id)
            .map(|(_, r)| r)
    }

    /// Removes every key expired at `now_ms`; returns whether any was removed.
    pub fn purge_expired(&mut self, now_ms: i64) -> bool {
        let before = self.keys.len();
        self.keys.retain(|_, e| e.is_live(now_ms));
        self.keys.len() != before
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Bytes [`put_varint`] writes for `v`.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    fn u8(&mut self) -> Result<u8, KvDecodeError> {
        let v = *self.b.get(self.pos).ok_or(KvDecodeError::Truncated)?;
        self.pos += 1;
        Ok(v)
    }

    /// Minimal-length LEB128 `u64`.
    fn varint(&mut self) -> Result<u64, KvDecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if i == 9 && byte > 1 {
                return Err(KvDecodeError::Varint);
            }
            v |= bits << (7 * i);
            if byte & 0x80 == 0 {
                // A zero final byte is only canonical for the value 0 itself.
                if byte == 0 && i > 0 {
                    return Err(KvDecodeError::Varint);
                }
                return Ok(v);
            }
        }
        Err(KvDecodeError::Varint)
    }

    /// A length-prefixed byte string borrowed from the input.
    fn bytes(&mut self) -> Result<&'a [u8], KvDecodeError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| KvDecodeError::Truncated)?;
        if len > self.remaining() {
            return Err(KvDecodeError::Truncated);
        }
        let s = &self.b[self.pos..self.pos + len];
        self.pos += len;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_edges() {
        for v in [0, 1, 127, 128, 300, u64::MAX / 2, u64::MAX] {
            let mut out = BytesMut::new();
            put_varint(&mut out, v);
            let mut r = Reader { b: &out, pos: 0 };
            assert_eq!(r.varint(), Ok(v));
            assert_eq!(r.remaining(), 0);
        }
        // Overlong and overflowing encodings are rejected.
        for bad in [
            &[0x80u8, 0x00][..],
            &[0xff; 10][..],
            &[0xff; 11][..],
            &[0x80][..],
        ] {
            let mut r = Reader { b: bad, pos: 0 };
            assert!(r.varint().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn zigzag_edges() {
        for v in [0, 1, -1, i64::MIN, i64::MAX, 1_700_000_000_000] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn empty_input_is_empty_state() {
        assert_eq!(KvState::decode(b""), Ok(KvState::default()));
        let enc = KvState::default().encode();
        assert_eq!(&enc[..], &[FORMAT, 0, 0, 0]);
        assert_eq!(KvState::decode(&enc), Ok(KvState::default()));
    }

    #[test]
    fn expiry_boundary_is_inclusive() {
        let mut s = KvState::default();
        s.keys.insert(
            Bytes::from_static(b"k"),
            KeyEntry {
                value: Bytes::from_static(b"v"),
                expire_at_ms: Some(100),
                version: 1,
            },
        );
        assert!(s.get_live(b"k", 100).is_some());
        assert!(s.get_live(b"k", 101).is_none());
        assert_eq!(s.live_len(100), 1);
        assert_eq!(s.live_len(101), 0);
        assert!(!s.purge_expired(100));
        assert!(s.purge_expired(101));
        assert!(s.keys.is_empty());
    }

    #[test]
    fn remember_keeps_last_64() {
        let mut s = KvState::default();
        for id in 0..100u64 {
            s.remember(id, Bytes::from(id.to_string()));
        }
        assert_eq!(s.recent.len(), RECENT);
        assert_eq!(s.recall(35), None);
        assert_eq!(s.recall(36).map(|b| &b[..]), Some(&b"36"[..]));
        assert_eq!(s.recall(99).map(|b| &b[..]), Some(&b"99"[..]));
        s.remember(99, Bytes::from_static(b"x"));
        assert_eq!(s.recent.len(), RECENT);
        assert_eq!(s.recall(99).map(|b| &b[..]), Some(&b"x"[..]));
    }

    #[test]
    fn own_ids_are_kept_for_a_shorter_while_than_client_ids() {
        let mut s = KvState::default();
        // Client ids (with replies) interleaved with ids a shard made (empty).
        for i in 0..40u64 {
            s.remember(i, Bytes::from_static(b"+OK\r\n"));
            s.remember(1000 + i, Bytes::new());
            s.forget_own_beyond(RECENT_OWN);
        }
        let own: Vec<u64> = s
            .recent
            .iter()
            .filter(|(_, r)| r.is_empty())
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(own, (1032..1040).collect::<Vec<_>>(), "the last RECENT_OWN");
        assert!(
            (0..40).all(|i| s.recall(i).is_some()),
            "every client id kept"
        );
        assert_eq!(s.recent.len(), 40 + RECENT_OWN);
        // The state stays small however many writes the entity has seen.
        for i in 0..1000u64 {
            s.remember(5000 + i, Bytes::new());
            s.forget_own_beyond(RECENT_OWN);
        }
        assert!(s.encode().len() < 40 * 16 + RECENT_OWN * 12 + 16);
        // A batch of 20 own writes keeps all 20 ids, however small the window.
        for i in 0..20u64 {
            s.remember(9000 + i, Bytes::new());
        }
        s.forget_own_beyond(RECENT_OWN.max(20));
        assert!(
            (9000..9020).all(|i| s.recall(i).is_some()),
            "the batch's own ids"
        );
        s.forget_own_beyond(RECENT_OWN);
        assert!(s.recall(9011).is_none() && s.recall(9012).is_some());
    }
}
