//! PNG plots from the JSON results of a side-by-side run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use plotters::prelude::*;

use crate::summary::Summary;

#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// Directory holding the run's *.json results.
    #[arg(long, default_value = "bench/results")]
    pub results: PathBuf,
    /// Where to write the PNG files (default: the results directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A TrueType font for the labels.
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    pub font: PathBuf,
}

/// Loads every result JSON in `dir`, sorted by file name.
pub fn load_results(dir: &Path) -> Result<Vec<Summary>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(&f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        match serde_json::from_str::<Summary>(&text) {
            Ok(s) => out.push(s),
            Err(e) => eprintln!("skipping {}: {e}", f.display()),
        }
    }
    Ok(out)
}

/// Repeated runs of one (system, scenario) reduced to one: the run with the median
/// throughput (of an even count, the lower middle), at the place of the first run.
/// The runner repeats its main scenarios (`REPEAT`): identical runs on this kind of
/// machine differ by up to 20 %, and a single run decided ratios by chance.
pub fn median_runs(rs: &[Summary]) -> Vec<Summary> {
    let mut out: Vec<Summary> = Vec::new();
    for (i, r) in rs.iter().enumerate() {
        let same = |o: &Summary| o.system == r.system && o.scenario == r.scenario;
        if rs[..i].iter().any(same) {
            continue;
        }
        let mut runs: Vec<&Summary> = rs.iter().filter(|o| same(o)).collect();
        runs.sort_by(|a, b| a.throughput.total_cmp(&b.throughput));
        out.push(runs[(runs.len() - 1) / 2].clone());
    }
    out
}

/// For every (system, scenario) run more than once: its throughputs in run order.
pub fn repeated(rs: &[Summary]) -> Vec<(String, String, Vec<f64>)> {
    let mut out: Vec<(String, String, Vec<f64>)> = Vec::new();
    for r in rs {
        match out
            .iter_mut()
            .find(|(sys, sc, _)| *sys == r.system && *sc == r.scenario)
        {
            Some((_, _, t)) => t.push(r.throughput),
            None => out.push((r.system.clone(), r.scenario.clone(), vec![r.throughput])),
        }
    }
    out.retain(|(_, _, t)| t.len() > 1);
    out
}

/// The workload a scenario name belongs to: `write-c8` -> (`write`, Some(8)).
pub fn base_scenario(s: &str) -> (&str, Option<usize>) {
    if let Some((base, c)) = s.rsplit_once("-c") {
        if let Ok(n) = c.parse() {
            return (base, Some(n));
        }
    }
    (s, None)
}

pub fn system_order(s: &str) -> usize {
    match s {
        "paxosstore" => 0,
        "paxosstore-slots" => 0,
        "etcd" => 1,
        "redis" => 2,
        _ => 3,
    }
}

fn color(system: &str, variant: usize) -> RGBColor {
    let base = match system {
        "paxosstore" => [(31, 119, 180), (120, 180, 230)],
        "paxosstore-slots" => [(148, 103, 189), (197, 176, 213)],
        "etcd" => [(214, 39, 40), (240, 140, 120)],
        "redis" => [(44, 160, 44), (140, 210, 120)],
        _ => [(100, 100, 100), (170, 170, 170)],
    };
    let (r, g, b) = base[variant.min(1)];
    RGBColor(r, g, b)
}

