//! A linearizability checker for single-register histories (one per entity), in the
//! style of Wing & Gong with Lowe's memoisation (as in Porcupine).
//!
//! Operations whose outcome is unknown (timeouts) get an infinite response time: they
//! may take effect at any point after their invocation, or never.

use std::collections::HashSet;

/// What a client did to one register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Write a unique value id.
    Write(u64),
    /// Read; `None` in the result means the register was never written.
    Read(Option<u64>),
}

/// One completed or indeterminate operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub client: u32,
    pub invoke: u64,
    /// `None`: no response (unknown outcome).
    pub respond: Option<u64>,
    pub kind: OpKind,
}

/// Why a history is not linearizable (the ops involved, for the report).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub ops: usize,
    pub detail: String,
}

#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    time: u64,
}

/// Check one register's history. Reads of unknown outcome are ignored (they constrain
/// nothing). Exponential in the worst case; the memo keeps real histories fast.
pub fn check_register(history: &[Op]) -> Result<(), Violation> {
    let ops: Vec<&Op> = history
        .iter()
        .filter(|o| !(matches!(o.kind, OpKind::Read(_)) && o.respond.is_none()))
        .collect();
    let n = ops.len();
    if n == 0 {
        return Ok(());
    }
    // Event list: calls before returns at equal times (equal times overlap).
    let mut events: Vec<Event> = Vec::with_capacity(2 * n);
    for (i, o) in ops.iter().enumerate() {
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
    // Doubly linked list over event indices, with a head sentinel at index len.
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
    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<u64>)> = Vec::new();
    let mut state: Option<u64> = None;
    let mut cur = next[head];
    let mut steps: u64 = 0;
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
    while next[head] != usize::MAX {
        steps += 1;
        if steps > 50_000_000 {
            return Err(Violation {
                ops: n,
                detail: "search too large".into(),
            });
        }
        if cur == usize::MAX {
            // Ran off the end without linearizing everything: backtrack.
            let Some((op, st)) = stack.pop() else {
                return Err(violation(&ops));
            };
            state = st;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut next, &mut prev, ret_pos[op]);
            relink(&mut next, &mut prev, call_pos[op]);
            cur = next[call_pos[op]];
            continue;
        }
        let e = events[cur];
        if e.is_call {
            let op = ops[e.op];
            let (ok, new_state) = match op.kind {
                OpKind::Write(v) => (true, Some(v)),
                OpKind::Read(r) => (r == state, state),
            };
            if ok {
                let mut lin = linearized.clone();
                lin[e.op / 64] |= 1 << (e.op % 64);
                if cache.insert((lin.clone(), new_state)) {
                    stack.push((e.op, state));
                    state = new_state;
                    linearized = lin;
                    unlink(&mut next, &mut prev, call_pos[e.op]);
                    unlink(&mut next, &mut prev, ret_pos[e.op]);
                    cur = next[head];
                    continue;
                }
            }
            cur = next[cur];
        } else {
            // A return whose call is not linearized yet: this branch is dead.
            let Some((op, st)) = stack.pop() else {
                return Err(violation(&ops));
            };
            state = st;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut next, &mut prev, ret_pos[op]);
            relink(&mut next, &mut prev, call_pos[op]);
            cur = next[call_pos[op]];
        }
    }
    Ok(())
}

fn violation(ops: &[&Op]) -> Violation {
    let mut detail = String::new();
    for o in ops {
        detail.push_str(&format!(
            "  client {} [{}, {}] {:?}\n",
            o.client,
            o.invoke,
            o.respond.map_or("?".to_string(), |r| r.to_string()),
            o.kind
        ));
    }
    Violation {
        ops: ops.len(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(c: u32, a: u64, b: Option<u64>, v: u64) -> Op {
        Op {
            client: c,
            invoke: a,
            respond: b,
            kind: OpKind::Write(v),
        }
    }
    fn r(c: u32, a: u64, b: u64, v: Option<u64>) -> Op {
        Op {
            client: c,
            invoke: a,
            respond: Some(b),
            kind: OpKind::Read(v),
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![
            w(0, 0, Some(1), 1),
            r(1, 2, 3, Some(1)),
            w(0, 4, Some(5), 2),
            r(1, 6, 7, Some(2)),
        ];
        assert_eq!(check_register(&h), Ok(()));
    }

    #[test]
    fn stale_read_after_completed_write_is_rejected() {
        let h = vec![
            w(0, 0, Some(1), 1),
            w(0, 2, Some(3), 2),
            r(1, 4, 5, Some(1)),
        ];
        assert!(check_register(&h).is_err());
    }

    #[test]
    fn read_of_never_written_value_is_rejected() {
        let h = vec![w(0, 0, Some(1), 1), r(1, 2, 3, Some(9))];
        assert!(check_register(&h).is_err());
    }

    #[test]
    fn initial_read_after_write_is_rejected() {
        let h = vec![w(0, 0, Some(1), 1), r(1, 2, 3, None)];
        assert!(check_register(&h).is_err());
    }

    #[test]
    fn concurrent_ops_may_order_either_way() {
        let h = vec![w(0, 0, Some(10), 1), r(1, 1, 2, Some(1)), r(2, 3, 4, None)];
        // r2 saw the initial state after r1 saw the write: no order works.
        assert!(check_register(&h).is_err());
        let h = vec![w(0, 0, Some(10), 1), r(1, 1, 2, None), r(2, 3, 4, Some(1))];
        assert_eq!(check_register(&h), Ok(()));
    }

    #[test]
    fn unknown_write_may_or_may_not_happen() {
        let h = vec![w(0, 0, None, 1), r(1, 5, 6, None), r(1, 7, 8, Some(1))];
        assert_eq!(check_register(&h), Ok(()));
        let h = vec![w(0, 0, None, 1), r(1, 5, 6, Some(1)), r(1, 7, 8, None)];
        assert!(check_register(&h).is_err(), "once seen, it cannot vanish");
    }

    #[test]
    fn larger_random_sequential_history_is_fast() {
        let mut h = Vec::new();
        let mut t = 0;
        for i in 1..400u64 {
            h.push(w((i % 5) as u32, t, Some(t + 3), i));
            h.push(r(((i + 1) % 5) as u32, t + 1, t + 5, Some(i)));
            t += 4;
        }
        assert_eq!(check_register(&h), Ok(()));
    }
}
