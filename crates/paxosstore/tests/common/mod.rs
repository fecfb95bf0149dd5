//! Shared harness of the real-process tests: free ports, a tiny RESP client on std
//! `TcpStream`, HTTP GET, and a 3-node cluster of `paxosstore server` processes.
//! Not every test binary uses every item.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};

use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_paxosstore");
pub const N: usize = 3;

// ---------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------

/// Poll `f` until it returns `Ok`, or panic after `secs` with `what` and the last
/// `Err` seen.
pub fn poll<T>(secs: u64, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut pause = Duration::from_millis(5);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("timed out after {secs}s waiting for {what}; last: {e}")
            }
            Err(_) => {
                // Back-off between polls; this is pacing, not synchronisation.
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
    }
}

/// Wait for a child to exit, at most `secs`.
pub fn wait_exit(child: &mut Child, secs: u64) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/// `n` distinct free ports: bind port 0 `n` times at once, then release them. Ports
/// handed out earlier in this test process are never handed out again, so tests
/// running in parallel cannot pick each other's ports.
pub fn free_ports(n: usize) -> Vec<u16> {
    static USED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut used = USED.lock().unwrap_or_else(|e| e.into_inner());
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let p = l.local_addr().unwrap().port();
        held.push(l);
        if used.insert(p) {
            ports.push(p);
        }
    }
    ports
}

// ---------------------------------------------------------------------------
// RESP client
// ---------------------------------------------------------------------------

#[derive(Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// Bulk strings shown as (lossy) text, so failure messages are readable.
impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Simple(s) => write!(f, "+{s}"),
            Reply::Error(e) => write!(f, "-{e}"),
            Reply::Int(i) => write!(f, ":{i}"),
            Reply::Bulk(None) => write!(f, "nil"),
            Reply::Bulk(Some(b)) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Reply::Array(None) => write!(f, "*nil"),
            Reply::Array(Some(v)) => f.debug_list().entries(v).finish(),
        }
    }
}

impl Reply {
    pub fn is_ok(&self) -> bool {
        *self == Reply::Simple("OK".into())
    }
    pub fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(s.as_bytes().to_vec()))
    }
}

pub struct Resp {
    pub w: TcpStream,
    pub r: BufReader<TcpStream>,
}

impl Resp {
    pub fn connect(addr: &str) -> std::io::Result<Resp> {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        s.set_nodelay(true)?;
        Ok(Resp {
            r: BufReader::new(s.try_clone()?),
            w: s,
        })
    }

    /// Send one command as an array of bulk strings and read one reply.
    pub fn cmd(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.w.write_all(&out)?;
        read_reply(&mut self.r)
    }

    pub fn cmds(&mut self, args: &[&str]) -> std::io::Result<Reply> {
        let v: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.cmd(&v)
    }
}

pub fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

pub fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    if !line.ends_with(b"\r\n") {
        return Err(bad(format!("unterminated line {line:?}")));
    }
    line.truncate(line.len() - 2);
    let text = String::from_utf8_lossy(&line[1..]).into_owned();
    let num = || -> std::io::Result<i64> {
        text.parse::<i64>()
            .map_err(|_| bad(format!("bad number {text:?}")))
    };
    Ok(match line[0] {
        b'+' => Reply::Simple(text.clone()),
        b'-' => Reply::Error(text.clone()),
        b':' => Reply::Int(num()?),
        b'$' => {
            let n = num()?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let mut buf = vec![0u8; n as usize + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(n as usize);
                Reply::Bulk(Some(buf))
            }
        }
        b'*' => {
            let n = num()?;
            if n < 0 {
                Reply::Array(None)
            } else {
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(read_reply(r)?);
                }
                Reply::Array(Some(v))
            }
        }
        t => return Err(bad(format!("unexpected reply type {:?}", t as char))),
    })
}

/// One command on a fresh connection.
pub fn once(addr: &str, args: &[&str]) -> Result<Reply, String> {
    Resp::connect(addr)
        .and_then(|mut c| c.cmds(args))
        .map_err(|e| format!("{addr}: {e}"))
}

pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("malformed HTTP response {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    Ok((code, body.to_string()))
}

// ---------------------------------------------------------------------------
// Cluster of real processes
// ---------------------------------------------------------------------------

pub struct NodeAddrs {
    pub client: String,
    pub peer: String,
    pub admin: String,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeAddrs>,
    pub children: Vec<Option<Child>>,
}

impl Cluster {
    /// Write three configs and start three `server` processes; wait until every node
    /// answers PING and sees both peers. Retries on fresh ports if a port was taken.
    pub fn start() -> Cluster {
        Cluster::start_with("")
    }

    /// As [`Cluster::start`], with `extra` appended to every node's top-level config.
    pub fn start_with(extra: &str) -> Cluster {
        for attempt in 0.. {
            let mut c = Cluster::configure(extra);
            for i in 0..N {
                c.spawn(i);
            }
            match c.try_wait_ping_all(20) {
                Ok(()) => {
                    c.wait_connected_all(20);
                    return c;
                }
                Err(e) if attempt < 2 && e.contains("in use") => {
                    eprintln!("port collision, retrying on new ports: {e}");
                    c.kill_all();
                }
                Err(e) => panic!("cluster did not start: {e}"),
            }
        }
        unreachable!()
    }

