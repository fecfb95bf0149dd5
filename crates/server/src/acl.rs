//! ACL users: who may log in, and which commands each user may run. Pure logic (no
//! I/O, no clock): built once from the configuration, consulted by every connection.
//!
//! Permissions use Redis's rule syntax, applied left to right: `+@cat` / `-@cat` allow
//! or deny a category, `+cmd` / `-cmd` a command (with all its subcommands), and
//! `+cmd|sub` / `-cmd|sub` one subcommand; `allcommands` = `+@all`, `nocommands` =
//! `-@all`. Unlike Redis, `flushall` and `flushdb` are in `@admin` and not in `@write`
//! or `@keyspace`: only `+@admin`, `+@all` or their names grant them.
//!
//! Passwords are kept only as SHA-256 digests; nothing here prints one.

use std::collections::BTreeSet;

use resp::command::{AclCommand, ClientCommand, ClusterCommand};
use resp::Command;
use sha2::{Digest, Sha256};

/// The name a command is checked under: `TABLE`'s, e.g. `get` or `client|list`.
pub fn acl_name(cmd: &Command) -> &'static str {
    match cmd {
        Command::Client(c) => match c {
            ClientCommand::SetName(_) => "client|setname",
            ClientCommand::GetName => "client|getname",
            ClientCommand::Id => "client|id",
            ClientCommand::Info => "client|info",
            ClientCommand::List => "client|list",
            ClientCommand::Kill(_) => "client|kill",
            ClientCommand::Help => "client|help",
        },
        Command::Acl(c) => match c {
            AclCommand::WhoAmI => "acl|whoami",
            AclCommand::List => "acl|list",
            AclCommand::Help => "acl|help",
        },
        Command::Cluster(c) => match c {
            ClusterCommand::Slots => "cluster|slots",
            ClusterCommand::Nodes => "cluster|nodes",
            ClusterCommand::Shards => "cluster|shards",
            ClusterCommand::KeySlot(_) => "cluster|keyslot",
            ClusterCommand::Info => "cluster|info",
            ClusterCommand::MyId => "cluster|myid",
            ClusterCommand::Help => "cluster|help",
        },
        c => c.name(),
    }
}

/// One `[[users]]` entry of the configuration.
#[derive(Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Login name.
    pub name: String,
    /// The password in clear text (prefer `password_sha256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The SHA-256 of the password, 64 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_sha256: Option<String>,
    /// Permission rules, e.g. `"+@read +@write -flushall"` or `"+@all"`.
    pub commands: String,
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("commands", &self.commands)
            .finish_non_exhaustive()
    }
}

