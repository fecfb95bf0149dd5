//! The reference's entry-state scenarios (reference §11.2), plus the §4.5 guard.

use super::*;

fn r(prepared: Ballot, promised: Ballot, accepted: Ballot) -> Record {
    Record {
        prepared,
        promised,
        accepted,
        value_id: accepted as u64,
        value: if accepted > 0 {
            Bytes::from_static(b"v")
        } else {
            Bytes::new()
        },
        ..Record::default()
    }
}

#[test]
fn update3_prepare_promise_accept_chosen() {
    let mut v = EntryView::new(0, 3);
    v.fold(0, r(1, 1, 0)).unwrap();
    assert_eq!(v.status(), Status::PromiseLocal);
    v.fold(1, r(1, 1, 0)).unwrap();
    assert_eq!(v.status(), Status::MajorityPromise);
    v.fold(0, r(1, 1, 1)).unwrap();
    assert_eq!(v.status(), Status::AcceptLocal);
    v.fold(1, r(1, 1, 1)).unwrap();
    assert_eq!(v.status(), Status::Chosen);
}

#[test]
fn preauth3_and_preauth5() {
    let mut v = EntryView::new(0, 3);
    v.fold(0, r(1, 1, 1)).unwrap();
    assert_eq!(v.status(), Status::AcceptLocal);
    v.fold(1, r(1, 1, 1)).unwrap();
    assert_eq!(v.status(), Status::Chosen);

    let mut v = EntryView::new(0, 5);
    v.fold(0, r(1, 1, 1)).unwrap();
    v.fold(1, r(1, 1, 1)).unwrap();
    assert_eq!(v.status(), Status::AcceptLocal);
    v.fold(2, r(1, 1, 1)).unwrap();
    assert_eq!(v.status(), Status::Chosen);
}

#[test]
fn update5_needs_three() {
    let mut v = EntryView::new(0, 5);
    v.fold(0, r(1, 1, 0)).unwrap();
    v.fold(1, r(1, 1, 0)).unwrap();
    assert_eq!(v.status(), Status::PromiseLocal);
    v.fold(2, r(1, 1, 0)).unwrap();
    assert_eq!(v.status(), Status::MajorityPromise);
    v.fold(0, r(1, 1, 1)).unwrap();
    v.fold(1, r(1, 1, 1)).unwrap();
    assert_eq!(v.status(), Status::AcceptLocal);
    v.fold(2, r(1, 1, 1)).unwrap();
    assert_eq!(v.status(), Status::Chosen);
}

#[test]
fn not_proposer_update_adopts_and_counts() {
    let mut v = EntryView::new(0, 3);
    v.fold(1, r(2, 2, 0)).unwrap();
    assert_eq!(v.status(), Status::PromiseRemote);
    assert_eq!(v.local().promised, 2);
    v.fold(1, r(2, 2, 2)).unwrap();
    assert_eq!(v.status(), Status::Chosen);
    assert_eq!(v.local().accepted, 2);
}

#[test]
fn concurrent_lower_ballot_refused_higher_adopted() {
    let mut v = EntryView::new(0, 3);
    v.fold(1, r(2, 2, 0)).unwrap();
    assert_eq!(v.status(), Status::PromiseRemote);
    v.fold(2, r(3, 3, 0)).unwrap();
    assert_eq!(v.local().promised, 3);
    v.fold(1, r(2, 2, 2)).unwrap();
    assert_eq!(
        v.status(),
        Status::PromiseRemote,
        "ballot 2 is below promise 3"
    );
    assert_eq!(v.local().accepted, 0);
    v.fold(2, r(3, 3, 3)).unwrap();
    assert_eq!(v.status(), Status::Chosen);
}

#[test]
fn concurrent2_own_prepare_overtaken() {
    let mut v = EntryView::new(0, 3);
    v.fold(0, r(1, 1, 0)).unwrap();
    assert_eq!(v.status(), Status::PromiseLocal);
    v.fold(2, r(3, 3, 3)).unwrap();
    assert_eq!(v.status(), Status::Chosen);
    assert_eq!(v.local().promised, 3);
}

#[test]
fn accept_remote_three_vs_five() {
    let mut v = EntryView::new(0, 3);
    v.fold(1, r(2, 2, 2)).unwrap();
    assert_eq!(v.status(), Status::Chosen);
    let mut v = EntryView::new(0, 5);
    v.fold(1, r(2, 2, 2)).unwrap();
    assert_eq!(v.status(), Status::AcceptRemote);
}

#[test]
fn promise_multi_time() {
    let mut v = EntryView::new(0, 3);
    assert_eq!(v.promise(false), Ok(4));
    assert_eq!(v.promise(false), Ok(7));
    assert_eq!(v.promise(false), Ok(10));
    let v1 = EntryView::new(1, 3);
    assert_eq!(v1.next_ballot(false), 5);
    assert_eq!(v1.next_ballot(true), 2);
    let v5 = EntryView::new(1, 5);
    assert_eq!(v5.next_ballot(false), 7);
}

