//! The checks on a history:
//!
//! * **Linearizability per entity** (registers, counters, two-key transaction
//!   entities) with `sim::model::check_model` against [`KvModel`]: the entity's
//!   version (bumped by every write, as the server does) and each key's value.
//!   Operations of unknown outcome may take effect at any later point or never.
//!   The final reads after each round's heal are part of the history, so a lost
//!   acknowledged write is also a linearizability violation.
//! * **Lost acknowledged writes**, stated directly from the final reads: a register's
//!   final version is at least its number of acknowledged writes; a counter's final
//!   value lies between its acknowledged and its acknowledged-plus-unknown INCRs; a
//!   transaction key acknowledged written is not empty; and at the end of the run every
//!   earlier round's entities still read what they read at that round's end.
//! * **Expiry keys** (written with `SET .. PX`, while clocks jump): a read never
//!   returns a value that was not written before it completed, and never returns an
//!   acknowledged value once its expiry plus twice the largest clock offset (`skew`)
//!   plus a slack has passed since the acknowledgement; final reads (clocks healed)
//!   need only one `skew`. A write of unknown outcome may take effect — and be
//!   stamped — arbitrarily late, so it gets no such deadline. Expiry keys are not checked for
//!   linearizability: under clock offsets a node legitimately sees a key expire
//!   earlier or later than another.

use std::collections::BTreeMap;

use sim::model::{check_model, Entry, Model};

use crate::history::{Class, Op, Outcome, Record, Res, FINAL_CLIENT};

/// One entity's operation, with the keys replaced by their index in the entity.
#[derive(Clone, Debug)]
pub enum MOp {
    Get(usize, Option<i64>),
    Set(usize, i64),
    Vget(Option<(i64, u64)>),
    Vset {
        value: i64,
        expect: u64,
        res: Option<Result<u64, u64>>,
    },
    Incr(Option<i64>),
    TxnSet(i64),
    TxnGet(Vec<Option<i64>>),
}

