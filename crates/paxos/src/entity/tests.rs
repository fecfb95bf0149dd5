//! Entity-level scenarios: the reference's entity and five-replica tests (§11.3,
//! §11.4) and the additional ones of §11.5, on a hand-driven in-memory cluster.

use super::*;

/// A hand-driven cluster: messages and persists wait in queues until the test says.
struct Net {
    nodes: Vec<Entity>,
    inflight: Vec<Message>,
    /// Per node: persists issued but not yet completed.
    disk: Vec<Vec<u64>>,
    /// Per node: durable records (last write wins per entry).
    durable: Vec<BTreeMap<EntryId, Record>>,
    done: Vec<(NodeId, u64, Outcome)>,
    applied: Vec<Vec<(EntryId, Bytes)>>,
    down: Vec<bool>,
    now: u64,
}

impl Net {
    fn new(n: u8) -> Self {
        Self::with_home(n, 0)
    }

    fn with_home(n: u8, home: u8) -> Self {
        let nodes = (0..n)
            .map(|me| {
                let mut cfg = Config::new(n, me);
                cfg.home = home;
                Entity::new(cfg, me as u64 + 1)
            })
            .collect();
        Self {
            nodes,
            inflight: Vec::new(),
            disk: vec![Vec::new(); n as usize],
            durable: vec![BTreeMap::new(); n as usize],
            done: Vec::new(),
            applied: vec![Vec::new(); n as usize],
            down: vec![false; n as usize],
            now: 1,
        }
    }

    fn drain(&mut self, i: usize) {
        while let Some(ev) = self.nodes[i].poll_event() {
            match ev {
                Event::Persist { seq, records, .. } => {
                    for (e, r) in records {
                        self.durable[i].insert(e, r);
                    }
                    self.disk[i].push(seq);
                }
                Event::Send(m) => self.inflight.push(m),
                Event::Apply { entry, value, .. } => self.applied[i].push((entry, value)),
                Event::Done { token, outcome } => self.done.push((i as NodeId, token, outcome)),
            }
        }
    }

    fn sync_disks(&mut self) {
        for i in 0..self.nodes.len() {
            if let Some(&seq) = self.disk[i].last() {
                self.disk[i].clear();
                self.nodes[i].persisted(self.now, seq);
                self.drain(i);
            }
        }
    }

    /// Deliver every message in flight (in order), syncing disks between rounds, until
    /// quiet. Returns the number of messages delivered.
    fn run(&mut self) -> usize {
        let mut delivered = 0;
        for _ in 0..100 {
            self.sync_disks();
            if self.inflight.is_empty() {
                return delivered;
            }
            let batch = std::mem::take(&mut self.inflight);
            for m in batch {
                let to = m.to as usize;
                if self.down[to] || self.down[m.from as usize] {
                    continue;
                }
                delivered += 1;
                self.nodes[to].handle_message(self.now, m);
                self.drain(to);
            }
        }
        panic!("did not quiesce");
    }

    fn write(&mut self, i: usize, token: u64, v: &'static [u8]) {
        self.nodes[i]
            .write(
                self.now,
                token,
                Bytes::from_static(v),
                vec![token],
                self.now + 10_000,
            )
            .unwrap();
        self.drain(i);
    }

    fn read(&mut self, i: usize, token: u64) {
        self.nodes[i]
            .read(self.now, token, self.now + 10_000)
            .unwrap();
        self.drain(i);
    }

    fn tick(&mut self, ms: u64) {
        self.now += ms;
        for i in 0..self.nodes.len() {
            if !self.down[i] {
                self.nodes[i].handle_timeout(self.now);
                self.drain(i);
            }
        }
    }

    fn outcome(&self, token: u64) -> Option<Outcome> {
        self.done.iter().find(|d| d.1 == token).map(|d| d.2)
    }
}

#[test]
fn fast_path_write_by_acceptor_0_takes_one_round_trip() {
    let mut net = Net::new(3);
    net.write(0, 1, b"a");
    // Nothing leaves before the persist of the accepted record is durable.
    assert!(net.inflight.is_empty());
    let rec = net.durable[0][&1].clone();
    assert_eq!(
        (rec.prepared, rec.promised, rec.accepted),
        (1, 1, 1),
        "reserved number, no prepare"
    );
    net.sync_disks();
    assert_eq!(net.inflight.len(), 2, "accept broadcast to both peers");
    net.run();
    assert_eq!(net.outcome(1), Some(Outcome::Written { entry: 1 }));
    for i in 0..3 {
        assert_eq!(net.nodes[i].applied(), 1, "node {i} learnt entry 1");
    }
    assert_eq!(net.nodes[0].pre_authorised_entry(), Some(2));
}

