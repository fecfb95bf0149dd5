//! `KvState` encoding: round trips, canonical form, and robustness against
//! arbitrary input.

use bytes::Bytes;
use node::kv::{KeyEntry, KvDecodeError, KvState, FORMAT, RECENT};
use proptest::prelude::*;

fn entry() -> impl Strategy<Value = KeyEntry> {
    (
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::option::of(any::<i64>()),
        any::<u64>(),
    )
        .prop_map(|(v, expire_at_ms, version)| KeyEntry {
            value: Bytes::from(v),
            expire_at_ms,
            version,
        })
}

fn state() -> impl Strategy<Value = KvState> {
    (
        any::<u64>(),
        proptest::collection::btree_map(
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(Bytes::from),
            entry(),
            0..12,
        ),
        proptest::collection::vec(
            (
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..20).prop_map(Bytes::from),
            ),
            0..=RECENT,
        ),
    )
        .prop_map(|(version, keys, recent)| KvState {
            version,
            keys,
            recent: recent.into(),
        })
}

proptest! {
    #[test]
    fn round_trip(s in state()) {
        let enc = s.encode();
        prop_assert_eq!(enc[0], FORMAT);
        let dec = KvState::decode(&enc).expect("decode");
        prop_assert_eq!(&dec, &s);
        prop_assert_eq!(dec.encode(), enc);
    }

    #[test]
    fn encoded_len_is_exact(s in state()) {
        prop_assert_eq!(s.encoded_len(), s.encode().len());
    }

    #[test]
    fn every_strict_prefix_is_rejected(s in state()) {
        let enc = s.encode();
        for n in 1..enc.len() {
            prop_assert!(KvState::decode(&enc[..n]).is_err(), "prefix {}", n);
        }
        let mut longer = enc.to_vec();
        longer.push(0);
        prop_assert_eq!(KvState::decode(&longer), Err(KvDecodeError::Trailing(1)));
    }

    #[test]
    fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
        // Accepted inputs are canonical: they re-encode to themselves.
        if let Ok(s) = KvState::decode(&b) {
            if !b.is_empty() {
                prop_assert_eq!(&s.encode()[..], &b[..]);
            }
        }
    }

    #[test]
    fn format_byte_then_random_never_panics(b in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut input = vec![FORMAT];
        input.extend_from_slice(&b);
        if let Ok(s) = KvState::decode(&input) {
            prop_assert_eq!(&s.encode()[..], &input[..]);
        }
    }

    #[test]
    fn mutated_encodings_never_panic(s in state(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let mut b = s.encode().to_vec();
        for (i, x) in flips {
            let n = b.len();
            b[i % n] ^= x;
        }
        if let Ok(d) = KvState::decode(&b) {
            prop_assert_eq!(&d.encode()[..], &b[..]);
        }
    }
}

#[test]
fn huge_counts_fail_fast() {
    // Claims u64::MAX keys / replies with no bytes behind them.
    let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    let mut b = vec![FORMAT, 0];
    b.extend_from_slice(&max);
    assert_eq!(KvState::decode(&b), Err(KvDecodeError::Truncated));
    let mut b = vec![FORMAT, 0, 0];
    b.extend_from_slice(&max);
    assert_eq!(KvState::decode(&b), Err(KvDecodeError::Truncated));
    // A key claiming a huge length.
    let mut b = vec![FORMAT, 0, 1];
    b.extend_from_slice(&max);
    assert_eq!(KvState::decode(&b), Err(KvDecodeError::Truncated));
}

#[test]
fn structural_errors() {
    assert_eq!(KvState::decode(&[2]), Err(KvDecodeError::Format(2)));
    assert_eq!(KvState::decode(&[FORMAT]), Err(KvDecodeError::Truncated));
    // Overlong varint for the version.
    assert_eq!(
        KvState::decode(&[FORMAT, 0x80, 0x00, 0, 0]),
        Err(KvDecodeError::Varint)
    );
    // Two keys out of order: "b" then "a".
    let b = [FORMAT, 0, 2, 1, b'b', 0, 0, 1, 1, b'a', 0, 0, 1, 0];
    assert_eq!(KvState::decode(&b), Err(KvDecodeError::KeyOrder));
    // Duplicate keys.
    let b = [FORMAT, 0, 2, 1, b'a', 0, 0, 1, 1, b'a', 0, 0, 1, 0];
    assert_eq!(KvState::decode(&b), Err(KvDecodeError::KeyOrder));
    // Unknown flags.
    let b = [FORMAT, 0, 1, 1, b'a', 0, 2, 1, 0];
    assert_eq!(KvState::decode(&b), Err(KvDecodeError::Flags(2)));
    // A well-formed one for contrast.
    let b = [
        FORMAT, 7, 1, 1, b'a', 1, b'v', 1, 0x14, 3, 1, 9, 2, b'o', b'k',
    ];
    let s = KvState::decode(&b).expect("decode");
    assert_eq!(s.version, 7);
    let e = &s.keys[&b"a"[..]];
    assert_eq!(
        (&e.value[..], e.expire_at_ms, e.version),
        (&b"v"[..], Some(10), 3)
    );
    assert_eq!(s.recall(9).map(|r| &r[..]), Some(&b"ok"[..]));
    assert_eq!(&s.encode()[..], &b[..]);
}
