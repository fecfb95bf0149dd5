//! The clusters the harness drives: real processes on 127.0.0.1 (peers connect
//! through [`crate::proxy`]) or containers on a user-defined Docker network.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use crate::proxy::{self, Link};

/// What the nemesis can do to a cluster. Methods block (call them from
/// `block_in_place`); errors are harness failures, not findings.
pub trait Backend: Send {
    fn n(&self) -> usize;
    /// The client (Redis protocol) address of node `i`.
    fn client_addr(&self, i: usize) -> String;
    /// SIGKILL node `i` (no-op if it is not running).
    fn kill(&mut self, i: usize) -> Result<(), String>;
    /// Start node `i` again from its config and data directory.
    fn start(&mut self, i: usize) -> Result<(), String>;
    /// Whether node `i`'s process/container is running (a paused one is).
    fn running(&mut self, i: usize) -> bool;
    fn pause(&mut self, i: usize) -> Result<(), String>;
    fn resume(&mut self, i: usize) -> Result<(), String>;
    /// Block delivery for each `(from, to)`; everything else flows.
    fn set_partition(&mut self, blocked: &BTreeSet<(usize, usize)>) -> Result<(), String>;
    /// Cut node `i` off the network entirely (containers: `docker network
    /// disconnect`); `false` heals. Processes use [`Backend::set_partition`].
    fn isolate(&mut self, i: usize, on: bool) -> Result<(), String>;
    /// Set node `i`'s clock offset (ms) through the test-only offset file.
    fn set_clock(&mut self, i: usize, offset_ms: i64) -> Result<(), String>;
    /// Whether disk-full faults can be injected (a tmpfs per node).
    fn can_fill_disk(&self) -> bool;
    fn fill_disk(&mut self, i: usize) -> Result<(), String>;
    fn free_disk(&mut self, i: usize) -> Result<(), String>;
    /// Kill node `i`, delete its data directory, restart it with `rejoin = true`.
    fn wipe_and_rejoin(&mut self, i: usize) -> Result<(), String>;
    /// Copy logs into the run directory; stop and remove everything.
    fn teardown(&mut self);
}

/// Files common to both backends, under the run directory.
struct Layout {
    dir: PathBuf,
    tmpfs: bool,
    /// Extra lines for every node's config (`--server-config`).
    extra: String,
}

impl Layout {
    fn disk(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{i}-disk"))
    }
    fn data(&self, i: usize) -> PathBuf {
        self.disk(i).join("data")
    }
    fn filler(&self, i: usize) -> PathBuf {
        self.disk(i).join("filler")
    }
    fn clock_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{i}-clock"))
    }
    fn config(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{i}.toml"))
    }
    fn log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{i}.log"))
    }

    /// Create the per-node directories; mount a tmpfs on each disk when allowed.
    fn prepare(dir: &Path, n: usize, want_tmpfs: bool) -> Result<Layout, String> {
        let mut l = Layout {
            dir: dir.to_path_buf(),
            tmpfs: false,
            extra: String::new(),
        };
        for i in 0..n {
            fs::create_dir_all(l.disk(i)).map_err(|e| format!("mkdir: {e}"))?;
            fs::create_dir_all(l.clock_dir(i)).map_err(|e| format!("mkdir: {e}"))?;
            fs::write(l.clock_dir(i).join("offset"), "0").map_err(|e| e.to_string())?;
        }
        if want_tmpfs {
            let mut ok = true;
            for i in 0..n {
                let st = Command::new("mount")
                    .args(["-t", "tmpfs", "-o", "size=1g", "tmpfs"])
                    .arg(l.disk(i))
                    .stderr(Stdio::null())
                    .status();
                if !matches!(st, Ok(s) if s.success()) {
                    ok = false;
                    break;
                }
            }
            if ok {
                l.tmpfs = true;
            } else {
                l.unmount(n);
                println!("SKIP: disk-full faults (mounting a tmpfs is not permitted here)");
            }
        }
        for i in 0..n {
            fs::create_dir_all(l.data(i)).map_err(|e| format!("mkdir: {e}"))?;
        }
        Ok(l)
    }

    fn unmount(&self, n: usize) {
        for i in 0..n {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.disk(i))
                .stderr(Stdio::null())
                .status();
        }
    }

    fn fill(&self, i: usize) -> Result<(), String> {
        use std::io::Write;
        let mut f = fs::File::create(self.filler(i)).map_err(|e| format!("filler: {e}"))?;
        let chunk = vec![0u8; 1 << 20];
        // Write until the file system is full (ENOSPC ends the loop).
        while f.write_all(&chunk).is_ok() {}
        let small = vec![0u8; 4096];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
        Ok(())
    }

    fn free(&self, i: usize) -> Result<(), String> {
        match fs::remove_file(self.filler(i)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("remove filler: {e}")),
        }
    }

    fn set_clock(&self, i: usize, offset_ms: i64) -> Result<(), String> {
        // Written in place (the file may be bind-mounted into a container).
        fs::write(self.clock_dir(i).join("offset"), offset_ms.to_string())
            .map_err(|e| format!("clock offset: {e}"))
    }

    fn wipe(&self, i: usize) -> Result<(), String> {
        // Remove the contents, keep the directory (it may be bind-mounted).
        let d = self.data(i);
        let entries = fs::read_dir(&d).map_err(|e| format!("wipe {}: {e}", d.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            let r = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            r.map_err(|e| format!("wipe {}: {e}", p.display()))?;
        }
        self.free(i)
    }
}

