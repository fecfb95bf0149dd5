//! Table-driven Redis 7 semantics of `node::exec` on one entity's state.
//!
//! Each step is `(now_ms, command line, expected reply)`. Command lines are
//! split on spaces and parsed with `resp::parse_command` (a parse error
//! becomes the error reply, as the connection layer would send it), so the
//! tables read like `redis-cli` sessions. Replies are rendered as:
//! `OK` (status), `(error) ...`, `(integer) n`, `"bulk"`, `(nil)`,
//! `(nil-array)`, `[a, b]`.
//!
//! Every step also checks the `changed` contract: unchanged means the state
//! is byte-for-byte identical; changed means the version went up by one and
//! every key written carries the new version.

use bytes::Bytes;
use node::exec::{access, execute, execute_all, Access};
use node::kv::KvState;
use resp::{parse_command, Command, Reply};

const T0: i64 = 1_700_000_000_000;

fn parse(line: &str) -> Result<Command, String> {
    let args: Vec<Bytes> = line
        .split(' ')
        .map(|s| Bytes::copy_from_slice(s.replace("\\s", " ").as_bytes()))
        .collect();
    parse_command(&args).map_err(|e| e.to_string())
}

fn render(r: &Reply) -> String {
    match r {
        Reply::Simple(s) => String::from_utf8_lossy(s).into_owned(),
        Reply::Error(e) => format!("(error) {e}"),
        Reply::Integer(i) => format!("(integer) {i}"),
        Reply::Bulk(b) => format!("\"{}\"", String::from_utf8_lossy(b).escape_default()),
        Reply::Null => "(nil)".into(),
        Reply::NullArray => "(nil-array)".into(),
        Reply::Array(items) => format!(
            "[{}]",
            items.iter().map(render).collect::<Vec<_>>().join(", ")
        ),
        other => format!("{other:?}"),
    }
}

/// Runs one command, checking the `changed` and `access` contracts.
fn step(state: &mut KvState, now: i64, line: &str) -> (String, bool) {
    let cmd = match parse(line) {
        Ok(c) => c,
        Err(e) => return (format!("(error) {e}"), false),
    };
    let before = state.clone();
    let (reply, changed) = execute(state, &cmd, now);
    if changed {
        assert_eq!(access(&cmd), Access::Write, "{line}: read changed state");
        assert_eq!(state.version, before.version + 1, "{line}");
        for (k, e) in &state.keys {
            let old = before.keys.get(k);
            if old != Some(e) {
                assert_eq!(e.version, state.version, "{line}: key {k:?} version");
            }
            assert!(e.is_live(now), "{line}: expired key {k:?} not purged");
        }
    } else {
        assert_eq!(
            state.encode(),
            before.encode(),
            "{line}: unchanged state mutated"
        );
    }
    (render(&reply), changed)
}

fn run(table: &[(i64, &str, &str)]) {
    let mut state = KvState::default();
    run_on(&mut state, table);
}

fn run_on(state: &mut KvState, table: &[(i64, &str, &str)]) {
    for (i, &(now, line, want)) in table.iter().enumerate() {
        let (got, _) = step(state, now, line);
        assert_eq!(got, want, "step {i}: {line} at {now}");
        // Every state survives the codec.
        assert_eq!(KvState::decode(&state.encode()).as_ref(), Ok(&*state));
    }
}

#[test]
fn get_set_basics() {
    run(&[
        (T0, "GET k", "(nil)"),
        (T0, "SET k v", "OK"),
        (T0, "GET k", "\"v\""),
        (T0, "SET k w", "OK"),
        (T0, "GET k", "\"w\""),
        (T0, "SET k\\sx v\\sy", "OK"),
        (T0, "GET k\\sx", "\"v y\""),
        (T0, "SET e \"\"", "OK"),
        (T0, "SET empty ", "OK"),
        (T0, "STRLEN empty", "(integer) 0"),
        (T0, "EXISTS empty", "(integer) 1"),
        (T0, "TYPE k", "string"),
        (T0, "TYPE nope", "none"),
        (
            T0,
            "GET",
            "(error) ERR wrong number of arguments for 'get' command",
        ),
    ]);
}