/// The server's entity: a state version bumped by each write, and key values.
pub struct KvModel {
    pub keys: usize,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct KvState {
    pub version: u64,
    pub vals: Vec<Option<i64>>,
}

/// The value given to writes whose value no read returned: all such writes look
/// alike to the checker (smaller memo, and see [`Model::class`]).
pub const UNSEEN: i64 = i64::MIN;

impl Model for KvModel {
    type State = KvState;
    type Op = MOp;
    fn class(&self, op: &MOp) -> Option<u64> {
        match op {
            MOp::Set(k, UNSEEN) => Some(1 + *k as u64),
            MOp::TxnSet(UNSEEN) => Some(100),
            MOp::Incr(None) => Some(101),
            MOp::Vset {
                value: UNSEEN,
                expect,
                res: None,
            } => Some(1000 + *expect),
            _ => None,
        }
    }
    fn step(&self, s: &KvState, op: &MOp, known: bool) -> Option<KvState> {
        let write = |f: &dyn Fn(&mut Vec<Option<i64>>)| {
            let mut n = s.clone();
            f(&mut n.vals);
            n.version += 1;
            n
        };
        match op {
            MOp::Get(k, r) => (!known || s.vals[*k] == *r).then(|| s.clone()),
            MOp::Set(k, v) => Some(write(&|vals| vals[*k] = Some(*v))),
            MOp::Vget(r) => {
                let cur = s.vals[0].map(|v| (v, s.version));
                (!known || cur == *r).then(|| s.clone())
            }
            MOp::Vset { value, expect, res } => {
                let cur = if s.vals[0].is_some() { s.version } else { 0 };
                let matches = cur == *expect;
                match (known, res) {
                    (false, _) | (true, None) => Some(if matches {
                        write(&|vals| vals[0] = Some(*value))
                    } else {
                        s.clone()
                    }),
                    (true, Some(Ok(new))) => (matches && *new == s.version + 1)
                        .then(|| write(&|vals| vals[0] = Some(*value))),
                    (true, Some(Err(c))) => (!matches && *c == cur).then(|| s.clone()),
                }
            }
            MOp::Incr(r) => {
                let next = s.vals[0].unwrap_or(0) + 1;
                (!known || *r == Some(next)).then(|| write(&|vals| vals[0] = Some(next)))
            }
            MOp::TxnSet(v) => Some(write(&|vals| {
                for x in vals.iter_mut() {
                    *x = Some(*v)
                }
            })),
            MOp::TxnGet(r) => (!known || s.vals == *r).then(|| s.clone()),
        }
    }
}

/// One problem found.
#[derive(Clone, Debug)]
pub struct Finding {
    pub round: u32,
    pub entity: String,
    /// "linearizability", "lost-write", "expiry", "undecided".
    pub kind: &'static str,
    pub detail: String,
}

/// The keys of an entity, in model order.
pub fn entity_keys(class: Class, entity: &str) -> Vec<String> {
    match class {
        Class::Txn => vec![format!("{entity}:a"), format!("{entity}:b")],
        _ => vec![entity.to_string()],
    }
}

fn to_mop(r: &Record, keys: &[String]) -> Option<(MOp, bool)> {
    let idx = |k: &String| keys.iter().position(|x| x == k).unwrap_or(0);
    let (res, known) = match &r.outcome {
        Outcome::Ok { res } => (Some(res), true),
        Outcome::Fail { .. } => return None,
        Outcome::Unknown { .. } => {
            if r.op.is_read() {
                return None;
            }
            (None, false)
        }
    };
    let bad = || -> Option<(MOp, bool)> { None };
    let op = match (&r.op, res) {
        (Op::Get { key }, Some(Res::Value { v })) => MOp::Get(idx(key), *v),
        (Op::Set { key, value }, _) => MOp::Set(idx(key), *value),
        (Op::SetPx { key, value, .. }, _) => MOp::Set(idx(key), *value),
        (Op::Vget { .. }, Some(Res::Versioned { v })) => MOp::Vget(*v),
        (Op::Vset { value, version, .. }, res) => MOp::Vset {
            value: *value,
            expect: *version,
            res: match res {
                Some(Res::Version { v }) => Some(Ok(*v)),
                Some(Res::Mismatch { current }) => Some(Err(*current)),
                _ => None,
            },
        },
        (Op::Incr { .. }, res) => MOp::Incr(match res {
            Some(Res::Int { v }) => Some(*v),
            _ => None,
        }),
        (Op::TxnSet { value, .. }, _) => MOp::TxnSet(*value),
        (Op::TxnGet { .. }, Some(Res::Values { v })) => MOp::TxnGet(v.clone()),
        _ => return bad(),
    };
    Some((op, known))
}

/// Check one entity's history (all of one round's operations on it).
pub fn check_entity(class: Class, entity: &str, ops: &[&Record], max_steps: u64) -> Vec<Finding> {
    let round = ops.first().map_or(0, |r| r.round);
    let keys = entity_keys(class, entity);
    let mut out = Vec::new();
    // Values some successful read returned; writes of other values become UNSEEN.
    let mut seen = std::collections::HashSet::new();
    for r in ops {
        if let Outcome::Ok { res } = &r.outcome {
            match res {
                Res::Value { v: Some(v) } | Res::Int { v } => {
                    seen.insert(*v);
                }
                Res::Versioned { v: Some((v, _)) } => {
                    seen.insert(*v);
                }
                Res::Values { v } => seen.extend(v.iter().flatten().copied()),
                _ => {}
            }
        }
    }
    let unseen = |v: i64| if seen.contains(&v) { v } else { UNSEEN };
    let mut hist = Vec::new();
    for r in ops {
        if let Some((op, known)) = to_mop(r, &keys) {
            let op = match op {
                MOp::Set(k, v) => MOp::Set(k, unseen(v)),
                MOp::TxnSet(v) => MOp::TxnSet(unseen(v)),
                MOp::Vset { value, expect, res } => MOp::Vset {
                    value: unseen(value),
                    expect,
                    res,
                },
                other => other,
            };
            hist.push(Entry {
                client: r.client,
                invoke: r.invoke_us,
                respond: known.then_some(r.complete_us),
                op,
            });
        }
    }
    let init = KvState {
        version: 0,
        vals: vec![None; keys.len()],
    };
    if let Err(v) = check_model(&KvModel { keys: keys.len() }, init, &hist, max_steps) {
        let kind = if v.detail.contains("budget") {
            "undecided"
        } else {
            "linearizability"
        };
        out.push(Finding {
            round,
            entity: entity.to_string(),
            kind,
            detail: format!(
                "{} ops, at most {} linearized in any order:\n{}",
                v.ops, v.longest_prefix, v.detail
            ),
        });
    }
    out.extend(lost_writes(class, entity, ops, &keys));
    out
}

/// The direct lost-write check of one entity from its final reads.
fn lost_writes(class: Class, entity: &str, ops: &[&Record], keys: &[String]) -> Vec<Finding> {
    let round = ops.first().map_or(0, |r| r.round);
    let acked = |f: &dyn Fn(&Record) -> bool| {
        ops.iter()
            .filter(|r| matches!(r.outcome, Outcome::Ok { .. }) && f(r))
            .count() as i64
    };
    let unknown = |f: &dyn Fn(&Record) -> bool| {
        ops.iter()
            .filter(|r| matches!(r.outcome, Outcome::Unknown { .. }) && f(r))
            .count() as i64
    };
    let finals: Vec<&&Record> = ops
        .iter()
        .filter(|r| r.client >= FINAL_CLIENT && matches!(r.outcome, Outcome::Ok { .. }))
        .collect();
    let mut out = Vec::new();
    let mut lost = |detail: String| {
        out.push(Finding {
            round,
            entity: entity.to_string(),
            kind: "lost-write",
            detail,
        })
    };
    for f in finals {
        let Outcome::Ok { res } = &f.outcome else {
            continue;
        };
        match (class, res) {
            (Class::Register, Res::Versioned { v }) => {
                let writes = acked(&|r| {
                    matches!(r.op, Op::Set { .. } | Op::SetPx { .. })
                        || matches!(
                            (&r.op, &r.outcome),
                            (
                                Op::Vset { .. },
                                Outcome::Ok {
                                    res: Res::Version { .. }
                                }
                            )
                        )
                });
                let version = v.map_or(0, |x| x.1) as i64;
                if version < writes {
                    lost(format!(
                        "final read via node {} shows version {version}, but {writes} writes were acknowledged",
                        f.node
                    ));
                }
            }
            (Class::Counter, Res::Value { v }) => {
                let is_incr = |r: &Record| matches!(r.op, Op::Incr { .. });
                let (lo, hi) = (acked(&is_incr), acked(&is_incr) + unknown(&is_incr));
                let got = v.unwrap_or(0);
                if got < lo || got > hi {
                    lost(format!(
                        "final read via node {} shows {got}; acknowledged INCRs {lo}, with unknown ones {hi}",
                        f.node
                    ));
                }
            }
            (Class::Txn, Res::Values { v }) => {
                for (i, k) in keys.iter().enumerate() {
                    let wrote = acked(&|r| match &r.op {
                        Op::TxnSet { .. } => true,
                        Op::Set { key, .. } => key == k,
                        _ => false,
                    });
                    if wrote > 0 && v.get(i).copied().flatten().is_none() {
                        lost(format!(
                            "final read via node {} shows {k} empty after {wrote} acknowledged writes",
                            f.node
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Expiry-key checks (see the module doc). `skew_ms`: the largest clock offset
/// injected.
pub fn check_expiry(entity: &str, ops: &[&Record], skew_ms: u64, slack_ms: u64) -> Vec<Finding> {
    let round = ops.first().map_or(0, |r| r.round);
    let mut out = Vec::new();
    // value -> (invoke, latest possible stamp time, px)
    let mut writes: BTreeMap<i64, (u64, u64, u64)> = BTreeMap::new();
    for r in ops {
        if let Op::SetPx { value, px, .. } = r.op {
            // A write of unknown outcome may take effect (and be stamped) at any
            // later time, so only acknowledged writes have a latest stamp.
            let latest = match r.outcome {
                Outcome::Ok { .. } => r.complete_us,
                Outcome::Unknown { .. } => u64::MAX,
                Outcome::Fail { .. } => continue,
            };
            writes.insert(value, (r.invoke_us, latest, px));
        }
    }
    for r in ops {
        let (
            Op::Get { .. },
            Outcome::Ok {
                res: Res::Value { v },
            },
        ) = (&r.op, &r.outcome)
        else {
            continue;
        };
        let Some(v) = v else { continue };
        let Some(&(inv, latest, px)) = writes.get(v) else {
            out.push(Finding {
                round,
                entity: entity.to_string(),
                kind: "expiry",
                detail: format!("client {} read {v}, which was never written", r.client),
            });
            continue;
        };
        if inv > r.complete_us {
            out.push(Finding {
                round,
                entity: entity.to_string(),
                kind: "expiry",
                detail: format!("client {} read {v} before it was written", r.client),
            });
        }
        let skews = if r.client >= FINAL_CLIENT { 1 } else { 2 };
        let dead_at = latest.saturating_add((px + skews * skew_ms + slack_ms) * 1000);
        if r.invoke_us > dead_at {
            out.push(Finding {
                round,
                entity: entity.to_string(),
                kind: "expiry",
                detail: format!(
                    "client {} (node {}) read {v} at {} us, {} ms after it must have expired (PX {px}, skew {skew_ms} ms)",
                    r.client,
                    r.node,
                    r.invoke_us,
                    (r.invoke_us - dead_at) / 1000
                ),
            });
        }
    }
    out
}

/// Check every entity of a history.
pub fn check_all(records: &[Record], skew_ms: u64) -> Vec<Finding> {
    let mut by: BTreeMap<(u32, Class, String), Vec<&Record>> = BTreeMap::new();
    for r in records {
        by.entry((r.round, r.class, r.entity.clone()))
            .or_default()
            .push(r);
    }
    let mut out = Vec::new();
    for ((_, class, entity), ops) in by {
        match class {
            Class::Expiry => out.extend(check_expiry(&entity, &ops, skew_ms, 300)),
            _ => out.extend(check_entity(class, &entity, &ops, 20_000_000)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(client: u32, class: Class, entity: &str, op: Op, t: (u64, u64), o: Outcome) -> Record {
        Record {
            round: 0,
            client,
            node: 0,
            entity: entity.into(),
            class,
            op,
            invoke_us: t.0,
            complete_us: t.1,
            outcome: o,
        }
    }
    fn ok(res: Res) -> Outcome {
        Outcome::Ok { res }
    }
    fn set(c: u32, v: i64, t: (u64, u64), o: Outcome) -> Record {
        rec(
            c,
            Class::Register,
            "r",
            Op::Set {
                key: "r".into(),
                value: v,
            },
            t,
            o,
        )
    }
    fn vget(c: u32, v: Option<(i64, u64)>, t: (u64, u64)) -> Record {
        rec(
            c,
            Class::Register,
            "r",
            Op::Vget { key: "r".into() },
            t,
            ok(Res::Versioned { v }),
        )
    }
    fn kinds(f: &[Finding]) -> Vec<&'static str> {
        f.iter().map(|x| x.kind).collect()
    }

    #[test]
    fn a_good_register_history_passes() {
        let h = vec![
            set(1, 10, (0, 5), ok(Res::Ok)),
            vget(2, Some((10, 1)), (6, 8)),
            set(
                1,
                11,
                (9, 100),
                Outcome::Unknown {
                    error: "timed out".into(),
                },
            ),
            rec(
                2,
                Class::Register,
                "r",
                Op::Vset {
                    key: "r".into(),
                    value: 12,
                    version: 1,
                },
                (10, 20),
                ok(Res::Mismatch { current: 2 }),
            ),
            vget(FINAL_CLIENT, Some((11, 2)), (200, 210)),
        ];
        assert!(check_all(&h, 0).is_empty(), "{:?}", check_all(&h, 0));
    }

    #[test]
    fn a_stale_read_is_a_violation() {
        let h = vec![
            set(1, 10, (0, 5), ok(Res::Ok)),
            set(1, 11, (6, 9), ok(Res::Ok)),
            vget(2, Some((10, 1)), (10, 12)),
        ];
        assert_eq!(kinds(&check_all(&h, 0)), vec!["linearizability"]);
    }

    #[test]
    fn a_lost_acknowledged_write_is_found_twice() {
        let h = vec![
            set(1, 10, (0, 5), ok(Res::Ok)),
            set(1, 11, (6, 9), ok(Res::Ok)),
            vget(FINAL_CLIENT, Some((10, 1)), (100, 120)),
        ];
        let k = kinds(&check_all(&h, 0));
        assert!(
            k.contains(&"linearizability") && k.contains(&"lost-write"),
            "{k:?}"
        );
    }

    #[test]
    fn counter_and_transactions() {
        let incr = |c, t, r| rec(c, Class::Counter, "c", Op::Incr { key: "c".into() }, t, r);
        let get = |v, t| {
            rec(
                FINAL_CLIENT,
                Class::Counter,
                "c",
                Op::Get { key: "c".into() },
                t,
                ok(Res::Value { v }),
            )
        };
        let good = vec![
            incr(1, (0, 5), ok(Res::Int { v: 1 })),
            incr(
                2,
                (1, 6),
                Outcome::Unknown {
                    error: "TIMEOUT".into(),
                },
            ),
            incr(1, (7, 9), ok(Res::Int { v: 3 })),
            get(Some(3), (20, 21)),
        ];
        assert!(check_all(&good, 0).is_empty());
        let lost = vec![incr(1, (0, 5), ok(Res::Int { v: 1 })), get(None, (20, 21))];
        let k = kinds(&check_all(&lost, 0));
        assert!(k.contains(&"lost-write"), "{k:?}");
        // A transaction read that sees half of a transaction write.
        let keys = vec!["{t}:a".to_string(), "{t}:b".to_string()];
        let tx = vec![
            rec(
                1,
                Class::Txn,
                "{t}",
                Op::TxnSet {
                    keys: keys.clone(),
                    value: 5,
                },
                (0, 5),
                ok(Res::Ok),
            ),
            rec(
                2,
                Class::Txn,
                "{t}",
                Op::Set {
                    key: "{t}:a".into(),
                    value: 6,
                },
                (6, 8),
                ok(Res::Ok),
            ),
            rec(
                3,
                Class::Txn,
                "{t}",
                Op::TxnGet { keys: keys.clone() },
                (9, 10),
                ok(Res::Values {
                    v: vec![Some(6), Some(5)],
                }),
            ),
        ];
        assert!(check_all(&tx, 0).is_empty());
        let torn = vec![
            rec(
                1,
                Class::Txn,
                "{t}",
                Op::TxnSet {
                    keys: keys.clone(),
                    value: 5,
                },
                (0, 5),
                ok(Res::Ok),
            ),
            rec(
                3,
                Class::Txn,
                "{t}",
                Op::TxnGet { keys },
                (9, 10),
                ok(Res::Values {
                    v: vec![Some(5), None],
                }),
            ),
        ];
        assert_eq!(kinds(&check_all(&torn, 0)), vec!["linearizability"]);
    }

    #[test]
    fn many_unknown_writes_stay_decidable() {
        // 80 writes of unknown outcome, never read back, then reads pinning the
        // version: 2^80 subsets without the symmetry reduction.
        let unknown = || Outcome::Unknown {
            error: "TIMEOUT".into(),
        };
        let mut h: Vec<Record> = (0..80)
            .map(|i| {
                set(
                    1 + i as u32 % 8,
                    100 + i,
                    (i as u64 * 10, 1_000_000),
                    unknown(),
                )
            })
            .collect();
        h.push(set(9, 5, (2000, 2010), ok(Res::Ok)));
        h.push(vget(9, Some((5, 41)), (2020, 2030)));
        h.push(vget(FINAL_CLIENT, Some((5, 41)), (2_000_000, 2_000_010)));
        let started = std::time::Instant::now();
        assert!(check_all(&h, 0).is_empty(), "{:?}", check_all(&h, 0));
        assert!(started.elapsed().as_secs() < 5);
        // The same with a read of an older version after it: a violation.
        h.push(vget(
            FINAL_CLIENT + 1,
            Some((5, 40)),
            (2_000_020, 2_000_030),
        ));
        assert_eq!(kinds(&check_all(&h, 0)), vec!["linearizability"]);
    }

    #[test]
    fn expiry_values_must_not_outlive_their_ttl() {
        let w = rec(
            1,
            Class::Expiry,
            "x",
            Op::SetPx {
                key: "x".into(),
                value: 7,
                px: 100,
            },
            (0, 1000),
            ok(Res::Ok),
        );
        let read = |t: u64, v| {
            rec(
                2,
                Class::Expiry,
                "x",
                Op::Get { key: "x".into() },
                (t, t + 10),
                ok(Res::Value { v }),
            )
        };
        // Alive 50 ms in: fine. 2 s later with 0 skew: resurrected.
        let h = vec![w.clone(), read(50_000, Some(7)), read(2_000_000, Some(7))];
        assert_eq!(kinds(&check_all(&h, 0)), vec!["expiry"]);
        // With a 1 s skew allowed, 2 s later is still explainable.
        assert!(check_all(&h, 1000).is_empty());
        let never = vec![w, read(50_000, Some(8))];
        assert_eq!(kinds(&check_all(&never, 0)), vec!["expiry"]);
    }
}