/// One node's config file. `members[j]` is the address node `i` dials for `j`.
#[allow(clippy::too_many_arguments)]
fn config_toml(
    i: usize,
    client: &str,
    peer: &str,
    admin: &str,
    data: &str,
    members: &[String],
    rejoin: bool,
    extra: &str,
) -> String {
    // Two shards and two IO threads unless `extra` sets them (a key given twice
    // would be a config error).
    let threads: String = ["shards", "io_threads"]
        .iter()
        .filter(|k| {
            !extra
                .lines()
                .any(|l| l.split('=').next().map(str::trim) == Some(**k))
        })
        .map(|k| format!("{k} = 2\n"))
        .collect();
    let mut s = format!(
        "id = {i}\ncluster_id = 9\nclient_addr = \"{client}\"\npeer_addr = \"{peer}\"\n\
         admin_addr = \"{admin}\"\ndata_dir = \"{data}\"\n{threads}\
         check_peer_source = false\nop_timeout_ms = 2000\nrejoin = {rejoin}\n{extra}"
    );
    for (j, m) in members.iter().enumerate() {
        s.push_str(&format!("\n[[members]]\nid = {j}\npeer = \"{m}\"\n"));
    }
    s
}

/// `n` free ports, still bound (drop the listeners just before the nodes start, so
/// that nothing else — the proxies included — is handed them meanwhile).
fn free_ports(n: usize) -> Result<(Vec<u16>, Vec<std::net::TcpListener>), String> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..n {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        ports.push(l.local_addr().map_err(|e| e.to_string())?.port());
        held.push(l);
    }
    Ok((ports, held))
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

pub struct ProcessCluster {
    n: usize,
    bin: PathBuf,
    layout: Layout,
    client: Vec<String>,
    peer: Vec<String>,
    admin: Vec<String>,
    links: Vec<Arc<Link>>,
    children: Vec<Option<Child>>,
    rejoin: Vec<bool>,
    blocked: BTreeSet<(usize, usize)>,
    isolated: BTreeSet<usize>,
}