fn load_font(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read font {} ({e}); install fonts-dejavu-core or pass --font",
            path.display()
        )
    })?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    for name in ["sans-serif", "serif", "monospace"] {
        plotters::style::register_font(name, FontStyle::Normal, bytes)
            .map_err(|_| format!("{} is not a usable font", path.display()))?;
    }
    Ok(())
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn throughput_vs_clients(results: &[Summary], out: &Path) -> DrawResult {
    // (system, workload) -> clients -> ops/s
    let mut series: BTreeMap<(usize, String, String), BTreeMap<usize, f64>> = BTreeMap::new();
    for s in results {
        let (base, _) = base_scenario(&s.scenario);
        if base == "write" || base == "read" {
            series
                .entry((system_order(&s.system), s.system.clone(), base.to_string()))
                .or_default()
                .insert(s.clients, s.throughput);
        }
    }
    if series.is_empty() {
        return Ok(());
    }
    let max_y = series
        .values()
        .flat_map(|m| m.values())
        .cloned()
        .fold(1.0, f64::max)
        * 1.1;
    let max_x = series
        .values()
        .flat_map(|m| m.keys())
        .cloned()
        .max()
        .unwrap_or(64)
        .max(2) as f64;
    let root = BitMapBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput vs clients (100-byte values)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0.8f64..max_x * 1.25).log_scale(), 0f64..max_y)?;
    chart
        .configure_mesh()
        .x_desc("clients (log scale)")
        .y_desc("ops/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for ((_, system, workload), pts) in &series {
        let c = color(system, if workload == "write" { 0 } else { 1 });
        let data: Vec<(f64, f64)> = pts.iter().map(|(&x, &y)| (x as f64, y)).collect();
        chart
            .draw_series(LineSeries::new(data.clone(), c.stroke_width(2)))?
            .label(format!("{system} {workload}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(data.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn latency_cdf(results: &[Summary], scenario: &str, out: &Path) -> DrawResult {
    let mut runs: Vec<&Summary> = results
        .iter()
        .filter(|s| s.scenario == scenario && !s.cdf.is_empty())
        .collect();
    if runs.is_empty() {
        return Ok(());
    }
    runs.sort_by_key(|s| system_order(&s.system));
    let min_x = runs
        .iter()
        .flat_map(|s| s.cdf.iter().map(|p| p.1))
        .min()
        .unwrap_or(1)
        .max(1) as f64
        / 1000.0;
    let max_x = runs
        .iter()
        .flat_map(|s| s.cdf.iter().map(|p| p.1))
        .max()
        .unwrap_or(1000)
        .max(2) as f64
        / 1000.0;
    let root = BitMapBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Latency CDF: {scenario} ({} clients)", runs[0].clients),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((min_x * 0.8..max_x * 1.25).log_scale(), 0f64..100.5f64)?;
    chart
        .configure_mesh()
        .x_desc("latency, ms (log scale)")
        .y_desc("percentile")
        .x_label_formatter(&|x| {
            if *x >= 1.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.2}")
            }
        })
        .draw()?;
    for s in runs {
        let c = color(&s.system, 0);
        let data: Vec<(f64, f64)> = s
            .cdf
            .iter()
            .map(|&(p, us)| ((us.max(1)) as f64 / 1000.0, p))
            .collect();
        chart
            .draw_series(LineSeries::new(data, c.stroke_width(2)))?
            .label(format!(
                "{} (p50 {:.2} ms, p99 {:.2} ms)",
                s.system,
                s.latency.p50_us as f64 / 1000.0,
                s.latency.p99_us as f64 / 1000.0
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn failover_timeline(results: &[Summary], out: &Path) -> DrawResult {
    let mut runs: Vec<&Summary> = results
        .iter()
        .filter(|s| s.scenario == "failover" && !s.timeline.is_empty())
        .collect();
    if runs.is_empty() {
        return Ok(());
    }
    runs.sort_by_key(|s| system_order(&s.system));
    let scale = |s: &Summary| 1000.0 / s.timeline_bucket_ms.max(1) as f64;
    let max_y = runs
        .iter()
        .flat_map(|s| s.timeline.iter().map(move |&v| v as f64 * scale(s)))
        .fold(1.0, f64::max)
        * 1.1;
    let max_x = runs.iter().map(|s| s.measured_s).fold(1.0, f64::max);
    let root = BitMapBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Failover: completions per 100 ms (as ops/s); one node killed",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_x, 0f64..max_y)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("ops/s")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for s in runs {
        let c = color(&s.system, 0);
        let b = s.timeline_bucket_ms as f64 / 1000.0;
        let data: Vec<(f64, f64)> = s
            .timeline
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as f64 * b + b / 2.0, v as f64 * scale(s)))
            .collect();
        let stall = s
            .fault
            .as_ref()
            .map(|f| f.stall_after_ms)
            .unwrap_or(s.stall_ms);
        chart
            .draw_series(LineSeries::new(data, c.stroke_width(2)))?
            .label(format!(
                "{} (longest stall after kill {:.0} ms)",
                s.system, stall
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        if let Some(f) = &s.fault {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(f.at_s, 0.0), (f.at_s, max_y)],
                c.mix(0.6).stroke_width(1),
            )))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Draws every plot; returns the files written.
pub fn draw_all(results: &[Summary], out: &Path, font: &Path) -> Result<Vec<PathBuf>, String> {
    load_font(font)?;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut written = Vec::new();
    let mut go = |name: &str, f: &dyn Fn(&Path) -> DrawResult| -> Result<(), String> {
        let p = out.join(name);
        f(&p).map_err(|e| format!("{name}: {e}"))?;
        if p.exists() {
            written.push(p);
        }
        Ok(())
    };
    go("throughput_vs_clients.png", &|p| {
        throughput_vs_clients(results, p)
    })?;
    for sc in ["write", "read", "mixed", "contended"] {
        go(&format!("latency_cdf_{sc}.png"), &|p| {
            latency_cdf(results, sc, p)
        })?;
    }
    go("failover_timeline.png", &|p| failover_timeline(results, p))?;
    Ok(written)
}

pub fn run(a: PlotArgs) -> i32 {
    let results = match load_results(&a.results) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("paxosstore bench plot: {e}");
            return 1;
        }
    };
    let results = median_runs(&results);
    let out = a.out.clone().unwrap_or_else(|| a.results.clone());
    match draw_all(&results, &out, &a.font) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            0
        }
        Err(e) => {
            eprintln!("paxosstore bench plot: {e}");
            1
        }
    }
}
