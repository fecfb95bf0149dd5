//! Argument-vector → [`Command`] parsing with Redis 7's checks and texts.

use bytes::Bytes;

use super::*;
use crate::num::{parse_f64, parse_i64};

/// Redis command table subset: (lowercase name, arity). Positive arity is
/// exact, negative is a minimum, counting the command name itself.
const TABLE: &[(&str, i32)] = &[
    ("ping", -1),
    ("echo", 2),
    ("hello", -1),
    ("auth", -2),
    ("select", 2),
    ("quit", -1),
    ("reset", 1),
    ("client", -2),
    ("acl", -2),
    ("cluster", -2),
    ("command", -1),
    ("info", -1),
    ("flushall", -1),
    ("flushdb", -1),
    ("dbsize", 1),
    ("keys", 2),
    ("get", 2),
    ("set", -3),
    ("setnx", 3),
    ("setex", 4),
    ("psetex", 4),
    ("getset", 3),
    ("getdel", 2),
    ("getex", -2),
    ("mget", -2),
    ("mset", -3),
    ("msetnx", -3),
    ("del", -2),
    ("unlink", -2),
    ("exists", -2),
    ("incr", 2),
    ("incrby", 3),
    ("decr", 2),
    ("decrby", 3),
    ("incrbyfloat", 3),
    ("append", 3),
    ("strlen", 2),
    ("getrange", 4),
    ("setrange", 4),
    ("type", 2),
    ("rename", 3),
    ("renamenx", 3),
    ("expire", -3),
    ("pexpire", -3),
    ("expireat", -3),
    ("pexpireat", -3),
    ("ttl", 2),
    ("pttl", 2),
    ("persist", 2),
    ("multi", 1),
    ("exec", 1),
    ("discard", 1),
    ("watch", -2),
    ("unwatch", 1),
    ("readonly", 1),
    ("readwrite", 1),
    ("vget", 2),
    ("vset", 4),
];

const CLIENT_SUBS: &[(&str, &str, i32)] = &[
    ("setname", "client|setname", 3),
    ("getname", "client|getname", 2),
    ("id", "client|id", 2),
    ("info", "client|info", 2),
    ("list", "client|list", -2),
    ("kill", "client|kill", -3),
    ("help", "client|help", 2),
];

const ACL_SUBS: &[(&str, &str, i32)] = &[
    ("whoami", "acl|whoami", 2),
    ("list", "acl|list", 2),
    ("help", "acl|help", 2),
];

const CLUSTER_SUBS: &[(&str, &str, i32)] = &[
    ("slots", "cluster|slots", 2),
    ("nodes", "cluster|nodes", 2),
    ("shards", "cluster|shards", 2),
    ("keyslot", "cluster|keyslot", 3),
    ("info", "cluster|info", 2),
    ("myid", "cluster|myid", 2),
    ("help", "cluster|help", 2),
];

const COMMAND_SUBS: &[(&str, &str, i32)] = &[
    ("count", "command|count", 2),
    ("info", "command|info", -2),
    ("docs", "command|docs", -2),
    ("list", "command|list", -2),
    ("help", "command|help", 2),
];

/// Names and arities of all supported commands (for `COMMAND COUNT`/`LIST`).
pub fn supported_commands() -> impl Iterator<Item = (&'static str, i32)> {
    TABLE.iter().copied()
}

fn arity_ok(arity: i32, argc: usize) -> bool {
    let argc = argc as i64;
    let arity = i64::from(arity);
    if arity >= 0 {
        argc == arity
    } else {
        argc >= -arity
    }
}

/// C `%.Ns` of a byte string: stops at NUL, at most `n` bytes, lossy UTF-8.
fn c_str(b: &[u8], n: usize) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len()).min(n);
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn unknown_command(args: &[Bytes]) -> CommandError {
    // Redis: for (i=1; i<argc && sdslen(args)<128; i++)
    //            args = sdscatprintf(args, "'%.*s' ", 128-sdslen(args), argv[i]);
    let mut list = String::new();
    for a in args.iter().skip(1) {
        if list.len() >= 128 {
            break;
        }
        let room = 128 - list.len();
        list.push('\'');
        list.push_str(&c_str(a, room));
        list.push_str("' ");
    }
    CommandError::UnknownCommand {
        name: c_str(&args[0], 128),
        args: list,
    }
}