impl ProcessCluster {
    /// Create the layout, proxies and configs, and start every node. Call inside a
    /// tokio runtime (the proxies are tasks).
    pub async fn create(
        dir: &Path,
        n: usize,
        bin: &Path,
        extra: &str,
    ) -> Result<ProcessCluster, String> {
        let mut layout = Layout::prepare(dir, n, true)?;
        layout.extra = extra.to_string();
        let (ports, held) = free_ports(3 * n)?;
        let client: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{}", ports[i])).collect();
        let peer: Vec<String> = (0..n)
            .map(|i| format!("127.0.0.1:{}", ports[n + i]))
            .collect();
        let admin: Vec<String> = (0..n)
            .map(|i| format!("127.0.0.1:{}", ports[2 * n + i]))
            .collect();
        let mut links = Vec::new();
        let mut via = vec![vec![String::new(); n]; n];
        for i in 0..n {
            for j in 0..n {
                if i == j {
                    via[i][j] = peer[i].clone();
                    continue;
                }
                let l = proxy::start(i, j, peer[j].clone())
                    .await
                    .map_err(|e| format!("proxy {i}->{j}: {e}"))?;
                via[i][j] = format!("127.0.0.1:{}", l.listen_port);
                links.push(l);
            }
        }
        let mut c = ProcessCluster {
            n,
            bin: bin.to_path_buf(),
            layout,
            client,
            peer,
            admin,
            links,
            children: (0..n).map(|_| None).collect(),
            rejoin: vec![false; n],
            blocked: BTreeSet::new(),
            isolated: BTreeSet::new(),
        };
        for (i, members) in via.iter().enumerate() {
            c.write_config(i, members)?;
        }
        drop(held);
        for i in 0..n {
            c.start(i)?;
        }
        Ok(c)
    }

    fn write_config(&self, i: usize, members: &[String]) -> Result<(), String> {
        let toml = config_toml(
            i,
            &self.client[i],
            &self.peer[i],
            &self.admin[i],
            &self.layout.data(i).display().to_string(),
            members,
            self.rejoin[i],
            &self.layout.extra,
        );
        fs::write(self.layout.config(i), toml).map_err(|e| format!("config: {e}"))
    }

    fn members_of(&self, i: usize) -> Vec<String> {
        (0..self.n)
            .map(|j| {
                if i == j {
                    self.peer[i].clone()
                } else {
                    let l = self.links.iter().find(|l| l.from == i && l.to == j);
                    l.map_or_else(String::new, |l| format!("127.0.0.1:{}", l.listen_port))
                }
            })
            .collect()
    }

    fn signal(&self, i: usize, sig: libc::c_int) -> Result<(), String> {
        let Some(c) = self.children[i].as_ref() else {
            return Ok(());
        };
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(c.id() as libc::pid_t, sig) };
        if rc == 0 {
            Ok(())
        } else {
            Err(format!(
                "kill({sig}) node {i}: {}",
                std::io::Error::last_os_error()
            ))
        }
    }

    fn apply_links(&self) {
        let mut all = self.blocked.clone();
        for &i in &self.isolated {
            for j in 0..self.n {
                if i != j {
                    all.insert((i, j));
                    all.insert((j, i));
                }
            }
        }
        proxy::apply(&self.links, &all);
    }
}

