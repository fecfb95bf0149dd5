//! The report's CPU section: CPU per operation of every system in the same run, and
//! the CPU budget of a write target on this machine. With the load generator and the
//! servers sharing a few cores, a throughput target is a CPU budget per operation; the
//! section says how much of it goes before any consensus work, from parts measured in
//! the run itself.

use std::fmt::Write;

use crate::report::find;
use crate::summary::Summary;

/// The scenarios whose CPU per operation is tabled.
const SCENARIOS: [&str; 4] = ["write", "read", "mixed", "contended"];

/// Storage alone (crates/storage/examples/write_bench): durable updates per second and
/// the writer thread's CPU per update, µs — the last table row of its output.
pub fn storage_floor(text: &str) -> Option<(f64, f64)> {
    text.lines()
        .rev()
        .filter(|l| l.starts_with('|'))
        .find_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let writers: u64 = cells.first()?.parse().ok()?;
            let rate: f64 = cells.get(1)?.parse().ok()?;
            let cpu: f64 = cells.get(5)?.parse().ok()?;
            (writers > 0).then_some((rate, cpu))
        })
}

/// Cores of the machine, from the runner's machine.txt (`nproc: N`).
pub fn cores(machine: &str) -> Option<f64> {
    machine
        .lines()
        .find_map(|l| l.strip_prefix("nproc:"))
        .and_then(|n| n.trim().parse().ok())
}

fn us(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.1} µs"))
}

/// The section, from the median runs `rs` of `systems`; empty when no run measured
/// CPU (results made before the load generator did).
pub fn section(
    rs: &[Summary],
    systems: &[String],
    floor: Option<(f64, f64)>,
    cores: Option<f64>,
) -> String {
    let mut s = String::new();
    let rows: Vec<&Summary> = systems
        .iter()
        .flat_map(|sys| SCENARIOS.iter().filter_map(move |sc| find(rs, sys, sc)))
        .filter(|r| r.cpu.is_some())
        .collect();
    if rows.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "## CPU per operation, and what the cores leave for a write\n"
    );
    let _ = writeln!(
        s,
        "CPU time over each shown run's measured window, per successful operation: the \
         system's processes (user + system, from `/proc`) and the load generator's own \
         (`getrusage`).\n"
    );
    let _ = writeln!(
        s,
        "| system | scenario | ops/s | server CPU per op | load generator CPU per op |"
    );
    let _ = writeln!(s, "| --- | --- | ---: | ---: | ---: |");
    for r in &rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {} | {} |",
            r.system,
            r.scenario,
            r.throughput,
            us(r.server_cpu_us_per_op()),
            us(r.client_cpu_us_per_op())
        );
    }
    let _ = writeln!(s);
    if let Some((rate, cpu)) = floor {
        let _ = writeln!(
            s,
            "Storage alone (`write_bench --whole --per-submit 16`, the server's row shape, \
             16 updates per submission as a shard sends them): {rate:.0} durable updates/s, \
             {cpu:.2} µs of the group-commit writer's CPU per update.\n"
        );
    }
    let budget = budget_lines(rs, floor.map(|f| f.1), cores);
    if !budget.is_empty() {
        let _ = writeln!(
            s,
            "A write target is a CPU budget: the machine's cores divided by the target \
             rate. Before any consensus work a replicated write needs at least the load \
             generator (its cheapest write run here), a front end as cheap as Redis's GET \
             (read a request, answer it), and one durable update per copy at storage's \
             own floor. What is left pays for the consensus messages, the Paxos logic, \
             execution and every hand-off between threads on the three nodes; the last \
             column is what paxosstore's write run spent on them.\n"
        );
        let _ = writeln!(
            s,
            "| target | writes/s | CPU per write | before consensus | left | paxosstore spends |"
        );
        let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: |");
        s.push_str(&budget);
        let _ = writeln!(s);
    }
    s
}

