//! `paxosstore demo`: a local cluster, one OS process per node, each restartable by
//! hand from the configuration file written for it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use server::{MemberConfig, NodeConfig};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Shard and IO threads per node: the demo's nodes share this machine's cores, and
/// more busy threads than cores only adds context switches (on 2 cores with 3
/// nodes, 1 + 1 threads per node did 5-31 % more writes and reads per second than
/// 2 + 2, at less CPU per operation; see BENCHMARKS.md's component notes).
fn threads_per_node(nodes: u8) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / usize::from(nodes)).clamp(1, 8)
}

/// Shards on threads of their own unless each node gets a single thread (fewer than
/// two cores per node). Then they run as tasks on that one IO thread: on 2 cores with
/// 3 nodes that gave 17-30 % more reads per second at 16-26 % less CPU per read, and
/// 1-5 % more writes (`bench/cpu_per_op.sh`, BENCHMARKS.md's tenth-session notes).
/// With more threads per node that choice was not measured.
fn shard_threads(threads: usize) -> bool {
    threads > 1
}

pub fn run(nodes: u8, port: u16, data_dir: Option<PathBuf>) -> ExitCode {
    if !(3..=7).contains(&nodes) || nodes.is_multiple_of(2) {
        eprintln!("paxosstore demo: --nodes must be 3, 5 or 7");
        return ExitCode::from(2);
    }
    if port as u32 + 20_000 + nodes as u32 > 65_535 {
        eprintln!("paxosstore demo: --port too high (peer ports are PORT+10000+i, admin ports PORT+20000+i)");
        return ExitCode::from(2);
    }
    let dir = match data_dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("paxosstore-demo-{}", std::process::id())),
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("paxosstore demo: cannot create {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("paxosstore demo: cannot find own executable: {e}");
            return ExitCode::from(1);
        }
    };
    let members: Vec<MemberConfig> = (0..nodes)
        .map(|i| MemberConfig {
            id: i,
            peer: format!("127.0.0.1:{}", port as u32 + 10_000 + i as u32),
            client: Some(format!("127.0.0.1:{}", port as u32 + i as u32)),
        })
        .collect();
    let threads = threads_per_node(nodes);
    let mut children: Vec<Child> = Vec::new();
    let mut clients = Vec::new();
    for i in 0..nodes {
        let cfg = NodeConfig {
            id: i,
            client_addr: format!("127.0.0.1:{}", port as u32 + i as u32),
            peer_addr: members[i as usize].peer.clone(),
            admin_addr: format!("127.0.0.1:{}", port as u32 + 20_000 + i as u32),
            data_dir: dir.join(format!("node{i}")),
            members: members.clone(),
            shards: threads,
            shard_threads: shard_threads(threads),
            io_threads: threads,
            ..NodeConfig::default()
        };
        let path = dir.join(format!("node{i}.toml"));
        if let Err(e) = std::fs::write(&path, cfg.to_toml()) {
            eprintln!("paxosstore demo: cannot write {}: {e}", path.display());
            return stop_all(children, ExitCode::from(1));
        }
        let log = match std::fs::File::create(dir.join(format!("node{i}.log"))) {
            Ok(f) => Stdio::from(f),
            Err(_) => Stdio::null(),
        };
        match Command::new(&exe)
            .arg("server")
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
        {
            Ok(child) => {
                println!(
                    "node {i} pid {} client {} peer {} admin {}",
                    child.id(),
                    cfg.client_addr,
                    cfg.peer_addr,
                    cfg.admin_addr
                );
                children.push(child);
                clients.push(cfg.client_addr);
            }
            Err(e) => {
                eprintln!("paxosstore demo: cannot start node {i}: {e}");
                return stop_all(children, ExitCode::from(1));
            }
        }
    }
    // SAFETY: installing a handler that only stores to an atomic is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as usize);
        libc::signal(libc::SIGTERM, on_signal as *const () as usize);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    // Ready = every node answers PING and reaches a majority of its peers.
    for (i, addr) in clients.iter().enumerate() {
        let admin = format!("127.0.0.1:{}", port as u32 + 20_000 + i as u32);
        while !ping(addr) || !healthy(&admin) {
            if Instant::now() > deadline || STOP.load(Ordering::SeqCst) {
                eprintln!(
                    "paxosstore demo: node {i} did not answer on {addr}; see {}",
                    dir.join(format!("node{i}.log")).display()
                );
                return stop_all(children, ExitCode::from(1));
            }
            if let Ok(Some(status)) = children[i].try_wait() {
                eprintln!(
                    "paxosstore demo: node {i} exited ({status}); see {}",
                    dir.join(format!("node{i}.log")).display()
                );
                return stop_all(children, ExitCode::from(1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    println!(
        "ready: {} nodes serving; data and configs in {}",
        nodes,
        dir.display()
    );
    println!(
        "try: redis-cli -p {port} SET k v && redis-cli -p {} GET k   (Ctrl-C stops the cluster)",
        port + 1
    );
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("stopping");
    stop_all(children, ExitCode::SUCCESS)
}

fn ping(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(s.read_exact(&mut buf), Ok(())) && &buf == b"+PONG\r\n"
}

fn healthy(admin: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(admin) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(s.read_exact(&mut buf), Ok(())) && buf.ends_with(b"200")
}

fn stop_all(mut children: Vec<Child>, code: ExitCode) -> ExitCode {
    for c in &children {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for c in &mut children {
        loop {
            match c.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
            }
        }
    }
    code
}
