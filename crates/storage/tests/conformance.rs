//! Conformance suite: the same generic checks run against `MemStorage` and `FjallStorage`,
//! compared with a tiny reference model written independently of the crate.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use storage::{
    Apply, EntityImage, EntityUpdate, FjallOptions, FjallStorage, MemStorage, Snapshot, Storage,
};

// ---------- reference model ----------

#[derive(Default, Clone, Debug)]
struct RefEntity {
    records: BTreeMap<u64, Bytes>,
    applied: u64,
    kv: BTreeMap<Bytes, Bytes>,
    meta: Bytes,
}

#[derive(Default, Clone, Debug)]
struct RefStore {
    ents: BTreeMap<Bytes, RefEntity>,
}

impl RefStore {
    fn write(&mut self, batch: &[EntityUpdate]) {
        for u in batch {
            let e = self.ents.entry(u.entity.clone()).or_default();
            if u.whole {
                *e = RefEntity::default();
            }
            for (n, r) in &u.put_records {
                e.records.insert(*n, r.clone());
            }
            if let Some(t) = u.trim_below {
                e.records.retain(|n, _| *n >= t);
            }
            if let Some(a) = &u.apply {
                if a.clear {
                    e.kv.clear();
                }
                for k in &a.deletes {
                    e.kv.remove(k);
                }
                for (k, v) in &a.puts {
                    e.kv.insert(k.clone(), v.clone());
                }
                e.applied = a.applied_entry;
            }
            if let Some(m) = &u.meta {
                e.meta = m.clone();
            }
        }
    }
    fn install(&mut self, entity: &Bytes, s: &Snapshot) {
        let e = self.ents.entry(entity.clone()).or_default();
        e.kv = s.kv.iter().cloned().collect();
        e.applied = s.applied_entry;
        e.records.retain(|n, _| *n > s.applied_entry);
    }
    fn image(&self, entity: &[u8]) -> EntityImage {
        self.ents
            .get(entity)
            .map(|e| EntityImage {
                records: e.records.iter().map(|(n, r)| (*n, r.clone())).collect(),
                applied_entry: e.applied,
                kv: e.kv.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                meta: e.meta.clone(),
            })
            .unwrap_or_default()
    }
}

// ---------- generators ----------

const ENTITIES: [&str; 5] = ["a", "b", "k", "long-entity-id", WHOLE];
/// The entity written only with `whole` updates (records and metadata, never
/// key/values through `apply`), as the server writes every entity.
const WHOLE: &str = "w";

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn arb_entity() -> impl Strategy<Value = Bytes> {
    proptest::sample::select(&ENTITIES[..]).prop_map(|s| Bytes::from_static(s.as_bytes()))
}

/// Keys are mostly the entity id itself (inline path), sometimes others (spill path).
fn arb_key(entity: Bytes) -> impl Strategy<Value = Bytes> {
    prop_oneof![
        3 => Just(entity),
        1 => proptest::sample::select(vec!["x", "y", "z"]).prop_map(|s| Bytes::from_static(s.as_bytes())),
    ]
}

fn arb_update() -> impl Strategy<Value = EntityUpdate> {
    arb_entity().prop_flat_map(|entity| {
        let apply = (
            0u64..30,
            proptest::bool::weighted(0.2),
            proptest::collection::vec((arb_key(entity.clone()), arb_bytes()), 0..3),
            proptest::collection::vec(arb_key(entity.clone()), 0..2),
        )
            .prop_map(|(applied_entry, clear, puts, deletes)| Apply {
                applied_entry,
                clear,
                puts,
                deletes,
            });
        (
            Just(entity),
            proptest::collection::vec((0u64..30, arb_bytes()), 0..4),
            proptest::option::weighted(0.3, 0u64..30),
            proptest::option::weighted(0.6, apply),
            proptest::option::weighted(0.3, arb_bytes()),
        )
            .prop_map(|(entity, put_records, trim_below, apply, meta)| {
                let whole = entity == WHOLE.as_bytes();
                EntityUpdate {
                    entity,
                    whole,
                    put_records,
                    trim_below,
                    apply: if whole { None } else { apply },
                    meta,
                }
            })
    })
}

#[derive(Debug, Clone)]
enum Op {
    Batch(Vec<EntityUpdate>),
    Install(Bytes, Snapshot),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(arb_update(), 1..4).prop_map(Op::Batch),
        1 => (
            arb_entity(),
            0u64..30,
            proptest::collection::btree_map(arb_bytes(), arb_bytes(), 0..3)
        )
            .prop_filter("installs key/values", |(e, _, _)| e != WHOLE.as_bytes())
            .prop_map(|(e, applied_entry, kv)| Op::Install(
                e,
                Snapshot {
                    applied_entry,
                    kv: kv.into_iter().collect()
                }
            )),
    ]
}

