//! The listener survives fd exhaustion (EMFILE): it logs, backs off instead of
//! spinning, and accepts again once descriptors are available.
//!
//! Alone in its own test binary because it lowers RLIMIT_NOFILE for the process.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use net::RejectReason;

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(64, |d| d.count() as u64)
}

fn set_nofile(soft: u64) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls with valid pointers to stack values.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0);
        let new = libc::rlimit {
            rlim_cur: soft,
            rlim_max: old.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &new), 0);
    }
    old
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_backs_off_on_emfile_and_recovers() {
    let addrs = vec![(1u8, free_addr()), (2u8, free_addr())];
    let (t, _rx) = net::start(config(2, &addrs)).await.expect("start");

    // A client socket created while descriptors remain...
    let client =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    // ...then exhaust the table so the server's accept() fails with EMFILE.
    let old = set_nofile(open_fds() + 16);
    let mut hogs = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => hogs.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                break;
            }
        }
    }
    client
        .connect(&addrs[1].1.into())
        .expect("connect completes in the backlog");
    eventually("accept fails with EMFILE", || t.stats().accept_errors >= 3).await;
    let at3 = t.stats().accept_errors;
    // Behaviour under test is the rate over time: a spinning loop would fail
    // accept() thousands of times in half a second; backoff allows a handful.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = t.stats().accept_errors;
    assert!(
        after - at3 <= 8,
        "listener spins: {at3} -> {after} accept errors in 500 ms"
    );

    drop(hogs);
    set_nofile(old.rlim_cur);
    // The pending connection is accepted after the backoff; prove the listener
    // is alive by getting a garbage hello rejected.
    let mut s: std::net::TcpStream = client.into();
    s.write_all(&[0xAB; 32]).expect("write");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut b = [0u8; 16];
    let _ = s.read(&mut b); // EOF or reset once the server closes
    eventually("garbage rejected", || {
        t.stats().rejections(RejectReason::BadMagic) == 1
    })
    .await;
    t.shutdown().await;
}