#[test]
fn a_three_node_fast_path_write_is_four_messages_and_everyone_learns_it() {
    let mut net = Net::new(3);
    net.write(0, 1, b"a");
    // Two accepts out, two replies back: each acceptor knows the entry chosen from
    // the proposer's record and its own, so it tells the proposer only, and the
    // proposer has nobody left to tell.
    assert_eq!(net.run(), 4);
    assert_eq!(net.outcome(1), Some(Outcome::Written { entry: 1 }));
    for i in 0..3 {
        assert_eq!(net.nodes[i].applied(), 1, "node {i} learnt entry 1");
    }
    // The next write takes the pre-authorised path and costs the same.
    net.write(0, 2, b"b");
    assert_eq!(net.run(), 4);
    assert_eq!(net.outcome(2), Some(Outcome::Written { entry: 2 }));
}

#[test]
fn a_quiet_entity_gives_back_its_buffers() {
    let mut net = Net::new(3);
    for t in 1..=20 {
        net.write((t % 3) as usize, t, b"v");
        net.run();
        net.tick(1_000);
        net.run();
    }
    for (i, node) in net.nodes.iter_mut().enumerate() {
        assert!(node.is_idle(), "node {i} idle");
        node.shrink_idle_buffers();
        assert_eq!(
            (
                node.events.capacity(),
                node.held.capacity(),
                node.intents.capacity()
            ),
            (0, 0, 0),
            "node {i}: idle buffers keep no capacity"
        );
    }
}

#[test]
fn the_entity_home_holds_the_fast_path_for_entry_1() {
    let mut net = Net::with_home(3, 2);
    assert_eq!(net.nodes[2].pre_authorised_entry(), Some(1));
    assert_eq!(net.nodes[0].pre_authorised_entry(), None);
    net.write(2, 1, b"a");
    let rec = net.durable[2][&1].clone();
    // Node 2's reserved number is 3; no prepare round.
    assert_eq!((rec.prepared, rec.promised, rec.accepted), (3, 3, 3));
    net.run();
    assert_eq!(net.outcome(1), Some(Outcome::Written { entry: 1 }));
    assert_eq!(net.nodes[2].pre_authorised_entry(), Some(2));
    // Node 0 is not the home: its first write to a fresh entity prepares.
    let mut net = Net::with_home(3, 2);
    net.write(0, 1, b"a");
    let rec = net.durable[0][&1].clone();
    assert_eq!((rec.accepted, rec.prepared > 3), (0, true));
}

#[test]
fn write_by_other_acceptor_prepares_then_pre_auth_moves_to_it() {
    let mut net = Net::new(3);
    net.write(2, 1, b"x");
    let rec = net.durable[2][&1].clone();
    assert_eq!(
        (rec.prepared, rec.promised, rec.accepted),
        (6, 6, 0),
        "normal number 3+2+1"
    );
    net.run();
    assert_eq!(net.outcome(1), Some(Outcome::Written { entry: 1 }));
    assert_eq!(net.nodes[2].pre_authorised_entry(), Some(2));
    assert_eq!(
        net.nodes[0].pre_authorised_entry(),
        Some(1),
        "0 keeps only its unused grant"
    );
    // Node 2 now writes entry 2 without a prepare.
    net.write(2, 2, b"y");
    let rec = net.durable[2][&2].clone();
    assert_eq!((rec.promised, rec.accepted), (3, 3));
    net.run();
    assert_eq!(net.outcome(2), Some(Outcome::Written { entry: 2 }));
    // Node 0 cannot use the fast path at entry 3.
    net.write(0, 3, b"z");
    assert!(net.durable[0][&3].promised > 3);
    net.run();
    assert_eq!(net.outcome(3), Some(Outcome::Written { entry: 3 }));
}