fn lookup<T: Copy>(table: &[(&'static str, T)], name: &[u8]) -> Option<(&'static str, T)> {
    table
        .iter()
        .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
        .copied()
}

fn int(b: &[u8]) -> Result<i64, CommandError> {
    parse_i64(b).ok_or(CommandError::NotInteger)
}

fn is(b: &[u8], word: &str) -> bool {
    b.eq_ignore_ascii_case(word.as_bytes())
}

/// Parses and validates one command. `args[0]` is the name (any case).
pub fn parse_command(args: &[Bytes]) -> Result<Command, CommandError> {
    let first = args.first().ok_or(CommandError::Empty)?;
    let (name, arity) = lookup(TABLE, first).ok_or_else(|| unknown_command(args))?;
    if !arity_ok(arity, args.len()) {
        return Err(CommandError::WrongArity(name));
    }
    let a = args;
    let key = || a[1].clone();
    Ok(match name {
        "ping" => match a.len() {
            1 => Command::Ping(None),
            2 => Command::Ping(Some(key())),
            _ => return Err(CommandError::WrongArity("ping")),
        },
        "echo" => Command::Echo(key()),
        "hello" => parse_hello(a)?,
        "auth" => match a.len() {
            2 => Command::Auth {
                username: None,
                password: key(),
            },
            3 => Command::Auth {
                username: Some(key()),
                password: a[2].clone(),
            },
            _ => return Err(CommandError::Syntax),
        },
        "select" => {
            let idx = int(&a[1])?;
            if idx > i64::from(i32::MAX) || idx < i64::from(i32::MIN) {
                return Err(CommandError::NotInteger);
            }
            Command::Select(u32::try_from(idx).map_err(|_| CommandError::DbIndexOutOfRange)?)
        }
        "quit" => Command::Quit,
        "reset" => Command::Reset,
        "client" => Command::Client(parse_client(a)?),
        "acl" => Command::Acl(match sub(a, "ACL", ACL_SUBS)?.0 {
            "whoami" => AclCommand::WhoAmI,
            "list" => AclCommand::List,
            _ => AclCommand::Help,
        }),
        "cluster" => Command::Cluster(match sub(a, "CLUSTER", CLUSTER_SUBS)?.0 {
            "slots" => ClusterCommand::Slots,
            "nodes" => ClusterCommand::Nodes,
            "shards" => ClusterCommand::Shards,
            "keyslot" => ClusterCommand::KeySlot(a[2].clone()),
            "info" => ClusterCommand::Info,
            "myid" => ClusterCommand::MyId,
            _ => ClusterCommand::Help,
        }),
        "command" => Command::Command(parse_command_command(a)?),
        "info" => Command::Info(a[1..].to_vec()),
        "flushall" => Command::FlushAll(parse_flush(a)?),
        "flushdb" => Command::FlushDb(parse_flush(a)?),
        "dbsize" => Command::DbSize,
        "keys" => Command::Keys(key()),
        "get" => Command::Get(key()),
        "set" => {
            let (options, _) = parse_ext(&a[3..], Ext::Set)?;
            Command::Set {
                key: key(),
                value: a[2].clone(),
                options,
            }
        }
        "setnx" => Command::SetNx {
            key: key(),
            value: a[2].clone(),
        },
        "setex" | "psetex" => {
            let n = int(&a[2])?;
            let seconds = name == "setex";
            if n <= 0 || (seconds && n > i64::MAX / 1000) {
                return Err(CommandError::InvalidExpireTime(name));
            }
            let ttl_ms = if seconds { n * 1000 } else { n };
            let (key, value) = (key(), a[3].clone());
            if seconds {
                Command::SetEx { key, ttl_ms, value }
            } else {
                Command::PSetEx { key, ttl_ms, value }
            }
        }
        "getset" => Command::GetSet {
            key: key(),
            value: a[2].clone(),
        },
        "getdel" => Command::GetDel(key()),
        "getex" => {
            let (options, persist) = parse_ext(&a[2..], Ext::GetEx)?;
            let action = match (options.expiry, persist) {
                (Some(e), _) => GetExAction::Expire(e),
                (None, true) => GetExAction::Persist,
                (None, false) => GetExAction::Keep,
            };
            Command::GetEx { key: key(), action }
        }
        "mget" => Command::MGet(a[1..].to_vec()),
        "mset" | "msetnx" => {
            if a.len() & 1 == 0 {
                return Err(CommandError::WrongArity(name));
            }
            let pairs = a[1..]
                .chunks_exact(2)
                .map(|kv| (kv[0].clone(), kv[1].clone()))
                .collect();
            if name == "mset" {
                Command::MSet(pairs)
            } else {
                Command::MSetNx(pairs)
            }
        }
        "del" => Command::Del(a[1..].to_vec()),
        "unlink" => Command::Unlink(a[1..].to_vec()),
        "exists" => Command::Exists(a[1..].to_vec()),
        "incr" => Command::Incr(key()),
        "decr" => Command::Decr(key()),
        "incrby" => Command::IncrBy {
            key: key(),
            delta: int(&a[2])?,
        },
        "decrby" => {
            let delta = int(&a[2])?;
            if delta == i64::MIN {
                return Err(CommandError::DecrementOverflow);
            }
            Command::DecrBy { key: key(), delta }
        }
        "incrbyfloat" => Command::IncrByFloat {
            key: key(),
            delta: parse_f64(&a[2]).ok_or(CommandError::NotFloat)?,
        },
        "append" => Command::Append {
            key: key(),
            value: a[2].clone(),
        },
        "strlen" => Command::StrLen(key()),
        "getrange" => Command::GetRange {
            key: key(),
            start: int(&a[2])?,
            end: int(&a[3])?,
        },
        "setrange" => Command::SetRange {
            key: key(),
            offset: u64::try_from(int(&a[2])?).map_err(|_| CommandError::OffsetOutOfRange)?,
            value: a[3].clone(),
        },
        "type" => Command::Type(key()),
        "rename" | "renamenx" => Command::Rename {
            from: key(),
            to: a[2].clone(),
            nx: name == "renamenx",
        },
        "expire" => parse_expire(a, ExpireKind::Expire, name)?,
        "pexpire" => parse_expire(a, ExpireKind::PExpire, name)?,
        "expireat" => parse_expire(a, ExpireKind::ExpireAt, name)?,
        "pexpireat" => parse_expire(a, ExpireKind::PExpireAt, name)?,
        "ttl" => Command::Ttl(key()),
        "pttl" => Command::PTtl(key()),
        "persist" => Command::Persist(key()),
        "multi" => Command::Multi,
        "exec" => Command::Exec,
        "discard" => Command::Discard,
        "watch" => Command::Watch(a[1..].to_vec()),
        "unwatch" => Command::Unwatch,
        "readonly" => Command::ReadOnly,
        "readwrite" => Command::ReadWrite,
        "vget" => Command::VGet(key()),
        "vset" => Command::VSet {
            key: key(),
            value: a[2].clone(),
            version: u64::try_from(int(&a[3])?).map_err(|_| CommandError::NotInteger)?,
        },
        _ => return Err(unknown_command(args)),
    })
}

fn parse_hello(a: &[Bytes]) -> Result<Command, CommandError> {
    let mut protover = None;
    if a.len() >= 2 {
        let v = parse_i64(&a[1]).ok_or(CommandError::ProtocolVersionNotInteger)?;
        if !(2..=3).contains(&v) {
            return Err(CommandError::NoProto);
        }
        protover = Some(v as u8);
    }
    let (mut auth, mut setname) = (None, None);
    let mut j = 2;
    while j < a.len() {
        let more = a.len() - 1 - j;
        if is(&a[j], "auth") && more >= 2 {
            auth = Some((a[j + 1].clone(), a[j + 2].clone()));
            j += 3;
        } else if is(&a[j], "setname") && more >= 1 {
            setname = Some(client_name(&a[j + 1])?);
            j += 2;
        } else {
            return Err(CommandError::HelloSyntax(c_str(&a[j], usize::MAX)));
        }
    }
    Ok(Command::Hello {
        protover,
        auth,
        setname,
    })
}

/// Redis `validateClientName`: only printable non-space ASCII.
fn client_name(name: &Bytes) -> Result<Bytes, CommandError> {
    if name.iter().all(|&c| (b'!'..=b'~').contains(&c)) {
        Ok(name.clone())
    } else {
        Err(CommandError::InvalidClientName)
    }
}

/// Resolves a container command's subcommand and checks its arity.
fn sub<'t>(
    a: &[Bytes],
    container: &str,
    table: &'t [(&'static str, &'static str, i32)],
) -> Result<&'t (&'static str, &'static str, i32), CommandError> {
    let entry = table
        .iter()
        .find(|(n, _, _)| n.as_bytes().eq_ignore_ascii_case(&a[1]))
        .ok_or_else(|| CommandError::UnknownSubcommand {
            container: container.to_string(),
            sub: c_str(&a[1], 128),
        })?;
    if !arity_ok(entry.2, a.len()) {
        return Err(CommandError::WrongArity(entry.1));
    }
    Ok(entry)
}