/// Commands (and subcommands, `container|sub`) with their ACL categories. Every
/// command the server parses has an entry; `acl_name` of a parsed command is one of
/// these names.
const TABLE: &[(&str, &[&str])] = &[
    ("ping", &["fast", "connection"]),
    ("echo", &["fast", "connection"]),
    ("hello", &["fast", "connection"]),
    ("auth", &["fast", "connection"]),
    ("select", &["fast", "connection"]),
    ("quit", &["fast", "connection"]),
    ("reset", &["fast", "connection"]),
    ("readonly", &["fast", "connection"]),
    ("readwrite", &["fast", "connection"]),
    ("client|setname", &["slow", "connection"]),
    ("client|getname", &["slow", "connection"]),
    ("client|id", &["slow", "connection"]),
    ("client|info", &["slow", "connection"]),
    ("client|list", &["admin", "slow", "dangerous", "connection"]),
    ("client|kill", &["admin", "slow", "dangerous", "connection"]),
    ("client|help", &["slow", "connection"]),
    ("command", &["slow", "connection"]),
    ("acl|whoami", &["slow"]),
    ("acl|list", &["admin", "slow", "dangerous"]),
    ("acl|help", &["slow"]),
    ("cluster|slots", &["slow"]),
    ("cluster|nodes", &["slow"]),
    ("cluster|shards", &["slow"]),
    ("cluster|keyslot", &["slow"]),
    ("cluster|info", &["slow"]),
    ("cluster|myid", &["slow"]),
    ("cluster|help", &["slow"]),
    ("info", &["slow", "dangerous"]),
    // Not in @write/@keyspace (Redis has them there): only @admin or the name grants them.
    ("flushall", &["slow", "dangerous", "admin"]),
    ("flushdb", &["slow", "dangerous", "admin"]),
    ("dbsize", &["keyspace", "read", "fast"]),
    ("keys", &["keyspace", "read", "slow", "dangerous"]),
    ("get", &["read", "string", "fast"]),
    ("set", &["write", "string", "slow"]),
    ("setnx", &["write", "string", "fast"]),
    ("setex", &["write", "string", "slow"]),
    ("psetex", &["write", "string", "slow"]),
    ("getset", &["write", "string", "fast"]),
    ("getdel", &["write", "string", "fast"]),
    ("getex", &["write", "string", "fast"]),
    ("mget", &["read", "string", "fast"]),
    ("mset", &["write", "string", "slow"]),
    ("msetnx", &["write", "string", "slow"]),
    ("incr", &["write", "string", "fast"]),
    ("incrby", &["write", "string", "fast"]),
    ("decr", &["write", "string", "fast"]),
    ("decrby", &["write", "string", "fast"]),
    ("incrbyfloat", &["write", "string", "fast"]),
    ("append", &["write", "string", "fast"]),
    ("strlen", &["read", "string", "fast"]),
    ("getrange", &["read", "string", "slow"]),
    ("setrange", &["write", "string", "slow"]),
    ("del", &["keyspace", "write", "slow"]),
    ("unlink", &["keyspace", "write", "fast"]),
    ("exists", &["keyspace", "read", "fast"]),
    ("type", &["keyspace", "read", "fast"]),
    ("rename", &["keyspace", "write", "slow"]),
    ("renamenx", &["keyspace", "write", "fast"]),
    ("expire", &["keyspace", "write", "fast"]),
    ("pexpire", &["keyspace", "write", "fast"]),
    ("expireat", &["keyspace", "write", "fast"]),
    ("pexpireat", &["keyspace", "write", "fast"]),
    ("ttl", &["keyspace", "read", "fast"]),
    ("pttl", &["keyspace", "read", "fast"]),
    ("persist", &["keyspace", "write", "fast"]),
    ("multi", &["fast", "transaction"]),
    ("exec", &["slow", "transaction"]),
    ("discard", &["fast", "transaction"]),
    ("watch", &["fast", "transaction"]),
    ("unwatch", &["fast", "transaction"]),
    ("vget", &["read", "fast"]),
    ("vset", &["write", "fast"]),
];

/// The ACL categories of a command or subcommand (`get`, `client|list`) as `COMMAND`
/// reports them (`@read`, ...); none for a name not in the table.
pub fn categories_of(name: &str) -> Vec<String> {
    TABLE
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, cats)| cats.iter().map(|c| format!("@{c}")).collect())
        .unwrap_or_default()
}

/// Categories a rule may name (`all` covers every command).
const CATEGORIES: &[&str] = &[
    "all",
    "read",
    "write",
    "keyspace",
    "string",
    "fast",
    "slow",
    "connection",
    "transaction",
    "admin",
    "dangerous",
];

/// Commands every logged-in user may run whatever the rules: Redis's `no-auth`
/// commands, and `ACL WHOAMI` (it shows only the caller's own name).
const ALWAYS: &[&str] = &["auth", "hello", "quit", "reset", "acl|whoami"];

/// Parse a rule string into the set of allowed command names (entries of `TABLE`).
pub fn parse_rules(rules: &str) -> Result<BTreeSet<&'static str>, String> {
    let mut allowed = BTreeSet::new();
    for tok in rules.split_whitespace() {
        let lower = tok.to_ascii_lowercase();
        let (allow, what) = match lower.as_str() {
            "allcommands" => (true, "@all"),
            "nocommands" => (false, "@all"),
            t => match (t.strip_prefix('+'), t.strip_prefix('-')) {
                (Some(w), _) => (true, w),
                (_, Some(w)) => (false, w),
                _ => return Err(format!("`{tok}`: a rule starts with + or -")),
            },
        };
        let matched: Vec<&'static str> = if let Some(cat) = what.strip_prefix('@') {
            if !CATEGORIES.contains(&cat) {
                return Err(format!("`{tok}`: unknown category"));
            }
            TABLE
                .iter()
                .filter(|(_, cats)| cat == "all" || cats.contains(&cat))
                .map(|(n, _)| *n)
                .collect()
        } else {
            let v: Vec<&'static str> = TABLE
                .iter()
                .map(|(n, _)| *n)
                .filter(|n| {
                    *n == what
                        || (!what.contains('|')
                            && n.split_once('|').is_some_and(|(c, _)| c == what))
                })
                .collect();
            if v.is_empty() {
                return Err(format!("`{tok}`: unknown command"));
            }
            v
        };
        for n in matched {
            if allow {
                allowed.insert(n);
            } else {
                allowed.remove(n);
            }
        }
    }
    Ok(allowed)
}