impl Backend for ProcessCluster {
    fn n(&self) -> usize {
        self.n
    }
    fn client_addr(&self, i: usize) -> String {
        self.client[i].clone()
    }
    fn kill(&mut self, i: usize) -> Result<(), String> {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }
    fn start(&mut self, i: usize) -> Result<(), String> {
        if self.running(i) {
            return Ok(());
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.layout.log(i))
            .map_err(|e| format!("log: {e}"))?;
        let child = Command::new(&self.bin)
            .arg("server")
            .arg("--config")
            .arg(self.layout.config(i))
            .env(
                "PAXOSSTORE_CLOCK_OFFSET_FILE",
                self.layout.clock_dir(i).join("offset"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        self.children[i] = Some(child);
        Ok(())
    }
    fn running(&mut self, i: usize) -> bool {
        match self.children[i].as_mut() {
            None => false,
            Some(c) => match c.try_wait() {
                Ok(None) => true,
                _ => {
                    self.children[i] = None;
                    false
                }
            },
        }
    }
    fn pause(&mut self, i: usize) -> Result<(), String> {
        self.signal(i, libc::SIGSTOP)
    }
    fn resume(&mut self, i: usize) -> Result<(), String> {
        self.signal(i, libc::SIGCONT)
    }
    fn set_partition(&mut self, blocked: &BTreeSet<(usize, usize)>) -> Result<(), String> {
        self.blocked = blocked.clone();
        self.apply_links();
        Ok(())
    }
    fn isolate(&mut self, i: usize, on: bool) -> Result<(), String> {
        if on {
            self.isolated.insert(i);
        } else {
            self.isolated.remove(&i);
        }
        self.apply_links();
        Ok(())
    }
    fn set_clock(&mut self, i: usize, offset_ms: i64) -> Result<(), String> {
        self.layout.set_clock(i, offset_ms)
    }
    fn can_fill_disk(&self) -> bool {
        self.layout.tmpfs
    }
    fn fill_disk(&mut self, i: usize) -> Result<(), String> {
        self.layout.fill(i)
    }
    fn free_disk(&mut self, i: usize) -> Result<(), String> {
        self.layout.free(i)
    }
    fn wipe_and_rejoin(&mut self, i: usize) -> Result<(), String> {
        self.kill(i)?;
        self.layout.wipe(i)?;
        self.rejoin[i] = true;
        let members = self.members_of(i);
        self.write_config(i, &members)?;
        self.start(i)
    }
    fn teardown(&mut self) {
        for i in 0..self.n {
            let _ = self.resume(i);
            let _ = self.kill(i);
        }
        let _ = &self.admin;
        self.layout.unmount(self.n);
    }
}

// ---------------------------------------------------------------------------
// Containers
// ---------------------------------------------------------------------------

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether a Docker engine answers.
pub fn docker_available() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub struct DockerCluster {
    n: usize,
    image: String,
    layout: Layout,
    net: String,
    names: Vec<String>,
    ips: Vec<String>,
    rejoin: Vec<bool>,
    disconnected: BTreeSet<usize>,
    has_rules: BTreeSet<usize>,
}

impl DockerCluster {
    /// Create a network (subnet `172.31.<octet>.0/24`) and one container per node.
    pub fn create(
        dir: &Path,
        n: usize,
        image: &str,
        tag: &str,
        extra: &str,
    ) -> Result<DockerCluster, String> {
        let mut layout = Layout::prepare(dir, n, true)?;
        layout.extra = extra.to_string();
        let net = format!("pxj-{tag}");
        let octet = (std::process::id() % 200) as usize + 20;
        let ips: Vec<String> = (0..n)
            .map(|i| format!("172.31.{octet}.{}", 10 + i))
            .collect();
        let _ = docker(&["network", "rm", &net]);
        docker(&[
            "network",
            "create",
            "--subnet",
            &format!("172.31.{octet}.0/24"),
            &net,
        ])?;
        let names: Vec<String> = (0..n).map(|i| format!("pxj-{tag}-n{i}")).collect();
        let mut c = DockerCluster {
            n,
            image: image.to_string(),
            layout,
            net,
            names,
            ips,
            rejoin: vec![false; n],
            disconnected: BTreeSet::new(),
            has_rules: BTreeSet::new(),
        };
        for i in 0..n {
            c.write_config(i)?;
            let _ = docker(&["rm", "-f", &c.names[i]]);
            let cfg = format!(
                "{}:/etc/paxosstore/node.toml:ro",
                c.layout.config(i).display()
            );
            let data = format!("{}:/data", c.layout.data(i).display());
            let clock = format!("{}:/clock", c.layout.clock_dir(i).display());
            docker(&[
                "create",
                "--name",
                &c.names[i],
                "--network",
                &c.net,
                "--ip",
                &c.ips[i],
                "-v",
                &cfg,
                "-v",
                &data,
                "-v",
                &clock,
                "-e",
                "PAXOSSTORE_CLOCK_OFFSET_FILE=/clock/offset",
                &c.image,
            ])?;
        }
        for i in 0..n {
            c.start(i)?;
        }
        Ok(c)
    }

    fn write_config(&self, i: usize) -> Result<(), String> {
        let members: Vec<String> = self.ips.iter().map(|ip| format!("{ip}:17379")).collect();
        let toml = config_toml(
            i,
            "0.0.0.0:7379",
            &format!("{}:17379", self.ips[i]),
            "0.0.0.0:27379",
            "/data",
            &members,
            self.rejoin[i],
            &self.layout.extra,
        );
        // In place: the file is bind-mounted.
        fs::write(self.layout.config(i), toml).map_err(|e| format!("config: {e}"))
    }

    fn pid(&self, i: usize) -> Result<String, String> {
        let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &self.names[i]])?;
        if pid == "0" || pid.is_empty() {
            return Err(format!("node {i} is not running"));
        }
        Ok(pid)
    }

