//! The admin HTTP endpoint: `/metrics` (Prometheus), `/health`, `/status.json` and a
//! small status page at `/`. HTTP/1.0-style: one request per connection, GET only.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::runtime::Shared;

pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((sock, _)) => {
                let s = shared.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), handle(sock, s)).await;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(mut sock: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    // Read the request head (bounded: 4 KiB is plenty for GET lines).
    while len < buf.len() {
        let n = sock.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n")
            || buf[..len].windows(2).any(|w| w == b"\n\n")
        {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let (status, ctype, body) = match path {
        "/metrics" => {
            export_gauges(&shared).await;
            let body = shared
                .metrics
                .as_ref()
                .map(|h| h.render())
                .unwrap_or_default();
            ("200 OK", "text/plain; version=0.0.4", body)
        }
        "/health" => {
            if shared.majority_reachable() {
                ("200 OK", "text/plain", "ok\n".to_string())
            } else {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    "no majority reachable\n".to_string(),
                )
            }
        }
        "/status.json" => ("200 OK", "application/json", status_json(&shared).await),
        "/" => (
            "200 OK",
            "text/html; charset=utf-8",
            STATUS_PAGE.to_string(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(resp.as_bytes()).await?;
    sock.shutdown().await
}

/// Copy counters owned by other components into gauges just before a scrape.
async fn export_gauges(shared: &Shared) {
    let stats = shared.shard_stats().await;
    let sum = |f: fn(&node::shard::ShardStats) -> u64| stats.iter().map(f).sum::<u64>() as f64;
    metrics::gauge!("paxosstore_entities_cached").set(sum(|s| s.entities_cached));
    metrics::gauge!("paxosstore_cached_bytes").set(sum(|s| s.cached_bytes));
    metrics::gauge!("paxosstore_proposals").set(sum(|s| s.proposals));
    metrics::gauge!("paxosstore_fast_path_proposals").set(sum(|s| s.fast_proposals));
    metrics::gauge!("paxosstore_conflicts").set(sum(|s| s.conflicts));
    metrics::gauge!("paxosstore_read_checks").set(sum(|s| s.reads));
    metrics::gauge!("paxosstore_local_reads").set(sum(|s| s.local_reads));
    metrics::gauge!("paxosstore_evictions").set(sum(|s| s.evictions));
    metrics::gauge!("paxosstore_entity_loads").set(sum(|s| s.loads));
    metrics::gauge!("paxosstore_probe_summaries").set(sum(|s| s.probe_summaries));
    let slowest = stats.iter().map(|s| s.write_retry_ms).max().unwrap_or(0);
    metrics::gauge!("paxosstore_write_retry_ms").set(slowest as f64);
    metrics::gauge!("paxosstore_probes_answered_from_summary").set(sum(|s| s.probes_from_summary));
    metrics::gauge!("paxosstore_busy_rejections").set(sum(|s| s.busy_rejections));
    metrics::gauge!("paxosstore_timeouts").set(sum(|s| s.timeouts));
    metrics::gauge!("paxosstore_persist_failures").set(sum(|s| s.persist_failures));
    metrics::gauge!("paxosstore_catchup_messages").set(sum(|s| s.catchups));
    metrics::gauge!("paxosstore_catchup_messages_dropped").set(sum(|s| s.catchups_dropped));
    metrics::gauge!("paxosstore_snapshot_recoveries").set(sum(|s| s.recoveries));
    metrics::gauge!("paxosstore_queued_requests").set(sum(|s| s.queued));
    metrics::gauge!("paxosstore_duplicate_requests").set(sum(|s| s.duplicates));
    let gc = shared.group_commit.stats();
    let batches = gc.batches.load(Ordering::Relaxed);
    let updates = gc.updates.load(Ordering::Relaxed);
    metrics::gauge!("paxosstore_fsync_batches").set(batches as f64);
    metrics::gauge!("paxosstore_fsync_updates").set(updates as f64);
    metrics::gauge!("paxosstore_fsync_batch_mean_size").set(if batches > 0 {
        updates as f64 / batches as f64
    } else {
        0.0
    });
    metrics::gauge!("paxosstore_fsync_seconds_total")
        .set(gc.fsync_nanos_total.load(Ordering::Relaxed) as f64 / 1e9);
    metrics::gauge!("paxosstore_clients").set(shared.clients.load(Ordering::Relaxed) as f64);
    for (id, st) in shared.transport.peer_states() {
        let up = matches!(st, net::PeerState::Connected { .. });
        metrics::gauge!("paxosstore_peer_up", "peer" => id.to_string()).set(if up {
            1.0
        } else {
            0.0
        });
    }
}

/// The cluster as this node sees it, for `ctl status` and the status page.
pub async fn status_json(shared: &Shared) -> String {
    let stats = shared.shard_stats().await;
    let gc = shared.group_commit.stats();
    let mut s = String::from("{");
    let _ = write!(
        s,
        "\"id\":{},\"uptime_s\":{},\"majority_reachable\":{},\"clients\":{},",
        shared.cfg.id,
        shared.started.elapsed().as_secs(),
        shared.majority_reachable(),
        shared.clients.load(Ordering::Relaxed)
    );
    let _ = write!(
        s,
        "\"entities_cached\":{},\"proposals\":{},\"fast_proposals\":{},\"reads\":{},\"fsync_batches\":{},\"fsync_updates\":{},",
        stats.iter().map(|x| x.entities_cached).sum::<u64>(),
        stats.iter().map(|x| x.proposals).sum::<u64>(),
        stats.iter().map(|x| x.fast_proposals).sum::<u64>(),
        stats.iter().map(|x| x.reads).sum::<u64>(),
        gc.batches.load(Ordering::Relaxed),
        gc.updates.load(Ordering::Relaxed),
    );
    s.push_str("\"members\":[");
    let states = shared.peer_states();
    for (i, m) in shared.cfg.members.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let st = states
            .get(&m.id)
            .cloned()
            .unwrap_or_else(|| "unknown".into());
        let _ = write!(
            s,
            "{{\"id\":{},\"peer\":\"{}\",\"state\":\"{}\"}}",
            m.id,
            escape(&m.peer),
            escape(&st)
        );
    }
    s.push_str("]}");
    s
}

fn escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if c.is_control() => vec![' '],
            c => vec![c],
        })
        .collect()
}

