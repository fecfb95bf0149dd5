//! Redis 7 string-command semantics on one entity's [`KvState`].
//!
//! The proposer executes commands on its current state and, when the state
//! changed, proposes the new state (encoded) as the next Paxos value. All
//! time-dependent decisions are made here with the proposer's `now_ms`, and
//! relative expiries are stamped into the state as absolute deadlines, so
//! every replica that learns the state agrees on it.
//!
//! Rules shared by all commands:
//!
//! * An expired key (`now_ms > expire_at_ms`) behaves as missing at once.
//! * A command that changes the state bumps [`KvState::version`] by one and
//!   sets the [`KeyEntry::version`] of every key it writes (value or TTL) to
//!   the new state version; `VSET`/`VGET` expose that version. Expired keys
//!   are then purged from the state, so they ride along with real writes
//!   instead of costing a Paxos round of their own.
//! * A command that does not change the state leaves it untouched (not even
//!   expired keys are removed), so reads and no-op writes can run on a
//!   shared copy.
//! * Errors never change the state.

use bytes::{Bytes, BytesMut};
use resp::command::{Command, ExpireKind, Expiry, GetExAction, SetCondition, SetOptions};
use resp::num::{parse_f64, parse_i64};
use resp::Reply;

use crate::kv::{KeyEntry, KvState};

/// Redis's default `proto-max-bulk-len`: the largest string `APPEND` and
/// `SETRANGE` may build.
pub const MAX_STRING_LEN: u64 = 512 * 1024 * 1024;

/// The reply to commands the connection layer must handle itself.
pub const NOT_ENTITY: &str = "ERR internal: not an entity command";

const ERR_NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const ERR_OVERFLOW: &str = "ERR increment or decrement would overflow";
const ERR_NOT_FLOAT: &str = "ERR value is not a valid float";
const ERR_NAN: &str = "ERR increment would produce NaN or Infinity";
const ERR_TOO_LONG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

/// Whether a command may change an entity's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Never changes state: may be served from a (linearizable) read.
    Read,
    /// May change state: must go through a Paxos write.
    Write,
}

/// Classifies `cmd`. Connection-level commands that touch no entity are
/// [`Access::Read`], except `FLUSHALL`/`FLUSHDB`/`EXEC`, which may change
/// data. `GETEX` without options is a read.
pub fn access(cmd: &Command) -> Access {
    use Command as C;
    match cmd {
        C::Get(_)
        | C::MGet(_)
        | C::Exists(_)
        | C::StrLen(_)
        | C::GetRange { .. }
        | C::Type(_)
        | C::Ttl(_)
        | C::PTtl(_)
        | C::VGet(_)
        | C::GetEx {
            action: GetExAction::Keep,
            ..
        } => Access::Read,
        C::Set { .. }
        | C::SetNx { .. }
        | C::SetEx { .. }
        | C::PSetEx { .. }
        | C::GetSet { .. }
        | C::GetDel(_)
        | C::GetEx { .. }
        | C::MSet(_)
        | C::MSetNx(_)
        | C::Del(_)
        | C::Unlink(_)
        | C::Incr(_)
        | C::IncrBy { .. }
        | C::Decr(_)
        | C::DecrBy { .. }
        | C::IncrByFloat { .. }
        | C::Append { .. }
        | C::SetRange { .. }
        | C::Expire { .. }
        | C::Persist(_)
        | C::Rename { .. }
        | C::VSet { .. }
        | C::FlushAll(_)
        | C::FlushDb(_)
        | C::Exec => Access::Write,
        C::Ping(_)
        | C::Echo(_)
        | C::Hello { .. }
        | C::Auth { .. }
        | C::Select(_)
        | C::Quit
        | C::Reset
        | C::Client(_)
        | C::Acl(_)
        | C::Cluster(_)
        | C::Command(_)
        | C::Info(_)
        | C::DbSize
        | C::Keys(_)
        | C::Multi
        | C::Discard
        | C::Watch(_)
        | C::Unwatch
        | C::ReadOnly
        | C::ReadWrite => Access::Read,
    }
}

/// Executes one command on one entity's state. All keys of `cmd` belong to
/// this entity. Returns the reply and whether the state changed (then the
/// caller proposes it). Connection-level commands get [`NOT_ENTITY`].
pub fn execute(state: &mut KvState, cmd: &Command, now_ms: i64) -> (Reply, bool) {
    let next = state.version.saturating_add(1);
    let mut x = Exec {
        s: state,
        now: now_ms,
        next,
        changed: false,
    };
    let reply = x.run(cmd);
    let changed = x.changed;
    if changed {
        state.version = next;
        state.purge_expired(now_ms);
    }
    (reply, changed)
}

