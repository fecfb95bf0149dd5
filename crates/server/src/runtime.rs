//! Start a node: storage, group commit, peer transport, shard threads, client and
//! admin listeners; stop it gracefully.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use node::shard::{Shard, ShardConfig, ShardStats};
use storage::{FjallOptions, FjallStorage, GroupCommit, GroupCommitConfig, Storage};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};

use crate::config::{resolve, ConfigError, NodeConfig};
use crate::shard_worker::{
    route, ShardHandle, ShardInput, ShardWorker, MSG_PAXOS, MSG_PAXOS_BATCH,
};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("storage: {0}")]
    Storage(#[from] storage::StorageError),
    #[error("peer network: {0}")]
    Net(#[from] net::NetError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot start thread: {0}")]
    Thread(std::io::Error),
}

/// State shared by the connection tasks and the admin endpoint.
pub struct Shared {
    pub cfg: NodeConfig,
    pub shards: Vec<ShardHandle>,
    pub transport: net::Transport,
    pub group_commit: Arc<GroupCommit>,
    pub storage: Arc<dyn Storage>,
    pub started: Instant,
    pub clients: AtomicUsize,
    /// Live connections (CLIENT LIST/KILL) and the client counters of INFO.
    pub registry: crate::info::Registry,
    /// Users and their permissions (built from `users` and `requirepass`).
    pub acl: crate::acl::Acl,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Writes forwarded to their entity's home, awaiting the reply.
    pub forwarder: crate::forward::Forwarder,
    /// This node's persists are failing: forwarded writes are refused unproposed.
    pub disk_failing: Arc<std::sync::atomic::AtomicBool>,
    /// Bytes of large requests received in part, all connections (`client_input_mb`).
    pub client_input: AtomicUsize,
}

impl Shared {
    /// Whether this node plus its connected peers form a majority.
    pub fn majority_reachable(&self) -> bool {
        let up = self
            .cfg
            .members
            .iter()
            .filter(|m| m.id != self.cfg.id && self.transport.live_channels(m.id) > 0)
            .count();
        // Self plus connected peers must reach floor(n/2) + 1.
        up + 1 > self.cfg.members.len() / 2
    }

    /// Whether every connection to `peer` is up. Writes are forwarded only then: when
    /// a peer dies its connections are seen to close one at a time, and a write
    /// forwarded over one still open would be lost with it (answered as an unknown
    /// outcome) where proposing here would have succeeded.
    pub fn peer_fully_connected(&self, peer: u8) -> bool {
        self.transport.live_channels(peer) >= self.transport.channels_per_peer()
    }

    /// Each member's link state as text (self is "self").
    pub fn peer_states(&self) -> BTreeMap<u8, String> {
        let mut m: BTreeMap<u8, String> = self
            .transport
            .peer_states()
            .into_iter()
            .map(|(id, s)| {
                let t = match s {
                    net::PeerState::Connected { channels } => format!("up({channels})"),
                    net::PeerState::Connecting => "connecting".into(),
                    net::PeerState::Down => "down".into(),
                };
                (id, t)
            })
            .collect();
        m.insert(self.cfg.id, "self".into());
        m
    }

    /// Ask every shard for its counters.
    pub async fn shard_stats(&self) -> Vec<ShardStats> {
        let mut out = Vec::new();
        for s in &self.shards {
            let (tx, rx) = oneshot::channel();
            if s.try_send(ShardInput::Stats(tx)).is_ok() {
                if let Ok(st) = rx.await {
                    out.push(st);
                }
            }
        }
        out
    }
}

/// Run a node until `shutdown` resolves, then stop gracefully.
pub async fn run(
    cfg: NodeConfig,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    cfg.validate()?;
    let epoch = Instant::now();
    let storage: Arc<dyn Storage> = Arc::new(FjallStorage::open(
        &cfg.data_dir,
        FjallOptions {
            cache_bytes: cfg.block_cache_mb << 20,
            memtable_bytes: cfg.memtable_mb << 20,
            data_block_bytes: cfg.data_block_kb << 10,
            compaction: cfg.compaction.into(),
            ..FjallOptions::default()
        },
    )?);
    // The rejoin rule, once asked for, sticks to the data directory.
    if cfg.rejoin {
        storage.put_node_meta("rejoin", b"1")?;
    }
    let rejoin = storage.get_node_meta("rejoin")?.is_some();
    if rejoin {
        tracing::warn!(
            "rejoin mode: not voting on entries this node may have forgotten (disk wiped)"
        );
    }
    let group_commit = Arc::new(GroupCommit::start(
        storage.clone(),
        GroupCommitConfig {
            queue_capacity: cfg.group_commit_queue,
            max_batch_updates: cfg.group_commit_max_batch,
            max_batch_bytes: cfg.group_commit_max_bytes,
            max_wait: std::time::Duration::from_micros(cfg.group_commit_max_wait_us),
        },
    ));

    let mut members = Vec::new();
    for m in &cfg.members {
        members.push(net::Member {
            id: m.id,
            addr: resolve("members.peer", &m.peer)?,
        });
    }
    let mut net_cfg = net::NetConfig::new(
        cfg.cluster_id,
        cfg.id,
        resolve("peer_addr", &cfg.peer_addr)?,
        members,
    );
    net_cfg.secret = cfg.peer_secret.as_ref().map(|s| s.as_bytes().to_vec());
    net_cfg.check_source_addr = cfg.check_peer_source;
    net_cfg.tls = crate::tls::peer_tls(&cfg)?;
    net_cfg.channels_per_peer = if cfg.channels_per_peer == 0 {
        cfg.io_threads
    } else {
        cfg.channels_per_peer
    };
    net_cfg.handshake_timeout = std::time::Duration::from_millis(cfg.handshake_timeout_ms);
    let max_state_bytes = crate::shard_worker::max_state_bytes(net_cfg.max_frame);
    let (transport, mut inbound) = net::start(net_cfg).await?;

    let mut paxos_cfg = paxos::Config::new(cfg.n(), cfg.id);
    paxos_cfg.pre_auth = cfg.pre_auth;
    paxos_cfg.retry_ms = cfg.retry_ms;
    paxos_cfg.catchup_ms = cfg.catchup_ms;
    paxos_cfg.catchup_window = cfg.catchup_window;
    paxos_cfg.validate().map_err(|m| ConfigError::Field {
        field: "members",
        message: m.into(),
    })?;
    let mut shard_cfg = ShardConfig::new(paxos_cfg);
    shard_cfg.op_timeout_ms = cfg.op_timeout_ms;
    shard_cfg.max_queue = cfg.max_queue_per_entity;
    shard_cfg.max_cached_bytes = (cfg.cache_mb << 20) / cfg.shards;
    shard_cfg.max_probe_summaries = cfg.probe_summaries / cfg.shards;
    shard_cfg.max_state_bytes = max_state_bytes;
    shard_cfg.rejoin = rejoin;
    shard_cfg.catchup_max_per_sec = cfg.catchup_max_per_sec;

    let disk_failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut shards = Vec::new();
    let mut threads = Vec::new();
    for i in 0..cfg.shards {
        let (handle, rx) = crate::shard_worker::inbox(65_536);
        let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
        // From the OS's randomness (std's RandomState keys): the seed also keys the
        // hashes of the shard's probe summaries, which must not be predictable (two
        // names colliding there would share a summary).
        let seed = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            (cfg.id, i),
        );
        let worker = ShardWorker {
            index: i,
            shard: Shard::new(shard_cfg.clone(), seed),
            rx,
            done_rx,
            done_tx,
            storage: storage.clone(),
            group_commit: group_commit.clone(),
            transport: transport.clone(),
            disk_failing: disk_failing.clone(),
        };
        threads.push(if cfg.shard_threads {
            // A runtime of its own (timers only) on a thread of its own, built there:
            // a runtime dropped inside this async function would panic.
            let (ready_tx, ready_rx) = oneshot::channel();
            let t = std::thread::Builder::new()
                .name(format!("shard-{i}"))
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                    {
                        Ok(rt) => {
                            let _ = ready_tx.send(Ok(()));
                            rt.block_on(worker.run(epoch));
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                })
                .map_err(ServerError::Thread)?;
            ready_rx
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("shard thread ended at start")))
                .map_err(ServerError::Thread)?;
            ShardRunner::Thread(t)
        } else {
            ShardRunner::Task(tokio::spawn(worker.run(epoch)))
        });
        shards.push(handle);
    }

    let acl = crate::acl::Acl::new(&cfg.users, cfg.requirepass.as_deref()).map_err(|message| {
        ConfigError::Field {
            field: "users",
            message,
        }
    })?;
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        shards,
        transport: transport.clone(),
        group_commit: group_commit.clone(),
        storage: storage.clone(),
        started: epoch,
        clients: AtomicUsize::new(0),
        registry: crate::info::Registry::default(),
        acl,
        metrics,
        forwarder: crate::forward::Forwarder::new(cfg.max_clients.max(1024)),
        disk_failing,
        client_input: AtomicUsize::new(0),
    });

    // Peer messages → their entity's shard. A full shard inbox drops the message:
    // Paxos tolerates loss, and memory stays bounded.
    let peer_shared = shared.clone();
    let peer_task = tokio::spawn(async move {
        let n = peer_shared.shards.len();
        let mut per_shard: Vec<Vec<(Bytes, paxos::Message)>> = vec![Vec::new(); n];
        while let Some(frame) = inbound.recv().await {
            match frame.msg_type {
                MSG_PAXOS => {
                    if let Some((entity, msg)) =
                        checked_message(frame.from, node::codec::decode_message(&frame.payload))
                    {
                        let shard = &peer_shared.shards[(route(&entity) % n as u64) as usize];
                        if shard.try_send(ShardInput::Message { entity, msg }).is_err() {
                            metrics::counter!("paxosstore_peer_inbox_dropped_total").increment(1);
                        }
                    }
                }
                MSG_PAXOS_BATCH => {
                    for decoded in node::codec::decode_batch(&frame.payload) {
                        if let Some((entity, msg)) = checked_message(frame.from, decoded) {
                            per_shard[(route(&entity) % n as u64) as usize].push((entity, msg));
                        }
                    }
                    for (i, msgs) in per_shard.iter_mut().enumerate() {
                        if msgs.is_empty() {
                            continue;
                        }
                        let count = msgs.len() as u64;
                        let msgs = std::mem::take(msgs);
                        if peer_shared.shards[i]
                            .try_send(ShardInput::Messages(msgs))
                            .is_err()
                        {
                            metrics::counter!("paxosstore_peer_inbox_dropped_total")
                                .increment(count);
                        }
                    }
                }
                crate::forward::MSG_FORWARD => {
                    crate::forward::on_forward(&peer_shared, frame.from, frame.payload);
                }
                crate::forward::MSG_FORWARD_REPLY => {
                    crate::forward::on_forward_reply(&peer_shared, frame.from, frame.payload);
                }
                _ => {}
            }
        }
    });

    // A lost link to a peer: writes forwarded there may never be answered, so answer
    // them at once as unknown outcomes (see `forward::try_forward`).
    let link_shared = shared.clone();
    let mut link_closes = transport.link_closes();
    let link_task = tokio::spawn(async move {
        while link_closes.changed().await.is_ok() {
            let full = link_shared.transport.channels_per_peer();
            for m in &link_shared.cfg.members {
                if m.id != link_shared.cfg.id && link_shared.transport.live_channels(m.id) < full {
                    link_shared.forwarder.fail_over(m.id);
                }
            }
        }
    });

    let client_tls = crate::tls::client_acceptor(&cfg)?;
    let client_handshake = std::time::Duration::from_millis(cfg.handshake_timeout_ms);
    let client_listener = TcpListener::bind(&cfg.client_addr)
        .await
        .map_err(|source| ServerError::Listen {
            addr: cfg.client_addr.clone(),
            source,
        })?;
    let admin_listener =
        TcpListener::bind(&cfg.admin_addr)
            .await
            .map_err(|source| ServerError::Listen {
                addr: cfg.admin_addr.clone(),
                source,
            })?;
    tracing::info!(id = cfg.id, client = %cfg.client_addr, peer = %cfg.peer_addr, admin = %cfg.admin_addr, "node started");

    let admin_task = tokio::spawn(crate::admin::serve(admin_listener, shared.clone()));
    // INFO's instantaneous_ops_per_sec: sample the command counter like Redis does.
    let ops_shared = shared.clone();
    let ops_task = tokio::spawn(async move {
        let period = std::time::Duration::from_millis(crate::info::OPS_SAMPLE_MS);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now_ms = ops_shared.started.elapsed().as_millis() as u64;
            ops_shared.registry.sample_ops(now_ms);
        }
    });
    // Drains the metrics' histogram buffers, which nothing else bounds.
    let upkeep = match shared.metrics.clone() {
        Some(h) => Some(
            crate::metrics_upkeep::MetricsUpkeep::start(h, crate::metrics_upkeep::DEFAULT_PERIOD)
                .map_err(ServerError::Thread)?,
        ),
        None => None,
    };
    let limit = Arc::new(Semaphore::new(cfg.max_clients));
    let accept_shared = shared.clone();
    let accept_task = tokio::spawn(async move {
        loop {
            let (sock, _) = match client_listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "client accept failed; backing off");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                // Over max_clients: answer like Redis and close.
                accept_shared
                    .registry
                    .rejected
                    .fetch_add(1, Ordering::Relaxed);
                let mut sock = sock;
                if client_tls.is_some() {
                    continue; // no plaintext error inside a TLS port
                }
                let _ = tokio::io::AsyncWriteExt::write_all(
                    &mut sock,
                    b"-ERR max number of clients reached\r\n",
                )
                .await;
                continue;
            };
            let s = accept_shared.clone();
            let tls = client_tls.clone();
            tokio::spawn(async move {
                s.clients.fetch_add(1, Ordering::Relaxed);
                crate::tls::serve_client(sock, tls, client_handshake, s.clone()).await;
                s.clients.fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            });
        }
    });

    shutdown.await;
    tracing::info!("shutting down: no new clients; finishing in-flight work");
    accept_task.abort();
    admin_task.abort();
    ops_task.abort();
    if let Some(u) = upkeep {
        let _ = tokio::task::spawn_blocking(move || u.stop()).await;
    }
    peer_task.abort();
    link_task.abort();
    // Shards answer what is queued with an error; persists already submitted finish.
    for s in &shared.shards {
        let _ = s.tx.send(ShardInput::Stop).await;
    }
    for t in threads {
        match t {
            ShardRunner::Thread(t) => {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
            ShardRunner::Task(t) => {
                let _ = t.await;
            }
        }
    }
    let gc = group_commit.clone();
    let _ = tokio::task::spawn_blocking(move || gc.shutdown()).await;
    transport.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Where a shard worker runs (`shard_threads`).
enum ShardRunner {
    Thread(std::thread::JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

/// A decoded peer message, if it decoded and claims the sender the handshake proved.
fn checked_message(
    from: u8,
    decoded: Result<(Bytes, paxos::Message), node::codec::DecodeError>,
) -> Option<(Bytes, paxos::Message)> {
    match decoded {
        Ok((entity, msg)) if msg.from == from => Some((entity, msg)),
        Ok(_) => {
            metrics::counter!("paxosstore_peer_bad_messages_total").increment(1);
            None
        }
        Err(e) => {
            metrics::counter!("paxosstore_peer_bad_messages_total").increment(1);
            tracing::warn!(from, error = %e, "undecodable peer message");
            None
        }
    }
}
