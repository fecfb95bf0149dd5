//! Bad peers against a running 3-node cluster: garbage, an HTTP request, a silent
//! socket, a huge frame length and a non-member source address sent to a node's peer
//! port are all closed within the handshake timeout, while the cluster keeps serving
//! clients.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_paxosstore");

struct Demo {
    child: Child,
    port: u16,
}

impl Drop for Demo {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn start_demo() -> Demo {
    // A port range unlikely to collide with other tests: client P..P+2, peer
    // P+10000.., admin P+20000... One of the nine ports may still be taken (an
    // ephemeral port of another test's connection): the demo then exits before
    // "ready", and we try the next ports.
    let base = 31_000 + (std::process::id() % 4_000) as u16 * 3 % 12_000;
    for attempt in 0..5u16 {
        let port = base + attempt * 3;
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let mut child = Command::new(BIN)
            .args(["demo", "--port", &port.to_string(), "--data-dir"])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start demo");
        let out = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(out).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let ready = loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("ready") => break true,
                Some(Ok(_)) => {}
                _ => break false,
            }
            assert!(Instant::now() < deadline, "demo not ready in time");
        };
        if !ready {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("demo on port {port} exited before ready (port taken?); trying the next");
            continue;
        }
        std::thread::spawn(move || for _ in lines {});
        return Demo { child, port };
    }
    panic!("demo did not become ready on 5 port ranges");
}

fn resp(port: u16, args: &[&str]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect client port");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
    }
    s.write_all(req.as_bytes()).expect("write");
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).expect("read reply");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Read until the peer closes the connection; returns how long that took.
fn closed_within(mut s: TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(limit + Duration::from_secs(2)))
        .ok();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return start.elapsed(),
            Err(e) => panic!("not closed within {limit:?}: {e}"),
        }
    }
}

#[test]
fn bad_peers_are_closed_while_the_cluster_serves() {
    let demo = start_demo();
    let peer: SocketAddr = format!("127.0.0.1:{}", demo.port as u32 + 10_000)
        .parse()
        .expect("addr");
    // The default handshake timeout of a demo node is 5 s.
    let limit = Duration::from_secs(5) + Duration::from_millis(1500);

    let mut abusers: Vec<(&str, TcpStream)> = Vec::new();
    let mut garbage = TcpStream::connect(peer).expect("connect");
    garbage
        .write_all(&[0x13, 0x37, 0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5, 6, 7])
        .expect("w");
    abusers.push(("garbage", garbage));
    let mut http = TcpStream::connect(peer).expect("connect");
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("w");
    abusers.push(("http", http));
    abusers.push(("silent", TcpStream::connect(peer).expect("connect")));
    let mut huge = TcpStream::connect(peer).expect("connect");
    huge.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0])
        .expect("w");
    abusers.push(("huge length", huge));
    // A non-member source address (members are configured on 127.0.0.1).
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let outsider = "127.0.0.2:0".parse::<SocketAddr>().expect("addr");
    if sock.bind(&outsider.into()).is_ok() && sock.connect(&peer.into()).is_ok() {
        abusers.push(("non-member", sock.into()));
    } else {
        eprintln!("SKIPPED non-member case: cannot bind 127.0.0.2 here");
    }

    // The cluster keeps serving while the abusers hang on.
    assert_eq!(resp(demo.port, &["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(resp(demo.port + 2, &["GET", "k"]), "$1\r\nv\r\n");

    let waiters: Vec<_> = abusers
        .into_iter()
        .map(|(what, s)| std::thread::spawn(move || (what, closed_within(s, limit))))
        .collect();
    for w in waiters {
        let (what, took) = w.join().expect("join");
        assert!(took <= limit, "{what}: closed after {took:?}");
    }
    assert_eq!(resp(demo.port + 1, &["GET", "k"]), "$1\r\nv\r\n");
    let metrics = resp_http(demo.port as u32 + 20_000, "/metrics");
    assert!(
        metrics.contains("net_handshake_rejected_total"),
        "rejections are counted"
    );
}

fn resp_http(port: u32, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port as u16)).expect("admin");
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .expect("w");
    let mut out = String::new();
    s.read_to_string(&mut out).ok();
    out
}
