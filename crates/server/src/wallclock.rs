//! The wall clock the server stamps expiry times with, plus a **test-only** hook:
//! when the environment variable `PAXOSSTORE_CLOCK_OFFSET_FILE` names a file holding
//! a signed number of milliseconds, that offset is added to the system time. The file
//! is re-read at most every 100 ms, so a fault-test harness (`crates/jepsen`) can jump
//! a running node's clock forward or backward. Without the variable this is
//! `SystemTime::now()`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The environment variable naming the offset file (test-only).
pub const CLOCK_OFFSET_ENV: &str = "PAXOSSTORE_CLOCK_OFFSET_FILE";

struct Hook {
    path: std::path::PathBuf,
    start: Instant,
    /// Milliseconds since `start` at the last read of the file.
    read_at: AtomicI64,
    offset: AtomicI64,
}

fn hook() -> Option<&'static Hook> {
    static HOOK: OnceLock<Option<Hook>> = OnceLock::new();
    HOOK.get_or_init(|| {
        std::env::var_os(CLOCK_OFFSET_ENV).map(|p| Hook {
            path: p.into(),
            start: Instant::now(),
            read_at: AtomicI64::new(i64::MIN),
            offset: AtomicI64::new(0),
        })
    })
    .as_ref()
}

fn offset_ms() -> i64 {
    let Some(h) = hook() else { return 0 };
    let now = h.start.elapsed().as_millis() as i64;
    let last = h.read_at.load(Ordering::Relaxed);
    if last == i64::MIN || now - last >= 100 {
        h.read_at.store(now, Ordering::Relaxed);
        // A missing or malformed file means no offset.
        let off = std::fs::read_to_string(&h.path)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        h.offset.store(off, Ordering::Relaxed);
    }
    h.offset.load(Ordering::Relaxed)
}

/// Milliseconds since the Unix epoch (plus the test-only offset, if configured).
pub fn wall_ms() -> i64 {
    let sys = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    sys.saturating_add(offset_ms())
}
