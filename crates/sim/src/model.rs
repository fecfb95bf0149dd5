//! A linearizability checker for any sequential model (Wing & Gong with Lowe's
//! memoisation, over a state machine given by [`Model::step`]). Used by the
//! simulator's register checker ([`crate::linearizability`]) and by the fault-test
//! harness (`crates/jepsen`) on histories of real clusters.
//!
//! Operations whose outcome is unknown get `respond: None` (an infinite response
//! time): they may take effect at any point after their invocation, or never (the
//! checker may order them last). The model's `step` must then accept any result,
//! i.e. only apply the operation's effect. Callers drop reads of unknown outcome.

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + Hash;
    type Op;
    /// The state after `op` (with the result recorded in it, unless the outcome is
    /// unknown), or `None` if `op` with that result is impossible in `state`.
    fn step(&self, state: &Self::State, op: &Self::Op, known: bool) -> Option<Self::State>;

    /// Operations of unknown outcome with equal class have the same effect in every
    /// state (e.g. two writes of values no read ever returns), so only their order of
    /// invocation matters: the checker linearizes them in that order. This turns
    /// 2^k subsets of k such operations into k + 1 and is sound because a
    /// linearization using a later one can use an earlier one instead (an unknown
    /// outcome has no return to respect). `None`: no such class.
    fn class(&self, _op: &Self::Op) -> Option<u64> {
        None
    }
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<O> {
    pub client: u32,
    pub invoke: u64,
    /// `None`: no response (unknown outcome).
    pub respond: Option<u64>,
    pub op: O,
}

/// Why a history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelViolation {
    /// Operations in the history.
    pub ops: usize,
    /// Most operations any explored order managed to linearize.
    pub longest_prefix: usize,
    pub detail: String,
}

#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    time: u64,
}

