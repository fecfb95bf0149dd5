//! Typed command parsing: names, arity, options, numbers and Redis texts.

use bytes::Bytes;
use resp::command::*;
use resp::{parse_command, Command, CommandError};

fn args(s: &[&str]) -> Vec<Bytes> {
    s.iter()
        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
        .collect()
}

fn cmd(s: &[&str]) -> Result<Command, CommandError> {
    parse_command(&args(s))
}

fn err(s: &[&str]) -> String {
    cmd(s).unwrap_err().to_string()
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[test]
fn unknown_command_text_matches_redis() {
    assert_eq!(
        err(&["foo", "a", "b"]),
        "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
    );
    assert_eq!(
        err(&["foo"]),
        "ERR unknown command 'foo', with args beginning with: "
    );
    // Argument list is capped near 128 bytes like Redis.
    let long = "x".repeat(200);
    let e = err(&["foo", &long, "next"]);
    assert_eq!(
        e,
        format!(
            "ERR unknown command 'foo', with args beginning with: '{}' ",
            "x".repeat(128)
        )
    );
    assert_eq!(cmd(&[]), Err(CommandError::Empty));
}

#[test]
fn names_are_case_insensitive() {
    assert_eq!(cmd(&["gEt", "k"]), Ok(Command::Get(b("k"))));
    assert_eq!(cmd(&["PING"]), Ok(Command::Ping(None)));
    assert_eq!(cmd(&["ping", "hi"]), Ok(Command::Ping(Some(b("hi")))));
}

#[test]
fn arity_errors_use_lowercase_names() {
    assert_eq!(
        err(&["GET"]),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        err(&["GET", "a", "b"]),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        err(&["ping", "a", "b"]),
        "ERR wrong number of arguments for 'ping' command"
    );
    assert_eq!(
        err(&["mset", "a"]),
        "ERR wrong number of arguments for 'mset' command"
    );
    assert_eq!(
        err(&["mset", "a", "1", "b"]),
        "ERR wrong number of arguments for 'mset' command"
    );
    assert_eq!(
        err(&["client"]),
        "ERR wrong number of arguments for 'client' command"
    );
    assert_eq!(
        err(&["client", "setname"]),
        "ERR wrong number of arguments for 'client|setname' command"
    );
    assert_eq!(
        err(&["client", "bogus"]),
        "ERR unknown subcommand 'bogus'. Try CLIENT HELP."
    );
    assert_eq!(
        err(&["command", "bogus"]),
        "ERR unknown subcommand 'bogus'. Try COMMAND HELP."
    );
}

#[test]
fn set_options() {
    let opts = |s: &[&str]| match cmd(s) {
        Ok(Command::Set { options, .. }) => options,
        other => panic!("{other:?}"),
    };
    assert_eq!(opts(&["set", "k", "v"]), SetOptions::default());
    let o = opts(&["SET", "k", "v", "nx", "get", "ex", "10"]);
    assert_eq!(o.condition, SetCondition::Nx);
    assert!(o.get);
    assert_eq!(o.expiry, Some(Expiry::RelativeMs(10_000)));
    assert_eq!(
        opts(&["set", "k", "v", "PXAT", "5"]).expiry,
        Some(Expiry::UnixMs(5))
    );
    assert_eq!(
        opts(&["set", "k", "v", "exat", "5"]).expiry,
        Some(Expiry::UnixMs(5000))
    );
    assert!(opts(&["set", "k", "v", "keepttl", "xx"]).keep_ttl);
    // Same unit twice: last wins, like Redis.
    assert_eq!(
        opts(&["set", "k", "v", "ex", "1", "ex", "2"]).expiry,
        Some(Expiry::RelativeMs(2000))
    );
    for bad in [
        &["set", "k", "v", "nx", "xx"][..],
        &["set", "k", "v", "ex", "1", "px", "1"],
        &["set", "k", "v", "keepttl", "ex", "1"],
        &["set", "k", "v", "ex"],
        &["set", "k", "v", "persist"],
        &["set", "k", "v", "bogus"],
    ] {
        assert_eq!(cmd(bad), Err(CommandError::Syntax), "{bad:?}");
    }
    assert_eq!(
        err(&["set", "k", "v", "ex", "0"]),
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        err(&["set", "k", "v", "px", "-5"]),
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        err(&["set", "k", "v", "ex", "9223372036854776"]),
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        err(&["set", "k", "v", "ex", "abc"]),
        "ERR value is not an integer or out of range"
    );
}

#[test]
fn expiry_deadline_detects_overflow() {
    assert_eq!(Expiry::RelativeMs(10).deadline_ms(1000), Some(1010));
    assert_eq!(Expiry::RelativeMs(i64::MAX).deadline_ms(1000), None);
    assert_eq!(Expiry::UnixMs(7).deadline_ms(1000), Some(7));
}

#[test]
fn setex_getex() {
    assert_eq!(
        cmd(&["setex", "k", "2", "v"]),
        Ok(Command::SetEx {
            key: b("k"),
            ttl_ms: 2000,
            value: b("v")
        })
    );
    assert_eq!(
        cmd(&["psetex", "k", "2", "v"]),
        Ok(Command::PSetEx {
            key: b("k"),
            ttl_ms: 2,
            value: b("v")
        })
    );
    assert_eq!(
        err(&["setex", "k", "0", "v"]),
        "ERR invalid expire time in 'setex' command"
    );
    assert_eq!(
        err(&["psetex", "k", "-1", "v"]),
        "ERR invalid expire time in 'psetex' command"
    );
    assert_eq!(
        cmd(&["getex", "k"]),
        Ok(Command::GetEx {
            key: b("k"),
            action: GetExAction::Keep
        })
    );
    assert_eq!(
        cmd(&["getex", "k", "persist"]),
        Ok(Command::GetEx {
            key: b("k"),
            action: GetExAction::Persist
        })
    );
    assert_eq!(
        cmd(&["getex", "k", "px", "9"]),
        Ok(Command::GetEx {
            key: b("k"),
            action: GetExAction::Expire(Expiry::RelativeMs(9))
        })
    );
    assert_eq!(
        cmd(&["getex", "k", "persist", "ex", "1"]),
        Err(CommandError::Syntax)
    );
    assert_eq!(cmd(&["getex", "k", "nx"]), Err(CommandError::Syntax));
    assert_eq!(
        err(&["getex", "k", "ex", "0"]),
        "ERR invalid expire time in 'getex' command"
    );
}

#[test]
fn numbers() {
    assert_eq!(
        cmd(&["incrby", "k", "-5"]),
        Ok(Command::IncrBy {
            key: b("k"),
            delta: -5
        })
    );
    assert_eq!(
        err(&["incrby", "k", "1.5"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&["incrby", "k", "007"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&["decrby", "k", "-9223372036854775808"]),
        "ERR decrement would overflow"
    );
    assert_eq!(
        cmd(&["incrbyfloat", "k", "1.5"]),
        Ok(Command::IncrByFloat {
            key: b("k"),
            delta: 1.5
        })
    );
    assert_eq!(
        err(&["incrbyfloat", "k", "abc"]),
        "ERR value is not a valid float"
    );
    assert_eq!(
        err(&["incrbyfloat", "k", "nan"]),
        "ERR value is not a valid float"
    );
    assert_eq!(
        cmd(&["getrange", "k", "0", "-1"]),
        Ok(Command::GetRange {
            key: b("k"),
            start: 0,
            end: -1
        })
    );
    assert_eq!(
        err(&["setrange", "k", "-1", "v"]),
        "ERR offset is out of range"
    );
    assert_eq!(
        err(&["setrange", "k", "x", "v"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(cmd(&["select", "3"]), Ok(Command::Select(3)));
    assert_eq!(err(&["select", "-1"]), "ERR DB index is out of range");
    assert_eq!(
        err(&["select", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&["select", "4294967296"]),
        "ERR value is not an integer or out of range"
    );
}

#[test]
fn expire_family() {
    assert_eq!(
        cmd(&["expire", "k", "10", "xx", "gt"]),
        Ok(Command::Expire {
            kind: ExpireKind::Expire,
            key: b("k"),
            when_ms: 10_000,
            flags: ExpireFlags {
                xx: true,
                gt: true,
                ..Default::default()
            },
        })
    );
    assert_eq!(
        cmd(&["PEXPIREAT", "k", "-3"]),
        Ok(Command::Expire {
            kind: ExpireKind::PExpireAt,
            key: b("k"),
            when_ms: -3,
            flags: ExpireFlags::default(),
        })
    );
    assert_eq!(
        err(&["expire", "k", "1", "nx", "xx"]),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        err(&["expire", "k", "1", "gt", "lt"]),
        "ERR GT and LT options at the same time are not compatible"
    );
    assert_eq!(
        err(&["expire", "k", "1", "zz"]),
        "ERR Unsupported option zz"
    );
    // Options are validated before the number, as in Redis.
    assert_eq!(
        err(&["expire", "k", "x", "zz"]),
        "ERR Unsupported option zz"
    );
    assert_eq!(
        err(&["expire", "k", "9223372036854776"]),
        "ERR invalid expire time in 'expire' command"
    );
    assert_eq!(
        err(&["expireat", "k", "-9223372036854776"]),
        "ERR invalid expire time in 'expireat' command"
    );
}

#[test]
fn connection_commands() {
    assert_eq!(
        cmd(&["hello", "3", "auth", "u", "p", "setname", "me"]),
        Ok(Command::Hello {
            protover: Some(3),
            auth: Some((b("u"), b("p"))),
            setname: Some(b("me"))
        })
    );
    assert_eq!(
        cmd(&["hello"]),
        Ok(Command::Hello {
            protover: None,
            auth: None,
            setname: None
        })
    );
    assert_eq!(err(&["hello", "4"]), "NOPROTO unsupported protocol version");
    assert_eq!(
        err(&["hello", "x"]),
        "ERR Protocol version is not an integer or out of range"
    );
    assert_eq!(
        err(&["hello", "3", "auth", "u"]),
        "ERR Syntax error in HELLO option 'auth'"
    );
    assert_eq!(
        cmd(&["auth", "p"]),
        Ok(Command::Auth {
            username: None,
            password: b("p")
        })
    );
    assert_eq!(
        cmd(&["auth", "u", "p"]),
        Ok(Command::Auth {
            username: Some(b("u")),
            password: b("p")
        })
    );
    assert_eq!(cmd(&["auth", "u", "p", "x"]), Err(CommandError::Syntax));
    assert_eq!(
        cmd(&["client", "SETNAME", "app-1"]),
        Ok(Command::Client(ClientCommand::SetName(b("app-1"))))
    );
    assert_eq!(
        err(&["client", "setname", "a b"]),
        "ERR Client names cannot contain spaces, newlines or special characters."
    );
    assert_eq!(
        cmd(&["client", "id"]),
        Ok(Command::Client(ClientCommand::Id))
    );
    assert_eq!(cmd(&["command"]), Ok(Command::Command(CommandCommand::All)));
    assert_eq!(
        cmd(&["command", "count"]),
        Ok(Command::Command(CommandCommand::Count))
    );
    assert_eq!(
        cmd(&["command", "docs", "get"]),
        Ok(Command::Command(CommandCommand::Docs(vec![b("get")])))
    );
    assert_eq!(
        cmd(&["flushall", "ASYNC"]),
        Ok(Command::FlushAll(FlushMode::Async))
    );
    assert_eq!(cmd(&["flushdb"]), Ok(Command::FlushDb(FlushMode::Default)));
    assert_eq!(cmd(&["flushdb", "later"]), Err(CommandError::Syntax));
    assert_eq!(cmd(&["quit", "whatever"]), Ok(Command::Quit));
}

#[test]
fn paxosstore_commands() {
    assert_eq!(cmd(&["vget", "k"]), Ok(Command::VGet(b("k"))));
    assert_eq!(
        cmd(&["VSET", "k", "v", "0"]),
        Ok(Command::VSet {
            key: b("k"),
            value: b("v"),
            version: 0
        })
    );
    assert_eq!(
        err(&["vset", "k", "v", "-1"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&["vset", "k", "v"]),
        "ERR wrong number of arguments for 'vset' command"
    );
}

#[test]
fn keys_and_write_flags() {
    let c = cmd(&["mset", "a", "1", "b", "2"]).unwrap();
    assert_eq!(c.keys(), vec![&b("a"), &b("b")]);
    assert!(c.is_write());
    assert_eq!(c.name(), "mset");
    let c = cmd(&["mget", "a", "b"]).unwrap();
    assert_eq!(c.keys().len(), 2);
    assert!(!c.is_write());
    assert!(cmd(&["getex", "k"]).unwrap().is_write());
    assert!(cmd(&["vset", "k", "v", "1"]).unwrap().is_write());
    assert!(!cmd(&["vget", "k"]).unwrap().is_write());
    assert!(cmd(&["ping"]).unwrap().keys().is_empty());
    assert_eq!(cmd(&["pexpire", "k", "1"]).unwrap().name(), "pexpire");
}

#[test]
fn every_table_command_parses_with_plausible_args() {
    // Name round trip: every supported command's parsed name is its own.
    for (name, arity) in supported_commands() {
        let n = arity.unsigned_abs() as usize;
        let mut a = vec![name.to_string()];
        let filler = match name {
            "client" => vec!["id"],
            "acl" => vec!["whoami"],
            "cluster" => vec!["slots"],
            "command" => vec!["count"],
            "hello" => vec!["3"],
            "mset" | "msetnx" => vec!["k", "v"],
            "setex" | "psetex" => vec!["k", "1", "v"],
            "getrange" | "setrange" => vec!["k", "1", "2"],
            "incrby" | "decrby" | "incrbyfloat" | "expire" | "pexpire" | "expireat"
            | "pexpireat" => vec!["k", "1"],
            "select" => vec!["0"],
            "vset" => vec!["k", "v", "1"],
            _ => vec!["k"; n.saturating_sub(1)],
        };
        a.extend(filler.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        let c = cmd(&refs).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.name(), name);
        // The key positions COMMAND reports find the keys the server routes by.
        let (first, last, step) = resp::command::key_positions(name);
        let expected: Vec<&str> = if first == 0 {
            Vec::new()
        } else {
            let last = if last < 0 {
                refs.len() as i64 + last
            } else {
                last
            };
            (first..=last)
                .step_by(step as usize)
                .map(|i| refs[i as usize])
                .collect()
        };
        let parsed_keys = c.keys();
        let keys: Vec<&[u8]> = parsed_keys.iter().map(|k| k.as_ref()).collect();
        let expected: Vec<&[u8]> = expected.iter().map(|k| k.as_bytes()).collect();
        assert_eq!(keys, expected, "{name}");
        // A write is flagged `write`, a read of keys `readonly`.
        let flags = resp::command::command_flags(name);
        if c.is_write() {
            assert!(flags.contains(&"write"), "{name}");
        } else if !keys.is_empty() && name != "watch" {
            assert!(flags.contains(&"readonly"), "{name}");
        }
    }
}

#[test]
fn cluster_subcommands() {
    use resp::command::ClusterCommand;
    assert_eq!(
        cmd(&["cluster", "keyslot", "foo"]),
        Ok(Command::Cluster(ClusterCommand::KeySlot(b("foo"))))
    );
    assert_eq!(
        cmd(&["CLUSTER", "Slots"]),
        Ok(Command::Cluster(ClusterCommand::Slots))
    );
    assert!(cmd(&["cluster", "keyslot"]).is_err());
    assert!(cmd(&["cluster", "addslots", "1"]).is_err());
}

#[test]
fn client_kill_and_acl_subcommands() {
    use resp::command::{AclCommand, ClientKill};
    assert_eq!(
        cmd(&["client", "kill", "127.0.0.1:5000"]),
        Ok(Command::Client(ClientCommand::Kill(ClientKill::Addr(b(
            "127.0.0.1:5000"
        )))))
    );
    assert_eq!(
        cmd(&["CLIENT", "KILL", "ID", "7", "skipme", "no"]),
        Ok(Command::Client(ClientCommand::Kill(ClientKill::Filters {
            id: Some(7),
            addr: None,
            laddr: None,
            skipme: false,
        })))
    );
    assert_eq!(
        cmd(&["client", "kill", "id", "0"]).unwrap_err().to_string(),
        "ERR client-id should be greater than 0"
    );
    assert_eq!(
        cmd(&["client", "kill", "id", "1", "addr"])
            .unwrap_err()
            .to_string(),
        "ERR syntax error"
    );
    assert_eq!(
        cmd(&["client", "kill", "user", "x"])
            .unwrap_err()
            .to_string(),
        "ERR syntax error"
    );
    assert_eq!(
        cmd(&["client", "kill"]).unwrap_err().to_string(),
        "ERR wrong number of arguments for 'client|kill' command"
    );
    assert_eq!(
        cmd(&["acl", "WHOAMI"]),
        Ok(Command::Acl(AclCommand::WhoAmI))
    );
    assert_eq!(cmd(&["acl", "list"]), Ok(Command::Acl(AclCommand::List)));
    assert_eq!(
        cmd(&["acl", "setuser", "x"]).unwrap_err().to_string(),
        "ERR unknown subcommand 'setuser'. Try ACL HELP."
    );
    assert_eq!(
        cmd(&["acl", "whoami", "x"]).unwrap_err().to_string(),
        "ERR wrong number of arguments for 'acl|whoami' command"
    );
}
