//! A closed-loop RESP client: one TCP connection, up to `pipeline` requests in
//! flight, failing over to the next address on I/O errors and timeouts.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{ClientCtx, ClientResult};
use crate::resp::{self, Reply};
use crate::stats::{Recorder, Shared};
use crate::verify::{Tracker, VerifyResult};
use crate::workload::{self, OpKind};

struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
}

enum Stage {
    Plain,
    /// A verify-mode SET of (key index, seq).
    Tracked(u64, u64),
    CasRead(u64),
    CasWrite,
}

struct Pending {
    kind: OpKind,
    start: Instant,
    sent: Instant,
    stage: Stage,
}

/// Why a connection was dropped.
#[derive(Debug)]
enum Broken {
    Io,
    Eof,
    Timeout,
    Protocol,
}

impl Broken {
    fn name(&self) -> &'static str {
        match self {
            Broken::Io => "io",
            Broken::Eof => "closed",
            Broken::Timeout => "timeout",
            Broken::Protocol => "protocol",
        }
    }
}

struct Addrs {
    list: Arc<Vec<String>>,
    idx: usize,
    failed_in_row: usize,
    failovers: u64,
}

impl Addrs {
    async fn connect(&mut self, timeout: Duration) -> Option<Conn> {
        let addr = &self.list[self.idx];
        let res = tokio::time::timeout(timeout, TcpStream::connect(addr.as_str())).await;
        match res {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                self.failed_in_row = 0;
                Some(Conn {
                    stream: s,
                    rbuf: BytesMut::with_capacity(64 * 1024),
                })
            }
            _ => {
                self.next();
                self.failed_in_row += 1;
                if self.failed_in_row >= self.list.len() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                None
            }
        }
    }

    fn next(&mut self) {
        self.idx = (self.idx + 1) % self.list.len();
        self.failovers += 1;
    }
}

struct Gen {
    id: usize,
    rng: StdRng,
    seq: u64,
    value: Vec<u8>,
    tracker: Tracker,
}

impl Gen {
    fn fill_value(&mut self, size: usize) {
        self.seq += 1;
        if self.value.len() != size.max(1) {
            self.value = workload::value(self.seq, size);
        } else if size >= 16 {
            let hex = format!("{:016x}", self.seq);
            self.value[..16].copy_from_slice(hex.as_bytes());
        }
    }
}

/// Encodes one new operation into `w`.
fn issue(g: &mut Gen, ctx: &ClientCtx, w: &mut Vec<u8>, now: Instant) -> Pending {
    let cfg = &ctx.cfg;
    let kind = cfg.mix.pick(&mut g.rng);
    let idx = cfg.dist.sample(&mut g.rng);
    let mut stage = Stage::Plain;
    match kind {
        OpKind::Set => {
            g.fill_value(cfg.value_size);
            if cfg.verify {
                let k = workload::verify_key(g.id, idx);
                resp::encode(w, &[b"SET", k.as_bytes(), &g.value]);
                g.tracker.sent(idx, g.seq);
                stage = Stage::Tracked(idx, g.seq);
            } else {
                let k = workload::key(idx);
                resp::encode(w, &[b"SET", k.as_bytes(), &g.value]);
            }
        }
        OpKind::Get => {
            let k = workload::key(idx);
            resp::encode(w, &[b"GET", k.as_bytes()]);
        }
        OpKind::Incr => {
            let k = workload::counter_key(idx);
            resp::encode(w, &[b"INCR", k.as_bytes()]);
        }
        OpKind::Mset => {
            g.fill_value(cfg.value_size);
            let (a, b) = workload::mset_keys(idx);
            resp::encode(
                w,
                &[b"MSET", a.as_bytes(), &g.value, b.as_bytes(), &g.value],
            );
        }
        OpKind::Cas => {
            let k = workload::key(idx);
            resp::encode(w, &[b"VGET", k.as_bytes()]);
            stage = Stage::CasRead(idx);
        }
    }
    Pending {
        kind,
        start: now,
        sent: now,
        stage,
    }
}