#[test]
fn promise_and_accept_own_value() {
    let mut v = EntryView::new(0, 3);
    assert_eq!(v.promise(false), Ok(4));
    assert_eq!(v.status(), Status::PromiseLocal);
    let mine = v.local().clone();
    assert_eq!(
        v.fold(0, mine.clone()),
        Ok(false),
        "same record is not newer"
    );
    v.fold(2, mine).unwrap();
    assert_eq!(v.status(), Status::MajorityPromise);
    assert_eq!(v.accept(4, Bytes::from_static(b"mine"), vec![]), Ok(true));
    assert_eq!(v.status(), Status::AcceptLocal);
    assert_eq!(v.local().accepted, 4);
    let acc = v.local().clone();
    v.fold(2, acc).unwrap();
    assert_eq!(v.status(), Status::Chosen);
}

#[test]
fn accept_adopts_highest_accepted_in_view() {
    let mut v = EntryView::new(0, 3);
    v.fold(1, r(2, 2, 2)).unwrap(); // with n=3 this alone is chosen; use n=5
    let mut v5 = EntryView::new(0, 5);
    v5.fold(1, r(2, 2, 2)).unwrap();
    let b = v5.promise(false).unwrap();
    let mut promised = r(0, b, 2);
    promised.value_id = 2;
    v5.fold(1, promised).unwrap();
    v5.fold(3, r(0, b, 0)).unwrap();
    assert_eq!(v5.status(), Status::MajorityPromise);
    assert_eq!(
        v5.accept(b as u64, Bytes::from_static(b"mine"), vec![]),
        Ok(false)
    );
    assert_eq!(v5.local().value_id, 2, "adopted the accepted value");
    assert!(v.is_chosen());
}

#[test]
fn accept_refused_once_own_promise_moved_past_ballot() {
    // Reference §4.5: A prepares a, B promises; C prepares c, A promises c.
    let mut a = EntryView::new(0, 3);
    let ba = a.promise(false).unwrap();
    a.fold(1, r(0, ba, 0)).unwrap();
    assert_eq!(a.status(), Status::MajorityPromise);
    a.fold(2, r(6, 6, 0)).unwrap();
    assert_eq!(a.status(), Status::PromiseRemote);
    assert_eq!(
        a.accept(ba as u64, Bytes::from_static(b"v1"), vec![]),
        Err(StepError::NotAcceptEligible)
    );
}

#[test]
fn at_most_one_accept_per_ballot() {
    let mut v = EntryView::new(0, 5);
    let b = v.promise(false).unwrap();
    v.fold(1, r(0, b, 0)).unwrap();
    v.fold(2, r(0, b, 0)).unwrap();
    assert!(v.accept(b as u64, Bytes::from_static(b"x"), vec![]).is_ok());
    assert_eq!(
        v.accept(b as u64, Bytes::from_static(b"y"), vec![]),
        Err(StepError::NotAcceptEligible)
    );
}

#[test]
fn fast_path_accept_with_reserved_number() {
    let mut v = EntryView::new(2, 3);
    assert_eq!(v.promise(true), Ok(3));
    assert!(v.accept_eligible());
    assert_eq!(v.accept(3, Bytes::from_static(b"x"), vec![]), Ok(true));
    assert_eq!(v.status(), Status::AcceptLocal);
}

#[test]
fn fast_accept_meets_higher_promise() {
    // Acceptor 1 promised 5; a fast accept at 1 from acceptor 0 is refused.
    let mut acc = EntryView::new(1, 3);
    acc.promise(false).unwrap();
    acc.fold(0, r(1, 1, 1)).unwrap();
    assert_eq!(acc.local().accepted, 0);
    assert_eq!(acc.local().promised, 5);
}

#[test]
fn duplicate_fold_is_noop() {
    let mut v = EntryView::new(0, 3);
    assert_eq!(v.fold(1, r(2, 2, 0)), Ok(true));
    let before = v.local().clone();
    assert_eq!(v.fold(1, r(2, 2, 0)), Ok(false));
    assert_eq!(v.local(), &before);
}

#[test]
fn invalid_or_elided_records_are_refused() {
    let mut v = EntryView::new(0, 3);
    assert_eq!(v.fold(3, r(1, 1, 0)), Err(FoldError::BadAcceptor));
    let mut bad = r(1, 1, 1);
    bad.value_id = 0;
    assert!(matches!(v.fold(1, bad), Err(FoldError::Invalid(_))));
    let mut el = r(2, 2, 2);
    el.elide();
    assert_eq!(v.fold(1, el.clone()), Err(FoldError::Elided));
    assert!(!v.restore(&mut el), "unknown value id cannot be restored");
    v.fold(1, r(2, 2, 2)).unwrap();
    assert!(v.restore(&mut el));
    assert_eq!(el.value, Bytes::from_static(b"v"));
}

#[test]
fn chosen_is_never_undone() {
    let mut v = EntryView::new(0, 3);
    v.fold(1, r(2, 2, 2)).unwrap();
    assert!(v.is_chosen());
    v.fold(2, r(9, 9, 9)).unwrap();
    assert!(v.is_chosen());
    assert_eq!(v.local().accepted, 2);
    assert_eq!(v.promise(false), Err(StepError::PromiseFailed));
}
