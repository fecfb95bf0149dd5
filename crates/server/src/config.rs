//! The node configuration file (`node.toml`): every option, its default and its check.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::acl::UserConfig;

/// The storage engine's compaction strategy, as written in the config file.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CompactionConfig {
    Tiered,
    Leveled,
}

impl From<CompactionConfig> for storage::Compaction {
    fn from(c: CompactionConfig) -> Self {
        match c {
            CompactionConfig::Tiered => storage::Compaction::Tiered,
            CompactionConfig::Leveled => storage::Compaction::Leveled,
        }
    }
}

/// One cluster member.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// Acceptor id, 0..n, unique.
    pub id: u8,
    /// `host:port` of the member's peer port.
    pub peer: String,
    /// `host:port` where Redis clients reach the member (its `client_addr` as seen
    /// from the clients). Optional; when every member has one, `CLUSTER SLOTS`,
    /// `SHARDS` and `NODES` name each slot range's home, so cluster-aware clients
    /// send each write to the node that proposes it without a forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// A node's configuration. Defaults are given by [`NodeConfig::default`] and in the
/// README's configuration reference. `Debug` redacts secrets.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// This node's member id.
    pub id: u8,
    /// Must match on every member; a peer with another cluster id is refused.
    pub cluster_id: u64,
    /// Redis protocol port.
    pub client_addr: String,
    /// Client port TLS: certificate chain (PEM); with `tls_key`, clients must use TLS.
    pub tls_cert: Option<PathBuf>,
    /// Client port TLS: private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Client port TLS: CA (PEM) that must have signed every client's certificate.
    pub tls_client_ca: Option<PathBuf>,
    /// Peer (Paxos) port.
    pub peer_addr: String,
    /// Admin HTTP port: /metrics, /health, /status.json, /.
    pub admin_addr: String,
    pub data_dir: PathBuf,
    pub members: Vec<MemberConfig>,
    /// Entity workers (entities hash to shards).
    pub shards: usize,
    /// Each shard on an OS thread of its own (true), or as a task on the IO threads
    /// (false: fewer threads, no wake-up between a connection and its shard; measured
    /// better with one IO thread per node and more busy threads than cores).
    pub shard_threads: bool,
    /// Tokio IO threads; also the default number of connections per peer.
    pub io_threads: usize,
    /// Connections per peer (0 = io_threads).
    pub channels_per_peer: usize,
    /// Optional shared secret for the peer handshake (HMAC challenge).
    pub peer_secret: Option<String>,
    /// Check that peers connect from their configured host (off for NAT/containers).
    pub check_peer_source: bool,
    /// Peer port mutual TLS: this member's certificate chain (PEM).
    pub peer_tls_cert: Option<PathBuf>,
    /// Peer port mutual TLS: this member's private key (PEM).
    pub peer_tls_key: Option<PathBuf>,
    /// Peer port mutual TLS: the cluster CA (PEM) that signed every member's certificate.
    pub peer_tls_ca: Option<PathBuf>,
    /// Peer port mutual TLS: DNS name every member's certificate carries.
    pub peer_tls_name: String,
    /// Group commit: most entity updates merged into one fsync.
    pub group_commit_max_batch: usize,
    /// Group commit: most bytes merged into one fsync.
    pub group_commit_max_bytes: usize,
    /// Group commit: wait this long for more updates when a batch is small (µs).
    pub group_commit_max_wait_us: u64,
    /// Group commit queue capacity (submissions); beyond it writes fail with BUSY.
    pub group_commit_queue: usize,
    /// Client request timeout (ms).
    pub op_timeout_ms: u64,
    /// Base proposer retry delay (ms).
    pub retry_ms: u64,
    /// Minimum delay between catch-up requests for one entry (ms).
    pub catchup_ms: u64,
    /// Entries requested at once by catch-up.
    pub catchup_window: u64,
    /// Catch-up messages sent per second, per shard (beyond: dropped, re-sent later).
    pub catchup_max_per_sec: u64,
    /// Use the pre-authorised fast path.
    pub pre_auth: bool,
    /// Forward single-command writes to the entity's home node (which holds the
    /// fast path) while it is connected; off: every node proposes its own writes.
    pub forward_writes: bool,
    /// Memory budget for cached entities, MiB (LRU eviction above it).
    pub cache_mb: usize,
    /// The storage engine's block cache, MiB: on-disk blocks kept decompressed in
    /// memory, which is what serves an entity that is not cached (a cold read).
    pub block_cache_mb: u64,
    /// The storage engine's memtable per partition, MiB: when full it is written out
    /// as a new on-disk segment while writes go on into a fresh journal file.
    pub memtable_mb: u32,
    /// The storage engine's data block, KiB (1-512): a read of an entity that is not
    /// cached fetches and decodes one whole block. Fixed when a data directory is
    /// created.
    pub data_block_kb: u32,
    /// How the storage engine merges its on-disk segments: `tiered` (fewer rewrites
    /// per write) or `leveled` (fewer runs to look through per read).
    pub compaction: CompactionConfig,
    /// Evicted entities that keep a probe summary (17 bytes each, in a hash table that
    /// grows by doubling), so a peer's read probe is answered without loading them
    /// (0 = off).
    pub probe_summaries: usize,
    /// Requests queued per entity before BUSY.
    pub max_queue_per_entity: usize,
    /// Maximum simultaneous client connections.
    pub max_clients: usize,
    /// Close client connections idle this long (s, 0 = never).
    pub client_idle_timeout_s: u64,
    /// Largest bulk string a client may send (bytes).
    pub max_value_bytes: usize,
    /// Node-wide budget, MiB, for requests received in part that are larger than
    /// 64 KiB: a client whose request would take the total over it gets an error and
    /// is disconnected, so large requests from many clients cannot exhaust memory.
    pub client_input_mb: usize,
    /// Most arguments in one client command.
    pub max_args: usize,
    /// Peer handshake timeout (ms).
    pub handshake_timeout_ms: u64,
    /// `requirepass`: clients must AUTH with this password (the `default` user's).
    pub requirepass: Option<String>,
    /// ACL users (`[[users]]`: name, password or password_sha256, commands).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserConfig>,
    /// This node's data directory was wiped (or replaced) while the cluster kept
    /// data: it must not vote on entries it may have forgotten. Once set, the flag is
    /// kept in the data directory, so later restarts keep the rule.
    pub rejoin: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: 0,
            cluster_id: 1,
            client_addr: "127.0.0.1:7379".into(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            peer_addr: "127.0.0.1:17379".into(),
            admin_addr: "127.0.0.1:27379".into(),
            data_dir: PathBuf::from("data"),
            members: Vec::new(),
            shards: 2,
            shard_threads: true,
            io_threads: 2,
            channels_per_peer: 0,
            peer_secret: None,
            check_peer_source: true,
            peer_tls_cert: None,
            peer_tls_key: None,
            peer_tls_ca: None,
            peer_tls_name: net::tls::DEFAULT_SERVER_NAME.into(),
            group_commit_max_batch: 4096,
            group_commit_max_bytes: 8 << 20,
            group_commit_max_wait_us: 0,
            group_commit_queue: 16_384,
            op_timeout_ms: 2_000,
            retry_ms: 20,
            catchup_ms: 200,
            catchup_window: 8,
            catchup_max_per_sec: 20_000,
            pre_auth: true,
            forward_writes: true,
            cache_mb: 256,
            block_cache_mb: 256,
            memtable_mb: 16,
            data_block_kb: 4,
            compaction: CompactionConfig::Tiered,
            // 7 M per shard (the default 2) is the most that 8 M-slot tables hold:
            // at most 2 x 136 MiB.
            probe_summaries: 14_000_000,
            max_queue_per_entity: 1_024,
            max_clients: 10_000,
            client_idle_timeout_s: 0,
            max_value_bytes: 512 << 20,
            client_input_mb: 1024,
            max_args: 1 << 20,
            handshake_timeout_ms: 5_000,
            requirepass: None,
            users: Vec::new(),
            rejoin: false,
        }
    }
}

