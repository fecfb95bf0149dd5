//! Shared helpers for the loopback integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use net::{Inbound, Member, NetConfig, NodeId, PeerState, Transport};
use tokio::sync::mpsc::Receiver;
use tokio::time::{timeout, Instant};

pub const CLUSTER: u64 = 0xC1A5_7E12;
/// Generous upper bound for anything that should happen "soon".
pub const WAIT: Duration = Duration::from_secs(10);

/// A currently free loopback port (bound then released).
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind ephemeral port");
    l.local_addr().expect("local addr")
}

pub fn members(addrs: &[(NodeId, SocketAddr)]) -> Vec<Member> {
    addrs
        .iter()
        .map(|&(id, addr)| Member { id, addr })
        .collect()
}

pub fn config(self_id: NodeId, addrs: &[(NodeId, SocketAddr)]) -> NetConfig {
    let listen = addrs
        .iter()
        .find(|(id, _)| *id == self_id)
        .expect("self in addrs")
        .1;
    let mut c = NetConfig::new(CLUSTER, self_id, listen, members(addrs));
    c.channels_per_peer = 2;
    c.handshake_timeout = Duration::from_millis(200);
    c.reconnect_min = Duration::from_millis(10);
    c.reconnect_max = Duration::from_millis(200);
    c.idle_timeout = Duration::from_secs(5);
    c.inbound_capacity = 4096;
    c
}

/// Poll `cond` until true or WAIT elapses (condition polling, not a fixed sleep).
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn connected(t: &Transport, peer: NodeId) -> bool {
    t.peer_states()
        .iter()
        .any(|(id, st)| *id == peer && matches!(st, PeerState::Connected { .. }))
}

pub async fn recv(rx: &mut Receiver<Inbound>) -> Inbound {
    timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for inbound frame")
        .expect("inbound channel closed")
}

/// Send `payload` from `t` to `to` (retrying while the link comes up) and wait until
/// `rx` yields it. Other frames received meanwhile are discarded.
pub async fn roundtrip(
    t: &Transport,
    to: NodeId,
    from: NodeId,
    rx: &mut Receiver<Inbound>,
    payload: &'static [u8],
) {
    let fut = async {
        loop {
            let _ = t.send(to, 0, 42, bytes::Bytes::from_static(payload));
            if let Ok(Some(m)) = timeout(Duration::from_millis(50), rx.recv()).await {
                if m.from == from && m.msg_type == 42 && &m.payload[..] == payload {
                    return;
                }
            }
        }
    };
    with_deadline("roundtrip", fut).await
}

pub async fn with_deadline<T>(what: &str, f: impl Future<Output = T>) -> T {
    match timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}