/// One table row per write target whose parts the run measured.
fn budget_lines(rs: &[Summary], floor_us: Option<f64>, cores: Option<f64>) -> String {
    let mut s = String::new();
    let (Some(floor_us), Some(cores)) = (floor_us, cores) else {
        return s;
    };
    let client = rs
        .iter()
        .filter(|r| r.scenario == "write")
        .filter_map(Summary::client_cpu_us_per_op)
        .reduce(f64::min);
    let front = find(rs, "redis", "read").and_then(Summary::server_cpu_us_per_op);
    let px = find(rs, "paxosstore", "write").and_then(Summary::server_cpu_us_per_op);
    let (Some(client), Some(front), Some(px)) = (client, front, px) else {
        return s;
    };
    let storage = 3.0 * floor_us;
    let before = client + front + storage;
    for (what, base, factor) in [("0.7× Redis", "redis", 0.7), ("5× etcd", "etcd", 5.0)] {
        let Some(b) = find(rs, base, "write") else {
            continue;
        };
        let rate = factor * b.throughput;
        if rate <= 0.0 {
            continue;
        }
        let have = cores * 1e6 / rate;
        let _ = writeln!(
            s,
            "| writes ≥ {what} | {rate:.0} | {have:.1} µs | {before:.1} µs (load generator \
             {client:.1} + front end {front:.1} + 3 × {floor_us:.2}) | {:.1} µs | {:.1} µs |",
            have - before,
            px - front - storage
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuUse;

    fn run(system: &str, scenario: &str, throughput: f64, server_s: f64, client_s: f64) -> Summary {
        Summary {
            system: system.into(),
            scenario: scenario.into(),
            throughput,
            ops: (throughput * 10.0) as u64,
            cpu: Some(CpuUse {
                client_s,
                server_s: Some(server_s),
            }),
            ..Summary::default()
        }
    }

    #[test]
    fn the_floor_is_the_last_row_of_write_bench() {
        let out = "raw fdatasync (128-byte append) median: 120.2 us\n\
                   | writers | durable writes/s | fsyncs/s | updates/fsync | mean write_batch ms | writer CPU per update us | p50 ms | p99 ms |\n\
                   |---|---|---|---|---|---|---|---|\n\
                   | 8 | 157204 | 1863 | 72.4 | 0.490 | 4.09 | 0.919 | 2.190 |\n";
        assert_eq!(storage_floor(out), Some((157204.0, 4.09)));
        assert_eq!(storage_floor("| 8 | 1 | 2 | 3 | 4 | - | 5 | 6 |"), None);
        assert_eq!(cores("CPU: x\nnproc: 2\n"), Some(2.0));
    }

    #[test]
    fn the_budget_takes_what_comes_before_consensus_from_the_run() {
        // 10 s runs: redis writes 50 000/s, its GETs cost 10 µs of server CPU; the
        // cheapest load generator 10 µs per write; paxosstore's writes 100 µs.
        let rs = vec![
            run("redis", "write", 50_000.0, 6.0, 5.0),
            run("redis", "read", 100_000.0, 10.0, 10.0),
            run("etcd", "write", 5_000.0, 5.0, 1.0),
            run("paxosstore", "write", 10_000.0, 10.0, 2.0),
        ];
        let rows = budget_lines(&rs, Some(4.0), Some(2.0));
        let lines: Vec<&str> = rows.lines().collect();
        assert_eq!(lines.len(), 2, "{rows}");
        // 0.7 x 50 000 = 35 000/s: 57.1 µs per write; before consensus 10 + 10 + 12.
        assert!(lines[0].contains("| 35000 | 57.1 µs | 32.0 µs"), "{rows}");
        assert!(lines[0].ends_with("| 25.1 µs | 78.0 µs |"), "{rows}");
        // 5 x 5 000 = 25 000/s: 80 µs per write.
        assert!(lines[1].contains("| 25000 | 80.0 µs |"), "{rows}");
        // Without the storage floor, or a run without CPU figures: no budget.
        assert!(budget_lines(&rs, None, Some(2.0)).is_empty());
        let no_cpu: Vec<Summary> = rs
            .iter()
            .cloned()
            .map(|mut r| {
                r.cpu = None;
                r
            })
            .collect();
        assert!(budget_lines(&no_cpu, Some(4.0), Some(2.0)).is_empty());
        let systems: Vec<String> = vec!["redis".into(), "paxosstore".into()];
        assert!(section(&no_cpu, &systems, None, None).is_empty());
        let full = section(&rs, &systems, Some((1.0, 4.0)), Some(2.0));
        assert!(
            full.contains("| paxosstore | write | 10000 | 100.0 µs | 20.0 µs |"),
            "{full}"
        );
    }
}
