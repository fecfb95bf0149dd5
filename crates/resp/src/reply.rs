//! Reply values and their RESP2 / RESP3 wire encodings.
//!
//! Command handlers build one [`Reply`] regardless of the protocol version
//! the client negotiated with `HELLO`; [`Reply::encode`] downgrades RESP3-only
//! types for RESP2 clients the same way Redis 7 does (`addReplyMap`,
//! `addReplyDouble`, `addReplyBool`, `addReplyNull`, ...).

use bytes::{Bytes, BytesMut};

/// A reply to a client. RESP3 types are downgraded when encoding for RESP2.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Status reply, e.g. `+OK`. Must not contain CR/LF (replaced by spaces).
    Simple(Bytes),
    /// Error reply; the full text including its code, e.g. `ERR syntax error`.
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    /// Missing value: RESP2 `$-1`, RESP3 `_`.
    Null,
    Array(Vec<Reply>),
    /// Missing aggregate (e.g. aborted EXEC): RESP2 `*-1`, RESP3 `_`.
    NullArray,
    /// RESP3 `,`; RESP2 bulk string with Redis's number formatting.
    Double(f64),
    /// RESP3 `%`; RESP2 flat array `k1 v1 k2 v2 ...`.
    Map(Vec<(Reply, Reply)>),
    /// RESP3 `~`; RESP2 array.
    Set(Vec<Reply>),
    /// RESP3 `#t`/`#f`; RESP2 integer 1/0.
    Bool(bool),
    /// RESP3 `=`; RESP2 bulk string of `text` only.
    Verbatim {
        /// The three-byte format tag, `*b"txt"` or `*b"mkd"`.
        format: [u8; 3],
        text: Bytes,
    },
    /// RESP3 out-of-band `>`; RESP2 array (as Redis does for pub/sub).
    Push(Vec<Reply>),
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple(Bytes::from_static(b"OK"))
    }

    /// A status reply from static text (no allocation).
    pub fn simple(s: &'static str) -> Reply {
        Reply::Simple(Bytes::from_static(s.as_bytes()))
    }

    /// An error reply; `msg` should carry its code (`ERR ...`, `WRONGTYPE ...`).
    pub fn error(msg: impl Into<String>) -> Reply {
        Reply::Error(msg.into())
    }

    /// A bulk string reply.
    pub fn bulk(b: impl Into<Bytes>) -> Reply {
        Reply::Bulk(b.into())
    }

    /// Appends the wire encoding of `self` for protocol `proto` (2 or 3; any
    /// value other than 3 is treated as RESP2, the default of new clients).
    pub fn encode(&self, proto: u8, out: &mut BytesMut) {
        let resp3 = proto == 3;
        match self {
            Reply::Simple(s) => line(out, b'+', s),
            Reply::Error(e) => line(out, b'-', e.as_bytes()),
            Reply::Integer(i) => header(out, b':', *i),
            Reply::Bulk(b) => bulk(out, b),
            Reply::Null if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Null => out.extend_from_slice(b"$-1\r\n"),
            Reply::NullArray if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) => aggregate(out, b'*', items, proto),
            Reply::Set(items) => aggregate(out, if resp3 { b'~' } else { b'*' }, items, proto),
            Reply::Push(items) => aggregate(out, if resp3 { b'>' } else { b'*' }, items, proto),
            Reply::Map(pairs) => {
                if resp3 {
                    header(out, b'%', pairs.len() as i64);
                } else {
                    header(out, b'*', 2 * pairs.len() as i64);
                }
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Reply::Double(d) => {
                let s = format_double(*d);
                if resp3 {
                    line(out, b',', s.as_bytes());
                } else {
                    bulk(out, s.as_bytes());
                }
            }
            Reply::Bool(b) if resp3 => {
                out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" })
            }
            Reply::Bool(b) => header(out, b':', i64::from(*b)),
            Reply::Verbatim { format, text } => {
                if resp3 {
                    header(out, b'=', text.len() as i64 + 4);
                    out.extend_from_slice(format);
                    out.extend_from_slice(b":");
                    out.extend_from_slice(text);
                    out.extend_from_slice(b"\r\n");
                } else {
                    bulk(out, text);
                }
            }
        }
    }

    /// Convenience: the encoding as a fresh buffer.
    pub fn to_bytes(&self, proto: u8) -> BytesMut {
        let mut out = BytesMut::new();
        self.encode(proto, &mut out);
        out
    }
}

/// `<prefix><n>\r\n`, formatted without allocation.
fn header(out: &mut BytesMut, prefix: u8, n: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.reserve(24);
    out.extend_from_slice(&[prefix]);
    if n < 0 {
        out.extend_from_slice(b"-");
    }
    out.extend_from_slice(&buf[i..]);
    out.extend_from_slice(b"\r\n");
}

/// A one-line reply; CR and LF would break framing, so like Redis's
/// `addReplyErrorFormat` we turn them into spaces.
fn line(out: &mut BytesMut, prefix: u8, s: &[u8]) {
    out.reserve(s.len() + 3);
    out.extend_from_slice(&[prefix]);
    if s.iter().any(|&b| b == b'\r' || b == b'\n') {
        out.extend(
            s.iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    } else {
        out.extend_from_slice(s);
    }
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut BytesMut, b: &[u8]) {
    header(out, b'$', b.len() as i64);
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

fn aggregate(out: &mut BytesMut, prefix: u8, items: &[Reply], proto: u8) {
    header(out, prefix, items.len() as i64);
    for item in items {
        item.encode(proto, out);
    }
}

/// Formats a double like Redis 7.2's `d2string`: `nan`, `inf`, `-inf`, `0`,
/// `-0`, integral values in the `long long` safe range without a fraction
/// (`3`, not `3.0`), otherwise the shortest round-tripping representation,
/// switching to exponent notation (`1e+300`) for very large or small
/// magnitudes as `fpconv_dtoa` does.
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        return "nan".into();
    }
    if d.is_infinite() {
        return if d < 0.0 { "-inf".into() } else { "inf".into() };
    }
    if d == 0.0 {
        return if d.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // double2ll: only within +-LLONG_MAX/2, where the cast is exact-checked.
    const HALF: f64 = (i64::MAX / 2) as f64;
    if d > -HALF && d < HALF && d.fract() == 0.0 {
        return format!("{}", d as i64);
    }
    // Rust's `{:e}` gives the shortest round-trip digits as `d.ddde[-]x`.
    let sci = format!("{:e}", d);
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => return sci,
    };
    if (-7..21).contains(&exp) {
        // Plain decimal: Rust's Display is shortest-roundtrip and never
        // uses exponent notation.
        format!("{}", d)
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{}{}", mantissa, sign, exp.abs())
    }
}