/// Every field, with secrets (any key naming a secret or a password, at any depth)
/// shown as `<redacted>`, so a logged configuration leaks none.
impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn redact(v: &mut toml::Value) {
            match v {
                toml::Value::Table(t) => {
                    for (k, x) in t.iter_mut() {
                        let k = k.to_ascii_lowercase();
                        if k.contains("secret") || k.contains("pass") {
                            *x = toml::Value::String("<redacted>".into());
                        } else {
                            redact(x);
                        }
                    }
                }
                toml::Value::Array(a) => a.iter_mut().for_each(redact),
                _ => {}
            }
        }
        match toml::Value::try_from(self) {
            Ok(mut v) => {
                redact(&mut v);
                write!(f, "NodeConfig {v}")
            }
            // E.g. a path that is not UTF-8: show nothing rather than fail.
            Err(_) => f.write_str("NodeConfig { .. }"),
        }
    }
}

/// A configuration mistake, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config field `{field}`: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
}

fn field(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field,
        message: message.into(),
    }
}

/// `host` and `port` of a `host:port`, unresolved (IPv6 hosts in brackets lose
/// them); `None` without a host or a valid port.
pub fn split_endpoint(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

/// Parse `host:port`, resolving names.
pub fn resolve(name: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| field(name, format!("`{s}` is not a host:port ({e})")))?
        .next()
        .ok_or_else(|| field(name, format!("`{s}` resolves to no address")))
}

