//! Durable-write throughput through GroupCommit on FjallStorage, per writer count, plus
//! the raw fdatasync latency of the same disk, and the writer thread's CPU per update
//! (Linux: from `/proc`), which at large batches is storage's floor per durable update.
//!
//! cargo run --release -p storage --example write_bench -- --dir /tmp/x --writers 1,8,64,512 --secs 5
//!
//! `--whole`: each update is the server's shape (the entity's whole row: one 200-byte
//! record, replacing what was there) instead of a record plus an applied key/value.
//! `--keys K`: the writers cycle over K keys (default: one key per writer).
//! `--per-submit P`: each submission carries P updates of distinct keys, as a shard
//! worker's does (one completion callback for all of them).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use storage::{Apply, EntityUpdate, FjallOptions, FjallStorage, GroupCommit, GroupCommitConfig};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn raw_fdatasync_median(dir: &Path) -> std::io::Result<Duration> {
    let p = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&p)?;
    let buf = [7u8; 128];
    let mut lat = Vec::new();
    let start = Instant::now();
    while lat.len() < 2000 && start.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        lat.push(t.elapsed());
    }
    std::fs::remove_file(&p)?;
    lat.sort();
    Ok(lat[lat.len() / 2])
}

/// CPU time (user + system) of this process's thread named `name`, in seconds; `None`
/// where `/proc` has no such thread (another OS, or the thread ended).
fn thread_cpu_s(name: &str) -> Option<f64> {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        // "pid (comm) state ...": the comm may hold spaces, so split at its last ')'.
        // Linux keeps 15 bytes of a thread's name.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        if comm.is_empty() || !name.starts_with(comm) {
            continue;
        }
        let f: Vec<&str> = rest.split(' ').collect();
        // utime and stime are fields 14 and 15 of stat; `rest` starts at field 3.
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        return Some(ticks / hz);
    }
    None
}

/// One durable write of `key` at entry `n`.
fn update(key: Bytes, n: u64, value: &Bytes, whole: bool) -> EntityUpdate {
    if whole {
        // The server's shape: the entity's whole row, one record.
        return EntityUpdate {
            entity: key,
            whole: true,
            put_records: vec![(n, value.clone())],
            trim_below: Some(n),
            apply: None,
            meta: None,
        };
    }
    // One single-key PaxosKV-style write: a record + the applied value.
    EntityUpdate {
        entity: key.clone(),
        whole: false,
        put_records: vec![(n, value.clone())],
        trim_below: Some(n),
        apply: Some(Apply {
            applied_entry: n,
            clear: false,
            puts: vec![(key, value.clone())],
            deletes: vec![],
        }),
        meta: None,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(arg("--dir", "/tmp/storage-write-bench"));
    let secs: u64 = arg("--secs", "5").parse()?;
    let writers: Vec<usize> = arg("--writers", "1,8,64,512")
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let whole = std::env::args().any(|a| a == "--whole");
    let keys: u64 = arg("--keys", "0").parse()?;
    let per: usize = arg("--per-submit", "1").parse::<usize>()?.max(1);
    std::fs::create_dir_all(&dir)?;
    let med = raw_fdatasync_median(&dir)?;
    println!(
        "raw fdatasync (128-byte append) median: {:.1} us",
        med.as_secs_f64() * 1e6
    );
    println!("| writers | durable writes/s | fsyncs/s | updates/fsync | mean write_batch ms | writer CPU per update us | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|---|---|");
    for &w in &writers {
        let data = dir.join(format!("data-{w}"));
        let _ = std::fs::remove_dir_all(&data);
        let store = Arc::new(FjallStorage::open(&data, FjallOptions::default())?);
        let gc = Arc::new(GroupCommit::start(
            store.clone(),
            GroupCommitConfig::default(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let value = Bytes::from(vec![b'v'; if whole { 200 } else { 100 }]);
        let threads: Vec<_> = (0..w)
            .map(|t| {
                let (gc, stop, count, value) =
                    (gc.clone(), stop.clone(), count.clone(), value.clone());
                std::thread::spawn(move || {
                    let mut lats = Vec::new();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let mut work = Vec::with_capacity(per);
                        for _ in 0..per {
                            n += 1;
                            let key = if keys > 0 {
                                Bytes::from(format!("key-{}", (t as u64 + n * w as u64) % keys))
                            } else if per > 1 {
                                Bytes::from(format!("key-{t}-{}", n % per as u64))
                            } else {
                                Bytes::from(format!("key-{t}"))
                            };
                            work.push(update(key, n, &value, whole));
                        }
                        let (tx, rx) = mpsc::sync_channel(1);
                        let t0 = Instant::now();
                        let mut done: storage::DoneFn = Box::new(move |r| {
                            let _ = tx.send(r);
                        });
                        loop {
                            match gc.submit(work, done) {
                                Ok(()) => break,
                                Err(b) => {
                                    (work, done) = (b.updates, b.done);
                                    std::thread::yield_now();
                                }
                            }
                        }
                        match rx.recv() {
                            Ok(Ok(())) => {
                                count.fetch_add(per as u64, Ordering::Relaxed);
                                lats.push(t0.elapsed());
                            }
                            other => panic!("write failed: {other:?}"),
                        }
                    }
                    lats
                })
            })
            .collect();
        // Warm up 0.5 s, then measure.
        std::thread::sleep(Duration::from_millis(500));
        let c0 = count.load(Ordering::Relaxed);
        let b0 = gc.stats().batches.load(Ordering::Relaxed);
        let n0 = gc.stats().fsync_nanos_total.load(Ordering::Relaxed);
        let cpu0 = thread_cpu_s("storage-group-commit");
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(secs));
        let el = t0.elapsed().as_secs_f64();
        let c = count.load(Ordering::Relaxed) - c0;
        let b = gc.stats().batches.load(Ordering::Relaxed) - b0;
        let nanos = gc.stats().fsync_nanos_total.load(Ordering::Relaxed) - n0;
        let cpu = match (cpu0, thread_cpu_s("storage-group-commit")) {
            (Some(a), Some(b)) => format!("{:.2}", (b - a) * 1e6 / c.max(1) as f64),
            _ => "-".to_string(),
        };
        stop.store(true, Ordering::Relaxed);
        let mut lats: Vec<Duration> = threads
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect();
        lats.sort();
        let pct = |p: f64| {
            lats.get(((lats.len() as f64 * p) as usize).min(lats.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        println!(
            "| {w} | {:.0} | {:.0} | {:.1} | {:.3} | {cpu} | {:.3} | {:.3} |",
            c as f64 / el,
            b as f64 / el,
            c as f64 / b.max(1) as f64,
            nanos as f64 / b.max(1) as f64 / 1e6,
            pct(0.5),
            pct(0.99)
        );
        gc.shutdown();
    }
    Ok(())
}
