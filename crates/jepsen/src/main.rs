//! `paxosstore-jepsen`: run the fault-test harness once. Exits 1 on any
//! linearizability violation, lost acknowledged write, expiry violation or cluster
//! that does not recover; 2 on a harness error. See crates/jepsen/README.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use jepsen::run::{self, Opts};

#[derive(Parser)]
#[command(
    name = "paxosstore-jepsen",
    about = "Fault-test a real PaxosStore-rs cluster"
)]
struct Args {
    /// Cluster size (3 or 5; 5 injects two faults at once).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Fault rounds.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Seed of the fault schedule (random if omitted).
    #[arg(long)]
    seed: Option<u64>,
    /// Nodes as containers (needs a Docker engine and the image).
    #[arg(long)]
    docker: bool,
    /// With --docker: print "SKIP" and exit 0 when Docker or the image is missing.
    #[arg(long)]
    skip_without_docker: bool,
    /// The server binary (process mode).
    #[arg(long, default_value = "target/release/paxosstore")]
    bin: PathBuf,
    /// The image (container mode).
    #[arg(long, default_value = "paxosstore-jepsen:local")]
    image: String,
    /// Where each run's directory (history, logs, configs) is created.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    out: PathBuf,
    /// Seconds each round's faults last.
    #[arg(long, default_value_t = 3.5)]
    fault_secs: f64,
    /// Concurrent clients per node.
    #[arg(long, default_value_t = 2)]
    clients_per_node: usize,
    /// Keep the run directory even when the run passes.
    #[arg(long)]
    keep: bool,
    /// Only these fault kinds (comma-separated): kill, pause, isolate, halves, deaf,
    /// mute, bridge, clock, disk-full, wipe, flap.
    #[arg(long, value_delimiter = ',')]
    faults: Option<Vec<String>>,
    /// An extra line for every node's config file (repeatable), e.g.
    /// --server-config 'forward_writes = false'.
    #[arg(long)]
    server_config: Vec<String>,
    /// Only check a kept history (history.jsonl of an earlier run); start nothing.
    #[arg(long)]
    check: Option<PathBuf>,
}

fn main() -> ExitCode {
    let a = Args::parse();
    if let Some(path) = &a.check {
        return check_file(path);
    }
    if a.nodes != 3 && a.nodes != 5 {
        eprintln!("--nodes must be 3 or 5");
        return ExitCode::from(2);
    }
    if a.docker {
        if let Some(why) = run::docker_skip_reason(&a.image) {
            if a.skip_without_docker {
                println!("SKIP: containers ({why})");
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {why}");
            return ExitCode::from(2);
        }
    }
    let bin = if a.docker {
        a.bin.clone()
    } else {
        match std::fs::canonicalize(&a.bin) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: server binary {}: {e}", a.bin.display());
                return ExitCode::from(2);
            }
        }
    };
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_007)
    });
    let opts = Opts {
        nodes: a.nodes,
        rounds: a.rounds,
        seed,
        docker: a.docker,
        bin,
        image: a.image,
        out: a.out,
        fault_secs: a.fault_secs,
        clients_per_node: a.clients_per_node,
        keep: a.keep,
        only: a.faults,
        server_config: a.server_config,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "jepsen: {} nodes as {}, {} rounds, seed {}",
        opts.nodes,
        if opts.docker {
            "containers"
        } else {
            "processes"
        },
        opts.rounds,
        opts.seed
    );
    let summary = match rt.block_on(run::run(&opts)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("replay: {}", opts.replay_command());
            return ExitCode::from(2);
        }
    };
    for (i, f) in summary.findings.iter().enumerate() {
        if i < 5 {
            println!(
                "VIOLATION ({}) round {} entity {}: {}",
                f.kind, f.round, f.entity, f.detail
            );
        } else {
            let first = f.detail.lines().next().unwrap_or("");
            println!(
                "VIOLATION ({}) round {} entity {}: {first}",
                f.kind, f.round, f.entity
            );
        }
    }
    for l in &summary.liveness {
        println!("NOT RECOVERED: {l}");
    }
    if summary.ok() {
        println!(
            "PASS: {} rounds, {} operations, 0 linearizability violations, 0 lost acknowledged writes ({:.0} s)",
            summary.rounds, summary.ops, summary.secs
        );
        if !opts.keep {
            let _ = std::fs::remove_dir_all(&summary.dir);
        } else {
            println!("run directory: {}", summary.dir.display());
        }
        ExitCode::SUCCESS
    } else {
        let lin = summary
            .findings
            .iter()
            .filter(|f| f.kind == "linearizability")
            .count();
        let lost = summary
            .findings
            .iter()
            .filter(|f| f.kind == "lost-write")
            .count();
        println!(
            "FAIL: {lin} linearizability violations, {lost} lost-write findings, {} other findings, {} recovery failures",
            summary.findings.len() - lin - lost,
            summary.liveness.len()
        );
        println!(
            "history, faults and node logs kept in {}",
            summary.dir.display()
        );
        println!("replay: {}", opts.replay_command());
        ExitCode::FAILURE
    }
}

fn check_file(path: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match serde_json::from_str::<jepsen::history::Record>(line) {
            Ok(r) => records.push(r),
            Err(e) => {
                eprintln!("error: {} line {}: {e}", path.display(), i + 1);
                return ExitCode::from(2);
            }
        }
    }
    let started = std::time::Instant::now();
    let findings = jepsen::check::check_all(&records, run::MAX_CLOCK_SKEW_MS);
    for f in &findings {
        println!(
            "VIOLATION ({}) round {} entity {}: {}",
            f.kind, f.round, f.entity, f.detail
        );
    }
    println!(
        "{} operations checked in {:.1} s: {} findings",
        records.len(),
        started.elapsed().as_secs_f64(),
        findings.len()
    );
    if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
