//! Mutual TLS on the peer port, over real loopback sockets: TLS peers exchange
//! frames (small and large, so vectored writes go through TLS) with the HMAC
//! handshake running inside TLS; a plaintext peer is refused and counted; a peer
//! whose certificate another CA signed is refused in both directions; good peers
//! keep working meanwhile. Also: PEM loading errors name the file.

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use net::{NetConfig, NodeId, PeerState, PeerTls, RejectReason};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A CA and a way to issue node certificates carrying the `paxosstore` name.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("ca key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).expect("self-sign ca");
        Ca { cert, key }
    }

    /// (certificate PEM, key PEM) for a node.
    fn issue(&self) -> (String, String) {
        let key = KeyPair::generate().expect("node key");
        let p = CertificateParams::new(vec![net::tls::DEFAULT_SERVER_NAME.to_string()])
            .expect("node params");
        let cert = p
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign node cert");
        (cert.pem(), key.serialize_pem())
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut r = rustls::RootCertStore::empty();
        r.add(self.cert.der().clone()).expect("add root");
        r
    }
}

/// TLS for a node whose certificate `issuer` signed and which trusts `trusted`.
fn peer_tls(issuer: &Ca, trusted: &Ca) -> PeerTls {
    let (cert, key) = issuer.issue();
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("cert pem");
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key pem");
    PeerTls::new(certs, key, trusted.roots(), net::tls::DEFAULT_SERVER_NAME).expect("peer tls")
}

fn tls_config(
    id: NodeId,
    addrs: &[(NodeId, std::net::SocketAddr)],
    tls: Option<PeerTls>,
) -> NetConfig {
    let mut c = config(id, addrs);
    // TLS handshakes on a busy 2-core machine may need more than the plain 200 ms.
    c.handshake_timeout = Duration::from_secs(3);
    c.tls = tls;
    c
}

