//! `paxosstore bench`: a closed-loop load generator for RESP servers (a
//! PaxosStore-rs cluster, Redis) and etcd, plus the plots and the BENCHMARKS.md
//! report of the side-by-side runner (`bench/side_by_side.sh`).
//!
//! Entry point for embedding: [`cli_main`].

pub mod budget;
pub mod client;
pub mod cpu;
#[cfg(feature = "etcd")]
mod etcd;
pub mod plot;
pub mod report;
pub mod resp;
mod resp_client;
pub mod stats;
pub mod summary;
pub mod verify;
pub mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::{watch, Barrier};

use client::{ClientCtx, ClientResult, RunConfig};
use stats::{cdf_points, Latency, Recorder, Shared, BUCKET_MS};
use summary::{FaultInfo, PreloadInfo, Summary};
use verify::VerifyResult;
use workload::{KeyDist, Mix, OpKind};

#[derive(Parser, Debug)]
#[command(
    name = "paxosstore-bench",
    about = "Closed-loop load generator for PaxosStore-rs, Redis (RESP) and etcd",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a workload (the default when no subcommand is given).
    Run(Box<RunArgs>),
    /// Draw PNG plots from the JSON results of a side-by-side run.
    Plot(plot::PlotArgs),
    /// Write BENCHMARKS.md from the JSON results of a side-by-side run.
    Report(report::ReportArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// resp://host:port[,host:port...] or etcd://host:port[,...]; clients are spread
    /// over the addresses and fail over to the next one on errors and timeouts.
    #[arg(short, long, required = true)]
    target: Option<String>,
    /// Closed-loop clients, one connection each.
    #[arg(short, long, default_value_t = 64)]
    clients: usize,
    /// Requests in flight per client.
    #[arg(short = 'P', long, default_value_t = 1)]
    pipeline: usize,
    /// Seconds to measure (default 10; with --ops and no --duration: until the ops are done).
    #[arg(short, long)]
    duration: Option<f64>,
    /// Total operations to run (all clients together).
    #[arg(long)]
    ops: Option<u64>,
    /// Seconds of load before measurement starts.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Operation mix: weights of set, get, incr, mset (two keys of one entity), cas
    /// (VGET then VSET; etcd: get then txn on mod_revision).
    #[arg(short, long, default_value = "set=50,get=50")]
    mix: String,
    /// Number of distinct keys.
    #[arg(short, long, default_value_t = 100_000)]
    keys: u64,
    /// Key distribution: uniform or zipf.
    #[arg(long, default_value = "uniform")]
    dist: String,
    /// Zipf skew (with --dist zipf).
    #[arg(long, default_value_t = 0.99)]
    skew: f64,
    /// Value size in bytes.
    #[arg(short, long, default_value_t = 100)]
    value_size: usize,
    /// Per-request timeout in milliseconds (then the connection is dropped and the
    /// client fails over to the next address).
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Write every key once before measuring (not measured).
    #[arg(long)]
    preload: bool,
    /// Lost-write check: each client SETs its own keys, remembers the last
    /// acknowledged value, and reads every key back after the run.
    #[arg(long)]
    verify: bool,
    /// Run this shell command (sh -c) at --fault-at seconds into the measurement.
    #[arg(long, requires = "fault_at")]
    fault_cmd: Option<String>,
    #[arg(long, requires = "fault_cmd")]
    fault_at: Option<f64>,
    /// Write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Labels stored in the JSON (used by `report` and `plot`).
    #[arg(long, default_value = "")]
    system: String,
    #[arg(long, default_value = "")]
    scenario: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Load-generator worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Where a RESP client sends each request: `spread` (every request over the
    /// client's one connection; clients spread over the addresses) or `slots` (as a
    /// Redis Cluster client: a connection to every address, each request to its key's
    /// home from `CLUSTER SLOTS`; needs `-P 1`).
    #[arg(long, default_value = "spread")]
    route: String,
    /// Process ids of the system under test, separated by commas: their CPU time over
    /// the measured window goes into the result (per operation), beside the load
    /// generator's own.
    #[arg(long, default_value = "")]
    server_pids: String,
}

/// Runs the CLI with `args` (`args[0]` is the program name, as in `std::env::args()`;
/// if it is missing — the first element is an option or a subcommand — one is assumed).
/// Returns the process exit code: 0 ok, 1 failed (nothing completed, bad target),
/// 2 usage error, 3 the lost-write check found lost writes.
pub fn cli_main(mut args: Vec<String>) -> i32 {
    let looks_like_arg =
        |a: &String| a.starts_with('-') || ["run", "plot", "report", "help"].contains(&a.as_str());
    if args.first().is_none_or(looks_like_arg) {
        args.insert(0, "paxosstore bench".into());
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let command = args
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    match cli.cmd {
        Some(Cmd::Run(r)) => run_cli(*r, command),
        Some(Cmd::Plot(p)) => plot::run(p),
        Some(Cmd::Report(r)) => report::run(r),
        None => run_cli(cli.run, command),
    }
}

/// Quotes `a` for a POSIX shell when it needs it.
fn shell_quote(a: &str) -> String {
    let plain = !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=,@%+-".contains(c));
    if plain {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

fn run_cli(a: RunArgs, command: String) -> i32 {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(t) = a.threads {
        rt.worker_threads(t.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("paxosstore bench: cannot start runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(a, command)) {
        Ok(s) => {
            print!("{}", s.table());
            if s.ops_total == 0 {
                eprintln!("paxosstore bench: no operation succeeded");
                return 1;
            }
            if s.verify.as_ref().is_some_and(|v| v.lost > 0) {
                eprintln!("paxosstore bench: LOST WRITES found by --verify");
                return 3;
            }
            0
        }
        Err(e) => {
            eprintln!("paxosstore bench: {e}");
            if e.starts_with("usage:") {
                2
            } else {
                1
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Proto {
    Resp,
    Etcd,
}

fn parse_target(t: &str) -> Result<(Proto, Vec<String>), String> {
    let (proto, rest) = if let Some(r) = t.strip_prefix("resp://") {
        (Proto::Resp, r)
    } else if let Some(r) = t.strip_prefix("redis://") {
        (Proto::Resp, r)
    } else if let Some(r) = t.strip_prefix("etcd://") {
        (Proto::Etcd, r)
    } else if t.contains("://") {
        return Err(format!(
            "usage: unknown target scheme in '{t}' (resp:// or etcd://)"
        ));
    } else {
        (Proto::Resp, t)
    };
    let addrs: Vec<String> = rest
        .split(',')
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if addrs.is_empty() {
        return Err(format!("usage: no address in target '{t}'"));
    }
    Ok((proto, addrs))
}

fn bar(hidden: bool, len: u64, template: &str) -> ProgressBar {
    let pb = if hidden {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
    };
    pb.set_length(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// Runs one workload and returns its summary (also written to `--json`).
pub async fn run(a: RunArgs, command: String) -> Result<Summary, String> {
    let target = a.target.clone().ok_or("usage: --target is required")?;
    let (proto, addrs) = parse_target(&target)?;
    let mix = Mix::parse(&a.mix).map_err(|e| format!("usage: {e}"))?;
    let server_pids = cpu::parse_pids(&a.server_pids)?;
    let dist = KeyDist::new(&a.dist, a.keys, a.skew).map_err(|e| format!("usage: {e}"))?;
    if a.clients == 0 || a.pipeline == 0 {
        return Err("usage: --clients and --pipeline must be at least 1".into());
    }
    if a.verify && !mix.only(OpKind::Set) {
        return Err("usage: --verify needs a write-only mix (--mix set=1)".into());
    }
    if proto == Proto::Etcd && mix.kinds().any(|k| k == OpKind::Incr) {
        return Err("usage: incr is not supported against etcd".into());
    }
    #[cfg(not(feature = "etcd"))]
    if proto == Proto::Etcd {
        return Err(
            "etcd targets need the `etcd` feature: cargo build --release -p bench --features etcd"
                .into(),
        );
    }
    let slot_owners = match a.route.as_str() {
        "spread" => None,
        "slots" if proto != Proto::Resp => {
            return Err("usage: --route slots needs a resp:// target".into())
        }
        "slots" if a.pipeline != 1 => return Err("usage: --route slots needs -P 1".into()),
        "slots" => Some(Arc::new(
            resp_client::slot_owners(&addrs, Duration::from_millis(a.timeout_ms.max(1))).await?,
        )),
        other => return Err(format!("usage: --route is spread or slots, not {other:?}")),
    };
    let duration = match (a.duration, a.ops) {
        (Some(d), _) if d > 0.0 => Some(Duration::from_secs_f64(d)),
        (Some(_), Some(_)) | (None, Some(_)) => None,
        (Some(_), None) => return Err("usage: --duration must be positive".into()),
        (None, None) => Some(Duration::from_secs(10)),
    };
    let cfg = Arc::new(RunConfig {
        clients: a.clients,
        pipeline: a.pipeline,
        keys: a.keys,
        dist,
        mix: mix.clone(),
        value_size: a.value_size,
        timeout: Duration::from_millis(a.timeout_ms.max(1)),
        preload: a.preload,
        verify: a.verify,
        seed: a.seed,
        slot_owners,
    });
    let addrs = Arc::new(addrs);
    let ready = Arc::new(Barrier::new(a.clients + 1));
    let (tx, rx) = watch::channel::<Option<Arc<Shared>>>(None);
    let preloaded = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..a.clients {
        let ctx = ClientCtx {
            id,
            addrs: addrs.clone(),
            cfg: cfg.clone(),
            ready: ready.clone(),
            shared: rx.clone(),
            preloaded: preloaded.clone(),
        };
        match proto {
            Proto::Resp => {
                tasks.spawn(resp_client::run(ctx));
            }
            #[cfg(feature = "etcd")]
            Proto::Etcd => {
                tasks.spawn(etcd::run(ctx));
            }
            #[cfg(not(feature = "etcd"))]
            Proto::Etcd => unreachable!(),
        }
    }

    // Connect (and preload) phase.
    let t_connect = Instant::now();
    let pre_bar = bar(
        a.no_progress || !a.preload,
        a.keys,
        "preload {bar:40} {pos}/{len} keys {elapsed}",
    );
    {
        let wait = ready.wait();
        tokio::pin!(wait);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = &mut wait => break,
                _ = tick.tick() => pre_bar.set_position(preloaded.load(Ordering::Relaxed)),
            }
        }
    }
    pre_bar.finish_and_clear();
    let preload_secs = t_connect.elapsed().as_secs_f64();

    let now = Instant::now();
    let measure_start = now + Duration::from_secs_f64(a.warmup.max(0.0));
    let deadline = match duration {
        Some(d) => measure_start + d,
        None => measure_start + Duration::from_secs(365 * 24 * 3600),
    };
    let shared = Arc::new(Shared::new(
        measure_start,
        deadline,
        a.ops.unwrap_or(u64::MAX),
    ));
    let _ = tx.send(Some(shared.clone()));

    // CPU at the start of the measured window and, for a timed run, at its end.
    let cpu_task = {
        let pids = server_pids.clone();
        let end = duration.map(|_| deadline);
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_start.into()).await;
            let first = cpu::Sample::take(&pids);
            let last = match end {
                Some(end) => {
                    tokio::time::sleep_until(end.into()).await;
                    Some(cpu::Sample::take(&pids))
                }
                None => None,
            };
            (first, last)
        })
    };

    // Fault injection.
    let fault_task = match (&a.fault_cmd, a.fault_at) {
        (Some(cmd), Some(at)) => {
            let cmd = cmd.clone();
            let shared = shared.clone();
            Some(tokio::spawn(async move {
                let when = shared.measure_start + Duration::from_secs_f64(at.max(0.0));
                tokio::time::sleep_until(when.into()).await;
                let at_ns = (Instant::now() - shared.measure_start).as_nanos() as u64;
                shared.fault_ns.store(at_ns, Ordering::Relaxed);
                let out = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(&cmd)
                    .output()
                    .await;
                let (exit, output) = match out {
                    Ok(o) => {
                        let mut text = String::from_utf8_lossy(&o.stdout).to_string();
                        text.push_str(&String::from_utf8_lossy(&o.stderr));
                        (o.status.code(), text.trim().to_string())
                    }
                    Err(e) => (None, format!("cannot run: {e}")),
                };
                FaultInfo {
                    at_s: at_ns as f64 / 1e9,
                    cmd,
                    exit,
                    output,
                    ..FaultInfo::default()
                }
            }))
        }
        _ => None,
    };

    // Measurement phase with a progress bar.
    let run_bar = match duration {
        Some(d) => bar(
            a.no_progress,
            (d + Duration::from_secs_f64(a.warmup.max(0.0))).as_millis() as u64,
            "{spinner} {bar:40} {elapsed}/{duration} {msg}",
        ),
        None => bar(
            a.no_progress,
            a.ops.unwrap_or(0),
            "{spinner} {bar:40} {pos}/{len} ops {msg}",
        ),
    };
    let mut results: Vec<ClientResult> = Vec::with_capacity(a.clients);
    {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut last = (Instant::now(), 0u64);
        loop {
            tokio::select! {
                r = tasks.join_next() => match r {
                    Some(Ok(res)) => results.push(res),
                    Some(Err(e)) => eprintln!("paxosstore bench: a client task failed: {e}"),
                    None => break,
                },
                _ = tick.tick() => {
                    let done = shared.ops_done.load(Ordering::Relaxed);
                    let t = Instant::now();
                    let rate = (done - last.1) as f64 / (t - last.0).as_secs_f64().max(1e-3);
                    last = (t, done);
                    match duration {
                        Some(_) => run_bar.set_position((t - now).as_millis() as u64),
                        None => run_bar.set_position(done),
                    }
                    run_bar.set_message(format!(
                        "{done} ops, {rate:.0} ops/s, {} errors",
                        shared.errors.load(Ordering::Relaxed)
                    ));
                }
            }
        }
    }
    run_bar.finish_and_clear();
    let ended = Instant::now();
    let end = if duration.is_some() {
        ended.min(deadline)
    } else {
        ended
    };
    shared.finish(end);
    let measured_s = end.saturating_duration_since(measure_start).as_secs_f64();
    let cpu = match cpu_task.await {
        Ok((first, last)) => {
            let last = last.unwrap_or_else(|| cpu::Sample::take(&server_pids));
            Some(first.until(&last))
        }
        Err(_) => None,
    };

    let mut rec = Recorder::default();
    let mut verify: Option<VerifyResult> = None;
    let mut preload_errors = 0;
    let mut failovers = 0;
    for r in results {
        rec.merge(r.rec);
        preload_errors += r.preload_errors;
        failovers += r.failovers;
        if let Some(v) = r.verify {
            verify.get_or_insert_with(VerifyResult::default).merge(v);
        }
    }
    let fault = match fault_task {
        Some(t) => match t.await {
            Ok(mut f) => {
                let (g, s) = shared.fault_gap();
                f.stall_after_ms = g.as_secs_f64() * 1000.0;
                f.stall_after_start_s = s.as_secs_f64();
                Some(f)
            }
            Err(_) => None,
        },
        None => None,
    };
    let (gap, gap_start) = shared.max_gap();
    let per_op: BTreeMap<String, Latency> = OpKind::ALL
        .iter()
        .filter_map(|k| {
            rec.per_op[k.index()]
                .as_ref()
                .map(|h| (k.name().to_string(), Latency::of(h)))
        })
        .collect();
    let errors = rec.errors.values().sum();
    let mut timeline = rec.timeline.clone();
    let buckets = (measured_s * 1000.0 / BUCKET_MS as f64).ceil() as usize;
    timeline.resize(buckets, 0);
    let summary = Summary {
        system: a.system.clone(),
        scenario: a.scenario.clone(),
        target,
        command,
        clients: a.clients,
        pipeline: a.pipeline,
        keys: a.keys,
        dist: a.dist.clone(),
        skew: a.skew,
        value_size: a.value_size,
        mix: mix.describe(),
        warmup_s: a.warmup,
        timeout_ms: a.timeout_ms,
        measured_s,
        ops: rec.ok_in_window,
        throughput: if measured_s > 0.0 {
            rec.ok_in_window as f64 / measured_s
        } else {
            0.0
        },
        ops_total: rec.ok,
        errors,
        error_kinds: rec.errors.clone(),
        cas_conflicts: rec.cas_conflicts,
        latency: Latency::of(&rec.all),
        per_op,
        stall_ms: gap.as_secs_f64() * 1000.0,
        stall_start_s: gap_start.as_secs_f64(),
        max_client_gap_ms: rec.max_client_gap.as_secs_f64() * 1000.0,
        failovers,
        fault,
        preload: a.preload.then_some(PreloadInfo {
            keys: a.keys,
            secs: preload_secs,
            errors: preload_errors,
        }),
        verify,
        timeline_bucket_ms: BUCKET_MS,
        timeline,
        cdf: cdf_points(&rec.all),
        cpu,
    };
    if let Some(path) = &a.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let text = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let (p, a) = parse_target("resp://127.0.0.1:1,127.0.0.1:2").unwrap();
        assert_eq!(p, Proto::Resp);
        assert_eq!(a, vec!["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(parse_target("etcd://h:2379").unwrap().0, Proto::Etcd);
        assert_eq!(parse_target("h:6379").unwrap().0, Proto::Resp);
        assert!(parse_target("http://x").is_err());
        assert!(parse_target("resp://").is_err());
    }

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote("--mix"), "--mix");
        assert_eq!(shell_quote("kill -9 1"), "'kill -9 1'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn cli_parses_without_program_name() {
        assert_eq!(cli_main(vec!["--help".into()]), 0);
        assert_eq!(cli_main(vec!["--clients".into(), "3".into()]), 2);
    }
}
