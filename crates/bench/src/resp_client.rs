//! A closed-loop RESP client: one TCP connection, up to `pipeline` requests in
//! flight, failing over to the next address on I/O errors and timeouts. With
//! `--route slots` a client instead holds a connection to every address and sends
//! each request to its key's home, as a Redis Cluster client does.

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
    /// The hash slot of the operation's key (`--route slots` sends it to its home).
    slot: u16,
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

async fn connect_to(addr: &str, timeout: Duration) -> Option<Conn> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Some(Conn {
                stream: s,
                rbuf: BytesMut::with_capacity(64 * 1024),
            })
        }
        _ => None,
    }
}

impl Addrs {
    async fn connect(&mut self, timeout: Duration) -> Option<Conn> {
        match connect_to(&self.list[self.idx], timeout).await {
            Some(c) => {
                self.failed_in_row = 0;
                Some(c)
            }
            None => {
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
    let key = match kind {
        OpKind::Set => {
            g.fill_value(cfg.value_size);
            if cfg.verify {
                let k = workload::verify_key(g.id, idx);
                resp::encode(w, &[b"SET", k.as_bytes(), &g.value]);
                g.tracker.sent(idx, g.seq);
                stage = Stage::Tracked(idx, g.seq);
                k
            } else {
                let k = workload::key(idx);
                resp::encode(w, &[b"SET", k.as_bytes(), &g.value]);
                k
            }
        }
        OpKind::Get => {
            let k = workload::key(idx);
            resp::encode(w, &[b"GET", k.as_bytes()]);
            k
        }
        OpKind::Incr => {
            let k = workload::counter_key(idx);
            resp::encode(w, &[b"INCR", k.as_bytes()]);
            k
        }
        OpKind::Mset => {
            g.fill_value(cfg.value_size);
            let (a, b) = workload::mset_keys(idx);
            resp::encode(
                w,
                &[b"MSET", a.as_bytes(), &g.value, b.as_bytes(), &g.value],
            );
            a
        }
        OpKind::Cas => {
            let k = workload::key(idx);
            resp::encode(w, &[b"VGET", k.as_bytes()]);
            stage = Stage::CasRead(idx);
            k
        }
    };
    Pending {
        slot: ::resp::key_slot(key.as_bytes()),
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
                slot: p.slot,
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
    let mut rec = Recorder::default();
    match cfg.slot_owners.clone() {
        Some(owners) => routed(&mut g, &ctx, &shared, &mut rec, &owners, &mut addrs).await,
        None => spread(&mut g, &ctx, &shared, &mut rec, &mut addrs, &mut conn).await,
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

/// The measured loop with clients spread over the addresses: up to `pipeline`
/// requests in flight on one connection, failing over to the next address.
async fn spread(
    g: &mut Gen,
    ctx: &ClientCtx,
    shared: &Shared,
    rec: &mut Recorder,
    addrs: &mut Addrs,
    conn: &mut Option<Conn>,
) {
    let cfg = &ctx.cfg;
    let mut pending: VecDeque<Pending> = VecDeque::with_capacity(cfg.pipeline * 2);
    let mut w: Vec<u8> = Vec::with_capacity(cfg.pipeline * (cfg.value_size * 2 + 64));
    let mut issuing = true;
    loop {
        if conn.is_none() {
            if !issuing || Instant::now() >= shared.deadline || shared.stop.load(Ordering::Relaxed)
            {
                break;
            }
            *conn = addrs.connect(cfg.timeout).await;
            continue;
        }
        let c = conn.as_mut().unwrap();
        let now = Instant::now();
        while issuing && pending.len() < cfg.pipeline {
            if !shared.may_issue() {
                issuing = false;
                break;
            }
            let p = issue(g, ctx, &mut w, now);
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
                        handle(g, ctx, shared, rec, p, r, &mut w, &mut pending);
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
                rec.error(shared, p.start, why.name());
            }
            w.clear();
            *conn = None;
            addrs.next();
        }
    }
}

/// How long a member that failed a request is skipped by `--route slots`: its slots'
/// requests go to the next address (which forwards them) meanwhile.
const ROUTE_DOWN: Duration = Duration::from_secs(1);

/// The measured loop with `--route slots` (pipeline 1): each request goes to the home
/// of its key's slot (`owners`, from `CLUSTER SLOTS`) over a connection per address.
/// A member that fails a request or a connect is skipped for [`ROUTE_DOWN`] (each
/// time counts as a failover).
async fn routed(
    g: &mut Gen,
    ctx: &ClientCtx,
    shared: &Shared,
    rec: &mut Recorder,
    owners: &[u8],
    addrs: &mut Addrs,
) {
    let cfg = &ctx.cfg;
    let n = ctx.addrs.len();
    let mut conns: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
    let mut down_until: Vec<Option<Instant>> = vec![None; n];
    let mut w: Vec<u8> = Vec::with_capacity(cfg.value_size * 2 + 64);
    let mut pending: VecDeque<Pending> = VecDeque::with_capacity(2);
    loop {
        if pending.is_empty() {
            if !shared.may_issue() {
                break;
            }
            let p = issue(g, ctx, &mut w, Instant::now());
            pending.push_back(p);
        }
        let Some(front) = pending.front() else {
            break;
        };
        let (slot, sent) = (front.slot, front.sent);
        let home = owners.get(usize::from(slot)).map_or(0, |&o| usize::from(o)) % n;
        let now = Instant::now();
        let mut target = home;
        while down_until[target].is_some_and(|t| t > now) {
            target = (target + 1) % n;
            if target == home {
                break;
            }
        }
        if conns[target].is_none() {
            conns[target] = connect_to(&ctx.addrs[target], cfg.timeout).await;
            if conns[target].is_none() {
                addrs.failovers += 1;
                down_until[target] = Some(Instant::now() + ROUTE_DOWN);
                if down_until
                    .iter()
                    .all(|d| d.is_some_and(|t| t > Instant::now()))
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if Instant::now() >= shared.deadline || shared.stop.load(Ordering::Relaxed) {
                    for p in pending.drain(..) {
                        rec.error(shared, p.start, Broken::Io.name());
                    }
                    break;
                }
                continue;
            }
        }
        let Some(c) = conns[target].as_mut() else {
            continue;
        };
        let mut res = write_all(c, &w, now + cfg.timeout).await;
        w.clear();
        let mut answered = false;
        while res.is_ok() && !answered {
            res = read_some(c, sent + cfg.timeout).await;
            if res.is_err() {
                break;
            }
            let used = match resp::parse(&c.rbuf) {
                Ok(Some((r, len))) => {
                    if let Some(p) = pending.pop_front() {
                        handle(g, ctx, shared, rec, p, r, &mut w, &mut pending);
                    }
                    Some(len)
                }
                Ok(None) => None,
                Err(_) => {
                    res = Err(Broken::Protocol);
                    None
                }
            };
            if let Some(len) = used {
                answered = true;
                c.rbuf.advance(len);
            }
        }
        if let Err(why) = res {
            for p in pending.drain(..) {
                rec.error(shared, p.start, why.name());
            }
            w.clear();
            conns[target] = None;
            addrs.failovers += 1;
            down_until[target] = Some(Instant::now() + ROUTE_DOWN);
        }
    }
}

/// `--route slots`: asks the first address that answers for `CLUSTER SLOTS` and
/// returns, for each of the 16 384 hash slots, the index in `addrs` of its home.
pub async fn slot_owners(addrs: &[String], timeout: Duration) -> Result<Vec<u8>, String> {
    let mut last = String::from("no address");
    for addr in addrs {
        let Some(mut c) = connect_to(addr, timeout).await else {
            last = format!("{addr}: cannot connect");
            continue;
        };
        let mut w = Vec::new();
        resp::encode(&mut w, &[b"CLUSTER", b"SLOTS"]);
        let mut got: Result<Vec<u8>, String> = Err(format!("{addr}: no reply"));
        let sent = round_trip(&mut c, &w, 1, timeout, |r| got = owners_from(&r, addrs)).await;
        match (sent, got) {
            (Ok(()), Ok(owners)) => return Ok(owners),
            (Ok(()), Err(e)) => return Err(format!("--route slots: {addr}: {e}")),
            (Err(why), _) => last = format!("{addr}: {}", why.name()),
        }
    }
    Err(format!("--route slots: CLUSTER SLOTS failed ({last})"))
}

/// The slot -> address-index table from a `CLUSTER SLOTS` reply.
fn owners_from(r: &Reply<'_>, addrs: &[String]) -> Result<Vec<u8>, String> {
    let ranges = match r {
        Reply::Array(Some(ranges)) => ranges,
        Reply::Error(e) => return Err(String::from_utf8_lossy(e).into_owned()),
        _ => return Err("CLUSTER SLOTS: not an array".into()),
    };
    const UNSET: u8 = u8::MAX;
    let slots = i64::from(::resp::SLOTS);
    let mut owners = vec![UNSET; usize::from(::resp::SLOTS)];
    for range in ranges {
        let (first, last, host, port) = match range {
            Reply::Array(Some(f)) => match (f.first(), f.get(1), f.get(2)) {
                (Some(Reply::Int(a)), Some(Reply::Int(b)), Some(Reply::Array(Some(node)))) => {
                    match (node.first(), node.get(1)) {
                        (Some(Reply::Bulk(Some(h))), Some(Reply::Int(p))) => (*a, *b, *h, *p),
                        _ => return Err("CLUSTER SLOTS: a range without host and port".into()),
                    }
                }
                _ => return Err("CLUSTER SLOTS: a malformed range".into()),
            },
            _ => return Err("CLUSTER SLOTS: a malformed range".into()),
        };
        let endpoint = format!("{}:{port}", String::from_utf8_lossy(host));
        let Some(index) = addrs.iter().position(|a| *a == endpoint) else {
            return Err(format!(
                "CLUSTER SLOTS names {endpoint}, which is not one of the target's addresses"
            ));
        };
        let index = u8::try_from(index).map_err(|_| "more than 255 addresses".to_string())?;
        if !(0..slots).contains(&first) || !(first..slots).contains(&last) {
            return Err(format!("CLUSTER SLOTS: bad range {first}-{last}"));
        }
        for slot in first..=last {
            owners[slot as usize] = index;
        }
    }
    if let Some(slot) = owners.iter().position(|&o| o == UNSET) {
        return Err(format!("CLUSTER SLOTS: slot {slot} has no home"));
    }
    Ok(owners)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> Vec<String> {
        (0..3).map(|i| format!("127.0.0.1:{}", 7000 + i)).collect()
    }

    #[test]
    fn owners_come_from_the_ranges_and_name_target_addresses() {
        let wire = b"*2\r\n*3\r\n:0\r\n:9999\r\n*2\r\n$9\r\n127.0.0.1\r\n:7002\r\n\
                     *3\r\n:10000\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:7000\r\n";
        let (r, _) = resp::parse(wire).unwrap().unwrap();
        let owners = owners_from(&r, &addrs()).unwrap();
        assert_eq!(
            (owners[0], owners[9999], owners[10000], owners[16383]),
            (2, 2, 0, 0)
        );
    }

    #[test]
    fn a_gap_an_unknown_address_or_an_error_is_refused() {
        let gap = b"*1\r\n*3\r\n:0\r\n:100\r\n*2\r\n$9\r\n127.0.0.1\r\n:7000\r\n";
        let (r, _) = resp::parse(gap).unwrap().unwrap();
        assert!(owners_from(&r, &addrs())
            .unwrap_err()
            .contains("slot 101 has no home"));
        let other = b"*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$8\r\n10.0.0.9\r\n:7000\r\n";
        let (r, _) = resp::parse(other).unwrap().unwrap();
        assert!(owners_from(&r, &addrs())
            .unwrap_err()
            .contains("10.0.0.9:7000"));
        let (r, _) = resp::parse(b"-ERR member 1 has no client address\r\n")
            .unwrap()
            .unwrap();
        assert!(owners_from(&r, &addrs())
            .unwrap_err()
            .contains("no client address"));
    }
}