// ---------- generic checks (any Storage) ----------

fn apply_ops<S: Storage + ?Sized>(s: &S, model: &mut RefStore, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Batch(b) => {
                s.write_batch(b).unwrap();
                model.write(b);
            }
            Op::Install(e, snap) => {
                s.install_snapshot(e, snap).unwrap();
                model.install(e, snap);
            }
        }
    }
}

/// Everything observable through the trait equals the model.
fn assert_matches_model<S: Storage + ?Sized>(s: &S, model: &RefStore) {
    for e in ENTITIES
        .iter()
        .map(|e| e.as_bytes())
        .chain([&b"unknown"[..]])
    {
        let want = model.image(e);
        assert_eq!(
            s.load(e).unwrap(),
            want,
            "load({:?})",
            String::from_utf8_lossy(e)
        );
        assert_eq!(
            s.snapshot(e).unwrap(),
            Snapshot {
                applied_entry: want.applied_entry,
                kv: want.kv.clone()
            }
        );
        for n in 0..31 {
            let want_rec = want
                .records
                .iter()
                .find(|(m, _)| *m == n)
                .map(|(_, r)| r.clone());
            assert_eq!(s.read_record(e, n).unwrap(), want_rec, "read_record {n}");
        }
    }
    let mut seen = Vec::new();
    s.for_each_entity(&mut |e| {
        seen.push(Bytes::copy_from_slice(e));
        true
    })
    .unwrap();
    let want: Vec<Bytes> = model.ents.keys().cloned().collect();
    assert_eq!(seen, want, "for_each_entity");
}

fn check_trim_keeps_suffix<S: Storage + ?Sized>(s: &S, recs: &[u64], t: u64) {
    let e = Bytes::from_static(b"trim");
    let mut u = EntityUpdate::new(e.clone());
    u.put_records = recs
        .iter()
        .map(|n| (*n, Bytes::from(n.to_string())))
        .collect();
    s.write_batch(&[u]).unwrap();
    let mut u = EntityUpdate::new(e.clone());
    u.trim_below = Some(t);
    s.write_batch(&[u]).unwrap();
    let img = s.load(&e).unwrap();
    for n in recs {
        let present = img.records.iter().any(|(m, _)| m == n);
        assert_eq!(present, *n >= t, "record {n} with trim_below {t}");
    }
}

fn check_snapshot_install<S: Storage + ?Sized>(s: &S) {
    let e = Bytes::from_static(b"snap");
    let mut u = EntityUpdate::new(e.clone());
    u.put_records = (1..=6).map(|n| (n, Bytes::from(vec![n as u8]))).collect();
    u.meta = Some(Bytes::from_static(b"M"));
    u.apply = Some(Apply {
        applied_entry: 2,
        clear: false,
        puts: vec![
            (Bytes::from_static(b"old1"), Bytes::from_static(b"1")),
            (Bytes::from_static(b"old2"), Bytes::from_static(b"2")),
        ],
        deletes: vec![],
    });
    s.write_batch(&[u]).unwrap();
    let snap = Snapshot {
        applied_entry: 4,
        kv: vec![(Bytes::from_static(b"new"), Bytes::from_static(b"N"))],
    };
    s.install_snapshot(&e, &snap).unwrap();
    let img = s.load(&e).unwrap();
    assert_eq!(img.applied_entry, 4);
    assert_eq!(img.kv, snap.kv, "old keys replaced");
    assert_eq!(
        img.records.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![5, 6],
        "records <= applied dropped"
    );
    assert_eq!(img.meta, Bytes::from_static(b"M"), "meta kept");
    assert_eq!(s.snapshot(&e).unwrap(), snap);
}

fn check_for_each_stops<S: Storage + ?Sized>(s: &S) {
    let batch: Vec<_> = ["e1", "e2", "e3"]
        .iter()
        .map(|e| {
            let mut u = EntityUpdate::new(Bytes::from_static(e.as_bytes()));
            u.meta = Some(Bytes::from_static(b"m"));
            u
        })
        .collect();
    s.write_batch(&batch).unwrap();
    let mut seen = Vec::new();
    s.for_each_entity(&mut |e| {
        seen.push(e.to_vec());
        seen.len() < 2
    })
    .unwrap();
    assert_eq!(seen, vec![b"e1".to_vec(), b"e2".to_vec()]);
}