#[test]
fn set_options() {
    run(&[
        // NX / XX
        (T0, "SET k v XX", "(nil)"),
        (T0, "GET k", "(nil)"),
        (T0, "SET k v NX", "OK"),
        (T0, "SET k w NX", "(nil)"),
        (T0, "GET k", "\"v\""),
        (T0, "SET k w XX", "OK"),
        (T0, "GET k", "\"w\""),
        (T0, "SET k v NX XX", "(error) ERR syntax error"),
        // GET
        (T0, "SET k x GET", "\"w\""),
        (T0, "SET new x GET", "(nil)"),
        (T0, "GET new", "\"x\""),
        (T0, "SET k y NX GET", "\"x\""),
        (T0, "GET k", "\"x\""),
        (T0, "SET missing y XX GET", "(nil)"),
        (T0, "EXISTS missing", "(integer) 0"),
        (T0, "SET missing2 y NX GET", "(nil)"),
        (T0, "GET missing2", "\"y\""),
        // Expiry options
        (T0, "SET t v EX 10", "OK"),
        (T0, "PTTL t", "(integer) 10000"),
        (T0, "SET t v PX 1500", "OK"),
        (T0, "PTTL t", "(integer) 1500"),
        (T0, "TTL t", "(integer) 2"),
        (T0, "SET t v EXAT 1700000100", "OK"),
        (T0, "TTL t", "(integer) 100"),
        (T0, "SET t v PXAT 1700000000500", "OK"),
        (T0, "PTTL t", "(integer) 500"),
        (T0, "SET t v2 KEEPTTL", "OK"),
        (T0, "PTTL t", "(integer) 500"),
        (T0, "GET t", "\"v2\""),
        // SET without KEEPTTL clears the TTL.
        (T0, "SET t v3", "OK"),
        (T0, "TTL t", "(integer) -1"),
        (T0, "SET t v EX 5 GET", "\"v3\""),
        (T0, "TTL t", "(integer) 5"),
        (T0, "SET t v EX 5 KEEPTTL", "(error) ERR syntax error"),
        (T0, "SET t v EX 5 PX 5", "(error) ERR syntax error"),
        (T0, "SET t v EX 1 EX 7", "OK"),
        (T0, "TTL t", "(integer) 7"),
        (
            T0,
            "SET t v EX 0",
            "(error) ERR invalid expire time in 'set' command",
        ),
        (
            T0,
            "SET t v EX -1",
            "(error) ERR invalid expire time in 'set' command",
        ),
        (
            T0,
            "SET t v EX x",
            "(error) ERR value is not an integer or out of range",
        ),
        (T0, "SET t v BOGUS", "(error) ERR syntax error"),
        // EX that overflows once added to now: checked before anything else.
        (
            T0,
            "SET t v PX 9223372036854775807 GET",
            "(error) ERR invalid expire time in 'set' command",
        ),
        (
            T0,
            "SET t v EX 9223372036854775",
            "(error) ERR invalid expire time in 'set' command",
        ),
        (T0, "TTL t", "(integer) 7"),
        // KEEPTTL on a missing key: no TTL.
        (T0, "SET fresh v KEEPTTL", "OK"),
        (T0, "TTL fresh", "(integer) -1"),
        // XX with expiry on existing key
        (T0, "SET fresh v2 XX PX 100", "OK"),
        (T0, "PTTL fresh", "(integer) 100"),
        (T0 + 101, "SET fresh v3 XX", "(nil)"),
        (T0 + 101, "SET fresh v3 NX GET", "(nil)"),
        (T0 + 101, "GET fresh", "\"v3\""),
    ]);
}

#[test]
fn setnx_setex_psetex_getset_getdel() {
    run(&[
        (T0, "SETNX k v", "(integer) 1"),
        (T0, "SETNX k w", "(integer) 0"),
        (T0, "GET k", "\"v\""),
        (T0, "SETEX k 10 w", "OK"),
        (T0, "GET k", "\"w\""),
        (T0, "TTL k", "(integer) 10"),
        (T0, "PSETEX k 2500 x", "OK"),
        (T0, "PTTL k", "(integer) 2500"),
        (T0, "TTL k", "(integer) 3"),
        (
            T0,
            "SETEX k 0 w",
            "(error) ERR invalid expire time in 'setex' command",
        ),
        (
            T0,
            "SETEX k -5 w",
            "(error) ERR invalid expire time in 'setex' command",
        ),
        (
            T0,
            "PSETEX k 0 w",
            "(error) ERR invalid expire time in 'psetex' command",
        ),
        (
            T0,
            "PSETEX k 9223372036854775807 w",
            "(error) ERR invalid expire time in 'psetex' command",
        ),
        (
            T0,
            "SETEX k x w",
            "(error) ERR value is not an integer or out of range",
        ),
        // GETSET clears the TTL.
        (T0, "GETSET k y", "\"x\""),
        (T0, "TTL k", "(integer) -1"),
        (T0, "GETSET n y", "(nil)"),
        (T0, "GET n", "\"y\""),
        (T0, "GETDEL n", "\"y\""),
        (T0, "GETDEL n", "(nil)"),
        (T0, "EXISTS n", "(integer) 0"),
        // SETNX on an expired key sets it.
        (T0, "PSETEX e 10 old", "OK"),
        (T0 + 10, "SETNX e new", "(integer) 0"),
        (T0 + 11, "SETNX e new", "(integer) 1"),
        (T0 + 11, "TTL e", "(integer) -1"),
    ]);
}

