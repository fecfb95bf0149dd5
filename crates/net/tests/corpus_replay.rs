//! Replays every file of the fuzz seed corpora through the fuzz target bodies.

use std::path::PathBuf;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
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
fn frame_decode_corpus() {
    replay("frame_decode", net::fuzz_support::frame_decode);
}

#[test]
fn handshake_decode_corpus() {
    replay("handshake_decode", net::fuzz_support::handshake_decode);
}

/// The seed files are what they claim to be (guards the corpus generator).
#[test]
fn seeds_are_well_formed() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let one = std::fs::read(dir.join("frame_decode/one_frame")).expect("seed");
    let f = net::frame::decode_slice(&one[2..], 1024)
        .expect("valid")
        .expect("complete");
    assert_eq!((f.msg_type, f.payload), (7, &b"hello"[..]));
    let hello = std::fs::read(dir.join("handshake_decode/hello")).expect("seed");
    assert!(net::handshake::Hello::decode(&hello).is_ok());
    let ch = std::fs::read(dir.join("handshake_decode/challenge")).expect("seed");
    assert!(net::handshake::Challenge::decode(&ch).is_ok());
}
