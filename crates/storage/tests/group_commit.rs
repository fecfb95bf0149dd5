//! GroupCommit behaviour: FIFO, one write per round, bounded queue, error fan-out, drain.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use bytes::Bytes;
use storage::{
    Apply, EntityImage, EntityUpdate, FailMode, FailingStorage, GroupCommit, GroupCommitConfig,
    MemStorage, Snapshot, Storage, StorageError,
};

fn upd(entity: &str, n: u64) -> EntityUpdate {
    let mut u = EntityUpdate::new(Bytes::from(entity.to_string()));
    u.put_records = vec![(n, Bytes::from(n.to_string()))];
    u.apply = Some(Apply {
        applied_entry: n,
        puts: vec![(Bytes::from(entity.to_string()), Bytes::from(n.to_string()))],
        ..Default::default()
    });
    u
}

/// Storage whose write_batch blocks until the test lets it go, and records batch sizes.
struct Gate {
    inner: MemStorage,
    entered: Mutex<mpsc::Sender<usize>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl Storage for Gate {
    fn load(&self, e: &[u8]) -> Result<EntityImage, StorageError> {
        self.inner.load(e)
    }
    fn write_batch(&self, b: &[EntityUpdate]) -> Result<(), StorageError> {
        let _ = self.entered.lock().unwrap().send(b.len());
        let _ = self.release.lock().unwrap().recv();
        self.inner.write_batch(b)
    }
    fn read_record(&self, e: &[u8], n: u64) -> Result<Option<Bytes>, StorageError> {
        self.inner.read_record(e, n)
    }
    fn snapshot(&self, e: &[u8]) -> Result<Snapshot, StorageError> {
        self.inner.snapshot(e)
    }
    fn install_snapshot(&self, e: &[u8], s: &Snapshot) -> Result<(), StorageError> {
        self.inner.install_snapshot(e, s)
    }
    fn for_each_entity(&self, f: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), StorageError> {
        self.inner.for_each_entity(f)
    }
    fn disk_usage(&self) -> Result<u64, StorageError> {
        self.inner.disk_usage()
    }
    fn get_node_meta(&self, k: &str) -> Result<Option<Bytes>, StorageError> {
        self.inner.get_node_meta(k)
    }
    fn put_node_meta(&self, k: &str, v: &[u8]) -> Result<(), StorageError> {
        self.inner.put_node_meta(k, v)
    }
}

fn gate() -> (Arc<Gate>, mpsc::Receiver<usize>, mpsc::Sender<()>) {
    let (etx, erx) = mpsc::channel();
    let (rtx, rrx) = mpsc::channel();
    let g = Arc::new(Gate {
        inner: MemStorage::new(),
        entered: Mutex::new(etx),
        release: Mutex::new(rrx),
    });
    (g, erx, rtx)
}

fn cfg(queue: usize) -> GroupCommitConfig {
    GroupCommitConfig {
        queue_capacity: queue,
        max_batch_updates: 1000,
        max_batch_bytes: 1 << 20,
        max_wait: Duration::ZERO,
    }
}

#[test]
fn queued_submissions_merge_into_one_write_and_complete_in_order() {
    let (g, entered, release) = gate();
    let gc = GroupCommit::start(g.clone(), cfg(64));
    let order = Arc::new(Mutex::new(Vec::new()));
    let done = |i: u64| {
        let order = order.clone();
        Box::new(move |r: Result<(), StorageError>| {
            r.unwrap();
            order.lock().unwrap().push(i);
        })
    };
    // First submission occupies the writer (blocked in write_batch)...
    gc.submit(vec![upd("e", 0)], done(0)).unwrap();
    assert_eq!(entered.recv().unwrap(), 1);
    // ...while these pile up; they must be written as ONE batch, in FIFO order.
    for i in 1..=10 {
        gc.submit(vec![upd("e", i), upd(&format!("o{i}"), i)], done(i))
            .unwrap();
    }
    release.send(()).unwrap();
    assert_eq!(
        entered.recv().unwrap(),
        20,
        "10 queued submissions -> one batch of 20 updates"
    );
    release.send(()).unwrap();
    gc.shutdown();
    assert_eq!(*order.lock().unwrap(), (0..=10).collect::<Vec<_>>());
    // FIFO: the last applied update of entity "e" is submission 10.
    assert_eq!(g.load(b"e").unwrap().applied_entry, 10);
    let st = gc.stats();
    assert_eq!(st.batches.load(Ordering::Relaxed), 2);
    assert_eq!(st.updates.load(Ordering::Relaxed), 21);
}

#[test]
fn full_queue_returns_busy_with_the_work_and_never_grows() {
    let (g, entered, release) = gate();
    let gc = GroupCommit::start(g, cfg(2));
    gc.submit(vec![upd("a", 1)], Box::new(|_| {})).unwrap();
    entered.recv().unwrap(); // writer holds job 1; queue is empty
    gc.submit(vec![upd("a", 2)], Box::new(|_| {})).unwrap();
    gc.submit(vec![upd("a", 3)], Box::new(|_| {})).unwrap();
    let busy = gc.submit(vec![upd("a", 4)], Box::new(|_| {})).unwrap_err();
    assert!(!busy.closed);
    assert_eq!(busy.updates, vec![upd("a", 4)], "work is handed back");
    assert_eq!(gc.stats().rejected_busy.load(Ordering::Relaxed), 1);
    release.send(()).unwrap();
    release.send(()).unwrap();
    drop(release); // later writes pass straight through
    gc.shutdown();
    let closed = gc.submit(vec![upd("a", 5)], Box::new(|_| {})).unwrap_err();
    assert!(closed.closed);
}

#[test]
fn batch_limits_split_rounds_without_reordering() {
    let (g, entered, release) = gate();
    let gc = GroupCommit::start(
        g.clone(),
        GroupCommitConfig {
            max_batch_updates: 3,
            ..cfg(64)
        },
    );
    gc.submit(vec![upd("x", 0)], Box::new(|_| {})).unwrap();
    entered.recv().unwrap();
    for i in 1..=5 {
        gc.submit(vec![upd("x", i), upd("y", i)], Box::new(|_| {}))
            .unwrap();
    }
    drop(release); // let every write through
    gc.shutdown();
    let sizes: Vec<usize> = entered.try_iter().collect();
    assert!(
        sizes.iter().all(|s| *s <= 3),
        "batches respect max_batch_updates: {sizes:?}"
    );
    assert_eq!(sizes.iter().sum::<usize>(), 10);
    assert_eq!(
        g.load(b"x").unwrap().applied_entry,
        5,
        "FIFO preserved across rounds"
    );
}

#[test]
fn storage_error_goes_to_every_submitter_of_the_batch() {
    let inner: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let failing = Arc::new(FailingStorage::new(inner));
    failing.set_mode(FailMode::DiskFull);
    let gc = GroupCommit::start(failing.clone(), cfg(64));
    let (tx, rx) = mpsc::channel();
    for i in 0..20 {
        let tx = tx.clone();
        gc.submit(vec![upd("e", i)], Box::new(move |r| tx.send(r).unwrap()))
            .unwrap();
    }
    let results: Vec<_> = (0..20).map(|_| rx.recv().unwrap()).collect();
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(e) if e.is_disk_full())),
        "{results:?}"
    );
    assert!(gc.stats().failed_batches.load(Ordering::Relaxed) >= 1);
    assert_eq!(
        failing.load(b"e").unwrap(),
        EntityImage::default(),
        "nothing written"
    );
    // Recovery: once the fault clears, writes succeed again.
    failing.set_mode(FailMode::Never);
    let (tx2, rx2) = mpsc::channel();
    gc.submit(vec![upd("e", 99)], Box::new(move |r| tx2.send(r).unwrap()))
        .unwrap();
    rx2.recv().unwrap().unwrap();
    assert_eq!(failing.load(b"e").unwrap().applied_entry, 99);
}

