//! One harness run: start a cluster, then rounds of (clients start; faults; heal;
//! clients stop; wait until every node serves; final reads), then a re-read of every
//! round's keys and the checks.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::check::{self, entity_keys, Finding};
use crate::cluster::{self, Backend, DockerCluster, ProcessCluster};
use crate::history::{Class, Op, Outcome, Record, Res, FINAL_CLIENT};
use crate::nemesis::{Fault, Schedule};
use crate::resp::{self, Conn, Reply};

/// The largest clock offset the nemesis injects (the expiry check allows for it).
pub const MAX_CLOCK_SKEW_MS: u64 = 2000;

/// Client request timeout (the servers' `op_timeout_ms` is 2000).
const OP_TIMEOUT: Duration = Duration::from_millis(3000);

#[derive(Clone, Debug)]
pub struct Opts {
    pub nodes: usize,
    pub rounds: usize,
    pub seed: u64,
    pub docker: bool,
    pub bin: PathBuf,
    pub image: String,
    pub out: PathBuf,
    /// Seconds each round's faults last.
    pub fault_secs: f64,
    pub clients_per_node: usize,
    pub keep: bool,
    pub only: Option<Vec<String>>,
    /// Extra TOML lines for every node's config.
    pub server_config: Vec<String>,
}

impl Opts {
    pub fn replay_command(&self) -> String {
        let mut s = format!(
            "paxosstore-jepsen --nodes {} --rounds {} --seed {} --fault-secs {} --clients-per-node {}",
            self.nodes, self.rounds, self.seed, self.fault_secs, self.clients_per_node
        );
        if self.docker {
            s.push_str(&format!(" --docker --image {}", self.image));
        } else {
            s.push_str(&format!(" --bin {}", self.bin.display()));
        }
        if let Some(o) = &self.only {
            s.push_str(&format!(" --faults {}", o.join(",")));
        }
        for c in &self.server_config {
            s.push_str(&format!(" --server-config '{c}'"));
        }
        s
    }
}

pub struct Summary {
    pub rounds: usize,
    pub ops: usize,
    pub findings: Vec<Finding>,
    pub liveness: Vec<String>,
    pub dir: PathBuf,
    pub secs: f64,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.findings.is_empty() && self.liveness.is_empty()
    }
}

/// The entities of one round.
fn entities(round: usize) -> Vec<(Class, String)> {
    let mut v = Vec::new();
    for i in 0..3 {
        v.push((Class::Register, format!("j{round}:r{i}")));
    }
    for i in 0..2 {
        v.push((Class::Counter, format!("j{round}:c{i}")));
    }
    for i in 0..2 {
        v.push((Class::Txn, format!("{{j{round}t{i}}}")));
    }
    for i in 0..2 {
        v.push((Class::Expiry, format!("j{round}:x{i}")));
    }
    v
}

struct Clock(Instant);
impl Clock {
    fn us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

fn parse_int(b: &Reply) -> Option<Option<i64>> {
    match b {
        Reply::Bulk(None) => Some(None),
        // A value the harness never writes reads as -1, which no model accepts.
        Reply::Bulk(Some(x)) => Some(Some(
            std::str::from_utf8(x)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(-1),
        )),
        _ => None,
    }
}

/// Errors the server gives only for requests it did not (and will not) carry out.
const DEFINITE: [&str; 4] = [
    "CLUSTERDOWN",
    "BUSY",
    // Refused before proposing (wiped-disk rule).
    "TRYAGAIN this replica is recovering",
    // Every attempt lost its entry to another value.
    "TRYAGAIN the write lost its entry",
];

fn classify_error(e: &str) -> Outcome {
    if DEFINITE.iter().any(|p| e.starts_with(p)) {
        Outcome::Fail {
            error: e.to_string(),
        }
    } else {
        Outcome::Unknown {
            error: e.to_string(),
        }
    }
}

/// The commands of an operation.
fn commands(op: &Op) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match op {
        Op::Get { key } => vec![s(&["GET", key])],
        Op::Set { key, value } => vec![s(&["SET", key, &value.to_string()])],
        Op::SetPx { key, value, px } => {
            vec![s(&["SET", key, &value.to_string(), "PX", &px.to_string()])]
        }
        Op::Vget { key } => vec![s(&["VGET", key])],
        Op::Vset {
            key,
            value,
            version,
        } => vec![s(&["VSET", key, &value.to_string(), &version.to_string()])],
        Op::Incr { key } => vec![s(&["INCR", key])],
        Op::TxnSet { keys, value } => {
            let mut c = vec![s(&["MULTI"])];
            for k in keys {
                c.push(s(&["SET", k, &value.to_string()]));
            }
            c.push(s(&["EXEC"]));
            c
        }
        Op::TxnGet { keys } => {
            let mut c = vec![s(&["MULTI"])];
            for k in keys {
                c.push(s(&["GET", k]));
            }
            c.push(s(&["EXEC"]));
            c
        }
    }
}