fn parse_client(a: &[Bytes]) -> Result<ClientCommand, CommandError> {
    Ok(match sub(a, "CLIENT", CLIENT_SUBS)?.0 {
        "setname" => ClientCommand::SetName(client_name(&a[2])?),
        "getname" => ClientCommand::GetName,
        "id" => ClientCommand::Id,
        "info" => ClientCommand::Info,
        "help" => ClientCommand::Help,
        "kill" => ClientCommand::Kill(parse_client_kill(&a[2..])?),
        // Filters (TYPE/ID/USER...) are not supported yet.
        _ if a.len() > 2 => return Err(CommandError::Syntax),
        _ => ClientCommand::List,
    })
}

/// Redis `clientKillCommand` argument rules: one argument is the old form, else
/// filter/value pairs.
fn parse_client_kill(a: &[Bytes]) -> Result<ClientKill, CommandError> {
    if let [addr] = a {
        return Ok(ClientKill::Addr(addr.clone()));
    }
    if a.len() % 2 != 0 {
        return Err(CommandError::Syntax);
    }
    let (mut id, mut addr, mut laddr, mut skipme) = (None, None, None, true);
    for pair in a.chunks_exact(2) {
        let (f, v) = (&pair[0], &pair[1]);
        if is(f, "id") {
            match parse_i64(v) {
                Some(n) if n > 0 => id = Some(n as u64),
                _ => return Err(CommandError::ClientIdNotPositive),
            }
        } else if is(f, "addr") {
            addr = Some(v.clone());
        } else if is(f, "laddr") {
            laddr = Some(v.clone());
        } else if is(f, "skipme") {
            skipme = if is(v, "yes") {
                true
            } else if is(v, "no") {
                false
            } else {
                return Err(CommandError::Syntax);
            };
        } else {
            return Err(CommandError::Syntax);
        }
    }
    Ok(ClientKill::Filters {
        id,
        addr,
        laddr,
        skipme,
    })
}