const STATUS_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>PaxosStore-rs node</title>
<style>body{font-family:sans-serif;margin:2em}td,th{padding:.3em 1em;border-bottom:1px solid #ddd}
.up{color:green}.down{color:#b00}</style></head>
<body><h1>PaxosStore-rs <span id="node"></span></h1>
<p>Majority reachable: <b id="maj"></b> &middot; clients: <span id="clients"></span>
&middot; proposals/s: <span id="prate"></span> &middot; reads/s: <span id="rrate"></span></p>
<table><thead><tr><th>member</th><th>peer address</th><th>state</th></tr></thead><tbody id="m"></tbody></table>
<script>
let last=null;
async function tick(){
  try{
    const s=await (await fetch('/status.json')).json();
    document.getElementById('node').textContent='node '+s.id;
    document.getElementById('maj').textContent=s.majority_reachable?'yes':'NO';
    document.getElementById('clients').textContent=s.clients;
    if(last){document.getElementById('prate').textContent=(s.proposals-last.proposals);
             document.getElementById('rrate').textContent=(s.reads-last.reads);}
    last=s;
    document.getElementById('m').innerHTML=s.members.map(m=>
      `<tr><td>${m.id}</td><td>${m.peer}</td><td class="${m.state.startsWith('up')||m.state=='self'?'up':'down'}">${m.state}</td></tr>`).join('');
  }catch(e){document.getElementById('maj').textContent='node unreachable';}
}
tick();setInterval(tick,1000);
</script></body></html>
"#;
