//! CPU time over the measured window: the load generator's own (getrusage) and that of
//! the system under test's processes (`--server-pids`, from `/proc/<pid>/stat`). On a
//! machine whose cores the load generator shares with the servers, CPU per operation
//! says what a throughput target costs, where ops/s alone only says what was reached.

use serde::{Deserialize, Serialize};

/// CPU seconds used during the measured window (user + system).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    /// This load generator process.
    pub client_s: f64,
    /// The processes named by `--server-pids`, all of them; `None` when none were
    /// given or one of them could not be read at either end (it exited: a failover run).
    pub server_s: Option<f64>,
}

/// One reading of the counters.
#[derive(Clone, Debug)]
pub struct Sample {
    client_s: f64,
    server_s: Option<f64>,
}

impl Sample {
    /// Reads this process's CPU time and that of `pids` (empty: none).
    pub fn take(pids: &[u32]) -> Sample {
        Sample {
            client_s: self_cpu_s(),
            server_s: if pids.is_empty() {
                None
            } else {
                pids.iter().map(|&p| proc_cpu_s(p)).sum()
            },
        }
    }

    /// What was used from `self` to `later`.
    pub fn until(&self, later: &Sample) -> CpuUse {
        CpuUse {
            client_s: (later.client_s - self.client_s).max(0.0),
            server_s: match (self.server_s, later.server_s) {
                (Some(a), Some(b)) => Some((b - a).max(0.0)),
                _ => None,
            },
        }
    }
}

/// Parses `--server-pids`: process ids separated by commas (empty: none).
pub fn parse_pids(s: &str) -> Result<Vec<u32>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u32>()
                .map_err(|_| format!("usage: --server-pids takes process ids, not {p:?}"))
        })
        .collect()
}

fn self_cpu_s() -> f64 {
    // SAFETY: getrusage writes only into the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// User + system CPU seconds of process `pid` so far, from `/proc/<pid>/stat`.
fn proc_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_cpu_ticks(&stat).map(|t| t / clock_ticks())
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks. The
/// command name (field 2) may hold spaces and parentheses, so fields count from its
/// last `)`.
fn stat_cpu_ticks(stat: &str) -> Option<f64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 1 0";
        assert_eq!(stat_cpu_ticks(line), Some(280.0));
        assert_eq!(stat_cpu_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn this_process_reads_and_a_missing_one_does_not() {
        let me = std::process::id();
        assert!(proc_cpu_s(me).is_some());
        // Pids are below 2^22 on Linux.
        let s = Sample::take(&[me, u32::MAX]);
        assert_eq!(s.server_s, None);
        let a = Sample::take(&[me]);
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let used = a.until(&Sample::take(&[me]));
        assert!(used.client_s > 0.0, "{used:?}");
        assert!(used.server_s.is_some_and(|s| s >= 0.0), "{used:?}");
    }

    #[test]
    fn pids_parse() {
        assert_eq!(parse_pids("1, 2,3"), Ok(vec![1, 2, 3]));
        assert_eq!(parse_pids(""), Ok(vec![]));
        assert!(parse_pids("1,x").is_err());
    }
}