/// A `MULTI`/`EXEC` body: executes `cmds` in order on the same state; the
/// replies form one array. As in Redis, a command that fails leaves the
/// state as it was but does not undo the others. Each changing command bumps
/// the state version on its own.
pub fn execute_all(state: &mut KvState, cmds: &[Command], now_ms: i64) -> (Reply, bool) {
    let mut changed = false;
    let replies = cmds
        .iter()
        .map(|c| {
            let (r, ch) = execute(state, c, now_ms);
            changed |= ch;
            r
        })
        .collect();
    (Reply::Array(replies), changed)
}

/// `WATCH`: whether every watched key still has the version recorded when it was
/// watched (0 for a missing or expired key). A failed check aborts a `MULTI`/`EXEC`
/// body with a null reply and no change.
pub fn watch_holds(state: &KvState, watch: &[(Bytes, u64)], now_ms: i64) -> bool {
    watch
        .iter()
        .all(|(k, v)| state.get_live(k, now_ms).map_or(0, |e| e.version) == *v)
}

/// Formats an `INCRBYFLOAT` result like Redis's `ld2string(LD_STR_HUMAN)`:
/// plain decimal notation (never an exponent), at most 17 digits after the
/// point, trailing zeros and point trimmed, no `-0`.
///
/// Redis computes in `long double`; we compute in `f64` and print the
/// shortest round-tripping decimal, which gives the same text for the
/// common cases (`10.5 + 0.1 = 10.6`) but may differ in the last digits
/// where `f64` rounding shows (`0.1 + 0.2` is `0.30000000000000004` here,
/// `0.3` in Redis).
pub fn format_float_human(d: f64) -> String {
    // `Display` for f64: shortest round-trip digits, never an exponent.
    let mut s = format!("{d}");
    if let Some(dot) = s.find('.') {
        if s.len() - dot - 1 > 17 {
            s = format!("{d:.17}");
        }
    }
    if s.contains('.') {
        let trimmed = s.trim_end_matches('0').trim_end_matches('.').len();
        s.truncate(trimmed);
    }
    if s == "-0" {
        s = "0".into();
    }
    s
}

fn expire_error(cmd: &str) -> Reply {
    Reply::Error(format!("ERR invalid expire time in '{cmd}' command"))
}

fn int(i: impl TryInto<i64>) -> Reply {
    Reply::Integer(i.try_into().unwrap_or(i64::MAX))
}

fn bulk_or_null(v: Option<Bytes>) -> Reply {
    v.map_or(Reply::Null, Reply::Bulk)
}

/// Checks `size + append` against [`MAX_STRING_LEN`] (Redis `checkStringLength`).
fn check_len(size: u64, append: u64) -> Result<(), Reply> {
    match size.checked_add(append) {
        Some(t) if t <= MAX_STRING_LEN => Ok(()),
        _ => Err(Reply::error(ERR_TOO_LONG)),
    }
}

struct Exec<'a> {
    s: &'a mut KvState,
    now: i64,
    /// The state version this command will produce if it writes.
    next: u64,
    changed: bool,
}

