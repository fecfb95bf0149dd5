//! Static facts about a parsed command: its name, the keys it touches and
//! whether it writes. The node uses `keys` to route a command to the
//! entities (hash tags) it involves, and `is_write` to decide between a
//! local read and a Paxos round.

use bytes::Bytes;

use super::{Command as Cmd, ExpireKind};

impl Cmd {
    /// Redis's lowercase command name (container name for `CLIENT`/`COMMAND`).
    pub fn name(&self) -> &'static str {
        use Cmd::*;
        match self {
            Ping(_) => "ping",
            Echo(_) => "echo",
            Hello { .. } => "hello",
            Auth { .. } => "auth",
            Select(_) => "select",
            Quit => "quit",
            Reset => "reset",
            Client(_) => "client",
            Acl(_) => "acl",
            Cluster(_) => "cluster",
            Cmd::Command(_) => "command",
            Info(_) => "info",
            FlushAll(_) => "flushall",
            FlushDb(_) => "flushdb",
            DbSize => "dbsize",
            Keys(_) => "keys",
            Get(_) => "get",
            Set { .. } => "set",
            SetNx { .. } => "setnx",
            SetEx { .. } => "setex",
            PSetEx { .. } => "psetex",
            GetSet { .. } => "getset",
            GetDel(_) => "getdel",
            GetEx { .. } => "getex",
            MGet(_) => "mget",
            MSet(_) => "mset",
            MSetNx(_) => "msetnx",
            Del(_) => "del",
            Unlink(_) => "unlink",
            Exists(_) => "exists",
            Incr(_) => "incr",
            IncrBy { .. } => "incrby",
            Decr(_) => "decr",
            DecrBy { .. } => "decrby",
            IncrByFloat { .. } => "incrbyfloat",
            Append { .. } => "append",
            StrLen(_) => "strlen",
            GetRange { .. } => "getrange",
            SetRange { .. } => "setrange",
            Type(_) => "type",
            Rename { nx: false, .. } => "rename",
            Rename { nx: true, .. } => "renamenx",
            Expire { kind, .. } => match kind {
                ExpireKind::Expire => "expire",
                ExpireKind::PExpire => "pexpire",
                ExpireKind::ExpireAt => "expireat",
                ExpireKind::PExpireAt => "pexpireat",
            },
            Ttl(_) => "ttl",
            PTtl(_) => "pttl",
            Persist(_) => "persist",
            Multi => "multi",
            Exec => "exec",
            Discard => "discard",
            Watch(_) => "watch",
            Unwatch => "unwatch",
            ReadOnly => "readonly",
            ReadWrite => "readwrite",
            VGet(_) => "vget",
            VSet { .. } => "vset",
        }
    }

    /// The keys this command reads or writes, in argument order. `WATCH`
    /// counts (its keys must be routed like reads); `FLUSH*` touch every key
    /// but name none, so callers must treat them via [`Command::is_write`].
    pub fn keys(&self) -> Vec<&Bytes> {
        use Cmd::*;
        match self {
            Get(k) | GetDel(k) | Incr(k) | Decr(k) | StrLen(k) | Type(k) | Ttl(k) | PTtl(k)
            | Persist(k) | VGet(k) => vec![k],
            Set { key, .. }
            | SetNx { key, .. }
            | SetEx { key, .. }
            | PSetEx { key, .. }
            | GetSet { key, .. }
            | GetEx { key, .. }
            | IncrBy { key, .. }
            | DecrBy { key, .. }
            | IncrByFloat { key, .. }
            | Append { key, .. }
            | GetRange { key, .. }
            | SetRange { key, .. }
            | Expire { key, .. }
            | VSet { key, .. } => vec![key],
            Rename { from, to, .. } => vec![from, to],
            MGet(ks) | Del(ks) | Unlink(ks) | Exists(ks) | Watch(ks) => ks.iter().collect(),
            MSet(kvs) | MSetNx(kvs) => kvs.iter().map(|(k, _)| k).collect(),
            Ping(_)
            | Echo(_)
            | Hello { .. }
            | Auth { .. }
            | Select(_)
            | Quit
            | Reset
            | Client(_)
            | Acl(_)
            | Cluster(_)
            | Cmd::Command(_)
            | Info(_)
            | FlushAll(_)
            | FlushDb(_)
            | DbSize
            | Keys(_)
            | Multi
            | Exec
            | Discard
            | Unwatch
            | ReadOnly
            | ReadWrite => Vec::new(),
        }
    }

    /// Whether the command may modify the keyspace (Redis's `write` flag).
    /// `GETEX` is a write even without options, as in Redis.
    pub fn is_write(&self) -> bool {
        use Cmd::*;
        match self {
            Set { .. }
            | SetNx { .. }
            | SetEx { .. }
            | PSetEx { .. }
            | GetSet { .. }
            | GetDel(_)
            | GetEx { .. }
            | MSet(_)
            | MSetNx(_)
            | Del(_)
            | Unlink(_)
            | Incr(_)
            | IncrBy { .. }
            | Decr(_)
            | DecrBy { .. }
            | IncrByFloat { .. }
            | Append { .. }
            | SetRange { .. }
            | Expire { .. }
            | Persist(_)
            | Rename { .. }
            | FlushAll(_)
            | FlushDb(_)
            | VSet { .. } => true,
            Get(_)
            | MGet(_)
            | Exists(_)
            | StrLen(_)
            | GetRange { .. }
            | Type(_)
            | Ttl(_)
            | PTtl(_)
            | VGet(_)
            | DbSize
            | Keys(_)
            | Ping(_)
            | Echo(_)
            | Hello { .. }
            | Auth { .. }
            | Select(_)
            | Quit
            | Reset
            | Info(_)
            | Multi
            | Exec
            | Discard
            | Watch(_)
            | Unwatch
            | ReadOnly
            | ReadWrite
            | Cmd::Command(_) => false,
            Client(_) | Acl(_) | Cluster(_) => false,
        }
    }
}