#[test]
fn getex() {
    run(&[
        (T0, "GETEX k", "(nil)"),
        (T0, "GETEX k EX 10", "(nil)"),
        (T0, "EXISTS k", "(integer) 0"),
        (T0, "SET k v", "OK"),
        (T0, "GETEX k", "\"v\""),
        (T0, "GETEX k EX 10", "\"v\""),
        (T0, "TTL k", "(integer) 10"),
        (T0, "GETEX k PX 500", "\"v\""),
        (T0, "PTTL k", "(integer) 500"),
        (T0, "GETEX k EXAT 1700000020", "\"v\""),
        (T0, "TTL k", "(integer) 20"),
        (T0, "GETEX k PXAT 1700000000300", "\"v\""),
        (T0, "PTTL k", "(integer) 300"),
        (T0, "GETEX k PERSIST", "\"v\""),
        (T0, "TTL k", "(integer) -1"),
        (T0, "GETEX k PERSIST", "\"v\""),
        (
            T0,
            "GETEX k EX 0",
            "(error) ERR invalid expire time in 'getex' command",
        ),
        (
            T0,
            "GETEX k PX 9223372036854775807",
            "(error) ERR invalid expire time in 'getex' command",
        ),
        (T0, "GETEX k EX 1 PERSIST", "(error) ERR syntax error"),
        (T0, "GETEX k KEEPTTL", "(error) ERR syntax error"),
        // An absolute time in the past deletes the key after replying.
        (T0, "GETEX k PXAT 1000", "\"v\""),
        (T0, "EXISTS k", "(integer) 0"),
        (T0, "SET k v", "OK"),
        (T0, "GETEX k PXAT 1700000000000", "\"v\""),
        (T0, "GET k", "(nil)"),
    ]);
}

#[test]
fn multi_key_commands() {
    run(&[
        (T0, "MSET a 1 b 2 c 3", "OK"),
        (T0, "MGET a b nope c", "[\"1\", \"2\", (nil), \"3\"]"),
        (
            T0,
            "MSET a 1 b",
            "(error) ERR wrong number of arguments for 'mset' command",
        ),
        (T0, "MSET a x a y", "OK"),
        (T0, "GET a", "\"y\""),
        // MSETNX is all or nothing.
        (T0, "MSETNX a 9 d 4", "(integer) 0"),
        (T0, "GET a", "\"y\""),
        (T0, "EXISTS d", "(integer) 0"),
        (T0, "MSETNX d 4 e 5", "(integer) 1"),
        (T0, "MGET d e", "[\"4\", \"5\"]"),
        (T0, "MSETNX f 1 f 2", "(integer) 1"),
        (T0, "GET f", "\"2\""),
        // EXISTS counts duplicates, DEL does not.
        (T0, "EXISTS a a nope b", "(integer) 3"),
        (T0, "DEL a a nope b", "(integer) 2"),
        (T0, "EXISTS a b", "(integer) 0"),
        (T0, "UNLINK c d nope", "(integer) 2"),
        (T0, "DEL nope", "(integer) 0"),
        // MSET clears TTLs.
        (T0, "SET t v EX 100", "OK"),
        (T0, "MSET t w", "OK"),
        (T0, "TTL t", "(integer) -1"),
        // Expired keys do not count and do not block MSETNX.
        (T0, "PSETEX x 5 v", "OK"),
        (T0 + 6, "EXISTS x", "(integer) 0"),
        (T0 + 6, "DEL x", "(integer) 0"),
        (T0 + 6, "MSETNX x 1 y 2", "(integer) 1"),
        (T0 + 6, "MGET x y", "[\"1\", \"2\"]"),
    ]);
}

#[test]
fn integer_counters() {
    run(&[
        (T0, "INCR n", "(integer) 1"),
        (T0, "INCR n", "(integer) 2"),
        (T0, "INCRBY n 10", "(integer) 12"),
        (T0, "DECR n", "(integer) 11"),
        (T0, "DECRBY n 20", "(integer) -9"),
        (T0, "GET n", "\"-9\""),
        (T0, "INCRBY n -1", "(integer) -10"),
        (T0, "DECRBY m 5", "(integer) -5"),
        (T0, "SET s abc", "OK"),
        (
            T0,
            "INCR s",
            "(error) ERR value is not an integer or out of range",
        ),
        (T0, "SET s 007", "OK"),
        (
            T0,
            "INCR s",
            "(error) ERR value is not an integer or out of range",
        ),
        (T0, "SET s \\s1", "OK"),
        (
            T0,
            "INCR s",
            "(error) ERR value is not an integer or out of range",
        ),
        (T0, "SET s 1.5", "OK"),
        (
            T0,
            "INCRBY s 1",
            "(error) ERR value is not an integer or out of range",
        ),
        (
            T0,
            "INCRBY n x",
            "(error) ERR value is not an integer or out of range",
        ),
        (
            T0,
            "INCRBY n 1.5",
            "(error) ERR value is not an integer or out of range",
        ),
        (
            T0,
            "DECRBY n -9223372036854775808",
            "(error) ERR decrement would overflow",
        ),
        (T0, "SET big 9223372036854775806", "OK"),
        (T0, "INCR big", "(integer) 9223372036854775807"),
        (
            T0,
            "INCR big",
            "(error) ERR increment or decrement would overflow",
        ),
        (T0, "GET big", "\"9223372036854775807\""),
        (T0, "SET small -9223372036854775807", "OK"),
        (T0, "DECR small", "(integer) -9223372036854775808"),
        (
            T0,
            "DECR small",
            "(error) ERR increment or decrement would overflow",
        ),
        (
            T0,
            "INCRBY small -1",
            "(error) ERR increment or decrement would overflow",
        ),
        (T0, "INCRBY small 9223372036854775807", "(integer) -1"),
        (T0, "SET huge 9223372036854775808", "OK"),
        (
            T0,
            "INCR huge",
            "(error) ERR value is not an integer or out of range",
        ),
        // Counters keep the TTL.
        (T0, "SET c 5 EX 100", "OK"),
        (T0, "INCR c", "(integer) 6"),
        (T0, "TTL c", "(integer) 100"),
        (T0, "DECRBY c 10", "(integer) -4"),
        (T0, "TTL c", "(integer) 100"),
        // An expired counter starts from zero, without TTL.
        (T0 + 100_001, "INCR c", "(integer) 1"),
        (T0 + 100_001, "TTL c", "(integer) -1"),
    ]);
}

