//! Good-path behaviour of real transports on loopback.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use net::{PeerState, RejectReason, SendError};

async fn start3() -> (
    Vec<(u8, std::net::SocketAddr)>,
    Vec<(net::Transport, tokio::sync::mpsc::Receiver<net::Inbound>)>,
) {
    let addrs: Vec<_> = (1..=3).map(|id| (id, free_addr())).collect();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(net::start(config(id, &addrs)).await.expect("start"));
    }
    (addrs, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exchange_frames_in_order() {
    let (_addrs, mut nodes) = start3().await;
    for (i, (t, _)) in nodes.iter().enumerate() {
        let me = i as u8 + 1;
        for peer in (1..=3).filter(|p| *p != me) {
            eventually("all channels up", || {
                t.peer_states()
                    .contains(&(peer, PeerState::Connected { channels: 2 }))
            })
            .await;
        }
    }
    // Every node sends 500 numbered frames to every other node on one route.
    for (i, (t, _)) in nodes.iter().enumerate() {
        let me = i as u8 + 1;
        for peer in (1..=3).filter(|p| *p != me) {
            for seq in 0u32..500 {
                let mut p = vec![me, peer];
                p.extend_from_slice(&seq.to_be_bytes());
                t.send(peer, 7, 5, Bytes::from(p))
                    .expect("send within budget");
            }
        }
    }
    for (i, (_, rx)) in nodes.iter_mut().enumerate() {
        let me = i as u8 + 1;
        let mut next = [0u32; 4];
        for _ in 0..1000 {
            let m = recv(rx).await;
            assert_eq!(m.msg_type, 5);
            assert_eq!(m.payload[0], m.from);
            assert_eq!(m.payload[1], me);
            let seq = u32::from_be_bytes([m.payload[2], m.payload[3], m.payload[4], m.payload[5]]);
            assert_eq!(
                seq, next[m.from as usize],
                "frames on one route stay ordered"
            );
            next[m.from as usize] += 1;
        }
        for from in (1..=3).filter(|p| *p != me) {
            assert_eq!(next[from as usize], 500);
        }
    }
    let s = nodes[0].0.stats();
    assert!(s.frames_out >= 1000 && s.frames_in >= 1000, "{s:?}");
    assert!(s.handshake_rejections.is_empty(), "{s:?}");
    for (t, _) in &nodes {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_peer_is_reconnected() {
    let (addrs, mut nodes) = start3().await;
    let (n3, mut rx3) = nodes.pop().expect("n3");
    let (n2, rx2) = nodes.pop().expect("n2");
    let (n1, mut rx1) = nodes.pop().expect("n1");
    roundtrip(&n1, 2, 1, &mut { rx2 }, b"before").await;

    n2.shutdown().await;
    eventually("n1 sees n2 gone", || !connected(&n1, 2)).await;
    eventually("n3 sees n2 gone", || !connected(&n3, 2)).await;
    assert_eq!(
        n1.send(2, 0, 1, Bytes::from_static(b"x")),
        Err(SendError::NotConnected)
    );

    // Same address again: SO_REUSEADDR lets it rebind at once.
    let (n2, mut rx2) = net::start(config(2, &addrs)).await.expect("restart n2");
    roundtrip(&n1, 2, 1, &mut rx2, b"after-1to2").await; // n1 redials n2
    roundtrip(&n2, 3, 2, &mut rx3, b"after-2to3").await; // n2 dials n3 afresh
    roundtrip(&n3, 2, 3, &mut rx2, b"after-3to2").await;
    roundtrip(&n2, 1, 2, &mut rx1, b"after-2to1").await;
    assert!(n1.stats().reconnects >= 1, "{:?}", n1.stats());
    for t in [n1, n2, n3] {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_secret_links_and_wrong_secret_is_refused() {
    let addrs: Vec<_> = (1..=2).map(|id| (id, free_addr())).collect();
    let mut c1 = config(1, &addrs);
    let mut c2 = config(2, &addrs);
    c1.secret = Some(b"correct horse".to_vec());
    c2.secret = Some(b"correct horse".to_vec());
    let (n1, _rx1) = net::start(c1.clone()).await.expect("n1");
    let (n2, mut rx2) = net::start(c2.clone()).await.expect("n2");
    roundtrip(&n1, 2, 1, &mut rx2, b"authed").await;
    n1.shutdown().await;
    n2.shutdown().await;

    // Same cluster, different secret: acceptor refuses, dialer refuses the acceptor.
    c2.secret = Some(b"battery staple".to_vec());
    let (n1, _rx1) = net::start(c1).await.expect("n1");
    let (n2, _rx2) = net::start(c2).await.expect("n2");
    eventually("dialer rejects acceptor proof", || {
        n1.stats().rejections(RejectReason::AuthFailed) >= 1
    })
    .await;
    assert!(!connected(&n1, 2) && !connected(&n2, 1));
    n1.shutdown().await;
    n2.shutdown().await;
}

type Inbox = tokio::sync::mpsc::Receiver<net::Inbound>;

/// Two connected nodes with one channel each; node 1's send budget is `budget`.
/// Returns both transports and both inboxes (kept open for the test's length).
async fn two_nodes_one_channel(budget: usize) -> (net::Transport, Inbox, net::Transport, Inbox) {
    let addrs: Vec<_> = (1..=2).map(|id| (id, free_addr())).collect();
    let mut c1 = config(1, &addrs);
    c1.send_buffer_bytes = budget;
    c1.channels_per_peer = 1;
    let mut c2 = config(2, &addrs);
    c2.channels_per_peer = 1;
    let (n1, rx1) = net::start(c1).await.expect("n1");
    let (n2, mut rx2) = net::start(c2).await.expect("n2");
    roundtrip(&n1, 2, 1, &mut rx2, b"up").await;
    (n1, rx1, n2, rx2)
}

/// `send` never blocks: on a current-thread runtime the writer cannot run during
/// this synchronous loop, so the queue fills and `send` must start returning Busy
/// once pending bytes pass 1/8 of the buffer.
#[tokio::test(flavor = "current_thread")]
async fn send_sheds_with_busy_above_one_eighth() {
    // Busy above 1 KiB pending.
    let (n1, _rx1, n2, mut rx2) = two_nodes_one_channel(8 * 1024).await;
    let payload = Bytes::from(vec![0u8; 91]); // 100 bytes on the wire
    let mut ok = 0;
    let mut busy = 0;
    for _ in 0..1000 {
        match n1.send(2, 0, 9, payload.clone()) {
            Ok(()) => ok += 1,
            Err(SendError::Busy) => busy += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 11, "accepted until pending >= 1024 bytes");
    assert_eq!(busy, 989);
    assert_eq!(n1.stats().dropped_busy, 989);
    // Once drained, sends are accepted again.
    for _ in 0..ok {
        let m = recv(&mut rx2).await;
        assert_eq!(m.msg_type, 9);
    }
    eventually("queue drained", || {
        n1.send(2, 0, 9, payload.clone()).is_ok()
    })
    .await;
    assert_eq!(
        n1.send(2, 0, 0, payload.clone()),
        Err(SendError::ReservedType)
    );
    assert_eq!(
        n1.send(9, 0, 1, payload.clone()),
        Err(SendError::UnknownPeer)
    );
    assert_eq!(
        n1.send(1, 0, 1, payload.clone()),
        Err(SendError::UnknownPeer),
        "self is not a peer"
    );
    let big = Bytes::from(vec![0u8; (16 << 20) + 1]);
    assert_eq!(n1.send(2, 0, 1, big), Err(SendError::TooLarge));
    n1.shutdown().await;
    n2.shutdown().await;
}

/// A reply is not refused because a large frame is queued ahead of it on the same
/// channel (a forwarded 4 MB SET's reply, behind the 4 MB Paxos message, timed out
/// in CI); replies have a budget of their own, and it too is bounded.
#[tokio::test(flavor = "current_thread")]
async fn replies_are_admitted_behind_a_large_frame() {
    // Bulk busy above 1 KiB pending; replies up to 8 KiB.
    let (n1, _rx1, n2, mut rx2) = two_nodes_one_channel(8 * 1024).await;
    // The writer cannot run during these synchronous sends (current-thread runtime).
    let large = Bytes::from(vec![7u8; 4 * 1024]);
    n1.send(2, 0, 9, large)
        .expect("an idle link takes one large frame");
    let small = Bytes::from(vec![1u8; 91]); // 100 bytes on the wire
    assert_eq!(n1.send(2, 0, 9, small.clone()), Err(SendError::Busy));
    let mut replies = 0;
    while n1.send_reply(2, 0, 10, small.clone()).is_ok() {
        replies += 1;
        assert!(replies <= 1000, "the reply budget is bounded");
    }
    assert_eq!(replies, 81, "replies fill their own 8 KiB budget");
    let m = recv(&mut rx2).await;
    assert_eq!((m.msg_type, m.payload.len()), (9, 4 * 1024));
    for _ in 0..replies {
        let m = recv(&mut rx2).await;
        assert_eq!(m.msg_type, 10, "replies follow the large frame, in order");
    }
    n1.shutdown().await;
    n2.shutdown().await;
}

/// Keepalives keep a quiet link open past several idle timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_keep_quiet_links_open() {
    let addrs: Vec<_> = (1..=2).map(|id| (id, free_addr())).collect();
    let mut c1 = config(1, &addrs);
    let mut c2 = config(2, &addrs);
    c1.idle_timeout = Duration::from_millis(150);
    c2.idle_timeout = Duration::from_millis(150);
    let (n1, _rx1) = net::start(c1).await.expect("n1");
    let (n2, mut rx2) = net::start(c2).await.expect("n2");
    roundtrip(&n1, 2, 1, &mut rx2, b"up").await;
    // The behaviour under test is the passage of time itself (5 idle periods).
    tokio::time::sleep(Duration::from_millis(750)).await;
    assert_eq!(n1.stats().idle_closes, 0, "{:?}", n1.stats());
    assert_eq!(n2.stats().idle_closes, 0, "{:?}", n2.stats());
    assert_eq!(n1.stats().connects, 2, "no reconnects happened");
    n1.shutdown().await;
    n2.shutdown().await;
}

#[tokio::test]
async fn invalid_config_is_rejected() {
    let addrs = vec![(1u8, free_addr())];
    let mut c = config(1, &addrs);
    c.self_id = 5;
    assert!(matches!(net::start(c).await, Err(net::NetError::Config(_))));
    let mut c = config(1, &addrs);
    c.channels_per_peer = 0;
    assert!(matches!(net::start(c).await, Err(net::NetError::Config(_))));
    let mut c = config(1, &addrs);
    c.members.push(c.members[0]);
    assert!(matches!(net::start(c).await, Err(net::NetError::Config(_))));
}