impl Exec<'_> {
    fn live(&self, key: &[u8]) -> Option<&KeyEntry> {
        self.s.get_live(key, self.now)
    }

    fn value(&self, key: &[u8]) -> Option<Bytes> {
        self.live(key).map(|e| e.value.clone())
    }

    /// Writes `key` (value and expiry) at the new version.
    fn put(&mut self, key: &Bytes, value: Bytes, expire_at_ms: Option<i64>) {
        self.s.keys.insert(
            key.clone(),
            KeyEntry {
                value,
                expire_at_ms,
                version: self.next,
            },
        );
        self.changed = true;
    }

    /// Deletes `key` if it is live; returns whether it was.
    fn delete(&mut self, key: &[u8]) -> bool {
        if self.live(key).is_none() {
            return false;
        }
        self.s.keys.remove(key);
        self.changed = true;
        true
    }

    /// Sets the expiry of live `key` at the new version.
    fn set_expire(&mut self, key: &[u8], expire_at_ms: Option<i64>) {
        let now = self.now;
        if let Some(e) = self.s.keys.get_mut(key).filter(|e| e.is_live(now)) {
            e.expire_at_ms = expire_at_ms;
            e.version = self.next;
            self.changed = true;
        }
    }

    fn run(&mut self, cmd: &Command) -> Reply {
        use Command as C;
        match cmd {
            C::Get(key) => bulk_or_null(self.value(key)),
            C::Set {
                key,
                value,
                options,
            } => self.set(key, value, options),
            C::SetNx { key, value } => {
                if self.live(key).is_some() {
                    Reply::Integer(0)
                } else {
                    self.put(key, value.clone(), None);
                    Reply::Integer(1)
                }
            }
            C::SetEx { key, ttl_ms, value } => self.set_ex(key, *ttl_ms, value, "setex"),
            C::PSetEx { key, ttl_ms, value } => self.set_ex(key, *ttl_ms, value, "psetex"),
            C::GetSet { key, value } => {
                let old = self.value(key);
                self.put(key, value.clone(), None);
                bulk_or_null(old)
            }
            C::GetDel(key) => {
                let old = self.value(key);
                self.delete(key);
                bulk_or_null(old)
            }
            C::GetEx { key, action } => self.getex(key, *action),
            C::MGet(keys) => {
                Reply::Array(keys.iter().map(|k| bulk_or_null(self.value(k))).collect())
            }
            C::MSet(pairs) => {
                for (k, v) in pairs {
                    self.put(k, v.clone(), None);
                }
                Reply::ok()
            }
            C::MSetNx(pairs) => {
                if pairs.iter().any(|(k, _)| self.live(k).is_some()) {
                    return Reply::Integer(0);
                }
                for (k, v) in pairs {
                    self.put(k, v.clone(), None);
                }
                Reply::Integer(1)
            }
            C::Del(keys) | C::Unlink(keys) => int(keys.iter().filter(|k| self.delete(k)).count()),
            C::Exists(keys) => int(keys.iter().filter(|k| self.live(k).is_some()).count()),
            C::Incr(key) => self.incr_by(key, 1),
            C::IncrBy { key, delta } => self.incr_by(key, *delta),
            C::Decr(key) => self.incr_by(key, -1),
            // The parser rejects i64::MIN, so the negation cannot overflow.
            C::DecrBy { key, delta } => self.incr_by(key, delta.saturating_neg()),
            C::IncrByFloat { key, delta } => self.incr_by_float(key, *delta),
            C::Append { key, value } => self.append(key, value),
            C::StrLen(key) => int(self.live(key).map_or(0, |e| e.value.len())),
            C::GetRange { key, start, end } => {
                Reply::Bulk(get_range(self.value(key).unwrap_or_default(), *start, *end))
            }
            C::SetRange { key, offset, value } => self.set_range(key, *offset, value),
            C::Type(key) => Reply::simple(if self.live(key).is_some() {
                "string"
            } else {
                "none"
            }),
            C::Expire {
                kind,
                key,
                when_ms,
                flags,
            } => self.expire(*kind, key, *when_ms, flags),
            C::Ttl(key) => self.ttl(key, false),
            C::PTtl(key) => self.ttl(key, true),
            C::Rename { from, to, nx } => match self.live(from).cloned() {
                None => Reply::error("ERR no such key"),
                // Redis: RENAME of a key onto itself is OK, RENAMENX replies 0.
                Some(_) if from == to => {
                    if *nx {
                        Reply::Integer(0)
                    } else {
                        Reply::ok()
                    }
                }
                Some(_) if *nx && self.live(to).is_some() => Reply::Integer(0),
                Some(e) => {
                    self.delete(from);
                    self.put(to, e.value, e.expire_at_ms);
                    if *nx {
                        Reply::Integer(1)
                    } else {
                        Reply::ok()
                    }
                }
            },
            C::Persist(key) => match self.live(key) {
                Some(e) if e.expire_at_ms.is_some() => {
                    self.set_expire(key, None);
                    Reply::Integer(1)
                }
                _ => Reply::Integer(0),
            },
            C::VGet(key) => match self.live(key) {
                Some(e) => Reply::Array(vec![Reply::Bulk(e.value.clone()), int(e.version)]),
                None => Reply::NullArray,
            },
            C::VSet {
                key,
                value,
                version,
            } => {
                let current = self.live(key).map_or(0, |e| e.version);
                if current != *version {
                    return Reply::Error(format!("VERSION mismatch (current {current})"));
                }
                self.put(key, value.clone(), None);
                int(self.next)
            }
            C::Ping(_)
            | C::Echo(_)
            | C::Hello { .. }
            | C::Auth { .. }
            | C::Select(_)
            | C::Quit
            | C::Reset
            | C::Client(_)
            | C::Acl(_)
            | C::Cluster(_)
            | C::Command(_)
            | C::Info(_)
            | C::FlushAll(_)
            | C::FlushDb(_)
            | C::DbSize
            | C::Keys(_)
            | C::Multi
            | C::Exec
            | C::Discard
            | C::Watch(_)
            | C::Unwatch
            | C::ReadOnly
            | C::ReadWrite => Reply::error(NOT_ENTITY),
        }
    }

    fn deadline(&self, e: Expiry, cmd: &str) -> Result<i64, Reply> {
        e.deadline_ms(self.now).ok_or_else(|| expire_error(cmd))
    }

    fn set(&mut self, key: &Bytes, value: &Bytes, o: &SetOptions) -> Reply {
        // Redis checks the expire time before looking at the key.
        let deadline = match o.expiry.map(|e| self.deadline(e, "set")).transpose() {
            Ok(d) => d,
            Err(r) => return r,
        };
        let old = self.live(key).map(|e| (e.value.clone(), e.expire_at_ms));
        let old_reply = || bulk_or_null(old.as_ref().map(|(v, _)| v.clone()));
        let ok = match o.condition {
            SetCondition::Always => true,
            SetCondition::Nx => old.is_none(),
            SetCondition::Xx => old.is_some(),
        };
        if !ok {
            return if o.get { old_reply() } else { Reply::Null };
        }
        let expire = if o.keep_ttl {
            old.as_ref().and_then(|(_, e)| *e)
        } else {
            deadline
        };
        let reply = if o.get { old_reply() } else { Reply::ok() };
        self.put(key, value.clone(), expire);
        reply
    }

    fn set_ex(&mut self, key: &Bytes, ttl_ms: i64, value: &Bytes, cmd: &str) -> Reply {
        match self.deadline(Expiry::RelativeMs(ttl_ms), cmd) {
            Ok(d) => {
                self.put(key, value.clone(), Some(d));
                Reply::ok()
            }
            Err(r) => r,
        }
    }

    fn getex(&mut self, key: &Bytes, action: GetExAction) -> Reply {
        let deadline = match action {
            GetExAction::Expire(e) => match self.deadline(e, "getex") {
                Ok(d) => Some(d),
                Err(r) => return r,
            },
            _ => None,
        };
        let Some(e) = self.live(key) else {
            return Reply::Null;
        };
        let (value, had_ttl) = (e.value.clone(), e.expire_at_ms.is_some());
        match (action, deadline) {
            // EXAT/PXAT in the past: Redis deletes the key (after replying).
            (GetExAction::Expire(_), Some(d)) if d <= self.now => {
                self.delete(key);
            }
            (GetExAction::Expire(_), Some(d)) => self.set_expire(key, Some(d)),
            (GetExAction::Persist, _) if had_ttl => self.set_expire(key, None),
            _ => {}
        }
        Reply::Bulk(value)
    }

    fn incr_by(&mut self, key: &Bytes, delta: i64) -> Reply {
        let (old, expire) = match self.live(key) {
            Some(e) => match parse_i64(&e.value) {
                Some(v) => (v, e.expire_at_ms),
                None => return Reply::error(ERR_NOT_INTEGER),
            },
            None => (0, None),
        };
        let Some(new) = old.checked_add(delta) else {
            return Reply::error(ERR_OVERFLOW);
        };
        self.put(key, Bytes::from(new.to_string()), expire);
        Reply::Integer(new)
    }

    fn incr_by_float(&mut self, key: &Bytes, delta: f64) -> Reply {
        let (old, expire) = match self.live(key) {
            Some(e) => match parse_f64(&e.value) {
                Some(v) => (v, e.expire_at_ms),
                None => return Reply::error(ERR_NOT_FLOAT),
            },
            None => (0.0, None),
        };
        let new = old + delta;
        if !new.is_finite() {
            return Reply::error(ERR_NAN);
        }
        let text = Bytes::from(format_float_human(new));
        self.put(key, text.clone(), expire);
        Reply::Bulk(text)
    }

    fn append(&mut self, key: &Bytes, value: &Bytes) -> Reply {
        let Some(e) = self.live(key) else {
            self.put(key, value.clone(), None);
            return int(value.len());
        };
        if let Err(r) = check_len(e.value.len() as u64, value.len() as u64) {
            return r;
        }
        if value.is_empty() {
            return int(e.value.len());
        }
        let expire = e.expire_at_ms;
        let mut buf = BytesMut::with_capacity(e.value.len() + value.len());
        buf.extend_from_slice(&e.value);
        buf.extend_from_slice(value);
        let len = buf.len();
        self.put(key, buf.freeze(), expire);
        int(len)
    }

    fn set_range(&mut self, key: &Bytes, offset: u64, value: &Bytes) -> Reply {
        let old = self.live(key).map(|e| (e.value.clone(), e.expire_at_ms));
        if value.is_empty() {
            // Nothing to write: a missing key is not created.
            return int(old.map_or(0, |(v, _)| v.len()));
        }
        if let Err(r) = check_len(offset, value.len() as u64) {
            return r;
        }
        // check_len bounds offset + len by 512 MiB, so these fit in usize.
        let offset = offset as usize;
        let end = offset + value.len();
        let (old_value, expire) = old.unwrap_or_default();
        let mut buf = BytesMut::from(&old_value[..]);
        if buf.len() < end {
            buf.resize(end, 0);
        }
        buf[offset..end].copy_from_slice(value);
        let len = buf.len();
        self.put(key, buf.freeze(), expire);
        int(len)
    }

    fn expire(
        &mut self,
        kind: ExpireKind,
        key: &Bytes,
        when_ms: i64,
        f: &resp::command::ExpireFlags,
    ) -> Reply {
        let name = match kind {
            ExpireKind::Expire => "expire",
            ExpireKind::PExpire => "pexpire",
            ExpireKind::ExpireAt => "expireat",
            ExpireKind::PExpireAt => "pexpireat",
        };
        let when = if kind.is_relative() {
            match when_ms.checked_add(self.now) {
                Some(w) => w,
                None => return expire_error(name),
            }
        } else {
            when_ms
        };
        let Some(e) = self.live(key) else {
            return Reply::Integer(0);
        };
        let current = e.expire_at_ms;
        if (f.nx && current.is_some())
            || (f.xx && current.is_none())
            || (f.gt && current.is_none_or(|c| when <= c))
            || (f.lt && current.is_some_and(|c| when >= c))
        {
            return Reply::Integer(0);
        }
        if when <= self.now {
            self.delete(key);
        } else {
            self.set_expire(key, Some(when));
        }
        Reply::Integer(1)
    }

    fn ttl(&self, key: &[u8], ms: bool) -> Reply {
        match self.live(key) {
            None => Reply::Integer(-2),
            Some(KeyEntry {
                expire_at_ms: None, ..
            }) => Reply::Integer(-1),
            Some(KeyEntry {
                expire_at_ms: Some(at),
                ..
            }) => {
                let left = at.saturating_sub(self.now).max(0);
                Reply::Integer(if ms {
                    left
                } else {
                    left.saturating_add(500) / 1000
                })
            }
        }
    }
}

