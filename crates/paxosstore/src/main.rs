//! `paxosstore`: `server` runs one node, `demo` a local cluster, `ctl` talks to the
//! admin port.

mod ctl;
mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The write path allocates per message and per request (frames, records, replies);
// glibc's malloc took ~15 % of the nodes' CPU under a write load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "paxosstore",
    version,
    about = "Leaderless, strongly consistent, Redis-compatible replicated store"
)]
struct Cli {
    /// Log level: error, warn, info, debug, trace (or a tracing filter).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node from its configuration file.
    Server {
        #[arg(long)]
        config: PathBuf,
    },
    /// Start a local N-node cluster on 127.0.0.1, one process per node.
    Demo {
        #[arg(long, default_value_t = 3)]
        nodes: u8,
        /// Client port of node 0; node i listens on PORT+i.
        #[arg(long, default_value_t = 7379)]
        port: u16,
        /// Durable data directory (default: a new directory under the temp dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Load generator against a cluster, Redis or etcd (see BENCHMARKS.md).
    #[command(disable_help_flag = true)]
    Bench {
        /// Options passed to the load generator (`paxosstore bench --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Operator commands against a node's admin port.
    Ctl {
        #[command(subcommand)]
        cmd: ctl::CtlCmd,
    },
}

/// The storage engine logs at INFO on every write it delays while compaction catches
/// up ("Stalling writes by 1µs"): 27 000 lines per node in a 3.7-minute run (a 3 M-key
/// preload, then writes). A plain `info`, `debug` or `trace` therefore keeps the engine at
/// `warn`; name `fjall` or `lsm_tree` in the filter to see those lines.
fn log_filter(level: &str) -> String {
    let plain = matches!(level.trim(), "info" | "debug" | "trace");
    if plain && !level.contains("fjall") && !level.contains("lsm_tree") {
        format!("{},fjall=warn,lsm_tree=warn", level.trim())
    } else {
        level.to_string()
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`, mimalloc.h v3;
/// libmimalloc-sys names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keep freed memory instead of returning it to the OS after 10 ms (mimalloc's
/// default). Returned memory comes back as fresh pages that the kernel must zero, 2 MiB
/// at a time with transparent huge pages: that zeroing was 6-10 % of a node's CPU. Not
/// returning it cut server CPU per write by 9 % and per read by 13 %, for 20-35 MiB
/// more resident memory per node (`bench/cpu_per_op.sh`, 100 k keys). Memory stays
/// bounded by the caches' budgets; `MIMALLOC_PURGE_DELAY` in the environment wins.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one option's value; the allocator reads it when it next purges.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    match cli.cmd {
        Cmd::Server { config } => run_server(config),
        Cmd::Demo {
            nodes,
            port,
            data_dir,
        } => demo::run(nodes, port, data_dir),
        Cmd::Ctl { cmd } => ctl::run(cmd),
        Cmd::Bench { args } => {
            let mut argv = vec!["paxosstore bench".to_string()];
            argv.extend(args);
            ExitCode::from(bench::cli_main(argv).clamp(0, 255) as u8)
        }
    }
}

fn run_server(path: PathBuf) -> ExitCode {
    let cfg = match server::NodeConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("paxosstore: {e}");
            return ExitCode::from(2);
        }
    };
    // One IO thread: tokio's single-threaded scheduler, which has no work stealing to
    // coordinate (reads +4-9 % at 5-10 % less CPU each on the demo's 2-core cluster,
    // BENCHMARKS.md's tenth-session notes).
    let mut builder = if cfg.io_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cfg.io_threads);
        b
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("paxosstore: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok();
    let result = rt.block_on(server::run(cfg, metrics, shutdown_signal()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(server::ServerError::Config(e)) => {
            eprintln!("paxosstore: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("paxosstore: {e}");
            ExitCode::from(1)
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn plain_levels_keep_the_storage_engine_at_warn() {
        assert_eq!(log_filter("info"), "info,fjall=warn,lsm_tree=warn");
        assert_eq!(log_filter("debug"), "debug,fjall=warn,lsm_tree=warn");
        // Quieter levels, and filters that say what they want, are left alone.
        assert_eq!(log_filter("warn"), "warn");
        assert_eq!(log_filter("info,fjall=info"), "info,fjall=info");
        assert_eq!(log_filter("server=debug"), "server=debug");
    }
}