#[test]
fn incrbyfloat() {
    // f64::MAX in plain notation: shortest digits, then zeros (309 digits).
    let max = format!("\"17976931348623157{}\"", "0".repeat(292));
    run(&[
        (T0, "SET f 10.50", "OK"),
        (T0, "INCRBYFLOAT f 0.1", "\"10.6\""),
        (T0, "INCRBYFLOAT f -5", "\"5.6\""),
        (T0, "GET f", "\"5.6\""),
        (T0, "SET f 5.0e3", "OK"),
        (T0, "INCRBYFLOAT f 2.0e2", "\"5200\""),
        (T0, "INCRBYFLOAT new 1", "\"1\""),
        (T0, "INCRBYFLOAT new 0.25", "\"1.25\""),
        (T0, "SET f 1.5", "OK"),
        (T0, "INCRBYFLOAT f 1.5", "\"3\""),
        (T0, "SET f 17179869184", "OK"),
        (T0, "INCRBYFLOAT f 1.5", "\"17179869185.5\""),
        (T0, "SET f 17179869184", "OK"),
        (T0, "INCRBYFLOAT f 17179869184", "\"34359738368\""),
        (
            T0,
            "INCRBYFLOAT f 1e30",
            "\"1000000000000000000000000000000\"",
        ),
        (T0, "SET f 0", "OK"),
        (T0, "INCRBYFLOAT f 0.000001", "\"0.000001\""),
        (T0, "INCRBYFLOAT f -0.000001", "\"0\""),
        (T0, "INCRBYFLOAT f 1e-20", "\"0\""),
        (T0, "SET f \\s11", "OK"),
        (
            T0,
            "INCRBYFLOAT f 1",
            "(error) ERR value is not a valid float",
        ),
        (T0, "SET f abc", "OK"),
        (
            T0,
            "INCRBYFLOAT f 1",
            "(error) ERR value is not a valid float",
        ),
        (T0, "SET f 1", "OK"),
        (
            T0,
            "INCRBYFLOAT f abc",
            "(error) ERR value is not a valid float",
        ),
        (
            T0,
            "INCRBYFLOAT f nan",
            "(error) ERR value is not a valid float",
        ),
        (
            T0,
            "INCRBYFLOAT f +inf",
            "(error) ERR increment would produce NaN or Infinity",
        ),
        (T0, "INCRBYFLOAT f 1.7976931348623157e308", &max),
        (
            T0,
            "INCRBYFLOAT f 1.7976931348623157e308",
            "(error) ERR increment would produce NaN or Infinity",
        ),
        (T0, "SET inf inf", "OK"),
        (
            T0,
            "INCRBYFLOAT inf 1",
            "(error) ERR increment would produce NaN or Infinity",
        ),
        // Keeps the TTL.
        (T0, "SET t 1 EX 50", "OK"),
        (T0, "INCRBYFLOAT t 0.5", "\"1.5\""),
        (T0, "TTL t", "(integer) 50"),
        // An integer counter can continue after a float increment.
        (T0, "SET i 3", "OK"),
        (T0, "INCRBYFLOAT i 2", "\"5\""),
        (T0, "INCR i", "(integer) 6"),
    ]);
}

#[test]
fn no_negative_zero() {
    let mut s = KvState::default();
    let a = 1.0f64 / 41.0;
    for line in [
        format!("INCRBYFLOAT foo {a}"),
        format!("INCRBYFLOAT foo {}", -a),
    ] {
        step(&mut s, T0, &line);
    }
    assert_eq!(step(&mut s, T0, "GET foo").0, "\"0\"");
}

#[test]
fn append_strlen() {
    run(&[
        (T0, "APPEND k Hello", "(integer) 5"),
        (T0, "APPEND k \\sWorld", "(integer) 11"),
        (T0, "GET k", "\"Hello World\""),
        (T0, "STRLEN k", "(integer) 11"),
        (T0, "STRLEN nope", "(integer) 0"),
        (T0, "APPEND k ", "(integer) 11"),
        (T0, "APPEND e ", "(integer) 0"),
        (T0, "EXISTS e", "(integer) 1"),
        // Keeps the TTL.
        (T0, "SET t a EX 10", "OK"),
        (T0, "APPEND t b", "(integer) 2"),
        (T0, "TTL t", "(integer) 10"),
        (T0 + 10_001, "APPEND t c", "(integer) 1"),
        (T0 + 10_001, "TTL t", "(integer) -1"),
    ]);
}

