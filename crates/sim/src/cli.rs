//! `paxosstore-sim`: run many seeds, print one line per failure and a summary.
//!
//! ```text
//! paxosstore-sim --seeds N [--seed S] [--replicas 3|5] [--trace] [--threads T]
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::cluster::SimConfig;

struct Args {
    seeds: u64,
    first: u64,
    replicas: u8,
    trace: bool,
    threads: usize,
    mutation: paxos::Mutation,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        seeds: 100,
        first: 1,
        replicas: 3,
        trace: false,
        threads: 0,
        mutation: paxos::Mutation::None,
    };
    let mut single = false;
    let mut counted = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value"))
                .and_then(|v| {
                    v.parse::<u64>()
                        .map_err(|_| format!("{name}: not a number: {v}"))
                })
        };
        match flag.as_str() {
            "--seeds" => {
                a.seeds = val("--seeds")?;
                counted = true;
            }
            "--seed" => {
                a.first = val("--seed")?;
                single = true;
            }
            "--replicas" => {
                let r = val("--replicas")?;
                if !(3..=7).contains(&r) || r.is_multiple_of(2) {
                    return Err("--replicas must be 3, 5 or 7".into());
                }
                a.replicas = r as u8;
            }
            "--threads" => a.threads = val("--threads")? as usize,
            "--trace" => a.trace = true,
            "--mutation" => {
                a.mutation = match it.next().map(String::as_str) {
                    Some("minority-quorum") => paxos::Mutation::MinorityQuorum,
                    Some("forget-promise") => paxos::Mutation::ForgetPromiseOnRestart,
                    Some("ignore-wipe") => paxos::Mutation::IgnoreWipe,
                    Some("summary-forgets-records") => paxos::Mutation::SummaryForgetsRecords,
                    other => return Err(format!("--mutation: expected minority-quorum, forget-promise, ignore-wipe or summary-forgets-records, got {other:?}")),
                }
            }
            "-h" | "--help" => {
                return Err("usage: paxosstore-sim --seeds N [--seed S] [--replicas 3|5|7] [--trace] [--threads T] [--mutation minority-quorum|forget-promise|ignore-wipe|summary-forgets-records]".into())
            }
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    // `--seed S` alone replays one seed; with `--seeds N` it runs N seeds from S.
    if single && !counted {
        a.seeds = 1;
    }
    Ok(a)
}

/// Entry point of the binary; returns the process exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("paxosstore-sim: {e}");
            return 2;
        }
    };
    let threads = if a.threads > 0 {
        a.threads
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    let next = AtomicU64::new(a.first);
    let end = a.first + a.seeds;
    let failed: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let passed = AtomicU64::new(0);
    let totals: [AtomicU64; 7] = std::array::from_fn(|_| AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    return;
                }
                let mut cfg = SimConfig::new(seed, a.replicas);
                cfg.trace = a.trace;
                cfg.mutation = a.mutation;
                cfg.check_monotonic = a.mutation == paxos::Mutation::None;
                let report = crate::run_seed(cfg);
                totals[0].fetch_add(report.ops_ok, Ordering::Relaxed);
                totals[1].fetch_add(report.ops_unknown, Ordering::Relaxed);
                totals[2].fetch_add(report.messages, Ordering::Relaxed);
                totals[3].fetch_add(report.crashes, Ordering::Relaxed);
                totals[4].fetch_add(report.wipes, Ordering::Relaxed);
                totals[5].fetch_add(report.evictions, Ordering::Relaxed);
                totals[6].fetch_add(report.summary_answers, Ordering::Relaxed);
                if a.trace {
                    for l in &report.trace {
                        println!("{l}");
                    }
                }
                match report.failure {
                    None => {
                        passed.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(why) => {
                        let first = why.lines().next().unwrap_or("").to_string();
                        println!(
                            "seed {seed} FAILED: {first} (replay: cargo run --release --bin paxosstore-sim -- --seed {seed} --replicas {} --trace)",
                            a.replicas
                        );
                        if a.trace {
                            println!("{why}");
                        }
                        if let Ok(mut f) = failed.lock() {
                            f.push((seed, why));
                        }
                    }
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap_or_default();
    let t: Vec<u64> = totals.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    println!(
        "ops answered {}, unknown outcome {}, messages {}, crashes {} (disk wiped {}), evictions {} (probes answered by a summary {}) over {} seeds ({} replicas)",
        t[0], t[1], t[2], t[3], t[4], t[5], t[6], a.seeds, a.replicas
    );
    println!(
        "{} passed, {} failed",
        passed.load(Ordering::Relaxed),
        failed.len()
    );
    i32::from(!failed.is_empty())
}
