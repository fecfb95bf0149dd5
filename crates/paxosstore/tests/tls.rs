//! TLS on a real 3-process cluster: every node serves clients over TLS and links to
//! its peers over mutual TLS (with a peer secret and `requirepass` set too).
//!
//! * SET/GET over TLS with a Rust client (rustls + raw RESP), and with
//!   `redis-cli --tls --cacert` when redis-cli is installed;
//! * a plaintext client on the TLS client port is closed and the node keeps serving;
//!   a plaintext peer on the TLS peer port is refused and counted in /metrics;
//! * no secret (peer secret, password, private key) appears in /metrics,
//!   /status.json, INFO or the node's log (at trace level);
//! * bad TLS files: one stderr line naming the field and the file, exit code 2.
//!
//! No sleeps as synchronisation: every wait polls a condition against a deadline.

use std::fs::OpenOptions;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

mod common;
use common::{free_ports, poll, read_reply, Reply, BIN, N};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const PEER_SECRET: &str = "peer-secret-5f1e9c";
const PASSWORD: &str = "client-password-8a2d47";

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    /// (certificate PEM, key PEM) per node.
    nodes: Vec<(String, String)>,
}

fn pki(n: usize) -> Pki {
    pki_named(n, "paxosstore test CA")
}

fn pki_named(n: usize, ca_name: &str) -> Pki {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, ca_name);
    let ca = p.self_signed(&ca_key).expect("ca cert");
    let nodes = (0..n)
        .map(|_| {
            let key = KeyPair::generate().expect("node key");
            // `paxosstore` for peers; localhost and 127.0.0.1 for clients.
            let names = vec!["paxosstore".into(), "localhost".into(), "127.0.0.1".into()];
            let p = CertificateParams::new(names).expect("node params");
            let cert = p.signed_by(&key, &ca, &ca_key).expect("node cert");
            (cert.pem(), key.serialize_pem())
        })
        .collect();
    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        nodes,
    }
}

// ---------------------------------------------------------------------------
// Clients: RESP over rustls, plain HTTP for the admin port
// ---------------------------------------------------------------------------

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

struct TlsResp {
    s: BufReader<TlsStream>,
}

impl TlsResp {
    fn connect(addr: &str, ca: &CertificateDer<'static>) -> Result<TlsResp, String> {
        TlsResp::connect_as(addr, ca, None)
    }

    /// With `identity` (certificate PEM, key PEM), present a client certificate.
    fn connect_as(
        addr: &str,
        ca: &CertificateDer<'static>,
        identity: Option<&(String, String)>,
    ) -> Result<TlsResp, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).map_err(|e| e.to_string())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let cfg = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                let key =
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| e.to_string())?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| e.to_string())?
            }
        };
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(Arc::new(cfg), name).map_err(|e| e.to_string())?;
        let tcp = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        Ok(TlsResp {
            s: BufReader::new(rustls::StreamOwned::new(conn, tcp)),
        })
    }

    fn cmd(&mut self, args: &[&str]) -> Result<Reply, String> {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        let s = self.s.get_mut();
        s.write_all(out.as_bytes()).map_err(|e| e.to_string())?;
        s.flush().map_err(|e| e.to_string())?;
        read_reply(&mut self.s).map_err(|e| e.to_string())
    }

    /// Connect, AUTH, run one command.
    fn once(addr: &str, ca: &CertificateDer<'static>, args: &[&str]) -> Result<Reply, String> {
        let mut c = TlsResp::connect(addr, ca)?;
        match c.cmd(&["AUTH", PASSWORD])? {
            Reply::Simple(s) if s == "OK" => {}
            r => return Err(format!("AUTH: {r:?}")),
        }
        c.cmd(args)
    }
}

/// The body of an admin page (`common::http_get` without the status code).
fn http_get(addr: &str, path: &str) -> Result<String, String> {
    common::http_get(addr, path).map(|(_, body)| body)
}

/// Send `bytes` and read until the server closes; Err if it answers or stays open.
fn closed_without_answer(addr: &str, bytes: &[u8]) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(bytes).map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => return Err(format!("not closed: {e}")),
    }
    // A TLS server may answer garbage with a TLS alert record (0x15), never RESP.
    if got.is_empty() || got[0] == 0x15 {
        Ok(())
    } else {
        Err(format!("answered {:?}", String::from_utf8_lossy(&got)))
    }
}

// ---------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------

