//! The node's metrics stay bounded when nobody scrapes them: the upkeep thread drains
//! histogram samples that the Prometheus recorder would otherwise keep forever.
//! Its own test binary: it installs the global recorder and counts allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusBuilder;
use server::metrics_upkeep::MetricsUpkeep;

/// Bytes currently allocated by the process.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: forwards to the system allocator; only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn histogram_samples_are_drained_without_a_scrape() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).expect("first recorder of this binary");
    let upkeep = MetricsUpkeep::start(handle, Duration::from_millis(20)).expect("thread");
    let seconds = metrics::histogram!("paxosstore_command_seconds", "cmd" => "get");
    let before = LIVE.load(Ordering::Relaxed);
    // Undrained, a million samples hold about 16 MB.
    for i in 0..1_000_000u32 {
        seconds.record(f64::from(i % 1000) * 1e-6);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut grown = LIVE.load(Ordering::Relaxed) - before;
    while grown > 2 << 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        grown = LIVE.load(Ordering::Relaxed) - before;
    }
    upkeep.stop();
    assert!(
        grown <= 2 << 20,
        "a million histogram samples still hold {grown} bytes: nothing drained them"
    );
}
