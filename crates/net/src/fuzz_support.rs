//! Shared bodies of the fuzz targets, also run over the seed corpus by
//! `tests/corpus_replay.rs`, so the corpus is exercised on every `cargo test`.
//!
//! These functions *do* assert: they are test oracles, and a failed invariant is
//! exactly what the fuzzer should report. Production decode paths never panic.

use bytes::BytesMut;

use crate::frame::{self, FrameDecoder, HEADER_LEN};
use crate::handshake::{self, Ack, Auth, Challenge, Hello, Policy};

/// First two bytes choose `max_frame`; the rest is the stream.
pub fn frame_decode(data: &[u8]) {
    let (max, body) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
        _ => (0, data),
    };
    // Slice decoder: consumed bytes re-encode to exactly the same bytes.
    let mut off = 0;
    while let Ok(Some(f)) = frame::decode_slice(&body[off..], max) {
        assert!(f.consumed >= HEADER_LEN && off + f.consumed <= body.len());
        assert!(f.payload.len() <= max);
        let mut re = BytesMut::new();
        frame::encode(f.msg_type, f.payload, &mut re);
        assert_eq!(&re[..], &body[off..off + f.consumed]);
        off += f.consumed;
    }
    // Streaming decoder fed in uneven chunks agrees with the slice decoder.
    let d = FrameDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut taken = 0usize;
    let mut failed = false;
    for chunk in body.chunks(7) {
        buf.extend_from_slice(chunk);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(f)) => taken += HEADER_LEN + f.payload.len(),
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            break;
        }
    }
    assert!(
        taken <= off,
        "streaming decoder never passes the slice decoder"
    );
    if !failed {
        assert_eq!(taken, off);
    }
}

pub fn handshake_decode(data: &[u8]) {
    if let Ok(h) = Hello::decode(data) {
        assert_eq!(Hello::decode(&h.encode()), Ok(h));
        let members = [
            (1, std::net::IpAddr::from([127, 0, 0, 1])),
            (2, std::net::IpAddr::from([127, 0, 0, 1])),
        ];
        let p = Policy {
            cluster_id: 1,
            self_id: 2,
            members: &members,
            source: Some(std::net::IpAddr::from([127, 0, 0, 1])),
            channels: 2,
            has_secret: true,
        };
        let _ = handshake::check_hello(&h, &p);
    }
    if let Ok(c) = Challenge::decode(data) {
        assert_eq!(Challenge::decode(&c.encode()), Ok(c));
    }
    if let Ok(a) = Auth::decode(data) {
        assert_eq!(Auth::decode(&a.encode()), Ok(a));
    }
    if let Ok(a) = Ack::decode(data) {
        assert_eq!(Ack::decode(&a.encode()), Ok(a));
    }
}
