//! Incremental, zero-copy request parser for the Redis protocol.
//!
//! Mirrors `processMultibulkBuffer` / `processInlineBuffer` of Redis 7
//! `networking.c`, including its error texts, so that redis-cli,
//! redis-benchmark and client libraries see the behaviour they expect.
//!
//! The parser is stateless between calls: it re-scans the (small) headers of
//! a partially received request each time more bytes arrive, but it never
//! copies bulk payloads and never reserves memory based on a length the peer
//! *claims*; everything it allocates is proportional to bytes actually held
//! in `buf`. After an `Err`, the connection should be answered with the
//! error text and closed (as Redis does): `buf` is left unspecified.

use bytes::{Buf, Bytes, BytesMut};

/// Upper bounds applied while parsing, to keep a hostile peer from making us
/// buffer or allocate without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted bulk argument (Redis `proto-max-bulk-len`, 512 MiB).
    pub max_bulk_len: usize,
    /// Largest accepted argument count of one request (1024*1024).
    pub max_args: usize,
    /// Longest inline request line, and longest `*N`/`$N` header line
    /// (Redis `PROTO_INLINE_MAX_SIZE`, 64 KiB).
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_args: 1024 * 1024,
            max_inline_len: 64 * 1024,
        }
    }
}

/// A malformed request. `Display` yields the exact Redis reply text (without
/// the leading `-`), e.g. `ERR Protocol error: invalid bulk length`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// `*N` header not an integer, above `i32::MAX` or above `max_args`.
    #[error("ERR Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// `$N` header not an integer, negative or above `max_bulk_len`.
    #[error("ERR Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// An argument of a multibulk request did not start with `$`.
    #[error("ERR Protocol error: expected '$', got '{}'", char::from(*.0))]
    ExpectedDollar(u8),
    /// Inline request with an unterminated quote, or a closing quote not
    /// followed by a space.
    #[error("ERR Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// Inline request line longer than `max_inline_len`.
    #[error("ERR Protocol error: too big inline request")]
    TooBigInlineRequest,
    /// `*N` header line longer than `max_inline_len`.
    #[error("ERR Protocol error: too big mbulk count string")]
    TooBigMbulkCount,
    /// `$N` header line longer than `max_inline_len`.
    #[error("ERR Protocol error: too big bulk count string")]
    TooBigBulkCount,
}

/// Outcome of scanning the front of the buffer without consuming it.
enum Scan {
    /// More bytes are needed.
    Incomplete,
    /// A request with no arguments (`*0`, `*-1`, blank inline line) spanning
    /// this many bytes; Redis silently skips these.
    Empty(usize),
    /// A complete multibulk request: total length and (start, len) of each
    /// argument relative to the start of the buffer.
    Multibulk(usize, Vec<(usize, usize)>),
    /// A complete inline request: line length incl. newline, and its
    /// (unescaped, hence owned) arguments.
    Inline(usize, Vec<Bytes>),
}

/// Parses one request from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only a prefix of a request (nothing is
/// consumed), `Ok(Some(args))` after removing exactly one request from `buf`
/// (multibulk arguments share `buf`'s allocation: zero-copy). Empty requests
/// are skipped like Redis does, so `args` is never empty.
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    loop {
        let scan = match buf.first() {
            None => return Ok(None),
            Some(b'*') => scan_multibulk(buf, limits)?,
            Some(_) => scan_inline(buf, limits)?,
        };
        match scan {
            Scan::Incomplete => return Ok(None),
            Scan::Empty(n) => buf.advance(n),
            Scan::Multibulk(n, spans) => {
                let frame = buf.split_to(n).freeze();
                let args = spans
                    .into_iter()
                    .map(|(start, len)| frame.slice(start..start + len))
                    .collect();
                return Ok(Some(args));
            }
            Scan::Inline(n, args) => {
                buf.advance(n);
                return Ok(Some(args));
            }
        }
    }
}

/// Where a `\r`-terminated header line starting at `from` ends.
enum Line {
    /// Index of the `\r`; the byte after it (assumed `\n`) is present.
    Cr(usize),
    Incomplete,
    TooBig,
}

/// Finds the `\r` ending a header line, looking at most `max + 1` bytes ahead
/// so an endless header is rejected instead of rescanned forever. Like Redis,
/// the byte following `\r` is skipped without being checked.
fn header_line(buf: &[u8], from: usize, max: usize) -> Line {
    let avail = buf.len().saturating_sub(from);
    let window = &buf[from..from + avail.min(max.saturating_add(1))];
    match window.iter().position(|&b| b == b'\r') {
        Some(i) if from + i + 1 < buf.len() => Line::Cr(from + i),
        Some(_) => Line::Incomplete,
        None if avail > max => Line::TooBig,
        None => Line::Incomplete,
    }
}

