//! Micro-benchmark of the shard's own CPU per operation: three sans-IO shards wired in
//! memory (no I/O; persists complete at once, messages go through the wire codec as
//! in production), 10 000 cached entities, rounds of 64 concurrent requests on
//! uniform keys, as `bench/side_by_side.sh` sends them: GETs spread over the three
//! nodes, SETs at each key's home (where the servers forward them).
//!
//! `cargo bench -p node --bench shard`

use std::collections::VecDeque;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use node::codec;
use node::shard::{Output, Request, Shard, ShardConfig};
use paxos::{Config, Message};
use resp::parse_command;

/// The server's allocator, so allocation costs are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEYS: u64 = 10_000;
const CLIENTS: u64 = 64;

struct Cluster {
    shards: Vec<Shard>,
    persists: VecDeque<(usize, Bytes, u64)>,
    net: VecDeque<(Bytes, Message)>,
    replies: u64,
    now: u64,
}

impl Cluster {
    fn new() -> Self {
        let shards = (0..3u8)
            .map(|me| {
                let mut c = ShardConfig::new(Config::new(3, me));
                c.max_cached_bytes = 1 << 32;
                Shard::new(c, u64::from(me) + 1)
            })
            .collect();
        Self {
            shards,
            persists: VecDeque::new(),
            net: VecDeque::new(),
            replies: 0,
            now: 1,
        }
    }

    fn pump(&mut self, i: usize) {
        while let Some(out) = self.shards[i].poll() {
            match out {
                Output::Load { entity } => {
                    self.shards[i].on_loaded(self.now, 0, entity, Ok(vec![]))
                }
                Output::Persist { entity, seq, .. } => self.persists.push_back((i, entity, seq)),
                Output::Send { entity, msg } => {
                    let bytes = codec::encode_message(&entity, &msg);
                    if let Ok(decoded) = codec::decode_message(&bytes) {
                        self.net.push_back(decoded);
                    }
                }
                Output::Reply { .. } => self.replies += 1,
            }
        }
    }

    /// Runs until nothing is left in flight.
    fn settle(&mut self) {
        loop {
            let mut any = false;
            while let Some((i, entity, seq)) = self.persists.pop_front() {
                any = true;
                self.shards[i].on_persisted(self.now, 0, entity, seq);
                self.pump(i);
            }
            while let Some((entity, msg)) = self.net.pop_front() {
                any = true;
                let to = msg.to as usize;
                self.shards[to].on_message(self.now, 0, entity, msg);
                self.pump(to);
            }
            if !any {
                return;
            }
        }
    }

    /// One round: `CLIENTS` requests on pseudo-random keys from the three nodes.
    /// Writes go to the entity's home, as the servers forward them.
    fn round(&mut self, rng: &mut u64, make: &dyn Fn(&[u8]) -> Vec<Bytes>, at_home: bool) {
        self.now += 1;
        for c in 0..CLIENTS {
            *rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = format!("key:{}", (*rng >> 33) % KEYS).into_bytes();
            let Ok(cmd) = parse_command(&make(&key)) else {
                continue;
            };
            let node = if at_home {
                usize::from(node::route::home(&key, 3))
            } else {
                (c % 3) as usize
            };
            self.shards[node].submit(self.now, 0, c, Bytes::from(key), Request::single(cmd));
            self.pump(node);
        }
        self.settle();
    }
}

fn set(key: &[u8]) -> Vec<Bytes> {
    vec![
        Bytes::from_static(b"SET"),
        Bytes::copy_from_slice(key),
        Bytes::from(vec![b'v'; 100]),
    ]
}

fn get(key: &[u8]) -> Vec<Bytes> {
    vec![Bytes::from_static(b"GET"), Bytes::copy_from_slice(key)]
}

fn bench(c: &mut Criterion) {
    let mut cluster = Cluster::new();
    let mut rng = 1u64;
    // Every key written once, so every entity is loaded and cached.
    for k in 0..KEYS {
        let key = format!("key:{k}").into_bytes();
        if let Ok(cmd) = parse_command(&set(&key)) {
            let node = usize::from(node::route::home(&key, 3));
            cluster.shards[node].submit(cluster.now, 0, k, Bytes::from(key), Request::single(cmd));
            cluster.pump(node);
        }
        cluster.settle();
    }
    let mut g = c.benchmark_group("shard_64_clients");
    g.throughput(Throughput::Elements(CLIENTS));
    g.bench_function("get", |b| b.iter(|| cluster.round(&mut rng, &get, false)));
    g.bench_function("set", |b| b.iter(|| cluster.round(&mut rng, &set, true)));
    g.finish();
    assert!(cluster.replies > 0);
}

criterion_group!(benches, bench);
criterion_main!(benches);
