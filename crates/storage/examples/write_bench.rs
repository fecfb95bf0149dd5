//! Durable-write throughput through GroupCommit on FjallStorage, per writer count, plus
//! the raw fdatasync latency of the same disk.
//!
//! cargo run --release -p storage --example write_bench -- --dir /tmp/x --writers 1,8,64,512 --secs 5

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(arg("--dir", "/tmp/storage-write-bench"));
    let secs: u64 = arg("--secs", "5").parse()?;
    let writers: Vec<usize> = arg("--writers", "1,8,64,512")
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    std::fs::create_dir_all(&dir)?;
    let med = raw_fdatasync_median(&dir)?;
    println!(
        "raw fdatasync (128-byte append) median: {:.1} us",
        med.as_secs_f64() * 1e6
    );
    println!("| writers | durable writes/s | fsyncs/s | updates/fsync | mean write_batch ms | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|---|");
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
        let value = Bytes::from(vec![b'v'; 100]);
        let threads: Vec<_> = (0..w)
            .map(|t| {
                let (gc, stop, count, value) =
                    (gc.clone(), stop.clone(), count.clone(), value.clone());
                std::thread::spawn(move || {
                    let key = Bytes::from(format!("key-{t}"));
                    let mut lats = Vec::new();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        // One single-key PaxosKV-style write: a record + the applied value.
                        let u = EntityUpdate {
                            entity: key.clone(),
                            whole: false,
                            put_records: vec![(n, value.clone())],
                            trim_below: Some(n),
                            apply: Some(Apply {
                                applied_entry: n,
                                clear: false,
                                puts: vec![(key.clone(), value.clone())],
                                deletes: vec![],
                            }),
                            meta: None,
                        };
                        let (tx, rx) = mpsc::sync_channel(1);
                        let t0 = Instant::now();
                        let mut work = vec![u];
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
                                count.fetch_add(1, Ordering::Relaxed);
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
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(secs));
        let el = t0.elapsed().as_secs_f64();
        let c = count.load(Ordering::Relaxed) - c0;
        let b = gc.stats().batches.load(Ordering::Relaxed) - b0;
        let nanos = gc.stats().fsync_nanos_total.load(Ordering::Relaxed) - n0;
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
            "| {w} | {:.0} | {:.0} | {:.1} | {:.3} | {:.3} | {:.3} |",
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