impl NodeConfig {
    /// Read and check a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: NodeConfig = toml::from_str(&text).map_err(|e| {
            // Name the field: the key on the line the error points at.
            let key = e.span().and_then(|sp| {
                let line_start = text[..sp.start.min(text.len())]
                    .rfind('\n')
                    .map_or(0, |i| i + 1);
                let line = text[line_start..].lines().next().unwrap_or("");
                line.split_once('=').map(|(k, _)| k.trim().to_string())
            });
            let message = match key {
                Some(k) if !k.is_empty() => format!("field `{k}`: {}", e.message()),
                _ => e.message().to_string(),
            };
            ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Render as TOML (for `demo`, which writes each node's file).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Check every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = self.members.len();
        if !(3..=7).contains(&n) || n.is_multiple_of(2) {
            return Err(field(
                "members",
                format!("need 3, 5 or 7 members (got {n})"),
            ));
        }
        for (i, m) in self.members.iter().enumerate() {
            if m.id as usize >= n {
                return Err(field(
                    "members",
                    format!("member id {} must be below {n}", m.id),
                ));
            }
            if self.members[..i].iter().any(|o| o.id == m.id) {
                return Err(field("members", format!("duplicate member id {}", m.id)));
            }
            resolve("members.peer", &m.peer)?;
            if let Some(c) = &m.client {
                // Only the form is checked: the name is for clients, and this node
                // may not resolve it (a FROM-scratch image has no resolver).
                if split_endpoint(c).is_none() {
                    return Err(field("members.client", format!("`{c}` is not a host:port")));
                }
            }
        }
        if !self.members.iter().any(|m| m.id == self.id) {
            return Err(field(
                "id",
                format!("{} is not one of the members", self.id),
            ));
        }
        resolve("client_addr", &self.client_addr)?;
        resolve("peer_addr", &self.peer_addr)?;
        resolve("admin_addr", &self.admin_addr)?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(field("data_dir", "must not be empty"));
        }
        let positive: [(&'static str, u64); 14] = [
            ("shards", self.shards as u64),
            ("io_threads", self.io_threads as u64),
            ("group_commit_max_batch", self.group_commit_max_batch as u64),
            ("group_commit_max_bytes", self.group_commit_max_bytes as u64),
            ("group_commit_queue", self.group_commit_queue as u64),
            ("op_timeout_ms", self.op_timeout_ms),
            ("retry_ms", self.retry_ms),
            ("catchup_ms", self.catchup_ms),
            ("catchup_window", self.catchup_window),
            ("catchup_max_per_sec", self.catchup_max_per_sec),
            ("max_queue_per_entity", self.max_queue_per_entity as u64),
            ("max_clients", self.max_clients as u64),
            ("client_input_mb", self.client_input_mb as u64),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(field(name, "must be positive"));
            }
        }
        if self.shards > 256 {
            return Err(field("shards", "at most 256"));
        }
        if self.channels_per_peer > 255 {
            return Err(field("channels_per_peer", "at most 255"));
        }
        // Far above any machine's memory, and its size in bytes fits a u64.
        if self.block_cache_mb > 1 << 30 {
            return Err(field("block_cache_mb", "at most 1073741824 (1 PiB)"));
        }
        if self.memtable_mb == 0 || self.memtable_mb > 1024 {
            return Err(field("memtable_mb", "must be 1 to 1024"));
        }
        if self.data_block_kb == 0 || self.data_block_kb > 512 {
            return Err(field("data_block_kb", "must be 1 to 512"));
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > 1 << 30 {
            return Err(field("max_value_bytes", "must be 1 byte to 1 GiB"));
        }
        if self.client_input_mb > 1 << 30 {
            return Err(field("client_input_mb", "at most 1073741824 (1 PiB)"));
        }
        if self.requirepass.as_deref() == Some("") {
            return Err(field(
                "requirepass",
                "must not be empty (omit it for no password)",
            ));
        }
        crate::acl::Acl::new(&self.users, self.requirepass.as_deref())
            .map_err(|m| field("users", m))?;
        if self.peer_secret.as_deref() == Some("") {
            return Err(field(
                "peer_secret",
                "must not be empty (omit it for no secret)",
            ));
        }
        crate::tls::check(self)?;
        Ok(())
    }