/// Handles the reply to the oldest pending request; may queue a follow-up (CAS).
#[allow(clippy::too_many_arguments)]
fn handle(
    g: &mut Gen,
    ctx: &ClientCtx,
    shared: &Shared,
    rec: &mut Recorder,
    p: Pending,
    r: Reply<'_>,
    w: &mut Vec<u8>,
    pending: &mut VecDeque<Pending>,
) {
    match p.stage {
        Stage::CasRead(idx) => {
            let version: i64 = match r {
                Reply::Error(e) => {
                    rec.error(shared, p.start, &resp::error_kind(e));
                    return;
                }
                Reply::Array(Some(items)) => match items.get(1) {
                    Some(Reply::Int(v)) => *v,
                    Some(Reply::Bulk(Some(b))) => std::str::from_utf8(b)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    _ => 0,
                },
                _ => 0,
            };
            g.fill_value(ctx.cfg.value_size);
            let k = workload::key(idx);
            let v = version.to_string();
            resp::encode(w, &[b"VSET", k.as_bytes(), &g.value, v.as_bytes()]);
            pending.push_back(Pending {
                kind: OpKind::Cas,
                start: p.start,
                sent: Instant::now(),
                stage: Stage::CasWrite,
            });
        }
        Stage::CasWrite => match r {
            Reply::Error(e) if e.starts_with(b"VERSION") => rec.cas_conflict(shared, p.start),
            Reply::Error(e) => rec.error(shared, p.start, &resp::error_kind(e)),
            _ => rec.ok(shared, OpKind::Cas, p.start),
        },
        Stage::Tracked(idx, seq) => match r {
            Reply::Error(e) => rec.error(shared, p.start, &resp::error_kind(e)),
            _ => {
                g.tracker.acked(idx, seq);
                rec.ok(shared, p.kind, p.start);
            }
        },
        Stage::Plain => match r {
            Reply::Error(e) => rec.error(shared, p.start, &resp::error_kind(e)),
            _ => rec.ok(shared, p.kind, p.start),
        },
    }
}

async fn write_all(c: &mut Conn, w: &[u8], deadline: Instant) -> Result<(), Broken> {
    match tokio::time::timeout_at(deadline.into(), c.stream.write_all(w)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Broken::Io),
        Err(_) => Err(Broken::Timeout),
    }
}

async fn read_some(c: &mut Conn, deadline: Instant) -> Result<(), Broken> {
    match tokio::time::timeout_at(deadline.into(), c.stream.read_buf(&mut c.rbuf)).await {
        Ok(Ok(0)) => Err(Broken::Eof),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(Broken::Io),
        Err(_) => Err(Broken::Timeout),
    }
}

