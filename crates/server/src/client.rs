//! One task per client connection: parse RESP, handle connection-level commands here,
//! route entity commands to their shard, write replies in order (pipelining).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use node::shard::Request;
use resp::command::{ClientCommand, CommandCommand};
use resp::{entity_of, parse_command, parse_request, Command, Limits, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

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
    authed: bool,
    readonly: bool,
    name: Option<Bytes>,
    multi: Option<Vec<Queued>>,
    multi_failed: bool,
    created: Instant,
}

static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

/// Serve one client until it disconnects, errs, or sends QUIT.
pub async fn serve(mut sock: TcpStream, shared: Arc<Shared>) {
    let _ = sock.set_nodelay(true);
    let limits = Limits {
        max_bulk_len: shared.cfg.max_value_bytes,
        max_args: shared.cfg.max_args,
        ..Limits::default()
    };
    let mut conn = Conn {
        id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
        proto: 2,
        authed: shared.cfg.requirepass.is_none(),
        readonly: false,
        name: None,
        multi: None,
        multi_failed: false,
        created: Instant::now(),
    };
    let idle = match shared.cfg.client_idle_timeout_s {
        0 => Duration::from_secs(u64::MAX / 4),
        s => Duration::from_secs(s),
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut out = BytesMut::with_capacity(16 * 1024);
    loop {
        let read = tokio::time::timeout(idle, sock.read_buf(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
        let mut pending: VecDeque<(Pending, &'static str, Instant)> = VecDeque::new();
        let mut quit = false;
        loop {
            match parse_request(&mut buf, &limits) {
                Ok(Some(args)) => {
                    let started = Instant::now();
                    let (p, name, q) = dispatch(&mut conn, &shared, &args);
                    pending.push_back((p, name, started));
                    if q {
                        quit = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // Redis answers the protocol error and closes the connection.
                    pending.push_back((
                        Pending::Ready(Reply::error(e.to_string())),
                        "protocol",
                        Instant::now(),
                    ));
                    quit = true;
                    break;
                }
            }
        }
        for (p, name, started) in pending {
            let reply = resolve(p).await;
            metrics::counter!("paxosstore_commands_total", "cmd" => name).increment(1);
            if matches!(reply, Reply::Error(_)) {
                metrics::counter!("paxosstore_command_errors_total", "cmd" => name).increment(1);
            }
            metrics::histogram!("paxosstore_command_seconds", "cmd" => name)
                .record(started.elapsed().as_secs_f64());
            reply.encode(conn.proto, &mut out);
        }
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

async fn resolve(p: Pending) -> Reply {
    let shard_gone = || Reply::error("ERR internal: shard unavailable");
    match p {
        Pending::Ready(r) => r,
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
        if conn.multi.is_some() || !conn.authed {
            let e = Reply::error("ERR REQID is not allowed here");
            return (Pending::Ready(e), "reqid", false);
        }
        return match parse_command(&args[2..]) {
            Ok(cmd) => route_entity_command(conn, shared, cmd, "reqid", id),
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
    if !conn.authed
        && !matches!(
            cmd,
            Command::Auth { .. } | Command::Hello { .. } | Command::Quit
        )
    {
        return (
            Pending::Ready(Reply::error("NOAUTH Authentication required.")),
            name,
            false,
        );
    }
    // Inside MULTI: queue everything but the transaction commands.
    if conn.multi.is_some()
        && !matches!(
            cmd,
            Command::Exec | Command::Discard | Command::Multi | Command::Watch(_)
        )
    {
        if cmd.keys().is_empty() && !matches!(cmd, Command::Ping(_) | Command::Echo(_)) {
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
        Command::Auth { password, .. } => ready(auth(conn, shared, &password)),
        Command::Hello {
            protover,
            auth: creds,
            setname,
        } => {
            if let Some((_, pass)) = creds {
                if let Reply::Error(e) = auth(conn, shared, &pass) {
                    return ready(Reply::Error(e));
                }
            }
            if !conn.authed {
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
            conn.readonly = false;
            conn.name = None;
            conn.authed = shared.cfg.requirepass.is_none();
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
        Command::Client(c) => ready(client_cmd(conn, c)),
        Command::Command(c) => ready(command_cmd(c)),
        Command::Info(_) => ready(Reply::Verbatim {
            format: *b"txt",
            text: Bytes::from(info_text(conn, shared)),
        }),
        Command::Multi => {
            if conn.multi.is_some() {
                return ready(Reply::error("ERR MULTI calls can not be nested"));
            }
            conn.multi = Some(Vec::new());
            conn.multi_failed = false;
            ready(Reply::ok())
        }
        Command::Discard => match conn.multi.take() {
            Some(_) => ready(Reply::ok()),
            None => ready(Reply::error("ERR DISCARD without MULTI")),
        },
        Command::Exec => {
            let Some(queued) = conn.multi.take() else {
                return ready(Reply::error("ERR EXEC without MULTI"));
            };
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
            if cmds.is_empty() {
                return ready(Reply::Array(layout.into_iter().flatten().collect()));
            }
            let keys: Vec<&Bytes> = cmds.iter().flat_map(|c| c.keys()).collect();
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
            };
            match submit(shared, entity, req) {
                Pending::One(rx) => (Pending::Exec(rx, layout), name, false),
                other => (other, name, false),
            }
        }
        Command::Watch(_) | Command::Unwatch => ready(Reply::error(
            "ERR WATCH is not supported yet by this server",
        )),
        Command::DbSize | Command::FlushAll(_) | Command::FlushDb(_) => ready(Reply::error(
            format!("ERR '{name}' is not supported yet by this server"),
        )),
        cmd => route_entity_command(conn, shared, cmd, name, 0),
    }
}

fn route_entity_command(
    conn: &Conn,
    shared: &Arc<Shared>,
    cmd: Command,
    name: &'static str,
    request_id: u64,
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
        let req = Request {
            cmds: vec![cmd],
            multi: false,
            stale_ok,
            request_id,
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
                    cmds: vec![mk(vec![k.clone()])],
                    multi: false,
                    stale_ok,
                    request_id: 0,
                };
                match submit(shared, Bytes::copy_from_slice(entity_of(k)), req) {
                    Pending::One(rx) => rx,
                    Pending::Ready(r) => {
                        let (tx, rx) = oneshot::channel();
                        let _ = tx.send(r);
                        rx
                    }
                    // `submit` only returns `One` or `Ready`.
                    Pending::Merge(..) | Pending::Exec(..) => oneshot::channel().1,
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

fn auth(conn: &mut Conn, shared: &Arc<Shared>, password: &[u8]) -> Reply {
    match &shared.cfg.requirepass {
        None => Reply::error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"),
        Some(p) if p.as_bytes() == password => {
            conn.authed = true;
            Reply::ok()
        }
        Some(_) => Reply::error("WRONGPASS invalid username-password pair or user is disabled."),
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

fn client_cmd(conn: &mut Conn, c: ClientCommand) -> Reply {
    match c {
        ClientCommand::SetName(n) => {
            conn.name = if n.is_empty() { None } else { Some(n) };
            Reply::ok()
        }
        ClientCommand::GetName => conn.name.clone().map_or(Reply::Null, Reply::Bulk),
        ClientCommand::Id => Reply::Integer(conn.id as i64),
        ClientCommand::Info | ClientCommand::List => Reply::Bulk(Bytes::from(format!(
            "id={} name={} age={} db=0 resp={}\n",
            conn.id,
            conn.name
                .as_ref()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default(),
            conn.created.elapsed().as_secs(),
            conn.proto
        ))),
        #[allow(unreachable_patterns)]
        _ => Reply::error("ERR unknown subcommand"),
    }
}

fn command_cmd(c: CommandCommand) -> Reply {
    match c {
        CommandCommand::Count => Reply::Integer(resp::command::supported_commands().count() as i64),
        CommandCommand::Docs(_) => Reply::Map(Vec::new()),
        _ => Reply::Array(
            resp::command::supported_commands()
                .map(|(name, arity)| {
                    Reply::Array(vec![
                        Reply::Bulk(Bytes::copy_from_slice(name.as_bytes())),
                        Reply::Integer(arity as i64),
                    ])
                })
                .collect(),
        ),
    }
}

fn info_text(conn: &Conn, shared: &Arc<Shared>) -> String {
    let mut s = String::new();
    s.push_str("# Server\r\nredis_version:7.0.0\r\npaxosstore_version:");
    s.push_str(env!("CARGO_PKG_VERSION"));
    s.push_str(&format!(
        "\r\nnode_id:{}\r\nuptime_in_seconds:{}\r\n",
        shared.cfg.id,
        shared.started.elapsed().as_secs()
    ));
    s.push_str(&format!(
        "\r\n# Clients\r\nconnected_clients:{}\r\n",
        shared.clients.load(Ordering::Relaxed)
    ));
    s.push_str("\r\n# Cluster\r\ncluster_enabled:0\r\npaxosstore_members:");
    let states: BTreeMap<u8, String> = shared.peer_states();
    s.push_str(
        &states
            .iter()
            .map(|(id, st)| format!("{id}={st}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    s.push_str(&format!(
        "\r\nmajority_reachable:{}\r\n",
        u8::from(shared.majority_reachable())
    ));
    let _ = conn;
    s
}
