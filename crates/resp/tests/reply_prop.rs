//! Cross-check: every encoded reply is one complete, well-formed frame
//! according to an independent decoder (the `redis-protocol` crate).

use bytes::Bytes;
use proptest::prelude::*;
use resp::Reply;

fn leaf() -> impl Strategy<Value = Reply> {
    prop_oneof![
        "[a-zA-Z0-9 ]{0,12}".prop_map(|s| Reply::Simple(Bytes::from(s))),
        "[a-zA-Z0-9 ]{0,12}".prop_map(|s| Reply::Error(format!("ERR {s}"))),
        any::<i64>().prop_map(Reply::Integer),
        prop::collection::vec(any::<u8>(), 0..20).prop_map(|v| Reply::Bulk(Bytes::from(v))),
        Just(Reply::Null),
        Just(Reply::NullArray),
        any::<f64>().prop_map(Reply::Double),
        any::<bool>().prop_map(Reply::Bool),
        prop::collection::vec(any::<u8>(), 0..20).prop_map(|v| Reply::Verbatim {
            format: *b"txt",
            text: Bytes::from(v)
        }),
    ]
}

/// The reference decoder builds Rust hash sets/maps, so it only accepts
/// scalar set members and map keys (RESP3 itself allows any type).
fn hashable() -> impl Strategy<Value = Reply> {
    prop_oneof![
        "[a-z]{0,8}".prop_map(|s| Reply::Bulk(Bytes::from(s))),
        any::<i64>().prop_map(Reply::Integer),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Reply::Array),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Reply::Push),
            prop::collection::vec(hashable(), 0..4).prop_map(Reply::Set),
            prop::collection::vec((hashable(), inner), 0..3).prop_map(Reply::Map),
        ]
    })
}

proptest! {
    #[test]
    fn resp2_encoding_is_one_complete_frame(r in reply()) {
        let wire = r.to_bytes(2);
        let decoded = redis_protocol::resp2::decode::decode(&wire);
        let (_, used) = decoded.unwrap().unwrap();
        prop_assert_eq!(used, wire.len());
    }

    #[test]
    fn resp3_encoding_is_one_complete_frame(r in reply()) {
        let wire = r.to_bytes(3);
        let decoded = redis_protocol::resp3::decode::complete::decode(&wire);
        let (_, used) = decoded.unwrap().unwrap();
        prop_assert_eq!(used, wire.len());
    }
}
