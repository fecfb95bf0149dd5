//! On-disk encodings of fjall rows. Every value starts with a version byte and ends
//! with a CRC32C of everything before it, so torn or flipped bytes are reported as
//! [`StorageError::Corrupt`] at load instead of being trusted (or panicking).

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::StorageError;

/// Version byte of entity rows and kv/node-meta values.
pub(crate) const ROW_VERSION: u8 = 1;

const FLAG_SPILLED: u8 = 1;
const FLAG_INLINE: u8 = 2;

/// Where an entity's applied key/values live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KvPlace {
    /// In the row itself: no keys, or exactly one key equal to the entity id (its value here).
    /// This keeps the common PaxosKV single-key update to one row write.
    Inline(Option<Bytes>),
    /// Each key is its own row in the "kv" partition.
    Spilled,
}

/// Decoded entity row ("entities" partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntityRow {
    pub applied_entry: u64,
    pub meta: Bytes,
    pub kv: KvPlace,
    pub records: BTreeMap<u64, Bytes>,
}

impl Default for EntityRow {
    fn default() -> Self {
        EntityRow {
            applied_entry: 0,
            meta: Bytes::new(),
            kv: KvPlace::Inline(None),
            records: BTreeMap::new(),
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Lengths are bounded by u32: fjall itself caps values well below 4 GiB.
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub(crate) fn encode_row(row: &EntityRow) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        32 + row.meta.len() + row.records.values().map(|r| r.len() + 12).sum::<usize>(),
    );
    out.push(ROW_VERSION);
    let flags = match &row.kv {
        KvPlace::Spilled => FLAG_SPILLED,
        KvPlace::Inline(Some(_)) => FLAG_INLINE,
        KvPlace::Inline(None) => 0,
    };
    out.push(flags);
    out.extend_from_slice(&row.applied_entry.to_le_bytes());
    put_bytes(&mut out, &row.meta);
    if let KvPlace::Inline(Some(v)) = &row.kv {
        put_bytes(&mut out, v);
    }
    out.extend_from_slice(&(row.records.len() as u32).to_le_bytes());
    for (entry, rec) in &row.records {
        out.extend_from_slice(&entry.to_le_bytes());
        put_bytes(&mut out, rec);
    }
    seal(out)
}

/// Bounds-checked reader; every failure is a `String` detail for `Corrupt`.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| format!("truncated at byte {} (wanted {n} more)", self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn bytes(&mut self) -> Result<Bytes, String> {
        let n = self.u32()? as usize;
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }
}

/// Checks version and CRC; returns the payload between them.
fn unseal(buf: &[u8]) -> Result<&[u8], String> {
    if buf.len() < 5 {
        return Err(format!("value too short ({} bytes)", buf.len()));
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    let mut c = [0u8; 4];
    c.copy_from_slice(crc);
    let want = u32::from_le_bytes(c);
    let got = crc32c::crc32c(body);
    if want != got {
        return Err(format!(
            "crc mismatch (stored {want:#010x}, computed {got:#010x})"
        ));
    }
    if body[0] != ROW_VERSION {
        return Err(format!("unknown row version {}", body[0]));
    }
    Ok(&body[1..])
}

/// `data` with its CRC32C appended, as [`seal`] would store it (fuzzing only).
pub(crate) fn seal_for_fuzz(data: &[u8]) -> Vec<u8> {
    seal(data.to_vec())
}

/// A few rows of every shape (fuzz seeds).
pub(crate) fn sample_rows() -> Vec<EntityRow> {
    let recs = |n: u64| -> BTreeMap<u64, Bytes> {
        (1..=n)
            .map(|e| (e, Bytes::from(vec![e as u8; e as usize * 3])))
            .collect()
    };
    vec![
        EntityRow::default(),
        EntityRow {
            applied_entry: 7,
            meta: Bytes::from_static(b"meta"),
            kv: KvPlace::Inline(Some(Bytes::from_static(b"value"))),
            records: recs(2),
        },
        EntityRow {
            applied_entry: u64::MAX,
            meta: Bytes::new(),
            kv: KvPlace::Spilled,
            records: recs(5),
        },
    ]
}

fn corrupt(what: impl FnOnce() -> String) -> impl FnOnce(String) -> StorageError {
    move |detail| StorageError::Corrupt {
        what: what(),
        detail,
    }
}

pub(crate) fn decode_row(
    buf: &[u8],
    what: impl FnOnce() -> String,
) -> Result<EntityRow, StorageError> {
    decode_row_inner(buf).map_err(corrupt(what))
}

fn decode_row_inner(buf: &[u8]) -> Result<EntityRow, String> {
    let body = unseal(buf)?;
    let mut r = Reader { buf: body, pos: 0 };
    let flags = r.u8()?;
    if flags & !(FLAG_SPILLED | FLAG_INLINE) != 0 || flags == FLAG_SPILLED | FLAG_INLINE {
        return Err(format!("invalid row flags {flags:#x}"));
    }
    let applied_entry = r.u64()?;
    let meta = r.bytes()?;
    let kv = if flags & FLAG_SPILLED != 0 {
        KvPlace::Spilled
    } else if flags & FLAG_INLINE != 0 {
        KvPlace::Inline(Some(r.bytes()?))
    } else {
        KvPlace::Inline(None)
    };
    let n = r.u32()?;
    let mut records = BTreeMap::new();
    let mut prev: Option<u64> = None;
    for _ in 0..n {
        let entry = r.u64()?;
        if prev.is_some_and(|p| p >= entry) {
            return Err(format!("records not strictly ascending at entry {entry}"));
        }
        prev = Some(entry);
        records.insert(entry, r.bytes()?);
    }
    if r.pos != body.len() {
        return Err(format!("{} trailing bytes", body.len() - r.pos));
    }
    Ok(EntityRow {
        applied_entry,
        meta,
        kv,
        records,
    })
}

/// Plain value (kv partition, node meta): version byte, bytes, CRC32C.
pub(crate) fn encode_value(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() + 5);
    out.push(ROW_VERSION);
    out.extend_from_slice(v);
    seal(out)
}

