//! Number parsing with Redis's exact acceptance rules.
//!
//! Redis uses `string2ll` (strict: no `+`, no leading zeros, no spaces) for
//! integers and `strtold` plus checks for floats. Clients and tests observe
//! the difference (`"007"` is *not* an integer to Redis), so we mirror it.

/// Parses a signed 64-bit integer exactly like Redis's `string2ll`.
///
/// Accepts `0`, or an optional `-` followed by a non-zero digit and more
/// digits, without overflow. Everything else (empty, `+1`, `01`, `-0`,
/// ` 1`, `1 `) is rejected.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    // Redis refuses anything longer than LONG_STR_SIZE (21) up front.
    if s.is_empty() || s.len() > 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    // Accumulate as a negative number so i64::MIN is representable.
    let mut acc: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        acc = acc.checked_mul(10)?.checked_sub(i64::from(c - b'0'))?;
    }
    if neg {
        Some(acc)
    } else {
        acc.checked_neg()
    }
}

/// Parses a float the way Redis's `string2ld`/`string2d` accept it:
/// no surrounding whitespace, whole string consumed, NaN rejected.
/// Infinity is accepted (Redis accepts it; commands decide what to do).
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    if s.is_empty() || s.len() > 5 * 1024 {
        return None;
    }
    if s[0].is_ascii_whitespace() || s[s.len() - 1].is_ascii_whitespace() {
        return None;
    }
    let text = std::str::from_utf8(s).ok()?;
    let v: f64 = text.parse().ok()?;
    if v.is_nan() {
        return None;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        for bad in [
            &b""[..],
            b"+1",
            b"01",
            b"-0",
            b" 1",
            b"1 ",
            b"1a",
            b"-",
            b"0x10",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", bad);
        }
    }

    #[test]
    fn floats_follow_string2ld() {
        assert_eq!(parse_f64(b"1.5"), Some(1.5));
        assert_eq!(parse_f64(b"-3"), Some(-3.0));
        assert_eq!(parse_f64(b"1e3"), Some(1000.0));
        assert_eq!(parse_f64(b"inf"), Some(f64::INFINITY));
        for bad in [&b""[..], b"nan", b" 1", b"1 ", b"abc", b"1.2.3"] {
            assert_eq!(parse_f64(bad), None, "{:?}", bad);
        }
    }
}