fn check_node_meta<S: Storage + ?Sized>(s: &S) {
    assert_eq!(s.get_node_meta("rejoin").unwrap(), None);
    s.put_node_meta("rejoin", b"1").unwrap();
    s.put_node_meta("other", b"").unwrap();
    assert_eq!(
        s.get_node_meta("rejoin").unwrap(),
        Some(Bytes::from_static(b"1"))
    );
    assert_eq!(s.get_node_meta("other").unwrap(), Some(Bytes::new()));
    s.put_node_meta("rejoin", b"0").unwrap();
    assert_eq!(
        s.get_node_meta("rejoin").unwrap(),
        Some(Bytes::from_static(b"0"))
    );
}

// ---------- backends ----------

fn open_fjall(dir: &Path) -> Arc<FjallStorage> {
    Arc::new(FjallStorage::open(dir, FjallOptions::default()).unwrap())
}

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cfg(96))]

    #[test]
    fn mem_matches_model_and_survives_crash(ops in proptest::collection::vec(arb_op(), 1..25)) {
        let s = MemStorage::new();
        let mut model = RefStore::default();
        apply_ops(&s, &mut model, &ops);
        assert_matches_model(&s, &model);
        // Trait writes are durable at once: a crash loses nothing.
        s.crash();
        assert_matches_model(&s, &model);
    }

    #[test]
    fn mem_trim_keeps_suffix(recs in proptest::collection::btree_set(0u64..50, 0..10), t in 0u64..55) {
        check_trim_keeps_suffix(&MemStorage::new(), &recs.into_iter().collect::<Vec<_>>(), t);
    }
}

proptest! {
    #![proptest_config(cfg(24))]

    #[test]
    fn fjall_matches_model_and_survives_reopen(ops in proptest::collection::vec(arb_op(), 1..25)) {
        let d = tempfile::tempdir().unwrap();
        let mut model = RefStore::default();
        let s = open_fjall(d.path());
        apply_ops(&*s, &mut model, &ops);
        assert_matches_model(&*s, &model);
        drop(s);
        let s = open_fjall(d.path());
        assert_matches_model(&*s, &model);
        // Writes after recovery keep working on top of the recovered state.
        apply_ops(&*s, &mut model, &ops[..ops.len().min(3)]);
        drop(s);
        let s = open_fjall(d.path());
        assert_matches_model(&*s, &model);
    }

    #[test]
    fn fjall_trim_keeps_suffix(recs in proptest::collection::btree_set(0u64..50, 0..10), t in 0u64..55) {
        let d = tempfile::tempdir().unwrap();
        check_trim_keeps_suffix(&*open_fjall(d.path()), &recs.into_iter().collect::<Vec<_>>(), t);
    }
}

#[test]
fn mem_snapshot_install() {
    check_snapshot_install(&MemStorage::new());
}

#[test]
fn fjall_snapshot_install_survives_reopen() {
    let d = tempfile::tempdir().unwrap();
    let s = open_fjall(d.path());
    check_snapshot_install(&*s);
    let before = s.load(b"snap").unwrap();
    drop(s);
    assert_eq!(open_fjall(d.path()).load(b"snap").unwrap(), before);
}

#[test]
fn mem_for_each_entity_stops() {
    check_for_each_stops(&MemStorage::new());
}

#[test]
fn fjall_for_each_entity_stops() {
    let d = tempfile::tempdir().unwrap();
    check_for_each_stops(&*open_fjall(d.path()));
}

#[test]
fn mem_node_meta() {
    let s = MemStorage::new();
    check_node_meta(&s);
    s.crash();
    assert_eq!(
        s.get_node_meta("rejoin").unwrap(),
        Some(Bytes::from_static(b"0"))
    );
    s.wipe();
    assert_eq!(s.get_node_meta("rejoin").unwrap(), None);
}

#[test]
fn fjall_node_meta_survives_reopen() {
    let d = tempfile::tempdir().unwrap();
    check_node_meta(&*open_fjall(d.path()));
    let s = open_fjall(d.path());
    assert_eq!(
        s.get_node_meta("rejoin").unwrap(),
        Some(Bytes::from_static(b"0"))
    );
}

fn upd(entity: &'static str, entry: u64) -> EntityUpdate {
    let mut u = EntityUpdate::new(Bytes::from_static(entity.as_bytes()));
    u.put_records = vec![(entry, Bytes::from(format!("{entity}{entry}")))];
    u.apply = Some(Apply {
        applied_entry: entry,
        puts: vec![(
            Bytes::from_static(entity.as_bytes()),
            Bytes::from(entry.to_string()),
        )],
        ..Default::default()
    });
    u
}

