//! The seeded fault schedule. Round `r` of a run with seed `s` injects the same faults
//! on the same nodes every time (the clients' timing is not deterministic).

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL (`docker kill -s KILL`), restarted at heal.
    Kill { node: usize },
    /// SIGSTOP (`docker pause`), SIGCONT at heal.
    Pause { node: usize },
    /// The node can neither send to nor receive from any peer (containers: `docker
    /// network disconnect`, which also cuts its clients).
    Isolate { node: usize },
    /// Two sides; no traffic between them either way.
    Halves { minority: Vec<usize> },
    /// The node receives nothing from its peers but its messages get through.
    DeafNode { node: usize },
    /// The node's messages are lost but it hears its peers.
    MuteNode { node: usize },
    /// Only the link between two nodes is cut (both still reach the third).
    Bridge { a: usize, b: usize },
    /// The node's wall clock jumps by `offset_ms` (expiry), reset at heal.
    ClockJump { node: usize, offset_ms: i64 },
    /// The node's data file system fills up; freed at heal.
    DiskFull { node: usize },
    /// Kill, delete the data directory, restart with `rejoin = true`.
    WipeRejoin { node: usize },
    /// A new random partition (halves, one-way or bridge) every fault-secs / len:
    /// each entry is a set of blocked `(from, to)` pairs.
    Flap { steps: Vec<Vec<(usize, usize)>> },
}

impl Fault {
    /// The node this fault is centred on, if one.
    pub fn node(&self) -> Option<usize> {
        match self {
            Fault::Kill { node }
            | Fault::Pause { node }
            | Fault::Isolate { node }
            | Fault::DeafNode { node }
            | Fault::MuteNode { node }
            | Fault::ClockJump { node, .. }
            | Fault::DiskFull { node }
            | Fault::WipeRejoin { node } => Some(*node),
            Fault::Halves { .. } | Fault::Bridge { .. } | Fault::Flap { .. } => None,
        }
    }

    pub fn is_partition(&self) -> bool {
        matches!(
            self,
            Fault::Halves { .. }
                | Fault::DeafNode { .. }
                | Fault::MuteNode { .. }
                | Fault::Bridge { .. }
                | Fault::Flap { .. }
        )
    }

    /// The blocked `(from, to)` pairs of a partition.
    pub fn blocked(&self, n: usize) -> BTreeSet<(usize, usize)> {
        let mut b = BTreeSet::new();
        match self {
            Fault::Halves { minority } => {
                for &i in minority {
                    for j in (0..n).filter(|j| !minority.contains(j)) {
                        b.insert((i, j));
                        b.insert((j, i));
                    }
                }
            }
            Fault::DeafNode { node } => {
                for j in (0..n).filter(|j| j != node) {
                    b.insert((j, *node));
                }
            }
            Fault::MuteNode { node } => {
                for j in (0..n).filter(|j| j != node) {
                    b.insert((*node, j));
                }
            }
            Fault::Bridge { a, b: c } => {
                b.insert((*a, *c));
                b.insert((*c, *a));
            }
            Fault::Flap { steps } => b.extend(steps.first().into_iter().flatten().copied()),
            _ => {}
        }
        b
    }
}

/// The fault kinds, cycled through in a seeded order so that every kind occurs in
/// any run of at least this many rounds.
const KINDS: [&str; 11] = [
    "kill",
    "pause",
    "isolate",
    "halves",
    "deaf",
    "mute",
    "bridge",
    "clock",
    "disk-full",
    "wipe",
    "flap",
];

pub struct Schedule {
    n: usize,
    /// The nodes whose disks may be wiped: at most n − q distinct ones per run (the
    /// design's assumption, as in the simulator: a key not written since a wipe is
    /// stuck once n − q + 1 distinct nodes have forgotten their votes on it).
    wipe_pool: Vec<usize>,
    order: Vec<&'static str>,
    rng: StdRng,
    disk_full_ok: bool,
    pub max_clock_ms: i64,
}

impl Schedule {
    pub fn new(seed: u64, n: usize, disk_full_ok: bool, only: Option<Vec<String>>) -> Schedule {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut order: Vec<&'static str> = KINDS
            .iter()
            .copied()
            .filter(|k| only.as_ref().is_none_or(|o| o.iter().any(|x| x == k)))
            .collect();
        if order.is_empty() {
            order = KINDS.to_vec();
        }
        order.shuffle(&mut rng);
        let mut nodes: Vec<usize> = (0..n).collect();
        nodes.shuffle(&mut rng);
        let wipe_pool = nodes[..(n - 1) / 2].to_vec();
        Schedule {
            n,
            wipe_pool,
            order,
            rng,
            disk_full_ok,
            max_clock_ms: crate::run::MAX_CLOCK_SKEW_MS as i64,
        }
    }

