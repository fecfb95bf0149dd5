//! Replays the row decoder's fuzz corpus (`fuzz/corpus/row_decode/`) through the fuzz
//! body, so the normal test run keeps every past finding fixed; and checks that the
//! committed seeds still include every row shape the encoder makes
//! (`PAXOSSTORE_WRITE_SEEDS=1` rewrites them after a format change).

use std::path::PathBuf;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/row_decode")
}

#[test]
fn row_decode_corpus() {
    let mut n = 0;
    let dir = corpus();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        storage::fuzz::row_decode(&data);
        n += 1;
    }
    assert!(n >= 3, "row_decode corpus unexpectedly small ({n} files)");
}

#[test]
fn seed_rows_decode_and_are_in_the_corpus() {
    let dir = corpus();
    for (i, seed) in storage::fuzz::seed_rows().iter().enumerate() {
        storage::fuzz::row_decode(seed);
        let path = dir.join(format!("seed-{i}"));
        if std::env::var_os("PAXOSSTORE_WRITE_SEEDS").is_some() {
            std::fs::write(&path, seed).expect("write seed");
        }
        let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(&stored, seed, "{} is stale", path.display());
    }
}