/// Interpret the replies of an operation.
fn outcome(op: &Op, replies: &[Reply]) -> Outcome {
    let Some(last) = replies.last() else {
        return Outcome::Unknown {
            error: "no reply".into(),
        };
    };
    // A transaction's queueing errors make EXEC fail (EXECABORT): no effect.
    if let Op::TxnSet { .. } | Op::TxnGet { .. } = op {
        if let Some(Reply::Error(e)) = replies[..replies.len() - 1]
            .iter()
            .find(|r| matches!(r, Reply::Error(_)))
        {
            return Outcome::Fail {
                error: format!("queued: {e}"),
            };
        }
    }
    if let Reply::Error(e) = last {
        if let (Op::Vset { .. }, Some(rest)) = (op, e.strip_prefix("VERSION mismatch (current ")) {
            if let Some(Ok(current)) = rest.strip_suffix(')').map(str::parse::<u64>) {
                return Outcome::Ok {
                    res: Res::Mismatch { current },
                };
            }
        }
        if e.starts_with("EXECABORT") {
            return Outcome::Fail { error: e.clone() };
        }
        return classify_error(e);
    }
    let unexpected = || Outcome::Unknown {
        error: format!("unexpected reply {last:?}"),
    };
    let res = match (op, last) {
        (Op::Get { .. }, r) => match parse_int(r) {
            Some(v) => Res::Value { v },
            None => return unexpected(),
        },
        (Op::Set { .. } | Op::SetPx { .. }, Reply::Simple(s)) if s == "OK" => Res::Ok,
        (Op::Vget { .. }, Reply::Bulk(None) | Reply::Array(None)) => Res::Versioned { v: None },
        (Op::Vget { .. }, Reply::Array(Some(a))) => match (a.first().and_then(parse_int), a.get(1))
        {
            (Some(Some(v)), Some(Reply::Int(ver))) => Res::Versioned {
                v: Some((v, *ver as u64)),
            },
            _ => return unexpected(),
        },
        (Op::Vset { .. }, Reply::Int(v)) => Res::Version { v: *v as u64 },
        (Op::Incr { .. }, Reply::Int(v)) => Res::Int { v: *v },
        (Op::TxnSet { keys, .. }, Reply::Array(Some(a)))
            if a.len() == keys.len() && a.iter().all(|r| *r == Reply::Simple("OK".into())) =>
        {
            Res::Ok
        }
        (Op::TxnGet { keys }, Reply::Array(Some(a))) if a.len() == keys.len() => {
            let vals: Option<Vec<Option<i64>>> = a.iter().map(parse_int).collect();
            match vals {
                Some(v) => Res::Values { v },
                None => return unexpected(),
            }
        }
        _ => return unexpected(),
    };
    Outcome::Ok { res }
}

/// Run one operation on `conn` (connecting first if needed).
async fn run_op(conn: &mut Option<Conn>, addr: &str, op: &Op) -> Outcome {
    if conn.is_none() {
        match Conn::connect(addr, Duration::from_millis(1000)).await {
            Ok(c) => *conn = Some(c),
            Err(e) => return Outcome::Fail { error: e },
        }
    }
    let Some(c) = conn.as_mut() else {
        return Outcome::Fail {
            error: "no connection".into(),
        };
    };
    match c.call(&commands(op), OP_TIMEOUT).await {
        Ok(replies) => outcome(op, &replies),
        Err(e) => {
            *conn = None;
            Outcome::Unknown { error: e }
        }
    }
}