#[test]
fn getrange() {
    run(&[
        (T0, "GETRANGE nope 0 -1", "\"\""),
        (T0, "SET k This\\sis\\sa\\sstring", "OK"),
        (T0, "GETRANGE k 0 3", "\"This\""),
        (T0, "GETRANGE k -3 -1", "\"ing\""),
        (T0, "GETRANGE k 0 -1", "\"This is a string\""),
        (T0, "GETRANGE k 10 100", "\"string\""),
        (T0, "GETRANGE k -1 -5", "\"\""),
        (T0, "GETRANGE k 5 3", "\"\""),
        (T0, "GETRANGE k -100 2", "\"Thi\""),
        (T0, "GETRANGE k -100 -100", "\"T\""),
        (T0, "GETRANGE k 100 200", "\"\""),
        (T0, "GETRANGE k 15 15", "\"g\""),
        (T0, "GETRANGE k 16 16", "\"\""),
        (T0, "GETRANGE k 0 -17", "\"T\""),
        (
            T0,
            "GETRANGE k -9223372036854775808 9223372036854775807",
            "\"This is a string\"",
        ),
        (
            T0,
            "GETRANGE k a 1",
            "(error) ERR value is not an integer or out of range",
        ),
        (T0, "SET e ", "OK"),
        (T0, "GETRANGE e 0 -1", "\"\""),
        (T0, "GETRANGE e -1 0", "\"\""),
    ]);
}

#[test]
fn setrange() {
    run(&[
        (T0, "SETRANGE k 6 Redis", "(integer) 11"),
        (T0, "GET k", "\"\\u{0}\\u{0}\\u{0}\\u{0}\\u{0}\\u{0}Redis\""),
        (T0, "SET k Hello\\sWorld", "OK"),
        (T0, "SETRANGE k 6 Redis", "(integer) 11"),
        (T0, "GET k", "\"Hello Redis\""),
        (T0, "SETRANGE k 0 J", "(integer) 11"),
        (T0, "GET k", "\"Jello Redis\""),
        (T0, "SETRANGE k 13 !", "(integer) 14"),
        (T0, "GET k", "\"Jello Redis\\u{0}\\u{0}!\""),
        // An empty value writes nothing and does not create the key.
        (T0, "SETRANGE k 100 ", "(integer) 14"),
        (T0, "SETRANGE new 0 ", "(integer) 0"),
        (T0, "SETRANGE new 5 ", "(integer) 0"),
        (T0, "EXISTS new", "(integer) 0"),
        (T0, "SETRANGE k -1 x", "(error) ERR offset is out of range"),
        (
            T0,
            "SETRANGE k x x",
            "(error) ERR value is not an integer or out of range",
        ),
        (
            T0,
            "SETRANGE k 536870912 x",
            "(error) ERR string exceeds maximum allowed size (proto-max-bulk-len)",
        ),
        (
            T0,
            "SETRANGE new 536870911 xy",
            "(error) ERR string exceeds maximum allowed size (proto-max-bulk-len)",
        ),
        (T0, "EXISTS new", "(integer) 0"),
        // An empty value never errors, however large the offset.
        (T0, "SETRANGE k 536870912 ", "(integer) 14"),
        // Keeps the TTL.
        (T0, "SET t abc PX 700", "OK"),
        (T0, "SETRANGE t 1 X", "(integer) 3"),
        (T0, "GET t", "\"aXc\""),
        (T0, "PTTL t", "(integer) 700"),
    ]);
}

