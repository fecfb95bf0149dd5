//! A linearizability checker for single-register histories (one per entity): the
//! register as a [`Model`], checked by the generic [`check_model`] (Wing & Gong with
//! Lowe's memoisation, as in Porcupine).
//!
//! Operations whose outcome is unknown (timeouts) get an infinite response time: they
//! may take effect at any point after their invocation, or never.

use crate::model::{check_model, Entry, Model};

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

/// Steps the search may take before it gives up (reported as a violation).
const MAX_STEPS: u64 = 50_000_000;

/// One register: its state is the last value id written (`None` before any write).
pub(crate) struct Register;

impl Model for Register {
    type State = Option<u64>;
    type Op = OpKind;
    fn step(&self, state: &Option<u64>, op: &OpKind, known: bool) -> Option<Option<u64>> {
        match op {
            OpKind::Write(v) => Some(Some(*v)),
            OpKind::Read(r) => (!known || r == state).then_some(*state),
        }
    }
}

/// Check one register's history. Reads of unknown outcome are ignored (they constrain
/// nothing). Exponential in the worst case; the memo keeps real histories fast.
pub fn check_register(history: &[Op]) -> Result<(), Violation> {
    let entries: Vec<Entry<OpKind>> = history
        .iter()
        .filter(|o| !(matches!(o.kind, OpKind::Read(_)) && o.respond.is_none()))
        .map(|o| Entry {
            client: o.client,
            invoke: o.invoke,
            respond: o.respond,
            op: o.kind.clone(),
        })
        .collect();
    check_model(&Register, None, &entries, MAX_STEPS).map_err(|v| Violation {
        ops: v.ops,
        detail: v.detail,
    })
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
