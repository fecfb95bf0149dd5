//! Loopback throughput of the peer transport, sender and receiver in separate
//! processes (the example re-executes itself as the receiver).
//!
//! ```text
//! cargo run --release -p net --example frame_bench -- [--channels 1,4] [--runs 3] [--secs 3] [--size 100]
//! ```
//!
//! For each channel count it runs `runs` times and prints the median frames/s and
//! MB/s (payload bytes) measured at the receiver over `secs` seconds, starting
//! at the first received frame.

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use net::{Member, NetConfig, PeerState, SendError};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    role_recv: bool,
    channels: Vec<usize>,
    runs: usize,
    secs: f64,
    size: usize,
    me: Option<SocketAddr>,
    peer: Option<SocketAddr>,
}

fn parse() -> Result<Args, BoxError> {
    let mut a = Args {
        role_recv: false,
        channels: vec![1, 4],
        runs: 3,
        secs: 3.0,
        size: 100,
        me: None,
        peer: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or_else(|| format!("missing value for {k}"));
        match k.as_str() {
            "--recv" => a.role_recv = true,
            "--channels" => {
                a.channels = v()?.split(',').map(str::parse).collect::<Result<_, _>>()?
            }
            "--runs" => a.runs = v()?.parse()?,
            "--secs" => a.secs = v()?.parse()?,
            "--size" => a.size = v()?.parse()?,
            "--me" => a.me = Some(v()?.parse()?),
            "--peer" => a.peer = Some(v()?.parse()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

fn free_addr() -> Result<SocketAddr, BoxError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn cfg(self_id: u8, me: SocketAddr, peer: SocketAddr, channels: usize) -> NetConfig {
    let peer_id = 3 - self_id;
    let members = vec![
        Member {
            id: self_id,
            addr: me,
        },
        Member {
            id: peer_id,
            addr: peer,
        },
    ];
    let mut c = NetConfig::new(0xBE7C, self_id, me, members);
    c.channels_per_peer = channels;
    c.reconnect_min = Duration::from_millis(10);
    c.reconnect_max = Duration::from_millis(100);
    c
}

async fn receiver(a: &Args, channels: usize) -> Result<(), BoxError> {
    let (me, peer) = (a.me.ok_or("--me")?, a.peer.ok_or("--peer")?);
    let (_t, mut rx) = net::start(cfg(2, me, peer, channels)).await?;
    println!("READY");
    let mut buf = Vec::with_capacity(4096);
    if rx.recv_many(&mut buf, 4096).await == 0 {
        return Err("inbound closed".into());
    }
    let start = Instant::now();
    let (mut frames, mut bytes) = (0u64, 0u64);
    let dur = Duration::from_secs_f64(a.secs);
    while start.elapsed() < dur {
        buf.clear();
        if rx.recv_many(&mut buf, 4096).await == 0 {
            break;
        }
        frames += buf.len() as u64;
        bytes += buf.iter().map(|m| m.payload.len() as u64).sum::<u64>();
    }
    let secs = start.elapsed().as_secs_f64();
    println!("RESULT {frames} {bytes} {secs}");
    std::process::exit(0);
}

async fn one_run(a: &Args, channels: usize) -> Result<(f64, f64, u64), BoxError> {
    let (me, peer) = (free_addr()?, free_addr()?);
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .args([
            "--recv",
            "--channels",
            &channels.to_string(),
            "--secs",
            &a.secs.to_string(),
        ])
        .args(["--me", &peer.to_string(), "--peer", &me.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let (t, _rx) = net::start(cfg(1, me, peer, channels)).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !t
        .peer_states()
        .contains(&(2, PeerState::Connected { channels }))
    {
        if Instant::now() > deadline {
            return Err("receiver never connected".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let payload = Bytes::from(vec![0xA5u8; a.size]);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output());
    let sender = {
        let t = t.clone();
        tokio::spawn(async move {
            let mut busy = 0u64;
            let mut route = 0u64;
            loop {
                for _ in 0..1024 {
                    match t.send(2, route, 1, payload.clone()) {
                        Ok(()) => route = route.wrapping_add(1),
                        Err(SendError::Busy) => {
                            busy += 1;
                            tokio::task::yield_now().await;
                        }
                        Err(_) => return busy,
                    }
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let output = out.await??;
    sender.abort();
    t.shutdown().await;
    let busy = t.stats().dropped_busy;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RESULT"))
        .ok_or("receiver printed no RESULT")?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let [frames, bytes, secs] = f[..] else {
        return Err("bad RESULT line".into());
    };
    Ok((frames / secs, bytes / secs / 1e6, busy))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let a = parse()?;
    if a.role_recv {
        let ch = a.channels.first().copied().unwrap_or(1);
        return receiver(&a, ch).await;
    }
    println!(
        "payload {} B, {} s per run, {} runs, nproc {}",
        a.size,
        a.secs,
        a.runs,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for &ch in &a.channels {
        let mut fps = Vec::new();
        let mut mbs = Vec::new();
        for r in 0..a.runs {
            let (f, m, busy) = one_run(&a, ch).await?;
            println!("  channels={ch} run={r}: {f:.0} frames/s, {m:.1} MB/s (sender saw Busy {busy} times)");
            fps.push(f);
            mbs.push(m);
        }
        println!(
            "channels={ch}: median {:.0} frames/s, {:.1} MB/s",
            median(fps),
            median(mbs)
        );
    }
    Ok(())
}
