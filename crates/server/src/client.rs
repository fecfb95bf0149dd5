//! One task per client connection: parse RESP, handle connection-level commands here,
//! route entity commands to their shard, write replies in order (pipelining).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use node::shard::Request;
use resp::command::{AclCommand, ClientCommand, ClientKill, CommandCommand};
use resp::{entity_of, parse_command, parse_request, Command, Limits, ProtocolError, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::info::{ConnInfo, ConnState, Registered};
use crate::runtime::Shared;
use crate::shard_worker::{route, ShardInput};

/// A reply not yet known: either ready, or waiting on one or more shards.
enum Pending {
    Ready(Reply),
    One(oneshot::Receiver<Reply>),
    /// EXEC: the entity's array reply, with locally answered items put back in place.
    Exec(oneshot::Receiver<Reply>, Vec<Option<Reply>>),
    /// Per-key fan-out across entities, merged when all arrive.
    Merge(MergeKind, Vec<oneshot::Receiver<Reply>>),
    /// WATCH: each key's `VGET` reply; the connection records the versions.
    Watch(Vec<(Bytes, Pending)>),
    /// Work spanning the node's storage (DBSIZE, FLUSHALL/FLUSHDB).
    Task(Pin<Box<dyn Future<Output = Reply> + Send>>),
}

#[derive(Clone, Copy)]
enum MergeKind {
    /// MGET: concatenate arrays.
    Concat,
    /// DEL/UNLINK/EXISTS: add integers.
    Sum,
}

/// A command queued inside MULTI: run on the entity at EXEC, or answered locally
/// (PING, ECHO, and errors Redis reports at EXEC time rather than when queuing).
enum Queued {
    Entity(Command),
    Local(Reply),
}

struct Conn {
    id: u64,
    proto: u8,
    /// The logged-in user (index into `Shared::acl`); `None` until AUTH.
    user: Option<usize>,
    readonly: bool,
    name: Option<Bytes>,
    multi: Option<Vec<Queued>>,
    multi_failed: bool,
    /// WATCH: `(key, version)` recorded per watched key (0 = missing).
    watched: Vec<(Bytes, u64)>,
    /// A watched key's version could not be learned: the next EXEC fails.
    watch_dirty: bool,
    /// The command being dispatched is the only one the client has sent: nothing
    /// before it awaits a reply and nothing after it is buffered. Only such a write is
    /// forwarded to its entity's home, so forwarding never reorders a pipeline.
    lone: bool,
    /// This connection's entry in the node's registry (CLIENT LIST, KILL).
    info: Arc<ConnInfo>,
    /// Commands queued since the last registry refresh.
    last_cmd: &'static str,
}

impl Conn {
    fn authed(&self) -> bool {
        self.user.is_some()
    }

    /// Copy what CLIENT LIST shows into the registry entry.
    fn publish(&self, shared: &Shared) {
        let mut st = self.info.state();
        st.name.clone_from(&self.name);
        // Called after every batch of commands: copy the user's name only when it changed.
        let user = self
            .user
            .and_then(|u| shared.acl.user(u))
            .map_or("", |u| u.name.as_str());
        if st.user != user {
            st.user = user.to_owned();
        }
        st.last_cmd = self.last_cmd;
        st.last_active = Instant::now();
        st.multi = self.multi.as_ref().map_or(-1, |q| q.len() as i64);
        st.resp = self.proto;
        st.readonly = self.readonly;
    }
}

static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

/// A request received in part counts against the node's `client_input_mb` only above
/// this size: ordinary requests never touch the shared counter.
const INPUT_CHARGE_FROM: usize = 64 * 1024;

/// This connection's share of [`Shared::client_input`]: the size of its request
/// received in part, when large. Given back when the connection ends.
struct InputCharge {
    shared: Arc<Shared>,
    held: usize,
}

impl InputCharge {
    /// Hold `len` bytes of a request received in part (0 when none is). `Err` with
    /// the node's total when this growth takes it over the budget.
    fn hold(&mut self, len: usize) -> Result<(), usize> {
        let len = if len > INPUT_CHARGE_FROM { len } else { 0 };
        if len == self.held {
            return Ok(());
        }
        let grew = len > self.held;
        let total = if grew {
            let add = len - self.held;
            self.shared.client_input.fetch_add(add, Ordering::Relaxed) + add
        } else {
            let sub = self.held - len;
            self.shared.client_input.fetch_sub(sub, Ordering::Relaxed) - sub
        };
        self.held = len;
        metrics::gauge!("paxosstore_client_input_bytes").set(total as f64);
        if grew && total > self.shared.cfg.client_input_mb << 20 {
            return Err(total);
        }
        Ok(())
    }
}

impl Drop for InputCharge {
    fn drop(&mut self) {
        let _ = self.hold(0);
    }
}

/// Largest bulk argument and most arguments of a request from a client that has not
/// logged in (Redis 7: 16 KiB, 10).
const UNAUTHED_MAX_BULK: usize = 16 * 1024;
const UNAUTHED_MAX_ARGS: usize = 10;

/// Serve one client until it disconnects, errs, or sends QUIT.
/// The stream is a TCP socket or a TLS stream over one (`tls::serve_client`).
pub async fn serve<S: crate::tls::ClientStream>(mut sock: S, shared: Arc<Shared>) {
    let limits = Limits {
        max_bulk_len: shared.cfg.max_value_bytes,
        max_args: shared.cfg.max_args,
        ..Limits::default()
    };
    // Until a client has logged in it may send only small requests (Redis 7's limits),
    // so a connection that knows no password cannot make the node buffer megabytes.
    let unauthed_limits = Limits {
        max_bulk_len: limits.max_bulk_len.min(UNAUTHED_MAX_BULK),
        max_args: limits.max_args.min(UNAUTHED_MAX_ARGS),
        ..limits
    };
    let id = NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed);
    let created = Instant::now();
    let info = Arc::new(ConnInfo {
        id,
        addr: sock
            .tcp()
            .peer_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string()),
        laddr: sock
            .tcp()
            .local_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string()),
        fd: raw_fd(sock.tcp()),
        created,
        state: std::sync::Mutex::new(ConnState {
            name: None,
            user: String::new(),
            last_cmd: "NULL",
            last_active: created,
            multi: -1,
            resp: 2,
            readonly: false,
        }),
        kill: tokio::sync::Notify::new(),
    });
    let registered = Registered::new(shared.clone(), info.clone());
    let mut conn = Conn {
        id,
        proto: 2,
        user: shared.acl.initial_user(),
        readonly: false,
        name: None,
        multi: None,
        multi_failed: false,
        watched: Vec::new(),
        watch_dirty: false,
        lone: false,
        info,
        last_cmd: "NULL",
    };
    conn.publish(&shared);
    // No idle timeout (the default): no timer per read.
    let idle = match shared.cfg.client_idle_timeout_s {
        0 => None,
        s => Some(Duration::from_secs(s)),
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut cmd_metrics = CommandMetrics::default();
    let mut input = InputCharge {
        shared: shared.clone(),
        held: 0,
    };
    // One registration for the connection's life, not one per read (each costs the
    // Notify's lock twice). `notify_one` leaves a permit if it fires between polls.
    let kill = registered.info.kill.notified();
    tokio::pin!(kill);
    // After a WATCH the buffered requests are parsed only once the watched versions
    // are known, so a pipelined EXEC carries them.
    let mut skip_read = false;
    loop {
        if !skip_read {
            let read = tokio::select! {
                biased;
                // CLIENT KILL wins over pending input.
                _ = &mut kill => return,
                r = read_some(&mut sock, &mut buf, idle) => r,
            };
            match read {
                Some(Ok(0)) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
        skip_read = false;
        let mut pending: VecDeque<(Pending, &'static str, Instant)> = VecDeque::new();
        let mut quit = false;
        loop {
            let authed = conn.authed();
            match parse_request(&mut buf, if authed { &limits } else { &unauthed_limits }) {
                Ok(Some(args)) => {
                    let started = Instant::now();
                    conn.lone = pending.is_empty() && buf.is_empty();
                    let (p, name, q) = dispatch(&mut conn, &shared, &args);
                    let barrier = matches!(p, Pending::Watch(_));
                    pending.push_back((p, name, started));
                    if q {
                        quit = true;
                        break;
                    }
                    if barrier {
                        skip_read = true;
                        break;
                    }
                }
                Ok(None) => {
                    if let Err(total) = input.hold(buf.len()) {
                        metrics::counter!("paxosstore_client_input_refusals_total").increment(1);
                        pending.push_back((
                            Pending::Ready(Reply::error(format!(
                                "ERR requests received in part hold {total} bytes on this \
                                 node, over client_input_mb; closing the connection"
                            ))),
                            "protocol",
                            Instant::now(),
                        ));
                        quit = true;
                    }
                    break;
                }
                Err(e) => {
                    // Redis answers the protocol error and closes the connection.
                    let text = match e {
                        ProtocolError::InvalidMultibulkLength if !authed => {
                            "ERR Protocol error: unauthenticated multibulk length".to_string()
                        }
                        ProtocolError::InvalidBulkLength if !authed => {
                            "ERR Protocol error: unauthenticated bulk length".to_string()
                        }
                        e => e.to_string(),
                    };
                    pending.push_back((
                        Pending::Ready(Reply::error(text)),
                        "protocol",
                        Instant::now(),
                    ));
                    quit = true;
                    break;
                }
            }
        }
        for (p, name, started) in pending {
            let reply = match p {
                Pending::Watch(keys) => record_watch(&mut conn, keys).await,
                p => resolve(p).await,
            };
            count_lookups(&shared.registry, name, &reply);
            shared
                .registry
                .total_commands
                .fetch_add(1, Ordering::Relaxed);
            cmd_metrics.record(name, matches!(reply, Reply::Error(_)), started);
            reply.encode(conn.proto, &mut out);
        }
        conn.publish(&shared);
        if sock.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
        if quit {
            let _ = sock.shutdown().await;
            return;
        }
        // Bound the read buffer: a client that sends an enormous partial request is
        // held to the protocol limits by the parser; shrink after big requests.
        if buf.capacity() > 1 << 20 && buf.is_empty() {
            buf = BytesMut::with_capacity(16 * 1024);
        }
    }
}

/// Reads more input into `buf`; `None` when the connection was idle for `idle`.
async fn read_some<S: crate::tls::ClientStream>(
    sock: &mut S,
    buf: &mut BytesMut,
    idle: Option<Duration>,
) -> Option<std::io::Result<usize>> {
    match idle {
        None => Some(sock.read_buf(buf).await),
        Some(idle) => tokio::time::timeout(idle, sock.read_buf(buf)).await.ok(),
    }
}

/// A connection's handles to its per-command metrics. The `counter!`/`histogram!`
/// macros look the labelled metric up in the recorder's registry (hash, lock, `Arc`
/// clone) on every call; a connection uses few commands, so it keeps the handles.
#[derive(Default)]
struct CommandMetrics {
    by_name: Vec<(&'static str, metrics::Counter, metrics::Histogram)>,
}

impl CommandMetrics {
    fn record(&mut self, name: &'static str, error: bool, started: Instant) {
        let i = match self.by_name.iter().position(|(n, ..)| *n == name) {
            Some(i) => i,
            None => {
                // Bounded by the number of command names.
                self.by_name.push((
                    name,
                    metrics::counter!("paxosstore_commands_total", "cmd" => name),
                    metrics::histogram!("paxosstore_command_seconds", "cmd" => name),
                ));
                self.by_name.len() - 1
            }
        };
        let (_, count, seconds) = &self.by_name[i];
        count.increment(1);
        if error {
            metrics::counter!("paxosstore_command_errors_total", "cmd" => name).increment(1);
        }
        seconds.record(started.elapsed().as_secs_f64());
    }
}

/// WATCH: record each key's version from its `VGET` reply. If one cannot be learned
/// the reply is that error and the next EXEC fails (as if the key had changed).
async fn record_watch(conn: &mut Conn, keys: Vec<(Bytes, Pending)>) -> Reply {
    let mut first_err = None;
    for (key, p) in keys {
        let version = match Box::pin(resolve(p)).await {
            Reply::NullArray | Reply::Null => Some(0),
            Reply::Array(items) => match items.get(1) {
                Some(Reply::Integer(v)) if *v >= 0 => Some(*v as u64),
                _ => None,
            },
            Reply::Error(e) => {
                first_err.get_or_insert(Reply::Error(e));
                None
            }
            _ => None,
        };
        match version {
            Some(v) => {
                // Watching a key twice keeps the first version, as in Redis.
                if !conn.watched.iter().any(|(k, _)| *k == key) {
                    conn.watched.push((key, v));
                }
            }
            None => conn.watch_dirty = true,
        }
    }
    if first_err.is_none() && conn.watch_dirty {
        first_err = Some(Reply::error("ERR internal: unexpected VGET reply"));
    }
    first_err.unwrap_or_else(Reply::ok)
}

async fn resolve(p: Pending) -> Reply {
    let shard_gone = || Reply::error("ERR internal: shard unavailable");
    match p {
        Pending::Ready(r) => r,
        Pending::Task(f) => f.await,
        Pending::Watch(_) => Reply::error("ERR internal: unexpected WATCH"),
        Pending::One(rx) => rx.await.unwrap_or_else(|_| shard_gone()),
        Pending::Exec(rx, layout) => match rx.await.unwrap_or_else(|_| shard_gone()) {
            Reply::Array(items) => {
                let mut items = items.into_iter();
                Reply::Array(
                    layout
                        .into_iter()
                        .map(|slot| slot.or_else(|| items.next()).unwrap_or(Reply::Null))
                        .collect(),
                )
            }
            other => other,
        },
        Pending::Merge(kind, rxs) => {
            let mut items = Vec::new();
            let mut sum = 0i64;
            for rx in rxs {
                match rx.await.unwrap_or_else(|_| shard_gone()) {
                    Reply::Array(v) => items.extend(v),
                    Reply::Integer(i) => sum += i,
                    err @ Reply::Error(_) => return err,
                    other => items.push(other),
                }
            }
            match kind {
                MergeKind::Concat => Reply::Array(items),
                MergeKind::Sum => Reply::Integer(sum),
            }
        }
    }
}

/// Handle one command: connection-level ones here, entity ones via their shard.
/// Returns the pending reply, a metric name, and whether to close after replying.
fn dispatch(
    conn: &mut Conn,
    shared: &Arc<Shared>,
    args: &[Bytes],
) -> (Pending, &'static str, bool) {
    // `REQID <id> <command ...>`: a client-chosen request id makes a retried write
    // apply once (the id and first reply are kept in the entity's replicated state).
    if args
        .first()
        .is_some_and(|a| a.eq_ignore_ascii_case(b"reqid"))
    {
        let id = args
            .get(1)
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|s| s.parse::<u64>().ok());
        let (Some(id @ 1..), true) = (id, args.len() >= 3) else {
            let e = Reply::error("ERR syntax: REQID <id 1..2^64-1> <command> [args...]");
            return (Pending::Ready(e), "reqid", false);
        };
        if conn.multi.is_some() || !conn.authed() {
            let e = Reply::error("ERR REQID is not allowed here");
            return (Pending::Ready(e), "reqid", false);
        }
        return match parse_command(&args[2..]) {
            Ok(cmd) if !may_run(conn, shared, &cmd) => {
                (Pending::Ready(noperm(conn, shared, &cmd)), "reqid", false)
            }
            Ok(cmd) => route_entity_command(conn, shared, cmd, "reqid", id, &args[2..]),
            Err(e) => (Pending::Ready(Reply::error(e.to_string())), "reqid", false),
        };
    }
    let cmd = match parse_command(args) {
        Ok(c) => c,
        Err(e) => {
            if let Some(q) = conn.multi.as_mut() {
                // Redis refuses unknown commands and wrong arities when queuing (and
                // aborts EXEC); every other argument error surfaces inside EXEC.
                if matches!(
                    e,
                    resp::CommandError::UnknownCommand { .. } | resp::CommandError::WrongArity(_)
                ) {
                    conn.multi_failed = true;
                } else {
                    q.push(Queued::Local(Reply::error(e.to_string())));
                    return (Pending::Ready(Reply::simple("QUEUED")), "error", false);
                }
            }
            return (Pending::Ready(Reply::error(e.to_string())), "error", false);
        }
    };
    let name = cmd.name();
    conn.last_cmd = crate::acl::acl_name(&cmd);
    if !conn.authed()
        && !matches!(
            cmd,
            Command::Auth { .. } | Command::Hello { .. } | Command::Quit | Command::Reset
        )
    {
        return (
            Pending::Ready(Reply::error("NOAUTH Authentication required.")),
            name,
            false,
        );
    }
    if !may_run(conn, shared, &cmd) {
        // Like Redis, a refused command inside MULTI fails the EXEC.
        if conn.multi.is_some() {
            conn.multi_failed = true;
        }
        return (Pending::Ready(noperm(conn, shared, &cmd)), name, false);
    }
    // Inside MULTI: queue everything but the transaction commands.
    if conn.multi.is_some()
        && !matches!(
            cmd,
            Command::Exec | Command::Discard | Command::Multi | Command::Watch(_)
        )
    {
        if cmd.keys().is_empty()
            && !matches!(cmd, Command::Ping(_) | Command::Echo(_) | Command::Unwatch)
        {
            conn.multi_failed = true;
            return (
                Pending::Ready(Reply::error(format!(
                    "ERR '{name}' is not supported inside MULTI by this server"
                ))),
                name,
                false,
            );
        }
        let item = match cmd {
            Command::Ping(None) => Queued::Local(Reply::simple("PONG")),
            // Redis runs UNWATCH inside EXEC, when the watches are already checked.
            Command::Unwatch => Queued::Local(Reply::ok()),
            Command::Ping(Some(m)) | Command::Echo(m) => Queued::Local(Reply::Bulk(m)),
            cmd => Queued::Entity(cmd),
        };
        if let Some(q) = conn.multi.as_mut() {
            q.push(item);
        }
        return (Pending::Ready(Reply::simple("QUEUED")), name, false);
    }
    let ready = |r: Reply| (Pending::Ready(r), name, false);
    match cmd {
        Command::Ping(None) => ready(Reply::simple("PONG")),
        Command::Ping(Some(m)) | Command::Echo(m) => ready(Reply::Bulk(m)),
        Command::Quit => (Pending::Ready(Reply::ok()), name, true),
        Command::Select(0) => ready(Reply::ok()),
        Command::Select(_) => ready(Reply::error("ERR DB index is out of range")),
        Command::Auth { username, password } => {
            ready(auth(conn, shared, username.as_deref(), &password))
        }
        Command::Hello {
            protover,
            auth: creds,
            setname,
        } => {
            if let Some((user, pass)) = creds {
                if let Reply::Error(e) = auth(conn, shared, Some(&user), &pass) {
                    return ready(Reply::Error(e));
                }
            }
            if !conn.authed() {
                return ready(Reply::error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"));
            }
            if let Some(p) = protover {
                conn.proto = p;
            }
            if setname.is_some() {
                conn.name = setname;
            }
            ready(hello_reply(conn, shared))
        }
        Command::Reset => {
            conn.proto = 2;
            conn.multi = None;
            conn.watched.clear();
            conn.watch_dirty = false;
            conn.readonly = false;
            conn.name = None;
            conn.user = shared.acl.initial_user();
            ready(Reply::simple("RESET"))
        }
        Command::ReadOnly => {
            conn.readonly = true;
            ready(Reply::ok())
        }
        Command::ReadWrite => {
            conn.readonly = false;
            ready(Reply::ok())
        }
        Command::Client(c) => ready(client_cmd(conn, shared, c)),
        Command::Acl(c) => ready(acl_cmd(conn, shared, c)),
        Command::Cluster(c) => ready(crate::cluster::cluster_cmd(shared, c)),
        Command::Command(c) => ready(command_cmd(c)),
        Command::Info(args) => (
            Pending::Task(Box::pin(info(shared.clone(), args))),
            name,
            false,
        ),
        Command::Multi => {
            if conn.multi.is_some() {
                return ready(Reply::error("ERR MULTI calls can not be nested"));
            }
            conn.multi = Some(Vec::new());
            conn.multi_failed = false;
            ready(Reply::ok())
        }
        Command::Discard => match conn.multi.take() {
            Some(_) => {
                conn.watched.clear();
                conn.watch_dirty = false;
                ready(Reply::ok())
            }
            None => ready(Reply::error("ERR DISCARD without MULTI")),
        },
        Command::Exec => {
            let Some(queued) = conn.multi.take() else {
                return ready(Reply::error("ERR EXEC without MULTI"));
            };
            let watch = std::mem::take(&mut conn.watched);
            let watch_dirty = std::mem::replace(&mut conn.watch_dirty, false);
            if conn.multi_failed {
                return ready(Reply::error(
                    "EXECABORT Transaction discarded because of previous errors.",
                ));
            }
            let mut layout: Vec<Option<Reply>> = Vec::with_capacity(queued.len());
            let mut cmds = Vec::new();
            for q in queued {
                match q {
                    Queued::Entity(c) => {
                        cmds.push(c);
                        layout.push(None);
                    }
                    Queued::Local(r) => layout.push(Some(r)),
                }
            }
            if watch_dirty {
                return ready(Reply::NullArray);
            }
            if cmds.is_empty() && watch.is_empty() {
                return ready(Reply::Array(layout.into_iter().flatten().collect()));
            }
            // The watched keys must belong to the transaction's entity: the check
            // runs on that entity's state, in the same Paxos entry as the body.
            let keys: Vec<&Bytes> = cmds
                .iter()
                .flat_map(|c| c.keys())
                .chain(watch.iter().map(|(k, _)| k))
                .collect();
            let Some(entity) = one_entity(&keys) else {
                return ready(Reply::error(
                    "CROSSSLOT Keys in request don't hash to the same slot",
                ));
            };
            let req = Request {
                cmds,
                multi: true,
                stale_ok: false,
                request_id: 0,
                watch,
            };
            match submit(shared, entity, req) {
                Pending::One(rx) => (Pending::Exec(rx, layout), name, false),
                other => (other, name, false),
            }
        }
        Command::Watch(keys) => {
            if conn.multi.is_some() {
                return ready(Reply::error("ERR WATCH inside MULTI is not allowed"));
            }
            let versions = keys
                .into_iter()
                .map(|k| {
                    let req = Request::single(Command::VGet(k.clone()));
                    let p = submit(shared, Bytes::copy_from_slice(entity_of(&k)), req);
                    (k, p)
                })
                .collect();
            (Pending::Watch(versions), name, false)
        }
        Command::Unwatch => {
            conn.watched.clear();
            conn.watch_dirty = false;
            ready(Reply::ok())
        }
        Command::DbSize => (Pending::Task(Box::pin(dbsize(shared.clone()))), name, false),
        Command::Keys(pattern) => (
            Pending::Task(Box::pin(keys(shared.clone(), pattern))),
            name,
            false,
        ),
        Command::FlushAll(_) | Command::FlushDb(_) => {
            (Pending::Task(Box::pin(flush(shared.clone()))), name, false)
        }
        cmd => route_entity_command(conn, shared, cmd, name, 0, args),
    }
}

fn route_entity_command(
    conn: &Conn,
    shared: &Arc<Shared>,
    cmd: Command,
    name: &'static str,
    request_id: u64,
    argv: &[Bytes],
) -> (Pending, &'static str, bool) {
    let keys: Vec<Bytes> = cmd.keys().into_iter().cloned().collect();
    if keys.is_empty() {
        return (
            Pending::Ready(Reply::error(format!("ERR unsupported command '{name}'"))),
            name,
            false,
        );
    }
    let stale_ok = conn.readonly;
    if let Some(entity) = one_entity(&keys.iter().collect::<Vec<_>>()) {
        if cmd.is_write() && conn.lone {
            if let Some(f) = crate::forward::try_forward(shared, &entity, argv, request_id) {
                return (Pending::Task(Box::pin(f)), name, false);
            }
        }
        let req = Request {
            stale_ok,
            request_id,
            ..Request::single(cmd)
        };
        return (submit(shared, entity, req), name, false);
    }
    if request_id != 0 {
        let e = Reply::error("ERR REQID needs all keys in one entity");
        return (Pending::Ready(e), name, false);
    }
    // Keys of several entities: per-key commands fan out; atomic ones cannot.
    let per_key = |mk: fn(Vec<Bytes>) -> Command, kind: MergeKind| {
        // Group keys by entity, keeping MGET's order by sending one key per request.
        let rxs = keys
            .iter()
            .map(|k| {
                let req = Request {
                    stale_ok,
                    ..Request::single(mk(vec![k.clone()]))
                };
                match submit(shared, Bytes::copy_from_slice(entity_of(k)), req) {
                    Pending::One(rx) => rx,
                    Pending::Ready(r) => {
                        let (tx, rx) = oneshot::channel();
                        let _ = tx.send(r);
                        rx
                    }
                    // `submit` only returns `One` or `Ready`.
                    Pending::Merge(..)
                    | Pending::Exec(..)
                    | Pending::Watch(..)
                    | Pending::Task(..) => oneshot::channel().1,
                }
            })
            .collect();
        (Pending::Merge(kind, rxs), name, false)
    };
    match cmd {
        Command::MGet(_) => per_key(Command::MGet, MergeKind::Concat),
        Command::Del(_) => per_key(Command::Del, MergeKind::Sum),
        Command::Unlink(_) => per_key(Command::Unlink, MergeKind::Sum),
        Command::Exists(_) => per_key(Command::Exists, MergeKind::Sum),
        _ => (
            Pending::Ready(Reply::error(
                "CROSSSLOT Keys in request don't hash to the same slot",
            )),
            name,
            false,
        ),
    }
}

/// The entity all keys share, if they do.
fn one_entity(keys: &[&Bytes]) -> Option<Bytes> {
    let first = entity_of(keys.first()?);
    keys.iter()
        .all(|k| entity_of(k) == first)
        .then(|| Bytes::copy_from_slice(first))
}

/// Queue a write a peer forwarded to this node (its home) on its shard now; the
/// future gives the reply. Proposed here, never forwarded again.
pub(crate) fn submit_forwarded(
    shared: &Arc<Shared>,
    entity: Bytes,
    req: Request,
) -> impl Future<Output = Reply> + Send + 'static {
    resolve(submit(shared, entity, req))
}

/// Propose a single-command write on this node (the home refused it unproposed).
pub(crate) async fn propose_here(
    shared: Arc<Shared>,
    entity: Bytes,
    argv: &[Bytes],
    request_id: u64,
) -> Reply {
    let cmd = match parse_command(argv) {
        Ok(c) => c,
        Err(e) => return Reply::error(e.to_string()),
    };
    let req = Request {
        request_id,
        ..Request::single(cmd)
    };
    resolve(submit(&shared, entity, req)).await
}

fn submit(shared: &Arc<Shared>, entity: Bytes, req: Request) -> Pending {
    if !shared.majority_reachable() && !req.stale_ok {
        return Pending::Ready(Reply::error(
            "CLUSTERDOWN The cluster is down: no majority of replicas is reachable",
        ));
    }
    if entity.len() > node::codec::MAX_ENTITY_LEN {
        return Pending::Ready(Reply::error("ERR key too long"));
    }
    let shard = &shared.shards[(route(&entity) % shared.shards.len() as u64) as usize];
    let (tx, rx) = oneshot::channel();
    match shard.try_send(ShardInput::Request {
        entity,
        req,
        reply: tx,
    }) {
        Ok(()) => Pending::One(rx),
        Err(_) => {
            metrics::counter!("paxosstore_busy_total").increment(1);
            Pending::Ready(Reply::error("BUSY the server is overloaded, try again"))
        }
    }
}

/// One entity as this node's storage holds it.
struct Stored {
    entity: Bytes,
    /// The state of the highest record flagged chosen on disk. (A write is answered
    /// once its acceptances are durable, possibly before the chosen flag is: the
    /// newest write may be missing here for a moment.)
    chosen: Option<node::kv::KvState>,
    /// Keys live at `now_ms` in any stored record's state, chosen or only accepted.
    keys: std::collections::BTreeSet<Bytes>,
}

/// Every entity in this node's storage. Blocking: a scan of the node's storage.
fn stored_entities(shared: &Shared, now_ms: i64) -> Result<Vec<Stored>, String> {
    let mut names = Vec::new();
    shared
        .storage
        .for_each_entity(&mut |e| {
            names.push(Bytes::copy_from_slice(e));
            true
        })
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(names.len());
    for entity in names {
        let img = shared.storage.load(&entity).map_err(|e| e.to_string())?;
        let mut chosen: Option<(u64, node::kv::KvState)> = None;
        let mut keys = std::collections::BTreeSet::new();
        for (entry, raw) in &img.records {
            let rec = node::codec::decode_record(raw).map_err(|e| e.to_string())?;
            if rec.value.is_empty() {
                continue;
            }
            let state = node::kv::KvState::decode(&rec.value).map_err(|e| format!("{e:?}"))?;
            keys.extend(
                state
                    .keys
                    .iter()
                    .filter(|(_, e)| e.is_live(now_ms))
                    .map(|(k, _)| k.clone()),
            );
            if rec.chosen && chosen.as_ref().is_none_or(|(e, _)| entry > e) {
                chosen = Some((*entry, state));
            }
        }
        out.push(Stored {
            entity,
            chosen: chosen.map(|(_, s)| s),
            keys,
        });
    }
    Ok(out)
}

fn wall_ms() -> i64 {
    crate::wallclock::wall_ms()
}

/// DBSIZE: the live keys of the entities in this node's storage, each entity's count
/// confirmed by one linearizable `EXISTS` read of the keys any of its stored records
/// holds (a stored record may be stale, or accepted but not yet chosen). A scan,
/// O(entities), plus one read per entity; entities this node never stored are missed.
async fn dbsize(shared: Arc<Shared>) -> Reply {
    const WINDOW: usize = 256;
    let now = wall_ms();
    let s = shared.clone();
    let work: Vec<(Bytes, Vec<Bytes>)> =
        match tokio::task::spawn_blocking(move || stored_entities(&s, now)).await {
            Ok(Ok(stored)) => stored
                .into_iter()
                .filter(|e| !e.keys.is_empty())
                .map(|e| (e.entity, e.keys.into_iter().collect()))
                .collect(),
            Ok(Err(e)) => return Reply::error(format!("ERR storage: {e}")),
            Err(_) => return Reply::error("ERR internal: scan failed"),
        };
    let mut total = 0i64;
    for chunk in work.chunks(WINDOW) {
        let waits: Vec<_> = chunk
            .iter()
            .map(|(entity, keys)| {
                let req = Request::single(Command::Exists(keys.clone()));
                submit(&shared, entity.clone(), req)
            })
            .collect();
        for p in waits {
            match Box::pin(resolve(p)).await {
                Reply::Integer(n) => total += n,
                err @ Reply::Error(_) => return err,
                _ => {}
            }
        }
    }
    Reply::Integer(total)
}

/// KEYS: the keys of this node's stored entities that match `pattern` (Redis's glob),
/// each confirmed by a linearizable TYPE read — a stored record may be stale, or
/// accepted but not chosen. Sorted. Keys of an entity this node never stored are
/// missed; O(entities) scan plus one read per matching key.
async fn keys(shared: Arc<Shared>, pattern: Bytes) -> Reply {
    const WINDOW: usize = 256;
    let now = wall_ms();
    let s = shared.clone();
    let scan = tokio::task::spawn_blocking(move || {
        // A lone `*` lists every key (also the empty one, as in Redis).
        let all = pattern.as_ref() == b"*";
        stored_entities(&s, now).map(|stored| {
            let mut out = Vec::new();
            for e in stored {
                for k in e.keys {
                    if all || crate::glob::matches(&pattern, &k) {
                        out.push((e.entity.clone(), k));
                    }
                }
            }
            out
        })
    })
    .await;
    let candidates = match scan {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Reply::error(format!("ERR storage: {e}")),
        Err(_) => return Reply::error("ERR internal: scan failed"),
    };
    let mut found = Vec::new();
    for chunk in candidates.chunks(WINDOW) {
        let waits: Vec<_> = chunk
            .iter()
            .map(|(entity, key)| {
                let req = Request::single(Command::Type(key.clone()));
                (key, submit(&shared, entity.clone(), req))
            })
            .collect();
        for (key, p) in waits {
            match Box::pin(resolve(p)).await {
                Reply::Simple(t) if t.as_ref() as &[u8] != b"none" => found.push(key.clone()),
                err @ Reply::Error(_) => return err,
                _ => {}
            }
        }
    }
    found.sort();
    Reply::Array(found.into_iter().map(Reply::Bulk).collect())
}

/// FLUSHALL/FLUSHDB: for every entity this node has stored, a replicated DEL of the
/// keys its stored records hold (every record, so a write acknowledged before its
/// chosen flag reached the disk is included; deleting a key that is already gone is
/// harmless). Keys written concurrently may survive; entities this node never stored
/// are not seen.
async fn flush(shared: Arc<Shared>) -> Reply {
    let s = shared.clone();
    let now = wall_ms();
    let stored = match tokio::task::spawn_blocking(move || stored_entities(&s, now)).await {
        Ok(Ok(stored)) => stored,
        Ok(Err(e)) => return Reply::error(format!("ERR storage: {e}")),
        Err(_) => return Reply::error("ERR internal: scan failed"),
    };
    // A bounded window of DELs at a time (a big keyspace must not flood the shard
    // queues), each retried when its outcome is unknown or it lost to other writers:
    // deleting keys again is harmless.
    const WINDOW: usize = 64;
    const ATTEMPTS: usize = 4;
    let work: Vec<(Bytes, Vec<Bytes>)> = stored
        .into_iter()
        .filter(|s| !s.keys.is_empty())
        .map(|s| (s.entity, s.keys.into_iter().collect()))
        .collect();
    let mut first_err = None;
    for chunk in work.chunks(WINDOW) {
        let mut todo: Vec<&(Bytes, Vec<Bytes>)> = chunk.iter().collect();
        for attempt in 1..=ATTEMPTS {
            let waits: Vec<_> = todo
                .iter()
                .map(|(entity, keys)| {
                    let req = Request {
                        multi: true,
                        ..Request::single(Command::Del(keys.clone()))
                    };
                    submit(&shared, entity.clone(), req)
                })
                .collect();
            let mut again = Vec::new();
            for (item, p) in todo.into_iter().zip(waits) {
                let err = match Box::pin(resolve(p)).await {
                    Reply::Error(e) => Some(e),
                    Reply::Array(items) => items.into_iter().find_map(|r| match r {
                        Reply::Error(e) => Some(e),
                        _ => None,
                    }),
                    _ => None,
                };
                let Some(e) = err else { continue };
                // Unknown outcome, lost to other writers, or a full queue (`-BUSY`,
                // or the storage queue's `... (BUSY)`): try again.
                let retry = e.starts_with("TIMEOUT")
                    || e.starts_with("TRYAGAIN")
                    || e.starts_with("BUSY")
                    || e.ends_with("(BUSY)");
                if retry && attempt < ATTEMPTS {
                    again.push(item);
                } else {
                    first_err.get_or_insert(e);
                }
            }
            if again.is_empty() {
                break;
            }
            // Give full queues a moment to drain before the next attempt.
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            todo = again;
        }
    }
    first_err.map_or_else(Reply::ok, Reply::Error)
}

/// Whether the connection's user may run `cmd` (AUTH, HELLO, QUIT and RESET always).
fn may_run(conn: &Conn, shared: &Shared, cmd: &Command) -> bool {
    let name = crate::acl::acl_name(cmd);
    match conn.user.and_then(|u| shared.acl.user(u)) {
        Some(u) => u.may_run(name),
        None => matches!(
            cmd,
            Command::Auth { .. } | Command::Hello { .. } | Command::Quit | Command::Reset
        ),
    }
}

fn noperm(conn: &Conn, shared: &Shared, cmd: &Command) -> Reply {
    let user = conn
        .user
        .and_then(|u| shared.acl.user(u))
        .map_or("", |u| u.name.as_str());
    Reply::error(format!(
        "NOPERM User {user} has no permissions to run the '{}' command",
        crate::acl::acl_name(cmd)
    ))
}

/// AUTH / HELLO AUTH: on success the connection becomes that user; on failure it
/// keeps its current one (as in Redis).
fn auth(conn: &mut Conn, shared: &Shared, username: Option<&[u8]>, password: &[u8]) -> Reply {
    use crate::acl::AuthOutcome;
    match shared.acl.authenticate(username, password) {
        AuthOutcome::Ok(u) => {
            conn.user = Some(u);
            Reply::ok()
        }
        AuthOutcome::NoPasswordConfigured => Reply::error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"),
        AuthOutcome::WrongPass => {
            metrics::counter!("paxosstore_auth_failures_total").increment(1);
            Reply::error("WRONGPASS invalid username-password pair or user is disabled.")
        }
    }
}

fn hello_reply(conn: &Conn, shared: &Arc<Shared>) -> Reply {
    let s = |x: &str| Reply::Bulk(Bytes::copy_from_slice(x.as_bytes()));
    Reply::Map(vec![
        (s("server"), s("redis")),
        (s("version"), s("7.0.0")),
        (s("proto"), Reply::Integer(conn.proto as i64)),
        (s("id"), Reply::Integer(conn.id as i64)),
        (s("mode"), s("cluster")),
        (s("role"), s("master")),
        (s("modules"), Reply::Array(Vec::new())),
        (s("paxosstore_node"), Reply::Integer(shared.cfg.id as i64)),
    ])
}

fn client_cmd(conn: &mut Conn, shared: &Shared, c: ClientCommand) -> Reply {
    match c {
        ClientCommand::SetName(n) => {
            conn.name = if n.is_empty() { None } else { Some(n) };
            Reply::ok()
        }
        ClientCommand::GetName => conn.name.clone().map_or(Reply::Null, Reply::Bulk),
        ClientCommand::Id => Reply::Integer(conn.id as i64),
        ClientCommand::Info => {
            conn.publish(shared);
            Reply::Bulk(Bytes::from(format!("{}\n", conn.info.line(Instant::now()))))
        }
        ClientCommand::List => {
            conn.publish(shared);
            let now = Instant::now();
            let mut text = String::new();
            for c in shared.registry.snapshot() {
                text.push_str(&c.line(now));
                text.push('\n');
            }
            Reply::Bulk(Bytes::from(text))
        }
        ClientCommand::Kill(k) => {
            let old_form = matches!(k, ClientKill::Addr(_));
            let mut killed = 0;
            for c in shared.registry.snapshot() {
                let hit = match &k {
                    ClientKill::Addr(a) => c.addr.as_bytes() == a.as_ref(),
                    ClientKill::Filters {
                        id,
                        addr,
                        laddr,
                        skipme,
                    } => {
                        id.is_none_or(|i| i == c.id)
                            && addr
                                .as_ref()
                                .is_none_or(|a| c.addr.as_bytes() == a.as_ref())
                            && laddr
                                .as_ref()
                                .is_none_or(|a| c.laddr.as_bytes() == a.as_ref())
                            && !(*skipme && c.id == conn.id)
                    }
                };
                if hit {
                    c.kill.notify_one();
                    killed += 1;
                }
            }
            match (old_form, killed) {
                (true, 0) => Reply::error("ERR No such client"),
                (true, _) => Reply::ok(),
                (false, n) => Reply::Integer(n),
            }
        }
        ClientCommand::Help => help(&[
            "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GETNAME",
            "SETNAME <name>",
            "ID",
            "INFO",
            "LIST",
            "KILL <ip:port> | KILL [ID <id>] [ADDR <ip:port>] [LADDR <ip:port>] [SKIPME yes|no]",
            "HELP",
        ]),
    }
}

/// A `HELP` subcommand's reply: one simple string a line.
pub(crate) fn help(lines: &[&'static str]) -> Reply {
    Reply::Array(lines.iter().map(|l| Reply::simple(l)).collect())
}

fn acl_cmd(conn: &Conn, shared: &Shared, c: AclCommand) -> Reply {
    match c {
        AclCommand::WhoAmI => match conn.user.and_then(|u| shared.acl.user(u)) {
            Some(u) => Reply::Bulk(Bytes::copy_from_slice(u.name.as_bytes())),
            None => Reply::Null,
        },
        AclCommand::List => Reply::Array(
            shared
                .acl
                .users()
                .iter()
                .map(|u| Reply::Bulk(Bytes::from(u.describe())))
                .collect(),
        ),
        AclCommand::Help => help(&[
            "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "WHOAMI",
            "LIST",
            "HELP",
        ]),
    }
}

/// INFO keyspace_hits/misses: GET-family and MGET lookups, from their replies.
fn count_lookups(reg: &crate::info::Registry, name: &str, reply: &Reply) {
    match (name, reply) {
        ("get" | "getdel" | "getex" | "getset" | "vget", Reply::Null | Reply::NullArray) => {
            reg.lookup(false)
        }
        ("get" | "getdel" | "getex" | "getset", Reply::Bulk(_)) | ("vget", Reply::Array(_)) => {
            reg.lookup(true)
        }
        ("mget", Reply::Array(items)) => {
            for i in items {
                reg.lookup(!matches!(i, Reply::Null));
            }
        }
        _ => {}
    }
}

fn command_cmd(c: CommandCommand) -> Reply {
    let names = || resp::command::supported_commands();
    match c {
        CommandCommand::Count => Reply::Integer(names().count() as i64),
        CommandCommand::Docs(_) => Reply::Map(Vec::new()),
        CommandCommand::List => Reply::Array(
            names()
                .map(|(name, _)| Reply::Bulk(Bytes::from_static(name.as_bytes())))
                .collect(),
        ),
        CommandCommand::Info(wanted) if !wanted.is_empty() => Reply::Array(
            wanted
                .iter()
                .map(|w| {
                    names()
                        .find(|(name, _)| name.as_bytes().eq_ignore_ascii_case(w))
                        .map_or(Reply::NullArray, |(name, arity)| command_entry(name, arity))
                })
                .collect(),
        ),
        CommandCommand::Help => help(&[
            "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "(no subcommand)",
            "COUNT",
            "INFO [<command-name> ...]",
            "LIST",
            "DOCS [<command-name> ...]",
            "HELP",
        ]),
        _ => Reply::Array(
            names()
                .map(|(name, arity)| command_entry(name, arity))
                .collect(),
        ),
    }
}

/// One command as `COMMAND` describes it: name, arity, flags, first key, last key,
/// step, ACL categories. Cluster-aware clients find a command's keys from it.
fn command_entry(name: &'static str, arity: i32) -> Reply {
    let (first, last, step) = resp::command::key_positions(name);
    let bulk = |s: &str| Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()));
    let mut categories = crate::acl::categories_of(name);
    if categories.is_empty() {
        // A container (CLIENT, ACL, CLUSTER): the categories of its subcommands.
        let prefix = format!("{name}|");
        for sub in crate::acl::known_names().filter(|n| n.starts_with(&prefix)) {
            for c in crate::acl::categories_of(sub) {
                if !categories.contains(&c) {
                    categories.push(c);
                }
            }
        }
    }
    Reply::Array(vec![
        bulk(name),
        Reply::Integer(i64::from(arity)),
        Reply::Set(
            resp::command::command_flags(name)
                .iter()
                .map(|f| Reply::Simple(Bytes::from_static(f.as_bytes())))
                .collect(),
        ),
        Reply::Integer(first),
        Reply::Integer(last),
        Reply::Integer(step),
        Reply::Set(
            categories
                .iter()
                .map(|c| Reply::Simple(Bytes::from(c.clone())))
                .collect(),
        ),
    ])
}

/// INFO: the requested sections; the keyspace section scans this node's storage.
async fn info(shared: Arc<Shared>, args: Vec<Bytes>) -> Reply {
    let sections = crate::info::sections(&args);
    let keyspace = if sections.contains(&"keyspace") {
        let now = wall_ms();
        let s = shared.clone();
        match tokio::task::spawn_blocking(move || stored_entities(&s, now)).await {
            Ok(Ok(stored)) => {
                let (mut keys, mut expires) = (0u64, 0u64);
                for st in stored.iter().filter_map(|e| e.chosen.as_ref()) {
                    for (_, e) in st.keys.iter().filter(|(_, e)| e.is_live(now)) {
                        keys += 1;
                        expires += u64::from(e.expire_at_ms.is_some());
                    }
                }
                Some((keys, expires))
            }
            Ok(Err(e)) => return Reply::error(format!("ERR storage: {e}")),
            Err(_) => return Reply::error("ERR internal: scan failed"),
        }
    } else {
        None
    };
    let members = shared.peer_states();
    let input = crate::info::InfoInput {
        node_id: shared.cfg.id,
        uptime_s: shared.started.elapsed().as_secs(),
        tcp_port: crate::config::resolve("client_addr", &shared.cfg.client_addr)
            .map_or(0, |a| a.port()),
        max_clients: shared.cfg.max_clients,
        connected_clients: shared.registry.len(),
        registry: &shared.registry,
        members: shared
            .cfg
            .members
            .iter()
            .map(|m| {
                let st = members.get(&m.id).cloned().unwrap_or_else(|| "down".into());
                (m.id, m.peer.clone(), st)
            })
            .collect(),
        majority_reachable: shared.majority_reachable(),
        cluster_enabled: shared.cfg.members.iter().all(|m| m.client.is_some()),
        keyspace,
    };
    Reply::Verbatim {
        format: *b"txt",
        text: Bytes::from(crate::info::render(&input, &sections)),
    }
}

#[cfg(unix)]
fn raw_fd(sock: &TcpStream) -> i64 {
    use std::os::fd::AsRawFd;
    i64::from(sock.as_raw_fd())
}

#[cfg(not(unix))]
fn raw_fd(_: &TcpStream) -> i64 {
    -1
}
