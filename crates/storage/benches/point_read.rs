//! A point read of an entity that is not cached (`Storage::load`), by data block
//! size: the engine fetches and decodes one whole block per read. 400 000 entities of
//! one 260-byte record each, written as whole rows and flushed to segments, read in a
//! random order through a 16 MiB block cache (far smaller than the data, as with
//! millions of keys).
//!
//!   cargo bench -p storage --bench point_read

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use storage::{EntityUpdate, FjallOptions, FjallStorage, Storage};

const ENTITIES: u64 = 400_000;

/// xorshift: a fixed, cheap pseudo-random sequence (values that compress poorly).
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn entity(i: u64) -> Bytes {
    Bytes::from(format!("key:{i:08}"))
}

fn fill(dir: &std::path::Path, data_block_bytes: u32) -> FjallStorage {
    let s = FjallStorage::open(
        dir,
        FjallOptions {
            cache_bytes: 16 << 20,
            memtable_bytes: 8 << 20,
            data_block_bytes,
            ..FjallOptions::default()
        },
    )
    .expect("open");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let ids: Vec<u64> = (0..ENTITIES).collect();
    for chunk in ids.chunks(1000) {
        let batch: Vec<EntityUpdate> = chunk
            .iter()
            .map(|&i| {
                let mut record = Vec::with_capacity(260);
                record.extend_from_slice(&[7u8; 160]);
                while record.len() < 260 {
                    record.extend_from_slice(&next(&mut x).to_le_bytes());
                }
                let mut u = EntityUpdate::new(entity(i));
                u.whole = true;
                u.put_records = vec![(1, Bytes::from(record))];
                u.meta = Some(Bytes::from_static(b"meta"));
                u
            })
            .collect();
        s.write_batch(&batch).expect("write");
    }
    s
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncached_point_read");
    for kib in [1u32, 4] {
        let d = tempfile::tempdir().expect("tempdir");
        let s = fill(d.path(), kib << 10);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        g.bench_function(format!("data_block_{kib}KiB"), |b| {
            b.iter(|| {
                let i = next(&mut x) % ENTITIES;
                let img = s.load(&entity(i)).expect("load");
                assert_eq!(img.records.len(), 1);
                black_box(img)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
