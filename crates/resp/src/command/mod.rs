//! Typed commands, parsed from a request's argument vector.
//!
//! This layer knows nothing about storage: it validates arity, options and
//! numbers with Redis 7's exact rules and error texts, so the executor only
//! deals with well-formed commands. Time-dependent checks (an `EX` that
//! overflows once added to "now") are left to the executor via
//! [`Expiry::deadline_ms`].

use bytes::Bytes;

mod meta;
mod parse;

pub use meta::{command_flags, key_positions};
pub use parse::{parse_command, supported_commands};

/// A rejected command. `Display` is the exact Redis error reply text
/// (without the leading `-`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Empty argument vector (never produced by [`crate::parse_request`]).
    #[error("ERR empty command")]
    Empty,
    /// `args` is Redis's preformatted `'a' 'b' ` list (note trailing space).
    #[error("ERR unknown command '{name}', with args beginning with: {args}")]
    UnknownCommand { name: String, args: String },
    #[error("ERR unknown subcommand '{sub}'. Try {container} HELP.")]
    UnknownSubcommand { container: String, sub: String },
    /// Carries Redis's full command name, e.g. `get` or `client|setname`.
    #[error("ERR wrong number of arguments for '{0}' command")]
    WrongArity(&'static str),
    #[error("ERR syntax error")]
    Syntax,
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    #[error("ERR value is not a valid float")]
    NotFloat,
    #[error("ERR invalid expire time in '{0}' command")]
    InvalidExpireTime(&'static str),
    #[error("ERR DB index is out of range")]
    DbIndexOutOfRange,
    #[error("ERR offset is out of range")]
    OffsetOutOfRange,
    #[error("ERR decrement would overflow")]
    DecrementOverflow,
    #[error("ERR Client names cannot contain spaces, newlines or special characters.")]
    InvalidClientName,
    #[error("ERR Protocol version is not an integer or out of range")]
    ProtocolVersionNotInteger,
    #[error("NOPROTO unsupported protocol version")]
    NoProto,
    #[error("ERR Syntax error in HELLO option '{0}'")]
    HelloSyntax(String),
    #[error("ERR Unsupported option {0}")]
    UnsupportedOption(String),
    #[error("ERR NX and XX, GT or LT options at the same time are not compatible")]
    NxAndXxGtLt,
    #[error("ERR GT and LT options at the same time are not compatible")]
    GtAndLt,
    #[error("ERR client-id should be greater than 0")]
    ClientIdNotPositive,
}

/// When a key should expire, normalised to milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// `EX`/`PX`/`SETEX`/`PSETEX`: milliseconds from now (> 0).
    RelativeMs(i64),
    /// `EXAT`/`PXAT`: absolute Unix time in milliseconds (> 0).
    UnixMs(i64),
}

impl Expiry {
    /// The absolute deadline given the current Unix time in ms; `None` if it
    /// overflows (reply [`CommandError::InvalidExpireTime`], like Redis).
    pub fn deadline_ms(self, now_ms: i64) -> Option<i64> {
        match self {
            Expiry::RelativeMs(ms) => now_ms.checked_add(ms).filter(|&d| d > 0),
            Expiry::UnixMs(ms) => Some(ms),
        }
    }
}

/// `SET` existence condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetCondition {
    #[default]
    Always,
    /// Only if the key does not exist.
    Nx,
    /// Only if the key exists.
    Xx,
}

/// Options of `SET key value [NX|XX] [GET] [EX|PX|EXAT|PXAT|KEEPTTL]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetOptions {
    pub condition: SetCondition,
    /// Reply with the old value (`GET`).
    pub get: bool,
    /// New expiry; `None` with `keep_ttl == false` clears any TTL.
    pub expiry: Option<Expiry>,
    pub keep_ttl: bool,
}

/// What `GETEX` does to the key's TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetExAction {
    /// No option: plain read.
    Keep,
    Expire(Expiry),
    Persist,
}

/// Which of the four `EXPIRE` commands; decides the unit of `when_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireKind {
    /// `EXPIRE`: `when_ms` is relative (seconds converted to ms).
    Expire,
    /// `PEXPIRE`: `when_ms` is relative.
    PExpire,
    /// `EXPIREAT`: `when_ms` is absolute (seconds converted to ms).
    ExpireAt,
    /// `PEXPIREAT`: `when_ms` is absolute.
    PExpireAt,
}

impl ExpireKind {
    /// Whether `when_ms` must be added to the current time.
    pub fn is_relative(self) -> bool {
        matches!(self, ExpireKind::Expire | ExpireKind::PExpire)
    }
}

/// `EXPIRE` family option flags, as given (validated: `nx` excludes the
/// others; `gt` and `lt` exclude each other). `xx` may combine with `gt` or
/// `lt`, which matters for keys without a TTL: `LT` alone sets one, `XX LT`
/// does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExpireFlags {
    /// Only if the key has no TTL.
    pub nx: bool,
    /// Only if the key has a TTL.
    pub xx: bool,
    /// Only if the new TTL is greater (no TTL counts as infinite).
    pub gt: bool,
    /// Only if the new TTL is smaller (no TTL counts as infinite).
    pub lt: bool,
}

