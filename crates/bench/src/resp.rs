//! A tiny RESP2/RESP3 encoder and reply parser (enough for the load generator).

/// Appends `*N\r\n$len\r\narg\r\n...` to `out`.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    push_int(out, args.len() as i64);
    for a in args {
        out.push(b'$');
        push_int(out, a.len() as i64);
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn push_int(out: &mut Vec<u8>, n: i64) {
    let mut buf = itoa_buf(n);
    out.append(&mut buf);
    out.extend_from_slice(b"\r\n");
}

fn itoa_buf(n: i64) -> Vec<u8> {
    n.to_string().into_bytes()
}

/// A reply borrowed from the read buffer.
#[derive(Debug, PartialEq)]
pub enum Reply<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Int(i64),
    /// `None` is a null bulk string / RESP3 null.
    Bulk(Option<&'a [u8]>),
    /// `None` is a null array.
    Array(Option<Vec<Reply<'a>>>),
}

#[derive(Debug, PartialEq)]
pub struct ProtocolError(pub String);

/// Parses one complete reply at the start of `buf`: `Ok(None)` if more bytes are
/// needed, else the reply and the number of bytes it used.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, ProtocolError> {
    parse_at(buf, 0, 0)
}

fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(from..)?;
    let pos = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..pos], from + pos + 2))
}

fn int(s: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| ProtocolError(format!("bad integer {:?}", String::from_utf8_lossy(s))))
}

fn parse_at(
    buf: &[u8],
    at: usize,
    depth: usize,
) -> Result<Option<(Reply<'_>, usize)>, ProtocolError> {
    if depth > 8 {
        return Err(ProtocolError("reply nested too deep".into()));
    }
    let Some(&tag) = buf.get(at) else {
        return Ok(None);
    };
    let Some((l, next)) = line(buf, at + 1) else {
        return Ok(None);
    };
    match tag {
        b'+' => Ok(Some((Reply::Simple(l), next - at))),
        b'-' => Ok(Some((Reply::Error(l), next - at))),
        b':' => Ok(Some((Reply::Int(int(l)?), next - at))),
        b'_' => Ok(Some((Reply::Bulk(None), next - at))),
        b'#' => Ok(Some((Reply::Int((l == b"t") as i64), next - at))),
        b'$' | b'!' | b'=' => {
            let n = int(l)?;
            if n < 0 {
                return Ok(Some((Reply::Bulk(None), next - at)));
            }
            let n = n as usize;
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            let data = &buf[next..next + n];
            if tag == b'!' {
                return Ok(Some((Reply::Error(data), next + n + 2 - at)));
            }
            Ok(Some((Reply::Bulk(Some(data)), next + n + 2 - at)))
        }
        b'*' | b'~' | b'>' | b'%' => {
            let n = int(l)?;
            if n < 0 {
                return Ok(Some((Reply::Array(None), next - at)));
            }
            let n = if tag == b'%' {
                n as usize * 2
            } else {
                n as usize
            };
            let mut items = Vec::with_capacity(n.min(64));
            let mut pos = next;
            for _ in 0..n {
                match parse_at(buf, pos, depth + 1)? {
                    Some((r, used)) => {
                        items.push(r);
                        pos += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), pos - at)))
        }
        b',' | b'(' => Ok(Some((Reply::Simple(l), next - at))),
        other => Err(ProtocolError(format!(
            "unexpected reply type byte 0x{other:02x}"
        ))),
    }
}

/// The first word of an error reply (`TIMEOUT`, `ERR`, `VERSION`, ...), used as an error kind.
pub fn error_kind(e: &[u8]) -> String {
    let s = String::from_utf8_lossy(e);
    s.split_whitespace().next().unwrap_or("ERR").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes() {
        let mut v = Vec::new();
        encode(&mut v, &[b"SET", b"k", b"vv"]);
        assert_eq!(v, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n");
    }

    #[test]
    fn parses_all_kinds() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Some((Reply::Simple(b"OK"), 5)));
        assert_eq!(
            parse(b"-ERR x\r\n").unwrap(),
            Some((Reply::Error(b"ERR x"), 8))
        );
        assert_eq!(parse(b":42\r\n").unwrap(), Some((Reply::Int(42), 5)));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Some((Reply::Bulk(None), 5)));
        assert_eq!(parse(b"_\r\n").unwrap(), Some((Reply::Bulk(None), 3)));
        assert_eq!(
            parse(b"$3\r\nabc\r\n").unwrap(),
            Some((Reply::Bulk(Some(b"abc")), 9))
        );
        let arr = b"*2\r\n$1\r\nv\r\n:7\r\n+OK\r\n";
        let (r, n) = parse(arr).unwrap().unwrap();
        assert_eq!(n, 15);
        assert_eq!(
            r,
            Reply::Array(Some(vec![Reply::Bulk(Some(b"v")), Reply::Int(7)]))
        );
        assert_eq!(parse(b"*-1\r\n").unwrap(), Some((Reply::Array(None), 5)));
    }

    #[test]
    fn partial_input_needs_more() {
        let full = b"*2\r\n$3\r\nabc\r\n:1\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]).unwrap(), None, "cut {cut}");
        }
        assert!(parse(b"?x\r\n").is_err());
    }
}
