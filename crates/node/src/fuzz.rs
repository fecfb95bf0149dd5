//! Fuzz target bodies, shared by `fuzz/` (cargo-fuzz) and the corpus replay test.
//! Each must never panic, whatever the input.

use bytes::{Bytes, BytesMut};

/// RESP request parsing (multibulk and inline) followed by command parsing.
pub fn resp_parse(data: &[u8]) {
    let limits = resp::Limits {
        max_bulk_len: 1 << 20,
        max_args: 1024,
        ..resp::Limits::default()
    };
    let mut buf = BytesMut::from(data);
    for _ in 0..64 {
        match resp::parse_request(&mut buf, &limits) {
            Ok(Some(args)) => {
                let _ = resp::parse_command(&args);
            }
            Ok(None) | Err(_) => return,
        }
    }
}

/// The on-disk record decoder.
pub fn record_decode(data: &[u8]) {
    let _ = crate::codec::decode_record(&Bytes::copy_from_slice(data));
}

/// The peer message decoder; a decoded message re-encodes without panicking.
pub fn message_decode(data: &[u8]) {
    if let Ok((entity, msg)) = crate::codec::decode_message(&Bytes::copy_from_slice(data)) {
        let _ = crate::codec::encode_message(&entity, &msg);
    }
}

/// The peer message batch decoder; decoded messages re-encode without panicking.
pub fn batch_decode(data: &[u8]) {
    let data = Bytes::copy_from_slice(data);
    let mut batch = crate::codec::MessageBatch::default();
    for (entity, msg) in crate::codec::decode_batch(&data).flatten() {
        batch.push(&entity, &msg);
    }
}

/// The entity state decoder; a decoded state re-encodes to the same bytes.
pub fn kv_decode(data: &[u8]) {
    if let Ok(state) = crate::kv::KvState::decode(data) {
        let again = state.encode();
        assert_eq!(
            crate::kv::KvState::decode(&again).ok(),
            Some(state),
            "round trip"
        );
    }
}