pub(crate) fn decode_value(
    buf: &[u8],
    what: impl FnOnce() -> String,
) -> Result<Bytes, StorageError> {
    unseal(buf)
        .map(Bytes::copy_from_slice)
        .map_err(corrupt(what))
}

/// Key of a user key in the "kv" partition: u32-BE length of entity, entity, user key.
/// The length prefix makes one entity's keys a contiguous, unambiguous prefix range.
pub(crate) fn kv_key(entity: &[u8], key: &[u8]) -> Vec<u8> {
    let mut out = kv_prefix(entity);
    out.extend_from_slice(key);
    out
}

pub(crate) fn kv_prefix(entity: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + entity.len());
    out.extend_from_slice(&(entity.len() as u32).to_be_bytes());
    out.extend_from_slice(entity);
    out
}

/// Printable form of an entity id for error messages (bounded length).
pub(crate) fn show(entity: &[u8]) -> String {
    let shown: Vec<u8> = entity.iter().copied().take(64).collect();
    let mut s = String::from_utf8_lossy(&shown).escape_debug().to_string();
    if entity.len() > 64 {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_row() -> impl Strategy<Value = EntityRow> {
        (
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..8),
            prop_oneof![
                Just(KvPlace::Spilled),
                Just(KvPlace::Inline(None)),
                proptest::collection::vec(any::<u8>(), 0..8)
                    .prop_map(|v| KvPlace::Inline(Some(v.into())))
            ],
            proptest::collection::btree_map(
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..8),
                0..5,
            ),
        )
            .prop_map(|(a, m, kv, recs)| EntityRow {
                applied_entry: a,
                meta: m.into(),
                kv,
                records: recs.into_iter().map(|(k, v)| (k, Bytes::from(v))).collect(),
            })
    }

    proptest! {
        #[test]
        fn row_round_trips(row in arb_row()) {
            let enc = encode_row(&row);
            prop_assert_eq!(decode_row(&enc, String::new).ok(), Some(row));
        }

        #[test]
        fn any_single_byte_flip_is_detected(row in arb_row(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut enc = encode_row(&row);
            let i = pos.index(enc.len());
            enc[i] ^= 1 << bit;
            prop_assert!(decode_row(&enc, String::new).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_row(&buf, String::new);
            let _ = decode_value(&buf, String::new);
        }

        #[test]
        fn truncation_is_detected(row in arb_row(), cut in any::<prop::sample::Index>()) {
            let enc = encode_row(&row);
            let n = cut.index(enc.len());
            prop_assert!(decode_row(&enc[..n], String::new).is_err());
        }
    }

    #[test]
    fn value_round_trip_and_error_names_location() {
        let enc = encode_value(b"hello");
        assert_eq!(
            decode_value(&enc, String::new).unwrap(),
            Bytes::from_static(b"hello")
        );
        let err = decode_value(&enc[..3], || "partition kv, entity e1".into()).unwrap_err();
        assert!(err.to_string().contains("partition kv, entity e1"), "{err}");
    }
}
