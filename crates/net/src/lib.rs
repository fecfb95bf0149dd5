//! Peer network for PaxosStore-rs.
//!
//! A Rust/tokio rendition of PaxosStore's network layer: non-blocking sockets,
//! `TCP_NODELAY`, `SO_REUSEADDR`, a handshake on every connection (magic, version,
//! cluster id, server id, channel, optional HMAC challenge–response), an
//! inner-server source-address check, several connections ("channels") per peer
//! spread over the runtime's worker threads, CRC-checked frames, many frames per
//! vectored write, and bounded per-channel send buffers that report `Busy` once
//! more than 1/8 of the buffer is pending — so overload sheds messages (Paxos
//! tolerates loss) instead of growing memory.
//!
//! # Who dials
//!
//! Between two members only the one with the **smaller id dials**, opening
//! `channels_per_peer` connections, one per channel index. The acceptor refuses a
//! `Hello` from a larger id (`WrongDirection`). Each connection carries traffic in
//! both directions. This makes duplicate connections impossible by construction: for
//! a given (pair, channel) there is exactly one dialer, and when it reconnects the
//! acceptor replaces the old connection in that slot with the new one (the dialer
//! only redials after it has given up on the old one).
//!
//! # Security model
//!
//! The handshake admits only configured members: right cluster id, a member id,
//! (optionally) the member's configured source IP, and — when a secret is set — an
//! HMAC-SHA256 proof in both directions over fresh nonces, so an address alone is
//! not enough. Without TLS, frames after the handshake are CRC-protected but
//! neither encrypted nor MACed: an on-path attacker could still inject into an
//! established stream. With [`NetConfig::tls`] set, every connection is mutual TLS
//! (both sides present a certificate signed by the cluster CA, see [`tls`]) and the
//! handshake above runs *inside* the TLS stream; a plaintext peer is refused
//! (`tls_required`), as is one whose certificate the CA did not sign (`tls`).
//!
//! # Channels
//!
//! `route % channels_per_peer` picks the channel, so one entity's messages always
//! travel on one connection and stay ordered. If that channel is down, the next
//! live channel is used instead (availability over per-link affinity during a
//! reconnect; ordering is not guaranteed across a reconnect anyway).
//!
//! # Backpressure
//!
//! `Transport::send` never blocks. Each channel has a byte budget
//! (`send_buffer_bytes`); `send` returns `Busy` while more than 1/8 of it is pending
//! (queued or being written). `send_reply` is for answers the peer waits for and no
//! one resends: replies count against a budget of their own (the whole
//! `send_buffer_bytes`), so a large frame ahead of them cannot make them drop. Inbound frames go into one bounded mpsc; when the
//! consumer is slow, readers stop reading and TCP flow control pushes back on the
//! sender, whose `send` then returns `Busy`. Inbound payloads are zero-copy slices
//! of the connection's read buffer (up to 64 KiB chunks), so a consumer that keeps
//! a payload for long keeps its chunk alive; copy if you retain payloads.

pub mod frame;
#[doc(hidden)]
pub mod fuzz_support;
pub mod handshake;
mod stats;
pub mod tls;
mod transport;

use std::net::SocketAddr;
use std::time::Duration;

pub use bytes::Bytes;
pub use handshake::RejectReason;
pub use stats::NetStats;
pub use tls::{PeerTls, TlsError};
pub use transport::{start, Transport};

/// Server id of a cluster member.
pub type NodeId = u8;

/// One configured cluster member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub addr: SocketAddr,
}

/// Transport configuration. Build with [`NetConfig::new`] and adjust fields.
#[derive(Clone)]
pub struct NetConfig {
    pub cluster_id: u64,
    pub self_id: NodeId,
    pub listen: SocketAddr,
    /// All members, self included.
    pub members: Vec<Member>,
    /// Shared secret for the HMAC challenge–response; never logged.
    pub secret: Option<Vec<u8>>,
    /// Mutual TLS on every peer connection; `None` = plaintext.
    pub tls: Option<PeerTls>,
    /// Inner-server check: the connection's source IP must be the claimed member's
    /// configured IP. Disable behind NAT / in some container networks.
    pub check_source_addr: bool,
    /// Connections per peer (1..=255). Must be equal on all members.
    pub channels_per_peer: usize,
    /// Largest payload accepted or sent (default 16 MiB).
    pub max_frame: usize,
    /// Per-channel send budget (default 8 MiB); `Busy` above 1/8 of it. Replies
    /// (`send_reply`) have a second budget of this size.
    pub send_buffer_bytes: usize,
    pub handshake_timeout: Duration,
    /// A connection with no inbound bytes for this long is closed. Keepalives are
    /// sent every third of *this node's* value, so use the same value on every
    /// member (a peer with a much shorter timeout would close quiet links).
    pub idle_timeout: Duration,
    pub backlog: u32,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Capacity (in frames) of the inbound queue returned by [`start`].
    pub inbound_capacity: usize,
}