#[test]
fn expire_family() {
    run(&[
        (T0, "EXPIRE nope 10", "(integer) 0"),
        (T0, "SET k v", "OK"),
        (T0, "TTL k", "(integer) -1"),
        (T0, "PTTL k", "(integer) -1"),
        (T0, "TTL nope", "(integer) -2"),
        (T0, "PTTL nope", "(integer) -2"),
        (T0, "EXPIRE k 10", "(integer) 1"),
        (T0, "TTL k", "(integer) 10"),
        (T0 + 1_499, "TTL k", "(integer) 9"),
        (T0 + 1_500, "TTL k", "(integer) 9"),
        (T0 + 1_501, "TTL k", "(integer) 8"),
        (T0 + 9_600, "TTL k", "(integer) 0"),
        (T0 + 10_000, "PTTL k", "(integer) 0"),
        (T0 + 10_000, "GET k", "\"v\""),
        (T0 + 10_001, "GET k", "(nil)"),
        (T0 + 10_001, "TTL k", "(integer) -2"),
        (T0 + 10_001, "EXPIRE k 10", "(integer) 0"),
        (T0, "SET k v", "OK"),
        (T0, "PEXPIRE k 1500", "(integer) 1"),
        (T0, "PTTL k", "(integer) 1500"),
        (T0, "EXPIREAT k 1700000030", "(integer) 1"),
        (T0, "TTL k", "(integer) 30"),
        (T0, "PEXPIREAT k 1700000000777", "(integer) 1"),
        (T0, "PTTL k", "(integer) 777"),
        (T0, "PERSIST k", "(integer) 1"),
        (T0, "PERSIST k", "(integer) 0"),
        (T0, "PERSIST nope", "(integer) 0"),
        (T0, "TTL k", "(integer) -1"),
        // NX / XX / GT / LT
        (T0, "EXPIRE k 100 XX", "(integer) 0"),
        (T0, "EXPIRE k 100 GT", "(integer) 0"),
        (T0, "TTL k", "(integer) -1"),
        (T0, "EXPIRE k 100 NX", "(integer) 1"),
        (T0, "EXPIRE k 50 NX", "(integer) 0"),
        (T0, "EXPIRE k 50 GT", "(integer) 0"),
        (T0, "EXPIRE k 100 GT", "(integer) 0"),
        (T0, "EXPIRE k 200 GT", "(integer) 1"),
        (T0, "TTL k", "(integer) 200"),
        (T0, "EXPIRE k 300 LT", "(integer) 0"),
        (T0, "EXPIRE k 200 LT", "(integer) 0"),
        (T0, "EXPIRE k 150 LT", "(integer) 1"),
        (T0, "EXPIRE k 160 XX", "(integer) 1"),
        (T0, "EXPIRE k 170 XX GT", "(integer) 1"),
        (T0, "TTL k", "(integer) 170"),
        (T0, "PERSIST k", "(integer) 1"),
        // LT on a key without TTL sets one; XX LT does not.
        (T0, "EXPIRE k 100 XX LT", "(integer) 0"),
        (T0, "EXPIRE k 100 LT", "(integer) 1"),
        (T0, "TTL k", "(integer) 100"),
        (
            T0,
            "EXPIRE k 100 NX XX",
            "(error) ERR NX and XX, GT or LT options at the same time are not compatible",
        ),
        (
            T0,
            "EXPIRE k 100 GT LT",
            "(error) ERR GT and LT options at the same time are not compatible",
        ),
        (T0, "EXPIRE k 100 FOO", "(error) ERR Unsupported option FOO"),
        (
            T0,
            "EXPIRE k abc",
            "(error) ERR value is not an integer or out of range",
        ),
        // Overflow.
        (
            T0,
            "EXPIRE k 9223372036854775807",
            "(error) ERR invalid expire time in 'expire' command",
        ),
        (
            T0,
            "PEXPIRE k 9223372036854775807",
            "(error) ERR invalid expire time in 'pexpire' command",
        ),
        (
            T0,
            "EXPIREAT k 9223372036854776",
            "(error) ERR invalid expire time in 'expireat' command",
        ),
        (T0, "PEXPIREAT k 9223372036854775807", "(integer) 1"),
        (T0, "TTL k", "(integer) 9223370336854776"),
        // Overflow is reported even for a missing key.
        (
            T0,
            "PEXPIRE nope 9223372036854775807",
            "(error) ERR invalid expire time in 'pexpire' command",
        ),
        // A deadline at or before now deletes the key and returns 1.
        (T0, "EXPIRE k 0", "(integer) 1"),
        (T0, "EXISTS k", "(integer) 0"),
        (T0, "SET k v", "OK"),
        (T0, "EXPIRE k -10", "(integer) 1"),
        (T0, "EXISTS k", "(integer) 0"),
        (T0, "SET k v", "OK"),
        (T0, "PEXPIREAT k 1700000000000", "(integer) 1"),
        (T0, "EXISTS k", "(integer) 0"),
        (T0, "SET k v", "OK"),
        (T0, "EXPIREAT k 1", "(integer) 1"),
        (T0, "EXISTS k", "(integer) 0"),
        // ... unless a flag refuses it first.
        (T0, "SET k v", "OK"),
        (T0, "EXPIRE k -1 XX", "(integer) 0"),
        (T0, "EXPIRE k -1 GT", "(integer) 0"),
        (T0, "EXISTS k", "(integer) 1"),
        (T0, "EXPIRE k -1 LT", "(integer) 1"),
        (T0, "EXISTS k", "(integer) 0"),
        // TTL rounding: (ms + 500) / 1000.
        (T0, "SET r v PX 499", "OK"),
        (T0, "TTL r", "(integer) 0"),
        (T0, "SET r v PX 500", "OK"),
        (T0, "TTL r", "(integer) 1"),
        (T0, "SET r v PX 1499", "OK"),
        (T0, "TTL r", "(integer) 1"),
        // Expired keys are invisible to every command.
        (T0, "SET x v PX 10", "OK"),
        (T0 + 11, "TYPE x", "none"),
        (T0 + 11, "STRLEN x", "(integer) 0"),
        (T0 + 11, "PERSIST x", "(integer) 0"),
        (T0 + 11, "GETRANGE x 0 -1", "\"\""),
        (T0 + 11, "APPEND x w", "(integer) 1"),
        (T0 + 11, "TTL x", "(integer) -1"),
    ]);
}