/// `FLUSHALL`/`FLUSHDB` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushMode {
    #[default]
    Default,
    Async,
    Sync,
}

/// `CLIENT` subcommands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCommand {
    /// Validated: bytes `!`..=`~` only; empty clears the name.
    SetName(Bytes),
    GetName,
    Id,
    Info,
    List,
    /// `CLIENT KILL`: which connections to close.
    Kill(ClientKill),
    Help,
}

/// `CLIENT KILL` forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientKill {
    /// Old form `CLIENT KILL addr:port`: replies `OK` or `ERR No such client`.
    Addr(Bytes),
    /// New form `CLIENT KILL <filter> <value> ...`: replies the number killed. All
    /// given filters must match; `skipme` (default yes) spares the caller.
    Filters {
        id: Option<u64>,
        addr: Option<Bytes>,
        laddr: Option<Bytes>,
        skipme: bool,
    },
}

/// `ACL` subcommands (the subset this server has).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclCommand {
    WhoAmI,
    List,
    Help,
}

/// `CLUSTER` subcommands (what a cluster-aware client needs to route keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterCommand {
    /// Slot ranges with the member owning each (the entities' homes).
    Slots,
    /// The same as `CLUSTER NODES` lines.
    Nodes,
    /// `CLUSTER SHARDS`: the slot ranges and their member, Redis 7's form.
    Shards,
    KeySlot(Bytes),
    Info,
    MyId,
    Help,
}

/// `COMMAND` subcommands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandCommand {
    /// Bare `COMMAND`: details of every command.
    All,
    Count,
    Info(Vec<Bytes>),
    Docs(Vec<Bytes>),
    List,
    Help,
}

/// A parsed, validated command. Keys and values share the request buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Ping(Option<Bytes>),
    Echo(Bytes),
    Hello {
        protover: Option<u8>,
        /// `(username, password)`.
        auth: Option<(Bytes, Bytes)>,
        setname: Option<Bytes>,
    },
    Auth {
        username: Option<Bytes>,
        password: Bytes,
    },
    /// Non-negative index; the executor checks it against its DB count and
    /// replies [`CommandError::DbIndexOutOfRange`].
    Select(u32),
    Quit,
    Reset,
    Client(ClientCommand),
    Acl(AclCommand),
    Cluster(ClusterCommand),
    Command(CommandCommand),
    Info(Vec<Bytes>),
    FlushAll(FlushMode),
    FlushDb(FlushMode),
    DbSize,
    /// `KEYS pattern`: this node's keys matching a glob pattern.
    Keys(Bytes),
    Get(Bytes),
    Set {
        key: Bytes,
        value: Bytes,
        options: SetOptions,
    },
    SetNx {
        key: Bytes,
        value: Bytes,
    },
    /// `SETEX key seconds value`, seconds converted to ms.
    SetEx {
        key: Bytes,
        ttl_ms: i64,
        value: Bytes,
    },
    PSetEx {
        key: Bytes,
        ttl_ms: i64,
        value: Bytes,
    },
    GetSet {
        key: Bytes,
        value: Bytes,
    },
    GetDel(Bytes),
    GetEx {
        key: Bytes,
        action: GetExAction,
    },
    MGet(Vec<Bytes>),
    MSet(Vec<(Bytes, Bytes)>),
    MSetNx(Vec<(Bytes, Bytes)>),
    Del(Vec<Bytes>),
    Unlink(Vec<Bytes>),
    Exists(Vec<Bytes>),
    Incr(Bytes),
    IncrBy {
        key: Bytes,
        delta: i64,
    },
    Decr(Bytes),
    /// `delta` is the decrement as given (never `i64::MIN`).
    DecrBy {
        key: Bytes,
        delta: i64,
    },
    /// `delta` is finite or infinite, never NaN; the executor rejects a
    /// non-finite result with `ERR increment would produce NaN or Infinity`.
    IncrByFloat {
        key: Bytes,
        delta: f64,
    },
    Append {
        key: Bytes,
        value: Bytes,
    },
    StrLen(Bytes),
    GetRange {
        key: Bytes,
        start: i64,
        end: i64,
    },
    /// The executor still checks `offset + value.len()` against the
    /// maximum string size when `value` is non-empty.
    SetRange {
        key: Bytes,
        offset: u64,
        value: Bytes,
    },
    Type(Bytes),
    /// `RENAME` (`nx == false`) / `RENAMENX`: both keys in one entity.
    Rename {
        from: Bytes,
        to: Bytes,
        nx: bool,
    },
    Expire {
        kind: ExpireKind,
        key: Bytes,
        /// Milliseconds; relative or absolute per `kind`. May be negative
        /// (the key is then deleted, as in Redis).
        when_ms: i64,
        flags: ExpireFlags,
    },
    Ttl(Bytes),
    PTtl(Bytes),
    Persist(Bytes),
    Multi,
    Exec,
    Discard,
    Watch(Vec<Bytes>),
    Unwatch,
    ReadOnly,
    ReadWrite,
    /// PaxosStore: reply `[value, version]` (nil if absent).
    VGet(Bytes),
    /// PaxosStore: set only if the current version equals `version`
    /// (0 = key must not exist).
    VSet {
        key: Bytes,
        value: Bytes,
        version: u64,
    },
}