fn scan_multibulk(buf: &[u8], limits: &Limits) -> Result<Scan, ProtocolError> {
    let cr = match header_line(buf, 0, limits.max_inline_len) {
        Line::Cr(cr) => cr,
        Line::Incomplete => return Ok(Scan::Incomplete),
        Line::TooBig => return Err(ProtocolError::TooBigMbulkCount),
    };
    let count = crate::num::parse_i64(&buf[1..cr]).ok_or(ProtocolError::InvalidMultibulkLength)?;
    if count > i64::from(i32::MAX) || count > limits.max_args as i64 {
        return Err(ProtocolError::InvalidMultibulkLength);
    }
    let mut pos = cr + 2;
    if count <= 0 {
        return Ok(Scan::Empty(pos));
    }
    // `count` is validated but only a claim: cap the up-front reservation.
    let count = count as usize;
    let mut spans = Vec::with_capacity(count.min(1024));
    while spans.len() < count {
        match buf.get(pos) {
            None => return Ok(Scan::Incomplete),
            Some(b'$') => {}
            Some(&other) => return Err(ProtocolError::ExpectedDollar(other)),
        }
        let cr = match header_line(buf, pos, limits.max_inline_len) {
            Line::Cr(cr) => cr,
            Line::Incomplete => return Ok(Scan::Incomplete),
            Line::TooBig => return Err(ProtocolError::TooBigBulkCount),
        };
        let len =
            crate::num::parse_i64(&buf[pos + 1..cr]).ok_or(ProtocolError::InvalidBulkLength)?;
        if len < 0 || len as u64 > limits.max_bulk_len as u64 {
            return Err(ProtocolError::InvalidBulkLength);
        }
        let len = len as usize;
        let start = cr + 2;
        // Payload plus its trailing CRLF must be fully present.
        if buf.len() - start.min(buf.len()) < len.saturating_add(2) {
            return Ok(Scan::Incomplete);
        }
        spans.push((start, len));
        pos = start + len + 2;
    }
    Ok(Scan::Multibulk(pos, spans))
}

fn scan_inline(buf: &[u8], limits: &Limits) -> Result<Scan, ProtocolError> {
    let window = &buf[..buf.len().min(limits.max_inline_len.saturating_add(1))];
    let nl = match window.iter().position(|&b| b == b'\n') {
        Some(nl) => nl,
        None if buf.len() > limits.max_inline_len => {
            return Err(ProtocolError::TooBigInlineRequest)
        }
        None => return Ok(Scan::Incomplete),
    };
    let mut line = &buf[..nl];
    if let Some((b'\r', rest)) = line.split_last() {
        line = rest;
    }
    let args = split_args(line).ok_or(ProtocolError::UnbalancedQuotes)?;
    if args.is_empty() {
        return Ok(Scan::Empty(nl + 1));
    }
    if args.len() > limits.max_args {
        return Err(ProtocolError::InvalidMultibulkLength);
    }
    Ok(Scan::Inline(nl + 1, args))
}

/// C `isspace` in the "C" locale, as used by `sdssplitargs` between args.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Splits an inline request exactly like Redis's `sdssplitargs`.
///
/// Returns `None` on unbalanced quotes. The line is a C string to Redis, so
/// a NUL byte ends it.
pub fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => &line[..nul],
        None => line,
    };
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while p < line.len() && is_c_space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            return Some(args);
        }
        let mut cur = Vec::new();
        let (mut inq, mut insq) = (false, false);
        loop {
            let c = at(p);
            if inq {
                if c == b'\\' && at(p + 1) == b'x' {
                    if let (Some(h), Some(l)) = (hex_val(at(p + 2)), hex_val(at(p + 3))) {
                        cur.push(h * 16 + l);
                        p += 4;
                        continue;
                    }
                }
                if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    cur.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    // Closing quote must be followed by a space or the end.
                    if at(p + 1) != 0 && !is_c_space(at(p + 1)) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    cur.push(c);
                }
            } else if insq {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_c_space(at(p + 1)) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    cur.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => break,
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    other => cur.push(other),
                }
            }
            p += 1;
        }
        args.push(Bytes::from(cur));
    }
}

/// Encodes `args` as a RESP multibulk request (what clients send).
pub fn encode_request<A: AsRef<[u8]>>(args: &[A], out: &mut BytesMut) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}
