//! Fuzz target body for the on-disk row decoder (`fuzz/fuzz_targets/row_decode.rs`),
//! kept here so the normal test run replays the seed corpus through the same code.

use crate::codec::{decode_row, encode_row, seal_for_fuzz};

/// Decode `data` as a stored entity row, both as given and with a valid CRC appended
/// (random bytes almost never pass the CRC, which would hide the parser behind it).
/// Whatever decodes must re-encode to bytes that decode to the same row.
pub fn row_decode(data: &[u8]) {
    let _ = decode_row(data, || "fuzz".into());
    let sealed = seal_for_fuzz(data);
    if let Ok(row) = decode_row(&sealed, || "fuzz".into()) {
        let again = decode_row(&encode_row(&row), || "fuzz".into());
        assert_eq!(again.ok(), Some(row), "row does not round-trip");
    }
}

/// Seed inputs for the corpus: valid row bodies (without their CRC).
pub fn seed_rows() -> Vec<Vec<u8>> {
    crate::codec::sample_rows()
        .iter()
        .map(|r| {
            let mut v = encode_row(r);
            v.truncate(v.len() - 4);
            v
        })
        .collect()
}