/// Sends `cmds` (already encoded, `n` replies expected) and returns the raw reply
/// bytes split per reply via `on_reply`. Used by preload and verification.
async fn round_trip(
    c: &mut Conn,
    w: &[u8],
    n: usize,
    timeout: Duration,
    mut on_reply: impl FnMut(Reply<'_>),
) -> Result<(), Broken> {
    let deadline = Instant::now() + timeout;
    write_all(c, w, deadline).await?;
    let mut got = 0;
    while got < n {
        read_some(c, deadline).await?;
        let mut used = 0;
        while got < n {
            match resp::parse(&c.rbuf[used..]) {
                Ok(Some((r, len))) => {
                    used += len;
                    got += 1;
                    on_reply(r);
                }
                Ok(None) => break,
                Err(_) => return Err(Broken::Protocol),
            }
        }
        c.rbuf.advance(used);
    }
    Ok(())
}

async fn preload(ctx: &ClientCtx, addrs: &mut Addrs, conn: &mut Option<Conn>) -> u64 {
    let cfg = &ctx.cfg;
    let keys: Vec<u64> = ctx.preload_keys().collect();
    let batch = cfg.pipeline.max(16);
    let value = workload::value(0, cfg.value_size);
    let mut errors = 0;
    for chunk in keys.chunks(batch) {
        let mut w = Vec::with_capacity(chunk.len() * (cfg.value_size + 40));
        for &k in chunk {
            let key = workload::key(k);
            resp::encode(&mut w, &[b"SET", key.as_bytes(), &value]);
        }
        let mut done = false;
        for _attempt in 0..(3 * addrs.list.len()) {
            if conn.is_none() {
                *conn = addrs.connect(cfg.timeout).await;
                if conn.is_none() {
                    continue;
                }
            }
            let c = conn.as_mut().unwrap();
            let mut errs = 0;
            match round_trip(c, &w, chunk.len(), cfg.timeout * 4, |r| {
                if matches!(r, Reply::Error(_)) {
                    errs += 1;
                }
            })
            .await
            {
                Ok(()) => {
                    errors += errs;
                    done = true;
                    break;
                }
                Err(_) => {
                    *conn = None;
                    addrs.next();
                }
            }
        }
        if !done {
            errors += chunk.len() as u64;
        }
        ctx.preloaded
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    errors
}

async fn verify(
    ctx: &ClientCtx,
    g: &Gen,
    addrs: &mut Addrs,
    conn: &mut Option<Conn>,
) -> VerifyResult {
    let mut res = VerifyResult::default();
    let keys = g.tracker.keys();
    for chunk in keys.chunks(64) {
        let mut w = Vec::new();
        for &k in chunk {
            let key = workload::verify_key(g.id, k);
            resp::encode(&mut w, &[b"GET", key.as_bytes()]);
        }
        let mut done = false;
        for _attempt in 0..(3 * addrs.list.len()) {
            if conn.is_none() {
                *conn = addrs.connect(ctx.cfg.timeout).await;
                if conn.is_none() {
                    continue;
                }
            }
            let c = conn.as_mut().unwrap();
            let mut reads: Vec<Result<Option<u64>, ()>> = Vec::with_capacity(chunk.len());
            let r = round_trip(c, &w, chunk.len(), ctx.cfg.timeout * 4, |r| {
                reads.push(match r {
                    Reply::Bulk(Some(v)) => Ok(workload::value_seq(v)),
                    Reply::Bulk(None) => Ok(None),
                    _ => Err(()),
                })
            })
            .await;
            match r {
                Ok(()) if reads.iter().all(|r| r.is_ok()) => {
                    for (&k, v) in chunk.iter().zip(reads) {
                        g.tracker.check(k, v.unwrap(), &mut res);
                    }
                    done = true;
                    break;
                }
                Ok(()) => {
                    // An error reply (e.g. a read that could not be confirmed): try again.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(_) => {
                    *conn = None;
                    addrs.next();
                }
            }
        }
        if !done {
            res.unreadable += chunk.len() as u64;
        }
    }
    res
}

pub async fn run(mut ctx: ClientCtx) -> ClientResult {
    let cfg = ctx.cfg.clone();
    let mut addrs = Addrs {
        list: ctx.addrs.clone(),
        idx: ctx.id % ctx.addrs.len(),
        failed_in_row: 0,
        failovers: 0,
    };
    let mut conn = addrs.connect(cfg.timeout).await;
    let preload_errors = if cfg.preload {
        preload(&ctx, &mut addrs, &mut conn).await
    } else {
        0
    };
    addrs.failovers = 0;
    let shared = ctx.wait_start().await;
    let mut g = Gen {
        id: ctx.id,
        rng: StdRng::seed_from_u64(cfg.seed ^ (ctx.id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        seq: (ctx.id as u64) << 40,
        value: Vec::new(),
        tracker: Tracker::default(),
    };
    // Wait for the end of the warm-up without issuing twice the load.
    let mut rec = Recorder::default();
    let mut pending: VecDeque<Pending> = VecDeque::with_capacity(cfg.pipeline * 2);
    let mut w: Vec<u8> = Vec::with_capacity(cfg.pipeline * (cfg.value_size * 2 + 64));
    let mut issuing = true;
    loop {
        if conn.is_none() {
            if !issuing || Instant::now() >= shared.deadline || shared.stop.load(Ordering::Relaxed)
            {
                break;
            }
            conn = addrs.connect(cfg.timeout).await;
            continue;
        }
        let c = conn.as_mut().unwrap();
        let now = Instant::now();
        while issuing && pending.len() < cfg.pipeline {
            if !shared.may_issue() {
                issuing = false;
                break;
            }
            let p = issue(&mut g, &ctx, &mut w, now);
            pending.push_back(p);
        }
        if pending.is_empty() {
            break;
        }
        let mut res: Result<(), Broken> = Ok(());
        if !w.is_empty() {
            res = write_all(c, &w, now + cfg.timeout).await;
            w.clear();
        }
        if res.is_ok() {
            let oldest = pending.front().map(|p| p.sent).unwrap_or(now);
            res = read_some(c, oldest + cfg.timeout).await;
        }
        if res.is_ok() {
            let mut used = 0;
            loop {
                match resp::parse(&c.rbuf[used..]) {
                    Ok(Some((r, len))) => {
                        used += len;
                        let Some(p) = pending.pop_front() else {
                            res = Err(Broken::Protocol);
                            break;
                        };
                        handle(&mut g, &ctx, &shared, &mut rec, p, r, &mut w, &mut pending);
                    }
                    Ok(None) => break,
                    Err(_) => {
                        res = Err(Broken::Protocol);
                        break;
                    }
                }
            }
            c.rbuf.advance(used);
        }
        if let Err(why) = res {
            for p in pending.drain(..) {
                rec.error(&shared, p.start, why.name());
            }
            w.clear();
            conn = None;
            addrs.next();
        }
    }
    rec.close(&shared);
    let verify = if cfg.verify {
        Some(verify(&ctx, &g, &mut addrs, &mut conn).await)
    } else {
        None
    };
    ClientResult {
        rec,
        verify,
        preload_errors,
        failovers: addrs.failovers,
    }
}