#[test]
fn concurrent_proposers_choose_one_value_and_loser_is_told() {
    let mut net = Net::new(3);
    net.write(1, 1, b"one");
    net.write(2, 2, b"two");
    for _ in 0..50 {
        net.run();
        if net.outcome(1).is_some() && net.outcome(2).is_some() {
            break;
        }
        net.tick(200);
    }
    let o1 = net.outcome(1).unwrap();
    let o2 = net.outcome(2).unwrap();
    let wins = [o1, o2]
        .iter()
        .filter(|o| matches!(o, Outcome::Written { .. }))
        .count();
    assert_eq!(wins, 1, "exactly one write wins entry 1: {o1:?} {o2:?}");
    assert!(matches!(
        o1,
        Outcome::Lost { entry: 1 } | Outcome::Written { entry: 1 }
    ));
    let v: Vec<_> = (0..3).map(|i| net.applied[i].last().cloned()).collect();
    assert!(
        v.iter().all(|x| x == &v[0]),
        "all replicas applied the same value: {v:?}"
    );
}

#[test]
fn check_empty_read_succeeds_with_majority_empty() {
    let mut net = Net::new(3);
    net.write(0, 1, b"a");
    net.run();
    net.read(1, 2);
    let probes = net
        .inflight
        .iter()
        .filter(|m| m.kind == Kind::CheckEmpty)
        .count();
    assert_eq!(
        probes, 1,
        "its own empty record and one peer's make a majority"
    );
    assert!(!net.durable[1].contains_key(&2), "a read writes nothing");
    net.run();
    assert_eq!(net.outcome(2), Some(Outcome::ReadOk { entry: 1 }));
}

#[test]
fn a_read_asks_a_reachable_peer_first_and_everyone_when_it_is_silent() {
    let mut net = Net::new(3);
    net.write(0, 1, b"a");
    net.run();
    // Node 1 sees only node 2 connected: the first round asks node 2 alone.
    net.nodes[1].set_live_peers(1 << 2);
    net.read(1, 2);
    let asked: Vec<u8> = net
        .inflight
        .iter()
        .filter(|m| m.kind == Kind::CheckEmpty)
        .map(|m| m.to)
        .collect();
    assert_eq!(asked, vec![2]);
    // Node 2 is in fact down: after the retry delay the read asks every peer, and
    // node 0 completes the majority.
    net.down[2] = true;
    net.run();
    assert_eq!(net.outcome(2), None);
    net.tick(1_000);
    let mut asked: Vec<u8> = net
        .inflight
        .iter()
        .filter(|m| m.kind == Kind::CheckEmpty)
        .map(|m| m.to)
        .collect();
    asked.sort();
    assert_eq!(asked, vec![0, 2]);
    net.run();
    assert_eq!(net.outcome(2), Some(Outcome::ReadOk { entry: 1 }));
}

#[test]
fn read_on_lagging_replica_catches_up_first() {
    let mut net = Net::new(3);
    net.down[2] = true;
    net.write(0, 1, b"a");
    net.run();
    net.write(0, 2, b"b");
    net.run();
    net.down[2] = false;
    assert_eq!(net.nodes[2].applied(), 0);
    net.read(2, 9);
    for _ in 0..10 {
        net.run();
        if net.outcome(9).is_some() {
            break;
        }
        net.tick(300);
    }
    assert_eq!(net.outcome(9), Some(Outcome::ReadOk { entry: 2 }));
    assert_eq!(net.applied[2].last(), Some(&(2, Bytes::from_static(b"b"))));
}

#[test]
fn read_with_one_pending_peer_still_answers_after_driving_it() {
    let mut net = Net::new(3);
    net.write(0, 1, b"a");
    net.run();
    // Node 1 accepts something at entry 2 that nobody else hears about.
    net.down[2] = true;
    net.down[1] = true;
    net.nodes[0]
        .write(net.now, 2, Bytes::from_static(b"b"), vec![], net.now + 50)
        .unwrap();
    net.drain(0);
    net.sync_disks();
    net.tick(100);
    net.inflight.clear();
    assert_eq!(net.outcome(2), Some(Outcome::Timeout));
    net.down[1] = false;
    net.down[2] = false;
    // The read at node 0 finds entry 2 non-empty locally and drives it first.
    net.read(0, 3);
    for _ in 0..10 {
        net.run();
        if net.outcome(3).is_some() {
            break;
        }
        net.tick(300);
    }
    assert_eq!(net.outcome(3), Some(Outcome::ReadOk { entry: 2 }));
    assert_eq!(net.applied[0].last(), Some(&(2, Bytes::from_static(b"b"))));
}

