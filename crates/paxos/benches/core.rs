//! Micro-benchmark of the core's message handling: fast-path writes on a 3-replica
//! cluster driven in memory (no I/O), counting every step a real node would do:
//! proposer write, persist completion, two acceptors folding and persisting, the
//! proposer folding both replies, persisting the chosen flag and notifying.
//!
//! `cargo bench -p paxos --bench core`

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use paxos::{Config, Entity, Event, Message};

/// Run one fast-path write to completion; returns the number of messages exchanged.
fn write_once(nodes: &mut [Entity], now: u64, token: u64, value: &Bytes) -> usize {
    let mut inflight: Vec<Message> = Vec::new();
    let mut msgs = 0;
    nodes[0]
        .write(now, token, value.clone(), vec![token], now + 1_000)
        .ok();
    loop {
        let mut progressed = false;
        for node in nodes.iter_mut() {
            while let Some(ev) = node.poll_event() {
                progressed = true;
                match ev {
                    Event::Persist { seq, .. } => node.persisted(now, seq),
                    Event::Send(m) => inflight.push(m),
                    Event::Apply { .. } | Event::Done { .. } => {}
                }
            }
        }
        for m in inflight.drain(..) {
            msgs += 1;
            progressed = true;
            let to = m.to as usize;
            nodes[to].handle_message(now, m);
        }
        if !progressed {
            return msgs;
        }
    }
}

fn bench(c: &mut Criterion) {
    let value = Bytes::from(vec![7u8; 100]);
    let mut g = c.benchmark_group("fast_path");
    g.throughput(Throughput::Elements(1));
    g.bench_function("write_3_replicas", |b| {
        let mut nodes: Vec<Entity> = (0..3)
            .map(|me| Entity::new(Config::new(3, me), me as u64))
            .collect();
        let mut token = 0;
        b.iter(|| {
            token += 1;
            write_once(&mut nodes, token, token, &value)
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
