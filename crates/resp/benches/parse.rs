//! Parse throughput of a pipelined batch of 1000 `SET key:000123 <100 B>`
//! requests, ours vs. the `redis-protocol` crate decoding the same bytes.
//! Buffer cloning happens in the untimed setup of `iter_batched`.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use resp::{encode_request, parse_request, Limits};

fn batch() -> BytesMut {
    let value = vec![b'x'; 100];
    let mut wire = BytesMut::new();
    for i in 0..1000 {
        let key = format!("key:{i:06}");
        encode_request(&[&b"SET"[..], key.as_bytes(), &value], &mut wire);
    }
    wire
}

fn bench(c: &mut Criterion) {
    let wire = batch();
    let limits = Limits::default();
    let mut g = c.benchmark_group("pipeline_1000_set");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("resp::parse_request", |b| {
        b.iter_batched(
            || wire.clone(),
            |mut buf| {
                let mut n = 0;
                while let Ok(Some(args)) = parse_request(&mut buf, &limits) {
                    n += args.len();
                    black_box(args);
                }
                assert_eq!(n, 3000);
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("redis_protocol::resp2::decode_bytes_mut", |b| {
        b.iter_batched(
            || wire.clone(),
            |mut buf| {
                let mut n = 0;
                while let Ok(Some((frame, _, _))) =
                    redis_protocol::resp2::decode::decode_bytes_mut(&mut buf)
                {
                    n += 1;
                    black_box(frame);
                }
                assert_eq!(n, 1000);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