    fn make(&mut self, kind: &str, avoid: &[usize]) -> Fault {
        let n = self.n;
        let pool: Vec<usize> = (0..n).filter(|i| !avoid.contains(i)).collect();
        let node = pool[self.rng.gen_range(0..pool.len())];
        match kind {
            "kill" => Fault::Kill { node },
            "pause" => Fault::Pause { node },
            "isolate" => Fault::Isolate { node },
            "halves" => {
                let mut all: Vec<usize> = (0..n).collect();
                all.shuffle(&mut self.rng);
                let mut minority: Vec<usize> = all[..n / 2].to_vec();
                minority.sort_unstable();
                Fault::Halves { minority }
            }
            "deaf" => Fault::DeafNode { node },
            "mute" => Fault::MuteNode { node },
            "bridge" => {
                let mut all: Vec<usize> = (0..n).collect();
                all.shuffle(&mut self.rng);
                Fault::Bridge {
                    a: all[0].min(all[1]),
                    b: all[0].max(all[1]),
                }
            }
            "clock" => {
                let mag = self.rng.gen_range(500..=self.max_clock_ms);
                let offset_ms = if self.rng.gen_bool(0.5) { mag } else { -mag };
                Fault::ClockJump { node, offset_ms }
            }
            "flap" => {
                let kinds = ["halves", "deaf", "mute", "bridge"];
                let steps = (0..6)
                    .map(|_| {
                        let k = kinds[self.rng.gen_range(0..kinds.len())];
                        self.make(k, &[]).blocked(n).into_iter().collect()
                    })
                    .collect();
                Fault::Flap { steps }
            }
            "disk-full" if self.disk_full_ok => Fault::DiskFull { node },
            "disk-full" => Fault::Kill { node },
            _ => {
                let pool: Vec<usize> = self
                    .wipe_pool
                    .iter()
                    .copied()
                    .filter(|i| !avoid.contains(i))
                    .collect();
                match pool.len() {
                    0 => Fault::Kill { node },
                    k => Fault::WipeRejoin {
                        node: pool[self.rng.gen_range(0..k)],
                    },
                }
            }
        }
    }

    /// The faults of round `r`: one on 3 nodes; on 5 nodes a second, node-level one
    /// on another node (two simultaneous faults).
    pub fn round(&mut self, r: usize) -> Vec<Fault> {
        let kind = self.order[r % self.order.len()];
        let first = self.make(kind, &[]);
        let mut faults = vec![first.clone()];
        if self.n >= 5 {
            let mut avoid: Vec<usize> = first.node().into_iter().collect();
            if let Fault::Bridge { a, b } = first {
                avoid.extend([a, b]);
            }
            let second = ["kill", "pause", "clock", "disk-full", "deaf"];
            let k = second[self.rng.gen_range(0..second.len())];
            // Two partitions would overwrite each other: pair a partition with a
            // node fault.
            let k = if first.is_partition() && k == "deaf" {
                "kill"
            } else {
                k
            };
            faults.push(self.make(k, &avoid));
        }
        faults
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(f: &Fault) -> &'static str {
        match f {
            Fault::Kill { .. } => "kill",
            Fault::Pause { .. } => "pause",
            Fault::Isolate { .. } => "isolate",
            Fault::Halves { .. } => "halves",
            Fault::DeafNode { .. } => "deaf",
            Fault::MuteNode { .. } => "mute",
            Fault::Bridge { .. } => "bridge",
            Fault::ClockJump { .. } => "clock",
            Fault::DiskFull { .. } => "disk-full",
            Fault::WipeRejoin { .. } => "wipe",
            Fault::Flap { .. } => "flap",
        }
    }

    #[test]
    fn a_seed_fixes_the_schedule_and_every_kind_occurs() {
        for n in [3, 5] {
            let mut a = Schedule::new(7, n, true, None);
            let mut b = Schedule::new(7, n, true, None);
            let ra: Vec<Vec<Fault>> = (0..KINDS.len()).map(|r| a.round(r)).collect();
            let rb: Vec<Vec<Fault>> = (0..KINDS.len()).map(|r| b.round(r)).collect();
            assert_eq!(ra, rb);
            let kinds: BTreeSet<&str> = ra.iter().map(|f| kind(&f[0])).collect();
            assert_eq!(kinds.len(), KINDS.len(), "{kinds:?}");
            for faults in &ra {
                assert_eq!(faults.len(), if n == 5 { 2 } else { 1 });
                let nodes: Vec<usize> = faults.iter().filter_map(Fault::node).collect();
                let distinct: BTreeSet<usize> = nodes.iter().copied().collect();
                assert_eq!(
                    nodes.len(),
                    distinct.len(),
                    "two faults on one node: {faults:?}"
                );
            }
        }
    }

    #[test]
    fn wipes_hit_at_most_n_minus_q_distinct_nodes() {
        for n in [3, 5] {
            for seed in 0..20 {
                let mut s = Schedule::new(seed, n, true, Some(vec!["wipe".into()]));
                let wiped: BTreeSet<usize> = (0..30)
                    .flat_map(|r| s.round(r))
                    .filter_map(|f| match f {
                        Fault::WipeRejoin { node } => Some(node),
                        _ => None,
                    })
                    .collect();
                assert!(!wiped.is_empty() && wiped.len() <= (n - 1) / 2, "{wiped:?}");
            }
        }
    }

    #[test]
    fn one_way_partitions_block_one_direction() {
        let deaf = Fault::DeafNode { node: 1 }.blocked(3);
        assert_eq!(deaf, BTreeSet::from([(0, 1), (2, 1)]));
        let mute = Fault::MuteNode { node: 1 }.blocked(3);
        assert_eq!(mute, BTreeSet::from([(1, 0), (1, 2)]));
        let bridge = Fault::Bridge { a: 0, b: 2 }.blocked(3);
        assert_eq!(bridge, BTreeSet::from([(0, 2), (2, 0)]));
    }
}
