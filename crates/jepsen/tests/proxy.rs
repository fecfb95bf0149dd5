//! The partition proxy: bytes flow both ways; a blocked direction holds its bytes
//! (the other keeps flowing) until unblocked; a link cut both ways drops its
//! connections and refuses new ones until healed.

use std::collections::BTreeSet;
use std::time::Duration;

use jepsen::proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server that also greets each connection with "hi".
async fn echo() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn read_some(s: &mut TcpStream, ms: u64) -> Option<Vec<u8>> {
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(Duration::from_millis(ms), s.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(buf[..n].to_vec()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_blocks_hold_bytes_and_cuts_drop_connections() {
    let target = echo().await;
    let link = proxy::start(0, 1, target).await.unwrap();
    let links = vec![link.clone()];
    let addr = format!("127.0.0.1:{}", link.listen_port);
    let mut c = TcpStream::connect(&addr).await.unwrap();
    c.write_all(b"ping").await.unwrap();
    assert_eq!(read_some(&mut c, 2000).await.as_deref(), Some(&b"ping"[..]));

    // Block 1 -> 0 (the echo's replies): the request gets through, the reply waits.
    proxy::apply(&links, &BTreeSet::from([(1, 0)]));
    c.write_all(b"held").await.unwrap();
    assert_eq!(read_some(&mut c, 300).await, None, "reply must be held");
    proxy::apply(&links, &BTreeSet::new());
    assert_eq!(read_some(&mut c, 2000).await.as_deref(), Some(&b"held"[..]));

    // Cut both ways: the connection ends, and new ones are refused until healed.
    proxy::apply(&links, &BTreeSet::from([(0, 1), (1, 0)]));
    assert_eq!(read_some(&mut c, 1000).await, None);
    let mut d = TcpStream::connect(&addr).await.unwrap();
    let _ = d.write_all(b"x").await;
    assert_eq!(read_some(&mut d, 300).await, None, "refused while cut");
    proxy::apply(&links, &BTreeSet::new());
    let mut e = TcpStream::connect(&addr).await.unwrap();
    e.write_all(b"back").await.unwrap();
    assert_eq!(read_some(&mut e, 2000).await.as_deref(), Some(&b"back"[..]));
}
