//! What a node tells clients about itself: the registry of live connections
//! (`CLIENT LIST`/`INFO`/`CLIENT KILL`), the client counters, and the `INFO` text.
//! Nothing here shows a password.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::Notify;

/// Live connections of this node and the client counters. Entries are added by the
/// connection tasks, each holding one of `max_clients` permits, and removed when the
/// task ends: the map never holds more than `max_clients` entries.
#[derive(Default)]
pub struct Registry {
    live: Mutex<BTreeMap<u64, Arc<ConnInfo>>>,
    pub total_connections: AtomicU64,
    pub total_commands: AtomicU64,
    pub rejected: AtomicU64,
    pub keyspace_hits: AtomicU64,
    pub keyspace_misses: AtomicU64,
    /// `instantaneous_ops_per_sec`, sampled from `total_commands`.
    ops_meter: Mutex<OpsMeter>,
}

/// Samples a counter every [`OPS_SAMPLE_MS`] and reports the mean rate over the last
/// [`OPS_SAMPLES`] samples (1.6 s), as Redis computes `instantaneous_ops_per_sec`.
#[derive(Default)]
pub struct OpsMeter {
    last: Option<(u64, u64)>,
    rates: [u64; OPS_SAMPLES],
    next: usize,
}

/// Samples kept by [`OpsMeter`].
pub const OPS_SAMPLES: usize = 16;
/// How often the runtime samples the command counter.
pub const OPS_SAMPLE_MS: u64 = 100;

impl OpsMeter {
    /// Record that the counter was `count` at `now_ms`.
    pub fn sample(&mut self, now_ms: u64, count: u64) {
        if let Some((t, c)) = self.last {
            let dt = now_ms.saturating_sub(t);
            if dt == 0 {
                return;
            }
            self.rates[self.next] = count.saturating_sub(c).saturating_mul(1000) / dt;
            self.next = (self.next + 1) % OPS_SAMPLES;
        }
        self.last = Some((now_ms, count));
    }

    /// Operations per second, averaged over the kept samples.
    pub fn per_sec(&self) -> u64 {
        self.rates.iter().sum::<u64>() / OPS_SAMPLES as u64
    }
}

/// One connection as `CLIENT LIST` shows it.
pub struct ConnInfo {
    pub id: u64,
    pub addr: String,
    pub laddr: String,
    pub fd: i64,
    pub created: Instant,
    pub state: Mutex<ConnState>,
    /// `CLIENT KILL`: the connection closes when notified.
    pub kill: Notify,
}

/// The parts of a connection that change, refreshed by its task after each batch.
#[derive(Clone)]
pub struct ConnState {
    pub name: Option<Bytes>,
    pub user: String,
    pub last_cmd: &'static str,
    pub last_active: Instant,
    /// Commands queued in MULTI, or -1 outside one.
    pub multi: i64,
    pub resp: u8,
    pub readonly: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep using it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ConnInfo {
    pub fn state(&self) -> MutexGuard<'_, ConnState> {
        lock(&self.state)
    }

    /// One `CLIENT LIST` line (without the newline), in Redis 7's field order.
    pub fn line(&self, now: Instant) -> String {
        let st = self.state().clone();
        let name = st
            .name
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        let flags = if st.multi >= 0 {
            "x"
        } else if st.readonly {
            "r"
        } else {
            "N"
        };
        format!(
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={} db=0 sub=0 psub=0 \
             ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 obl=0 oll=0 omem=0 \
             tot-mem=0 events=r cmd={} user={} redir=-1 resp={}",
            self.id,
            self.addr,
            self.laddr,
            self.fd,
            name,
            now.saturating_duration_since(self.created).as_secs(),
            now.saturating_duration_since(st.last_active).as_secs(),
            flags,
            st.multi,
            st.last_cmd,
            st.user,
            st.resp,
        )
    }
}

/// Removes its connection from the registry when dropped.
pub struct Registered {
    pub info: Arc<ConnInfo>,
    owner: Arc<crate::runtime::Shared>,
}

impl Registered {
    pub fn new(owner: Arc<crate::runtime::Shared>, info: Arc<ConnInfo>) -> Registered {
        lock(&owner.registry.live).insert(info.id, info.clone());
        owner
            .registry
            .total_connections
            .fetch_add(1, Ordering::Relaxed);
        Registered { info, owner }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.owner.registry.live).remove(&self.info.id);
    }
}