    pub fn configure(extra: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = free_ports(3 * N);
        let nodes: Vec<NodeAddrs> = (0..N)
            .map(|i| NodeAddrs {
                client: format!("127.0.0.1:{}", ports[i]),
                peer: format!("127.0.0.1:{}", ports[N + i]),
                admin: format!("127.0.0.1:{}", ports[2 * N + i]),
            })
            .collect();
        let mut members = String::new();
        for (i, n) in nodes.iter().enumerate() {
            members.push_str(&format!("\n[[members]]\nid = {i}\npeer = \"{}\"\n", n.peer));
        }
        // Two shards and two IO threads unless `extra` says otherwise (a key given
        // twice would be a config error).
        let threads: String = ["shards", "io_threads"]
            .iter()
            .filter(|k| {
                !extra
                    .lines()
                    .any(|l| l.split('=').next().map(str::trim) == Some(**k))
            })
            .map(|k| format!("{k} = 2\n"))
            .collect();
        for (i, n) in nodes.iter().enumerate() {
            let toml = format!(
                "id = {i}\n\
                 cluster_id = 7\n\
                 client_addr = \"{}\"\n\
                 peer_addr = \"{}\"\n\
                 admin_addr = \"{}\"\n\
                 data_dir = \"{}\"\n\
                 {threads}\
                 {extra}\n\
                 {members}",
                n.client,
                n.peer,
                n.admin,
                dir.path().join(format!("node{i}")).display()
            );
            std::fs::write(dir.path().join(format!("node{i}.toml")), toml).unwrap();
        }
        Cluster {
            dir,
            nodes,
            children: (0..N).map(|_| None).collect(),
        }
    }

    pub fn config_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}.toml"))
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}.log"))
    }

    /// Start node `i` from its config file; its stderr is appended to its log.
    pub fn spawn(&mut self, i: usize) {
        assert!(self.children[i].is_none(), "node {i} already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .unwrap();
        let child = Command::new(BIN)
            .arg("server")
            .arg("--config")
            .arg(self.config_path(i))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn paxosstore server");
        self.children[i] = Some(child);
    }

    pub fn pid(&self, i: usize) -> libc::pid_t {
        self.children[i].as_ref().expect("node running").id() as libc::pid_t
    }

    /// SIGKILL node `i` and reap it.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn kill_all(&mut self) {
        for i in 0..N {
            self.kill9(i);
        }
    }

    pub fn client(&self, i: usize) -> &str {
        &self.nodes[i].client
    }

    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(25)..].join("\n")
    }

    /// Wait until node `i` answers PING; fail early if it exits.
    pub fn try_wait_ping(&mut self, i: usize, secs: u64) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let addr = self.nodes[i].client.clone();
        loop {
            if let Ok(Reply::Simple(s)) = once(&addr, &["PING"]) {
                if s == "PONG" {
                    return Ok(());
                }
            }
            if let Some(c) = self.children[i].as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.children[i] = None;
                    return Err(format!("node {i} exited ({st}): {}", self.log_tail(i)));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("node {i} did not answer PING on {addr} in {secs}s"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn try_wait_ping_all(&mut self, secs: u64) -> Result<(), String> {
        (0..N).try_for_each(|i| self.try_wait_ping(i, secs))
    }

    pub fn wait_ping(&mut self, i: usize, secs: u64) {
        if let Err(e) = self.try_wait_ping(i, secs) {
            panic!("{e}");
        }
    }

    /// Peers node `i` has every connection to (`up(n)` with n its configured
    /// channels per peer): only then does it forward writes to them.
    pub fn peers_up(&self, i: usize) -> Result<usize, String> {
        let (code, body) = http_get(&self.nodes[i].admin, "/status.json")?;
        if code != 200 {
            return Err(format!("status {code}"));
        }
        Ok(body
            .matches(&format!("\"state\":\"up({})", self.channels_per_peer(i)))
            .count())
    }

    /// Node `i`'s connections per peer, from its config file: `channels_per_peer`,
    /// else `io_threads`, else the server's default (2).
    fn channels_per_peer(&self, i: usize) -> usize {
        let text = std::fs::read_to_string(self.config_path(i)).unwrap_or_default();
        let setting = |key: &str| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == key).then(|| v.trim().parse::<usize>().ok())?
            })
        };
        match setting("channels_per_peer") {
            Some(n) if n > 0 => n,
            _ => setting("io_threads").unwrap_or(2),
        }
    }

    /// Wait until every running node sees every other running node.
    pub fn wait_connected_all(&self, secs: u64) {
        let running: Vec<usize> = (0..N).filter(|&i| self.children[i].is_some()).collect();
        for &i in &running {
            poll(secs, &format!("node {i} to see its peers"), || {
                match self.peers_up(i)? {
                    n if n + 1 >= running.len() => Ok(()),
                    n => Err(format!("{n} peers up")),
                }
            });
        }
    }

    /// `ctl status --addr <admin of i>`: exit code and stdout.
    pub fn ctl_status(&self, i: usize) -> (Option<i32>, String) {
        let out = Command::new(BIN)
            .args(["ctl", "status", "--addr", &self.nodes[i].admin])
            .output()
            .expect("run ctl status");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if thread::panicking() {
            for i in 0..N {
                eprintln!(
                    "---- node {i} log ({}) ----\n{}",
                    self.log_path(i).display(),
                    self.log_tail(i)
                );
            }
        }
        self.kill_all();
    }
}

/// SET on `addr`, retrying errors (e.g. CLUSTERDOWN while peers connect) until
/// `secs`. Panics on a reply other than +OK or an error.
pub fn set_retry(addr: &str, key: &str, value: &str, secs: u64) {
    poll(secs, &format!("SET {key} on {addr}"), || {
        match once(addr, &["SET", key, value])? {
            r if r.is_ok() => Ok(()),
            Reply::Error(e) => Err(e),
            other => panic!("SET {key}: unexpected reply {other:?}"),
        }
    })
}

pub fn get(c: &mut Resp, key: &str) -> Reply {
    c.cmds(&["GET", key]).expect("GET")
}