struct ClientCtx {
    round: usize,
    client: u32,
    node: usize,
    addr: String,
    ents: Vec<(Class, String)>,
    stop: Arc<AtomicBool>,
    clock: Arc<Clock>,
    hist: Arc<Mutex<Vec<Record>>>,
    seed: u64,
}

async fn client_loop(cx: ClientCtx) {
    let mut rng = StdRng::seed_from_u64(cx.seed);
    let mut conn: Option<Conn> = None;
    let mut seq: i64 = 0;
    let mut versions: HashMap<String, u64> = HashMap::new();
    while !cx.stop.load(Ordering::Relaxed) {
        let (class, entity) = cx.ents[rng.gen_range(0..cx.ents.len())].clone();
        seq += 1;
        let value = (cx.client as i64 + 1) * 1_000_000_000 + cx.round as i64 * 1_000_000 + seq;
        let key = entity.clone();
        let p: u32 = rng.gen_range(0..100);
        let op = match class {
            Class::Register => match p {
                0..=29 => Op::Get { key },
                30..=54 => Op::Set { key, value },
                55..=69 => Op::Vget { key },
                _ => {
                    let version = versions.get(&key).copied().unwrap_or(0);
                    Op::Vset {
                        key,
                        value,
                        version,
                    }
                }
            },
            Class::Counter => match p {
                0..=59 => Op::Incr { key },
                _ => Op::Get { key },
            },
            Class::Txn => {
                let keys = entity_keys(class, &entity);
                match p {
                    0..=39 => Op::TxnSet { keys, value },
                    40..=69 => Op::TxnGet { keys },
                    70..=84 => Op::Set {
                        key: keys[0].clone(),
                        value,
                    },
                    _ => Op::Get {
                        key: keys[1].clone(),
                    },
                }
            }
            Class::Expiry => match p {
                0..=44 => Op::SetPx {
                    key,
                    value,
                    px: rng.gen_range(200..1500),
                },
                _ => Op::Get { key },
            },
        };
        let invoke_us = cx.clock.us();
        let outcome = run_op(&mut conn, &cx.addr, &op).await;
        let complete_us = cx.clock.us();
        if let (
            Op::Vget { key },
            Outcome::Ok {
                res: Res::Versioned { v },
            },
        ) = (&op, &outcome)
        {
            versions.insert(key.clone(), v.map_or(0, |x| x.1));
        }
        if let (
            Op::Vset { key, .. },
            Outcome::Ok {
                res: Res::Version { v } | Res::Mismatch { current: v },
            },
        ) = (&op, &outcome)
        {
            versions.insert(key.clone(), *v);
        }
        // Back off after errors: fewer operations of unknown outcome keep the
        // linearizability search small.
        let pause_ms = match outcome {
            Outcome::Fail { .. } => rng.gen_range(20..120),
            Outcome::Unknown { .. } => rng.gen_range(250..750),
            Outcome::Ok { .. } => 0,
        };
        if let Ok(mut h) = cx.hist.lock() {
            h.push(Record {
                round: cx.round as u32,
                client: cx.client,
                node: cx.node,
                entity,
                class,
                op,
                invoke_us,
                complete_us,
                outcome,
            });
        }
        if pause_ms > 0 {
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
    }
}

/// Block the async context while a backend call runs.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Wait until every node answers a (linearizable) GET and some node takes a SET.
async fn wait_ready(b: &mut Box<dyn Backend>, secs: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let n = b.n();
    for i in 0..n {
        let addr = b.client_addr(i);
        loop {
            match resp::once(&addr, &["GET", "jepsen:probe"], Duration::from_secs(3)).await {
                Ok(Reply::Bulk(_)) => break,
                r if Instant::now() > deadline => {
                    return Err(format!("node {i} does not serve reads after heal: {r:?}"))
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    for k in 0.. {
        let addr = b.client_addr(k % n);
        match resp::once(&addr, &["SET", "jepsen:probe", "1"], Duration::from_secs(3)).await {
            Ok(Reply::Simple(_)) => return Ok(()),
            r if Instant::now() > deadline => {
                return Err(format!("no node takes writes after heal: {r:?}"))
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Ok(())
}

/// Read `ents` through node `node`, retrying errors; every attempt is recorded.
async fn final_reads(
    b: &mut Box<dyn Backend>,
    node: usize,
    ents: &[(usize, Class, String)],
    clock: &Clock,
    client: u32,
    hist: &Mutex<Vec<Record>>,
) -> Result<(), String> {
    let addr = b.client_addr(node);
    let mut conn = None;
    for (round, class, entity) in ents {
        let op = match class {
            Class::Register => Op::Vget {
                key: entity.clone(),
            },
            Class::Txn => Op::TxnGet {
                keys: entity_keys(*class, entity),
            },
            _ => Op::Get {
                key: entity.clone(),
            },
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let invoke_us = clock.us();
            let outcome = run_op(&mut conn, &addr, &op).await;
            let done = matches!(outcome, Outcome::Ok { .. });
            let last = format!("{outcome:?}");
            if let Ok(mut h) = hist.lock() {
                h.push(Record {
                    round: *round as u32,
                    client,
                    node,
                    entity: entity.clone(),
                    class: *class,
                    op: op.clone(),
                    invoke_us,
                    complete_us: clock.us(),
                    outcome,
                });
            }
            if done {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("node {node} cannot read {entity}: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

fn describe(f: &Fault) -> String {
    serde_json::to_string(f).unwrap_or_else(|_| format!("{f:?}"))
}

/// For the console: a flap's steps are in faults.jsonl.
fn short(f: &Fault) -> String {
    match f {
        Fault::Flap { steps } => format!("{{\"fault\":\"flap\",\"steps\":{}}}", steps.len()),
        _ => describe(f),
    }
}

fn inject(b: &mut Box<dyn Backend>, faults: &[Fault]) -> Result<(), String> {
    let n = b.n();
    let mut blocked = BTreeSet::new();
    for f in faults {
        match f {
            Fault::Kill { node } => b.kill(*node)?,
            Fault::Pause { node } => b.pause(*node)?,
            Fault::Isolate { node } => b.isolate(*node, true)?,
            Fault::ClockJump { node, offset_ms } => b.set_clock(*node, *offset_ms)?,
            Fault::DiskFull { node } => b.fill_disk(*node)?,
            Fault::WipeRejoin { node } => b.wipe_and_rejoin(*node)?,
            p => blocked.extend(p.blocked(n)),
        }
    }
    if !blocked.is_empty() {
        b.set_partition(&blocked)?;
    }
    Ok(())
}

/// Undo every fault; restart any node that is not running (noting it).
fn heal(b: &mut Box<dyn Backend>, faults: &[Fault], notes: &mut Vec<String>) -> Result<(), String> {
    for f in faults {
        match f {
            Fault::Pause { node } => b.resume(*node)?,
            Fault::Isolate { node } => b.isolate(*node, false)?,
            Fault::ClockJump { node, .. } => b.set_clock(*node, 0)?,
            Fault::DiskFull { node } => {
                // The storage engine refuses every write after a failed one
                // ("poisoned ... reopen it"), even once space is back: restart.
                b.free_disk(*node)?;
                b.kill(*node)?;
                notes.push(format!("node {node} restarted after its disk was freed"));
            }
            _ => {}
        }
    }
    if faults.iter().any(Fault::is_partition) {
        b.set_partition(&BTreeSet::new())?;
    }
    for i in 0..b.n() {
        if !b.running(i) {
            let expected = faults.iter().any(
                |f| matches!(f, Fault::Kill { node } | Fault::DiskFull { node } if *node == i),
            );
            if !expected {
                notes.push(format!("node {i} had exited during the faults; restarted"));
            }
            b.start(i)?;
        }
    }
    Ok(())
}

/// Run the harness. Findings and liveness failures are in the summary; `Err` is a
/// harness failure (could not start the cluster, Docker error, ...).
pub async fn run(opts: &Opts) -> Result<Summary, String> {
    let started = Instant::now();
    let mode = if opts.docker { "docker" } else { "process" };
    let dir = opts.out.join(format!(
        "jepsen-{mode}-n{}-seed{}-{}",
        opts.nodes,
        opts.seed,
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tag = format!("{}{}", std::process::id(), opts.seed % 1000);
    let extra: String = opts
        .server_config
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    let mut backend: Box<dyn Backend> = if opts.docker {
        let (d, n, img) = (dir.clone(), opts.nodes, opts.image.clone());
        Box::new(blocking(move || {
            DockerCluster::create(&d, n, &img, &tag, &extra)
        })?)
    } else {
        // A port taken between choosing it and the node binding it (other tests
        // run on this machine): start again on fresh ports.
        let mut attempt = 0;
        loop {
            let mut c: Box<dyn Backend> =
                Box::new(ProcessCluster::create(&dir, opts.nodes, &opts.bin, &extra).await?);
            match wait_ready(&mut c, 30).await {
                Ok(()) => break c,
                Err(e) if attempt < 2 => {
                    println!("cluster did not start ({e}); retrying on fresh ports");
                    blocking(|| c.teardown());
                    for i in 0..opts.nodes {
                        let _ = std::fs::remove_dir_all(dir.join(format!("node{i}-disk")));
                        let log = dir.join(format!("node{i}.log"));
                        let _ = std::fs::rename(
                            &log,
                            dir.join(format!("node{i}.log.attempt{attempt}")),
                        );
                    }
                    attempt += 1;
                }
                Err(e) => {
                    blocking(|| c.teardown());
                    return Err(format!("cluster did not start: {e}"));
                }
            }
        }
    };
    let result = run_rounds(opts, &mut backend, &dir).await;
    blocking(|| backend.teardown());
    let (records, mut liveness, notes) = result?;
    let _ = notes;
    let mut hist_file =
        std::fs::File::create(dir.join("history.jsonl")).map_err(|e| format!("history: {e}"))?;
    for r in &records {
        if let Ok(line) = serde_json::to_string(r) {
            let _ = writeln!(hist_file, "{line}");
        }
    }
    let findings = check::check_all(&records, MAX_CLOCK_SKEW_MS);
    liveness.retain(|l| !l.is_empty());
    let summary = Summary {
        rounds: opts.rounds,
        ops: records.len(),
        findings,
        liveness,
        dir,
        secs: started.elapsed().as_secs_f64(),
    };
    Ok(summary)
}

type RoundsResult = Result<(Vec<Record>, Vec<String>, Vec<String>), String>;

async fn run_rounds(opts: &Opts, b: &mut Box<dyn Backend>, dir: &std::path::Path) -> RoundsResult {
    let n = opts.nodes;
    let clock = Arc::new(Clock(Instant::now()));
    let hist: Arc<Mutex<Vec<Record>>> = Arc::new(Mutex::new(Vec::new()));
    let mut liveness = Vec::new();
    let mut notes = Vec::new();
    let mut faults_log =
        std::fs::File::create(dir.join("faults.jsonl")).map_err(|e| format!("faults log: {e}"))?;
    if let Err(e) = wait_ready(b, 60).await {
        return Err(format!("cluster did not start: {e}"));
    }
    let mut sched = Schedule::new(opts.seed, n, b.can_fill_disk(), opts.only.clone());
    let mut all_ents: Vec<(usize, Class, String)> = Vec::new();
    for round in 0..opts.rounds {
        let t_round = Instant::now();
        let faults = sched.round(round);
        let ents = entities(round);
        let before = hist.lock().map_or(0, |h| h.len());
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for c in 0..n * opts.clients_per_node {
            let node = c % n;
            let cx = ClientCtx {
                round,
                client: c as u32,
                node,
                addr: b.client_addr(node),
                ents: ents.clone(),
                stop: stop.clone(),
                clock: clock.clone(),
                hist: hist.clone(),
                seed: opts.seed ^ ((round as u64) << 32) ^ c as u64,
            };
            tasks.push(tokio::spawn(client_loop(cx)));
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let fault_text: Vec<String> = faults.iter().map(describe).collect();
        let _ = writeln!(
            faults_log,
            "{{\"round\":{round},\"at_us\":{},\"faults\":[{}]}}",
            clock.us(),
            fault_text.join(",")
        );
        blocking(|| inject(b, &faults))?;
        let flaps: Vec<&Vec<(usize, usize)>> = faults
            .iter()
            .flat_map(|f| match f {
                Fault::Flap { steps } => steps.iter().skip(1).collect(),
                _ => Vec::new(),
            })
            .collect();
        let slice = opts.fault_secs / (flaps.len() + 1) as f64;
        tokio::time::sleep(Duration::from_secs_f64(slice)).await;
        for step in flaps {
            let blocked: BTreeSet<(usize, usize)> = step.iter().copied().collect();
            blocking(|| b.set_partition(&blocked))?;
            tokio::time::sleep(Duration::from_secs_f64(slice)).await;
        }
        let mut round_notes = Vec::new();
        blocking(|| heal(b, &faults, &mut round_notes))?;
        let _ = writeln!(
            faults_log,
            "{{\"round\":{round},\"healed_us\":{}}}",
            clock.us()
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        let mut ok = true;
        if let Err(e) = wait_ready(b, 60).await {
            liveness.push(format!("round {round}: {e}"));
            ok = false;
        }
        let round_ents: Vec<(usize, Class, String)> =
            ents.iter().map(|(c, e)| (round, *c, e.clone())).collect();
        if ok {
            for i in 0..n {
                if let Err(e) =
                    final_reads(b, i, &round_ents, &clock, FINAL_CLIENT + i as u32, &hist).await
                {
                    liveness.push(format!("round {round}: {e}"));
                    ok = false;
                    break;
                }
            }
        }
        all_ents.extend(round_ents);
        // After a wipe, read every earlier key through the wiped node: it must see
        // them all, and it stores them again (restoring their redundancy).
        for f in &faults {
            if let (true, Fault::WipeRejoin { node }) = (ok, f) {
                let earlier: Vec<_> = all_ents.iter().filter(|e| e.0 < round).cloned().collect();
                if let Err(e) = final_reads(
                    b,
                    *node,
                    &earlier,
                    &clock,
                    FINAL_CLIENT + 100 + *node as u32,
                    &hist,
                )
                .await
                {
                    liveness.push(format!("round {round} (re-read after wipe): {e}"));
                    ok = false;
                }
            }
        }
        let (ops, okc, unk, fail) = hist.lock().map_or((0, 0, 0, 0), |h| {
            let new = &h[before..];
            let c = |f: &dyn Fn(&Outcome) -> bool| new.iter().filter(|r| f(&r.outcome)).count();
            (
                new.len(),
                c(&|o| matches!(o, Outcome::Ok { .. })),
                c(&|o| matches!(o, Outcome::Unknown { .. })),
                c(&|o| matches!(o, Outcome::Fail { .. })),
            )
        });
        println!(
            "round {}/{} [{} nodes, {}] {} | ops {ops} (ok {okc}, unknown {unk}, failed {fail}) | {:.1} s{}",
            round + 1,
            opts.rounds,
            n,
            if opts.docker { "containers" } else { "processes" },
            faults.iter().map(short).collect::<Vec<_>>().join(" + "),
            t_round.elapsed().as_secs_f64(),
            if round_notes.is_empty() {
                String::new()
            } else {
                format!(" | {}", round_notes.join("; "))
            }
        );
        notes.extend(round_notes);
        if !ok {
            break;
        }
    }
    // The end: every round's keys, once more, through rotating nodes.
    if liveness.is_empty() {
        for i in 0..n {
            let mine: Vec<_> = all_ents
                .iter()
                .enumerate()
                .filter(|(k, _)| k % n == i)
                .map(|(_, e)| e.clone())
                .collect();
            if let Err(e) =
                final_reads(b, i, &mine, &clock, FINAL_CLIENT + 200 + i as u32, &hist).await
            {
                liveness.push(format!("re-read at the end: {e}"));
                break;
            }
        }
    }
    let records = hist.lock().map(|h| h.clone()).unwrap_or_default();
    Ok((records, liveness, notes))
}

/// Check a Docker engine and the image; `None` if the container tier can run.
pub fn docker_skip_reason(image: &str) -> Option<String> {
    if !cluster::docker_available() {
        return Some("docker not available".into());
    }
    let ok = std::process::Command::new("docker")
        .args(["image", "inspect", image])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!ok).then(|| format!("image {image} not found (build it with tests/jepsen/build-image.sh)"))
}