#[test]
fn five_replicas_write_with_two_down() {
    let mut net = Net::new(5);
    net.down[3] = true;
    net.down[4] = true;
    net.write(1, 1, b"v");
    net.run();
    assert_eq!(net.outcome(1), Some(Outcome::Written { entry: 1 }));
    assert_eq!(
        net.durable[1][&1].promised, 7,
        "n=5, self=1: first normal number 7"
    );
}

#[test]
fn three_down_of_five_times_out_and_chooses_nothing() {
    let mut net = Net::new(5);
    for i in 2..5 {
        net.down[i] = true;
    }
    net.nodes[0]
        .write(net.now, 1, Bytes::from_static(b"v"), vec![], net.now + 500)
        .unwrap();
    net.drain(0);
    for _ in 0..10 {
        net.run();
        net.tick(100);
    }
    assert_eq!(net.outcome(1), Some(Outcome::Timeout));
    assert!((0..2).all(|i| net.nodes[i].applied() == 0));
}

#[test]
fn duplicate_delivery_changes_nothing_and_sends_nothing() {
    let mut net = Net::new(3);
    net.write(1, 1, b"v");
    net.sync_disks();
    let prepare = net.inflight.remove(0);
    net.inflight.clear();
    let to = prepare.to as usize;
    net.nodes[to].handle_message(net.now, prepare.clone());
    net.drain(to);
    net.sync_disks();
    assert_eq!(net.inflight.len(), 1, "the promise");
    let promise = net.inflight.remove(0);
    let before = net.nodes[to].local_record(1).cloned();
    net.nodes[to].handle_message(net.now, prepare);
    net.drain(to);
    net.sync_disks();
    // The duplicate still shows a stale view of the receiver, so the reply rule
    // answers again — with exactly the same message, and nothing is written.
    assert_eq!(
        net.inflight,
        vec![promise],
        "a duplicate produces no new traffic"
    );
    assert!(net.disk[to].is_empty(), "and no write");
    assert_eq!(net.nodes[to].local_record(1).cloned(), before);
}

#[test]
fn messages_wait_for_their_persist() {
    let mut net = Net::new(3);
    net.write(1, 1, b"v");
    net.sync_disks();
    let prepare = net.inflight.remove(0);
    net.inflight.clear();
    let to = prepare.to as usize;
    net.nodes[to].handle_message(net.now, prepare);
    net.drain(to);
    assert!(
        net.inflight.is_empty(),
        "the promise is not sent before it is durable"
    );
    assert_eq!(net.disk[to].len(), 1);
    net.sync_disks();
    assert_eq!(net.inflight.len(), 1, "released once durable");
}

#[test]
fn elided_value_unknown_to_receiver_is_dropped() {
    let mut node = Entity::new(Config::new(3, 1), 7);
    let mut rec = Record {
        prepared: 6,
        promised: 6,
        accepted: 6,
        value_id: 6,
        ..Record::default()
    };
    rec.value = Bytes::from_static(b"v");
    let mut msg = Message {
        from: 2,
        to: 1,
        entry: 1,
        kind: Kind::Sync,
        catchup: false,
        max_chosen: 0,
        read_id: 0,
        sender: rec.clone(),
        receiver: rec,
    };
    msg.elide_values();
    assert!(msg.sender.elided);
    node.handle_message(1, msg);
    assert_eq!(node.poll_event(), None);
    assert!(node.local_record(1).is_none_or(|r| r.is_empty()));
}

#[test]
fn restart_restores_records_and_finishes_undecided_entry() {
    let mut net = Net::new(3);
    net.write(0, 1, b"a");
    net.run();
    // Entry 2 accepted only at node 0 (persisted), then node 0 restarts.
    net.down[1] = true;
    net.down[2] = true;
    net.write(0, 2, b"b");
    net.sync_disks();
    net.inflight.clear();
    net.down[1] = false;
    net.down[2] = false;
    let records: Vec<_> = net.durable[0]
        .iter()
        .map(|(e, r)| (*e, r.clone()))
        .collect();
    net.nodes[0] = Entity::restore(Config::new(3, 0), 99, records).unwrap();
    net.applied[0].clear();
    net.drain(0);
    assert_eq!(net.nodes[0].applied(), 1);
    assert_eq!(net.nodes[0].max_chosen(), 1);
    assert_eq!(net.nodes[0].pre_authorised_entry(), Some(2));
    // A new write at entry 2 adopts the accepted value "b" first.
    net.write(0, 5, b"c");
    for _ in 0..10 {
        net.run();
        if net.outcome(5).is_some() {
            break;
        }
        net.tick(300);
    }
    assert_eq!(net.outcome(5), Some(Outcome::Lost { entry: 2 }));
    assert_eq!(net.applied[0].last(), Some(&(2, Bytes::from_static(b"b"))));
}

