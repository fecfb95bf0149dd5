//! WATCH: `node::exec::watch_holds` compares each watched key's version (0 when
//! missing or expired) with the one recorded at WATCH time.

use bytes::Bytes;
use node::exec::{execute, watch_holds};
use node::kv::KvState;
use resp::{parse_command, Command};

const T0: i64 = 1_700_000_000_000;

fn cmd(line: &str) -> Command {
    let args: Vec<Bytes> = line
        .split(' ')
        .map(|s| Bytes::copy_from_slice(s.as_bytes()))
        .collect();
    parse_command(&args).unwrap()
}

fn version(s: &KvState, key: &str, now: i64) -> u64 {
    s.get_live(key.as_bytes(), now).map_or(0, |e| e.version)
}

#[test]
fn watch_sees_writes_deletes_and_expiry() {
    let mut s = KvState::new();
    let k = Bytes::from_static(b"k");
    // Missing key: version 0 holds until the key is created.
    assert!(watch_holds(&s, &[(k.clone(), 0)], T0));
    execute(&mut s, &cmd("SET k a"), T0);
    assert!(!watch_holds(&s, &[(k.clone(), 0)], T0));
    let v = version(&s, "k", T0);
    assert!(v > 0);
    assert!(watch_holds(&s, &[(k.clone(), v)], T0));
    // A write to another key leaves the watch intact.
    execute(&mut s, &cmd("SET other b"), T0);
    assert!(watch_holds(&s, &[(k.clone(), v)], T0));
    // Rewriting the same value still counts as a change.
    execute(&mut s, &cmd("SET k a"), T0);
    assert!(!watch_holds(&s, &[(k.clone(), v)], T0));
    let v = version(&s, "k", T0);
    // A read changes nothing.
    execute(&mut s, &cmd("GET k"), T0);
    assert!(watch_holds(&s, &[(k.clone(), v)], T0));
    // Delete: the version becomes 0.
    execute(&mut s, &cmd("DEL k"), T0);
    assert!(!watch_holds(&s, &[(k.clone(), v)], T0));
    assert!(watch_holds(&s, &[(k.clone(), 0)], T0));
    // Expiry: once expired the key reads as missing.
    execute(&mut s, &cmd("SET k a PX 10"), T0);
    let v = version(&s, "k", T0);
    assert!(watch_holds(&s, &[(k.clone(), v)], T0 + 5));
    assert!(!watch_holds(&s, &[(k.clone(), v)], T0 + 11));
    // Every watched key must hold.
    let o = Bytes::from_static(b"other");
    let vo = version(&s, "other", T0);
    assert!(watch_holds(&s, &[(k.clone(), v), (o.clone(), vo)], T0));
    assert!(!watch_holds(&s, &[(k, v), (o, vo + 1)], T0));
}
