//! Latency histograms, error counts, throughput timeline and stall tracking.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::workload::OpKind;

/// Width of one timeline bucket.
pub const BUCKET_MS: u64 = 100;

/// State shared by all clients of one run.
pub struct Shared {
    /// Measurement starts here (after warm-up); completions before it are not recorded.
    pub measure_start: Instant,
    /// No new operation is issued after this instant (duration mode).
    pub deadline: Instant,
    /// Operation budget (op-count mode); `u64::MAX` when running by duration.
    pub op_budget: u64,
    pub ops_claimed: AtomicU64,
    pub ops_done: AtomicU64,
    pub errors: AtomicU64,
    pub stop: AtomicBool,
    /// Nanoseconds after `measure_start` of the latest successful completion.
    last_done_ns: AtomicU64,
    /// Longest zero-completion window: (length ns, start ns).
    max_gap: Mutex<(u64, u64)>,
    /// Nanoseconds after `measure_start` at which the fault command ran (`u64::MAX`: none).
    pub fault_ns: AtomicU64,
    /// Longest zero-completion window ending after the fault.
    fault_gap: Mutex<(u64, u64)>,
}

impl Shared {
    pub fn new(measure_start: Instant, deadline: Instant, op_budget: u64) -> Shared {
        Shared {
            measure_start,
            deadline,
            op_budget,
            ops_claimed: AtomicU64::new(0),
            ops_done: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            last_done_ns: AtomicU64::new(0),
            max_gap: Mutex::new((0, 0)),
            fault_ns: AtomicU64::new(u64::MAX),
            fault_gap: Mutex::new((0, 0)),
        }
    }

    /// Whether a client may start another operation (claims one from the budget).
    pub fn may_issue(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline {
            return false;
        }
        if self.op_budget == u64::MAX {
            return true;
        }
        self.ops_claimed.fetch_add(1, Ordering::Relaxed) < self.op_budget
    }

    fn ns_since_start(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.measure_start).as_nanos() as u64
    }

    fn note_completion(&self, end: Instant) {
        if end > self.deadline {
            // Drain after the measured interval: `finish` closes the window at the deadline.
            return;
        }
        let t = self.ns_since_start(end);
        let prev = self.last_done_ns.fetch_max(t, Ordering::AcqRel);
        if t > prev {
            let gap = t - prev;
            {
                let mut g = self.max_gap.lock().unwrap();
                if gap > g.0 {
                    *g = (gap, prev);
                }
            }
            let f = self.fault_ns.load(Ordering::Relaxed);
            if f != u64::MAX && t > f {
                let mut g = self.fault_gap.lock().unwrap();
                if gap > g.0 {
                    *g = (gap, prev);
                }
            }
        }
    }

    /// Closes the stall windows at `end` (the end of the measured interval).
    pub fn finish(&self, end: Instant) {
        let t = self.ns_since_start(end);
        let prev = self.last_done_ns.load(Ordering::Acquire);
        if t > prev {
            let gap = t - prev;
            let mut g = self.max_gap.lock().unwrap();
            if gap > g.0 {
                *g = (gap, prev);
            }
            let f = self.fault_ns.load(Ordering::Relaxed);
            if f != u64::MAX && t > f {
                let mut g = self.fault_gap.lock().unwrap();
                if gap > g.0 {
                    *g = (gap, prev);
                }
            }
        }
    }

    pub fn max_gap(&self) -> (Duration, Duration) {
        let g = *self.max_gap.lock().unwrap();
        (Duration::from_nanos(g.0), Duration::from_nanos(g.1))
    }

    pub fn fault_gap(&self) -> (Duration, Duration) {
        let g = *self.fault_gap.lock().unwrap();
        (Duration::from_nanos(g.0), Duration::from_nanos(g.1))
    }
}

pub fn new_hist() -> Histogram<u64> {
    // 1 µs .. 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// One client's measurements; merged at the end of the run.
pub struct Recorder {
    pub all: Histogram<u64>,
    pub per_op: Vec<Option<Histogram<u64>>>,
    pub ok: u64,
    pub ok_in_window: u64,
    pub errors: BTreeMap<String, u64>,
    pub cas_conflicts: u64,
    pub timeline: Vec<u64>,
    last_done: Option<Instant>,
    pub max_client_gap: Duration,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            all: new_hist(),
            per_op: (0..OpKind::ALL.len()).map(|_| None).collect(),
            ok: 0,
            ok_in_window: 0,
            errors: BTreeMap::new(),
            cas_conflicts: 0,
            timeline: Vec::new(),
            last_done: None,
            max_client_gap: Duration::ZERO,
        }
    }
}