#[test]
fn mem_crash_discards_staged_batches_whole() {
    let s = MemStorage::new();
    s.write_batch(&[upd("a", 1)]).unwrap();
    let t1 = s.stage(vec![upd("a", 2), upd("b", 2)]);
    let t2 = s.stage(vec![upd("a", 3), upd("c", 3)]);
    assert!(t2 > t1);
    // Staged writes are visible before they are durable.
    assert_eq!(s.load(b"a").unwrap().applied_entry, 3);
    assert_eq!(s.load(b"c").unwrap().applied_entry, 3);
    s.make_durable(t1);
    assert_eq!(s.staged_len(), 1);
    s.crash();
    // Batch t1 survives whole, batch t2 disappears whole.
    assert_eq!(s.load(b"a").unwrap().applied_entry, 2);
    assert_eq!(s.load(b"b").unwrap().applied_entry, 2);
    assert_eq!(s.load(b"c").unwrap(), EntityImage::default());
    assert_eq!(s.read_record(b"a", 3).unwrap(), None);
    assert!(s.read_record(b"a", 2).unwrap().is_some());
    let mut n = 0;
    s.for_each_entity(&mut |_| {
        n += 1;
        true
    })
    .unwrap();
    assert_eq!(n, 2, "entity c existed only in the lost batch");
}

#[test]
fn mem_durable_write_makes_earlier_staged_durable() {
    let s = MemStorage::new();
    s.stage(vec![upd("a", 1)]);
    s.write_batch(&[upd("b", 1)]).unwrap();
    s.crash();
    assert_eq!(
        s.load(b"a").unwrap().applied_entry,
        1,
        "log order: staged a precedes b"
    );
    assert_eq!(s.load(b"b").unwrap().applied_entry, 1);
}

#[test]
fn mem_is_deterministic() {
    let run = || {
        let s = MemStorage::new();
        for i in 0..50u64 {
            let e = ["q", "w", "e", "r"][(i * 7 % 4) as usize];
            s.write_batch(&[upd(e, i)]).unwrap();
        }
        let mut out = Vec::new();
        s.for_each_entity(&mut |e| {
            out.push(e.to_vec());
            true
        })
        .unwrap();
        (out, s.disk_usage().unwrap())
    };
    assert_eq!(run(), run());
}

#[test]
fn fjall_disk_usage_grows() {
    let d = tempfile::tempdir().unwrap();
    let s = open_fjall(d.path());
    let before = s.disk_usage().unwrap();
    let mut u = EntityUpdate::new(Bytes::from_static(b"grow"));
    u.put_records = (0..256u64)
        .map(|i| (i, Bytes::from(vec![i as u8; 1024])))
        .collect();
    let batch = vec![u];
    s.write_batch(&batch).unwrap();
    let after = s.disk_usage().unwrap();
    assert!(after > before, "before {before} after {after}");
}

/// Data directories written by earlier builds were compacted leveled; the default is
/// now tiered; the data block size is a setting, and fjall keeps a partition's block
/// size from its creation. Reopening with other settings keeps every row, also across
/// flushed segments.
#[test]
fn fjall_keeps_every_row_when_the_compaction_strategy_or_block_size_changes() {
    use storage::Compaction;
    let d = tempfile::tempdir().unwrap();
    let open = |compaction, data_block_bytes| {
        FjallStorage::open(
            d.path(),
            FjallOptions {
                memtable_bytes: 1 << 20,
                compaction,
                data_block_bytes,
                ..FjallOptions::default()
            },
        )
        .unwrap()
    };
    let write = |s: &FjallStorage, round: u64| {
        for chunk in (0..20_000u64).collect::<Vec<_>>().chunks(500) {
            let batch: Vec<EntityUpdate> = chunk
                .iter()
                .map(|&i| {
                    let mut u = EntityUpdate::new(Bytes::from(format!("entity-{i}")));
                    u.whole = true;
                    u.put_records = vec![(round, Bytes::from(vec![(i % 251) as u8; 200]))];
                    u
                })
                .collect();
            s.write_batch(&batch).unwrap();
        }
    };
    let check = |s: &FjallStorage, round: u64| {
        for i in (0..20_000u64).step_by(7) {
            let img = s.load(format!("entity-{i}").as_bytes()).unwrap();
            assert_eq!(
                img.records,
                vec![(round, Bytes::from(vec![(i % 251) as u8; 200]))],
                "entity-{i} after round {round}"
            );
        }
    };
    let s = open(Compaction::Leveled, 4096);
    write(&s, 1);
    write(&s, 2);
    drop(s);
    let s = open(Compaction::Tiered, 1024);
    check(&s, 2);
    write(&s, 3);
    drop(s);
    let s = open(Compaction::Leveled, 2048);
    check(&s, 3);
}