struct Cluster {
    dir: tempfile::TempDir,
    client: Vec<String>,
    peer: Vec<String>,
    admin: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (i, c) in self.children.iter_mut().enumerate() {
            let _ = c.kill();
            let _ = c.wait();
            if thread::panicking() {
                let log = std::fs::read_to_string(self.dir.path().join(format!("node{i}.log")))
                    .unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!(
                    "---- node {i} log ----\n{}",
                    lines[lines.len().saturating_sub(30)..].join("\n")
                );
            }
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write file");
    p
}

fn start_tls_cluster(pki: &Pki) -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ports = free_ports(3 * N);
    let client: Vec<String> = (0..N).map(|i| format!("127.0.0.1:{}", ports[i])).collect();
    let peer: Vec<String> = (0..N)
        .map(|i| format!("127.0.0.1:{}", ports[N + i]))
        .collect();
    let admin: Vec<String> = (0..N)
        .map(|i| format!("127.0.0.1:{}", ports[2 * N + i]))
        .collect();
    let ca = write(d, "ca.crt", &pki.ca_pem);
    let members: String = (0..N)
        .map(|i| format!("\n[[members]]\nid = {i}\npeer = \"{}\"\n", peer[i]))
        .collect();
    let mut children = Vec::new();
    for i in 0..N {
        let cert = write(d, &format!("node{i}.crt"), &pki.nodes[i].0);
        let key = write(d, &format!("node{i}.key"), &pki.nodes[i].1);
        let toml = format!(
            "id = {i}\ncluster_id = 9\nclient_addr = \"{}\"\npeer_addr = \"{}\"\n\
             admin_addr = \"{}\"\ndata_dir = \"{}\"\nshards = 2\nio_threads = 2\n\
             peer_secret = \"{PEER_SECRET}\"\nrequirepass = \"{PASSWORD}\"\n\
             tls_cert = \"{c}\"\ntls_key = \"{k}\"\n\
             peer_tls_cert = \"{c}\"\npeer_tls_key = \"{k}\"\npeer_tls_ca = \"{ca}\"\n{members}",
            client[i],
            peer[i],
            admin[i],
            d.join(format!("node{i}")).display(),
            c = cert.display(),
            k = key.display(),
            ca = ca.display(),
        );
        let path = write(d, &format!("node{i}.toml"), &toml);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join(format!("node{i}.log")))
            .expect("log file");
        children.push(
            Command::new(BIN)
                .args(["--log-level", "trace", "server", "--config"])
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn server"),
        );
    }
    Cluster {
        dir,
        client,
        peer,
        admin,
        children,
    }
}

