//! Replies remembered with client request ids (`REQID <id> <command>`), so that a
//! retried write is applied once and answered with its first reply — also after a
//! restart, since the memo lives in the entity's replicated state.

use bytes::{Bytes, BytesMut};
use resp::Reply;

/// Replies larger than this are not kept; a duplicate then gets [`not_retained`].
pub const MAX_REMEMBERED_REPLY: usize = 256;

/// Stored for a client's request id whose reply was too large to keep: never empty,
/// because an empty memo marks an id the shard made for itself (see
/// [`crate::kv::KvState::remember`]), which is kept for a shorter while. It is not
/// valid RESP, so [`recall_reply`] answers [`not_retained`] for it.
pub const NOT_RETAINED: &[u8] = b"-";

/// The reply to store with a client's request id (RESP2 bytes, or [`NOT_RETAINED`]
/// when too large).
pub fn memo(reply: &Reply) -> Bytes {
    let mut out = BytesMut::new();
    reply.encode(2, &mut out);
    if out.len() > MAX_REMEMBERED_REPLY {
        Bytes::from_static(NOT_RETAINED)
    } else {
        out.freeze()
    }
}

/// The reply for a duplicate of a request whose memo is `b`.
pub fn recall_reply(b: &[u8]) -> Reply {
    let mut pos = 0;
    match parse(b, &mut pos, 0) {
        Some(r) if pos == b.len() => r,
        _ => not_retained(),
    }
}

/// A duplicate whose first reply was too large to keep.
pub fn not_retained() -> Reply {
    Reply::error("ERR duplicate request id: already applied (reply not retained)")
}

fn line<'a>(b: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let rest = b.get(*pos..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    *pos += end + 2;
    Some(&rest[..end])
}

fn parse(b: &[u8], pos: &mut usize, depth: usize) -> Option<Reply> {
    if depth > 8 {
        return None;
    }
    let tag = *b.get(*pos)?;
    *pos += 1;
    let l = line(b, pos)?;
    let text = std::str::from_utf8(l).ok()?;
    match tag {
        b'+' => Some(Reply::Simple(Bytes::copy_from_slice(l))),
        b'-' => Some(Reply::Error(text.to_string())),
        b':' => text.parse().ok().map(Reply::Integer),
        b'$' => {
            let n: i64 = text.parse().ok()?;
            if n < 0 {
                return Some(Reply::Null);
            }
            let n = n as usize;
            let data = b.get(*pos..pos.checked_add(n)?)?;
            *pos += n + 2;
            Some(Reply::Bulk(Bytes::copy_from_slice(data)))
        }
        b'*' => {
            let n: i64 = text.parse().ok()?;
            if n < 0 {
                return Some(Reply::NullArray);
            }
            let mut items = Vec::new();
            for _ in 0..n.min(MAX_REMEMBERED_REPLY as i64) {
                items.push(parse(b, pos, depth + 1)?);
            }
            Some(Reply::Array(items))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip() {
        for r in [
            Reply::ok(),
            Reply::Integer(-42),
            Reply::Bulk(Bytes::from_static(b"v\r\nx")),
            Reply::Null,
            Reply::Array(vec![Reply::Integer(1), Reply::Null]),
            Reply::error("ERR x"),
        ] {
            assert_eq!(recall_reply(&memo(&r)), r);
        }
    }

    #[test]
    fn large_replies_are_not_kept_and_garbage_is_safe() {
        let big = Reply::Bulk(Bytes::from(vec![b'a'; 1000]));
        // Never empty: an empty memo marks a shard's own id, kept a shorter while.
        assert_eq!(&memo(&big)[..], NOT_RETAINED);
        assert_eq!(recall_reply(&memo(&big)), not_retained());
        assert_eq!(recall_reply(b""), not_retained());
        assert_eq!(recall_reply(b"$99\r\nab"), not_retained());
        assert_eq!(recall_reply(b"*-1\r\n"), Reply::NullArray);
    }
}