    /// iptables inside node `i`'s network namespace.
    fn iptables(&self, i: usize, args: &[&str]) -> Result<(), String> {
        let pid = self.pid(i)?;
        let out = Command::new("nsenter")
            .args(["-t", &pid, "-n", "iptables"])
            .args(args)
            .output()
            .map_err(|e| format!("nsenter: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "iptables {} in node {i}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Backend for DockerCluster {
    fn n(&self) -> usize {
        self.n
    }
    fn client_addr(&self, i: usize) -> String {
        format!("{}:7379", self.ips[i])
    }
    fn kill(&mut self, i: usize) -> Result<(), String> {
        if self.running(i) {
            docker(&["kill", "-s", "KILL", &self.names[i]])?;
        }
        let _ = docker(&["wait", &self.names[i]]);
        self.has_rules.remove(&i);
        Ok(())
    }
    fn start(&mut self, i: usize) -> Result<(), String> {
        if self.running(i) {
            return Ok(());
        }
        docker(&["start", &self.names[i]]).map(|_| ())
    }
    fn running(&mut self, i: usize) -> bool {
        docker(&["inspect", "-f", "{{.State.Running}}", &self.names[i]]).is_ok_and(|s| s == "true")
    }
    fn pause(&mut self, i: usize) -> Result<(), String> {
        docker(&["pause", &self.names[i]]).map(|_| ())
    }
    fn resume(&mut self, i: usize) -> Result<(), String> {
        let paused = docker(&["inspect", "-f", "{{.State.Paused}}", &self.names[i]]);
        if paused.is_ok_and(|s| s == "true") {
            docker(&["unpause", &self.names[i]])?;
        }
        Ok(())
    }
    fn set_partition(&mut self, blocked: &BTreeSet<(usize, usize)>) -> Result<(), String> {
        // Drop, in the receiver's namespace, packets from each blocked sender.
        for i in std::mem::take(&mut self.has_rules) {
            if self.running(i) {
                self.iptables(i, &["-F", "INPUT"])?;
            }
        }
        for &(from, to) in blocked {
            // A node killed in the same round has no namespace; it hears nothing.
            if !self.running(to) {
                continue;
            }
            self.iptables(to, &["-A", "INPUT", "-s", &self.ips[from], "-j", "DROP"])?;
            self.has_rules.insert(to);
        }
        Ok(())
    }
    fn isolate(&mut self, i: usize, on: bool) -> Result<(), String> {
        if on && self.disconnected.insert(i) {
            docker(&["network", "disconnect", &self.net, &self.names[i]])?;
        } else if !on && self.disconnected.remove(&i) {
            docker(&[
                "network",
                "connect",
                "--ip",
                &self.ips[i],
                &self.net,
                &self.names[i],
            ])?;
        }
        Ok(())
    }
    fn set_clock(&mut self, i: usize, offset_ms: i64) -> Result<(), String> {
        self.layout.set_clock(i, offset_ms)
    }
    fn can_fill_disk(&self) -> bool {
        self.layout.tmpfs
    }
    fn fill_disk(&mut self, i: usize) -> Result<(), String> {
        self.layout.fill(i)
    }
    fn free_disk(&mut self, i: usize) -> Result<(), String> {
        self.layout.free(i)
    }
    fn wipe_and_rejoin(&mut self, i: usize) -> Result<(), String> {
        self.kill(i)?;
        self.layout.wipe(i)?;
        self.rejoin[i] = true;
        self.write_config(i)?;
        self.start(i)
    }
    fn teardown(&mut self) {
        for i in 0..self.n {
            if let Ok(logs) = Command::new("docker")
                .args(["logs", &self.names[i]])
                .output()
            {
                let mut text = logs.stdout;
                text.extend_from_slice(&logs.stderr);
                let _ = fs::write(self.layout.log(i), text);
            }
            let _ = docker(&["rm", "-f", &self.names[i]]);
        }
        let _ = docker(&["network", "rm", &self.net]);
        self.layout.unmount(self.n);
    }
}
