//! Peer frame format: `[len u32 BE][type u8][crc32c u32 BE][payload; len]`.
//!
//! `len` counts only the payload; the CRC32C covers the type byte followed by the
//! payload, so a flipped type byte is detected as well as a corrupted body.
//!
//! This module is pure (no I/O, no tokio) so the decoder can be fuzzed and
//! property-tested in isolation. The decoder validates the length against the
//! configured maximum *before* reserving or allocating anything, and it never
//! panics on any byte sequence: every index is guarded by an explicit length check.
//!
//! Type 0 is reserved for keepalives; the transport never delivers it upward.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes in a frame header (length + type + crc).
pub const HEADER_LEN: usize = 9;
/// Message type reserved for link keepalives.
pub const KEEPALIVE: u8 = 0;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub msg_type: u8,
    pub payload: Bytes,
}

/// Why a byte stream is not a valid frame sequence. Any error is fatal for the
/// connection: after it the stream position is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame payload length {len} exceeds maximum {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame checksum mismatch (expected {expected:#010x}, got {actual:#010x})")]
    BadCrc { expected: u32, actual: u32 },
}

/// CRC32C over the type byte and the payload.
pub fn checksum(msg_type: u8, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&[msg_type]), payload)
}

/// Encode the 9-byte header for `payload`. The caller guarantees
/// `payload.len() <= u32::MAX` (the transport enforces `max_frame`, itself capped).
pub fn encode_header(msg_type: u8, payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    h[0..4].copy_from_slice(&len.to_be_bytes());
    h[4] = msg_type;
    h[5..9].copy_from_slice(&checksum(msg_type, payload).to_be_bytes());
    h
}

/// Append a whole frame to `dst`.
pub fn encode(msg_type: u8, payload: &[u8], dst: &mut BytesMut) {
    dst.reserve(HEADER_LEN + payload.len());
    dst.put_slice(&encode_header(msg_type, payload));
    dst.put_slice(payload);
}

/// Parsed header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: usize,
    pub msg_type: u8,
    pub crc: u32,
}

/// Parse a header from the start of `buf`. `Ok(None)` means more bytes are needed.
/// The length limit is checked here, so callers can size buffers from `len` safely.
pub fn parse_header(buf: &[u8], max_frame: usize) -> Result<Option<Header>, FrameError> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    if len > max_frame {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame,
        });
    }
    Ok(Some(Header {
        len,
        msg_type: h[4],
        crc: u32::from_be_bytes([h[5], h[6], h[7], h[8]]),
    }))
}

/// A frame borrowed from a slice, with the number of bytes it occupied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceFrame<'a> {
    pub msg_type: u8,
    pub payload: &'a [u8],
    pub consumed: usize,
}

/// Decode one frame from the front of a slice without consuming it.
pub fn decode_slice(buf: &[u8], max_frame: usize) -> Result<Option<SliceFrame<'_>>, FrameError> {
    let Some(h) = parse_header(buf, max_frame)? else {
        return Ok(None);
    };
    let total = HEADER_LEN + h.len;
    let Some(payload) = buf.get(HEADER_LEN..total) else {
        return Ok(None);
    };
    let actual = checksum(h.msg_type, payload);
    if actual != h.crc {
        return Err(FrameError::BadCrc {
            expected: h.crc,
            actual,
        });
    }
    Ok(Some(SliceFrame {
        msg_type: h.msg_type,
        payload,
        consumed: total,
    }))
}

/// Incremental decoder over a growing `BytesMut` read buffer.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame: usize,
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Take one complete frame off the front of `buf`. On `Ok(None)` the buffer has
    /// been reserved to hold the rest of the pending frame (bounded by `max_frame`).
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(h) = parse_header(buf, self.max_frame)? else {
            return Ok(None);
        };
        let total = HEADER_LEN + h.len;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let payload = &buf[HEADER_LEN..total];
        let actual = checksum(h.msg_type, payload);
        if actual != h.crc {
            return Err(FrameError::BadCrc {
                expected: h.crc,
                actual,
            });
        }
        buf.advance(HEADER_LEN);
        let payload = buf.split_to(h.len).freeze();
        Ok(Some(Frame {
            msg_type: h.msg_type,
            payload,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip_and_partial() {
        let mut buf = BytesMut::new();
        encode(7, b"hello", &mut buf);
        encode(9, b"", &mut buf);
        let wire = buf.clone().freeze();
        let d = FrameDecoder::new(1024);
        // Feed byte by byte: nothing is produced until a frame is complete.
        let mut acc = BytesMut::new();
        let mut out = Vec::new();
        for b in wire.iter() {
            acc.put_u8(*b);
            while let Some(f) = d.decode(&mut acc).expect("valid") {
                out.push(f);
            }
        }
        assert_eq!(
            out,
            vec![
                Frame {
                    msg_type: 7,
                    payload: Bytes::from_static(b"hello")
                },
                Frame {
                    msg_type: 9,
                    payload: Bytes::new()
                },
            ]
        );
        assert!(acc.is_empty());
    }

    #[test]
    fn oversize_rejected_from_header_alone() {
        let mut buf = BytesMut::new();
        buf.put_u32(1025);
        buf.put_u8(1);
        buf.put_u32(0);
        let cap_before = buf.capacity();
        let err = FrameDecoder::new(1024).decode(&mut buf).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: 1025,
                max: 1024
            }
        );
        assert_eq!(
            buf.capacity(),
            cap_before,
            "no allocation for rejected frame"
        );
    }

    #[test]
    fn corrupted_type_or_payload_fails_crc() {
        let mut buf = BytesMut::new();
        encode(3, b"abc", &mut buf);
        let mut t = buf.clone();
        t[4] ^= 1;
        assert!(matches!(
            FrameDecoder::new(64).decode(&mut t),
            Err(FrameError::BadCrc { .. })
        ));
        let mut p = buf.clone();
        p[HEADER_LEN] ^= 0x80;
        assert!(matches!(
            decode_slice(&p, 64),
            Err(FrameError::BadCrc { .. })
        ));
    }

    proptest! {
        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..256) {
            let d = FrameDecoder::new(max);
            let mut buf = BytesMut::from(&data[..]);
            let mut guard = 0;
            while let Ok(Some(_)) = d.decode(&mut buf) {
                guard += 1;
                prop_assert!(guard <= data.len());
            }
            let _ = decode_slice(&data, max);
        }

        #[test]
        fn encode_decode_roundtrip(frames in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..20)) {
            let mut buf = BytesMut::new();
            for (t, p) in &frames { encode(*t, p, &mut buf); }
            let d = FrameDecoder::new(300);
            for (t, p) in &frames {
                let f = d.decode(&mut buf).unwrap().unwrap();
                prop_assert_eq!(f.msg_type, *t);
                prop_assert_eq!(&f.payload[..], &p[..]);
            }
            prop_assert!(buf.is_empty());
        }
    }
}
