//! Replays every seed of the fuzz corpora (`fuzz/corpus/<target>/`) through the fuzz
//! target bodies, so the normal test run keeps every past finding fixed.

use std::path::PathBuf;

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn replay(target: &str, f: fn(&[u8])) {
    let dir = corpus(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        f(&data);
        n += 1;
    }
    assert!(n >= 5, "corpus for {target} unexpectedly small ({n} files)");
}

#[test]
fn resp_parse_corpus() {
    replay("resp_parse", node::fuzz::resp_parse);
}

#[test]
fn record_decode_corpus() {
    replay("record_decode", node::fuzz::record_decode);
}

#[test]
fn message_decode_corpus() {
    replay("message_decode", node::fuzz::message_decode);
}

#[test]
fn batch_decode_corpus() {
    replay("batch_decode", node::fuzz::batch_decode);
}

#[test]
fn kv_decode_corpus() {
    replay("kv_decode", node::fuzz::kv_decode);
}

/// The seeds are what their names say (guards the corpus against rot).
#[test]
fn seeds_are_well_formed() {
    let read =
        |t: &str, f: &str| bytes::Bytes::from(std::fs::read(corpus(t).join(f)).expect("seed"));
    assert!(node::codec::decode_record(&read("record_decode", "chosen")).is_ok_and(|r| r.chosen));
    assert!(
        node::codec::decode_record(&read("record_decode", "invalid_accepted_above_promise"))
            .is_err()
    );
    let (entity, m) =
        node::codec::decode_message(&read("message_decode", "prepare")).expect("prepare");
    assert_eq!((&entity[..], m.sender.promised), (&b"user42"[..], 5));
    assert!(node::codec::decode_message(&read("message_decode", "bad_kind")).is_err());
    let state = node::kv::KvState::decode(&read("kv_decode", "two_keys")).expect("state");
    assert_eq!(state.keys.len(), 2);
}

/// Writes the encoded-state seed (run once by hand: `cargo test -p node --test
/// fuzz_corpus write_kv_seed -- --ignored`).
#[test]
#[ignore]
fn write_kv_seed() {
    let mut s = node::kv::KvState::default();
    let (r, _) = node::exec::execute(
        &mut s,
        &resp::parse_command(&[
            bytes::Bytes::from_static(b"MSET"),
            bytes::Bytes::from_static(b"{u}a"),
            bytes::Bytes::from_static(b"1"),
            bytes::Bytes::from_static(b"{u}b"),
            bytes::Bytes::from_static(b"two"),
        ])
        .expect("mset"),
        1_000,
    );
    assert_eq!(r, resp::Reply::ok());
    s.remember(42, bytes::Bytes::from_static(b"+OK\r\n"));
    std::fs::write(corpus("kv_decode").join("two_keys"), s.encode()).expect("write");
}
