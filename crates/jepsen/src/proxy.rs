//! TCP proxies between the nodes of a process cluster: node `i` reaches node `j`'s
//! peer port through the proxy for the directed link `i → j`, which the harness can
//! block in either direction. A blocked direction stops forwarding (bytes wait, the
//! sender's buffers fill, keepalives time out); a link blocked both ways also drops
//! its connections and refuses new ones. One-way partitions are one blocked direction.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The state of one directed link's proxy (dialer `from` → listener `to`).
pub struct Link {
    pub from: usize,
    pub to: usize,
    /// Bytes from `from` to `to` are held.
    pub block_fwd: AtomicBool,
    /// Bytes from `to` back to `from` are held.
    pub block_back: AtomicBool,
    /// Bumped when the link is cut both ways: older connections close.
    pub generation: AtomicU64,
    pub listen_port: u16,
}

impl Link {
    fn cut(&self) -> bool {
        self.block_fwd.load(Ordering::Relaxed) && self.block_back.load(Ordering::Relaxed)
    }
}

/// Start a proxy listening on 127.0.0.1 (an ephemeral port) that forwards to `target`.
pub async fn start(from: usize, to: usize, target: String) -> std::io::Result<Arc<Link>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let link = Arc::new(Link {
        from,
        to,
        block_fwd: AtomicBool::new(false),
        block_back: AtomicBool::new(false),
        generation: AtomicU64::new(0),
        listen_port: listener.local_addr()?.port(),
    });
    let l = link.clone();
    tokio::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            if l.cut() {
                drop(inbound);
                continue;
            }
            let l2 = l.clone();
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(Ok(outbound)) =
                    tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&target)).await
                else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let gen = l2.generation.load(Ordering::Relaxed);
                let (ir, iw) = inbound.into_split();
                let (or, ow) = outbound.into_split();
                let fwd = pump(ir, ow, l2.clone(), true, gen);
                let back = pump(or, iw, l2, false, gen);
                // Either side ending (or a cut) ends both.
                tokio::select! {
                    _ = fwd => {}
                    _ = back => {}
                }
            });
        }
    });
    Ok(link)
}

async fn pump<R, W>(mut r: R, mut w: W, link: Arc<Link>, fwd: bool, gen: u64)
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let blocked = |l: &Link| {
        if fwd {
            l.block_fwd.load(Ordering::Relaxed)
        } else {
            l.block_back.load(Ordering::Relaxed)
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Hold while blocked; end when the link is cut (a new generation).
        while blocked(&link) {
            if link.generation.load(Ordering::Relaxed) != gen {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if link.generation.load(Ordering::Relaxed) != gen {
            return;
        }
        let n = tokio::select! {
            r = r.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Re-check the flags now and then while idle.
            _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
        };
        // Bytes read just as the direction was blocked wait too.
        while blocked(&link) {
            if link.generation.load(Ordering::Relaxed) != gen {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Set the blocked directions: `blocked` holds `(from, to)` pairs meaning bytes sent
/// by node `from` are not delivered to node `to`.
pub fn apply(links: &[Arc<Link>], blocked: &std::collections::BTreeSet<(usize, usize)>) {
    for l in links {
        let fwd = blocked.contains(&(l.from, l.to));
        let back = blocked.contains(&(l.to, l.from));
        let was_cut = l.cut();
        l.block_fwd.store(fwd, Ordering::Relaxed);
        l.block_back.store(back, Ordering::Relaxed);
        if fwd && back && !was_cut {
            l.generation.fetch_add(1, Ordering::Relaxed);
        }
    }
}
