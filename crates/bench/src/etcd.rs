//! Closed-loop clients for etcd's v3 API (etcd-client): one gRPC connection per
//! client, `pipeline` requests in flight on it, failing over to the next
//! endpoint on any error or timeout. Reads are linearizable (etcd's default).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, KvClient, Txn, TxnOp};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::Mutex;

use crate::client::{ClientCtx, ClientResult};
use crate::stats::{Recorder, Shared};
use crate::verify::{Tracker, VerifyResult};
use crate::workload::{self, OpKind};

struct ConnState {
    gen: u64,
    idx: usize,
    kv: Option<KvClient>,
    failovers: u64,
}

#[derive(Clone)]
struct Conn {
    state: Arc<Mutex<ConnState>>,
    addrs: Arc<Vec<String>>,
    timeout: Duration,
}

impl Conn {
    /// The current client (connecting if needed) and its generation.
    async fn get(&self) -> Option<(KvClient, u64)> {
        let mut s = self.state.lock().await;
        if s.kv.is_none() {
            let ep = format!("http://{}", self.addrs[s.idx]);
            let opts = ConnectOptions::new()
                .with_connect_timeout(self.timeout)
                .with_timeout(self.timeout);
            match tokio::time::timeout(self.timeout, Client::connect([ep], Some(opts))).await {
                Ok(Ok(c)) => s.kv = Some(c.kv_client()),
                _ => {
                    s.idx = (s.idx + 1) % self.addrs.len();
                    s.failovers += 1;
                    s.gen += 1;
                    drop(s);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    return None;
                }
            }
        }
        Some((s.kv.clone().unwrap(), s.gen))
    }

    /// Moves to the next endpoint unless another request already did.
    async fn failover(&self, gen: u64) {
        let mut s = self.state.lock().await;
        if s.gen == gen {
            s.gen += 1;
            s.idx = (s.idx + 1) % self.addrs.len();
            s.kv = None;
            s.failovers += 1;
        }
    }
}

fn error_kind(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("grpc:{:?}", s.code()),
        etcd_client::Error::TransportError(_) => "transport".into(),
        other => {
            let s = other.to_string();
            s.split(':').next().unwrap_or("etcd").trim().to_string()
        }
    }
}

enum Outcome {
    Ok,
    Conflict,
}

struct Slot {
    writer: usize,
    rng: StdRng,
    seq: u64,
    tracker: Tracker,
}

async fn one_op(
    kv: &mut KvClient,
    ctx: &ClientCtx,
    slot: &mut Slot,
    kind: OpKind,
    idx: u64,
) -> Result<Outcome, etcd_client::Error> {
    let cfg = &ctx.cfg;
    match kind {
        OpKind::Set => {
            slot.seq += 1;
            let v = workload::value(slot.seq, cfg.value_size);
            if cfg.verify {
                slot.tracker.sent(idx, slot.seq);
                kv.put(workload::verify_key(slot.writer, idx), v, None)
                    .await?;
                slot.tracker.acked(idx, slot.seq);
            } else {
                kv.put(workload::key(idx), v, None).await?;
            }
            Ok(Outcome::Ok)
        }
        OpKind::Get => {
            kv.get(workload::key(idx), None).await?;
            Ok(Outcome::Ok)
        }
        OpKind::Mset => {
            slot.seq += 1;
            let v = workload::value(slot.seq, cfg.value_size);
            let (a, b) = workload::mset_keys(idx);
            let txn =
                Txn::new().and_then(vec![TxnOp::put(a, v.clone(), None), TxnOp::put(b, v, None)]);
            kv.txn(txn).await?;
            Ok(Outcome::Ok)
        }
        OpKind::Cas => {
            let key = workload::key(idx);
            let got = kv.get(key.clone(), None).await?;
            let rev = got.kvs().first().map(|kv| kv.mod_revision()).unwrap_or(0);
            slot.seq += 1;
            let v = workload::value(slot.seq, cfg.value_size);
            let txn = Txn::new()
                .when(vec![Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    rev,
                )])
                .and_then(vec![TxnOp::put(key, v, None)]);
            let r = kv.txn(txn).await?;
            Ok(if r.succeeded() {
                Outcome::Ok
            } else {
                Outcome::Conflict
            })
        }
        OpKind::Incr => unreachable!("rejected before the run"),
    }
}