fn addrs3() -> Vec<(NodeId, std::net::SocketAddr)> {
    (1..=3).map(|id| (id, free_addr())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_peers_exchange_frames_with_the_handshake_inside() {
    let ca = Ca::new("cluster CA");
    let addrs = addrs3();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let mut c = tls_config(id, &addrs, Some(peer_tls(&ca, &ca)));
        c.secret = Some(b"inside tls".to_vec());
        nodes.push(net::start(c).await.expect("start"));
    }
    for (i, (t, _)) in nodes.iter().enumerate() {
        let me = i as u8 + 1;
        for peer in (1..=3).filter(|p| *p != me) {
            eventually("all TLS channels up", || {
                t.peer_states()
                    .contains(&(peer, PeerState::Connected { channels: 2 }))
            })
            .await;
        }
    }
    // Small frames (staged) and large ones (their own iovec), in order, both ways.
    let big = vec![0xAB; 100_000];
    for (i, (t, _)) in nodes.iter().enumerate() {
        let me = i as u8 + 1;
        for peer in (1..=3).filter(|p| *p != me) {
            for seq in 0u32..200 {
                let mut p = vec![me, peer];
                p.extend_from_slice(&seq.to_be_bytes());
                if seq % 10 == 0 {
                    p.extend_from_slice(&big);
                }
                // Busy is possible for the large frames: retry until queued.
                let payload = Bytes::from(p);
                with_deadline("send within budget", async {
                    while t.send(peer, 7, 5, payload.clone()).is_err() {
                        tokio::task::yield_now().await;
                    }
                })
                .await;
            }
        }
    }
    for (i, (_, rx)) in nodes.iter_mut().enumerate() {
        let me = i as u8 + 1;
        let mut next = [0u32; 4];
        for _ in 0..400 {
            let m = recv(rx).await;
            assert_eq!(m.msg_type, 5);
            assert_eq!(m.payload[1], me);
            let seq = u32::from_be_bytes([m.payload[2], m.payload[3], m.payload[4], m.payload[5]]);
            assert_eq!(
                seq, next[m.from as usize],
                "frames on one route stay ordered"
            );
            let want_len = if seq % 10 == 0 { 6 + big.len() } else { 6 };
            assert_eq!(m.payload.len(), want_len);
            assert!(m.payload[6..].iter().all(|b| *b == 0xAB));
            next[m.from as usize] += 1;
        }
    }
    for (t, _) in &nodes {
        let s = t.stats();
        assert!(s.handshake_rejections.is_empty(), "{s:?}");
    }
    for (t, _) in &nodes {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_peer_on_a_tls_port_is_refused_and_counted() {
    let ca = Ca::new("cluster CA");
    let addrs = addrs3();
    // Node 1 (the dialer of both others) speaks plaintext; 2 and 3 require TLS.
    let (n1, _rx1) = net::start(tls_config(1, &addrs, None)).await.expect("n1");
    let (n2, _rx2) = net::start(tls_config(2, &addrs, Some(peer_tls(&ca, &ca))))
        .await
        .expect("n2");
    let (n3, mut rx3) = net::start(tls_config(3, &addrs, Some(peer_tls(&ca, &ca))))
        .await
        .expect("n3");
    eventually("n2 and n3 refuse the plaintext peer", || {
        n2.stats().rejections(RejectReason::TlsRequired) >= 1
            && n3.stats().rejections(RejectReason::TlsRequired) >= 1
    })
    .await;
    // The good pair links over TLS meanwhile.
    roundtrip(&n2, 3, 2, &mut rx3, b"tls ok").await;
    assert!(!connected(&n1, 2) && !connected(&n1, 3));
    assert!(!connected(&n2, 1) && !connected(&n3, 1));
    // A raw plaintext hello gets the connection closed, and is counted again.
    let before = n2.stats().rejections(RejectReason::TlsRequired);
    let mut s = tokio::net::TcpStream::connect(addrs[1].1)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut s, b"PS\x01\x00")
        .await
        .expect("write");
    let mut buf = [0u8; 16];
    let n = with_deadline(
        "plaintext socket closed",
        tokio::io::AsyncReadExt::read(&mut s, &mut buf),
    )
    .await
    .unwrap_or(0);
    assert_eq!(n, 0, "nothing but a close for a plaintext hello");
    eventually("raw plaintext hello counted", || {
        n2.stats().rejections(RejectReason::TlsRequired) > before
    })
    .await;
    for t in [n1, n2, n3] {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_with_a_certificate_from_another_ca_is_refused_both_ways() {
    let ca = Ca::new("cluster CA");
    let evil = Ca::new("other CA");
    let addrs = addrs3();
    // Node 2's certificate comes from another CA, though it trusts the cluster CA.
    // 1 dials 2: node 1 refuses 2's server certificate. 2 dials 3: node 3 refuses
    // 2's client certificate. 1 dials 3: both good.
    let (n1, _rx1) = net::start(tls_config(1, &addrs, Some(peer_tls(&ca, &ca))))
        .await
        .expect("n1");
    let (n2, _rx2) = net::start(tls_config(2, &addrs, Some(peer_tls(&evil, &ca))))
        .await
        .expect("n2");
    let (n3, mut rx3) = net::start(tls_config(3, &addrs, Some(peer_tls(&ca, &ca))))
        .await
        .expect("n3");
    eventually("dialer refuses the foreign server certificate", || {
        n1.stats().rejections(RejectReason::Tls) >= 1
    })
    .await;
    eventually("acceptor refuses the foreign client certificate", || {
        n3.stats().rejections(RejectReason::Tls) >= 1
    })
    .await;
    roundtrip(&n1, 3, 1, &mut rx3, b"good pair").await;
    assert!(!connected(&n1, 2) && !connected(&n2, 1));
    assert!(!connected(&n2, 3) && !connected(&n3, 2));
    for t in [n1, n2, n3] {
        t.shutdown().await;
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write file");
    p
}

#[test]
fn pem_errors_name_the_file_and_never_quote_it() {
    let ca = Ca::new("cluster CA");
    let (cert, key) = ca.issue();
    let dir = tempfile::tempdir().expect("tempdir");
    let cert_p = write(dir.path(), "node.crt", &cert);
    let key_p = write(dir.path(), "node.key", &key);
    let ca_p = write(dir.path(), "ca.crt", &ca.cert.pem());
    PeerTls::from_files(&cert_p, &key_p, &ca_p, "paxosstore").expect("good files load");

    let missing = dir.path().join("missing.crt");
    let garbage = write(
        dir.path(),
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\n!!!!\n",
    );
    let cases = [
        (
            PeerTls::from_files(&missing, &key_p, &ca_p, "paxosstore"),
            &missing,
        ),
        (
            PeerTls::from_files(&garbage, &key_p, &ca_p, "paxosstore"),
            &garbage,
        ),
        // A key file holding no key, a certificate file holding only a key.
        (
            PeerTls::from_files(&cert_p, &cert_p, &ca_p, "paxosstore"),
            &cert_p,
        ),
        (
            PeerTls::from_files(&key_p, &key_p, &ca_p, "paxosstore"),
            &key_p,
        ),
        (
            PeerTls::from_files(&cert_p, &key_p, &garbage, "paxosstore"),
            &garbage,
        ),
    ];
    for (r, path) in cases {
        let e = r.expect_err("bad material refused").to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(!e.contains("PRIVATE KEY") && !e.contains("!!!!"), "{e}");
    }
    // A key that does not belong to the certificate.
    let (_, other_key) = ca.issue();
    let other_p = write(dir.path(), "other.key", &other_key);
    assert!(PeerTls::from_files(&cert_p, &other_p, &ca_p, "paxosstore").is_err());
}