#[test]
fn tls_cluster_serves_clients_refuses_plaintext_and_leaks_no_secret() {
    let pki = pki(N);
    let mut cl = start_tls_cluster(&pki);
    let ca = pki.ca_der.clone();
    for i in 0..N {
        poll(30, &format!("node {i} PING over TLS"), || {
            if let Ok(Some(st)) = cl.children[i].try_wait() {
                panic!("node {i} exited: {st}");
            }
            match TlsResp::once(&cl.client[i], &ca, &["PING"])? {
                Reply::Simple(s) if s == "PONG" => Ok(()),
                r => Err(format!("{r:?}")),
            }
        });
    }
    for i in 0..N {
        poll(30, &format!("node {i} sees both peers over TLS"), || {
            let body = http_get(&cl.admin[i], "/status.json")?;
            match body.matches("\"state\":\"up(").count() {
                2 => Ok(()),
                n => Err(format!("{n} peers up: {body}")),
            }
        });
    }

    // SET on node 0, GET on the others, all over TLS.
    poll(30, "SET over TLS", || {
        match TlsResp::once(&cl.client[0], &ca, &["SET", "tls-key", "tls-value"])? {
            Reply::Simple(s) if s == "OK" => Ok(()),
            r => Err(format!("{r:?}")),
        }
    });
    for i in 1..N {
        let got = TlsResp::once(&cl.client[i], &ca, &["GET", "tls-key"]).expect("GET over TLS");
        assert_eq!(got, Reply::Bulk(Some(b"tls-value".to_vec())), "node {i}");
    }

    // redis-cli, when installed.
    let ca_path = cl.dir.path().join("ca.crt");
    let redis_cli = |addr: &str, args: &[&str]| -> Option<String> {
        let (host, port) = addr.rsplit_once(':')?;
        let out = Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(&ca_path)
            .args(["-h", host, "-p", port, "--no-auth-warning", "-a", PASSWORD])
            .args(args)
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    if redis_cli(&cl.client[1], &["PING"]).is_some() {
        assert_eq!(
            redis_cli(&cl.client[1], &["SET", "cli-key", "cli-value"]).as_deref(),
            Some("OK")
        );
        assert_eq!(
            redis_cli(&cl.client[2], &["GET", "cli-key"]).as_deref(),
            Some("cli-value")
        );
    } else {
        eprintln!("redis-cli not installed: skipping its part");
    }

    // A plaintext client on the TLS client port: closed without a RESP answer, and
    // the node keeps serving TLS clients.
    closed_without_answer(&cl.client[0], b"*1\r\n$4\r\nPING\r\n").expect("plaintext client");
    let got = TlsResp::once(&cl.client[0], &ca, &["GET", "tls-key"]).expect("GET after");
    assert_eq!(got, Reply::Bulk(Some(b"tls-value".to_vec())));

    // A plaintext peer hello on the TLS peer port: refused, counted in /metrics.
    let hello = [0x50, 0x53, 1, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 2, 0, 2];
    closed_without_answer(&cl.peer[2], &hello).expect("plaintext peer");
    poll(10, "tls_required rejection in /metrics", || {
        let m = http_get(&cl.admin[2], "/metrics")?;
        let line = m
            .lines()
            .find(|l| l.starts_with("net_handshake_rejected_total") && l.contains("tls_required"));
        line.map(|_| ())
            .ok_or_else(|| "not counted yet".to_string())
    });

    // No secret anywhere an operator looks.
    let key_bodies: Vec<String> = pki
        .nodes
        .iter()
        .map(|(_, k)| {
            // A line of the key's base64 body.
            k.lines().nth(1).expect("key body").to_string()
        })
        .collect();
    let mut secrets: Vec<&str> = vec![PEER_SECRET, PASSWORD];
    secrets.extend(key_bodies.iter().map(String::as_str));
    for i in 0..N {
        let info = TlsResp::once(&cl.client[i], &ca, &["INFO"]).expect("INFO");
        let info = format!("{info:?}");
        let metrics = http_get(&cl.admin[i], "/metrics").expect("metrics");
        let status = http_get(&cl.admin[i], "/status.json").expect("status");
        assert!(metrics.contains("# TYPE"), "metrics served: {metrics}");
        let log =
            std::fs::read_to_string(cl.dir.path().join(format!("node{i}.log"))).expect("read log");
        assert!(log.contains("TRACE"), "node {i} logs at trace level");
        for (what, text) in [
            ("INFO", &info),
            ("/metrics", &metrics),
            ("/status.json", &status),
            ("log", &log),
        ] {
            for s in &secrets {
                assert!(!text.contains(s), "node {i}: {what} shows a secret");
            }
        }
    }
}

/// Run `server` on a config; expect exit 2 and one stderr line containing `want`.
fn expect_exit_2(dir: &Path, name: &str, toml: &str, want: &[&str]) {
    let path = write(dir, &format!("{name}.toml"), toml);
    let out = Command::new(BIN)
        .args(["server", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{name}: one stderr line, got {stderr:?}");
    for w in want {
        assert!(lines[0].contains(w), "{name}: {w:?} not in {:?}", lines[0]);
    }
}

#[test]
fn bad_tls_files_name_the_field_and_file_and_exit_2() {
    let pki = pki(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ports = free_ports(6);
    let base = format!(
        "id = 0\nclient_addr = \"127.0.0.1:{}\"\npeer_addr = \"127.0.0.1:{}\"\n\
         admin_addr = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\n",
        ports[0],
        ports[1],
        ports[2],
        d.join("data").display()
    );
    let members: String = (0..3)
        .map(|i| {
            format!(
                "\n[[members]]\nid = {i}\npeer = \"127.0.0.1:{}\"\n",
                ports[3 + i]
            )
        })
        .collect();
    let cert = write(d, "node.crt", &pki.nodes[0].0);
    let key = write(d, "node.key", &pki.nodes[0].1);
    let ca = write(d, "ca.crt", &pki.ca_pem);
    let garbage = write(
        d,
        "garbage.pem",
        "-----BEGIN PRIVATE KEY-----\nnot base64!\n",
    );
    let missing = d.join("missing.crt");
    let cfg = |extra: String| format!("{base}{extra}\n{members}");
    let p = |x: &Path| x.display().to_string();

    expect_exit_2(
        d,
        "missing_cert",
        &cfg(format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"",
            p(&missing),
            p(&key)
        )),
        &["tls_cert", &p(&missing)],
    );
    expect_exit_2(
        d,
        "garbage_key",
        &cfg(format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"",
            p(&cert),
            p(&garbage)
        )),
        &["tls_key", &p(&garbage), "PEM"],
    );
    expect_exit_2(
        d,
        "cert_without_key",
        &cfg(format!("tls_cert = \"{}\"", p(&cert))),
        &["tls_cert", "tls_key"],
    );
    expect_exit_2(
        d,
        "peer_key_is_a_cert",
        &cfg(format!(
            "peer_tls_cert = \"{}\"\npeer_tls_key = \"{}\"\npeer_tls_ca = \"{}\"",
            p(&cert),
            p(&cert),
            p(&ca)
        )),
        &["peer_tls_key", &p(&cert)],
    );
    expect_exit_2(
        d,
        "peer_ca_missing",
        &cfg(format!(
            "peer_tls_cert = \"{}\"\npeer_tls_key = \"{}\"\npeer_tls_ca = \"{}\"",
            p(&cert),
            p(&key),
            p(&missing)
        )),
        &["peer_tls_ca", &p(&missing)],
    );
    expect_exit_2(
        d,
        "bad_peer_name",
        &cfg(format!(
            "peer_tls_cert = \"{}\"\npeer_tls_key = \"{}\"\npeer_tls_ca = \"{}\"\n\
             peer_tls_name = \"not a name!\"",
            p(&cert),
            p(&key),
            p(&ca)
        )),
        &["peer_tls_name"],
    );
    // Nothing is listening afterwards.
    assert!(TcpStream::connect(format!("127.0.0.1:{}", ports[0])).is_err());
}

/// `tls_client_ca`: a client without a certificate, or with one another CA signed,
/// is refused; one the configured CA signed is served. One node of three suffices
/// (PING is answered without a majority).
#[test]
fn client_certificates_are_required_when_a_client_ca_is_set() {
    let pki = pki(2); // node 0's server certificate, and a client certificate
    let other = pki_named(1, "another CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ports = free_ports(6);
    let cert = write(d, "node.crt", &pki.nodes[0].0);
    let key = write(d, "node.key", &pki.nodes[0].1);
    let ca = write(d, "ca.crt", &pki.ca_pem);
    let members: String = (0..3)
        .map(|i| {
            format!(
                "\n[[members]]\nid = {i}\npeer = \"127.0.0.1:{}\"\n",
                ports[3 + i]
            )
        })
        .collect();
    let toml = format!(
        "id = 0\nclient_addr = \"127.0.0.1:{}\"\npeer_addr = \"127.0.0.1:{}\"\n\
         admin_addr = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\n\
         tls_cert = \"{}\"\ntls_key = \"{}\"\ntls_client_ca = \"{}\"\n{members}",
        ports[0],
        ports[1],
        ports[2],
        d.join("data").display(),
        cert.display(),
        key.display(),
        ca.display()
    );
    let path = write(d, "node.toml", &toml);
    let child = Command::new(BIN)
        .args(["server", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    let mut cl = Cluster {
        dir,
        client: vec![format!("127.0.0.1:{}", ports[0])],
        peer: Vec::new(),
        admin: Vec::new(),
        children: vec![child],
    };
    let addr = cl.client[0].clone();
    let ping = |identity: Option<&(String, String)>| -> Result<Reply, String> {
        TlsResp::connect_as(&addr, &pki.ca_der, identity)?.cmd(&["PING"])
    };
    poll(30, "PING with a client certificate", || {
        if let Ok(Some(st)) = cl.children[0].try_wait() {
            panic!("node exited: {st}");
        }
        match ping(Some(&pki.nodes[1]))? {
            Reply::Simple(s) if s == "PONG" => Ok(()),
            r => Err(format!("{r:?}")),
        }
    });
    let no_cert = ping(None);
    assert!(
        no_cert.is_err(),
        "served without a client certificate: {no_cert:?}"
    );
    let foreign = ping(Some(&other.nodes[0]));
    assert!(
        foreign.is_err(),
        "served a foreign client certificate: {foreign:?}"
    );
    assert_eq!(ping(Some(&pki.nodes[1])), Ok(Reply::Simple("PONG".into())));
    cl.children[0].kill().ok();
}
