//! Reply encodings for RESP2 and RESP3, including RESP2 downgrades.

use bytes::Bytes;
use resp::reply::format_double;
use resp::Reply;

fn enc(r: &Reply, proto: u8) -> String {
    String::from_utf8_lossy(&r.to_bytes(proto)).into_owned()
}

#[test]
fn scalars() {
    for p in [2, 3] {
        assert_eq!(enc(&Reply::ok(), p), "+OK\r\n");
        assert_eq!(
            enc(&Reply::error("ERR syntax error"), p),
            "-ERR syntax error\r\n"
        );
        assert_eq!(enc(&Reply::Integer(-42), p), ":-42\r\n");
        assert_eq!(
            enc(&Reply::Integer(i64::MIN), p),
            ":-9223372036854775808\r\n"
        );
        assert_eq!(enc(&Reply::bulk("hi"), p), "$2\r\nhi\r\n");
        assert_eq!(enc(&Reply::bulk(""), p), "$0\r\n\r\n");
    }
}

#[test]
fn line_replies_cannot_break_framing() {
    assert_eq!(enc(&Reply::error("ERR a\r\nb"), 2), "-ERR a  b\r\n");
    assert_eq!(
        enc(&Reply::Simple(Bytes::from_static(b"x\ny")), 3),
        "+x y\r\n"
    );
}

#[test]
fn nulls() {
    assert_eq!(enc(&Reply::Null, 2), "$-1\r\n");
    assert_eq!(enc(&Reply::Null, 3), "_\r\n");
    assert_eq!(enc(&Reply::NullArray, 2), "*-1\r\n");
    assert_eq!(enc(&Reply::NullArray, 3), "_\r\n");
}

#[test]
fn aggregates_and_downgrades() {
    let map = Reply::Map(vec![
        (Reply::bulk("a"), Reply::Integer(1)),
        (Reply::bulk("b"), Reply::Null),
    ]);
    assert_eq!(enc(&map, 3), "%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n_\r\n");
    assert_eq!(enc(&map, 2), "*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n$-1\r\n");
    let set = Reply::Set(vec![Reply::bulk("x")]);
    assert_eq!(enc(&set, 3), "~1\r\n$1\r\nx\r\n");
    assert_eq!(enc(&set, 2), "*1\r\n$1\r\nx\r\n");
    let push = Reply::Push(vec![Reply::bulk("message")]);
    assert_eq!(enc(&push, 3), ">1\r\n$7\r\nmessage\r\n");
    assert_eq!(enc(&push, 2), "*1\r\n$7\r\nmessage\r\n");
    let arr = Reply::Array(vec![
        Reply::Bool(true),
        Reply::Bool(false),
        Reply::Array(vec![]),
    ]);
    assert_eq!(enc(&arr, 3), "*3\r\n#t\r\n#f\r\n*0\r\n");
    assert_eq!(enc(&arr, 2), "*3\r\n:1\r\n:0\r\n*0\r\n");
}

#[test]
fn verbatim() {
    let v = Reply::Verbatim {
        format: *b"txt",
        text: Bytes::from_static(b"hello"),
    };
    assert_eq!(enc(&v, 3), "=9\r\ntxt:hello\r\n");
    assert_eq!(enc(&v, 2), "$5\r\nhello\r\n");
}

#[test]
fn doubles() {
    assert_eq!(enc(&Reply::Double(1.5), 3), ",1.5\r\n");
    assert_eq!(enc(&Reply::Double(1.5), 2), "$3\r\n1.5\r\n");
    assert_eq!(enc(&Reply::Double(f64::INFINITY), 3), ",inf\r\n");
    assert_eq!(enc(&Reply::Double(f64::NEG_INFINITY), 2), "$4\r\n-inf\r\n");
    assert_eq!(enc(&Reply::Double(f64::NAN), 3), ",nan\r\n");
    assert_eq!(format_double(3.0), "3");
    assert_eq!(format_double(-0.0), "-0");
    assert_eq!(format_double(0.0), "0");
    assert_eq!(format_double(10.5), "10.5");
    assert_eq!(format_double(0.1), "0.1");
    assert_eq!(format_double(5.0e3), "5000");
    assert_eq!(format_double(1e300), "1e+300");
    assert_eq!(format_double(1.5e-10), "1.5e-10");
    // Round trip for arbitrary values.
    for v in [std::f64::consts::PI, 1e-5, 123456.789, -2.5e30, 1e20] {
        assert_eq!(format_double(v).parse::<f64>().unwrap(), v, "{v}");
    }
}
