//! Counters. Lock-free atomics, updated per batch on hot paths, snapshotted by
//! `Transport::stats`. Rejections are also exported via the `metrics` facade.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::handshake::RejectReason;

/// Snapshot of transport counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetStats {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    /// `send` calls refused with `Busy`.
    pub dropped_busy: u64,
    /// `send` calls refused with `NotConnected`.
    pub dropped_not_connected: u64,
    /// Handshakes completed (either direction).
    pub connects: u64,
    /// Dialer handshakes completed after the first one for that channel.
    pub reconnects: u64,
    /// Connections closed for inactivity.
    pub idle_closes: u64,
    /// `accept` failures (EMFILE, ECONNABORTED, ...); each is followed by a backoff.
    pub accept_errors: u64,
    /// Connections closed for an oversized frame length.
    pub frame_too_large: u64,
    /// Connections closed for a checksum mismatch.
    pub frame_bad_crc: u64,
    /// Handshake failures by reason (acceptor and dialer side).
    pub handshake_rejections: BTreeMap<RejectReason, u64>,
}

impl NetStats {
    pub fn rejections(&self, r: RejectReason) -> u64 {
        self.handshake_rejections.get(&r).copied().unwrap_or(0)
    }
}

#[derive(Default)]
pub(crate) struct Stats {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub dropped_busy: AtomicU64,
    pub dropped_not_connected: AtomicU64,
    pub connects: AtomicU64,
    pub reconnects: AtomicU64,
    pub idle_closes: AtomicU64,
    pub accept_errors: AtomicU64,
    pub frame_too_large: AtomicU64,
    pub frame_bad_crc: AtomicU64,
    rejections: [AtomicU64; RejectReason::ALL.len()],
}

impl Stats {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub fn reject(&self, r: RejectReason) {
        self.rejections[r.index()].fetch_add(1, Relaxed);
        metrics::counter!("net_handshake_rejected_total", "reason" => r.as_str()).increment(1);
    }

    pub fn snapshot(&self) -> NetStats {
        let g = |c: &AtomicU64| c.load(Relaxed);
        let mut handshake_rejections = BTreeMap::new();
        for r in RejectReason::ALL {
            let n = g(&self.rejections[r.index()]);
            if n > 0 {
                handshake_rejections.insert(r, n);
            }
        }
        NetStats {
            bytes_in: g(&self.bytes_in),
            bytes_out: g(&self.bytes_out),
            frames_in: g(&self.frames_in),
            frames_out: g(&self.frames_out),
            dropped_busy: g(&self.dropped_busy),
            dropped_not_connected: g(&self.dropped_not_connected),
            connects: g(&self.connects),
            reconnects: g(&self.reconnects),
            idle_closes: g(&self.idle_closes),
            accept_errors: g(&self.accept_errors),
            frame_too_large: g(&self.frame_too_large),
            frame_bad_crc: g(&self.frame_bad_crc),
            handshake_rejections,
        }
    }
}
