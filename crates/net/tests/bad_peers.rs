//! Misbehaving peers against a real transport on loopback. Each case must close the
//! connection, count exactly the right reason, and leave the good link 2<->3 working.
//!
//! Node 2 is under test; node 3 is a good peer; member 1 (127.0.0.1) is played by a
//! raw socket in the test.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use net::frame::{encode_header, HEADER_LEN};
use net::handshake::{
    self, Ack, Auth, Challenge, Hello, Transcript, ACK_LEN, CHALLENGE_LEN, VERSION,
};
use net::{Inbound, NetConfig, RejectReason, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

const SECRET: &[u8] = b"s3cret-for-tests";
const MAX_FRAME: usize = 1 << 20;

struct Fixture {
    n2: Transport,
    rx2: Receiver<Inbound>,
    n3: Transport,
    rx3: Receiver<Inbound>,
    addr2: SocketAddr,
}

impl Fixture {
    /// `tweak` is applied to both real nodes (timeouts should match cluster-wide).
    async fn new(tweak: impl Fn(&mut NetConfig)) -> Self {
        let fake1 = free_addr();
        let addr2 = free_addr();
        let addrs = vec![(1, fake1), (2, addr2), (3, free_addr())];
        let mut c2 = config(2, &addrs);
        let mut c3 = config(3, &addrs);
        for c in [&mut c2, &mut c3] {
            c.secret = Some(SECRET.to_vec());
            c.check_source_addr = true;
            c.max_frame = MAX_FRAME;
        }
        tweak(&mut c2);
        tweak(&mut c3);
        let (n2, rx2) = net::start(c2).await.expect("start n2");
        let (n3, rx3) = net::start(c3).await.expect("start n3");
        let mut fx = Fixture {
            n2,
            rx2,
            n3,
            rx3,
            addr2,
        };
        fx.healthy().await;
        fx
    }

    /// The good pair keeps exchanging messages in both directions.
    async fn healthy(&mut self) {
        roundtrip(&self.n2, 3, 2, &mut self.rx3, b"2->3").await;
        roundtrip(&self.n3, 2, 3, &mut self.rx2, b"3->2").await;
    }

    fn rejections(&self) -> BTreeMap<RejectReason, u64> {
        self.n2.stats().handshake_rejections
    }

    /// Assert exactly one rejection, for `reason`, and the good link still works.
    async fn assert_rejected_once(mut self, reason: RejectReason) {
        assert_eq!(self.rejections(), BTreeMap::from([(reason, 1)]));
        self.healthy().await;
        assert_eq!(
            self.rejections(),
            BTreeMap::from([(reason, 1)]),
            "no collateral rejections"
        );
        self.n2.shutdown().await;
        self.n3.shutdown().await;
    }
}

async fn connect(to: SocketAddr, from_ip: &str) -> TcpStream {
    let s = TcpSocket::new_v4().expect("socket");
    let from: SocketAddr = format!("{from_ip}:0").parse().expect("ip");
    s.bind(from).expect("bind client");
    s.connect(to).await.expect("connect")
}

/// Read until the server closes (EOF or reset); everything it sends is ignored.
async fn expect_closed(s: &mut TcpStream) {
    let closed = async {
        let mut b = [0u8; 4096];
        loop {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    timeout(WAIT, closed)
        .await
        .expect("server did not close the connection");
}

fn hello() -> Hello {
    Hello {
        version: VERSION,
        auth: true,
        cluster_id: CLUSTER,
        from: 1,
        to: 2,
        channel: 0,
        channels: 2,
        nonce: rand::random(),
    }
}

/// Run the dialer side of the handshake as member 1 with `secret`.
/// Returns the Ack status, or None if the server closed first.
async fn dial_handshake(s: &mut TcpStream, h: Hello, secret: &[u8]) -> Option<u8> {
    s.write_all(&h.encode()).await.ok()?;
    let mut cb = [0u8; CHALLENGE_LEN];
    s.read_exact(&mut cb).await.ok()?;
    let c = Challenge::decode(&cb).expect("valid challenge");
    let t = Transcript {
        dialer_nonce: h.nonce,
        acceptor_nonce: c.nonce,
        cluster_id: CLUSTER,
        dialer: h.from,
        acceptor: 2,
        channel: h.channel,
    };
    assert!(
        handshake::verify_acceptor(SECRET, &t, &c.proof),
        "acceptor authenticates itself"
    );
    let proof = handshake::dialer_proof(secret, &t);
    s.write_all(&Auth { proof }.encode()).await.ok()?;
    let mut ab = [0u8; ACK_LEN];
    s.read_exact(&mut ab).await.ok()?;
    Some(Ack::decode(&ab).expect("valid ack").status)
}

async fn bad_hello_case(h: Hello, from_ip: &str, reason: RejectReason) {
    let fx = Fixture::new(|_| {}).await;
    let mut s = connect(fx.addr2, from_ip).await;
    s.write_all(&h.encode()).await.expect("write hello");
    expect_closed(&mut s).await;
    fx.assert_rejected_once(reason).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_fake_member_is_accepted_and_delivers() {
    let mut fx = Fixture::new(|_| {}).await;
    let mut s = connect(fx.addr2, "127.0.0.1").await;
    assert_eq!(dial_handshake(&mut s, hello(), SECRET).await, Some(0));
    let payload = b"from-fake-1";
    s.write_all(&encode_header(77, payload)).await.expect("hdr");
    s.write_all(payload).await.expect("payload");
    let m = recv(&mut fx.rx2).await;
    assert_eq!((m.from, m.msg_type, &m.payload[..]), (1, 77, &payload[..]));
    // And node 2 can answer on the same connection.
    eventually("n2 sees member 1", || connected(&fx.n2, 1)).await;
    fx.n2
        .send(1, 0, 78, Bytes::from_static(b"reply"))
        .expect("send to 1");
    let mut b = vec![0u8; HEADER_LEN + 5];
    s.read_exact(&mut b).await.expect("read reply");
    assert_eq!(b[4], 78);
    assert_eq!(&b[HEADER_LEN..], b"reply");
    fx.assert_rejected_once_or_none().await;
}

impl Fixture {
    async fn assert_rejected_once_or_none(mut self) {
        assert!(self.rejections().is_empty(), "{:?}", self.rejections());
        self.healthy().await;
        self.n2.shutdown().await;
        self.n3.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_magic() {
    let mut b = hello().encode();
    b[0] ^= 0xFF;
    let fx = Fixture::new(|_| {}).await;
    let mut s = connect(fx.addr2, "127.0.0.1").await;
    s.write_all(&b).await.expect("write");
    expect_closed(&mut s).await;
    fx.assert_rejected_once(RejectReason::BadMagic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_version() {
    bad_hello_case(
        Hello {
            version: VERSION + 1,
            ..hello()
        },
        "127.0.0.1",
        RejectReason::BadVersion,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_cluster_id() {
    bad_hello_case(
        Hello {
            cluster_id: CLUSTER + 1,
            ..hello()
        },
        "127.0.0.1",
        RejectReason::WrongCluster,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_server_id() {
    bad_hello_case(
        Hello { from: 9, ..hello() },
        "127.0.0.1",
        RejectReason::UnknownMember,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_own_id() {
    bad_hello_case(
        Hello { from: 2, ..hello() },
        "127.0.0.1",
        RejectReason::SelfId,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn larger_id_may_not_dial() {
    bad_hello_case(
        Hello { from: 3, ..hello() },
        "127.0.0.1",
        RejectReason::WrongDirection,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_channel_index() {
    bad_hello_case(
        Hello {
            channel: 2,
            ..hello()
        },
        "127.0.0.1",
        RejectReason::BadChannel,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_member_source_address() {
    // Member 1 is configured at 127.0.0.1; this socket comes from 127.0.0.2.
    bad_hello_case(hello(), "127.0.0.2", RejectReason::SourceAddr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_check_can_be_disabled() {
    let fx = Fixture::new(|c| c.check_source_addr = false).await;
    let mut s = connect(fx.addr2, "127.0.0.2").await;
    assert_eq!(dial_handshake(&mut s, hello(), SECRET).await, Some(0));
    fx.assert_rejected_once_or_none().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_secret() {
    bad_hello_case(
        Hello {
            auth: false,
            ..hello()
        },
        "127.0.0.1",
        RejectReason::AuthMismatch,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_secret() {
    let fx = Fixture::new(|_| {}).await;
    let mut s = connect(fx.addr2, "127.0.0.1").await;
    assert_eq!(
        dial_handshake(&mut s, hello(), b"guessed").await,
        None,
        "no ack for a wrong proof"
    );
    expect_closed(&mut s).await;
    fx.assert_rejected_once(RejectReason::AuthFailed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_times_out() {
    let fx = Fixture::new(|c| c.handshake_timeout = Duration::from_millis(200)).await;
    let mut s = connect(fx.addr2, "127.0.0.1").await;
    expect_closed(&mut s).await;
    fx.assert_rejected_once(RejectReason::Timeout).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes() {
    let mut b = [0u8; 64];
    rand::Rng::fill(&mut rand::thread_rng(), &mut b[..]);
    b[0] = 0xAB; // never the magic's first byte (0x50)
    let fx = Fixture::new(|_| {}).await;
    let mut s = connect(fx.addr2, "127.0.0.1").await;
    s.write_all(&b).await.expect("write");
    expect_closed(&mut s).await;
    fx.assert_rejected_once(RejectReason::BadMagic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_mid_hello() {
    let fx = Fixture::new(|_| {}).await;
    let mut s = connect(fx.addr2, "127.0.0.1").await;
    s.write_all(&hello().encode()[..10]).await.expect("write");
    s.shutdown().await.expect("shutdown write half");
    expect_closed(&mut s).await;
    fx.assert_rejected_once(RejectReason::Truncated).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_after_good_handshake() {
    let fx = Fixture::new(|_| {}).await;
    let mut s = connect(fx.addr2, "127.0.0.1").await;
    assert_eq!(dial_handshake(&mut s, hello(), SECRET).await, Some(0));
    let mut h = encode_header(5, b"");
    h[0..4].copy_from_slice(&u32::try_from(MAX_FRAME + 1).expect("fits").to_be_bytes());
    s.write_all(&h).await.expect("write header");
    expect_closed(&mut s).await;
    assert_eq!(fx.n2.stats().frame_too_large, 1);
    fx.assert_rejected_once_or_none().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_frame_after_good_handshake() {
    let fx = Fixture::new(|_| {}).await;
    let mut s = connect(fx.addr2, "127.0.0.1").await;
    assert_eq!(dial_handshake(&mut s, hello(), SECRET).await, Some(0));
    let mut f = encode_header(5, b"abc").to_vec();
    f.extend_from_slice(b"abd");
    s.write_all(&f).await.expect("write frame");
    expect_closed(&mut s).await;
    assert_eq!(fx.n2.stats().frame_bad_crc, 1);
    fx.assert_rejected_once_or_none().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_peer_is_closed() {
    let fx = Fixture::new(|c| c.idle_timeout = Duration::from_millis(300)).await;
    let mut s = connect(fx.addr2, "127.0.0.1").await;
    assert_eq!(dial_handshake(&mut s, hello(), SECRET).await, Some(0));
    expect_closed(&mut s).await; // we never send anything, not even keepalives
    assert_eq!(fx.n2.stats().idle_closes, 1, "{:?}", fx.n2.stats());
    fx.assert_rejected_once_or_none().await;
}