#[test]
fn shutdown_drains_everything_queued() {
    let s = Arc::new(MemStorage::new());
    let gc = GroupCommit::start(s.clone(), cfg(4096));
    let (tx, rx) = mpsc::channel();
    for i in 0..500u64 {
        let tx = tx.clone();
        gc.submit(
            vec![upd(&format!("k{}", i % 7), i)],
            Box::new(move |r| tx.send(r.is_ok()).unwrap()),
        )
        .unwrap();
    }
    gc.shutdown();
    drop(tx);
    let oks: Vec<bool> = rx.iter().collect();
    assert_eq!(oks.len(), 500);
    assert!(oks.iter().all(|b| *b));
    assert_eq!(s.load(b"k6").unwrap().applied_entry, 496);
}

#[test]
fn concurrent_submitters_all_complete_and_panicking_callback_is_contained() {
    let s = Arc::new(MemStorage::new());
    let gc = Arc::new(GroupCommit::start(s.clone(), cfg(16)));
    gc.submit(vec![upd("p", 1)], Box::new(|_| panic!("callback bug")))
        .unwrap();
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let gc = gc.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..50u64 {
                    let (tx, rx) = mpsc::channel();
                    let mut work = vec![upd(&format!("t{t}"), i)];
                    let mut done: storage::DoneFn = Box::new(move |r| tx.send(r).unwrap());
                    loop {
                        match gc.submit(work, done) {
                            Ok(()) => break,
                            Err(b) => {
                                assert!(!b.closed);
                                (work, done) = (b.updates, b.done);
                                std::thread::yield_now();
                            }
                        }
                    }
                    rx.recv().unwrap().unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for t in 0..8 {
        assert_eq!(
            s.load(format!("t{t}").as_bytes()).unwrap().applied_entry,
            49
        );
    }
    assert_eq!(gc.stats().callback_panics.load(Ordering::Relaxed), 1);
    assert!(gc.stats().batches.load(Ordering::Relaxed) <= 401);
}