    /// Number of acceptors.
    pub fn n(&self) -> u8 {
        self.members.len() as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> NodeConfig {
        NodeConfig {
            members: (0..3)
                .map(|i| MemberConfig {
                    id: i,
                    peer: format!("127.0.0.1:{}", 17000 + i as u16),
                    client: None,
                })
                .collect(),
            ..NodeConfig::default()
        }
    }

    #[test]
    fn defaults_with_three_members_are_valid_and_round_trip() {
        let c = three();
        c.validate().unwrap();
        let back: NodeConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back.members, c.members);
    }

    /// The error of `three()` with `edit` applied.
    fn mistake(edit: impl FnOnce(&mut NodeConfig)) -> String {
        let mut c = three();
        edit(&mut c);
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn each_mistake_names_its_field() {
        assert!(mistake(|c| {
            c.members.pop();
        })
        .contains("`members`"));
        assert!(mistake(|c| c.id = 5).contains("`id`"));
        assert!(mistake(|c| c.shards = 0).contains("`shards`"));
        assert!(mistake(|c| c.memtable_mb = 0).contains("`memtable_mb`"));
        assert!(mistake(|c| c.data_block_kb = 0).contains("`data_block_kb`"));
        assert!(mistake(|c| c.data_block_kb = 513).contains("`data_block_kb`"));
        assert!(mistake(|c| c.block_cache_mb = (1 << 30) + 1).contains("`block_cache_mb`"));
        assert!(mistake(|c| c.client_addr = "nope".into()).contains("`client_addr`"));
        assert!(mistake(|c| c.members[1].client = Some("nope".into())).contains("`members.client`"));
        assert!(
            mistake(|c| c.members[1].client = Some("h:99999".into())).contains("`members.client`")
        );
        // A client address is for clients: a name this node cannot resolve is fine.
        let mut c = three();
        c.members[0].client = Some("paxosstore-0.example.invalid:6379".into());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn users_load_and_bad_users_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.toml");
        let members = "[[members]]\nid = 0\npeer = \"127.0.0.1:17000\"\n\
                       [[members]]\nid = 1\npeer = \"127.0.0.1:17001\"\n\
                       [[members]]\nid = 2\npeer = \"127.0.0.1:17002\"\n";
        let user = "[[users]]\nname = \"alice\"\npassword = \"pw\"\ncommands = \"+@read\"\n";
        std::fs::write(&p, format!("id = 0\n{members}{user}")).unwrap();
        let c = NodeConfig::load(&p).unwrap();
        assert_eq!(c.users.len(), 1);
        assert_eq!(c.users[0].name, "alice");
        // Round trip through the TOML `demo` writes.
        let back: NodeConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back.users, c.users);
        // A bad rule names `users`, and the message does not echo the password.
        let bad = user.replace("+@read", "+@nosuch");
        std::fs::write(&p, format!("id = 0\n{members}{bad}")).unwrap();
        let e = NodeConfig::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("`users`") && e.contains("alice") && !e.contains("pw"),
            "{e}"
        );
        let mut c = three();
        c.requirepass = Some(String::new());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`requirepass`"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.toml");
        std::fs::write(&p, "id = 0\nbogus = 1\n").unwrap();
        let e = NodeConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn compaction_is_read_by_name_and_an_unknown_one_is_refused() {
        let c: NodeConfig = toml::from_str("compaction = \"leveled\"").unwrap();
        assert_eq!(c.compaction, CompactionConfig::Leveled);
        assert_eq!(NodeConfig::default().compaction, CompactionConfig::Tiered);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.toml");
        std::fs::write(&p, "id = 0\ncompaction = \"fifo\"\n").unwrap();
        let e = NodeConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("fifo") && e.contains("tiered"), "{e}");
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = NodeConfig {
            peer_secret: Some("peer-s3cret-value".into()),
            requirepass: Some("client-pa55-value".into()),
            ..three()
        };
        let d = format!("{c:?}");
        assert!(d.contains("<redacted>") && d.contains("client_addr"), "{d}");
        assert!(
            !d.contains("peer-s3cret-value") && !d.contains("client-pa55-value"),
            "{d}"
        );
    }
}