/// `GETRANGE` on `v` with Redis 7's index rules.
fn get_range(v: Bytes, mut start: i64, mut end: i64) -> Bytes {
    let len = v.len() as i64;
    if start < 0 && end < 0 && start > end {
        return Bytes::new();
    }
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    if start > end || len == 0 {
        return Bytes::new();
    }
    v.slice(start as usize..=end as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_float_format() {
        assert_eq!(format_float_human(10.5 + 0.1), "10.6");
        assert_eq!(format_float_human(5.0e3 + 2.0e2), "5200");
        assert_eq!(format_float_human(3.0), "3");
        assert_eq!(format_float_human(-0.0), "0");
        assert_eq!(format_float_human(1e-20), "0");
        assert_eq!(format_float_human(-1e-20), "0");
        assert_eq!(format_float_human(1.5e-5), "0.000015");
        assert_eq!(format_float_human(17179869185.5), "17179869185.5");
        assert_eq!(format_float_human(1e21), "1000000000000000000000");
        assert_eq!(format_float_human(-2.5), "-2.5");
    }

    #[test]
    fn get_range_rules() {
        let v = Bytes::from_static(b"This is a string");
        let r = |s, e| get_range(v.clone(), s, e);
        assert_eq!(&r(0, 3)[..], b"This");
        assert_eq!(&r(-3, -1)[..], b"ing");
        assert_eq!(&r(0, -1)[..], b"This is a string");
        assert_eq!(&r(10, 100)[..], b"string");
        assert_eq!(&r(-1, -5)[..], b"");
        assert_eq!(&r(5, 3)[..], b"");
        assert_eq!(&r(-100, 2)[..], b"Thi");
        assert_eq!(&r(i64::MIN, i64::MAX)[..], b"This is a string");
        assert_eq!(&get_range(Bytes::new(), 0, -1)[..], b"");
        assert_eq!(&get_range(Bytes::new(), -1, 0)[..], b"");
    }
}