/// SHA-256 of a password, lowercase hex (what `ACL LIST` shows and what
/// `password_sha256` holds).
pub fn sha256_hex(password: &[u8]) -> String {
    hex(&Sha256::digest(password))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let d = |c: u8| (c as char).to_digit(16);
        out[i] = (d(pair[0])? * 16 + d(pair[1])?) as u8;
    }
    Some(out)
}

/// One user as the server keeps it.
#[derive(Debug)]
pub struct User {
    pub name: String,
    /// `None`: any password is accepted (the `default` user without `requirepass`).
    digest: Option<[u8; 32]>,
    allowed: BTreeSet<&'static str>,
    /// The rules as configured, normalised (lowercase, single spaces).
    rules: String,
}

impl User {
    /// Whether this user may run the command whose ACL name (a `TABLE` name, e.g.
    /// `get` or `client|list`) is `name`.
    pub fn may_run(&self, name: &str) -> bool {
        ALWAYS.contains(&name) || self.allowed.contains(name)
    }

    /// Whether no password is needed (connections start logged in as this user).
    pub fn nopass(&self) -> bool {
        self.digest.is_none()
    }

    /// `ACL LIST` line: the password only as its SHA-256 digest.
    pub fn describe(&self) -> String {
        let pass = match &self.digest {
            None => "nopass".to_string(),
            Some(d) => format!("#{}", hex(d)),
        };
        format!("user {} on {pass} ~* &* {}", self.name, self.rules)
    }
}

/// Every user of a node.
#[derive(Debug)]
pub struct Acl {
    users: Vec<User>,
    /// Whether `[[users]]` were configured (FLUSHALL then needs `@admin`, which only
    /// the rules can grant; without users everyone is the all-powerful `default`).
    pub configured: bool,
}

/// What `AUTH`/`HELLO AUTH` concluded.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Logged in as the user with this index.
    Ok(usize),
    /// Wrong name or password.
    WrongPass,
    /// `AUTH <password>` while the default user needs none.
    NoPasswordConfigured,
}

impl Acl {
    /// Build from the configured users and `requirepass` (the `default` user's
    /// password). Errors name the user and the problem.
    pub fn new(users: &[UserConfig], requirepass: Option<&str>) -> Result<Acl, String> {
        let mut out = Vec::new();
        for u in users {
            if u.name.is_empty() || u.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "user `{}`: name must be non-empty, without spaces",
                    u.name
                ));
            }
            if out.iter().any(|o: &User| o.name == u.name) {
                return Err(format!("user `{}` is defined twice", u.name));
            }
            if u.name == "default" && requirepass.is_some() {
                return Err(
                    "user `default`: remove `requirepass` (it is the default user's password)"
                        .into(),
                );
            }
            let digest = match (&u.password, &u.password_sha256) {
                (Some(p), None) if !p.is_empty() => Sha256::digest(p.as_bytes()).into(),
                (None, Some(h)) => unhex(h).ok_or_else(|| {
                    format!("user `{}`: password_sha256 must be 64 hex digits", u.name)
                })?,
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "user `{}`: give password or password_sha256, not both",
                        u.name
                    ))
                }
                _ => {
                    return Err(format!(
                        "user `{}`: needs a non-empty password or password_sha256",
                        u.name
                    ))
                }
            };
            let allowed =
                parse_rules(&u.commands).map_err(|e| format!("user `{}`: {e}", u.name))?;
            out.push(User {
                name: u.name.clone(),
                digest: Some(digest),
                allowed,
                rules: normalise(&u.commands),
            });
        }
        if !out.iter().any(|u| u.name == "default") {
            let everything = parse_rules("+@all")?;
            match requirepass {
                Some(p) => out.push(User {
                    name: "default".into(),
                    digest: Some(Sha256::digest(p.as_bytes()).into()),
                    allowed: everything,
                    rules: "+@all".into(),
                }),
                None if users.is_empty() => out.push(User {
                    name: "default".into(),
                    digest: None,
                    allowed: everything,
                    rules: "+@all".into(),
                }),
                // Users configured, no requirepass: nobody logs in as `default`.
                None => {}
            }
        }
        Ok(Acl {
            users: out,
            configured: !users.is_empty(),
        })
    }

    /// The user new connections start as: the `default` user when it needs no password.
    pub fn initial_user(&self) -> Option<usize> {
        self.users
            .iter()
            .position(|u| u.name == "default" && u.nopass())
    }

    pub fn user(&self, idx: usize) -> Option<&User> {
        self.users.get(idx)
    }

    pub fn users(&self) -> &[User] {
        &self.users
    }

    /// Check a name and password. `username` `None` is `AUTH <password>`: the
    /// `default` user.
    pub fn authenticate(&self, username: Option<&[u8]>, password: &[u8]) -> AuthOutcome {
        let name = username.unwrap_or(b"default");
        let Some(idx) = self.users.iter().position(|u| u.name.as_bytes() == name) else {
            return AuthOutcome::WrongPass;
        };
        match &self.users[idx].digest {
            None if username.is_none() => AuthOutcome::NoPasswordConfigured,
            None => AuthOutcome::Ok(idx),
            Some(d) => {
                let got: [u8; 32] = Sha256::digest(password).into();
                // Constant-time comparison of the digests.
                if got.iter().zip(d).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0 {
                    AuthOutcome::Ok(idx)
                } else {
                    AuthOutcome::WrongPass
                }
            }
        }
    }
}