/// Redis's key positions of a command, by its lowercase name: (first key, last key,
/// step), 1-based, a negative last counting from the end, (0, 0, 0) for none. What
/// `COMMAND` reports, and what cluster-aware clients (redis-py's `RedisCluster`, ...)
/// use to find a command's keys and route it.
pub fn key_positions(name: &str) -> (i64, i64, i64) {
    match name {
        "mget" | "del" | "unlink" | "exists" | "watch" => (1, -1, 1),
        "mset" | "msetnx" => (1, -1, 2),
        "rename" | "renamenx" => (1, 2, 1),
        "get" | "set" | "setnx" | "setex" | "psetex" | "getset" | "getdel" | "getex" | "incr"
        | "incrby" | "decr" | "decrby" | "incrbyfloat" | "append" | "strlen" | "getrange"
        | "setrange" | "type" | "expire" | "pexpire" | "expireat" | "pexpireat" | "ttl"
        | "pttl" | "persist" | "vget" | "vset" => (1, 1, 1),
        _ => (0, 0, 0),
    }
}

/// Redis's command flags as `COMMAND` reports them (the ones clients act on:
/// `write`, `readonly`, `denyoom`, `admin`, `fast`, `noscript`, `loading`, `stale`).
pub fn command_flags(name: &str) -> &'static [&'static str] {
    match name {
        "set" | "setex" | "psetex" | "getset" | "mset" | "msetnx" | "append" | "setrange"
        | "incrbyfloat" | "vset" => &["write", "denyoom"],
        "setnx" | "incr" | "incrby" | "decr" | "decrby" => &["write", "denyoom", "fast"],
        "getdel" | "getex" | "unlink" | "expire" | "pexpire" | "expireat" | "pexpireat"
        | "persist" | "renamenx" => &["write", "fast"],
        "del" | "rename" => &["write"],
        "flushall" | "flushdb" => &["write"],
        "get" | "mget" | "strlen" | "exists" | "type" | "ttl" | "pttl" | "dbsize" | "vget" => {
            &["readonly", "fast"]
        }
        "getrange" | "keys" => &["readonly"],
        "ping" | "echo" | "select" | "readonly" | "readwrite" | "multi" | "discard" | "watch"
        | "unwatch" => &["fast", "loading", "stale"],
        "hello" | "auth" | "quit" | "reset" => &["noscript", "loading", "stale", "fast"],
        "info" | "client" | "acl" | "command" | "cluster" => &["loading", "stale"],
        "exec" => &["noscript", "loading", "stale"],
        _ => &[],
    }
}