async fn slot_loop(
    ctx: Arc<ClientCtx>,
    conn: Conn,
    shared: Arc<Shared>,
    mut slot: Slot,
) -> (Recorder, Slot) {
    let mut rec = Recorder::default();
    let timeout = ctx.cfg.timeout;
    while shared.may_issue() {
        let kind = ctx.cfg.mix.pick(&mut slot.rng);
        let idx = ctx.cfg.dist.sample(&mut slot.rng);
        let start = Instant::now();
        let Some((mut kv, gen)) = conn.get().await else {
            rec.error(&shared, start, "connect");
            continue;
        };
        let r = tokio::time::timeout(timeout, one_op(&mut kv, &ctx, &mut slot, kind, idx)).await;
        match r {
            Ok(Ok(Outcome::Ok)) => rec.ok(&shared, kind, start),
            Ok(Ok(Outcome::Conflict)) => rec.cas_conflict(&shared, start),
            Ok(Err(e)) => {
                rec.error(&shared, start, &error_kind(&e));
                conn.failover(gen).await;
            }
            Err(_) => {
                rec.error(&shared, start, "timeout");
                conn.failover(gen).await;
            }
        }
    }
    rec.close(&shared);
    (rec, slot)
}

async fn preload(ctx: &ClientCtx, conn: &Conn) -> u64 {
    let keys: Vec<u64> = ctx.preload_keys().collect();
    let value = workload::value(0, ctx.cfg.value_size);
    let mut errors = 0;
    for chunk in keys.chunks(ctx.cfg.pipeline.max(8)) {
        let mut set = tokio::task::JoinSet::new();
        for &k in chunk {
            let conn = conn.clone();
            let value = value.clone();
            let tries = 3 * conn.addrs.len();
            set.spawn(async move {
                for _ in 0..tries {
                    let Some((mut kv, gen)) = conn.get().await else {
                        continue;
                    };
                    match tokio::time::timeout(
                        conn.timeout * 4,
                        kv.put(workload::key(k), value.clone(), None),
                    )
                    .await
                    {
                        Ok(Ok(_)) => return true,
                        _ => conn.failover(gen).await,
                    }
                }
                false
            });
        }
        while let Some(r) = set.join_next().await {
            if !matches!(r, Ok(true)) {
                errors += 1;
            }
        }
        ctx.preloaded
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    errors
}

async fn verify(conn: &Conn, slot: &Slot) -> VerifyResult {
    let mut res = VerifyResult::default();
    for k in slot.tracker.keys() {
        let key = workload::verify_key(slot.writer, k);
        let mut read = None;
        for _ in 0..(3 * conn.addrs.len()) {
            let Some((mut kv, gen)) = conn.get().await else {
                continue;
            };
            match tokio::time::timeout(conn.timeout * 4, kv.get(key.clone(), None)).await {
                Ok(Ok(r)) => {
                    read = Some(
                        r.kvs()
                            .first()
                            .and_then(|kv| workload::value_seq(kv.value())),
                    );
                    break;
                }
                _ => conn.failover(gen).await,
            }
        }
        match read {
            Some(v) => slot.tracker.check(k, v, &mut res),
            None => res.unreadable += 1,
        }
    }
    res
}

pub async fn run(mut ctx: ClientCtx) -> ClientResult {
    let conn = Conn {
        state: Arc::new(Mutex::new(ConnState {
            gen: 0,
            idx: ctx.id % ctx.addrs.len(),
            kv: None,
            failovers: 0,
        })),
        addrs: ctx.addrs.clone(),
        timeout: ctx.cfg.timeout,
    };
    let _ = conn.get().await;
    let preload_errors = if ctx.cfg.preload {
        preload(&ctx, &conn).await
    } else {
        0
    };
    conn.state.lock().await.failovers = 0;
    let shared = ctx.wait_start().await;
    let ctx = Arc::new(ctx);
    let depth = ctx.cfg.pipeline.max(1);
    let mut set = tokio::task::JoinSet::new();
    for s in 0..depth {
        let writer = ctx.id * depth + s;
        let slot = Slot {
            writer,
            rng: StdRng::seed_from_u64(
                ctx.cfg.seed ^ (writer as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            seq: (writer as u64) << 40,
            tracker: Tracker::default(),
        };
        set.spawn(slot_loop(ctx.clone(), conn.clone(), shared.clone(), slot));
    }
    let mut rec = Recorder::default();
    let mut slots = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok((r, slot)) = r {
            rec.merge(r);
            slots.push(slot);
        }
    }
    let verify = if ctx.cfg.verify {
        let mut v = VerifyResult::default();
        for slot in &slots {
            v.merge(verify(&conn, slot).await);
        }
        Some(v)
    } else {
        None
    };
    let failovers = conn.state.lock().await.failovers;
    ClientResult {
        rec,
        verify,
        preload_errors,
        failovers,
    }
}