fn normalise(rules: &str) -> String {
    let s: Vec<String> = rules
        .split_whitespace()
        .map(|t| t.to_ascii_lowercase())
        .collect();
    if s.is_empty() {
        "-@all".into()
    } else {
        s.join(" ")
    }
}

/// Every ACL name (for tests, and to check `acl_name` covers the parser).
pub fn known_names() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, pass: &str, commands: &str) -> UserConfig {
        UserConfig {
            name: name.into(),
            password: Some(pass.into()),
            password_sha256: None,
            commands: commands.into(),
        }
    }

    #[test]
    fn rules_apply_left_to_right() {
        let a = parse_rules("+@read +@write -flushall").unwrap();
        assert!(a.contains("get") && a.contains("set") && a.contains("del"));
        assert!(!a.contains("flushall"));
        assert!(!a.contains("info"));
        let a = parse_rules("+@all -@write +set").unwrap();
        assert!(a.contains("set") && a.contains("get") && !a.contains("del"));
        let a = parse_rules("+@all -client +client|id").unwrap();
        assert!(a.contains("client|id") && !a.contains("client|list"));
        assert!(parse_rules("").unwrap().is_empty());
        assert!(parse_rules("nocommands").unwrap().is_empty());
        assert_eq!(
            parse_rules("allcommands").unwrap().len(),
            known_names().count()
        );
        assert_eq!(parse_rules("+GET").unwrap().len(), 1);
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(parse_rules("+@nosuch").unwrap_err().contains("category"));
        assert!(parse_rules("+lpush")
            .unwrap_err()
            .contains("unknown command"));
        assert!(parse_rules("get").unwrap_err().contains("+ or -"));
        assert!(parse_rules("+client|nosuch").is_err());
    }

    #[test]
    fn every_parsed_command_has_an_entry() {
        for (name, _) in resp::command::supported_commands() {
            if name == "client" || name == "acl" || name == "cluster" {
                continue;
            }
            assert!(known_names().any(|n| n == name), "{name} has no ACL entry");
        }
        let containers: [(&str, &[&str]); 3] = [
            (
                "client",
                &[
                    "setname x",
                    "getname",
                    "id",
                    "info",
                    "list",
                    "kill id 1",
                    "help",
                ],
            ),
            ("acl", &["whoami", "list", "help"]),
            (
                "cluster",
                &[
                    "slots",
                    "nodes",
                    "shards",
                    "keyslot k",
                    "info",
                    "myid",
                    "help",
                ],
            ),
        ];
        for (container, subs) in containers {
            for sub in subs {
                let args: Vec<bytes::Bytes> = std::iter::once(container)
                    .chain(sub.split(' '))
                    .map(|w| bytes::Bytes::copy_from_slice(w.as_bytes()))
                    .collect();
                let cmd = resp::parse_command(&args).unwrap();
                assert!(
                    known_names().any(|n| n == acl_name(&cmd)),
                    "{container} {sub}"
                );
            }
        }
    }

    #[test]
    fn flush_is_admin_only() {
        let rw = parse_rules("+@read +@write +@keyspace").unwrap();
        assert!(!rw.contains("flushall") && !rw.contains("flushdb"));
        let a = parse_rules("+@all -@admin").unwrap();
        assert!(!a.contains("flushall") && !a.contains("flushdb"));
        assert!(parse_rules("+@admin").unwrap().contains("flushdb"));
    }

    #[test]
    fn authentication_and_permissions() {
        let acl = Acl::new(
            &[
                user("alice", "secret", "+@read +@write -flushall"),
                UserConfig {
                    name: "ops".into(),
                    password: None,
                    password_sha256: Some(sha256_hex(b"opspass").to_uppercase()),
                    commands: "+@all".into(),
                },
            ],
            None,
        )
        .unwrap();
        assert_eq!(acl.initial_user(), None, "users configured: log in first");
        let AuthOutcome::Ok(alice) = acl.authenticate(Some(b"alice"), b"secret") else {
            panic!("alice's password refused")
        };
        assert_eq!(
            acl.authenticate(Some(b"alice"), b"Secret"),
            AuthOutcome::WrongPass
        );
        assert_eq!(
            acl.authenticate(Some(b"bob"), b"secret"),
            AuthOutcome::WrongPass
        );
        assert_eq!(acl.authenticate(None, b"secret"), AuthOutcome::WrongPass);
        let u = acl.user(alice).unwrap();
        assert!(u.may_run("get") && u.may_run("set") && u.may_run("auth"));
        assert!(u.may_run("acl|whoami") && !u.may_run("ping"));
        assert!(!u.may_run("flushall") && !u.may_run("acl|list"));
        assert!(matches!(
            acl.authenticate(Some(b"ops"), b"opspass"),
            AuthOutcome::Ok(_)
        ));
    }

    #[test]
    fn requirepass_is_the_default_users_password() {
        let acl = Acl::new(&[], Some("pw")).unwrap();
        assert_eq!(acl.initial_user(), None);
        let AuthOutcome::Ok(i) = acl.authenticate(None, b"pw") else {
            panic!("requirepass refused")
        };
        assert!(acl.user(i).unwrap().may_run("flushall"));
        assert!(matches!(
            acl.authenticate(Some(b"default"), b"pw"),
            AuthOutcome::Ok(_)
        ));
        assert_eq!(acl.authenticate(None, b"nope"), AuthOutcome::WrongPass);
        // No password at all: everyone starts as `default`.
        let open = Acl::new(&[], None).unwrap();
        assert!(open.initial_user().is_some());
        assert!(!open.configured);
        assert_eq!(
            open.authenticate(None, b"x"),
            AuthOutcome::NoPasswordConfigured
        );
        // Users and requirepass together: both log in.
        let both = Acl::new(&[user("alice", "a", "+get")], Some("pw")).unwrap();
        assert!(matches!(both.authenticate(None, b"pw"), AuthOutcome::Ok(_)));
    }

    #[test]
    fn acl_list_shows_only_digests() {
        let acl = Acl::new(&[user("alice", "secret", "+@READ  -get")], Some("hunter2")).unwrap();
        let lines: Vec<String> = acl.users().iter().map(User::describe).collect();
        let all = lines.join("\n");
        assert!(!all.contains("secret") && !all.contains("hunter2"), "{all}");
        assert!(all.contains(&sha256_hex(b"secret")), "{all}");
        assert!(all.contains("user alice on #"), "{all}");
        assert!(all.contains("+@read -get"), "{all}");
        let dbg = format!("{:?}", user("x", "secret", "+@all"));
        assert!(!dbg.contains("secret"), "{dbg}");
    }

    #[test]
    fn config_mistakes_are_refused() {
        let mut u = user("a", "p", "+@all");
        u.password_sha256 = Some(sha256_hex(b"p"));
        assert!(Acl::new(&[u], None).unwrap_err().contains("not both"));
        let mut u = user("a", "p", "+@all");
        u.password = None;
        assert!(Acl::new(&[u], None).is_err());
        let mut u = user("a", "p", "+@all");
        u.password = None;
        u.password_sha256 = Some("xyz".into());
        assert!(Acl::new(&[u], None).unwrap_err().contains("64 hex"));
        assert!(Acl::new(&[user("a", "p", "+@x")], None).is_err());
        assert!(Acl::new(&[user("a", "p", "+@all"), user("a", "q", "+@all")], None).is_err());
        assert!(Acl::new(&[user("default", "p", "+@all")], Some("q")).is_err());
        assert!(Acl::new(&[user("a b", "p", "+@all")], None).is_err());
    }
}