fn parse_command_command(a: &[Bytes]) -> Result<CommandCommand, CommandError> {
    if a.len() == 1 {
        return Ok(CommandCommand::All);
    }
    Ok(match sub(a, "COMMAND", COMMAND_SUBS)?.0 {
        "count" => CommandCommand::Count,
        "info" => CommandCommand::Info(a[2..].to_vec()),
        "docs" => CommandCommand::Docs(a[2..].to_vec()),
        "help" => CommandCommand::Help,
        // FILTERBY is not supported yet.
        _ if a.len() > 2 => return Err(CommandError::Syntax),
        _ => CommandCommand::List,
    })
}

fn parse_flush(a: &[Bytes]) -> Result<FlushMode, CommandError> {
    match a.len() {
        1 => Ok(FlushMode::Default),
        2 if is(&a[1], "async") => Ok(FlushMode::Async),
        2 if is(&a[1], "sync") => Ok(FlushMode::Sync),
        _ => Err(CommandError::Syntax),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ext {
    Set,
    GetEx,
}

/// Redis `parseExtendedStringArgumentsOrReply`, flag-compatibility rules
/// included (e.g. `EX 1 EX 2` is allowed, last wins; `EX 1 PX 2` is not).
/// Returns the options and whether `PERSIST` was given.
fn parse_ext(opts: &[Bytes], kind: Ext) -> Result<(SetOptions, bool), CommandError> {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Unit {
        Ex,
        Px,
        ExAt,
        PxAt,
    }
    let cmd = if kind == Ext::Set { "set" } else { "getex" };
    let mut o = SetOptions::default();
    let mut persist = false;
    let mut expire: Option<(Unit, &Bytes)> = None;
    let mut j = 0;
    while j < opts.len() {
        let opt = &opts[j];
        let next = opts.get(j + 1);
        let unit = |u| expire.map(|(x, _)| x) == Some(u);
        let set = kind == Ext::Set;
        if set && is(opt, "nx") && o.condition != SetCondition::Xx {
            o.condition = SetCondition::Nx;
        } else if set && is(opt, "xx") && o.condition != SetCondition::Nx {
            o.condition = SetCondition::Xx;
        } else if set && is(opt, "get") {
            o.get = true;
        } else if set && is(opt, "keepttl") && !persist && expire.is_none() {
            o.keep_ttl = true;
        } else if !set && is(opt, "persist") && !o.keep_ttl && expire.is_none() {
            persist = true;
        } else if let (Some(u), Some(n)) = (
            [
                ("ex", Unit::Ex),
                ("px", Unit::Px),
                ("exat", Unit::ExAt),
                ("pxat", Unit::PxAt),
            ]
            .iter()
            .find(|(w, _)| is(opt, w))
            .map(|&(_, u)| u),
            next,
        ) {
            // The same unit may repeat; a different one conflicts.
            if o.keep_ttl || persist || (expire.is_some() && !unit(u)) {
                return Err(CommandError::Syntax);
            }
            expire = Some((u, n));
            j += 1;
        } else {
            return Err(CommandError::Syntax);
        }
        j += 1;
    }
    if let Some((u, raw)) = expire {
        let n = int(raw)?;
        let seconds = matches!(u, Unit::Ex | Unit::ExAt);
        if n <= 0 || (seconds && n > i64::MAX / 1000) {
            return Err(CommandError::InvalidExpireTime(cmd));
        }
        let ms = if seconds { n * 1000 } else { n };
        o.expiry = Some(match u {
            Unit::Ex | Unit::Px => Expiry::RelativeMs(ms),
            Unit::ExAt | Unit::PxAt => Expiry::UnixMs(ms),
        });
    }
    Ok((o, persist))
}

/// Redis `expireGenericCommand` argument checks: options first, then the
/// integer, then the seconds→ms overflow check.
fn parse_expire(
    a: &[Bytes],
    kind: ExpireKind,
    name: &'static str,
) -> Result<Command, CommandError> {
    let mut f = ExpireFlags::default();
    for opt in &a[3..] {
        if is(opt, "nx") {
            f.nx = true;
        } else if is(opt, "xx") {
            f.xx = true;
        } else if is(opt, "gt") {
            f.gt = true;
        } else if is(opt, "lt") {
            f.lt = true;
        } else {
            return Err(CommandError::UnsupportedOption(c_str(opt, usize::MAX)));
        }
    }
    if f.nx && (f.xx || f.gt || f.lt) {
        return Err(CommandError::NxAndXxGtLt);
    }
    if f.gt && f.lt {
        return Err(CommandError::GtAndLt);
    }
    let when = int(&a[2])?;
    let when_ms = match kind {
        ExpireKind::Expire | ExpireKind::ExpireAt => when
            .checked_mul(1000)
            .ok_or(CommandError::InvalidExpireTime(name))?,
        ExpireKind::PExpire | ExpireKind::PExpireAt => when,
    };
    Ok(Command::Expire {
        kind,
        key: a[1].clone(),
        when_ms,
        flags: f,
    })
}