impl std::fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetConfig")
            .field("cluster_id", &self.cluster_id)
            .field("self_id", &self.self_id)
            .field("listen", &self.listen)
            .field("members", &self.members)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("check_source_addr", &self.check_source_addr)
            .field("channels_per_peer", &self.channels_per_peer)
            .field("max_frame", &self.max_frame)
            .field("send_buffer_bytes", &self.send_buffer_bytes)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("backlog", &self.backlog)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("inbound_capacity", &self.inbound_capacity)
            .finish()
    }
}

impl NetConfig {
    /// Defaults: no secret, source check on, one channel per tokio worker thread
    /// (or per CPU outside a runtime), 16 MiB frames, 8 MiB send buffers, 5 s
    /// handshake timeout, 30 s idle timeout, backlog 1024, reconnect 50 ms..5 s,
    /// inbound queue of 65 536 frames.
    pub fn new(cluster_id: u64, self_id: NodeId, listen: SocketAddr, members: Vec<Member>) -> Self {
        let workers = tokio::runtime::Handle::try_current()
            .map(|h| h.metrics().num_workers())
            .unwrap_or_else(|_| std::thread::available_parallelism().map_or(1, |n| n.get()));
        NetConfig {
            cluster_id,
            self_id,
            listen,
            members,
            secret: None,
            tls: None,
            check_source_addr: true,
            channels_per_peer: workers.clamp(1, 255),
            max_frame: 16 << 20,
            send_buffer_bytes: 8 << 20,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            backlog: 1024,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(5),
            inbound_capacity: 65_536,
        }
    }

    fn validate(&self) -> Result<(), NetError> {
        let bad = |m: String| Err(NetError::Config(m));
        if !self.members.iter().any(|m| m.id == self.self_id) {
            return bad(format!("self id {} is not in members", self.self_id));
        }
        for (i, m) in self.members.iter().enumerate() {
            if self.members[..i].iter().any(|o| o.id == m.id) {
                return bad(format!("duplicate member id {}", m.id));
            }
        }
        if !(1..=255).contains(&self.channels_per_peer) {
            return bad(format!(
                "channels_per_peer {} not in 1..=255",
                self.channels_per_peer
            ));
        }
        if self.max_frame == 0 || self.max_frame > u32::MAX as usize {
            return bad(format!("max_frame {} not in 1..=u32::MAX", self.max_frame));
        }
        if self.send_buffer_bytes < 8 {
            return bad("send_buffer_bytes must be at least 8".into());
        }
        if self.handshake_timeout.is_zero() || self.idle_timeout.is_zero() {
            return bad("timeouts must be non-zero".into());
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return bad("need 0 < reconnect_min <= reconnect_max".into());
        }
        if self.inbound_capacity == 0 {
            return bad("inbound_capacity must be non-zero".into());
        }
        if matches!(&self.secret, Some(s) if s.is_empty()) {
            return bad("secret must not be empty (use None for no secret)".into());
        }
        Ok(())
    }
}

/// A frame received from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub from: NodeId,
    pub msg_type: u8,
    pub payload: Bytes,
}

/// Link state of one peer as seen by this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// At least one channel is up.
    Connected { channels: usize },
    /// No channel up; we are the dialer and an attempt is in progress.
    Connecting,
    /// No channel up and none being attempted (or we wait for the peer to dial).
    Down,
}

/// Errors from [`start`].
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid config: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Why [`Transport::send`] did not queue a frame. The frame is dropped; Paxos
/// retries at its own level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("send buffer above high-water mark")]
    Busy,
    #[error("peer not connected")]
    NotConnected,
    #[error("unknown peer")]
    UnknownPeer,
    #[error("payload larger than max_frame")]
    TooLarge,
    #[error("message type 0 is reserved for keepalives")]
    ReservedType,
}

// The node runtime shares one handle across tasks.
const _: fn() = || {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Transport>();
};