#[test]
fn vget_vset() {
    run(&[
        (T0, "VGET k", "(nil-array)"),
        (T0, "VSET k v 5", "(error) VERSION mismatch (current 0)"),
        (T0, "VSET k v 0", "(integer) 1"),
        (T0, "VGET k", "[\"v\", (integer) 1]"),
        (T0, "VSET k w 0", "(error) VERSION mismatch (current 1)"),
        (T0, "SET other x", "OK"),
        // Writes to other keys of the entity do not change k's version.
        (T0, "VGET k", "[\"v\", (integer) 1]"),
        (T0, "VSET k w 1", "(integer) 3"),
        (T0, "VGET k", "[\"w\", (integer) 3]"),
        // Any write to k (value or TTL) changes its version.
        (T0, "APPEND k x", "(integer) 2"),
        (T0, "VGET k", "[\"wx\", (integer) 4]"),
        (T0, "EXPIRE k 100", "(integer) 1"),
        (T0, "VGET k", "[\"wx\", (integer) 5]"),
        // VSET clears the TTL like SET.
        (T0, "VSET k y 5", "(integer) 6"),
        (T0, "TTL k", "(integer) -1"),
        // Deleted and expired keys have version 0 again.
        (T0, "DEL k", "(integer) 1"),
        (T0, "VGET k", "(nil-array)"),
        (T0, "VSET k z 6", "(error) VERSION mismatch (current 0)"),
        (T0, "VSET k z 0", "(integer) 8"),
        (T0, "PEXPIRE k 10", "(integer) 1"),
        (T0 + 11, "VGET k", "(nil-array)"),
        (
            T0 + 11,
            "VSET k z 9",
            "(error) VERSION mismatch (current 0)",
        ),
        (T0 + 11, "VSET k z 0", "(integer) 10"),
        (
            T0,
            "VSET k z -1",
            "(error) ERR value is not an integer or out of range",
        ),
        (
            T0,
            "VSET k z",
            "(error) ERR wrong number of arguments for 'vset' command",
        ),
    ]);
}

#[test]
fn no_op_writes_do_not_change_state() {
    let mut s = KvState::default();
    for (line, want_changed) in [
        ("SET k v", true),
        ("SET k v NX", false),
        ("SET nope v XX", false),
        ("SETNX k w", false),
        ("DEL nope", false),
        ("MSETNX k 1 j 2", false),
        ("EXPIRE nope 5", false),
        ("EXPIRE k 5 XX", false),
        ("PERSIST k", false),
        ("GETDEL nope", false),
        ("GETEX k", false),
        ("GETEX k PERSIST", false),
        ("GETEX nope EX 5", false),
        ("SETRANGE k 0 ", false),
        ("SETRANGE nope 3 ", false),
        ("APPEND k ", false),
        ("INCR k", false),
        ("VSET k v 0", false),
        ("SET k v PX 0", false),
        ("SET k v", true),
        ("EXPIRE k 5", true),
        ("DEL k", true),
    ] {
        let (_, changed) = step(&mut s, T0, line);
        assert_eq!(changed, want_changed, "{line}");
    }
    assert_eq!(s.version, 4);
}

#[test]
fn expired_keys_are_purged_on_write_only() {
    let mut s = KvState::default();
    run_on(
        &mut s,
        &[
            (T0, "SET a 1 PX 10", "OK"),
            (T0, "SET b 2 PX 20", "OK"),
            (T0, "SET c 3", "OK"),
        ],
    );
    assert_eq!(s.keys.len(), 3);
    // Reads at a later time leave the expired keys in place (invisible).
    run_on(&mut s, &[(T0 + 15, "MGET a b c", "[(nil), \"2\", \"3\"]")]);
    assert_eq!(s.keys.len(), 3);
    assert_eq!(s.live_len(T0 + 15), 2);
    // A real write purges every expired key of the entity.
    run_on(&mut s, &[(T0 + 15, "SET c 4", "OK")]);
    assert_eq!(s.keys.len(), 2);
    run_on(&mut s, &[(T0 + 25, "INCR d", "(integer) 1")]);
    assert_eq!(
        s.keys.keys().map(|k| &k[..]).collect::<Vec<_>>(),
        vec![&b"c"[..], &b"d"[..]]
    );
}

#[test]
fn relative_expiry_is_stamped_absolute() {
    let mut s = KvState::default();
    step(&mut s, T0, "SET k v EX 10");
    step(&mut s, T0, "SETEX j 10 v");
    step(&mut s, T0, "SET i v");
    step(&mut s, T0, "PEXPIRE i 250");
    assert_eq!(s.keys[&b"k"[..]].expire_at_ms, Some(T0 + 10_000));
    assert_eq!(s.keys[&b"j"[..]].expire_at_ms, Some(T0 + 10_000));
    assert_eq!(s.keys[&b"i"[..]].expire_at_ms, Some(T0 + 250));
    // A replica decoding the state at another time agrees on the deadline.
    let replica = KvState::decode(&s.encode()).expect("decode");
    assert!(replica.get_live(b"k", T0 + 10_000).is_some());
    assert!(replica.get_live(b"k", T0 + 10_001).is_none());
}