/// Check `history` against `model` from `init`. `max_steps` bounds the search (an
/// exhausted search is reported as a violation whose detail says so).
pub fn check_model<M: Model>(
    model: &M,
    init: M::State,
    history: &[Entry<M::Op>],
    max_steps: u64,
) -> Result<(), ModelViolation>
where
    M::Op: std::fmt::Debug,
{
    let n = history.len();
    if n == 0 {
        return Ok(());
    }
    let mut events: Vec<Event> = Vec::with_capacity(2 * n);
    for (i, o) in history.iter().enumerate() {
        events.push(Event {
            op: i,
            is_call: true,
            time: o.invoke,
        });
        events.push(Event {
            op: i,
            is_call: false,
            time: o.respond.unwrap_or(u64::MAX),
        });
    }
    events.sort_by_key(|e| (e.time, !e.is_call, e.op));
    let len = events.len();
    let head = len;
    let mut next = vec![usize::MAX; len + 1];
    let mut prev = vec![usize::MAX; len + 1];
    let mut call_pos = vec![0usize; n];
    let mut ret_pos = vec![0usize; n];
    let mut last = head;
    for (i, e) in events.iter().enumerate() {
        next[last] = i;
        prev[i] = last;
        last = i;
        if e.is_call {
            call_pos[e.op] = i;
        } else {
            ret_pos[e.op] = i;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        let (p, nx) = (prev[i], next[i]);
        next[p] = nx;
        if nx != usize::MAX {
            prev[nx] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        let (p, nx) = (prev[i], next[i]);
        next[p] = i;
        if nx != usize::MAX {
            prev[nx] = i;
        }
    };
    // Each unknown operation's predecessor in its class (by invocation).
    let mut prev_equiv = vec![usize::MAX; n];
    let mut by_class: std::collections::HashMap<u64, Vec<usize>> = Default::default();
    for (i, o) in history.iter().enumerate() {
        if o.respond.is_none() {
            if let Some(c) = model.class(&o.op) {
                by_class.entry(c).or_default().push(i);
            }
        }
    }
    for mut members in by_class.into_values() {
        members.sort_by_key(|&i| (history[i].invoke, i));
        for w in members.windows(2) {
            prev_equiv[w[1]] = w[0];
        }
    }
    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut state = init;
    let mut cur = next[head];
    let mut steps: u64 = 0;
    let mut longest = 0usize;
    let mut deepest: Vec<u64> = linearized.clone();
    while next[head] != usize::MAX {
        steps += 1;
        if steps > max_steps {
            return Err(ModelViolation {
                ops: n,
                longest_prefix: longest,
                detail: format!("search exhausted its budget of {max_steps} steps (undecided)"),
            });
        }
        let backtrack = cur == usize::MAX || !events[cur].is_call;
        if backtrack {
            let Some((op, st)) = stack.pop() else {
                return Err(report(history, longest, &deepest));
            };
            state = st;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut next, &mut prev, ret_pos[op]);
            relink(&mut next, &mut prev, call_pos[op]);
            cur = next[call_pos[op]];
            continue;
        }
        let e = events[cur];
        let o = &history[e.op];
        let p = prev_equiv[e.op];
        let in_order = p == usize::MAX || linearized[p / 64] & (1 << (p % 64)) != 0;
        if !in_order {
            cur = next[cur];
            continue;
        }
        if let Some(new_state) = model.step(&state, &o.op, o.respond.is_some()) {
            let mut lin = linearized.clone();
            lin[e.op / 64] |= 1 << (e.op % 64);
            if cache.insert((lin.clone(), new_state.clone())) {
                stack.push((e.op, state));
                state = new_state;
                linearized = lin;
                if stack.len() > longest {
                    longest = stack.len();
                    deepest.clone_from(&linearized);
                }
                unlink(&mut next, &mut prev, call_pos[e.op]);
                unlink(&mut next, &mut prev, ret_pos[e.op]);
                cur = next[head];
                continue;
            }
        }
        cur = next[cur];
    }
    Ok(())
}

/// The operations around the point where the deepest explored order got stuck: the
/// earliest-returning operation it could not linearize, every operation overlapping
/// it, and a few completed before it (the full history is the caller's).
fn report<O: std::fmt::Debug>(
    history: &[Entry<O>],
    longest: usize,
    deepest: &[u64],
) -> ModelViolation {
    let done = |i: usize| deepest[i / 64] & (1 << (i % 64)) != 0;
    let stuck = (0..history.len())
        .filter(|&i| !done(i))
        .min_by_key(|&i| history[i].respond.unwrap_or(u64::MAX));
    let mut order: Vec<usize> = (0..history.len()).collect();
    order.sort_by_key(|&i| history[i].invoke);
    let mut detail = String::new();
    if let Some(s) = stuck {
        let (from, to) = (history[s].invoke, history[s].respond.unwrap_or(u64::MAX));
        let before: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| history[i].respond.is_some_and(|r| r < from))
            .collect();
        let lead = &before[before.len().saturating_sub(5)..];
        let overlapping = order
            .iter()
            .copied()
            .filter(|&i| history[i].invoke <= to && history[i].respond.unwrap_or(u64::MAX) >= from);
        detail.push_str(&format!(
            "  (no order linearizes the operation marked >>; {} operations before and around it)\n",
            lead.len()
        ));
        for i in lead.iter().copied().chain(overlapping).take(60) {
            let o = &history[i];
            detail.push_str(&format!(
                "  {} client {} [{}, {}] {:?}\n",
                if i == s { ">>" } else { "  " },
                o.client,
                o.invoke,
                o.respond.map_or("?".to_string(), |r| r.to_string()),
                o.op
            ));
        }
    }
    ModelViolation {
        ops: history.len(),
        longest_prefix: longest,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::linearizability::{OpKind, Register};

    fn e(c: u32, a: u64, b: Option<u64>, op: OpKind) -> Entry<OpKind> {
        Entry {
            client: c,
            invoke: a,
            respond: b,
            op,
        }
    }

    #[test]
    fn register_cases_match_the_register_checker() {
        let ok = vec![
            e(0, 0, Some(1), OpKind::Write(1)),
            e(1, 2, Some(3), OpKind::Read(Some(1))),
            e(0, 4, None, OpKind::Write(2)),
            e(1, 6, Some(7), OpKind::Read(Some(1))),
            e(1, 8, Some(9), OpKind::Read(Some(2))),
        ];
        assert_eq!(check_model(&Register, None, &ok, 1_000_000), Ok(()));
        let stale = vec![
            e(0, 0, Some(1), OpKind::Write(1)),
            e(0, 2, Some(3), OpKind::Write(2)),
            e(1, 4, Some(5), OpKind::Read(Some(1))),
        ];
        assert!(check_model(&Register, None, &stale, 1_000_000).is_err());
        let vanished = vec![
            e(0, 0, None, OpKind::Write(1)),
            e(1, 5, Some(6), OpKind::Read(Some(1))),
            e(1, 7, Some(8), OpKind::Read(None)),
        ];
        assert!(check_model(&Register, None, &vanished, 1_000_000).is_err());
    }
}