impl Recorder {
    /// A successful operation that started at `start`.
    pub fn ok(&mut self, shared: &Shared, kind: OpKind, start: Instant) {
        let end = Instant::now();
        if start < shared.measure_start {
            return;
        }
        let us = (end - start).as_micros().max(1) as u64;
        let _ = self.all.record(us.min(600_000_000));
        let h = self.per_op[kind.index()].get_or_insert_with(new_hist);
        let _ = h.record(us.min(600_000_000));
        self.ok += 1;
        if end <= shared.deadline {
            self.ok_in_window += 1;
        }
        let b = ((end - shared.measure_start).as_millis() as u64 / BUCKET_MS) as usize;
        if self.timeline.len() <= b {
            self.timeline.resize(b + 1, 0);
        }
        self.timeline[b] += 1;
        let at = end.min(shared.deadline);
        let since = self.last_done.unwrap_or(shared.measure_start);
        self.max_client_gap = self.max_client_gap.max(at.saturating_duration_since(since));
        self.last_done = Some(at);
        shared.ops_done.fetch_add(1, Ordering::Relaxed);
        shared.note_completion(end);
    }

    /// Closes this client's longest-gap window at the end of the measured interval.
    pub fn close(&mut self, shared: &Shared) {
        let at = Instant::now().min(shared.deadline);
        let since = self.last_done.unwrap_or(shared.measure_start);
        self.max_client_gap = self.max_client_gap.max(at.saturating_duration_since(since));
    }

    /// A failed operation (`kind` of error: `io`, `timeout`, or the server's error word).
    pub fn error(&mut self, shared: &Shared, start: Instant, what: &str) {
        if start < shared.measure_start {
            return;
        }
        *self.errors.entry(what.to_string()).or_default() += 1;
        shared.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A compare-and-set that lost to another writer (a correct outcome, not an error).
    pub fn cas_conflict(&mut self, shared: &Shared, start: Instant) {
        if start >= shared.measure_start {
            self.cas_conflicts += 1;
        }
        // It still completed: count it for latency and throughput.
        self.ok(shared, OpKind::Cas, start);
    }

    pub fn merge(&mut self, other: Recorder) {
        let _ = self.all.add(&other.all);
        for (i, h) in other.per_op.into_iter().enumerate() {
            if let Some(h) = h {
                match &mut self.per_op[i] {
                    Some(mine) => {
                        let _ = mine.add(&h);
                    }
                    none => *none = Some(h),
                }
            }
        }
        self.ok += other.ok;
        self.ok_in_window += other.ok_in_window;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.cas_conflicts += other.cas_conflicts;
        if self.timeline.len() < other.timeline.len() {
            self.timeline.resize(other.timeline.len(), 0);
        }
        for (i, v) in other.timeline.into_iter().enumerate() {
            self.timeline[i] += v;
        }
        self.max_client_gap = self.max_client_gap.max(other.max_client_gap);
    }
}

/// Latency summary in microseconds.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct Latency {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// (percentile, latency µs) points for a CDF plot, denser in the tail.
pub fn cdf_points(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut qs: Vec<f64> = (0..=18).map(|i| i as f64 * 0.05).collect();
    let mut x = 1.0f64;
    while x <= 5.0 {
        qs.push(1.0 - 10f64.powf(-x));
        x += 0.1;
    }
    qs.push(1.0);
    qs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    qs.dedup_by(|a, b| (*a - *b).abs() < 1e-12);
    qs.into_iter()
        .map(|q| (q * 100.0, h.value_at_quantile(q)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_is_longest_gap() {
        let t0 = Instant::now();
        let s = Shared::new(t0, t0 + Duration::from_secs(100), u64::MAX);
        s.note_completion(t0 + Duration::from_millis(10));
        s.note_completion(t0 + Duration::from_millis(20));
        s.note_completion(t0 + Duration::from_millis(520));
        s.note_completion(t0 + Duration::from_millis(530));
        s.finish(t0 + Duration::from_millis(600));
        let (gap, start) = s.max_gap();
        assert_eq!(gap, Duration::from_millis(500));
        assert_eq!(start, Duration::from_millis(20));
    }

    #[test]
    fn fault_gap_only_counts_after_fault() {
        let t0 = Instant::now();
        let s = Shared::new(t0, t0 + Duration::from_secs(100), u64::MAX);
        s.note_completion(t0 + Duration::from_millis(400));
        s.fault_ns.store(500_000_000, Ordering::Relaxed);
        s.note_completion(t0 + Duration::from_millis(600));
        s.note_completion(t0 + Duration::from_millis(650));
        s.finish(t0 + Duration::from_millis(660));
        assert_eq!(s.max_gap().0, Duration::from_millis(400));
        assert_eq!(s.fault_gap().0, Duration::from_millis(200));
    }

    #[test]
    fn recorder_merges() {
        let t0 = Instant::now();
        let s = Shared::new(t0, t0 + Duration::from_secs(100), u64::MAX);
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        a.ok(&s, OpKind::Set, t0);
        b.ok(&s, OpKind::Get, t0);
        b.error(&s, t0, "io");
        a.merge(b);
        assert_eq!(a.ok, 2);
        assert_eq!(a.errors["io"], 1);
        assert!(a.per_op[OpKind::Get.index()].is_some());
        assert!(!cdf_points(&a.all).is_empty());
    }
}