#[test]
fn multi_exec_body() {
    let mut s = KvState::default();
    let cmds: Vec<Command> = [
        "SET a 1",
        "INCR a",
        "SET s abc",
        "INCR s",
        "MSET b 2 c 3",
        "GET a",
        "PING",
        "DEL a b",
    ]
    .iter()
    .map(|l| parse(l).expect("parse"))
    .collect();
    let (reply, changed) = execute_all(&mut s, &cmds, T0);
    assert!(changed);
    assert_eq!(
        render(&reply),
        "[OK, (integer) 2, OK, (error) ERR value is not an integer or out of range, OK, \
         \"2\", (error) ERR internal: not an entity command, (integer) 2]"
    );
    // The failed INCR did not undo the others; each write bumped the version.
    assert_eq!(s.version, 5);
    assert_eq!(s.keys.len(), 2);
    let reads: Vec<Command> = ["GET c", "MGET s c", "TTL c"]
        .iter()
        .map(|l| parse(l).expect("parse"))
        .collect();
    let before = s.clone();
    let (reply, changed) = execute_all(&mut s, &reads, T0);
    assert!(!changed);
    assert_eq!(s, before);
    assert_eq!(render(&reply), "[\"3\", [\"abc\", \"3\"], (integer) -1]");
    assert_eq!(execute_all(&mut s, &[], T0), (Reply::Array(vec![]), false));
}

#[test]
fn connection_commands_are_not_entity_commands() {
    let mut s = KvState::default();
    for line in [
        "PING",
        "ECHO x",
        "HELLO 3",
        "AUTH p",
        "SELECT 0",
        "CLIENT ID",
        "COMMAND COUNT",
        "INFO",
        "FLUSHALL",
        "FLUSHDB",
        "DBSIZE",
        "MULTI",
        "EXEC",
        "DISCARD",
        "WATCH k",
        "UNWATCH",
        "READONLY",
        "READWRITE",
        "QUIT",
        "RESET",
    ] {
        let (r, changed) = step(&mut s, T0, line);
        assert_eq!(r, "(error) ERR internal: not an entity command", "{line}");
        assert!(!changed);
    }
}

#[test]
fn access_classification() {
    for line in [
        "GET k",
        "MGET a b",
        "EXISTS k",
        "STRLEN k",
        "GETRANGE k 0 1",
        "TYPE k",
        "TTL k",
        "PTTL k",
        "VGET k",
        "GETEX k",
        "PING",
        "DBSIZE",
    ] {
        assert_eq!(access(&parse(line).expect("parse")), Access::Read, "{line}");
    }
    for line in [
        "SET k v",
        "SETNX k v",
        "SETEX k 1 v",
        "PSETEX k 1 v",
        "GETSET k v",
        "GETDEL k",
        "GETEX k PERSIST",
        "GETEX k EX 1",
        "MSET k v",
        "MSETNX k v",
        "DEL k",
        "UNLINK k",
        "INCR k",
        "INCRBY k 1",
        "DECR k",
        "DECRBY k 1",
        "INCRBYFLOAT k 1",
        "APPEND k v",
        "SETRANGE k 0 v",
        "EXPIRE k 1",
        "PEXPIREAT k 1",
        "PERSIST k",
        "VSET k v 0",
        "FLUSHALL",
        "EXEC",
    ] {
        assert_eq!(
            access(&parse(line).expect("parse")),
            Access::Write,
            "{line}"
        );
    }
}

#[test]
fn rename_renamenx() {
    run(&[
        (T0, "RENAME a b", "(error) ERR no such key"),
        (T0, "RENAMENX a b", "(error) ERR no such key"),
        (T0, "SET a 1", "OK"),
        (T0, "RENAME a b", "OK"),
        (T0, "GET a", "(nil)"),
        (T0, "GET b", "\"1\""),
        // Onto itself: OK / 0, nothing changes.
        (T0, "RENAME b b", "OK"),
        (T0, "RENAMENX b b", "(integer) 0"),
        (T0, "GET b", "\"1\""),
        // The source's TTL moves with it; the target's is not inherited.
        (T0, "SET c 2 PX 5000", "OK"),
        (T0, "SET d 3 PX 9000", "OK"),
        (T0, "RENAME c d", "OK"),
        (T0, "PTTL d", "(integer) 5000"),
        (T0, "RENAME d b", "OK"),
        (T0, "TTL b", "(integer) 5"),
        (T0, "SET e 4", "OK"),
        (T0, "RENAME e b", "OK"),
        (T0, "TTL b", "(integer) -1"),
        // RENAMENX refuses an existing target.
        (T0, "SET f 5", "OK"),
        (T0, "RENAMENX f b", "(integer) 0"),
        (T0, "GET b", "\"4\""),
        (T0, "RENAMENX f g", "(integer) 1"),
        (T0, "GET g", "\"5\""),
        (T0, "EXISTS f", "(integer) 0"),
        // An expired source is missing.
        (T0, "SET h 6 PX 10", "OK"),
        (T0 + 20, "RENAME h i", "(error) ERR no such key"),
        (
            T0,
            "RENAME a",
            "(error) ERR wrong number of arguments for 'rename' command",
        ),
    ]);
}