impl Registry {
    /// Sample the command counter for `instantaneous_ops_per_sec` (the runtime calls
    /// this every [`OPS_SAMPLE_MS`]).
    pub fn sample_ops(&self, now_ms: u64) {
        let count = self.total_commands.load(Ordering::Relaxed);
        lock(&self.ops_meter).sample(now_ms, count);
    }

    /// Every live connection, by id.
    pub fn snapshot(&self) -> Vec<Arc<ConnInfo>> {
        lock(&self.live).values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        lock(&self.live).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Count a lookup of a key (INFO keyspace_hits/misses).
    pub fn lookup(&self, hit: bool) {
        if hit {
            self.keyspace_hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.keyspace_misses.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The facts INFO reports, gathered by the caller (the keyspace counts need a scan).
pub struct InfoInput<'a> {
    pub node_id: u8,
    pub uptime_s: u64,
    pub tcp_port: u16,
    pub max_clients: usize,
    pub connected_clients: usize,
    pub registry: &'a Registry,
    /// `(id, peer address, state)`: state `self`, `up(<channels>)`, `connecting`,
    /// `down`.
    pub members: Vec<(u8, String, String)>,
    pub majority_reachable: bool,
    /// Whether `CLUSTER SLOTS` can answer (every member has a client address).
    pub cluster_enabled: bool,
    /// `(keys, keys with a TTL)`, if the keyspace section is wanted.
    pub keyspace: Option<(u64, u64)>,
}

const ALL_SECTIONS: &[&str] = &["server", "clients", "stats", "cluster", "keyspace"];

/// Which sections `INFO <args>` asks for, in output order. Redis 7: no argument or
/// `default` = the default set, `all`/`everything` = every section; names are
/// case-insensitive and unknown ones are ignored.
pub fn sections(args: &[Bytes]) -> Vec<&'static str> {
    if args.is_empty() {
        return ALL_SECTIONS.to_vec();
    }
    let wanted = |s: &str| {
        args.iter().any(|a| {
            a.eq_ignore_ascii_case(s.as_bytes())
                || a.eq_ignore_ascii_case(b"all")
                || a.eq_ignore_ascii_case(b"everything")
                || a.eq_ignore_ascii_case(b"default")
        })
    };
    ALL_SECTIONS.iter().copied().filter(|s| wanted(s)).collect()
}

/// The INFO text for the given sections (CRLF line ends, sections separated by an
/// empty line, as Redis writes them).
pub fn render(input: &InfoInput<'_>, sections: &[&str]) -> String {
    let r = input.registry;
    let mut out = Vec::new();
    for s in sections {
        let body = match *s {
            "server" => format!(
                "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\n\
                 paxosstore_version:{}\r\nnode_id:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\n\
                 uptime_in_seconds:{}\r\nuptime_in_days:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                input.node_id,
                std::process::id(),
                input.tcp_port,
                input.uptime_s,
                input.uptime_s / 86_400,
            ),
            "clients" => format!(
                "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\n\
                 tracking_clients:0\r\n",
                input.connected_clients, input.max_clients,
            ),
            "stats" => format!(
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
                 instantaneous_ops_per_sec:{}\r\n\
                 rejected_connections:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\n",
                r.total_connections.load(Ordering::Relaxed),
                r.total_commands.load(Ordering::Relaxed),
                lock(&r.ops_meter).per_sec(),
                r.rejected.load(Ordering::Relaxed),
                r.keyspace_hits.load(Ordering::Relaxed),
                r.keyspace_misses.load(Ordering::Relaxed),
            ),
            "cluster" => {
                let mut t = format!(
                    "# Cluster\r\ncluster_enabled:{}\r\npaxosstore_members:{}\r\n\
                     majority_reachable:{}\r\n",
                    u8::from(input.cluster_enabled),
                    input.members.len(),
                    u8::from(input.majority_reachable),
                );
                for (id, peer, state) in &input.members {
                    let st = match state.strip_prefix("up(") {
                        Some(rest) => {
                            format!("up,channels={}", rest.trim_end_matches(')'))
                        }
                        None if state == "self" => "self".to_string(),
                        None => "down".to_string(),
                    };
                    t.push_str(&format!("member{id}:id={id},peer={peer},state={st}\r\n"));
                }
                t
            }
            "keyspace" => {
                let mut t = "# Keyspace\r\n".to_string();
                if let Some((keys, expires)) = input.keyspace {
                    if keys > 0 {
                        t.push_str(&format!("db0:keys={keys},expires={expires},avg_ttl=0\r\n"));
                    }
                }
                t
            }
            _ => continue,
        };
        out.push(body);
    }
    out.join("\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn input(reg: &Registry) -> InfoInput<'_> {
        InfoInput {
            node_id: 1,
            uptime_s: 90_000,
            tcp_port: 7380,
            max_clients: 10,
            connected_clients: 3,
            registry: reg,
            members: vec![
                (0, "127.0.0.1:17379".into(), "down".into()),
                (1, "127.0.0.1:17380".into(), "self".into()),
                (2, "127.0.0.1:17381".into(), "up(2)".into()),
            ],
            majority_reachable: true,
            cluster_enabled: false,
            keyspace: Some((5, 2)),
        }
    }

    #[test]
    fn section_selection() {
        assert_eq!(sections(&[]), ALL_SECTIONS);
        assert_eq!(sections(&[b("everything")]), ALL_SECTIONS);
        assert_eq!(sections(&[b("ALL")]), ALL_SECTIONS);
        assert_eq!(sections(&[b("default")]), ALL_SECTIONS);
        assert_eq!(sections(&[b("Stats")]), ["stats"]);
        assert_eq!(
            sections(&[b("keyspace"), b("server")]),
            ["server", "keyspace"]
        );
        assert!(sections(&[b("nosuch")]).is_empty());
    }

    #[test]
    fn ops_meter_averages_the_last_sixteen_samples() {
        let mut m = OpsMeter::default();
        assert_eq!(m.per_sec(), 0);
        m.sample(0, 0);
        // 16 samples at 100 ms, 50 commands each: 500 ops/s.
        for i in 1..=16u64 {
            m.sample(i * 100, i * 50);
        }
        assert_eq!(m.per_sec(), 500);
        // Idle for 8 samples: half of the window is zero.
        for i in 17..=24u64 {
            m.sample(i * 100, 16 * 50);
        }
        assert_eq!(m.per_sec(), 250);
        // Same timestamp twice (no time passed): ignored, no division by zero.
        m.sample(2_400, 10_000);
        assert_eq!(m.per_sec(), 250);
    }

    #[test]
    fn render_fields() {
        let reg = Registry::default();
        reg.total_connections.store(7, Ordering::Relaxed);
        reg.total_commands.store(30, Ordering::Relaxed);
        reg.sample_ops(0);
        reg.total_commands.store(190, Ordering::Relaxed);
        reg.sample_ops(100);
        reg.lookup(true);
        reg.lookup(false);
        reg.lookup(false);
        let all = render(&input(&reg), ALL_SECTIONS);
        for want in [
            "# Server\r\n",
            "uptime_in_days:1\r\n",
            "tcp_port:7380\r\n",
            "\r\n\r\n# Clients\r\nconnected_clients:3\r\n",
            "total_connections_received:7\r\n",
            "keyspace_hits:1\r\nkeyspace_misses:2\r\n",
            "rejected_connections:0\r\n",
            // 160 commands in 100 ms is 1 600/s, over a 16-sample window: 100.
            "total_commands_processed:190\r\ninstantaneous_ops_per_sec:100\r\n",
            "member0:id=0,peer=127.0.0.1:17379,state=down\r\n",
            "member1:id=1,peer=127.0.0.1:17380,state=self\r\n",
            "member2:id=2,peer=127.0.0.1:17381,state=up,channels=2\r\n",
            "# Keyspace\r\ndb0:keys=5,expires=2,avg_ttl=0\r\n",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        let stats = render(&input(&reg), &["stats"]);
        assert!(stats.starts_with("# Stats\r\n") && !stats.contains("# Server"));
        let mut empty = input(&reg);
        empty.keyspace = Some((0, 0));
        assert_eq!(render(&empty, &["keyspace"]), "# Keyspace\r\n");
    }

    #[test]
    fn client_list_line_has_redis_fields_in_order() {
        let now = Instant::now();
        let c = ConnInfo {
            id: 9,
            addr: "127.0.0.1:5000".into(),
            laddr: "127.0.0.1:7379".into(),
            fd: 12,
            created: now,
            state: Mutex::new(ConnState {
                name: Some(b("app")),
                user: "alice".into(),
                last_cmd: "client|list",
                last_active: now,
                multi: -1,
                resp: 3,
                readonly: false,
            }),
            kill: Notify::new(),
        };
        let line = c.line(now);
        assert_eq!(
            line,
            "id=9 addr=127.0.0.1:5000 laddr=127.0.0.1:7379 fd=12 name=app age=0 idle=0 \
             flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 \
             multi-mem=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=client|list user=alice \
             redir=-1 resp=3"
        );
        c.state().multi = 2;
        assert!(c.line(now).contains(" flags=x ") && c.line(now).contains(" multi=2 "));
    }
}