#[test]
fn trimmed_entries_are_recovered_by_snapshot_jump() {
    let mut net = Net::new(3);
    net.down[2] = true;
    for (t, v) in [(1u64, &b"a"[..]), (2, b"b"), (3, b"c")] {
        net.nodes[0]
            .write(net.now, t, Bytes::from_static(v), vec![], net.now + 10_000)
            .unwrap();
        net.drain(0);
        net.run();
    }
    net.down[2] = false;
    // Node 2 hears about entry 4 being opened: it learns max_chosen = 3 and catches up.
    net.write(0, 4, b"d");
    for _ in 0..10 {
        net.run();
        net.tick(300);
    }
    assert_eq!(net.nodes[2].applied(), 4);
    assert_eq!(net.applied[2].last(), Some(&(4, Bytes::from_static(b"d"))));
}

#[test]
fn restore_refuses_invalid_records() {
    let bad = Record {
        prepared: 1,
        promised: 0,
        ..Record::default()
    };
    assert!(matches!(
        Entity::restore(Config::new(3, 0), 1, vec![(1, bad)]),
        Err(RestoreError::Invalid { entry: 1, .. })
    ));
    let foreign = Record {
        prepared: 5,
        promised: 5,
        ..Record::default()
    };
    assert_eq!(
        Entity::restore(Config::new(3, 0), 1, vec![(1, foreign)]).err(),
        Some(RestoreError::NotOwnBallot { entry: 1 })
    );
}

#[test]
fn busy_while_a_command_is_in_flight() {
    let mut e = Entity::new(Config::new(3, 0), 1);
    e.write(0, 1, Bytes::from_static(b"x"), vec![], 100)
        .unwrap();
    assert_eq!(e.read(0, 2, 100), Err(Busy));
}

#[test]
fn wiped_node_does_not_vote_until_it_knows_its_floor_then_only_above_it() {
    let mut net = Net::new(3);
    net.write(0, 1, b"a");
    net.run();
    net.write(0, 2, b"b");
    net.run();
    // Node 2 loses its disk and restarts in rejoin mode.
    net.nodes[2] = Entity::new(Config::new(3, 2), 77);
    net.nodes[2].rejoin();
    net.durable[2].clear();
    assert!(net.nodes[2].is_rejoining());
    // Before it heard from n - q + 1 = 2 peers it refuses to vote: a prepare for
    // entry 3 from node 1 changes nothing at node 2.
    net.down[0] = true;
    net.write(1, 10, b"x");
    net.sync_disks();
    for m in net.inflight.drain(..).collect::<Vec<_>>() {
        if m.to == 2 {
            net.nodes[2].handle_message(net.now, m);
            net.drain(2);
        }
    }
    assert!(
        net.nodes[2].local_record(3).is_none_or(|r| r.is_empty()),
        "no promise while rejoining"
    );
    net.inflight.clear();
    net.down[0] = false;
    // Probes go out on the timer; both peers report entry 3 at most: floor = 4.
    for _ in 0..20 {
        net.tick(300);
        net.run();
    }
    assert!(!net.nodes[2].is_rejoining());
    // Node 1's write at 3 is decided by nodes 0 and 1; node 2 learns it as chosen.
    assert_eq!(net.outcome(10), Some(Outcome::Written { entry: 3 }));
    net.read(2, 11);
    for _ in 0..20 {
        net.run();
        net.tick(300);
    }
    assert_eq!(net.nodes[2].applied(), 3);
    // A write at the rejoined node at entry 4 (its floor) is refused, not proposed.
    net.write(2, 12, b"y");
    net.run();
    assert_eq!(net.outcome(12), Some(Outcome::Rejoining { entry: 4 }));
}
