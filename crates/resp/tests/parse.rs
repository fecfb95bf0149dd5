//! Request parser behaviour: framing, Redis error texts, limits, inline
//! quoting, zero-copy, and property tests (no panics, round trips).

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use resp::parse::split_args;
use resp::{encode_request, parse_request, Limits, ProtocolError};

fn parse_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(args) = parse_request(&mut buf, &Limits::default())? {
        out.push(args);
    }
    Ok(out)
}

fn strs(v: &[Bytes]) -> Vec<&[u8]> {
    v.iter().map(|b| &b[..]).collect()
}

#[test]
fn multibulk_pipeline() {
    let reqs = parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n").unwrap();
    assert_eq!(reqs.len(), 2);
    assert_eq!(strs(&reqs[0]), vec![&b"GET"[..], b"k"]);
    assert_eq!(strs(&reqs[1]), vec![&b"PING"[..]]);
}

#[test]
fn incomplete_consumes_nothing() {
    let full = b"*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n";
    for cut in 0..full.len() {
        let mut buf = BytesMut::from(&full[..cut]);
        assert_eq!(
            parse_request(&mut buf, &Limits::default()),
            Ok(None),
            "cut {cut}"
        );
        assert_eq!(buf.len(), cut);
    }
}

#[test]
fn zero_copy_args_point_into_buffer() {
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$5\r\nhello\r\n"[..]);
    let base = buf.as_ptr() as usize;
    let args = parse_request(&mut buf, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(args[0].as_ptr() as usize, base + 8);
    assert_eq!(args[1].as_ptr() as usize, base + 17);
}

#[test]
fn empty_requests_are_skipped() {
    let reqs = parse_all(b"*0\r\n*-1\r\n\r\n   \r\n*1\r\n$4\r\nPING\r\n").unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(strs(&reqs[0]), vec![&b"PING"[..]]);
}

#[test]
fn binary_safe_bulk() {
    let reqs = parse_all(b"*1\r\n$4\r\n\r\n\0\xff\r\n").unwrap();
    assert_eq!(&reqs[0][0][..], b"\r\n\0\xff");
}

#[test]
fn error_texts_match_redis() {
    let cases: &[(&[u8], &str)] = &[
        (b"*abc\r\n", "ERR Protocol error: invalid multibulk length"),
        (
            b"*3000000000\r\n",
            "ERR Protocol error: invalid multibulk length",
        ),
        (b"*+1\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*1\r\n$-1\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$x\r\n", "ERR Protocol error: invalid bulk length"),
        (
            b"*1\r\n$536870913\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"*1\r\nx3\r\nfoo\r\n",
            "ERR Protocol error: expected '$', got 'x'",
        ),
        (
            b"SET \"a b\r\n",
            "ERR Protocol error: unbalanced quotes in request",
        ),
        (
            b"SET 'a\r\n",
            "ERR Protocol error: unbalanced quotes in request",
        ),
        (
            b"SET \"a\"b\r\n",
            "ERR Protocol error: unbalanced quotes in request",
        ),
    ];
    for (input, text) in cases {
        let err = parse_all(input).unwrap_err();
        assert_eq!(
            err.to_string(),
            *text,
            "input {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn length_limits() {
    let limits = Limits::default();
    let mut big_inline = BytesMut::from(&vec![b'a'; limits.max_inline_len + 1][..]);
    assert_eq!(
        parse_request(&mut big_inline, &limits)
            .unwrap_err()
            .to_string(),
        "ERR Protocol error: too big inline request"
    );
    let mut big_count = BytesMut::from(&b"*"[..]);
    big_count.extend_from_slice(&vec![b'1'; limits.max_inline_len + 1]);
    assert_eq!(
        parse_request(&mut big_count, &limits)
            .unwrap_err()
            .to_string(),
        "ERR Protocol error: too big mbulk count string"
    );
    let mut big_bulk = BytesMut::from(&b"*1\r\n$"[..]);
    big_bulk.extend_from_slice(&vec![b'1'; limits.max_inline_len + 1]);
    assert_eq!(
        parse_request(&mut big_bulk, &limits)
            .unwrap_err()
            .to_string(),
        "ERR Protocol error: too big bulk count string"
    );
    // Exactly at the limit is fine (still waiting for the newline).
    let mut at_limit = BytesMut::from(&vec![b'a'; limits.max_inline_len][..]);
    assert_eq!(parse_request(&mut at_limit, &limits), Ok(None));
}

#[test]
fn configurable_limits() {
    let limits = Limits {
        max_bulk_len: 4,
        max_args: 2,
        max_inline_len: 16,
    };
    let mut ok = BytesMut::from(&b"*1\r\n$4\r\nabcd\r\n"[..]);
    assert!(parse_request(&mut ok, &limits).unwrap().is_some());
    let mut too_long = BytesMut::from(&b"*1\r\n$5\r\nabcde\r\n"[..]);
    assert_eq!(
        parse_request(&mut too_long, &limits),
        Err(ProtocolError::InvalidBulkLength)
    );
    let mut too_many = BytesMut::from(&b"*3\r\n"[..]);
    assert_eq!(
        parse_request(&mut too_many, &limits),
        Err(ProtocolError::InvalidMultibulkLength)
    );
    let mut inline_many = BytesMut::from(&b"a b c\r\n"[..]);
    assert_eq!(
        parse_request(&mut inline_many, &limits),
        Err(ProtocolError::InvalidMultibulkLength)
    );
}

#[test]
fn huge_claimed_bulk_does_not_allocate() {
    // 512 MiB claimed, 3 bytes sent: must just wait, with the buffer's
    // capacity untouched.
    let mut buf = BytesMut::from(&b"*1\r\n$536870912\r\nabc"[..]);
    let cap = buf.capacity();
    assert_eq!(parse_request(&mut buf, &Limits::default()), Ok(None));
    assert_eq!(buf.capacity(), cap);
    let mut many = BytesMut::from(&b"*1048576\r\n"[..]);
    assert_eq!(parse_request(&mut many, &Limits::default()), Ok(None));
}

#[test]
fn inline_commands() {
    let reqs = parse_all(b"SET k v\r\nGET k\nPING\r\n").unwrap();
    assert_eq!(strs(&reqs[0]), vec![&b"SET"[..], b"k", b"v"]);
    assert_eq!(strs(&reqs[1]), vec![&b"GET"[..], b"k"]);
    assert_eq!(strs(&reqs[2]), vec![&b"PING"[..]]);
}

#[test]
fn inline_quoting_like_sdssplitargs() {
    let s = |line: &[u8]| {
        split_args(line).map(|v| v.into_iter().map(|b| b.to_vec()).collect::<Vec<_>>())
    };
    assert_eq!(
        s(b"set \"a\\n\\r\\t\\b\\a\\x41\\\"z\" 'it\\'s' plain"),
        Some(vec![
            b"set".to_vec(),
            b"a\n\r\t\x08\x07A\"z".to_vec(),
            b"it's".to_vec(),
            b"plain".to_vec()
        ])
    );
    // Single quotes only unescape \'.
    assert_eq!(s(b"'a\\nb'"), Some(vec![b"a\\nb".to_vec()]));
    // Invalid hex escape keeps the x.
    assert_eq!(s(b"\"\\xZZ\""), Some(vec![b"xZZ".to_vec()]));
    // Quotes start mid-token and join.
    assert_eq!(s(b"ab\"c d\""), Some(vec![b"abc d".to_vec()]));
    assert_eq!(s(b"\"\""), Some(vec![b"".to_vec()]));
    assert_eq!(s(b"  a   b  "), Some(vec![b"a".to_vec(), b"b".to_vec()]));
    // A NUL ends the line, as in C.
    assert_eq!(s(b"a\0b"), Some(vec![b"a".to_vec()]));
    assert_eq!(s(b"\"abc"), None);
    assert_eq!(s(b"'abc"), None);
    assert_eq!(s(b"\"a\"b"), None);
    assert_eq!(s(b"'a'b"), None);
    assert_eq!(s(b"\"a\\"), None);
}

fn feed_bytewise(wire: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for &b in wire {
        buf.extend_from_slice(&[b]);
        while let Some(args) = parse_request(&mut buf, &Limits::default())? {
            out.push(args);
        }
    }
    Ok(out)
}

fn arg_vec() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6)
}

proptest! {
    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_all(&data);
        let _ = feed_bytewise(&data);
    }

    #[test]
    fn random_multibulk_like_bytes_never_panic(
        parts in prop::collection::vec(prop_oneof![
            Just(b"*".to_vec()), Just(b"$".to_vec()), Just(b"\r\n".to_vec()),
            Just(b"-1".to_vec()), Just(b"3".to_vec()), Just(b"\"".to_vec()),
            prop::collection::vec(any::<u8>(), 0..4)
        ], 0..40)
    ) {
        let data: Vec<u8> = parts.concat();
        let _ = parse_all(&data);
        let _ = feed_bytewise(&data);
    }

    #[test]
    fn encode_then_parse_round_trips(reqs in prop::collection::vec(arg_vec(), 1..5)) {
        let mut wire = BytesMut::new();
        for r in &reqs {
            encode_request(r, &mut wire);
        }
        let whole = parse_all(&wire).unwrap();
        let bytewise = feed_bytewise(&wire).unwrap();
        let expect: Vec<Vec<Bytes>> =
            reqs.iter().map(|r| r.iter().map(|a| Bytes::copy_from_slice(a)).collect()).collect();
        prop_assert_eq!(&whole, &expect);
        prop_assert_eq!(&bytewise, &expect);
    }

    #[test]
    fn inline_round_trips_quoted(args in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 1..5)) {
        // Quote every arg with \xHH escapes: sdssplitargs must invert it.
        let mut line = Vec::new();
        for a in &args {
            line.extend_from_slice(b" \"");
            for b in a {
                line.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            }
            line.push(b'"');
        }
        line.extend_from_slice(b"\r\n");
        let parsed = feed_bytewise(&line).unwrap();
        let expect: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
        prop_assert_eq!(parsed, vec![expect]);
    }
}
