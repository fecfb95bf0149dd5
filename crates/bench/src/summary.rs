//! The result of one run, as printed and as written to `--json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::Latency;
use crate::verify::VerifyResult;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FaultInfo {
    /// Seconds after the start of measurement at which the command was started.
    pub at_s: f64,
    pub cmd: String,
    /// Exit code of the command (`None`: killed by a signal or not run).
    pub exit: Option<i32>,
    /// Its output (stdout then stderr), trimmed.
    pub output: String,
    /// Longest window with no successful completion that ended after the fault.
    pub stall_after_ms: f64,
    pub stall_after_start_s: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PreloadInfo {
    pub keys: u64,
    pub secs: f64,
    pub errors: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub system: String,
    pub scenario: String,
    pub target: String,
    /// The command line that produced this result.
    pub command: String,
    pub clients: usize,
    pub pipeline: usize,
    pub keys: u64,
    pub dist: String,
    pub skew: f64,
    pub value_size: usize,
    pub mix: String,
    pub warmup_s: f64,
    pub timeout_ms: u64,
    /// Length of the measured interval.
    pub measured_s: f64,
    /// Successful operations completed inside the measured interval.
    pub ops: u64,
    /// Successful operations per second over the measured interval.
    pub throughput: f64,
    /// Successful operations including those that completed after the interval
    /// (requests in flight at its end); all of them are in the latency figures.
    pub ops_total: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    /// Compare-and-set operations that lost (counted as successful completions).
    pub cas_conflicts: u64,
    pub latency: Latency,
    pub per_op: BTreeMap<String, Latency>,
    /// Longest window with zero successful completions (all clients together).
    pub stall_ms: f64,
    pub stall_start_s: f64,
    /// Longest time one client went without a successful completion.
    pub max_client_gap_ms: f64,
    pub failovers: u64,
    pub fault: Option<FaultInfo>,
    pub preload: Option<PreloadInfo>,
    pub verify: Option<VerifyResult>,
    pub timeline_bucket_ms: u64,
    /// Successful completions per bucket from the start of measurement.
    pub timeline: Vec<u64>,
    /// (percentile, latency µs) points of the latency CDF of all operations.
    pub cdf: Vec<(f64, u64)>,
    /// CPU used during the measured window (absent in results made before it existed).
    #[serde(default)]
    pub cpu: Option<crate::cpu::CpuUse>,
}

impl Summary {
    /// The load generator's CPU per successful operation of the measured window, µs.
    pub fn client_cpu_us_per_op(&self) -> Option<f64> {
        let c = self.cpu?;
        (self.ops > 0).then(|| c.client_s * 1e6 / self.ops as f64)
    }

    /// The servers' CPU (`--server-pids`) per successful operation, µs.
    pub fn server_cpu_us_per_op(&self) -> Option<f64> {
        let s = self.cpu?.server_s?;
        (self.ops > 0).then(|| s * 1e6 / self.ops as f64)
    }
}

pub fn exit_text(e: Option<i32>) -> String {
    match e {
        Some(c) => format!("exit {c}"),
        None => "killed by a signal or not run".into(),
    }
}

pub fn ms(us: u64) -> String {
    fmt_ms(us as f64 / 1000.0)
}

pub fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

impl Summary {
    /// A human-readable table.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ =
            writeln!(
            s,
            "target {}  clients {}  pipeline {}  mix {}  {} over {} keys  {}-byte values  {:.1} s",
            self.target,
            self.clients,
            self.pipeline,
            self.mix,
            if self.dist == "zipf" { format!("zipf {}", self.skew) } else { self.dist.clone() },
            self.keys,
            self.value_size,
            self.measured_s
        );
        let _ = writeln!(
            s,
            "{:<6} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9}",
            "op", "ops", "ops/s", "p50", "p90", "p99", "p99.9", "max", "errors", "stall"
        );
        let row = |s: &mut String,
                   name: &str,
                   l: &Latency,
                   ops: u64,
                   tput: f64,
                   errors: String,
                   stall: String| {
            let _ = writeln!(
                s,
                "{:<6} {:>10} {:>11.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9}",
                name,
                ops,
                tput,
                ms(l.p50_us),
                ms(l.p90_us),
                ms(l.p99_us),
                ms(l.p999_us),
                ms(l.max_us),
                errors,
                stall
            );
        };
        row(
            &mut s,
            "all",
            &self.latency,
            self.ops,
            self.throughput,
            self.errors.to_string(),
            fmt_ms(self.stall_ms),
        );
        if self.per_op.len() > 1 {
            for (name, l) in &self.per_op {
                let share = if self.latency.count > 0 {
                    self.throughput * l.count as f64 / self.latency.count as f64
                } else {
                    0.0
                };
                row(
                    &mut s,
                    name,
                    l,
                    l.count,
                    share,
                    String::new(),
                    String::new(),
                );
            }
        }
        if !self.error_kinds.is_empty() {
            let kinds: Vec<String> = self
                .error_kinds
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(s, "errors: {}", kinds.join(" "));
        }
        if self.cas_conflicts > 0 {
            let _ = writeln!(
                s,
                "cas conflicts (lost races, counted as completed): {}",
                self.cas_conflicts
            );
        }
        if let Some(c) = self.client_cpu_us_per_op() {
            let servers = self
                .server_cpu_us_per_op()
                .map_or(String::new(), |v| format!("; servers {v:.1} us"));
            let _ = writeln!(s, "CPU per operation: load generator {c:.1} us{servers}");
        }
        let _ = writeln!(
            s,
            "longest zero-completion window: {} from {:.2} s; longest per-client gap {}; failovers {}",
            fmt_ms(self.stall_ms),
            self.stall_start_s,
            fmt_ms(self.max_client_gap_ms),
            self.failovers
        );
        if let Some(f) = &self.fault {
            let _ = writeln!(
                s,
                "fault at {:.2} s ({}; {}): longest stall after it {} from {:.2} s",
                f.at_s,
                f.cmd,
                exit_text(f.exit),
                fmt_ms(f.stall_after_ms),
                f.stall_after_start_s
            );
        }
        if let Some(p) = &self.preload {
            let _ = writeln!(
                s,
                "preload: {} keys in {:.1} s, {} errors",
                p.keys, p.secs, p.errors
            );
        }
        if let Some(v) = &self.verify {
            let _ = writeln!(
                s,
                "verify: {} keys read back ({} with an acknowledged write): {} ok, {} lost, {} unreadable",
                v.keys, v.acked_keys, v.ok, v.lost, v.unreadable
            );
            for e in &v.examples {
                let _ = writeln!(s, "  lost: {e}");
            }
        }
        s
    }
}
