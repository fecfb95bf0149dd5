//! What every client kind shares: configuration, the start handshake, results.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Barrier};

use crate::stats::{Recorder, Shared};
use crate::verify::VerifyResult;
use crate::workload::{KeyDist, Mix};

pub struct RunConfig {
    pub clients: usize,
    pub pipeline: usize,
    pub keys: u64,
    pub dist: KeyDist,
    pub mix: Mix,
    pub value_size: usize,
    pub timeout: Duration,
    pub preload: bool,
    pub verify: bool,
    pub seed: u64,
    /// `--route slots`: the address index (into the target's list) of each hash
    /// slot's home, from `CLUSTER SLOTS`.
    pub slot_owners: Option<Arc<Vec<u8>>>,
}

/// Handed to each client task.
pub struct ClientCtx {
    pub id: usize,
    pub addrs: Arc<Vec<String>>,
    pub cfg: Arc<RunConfig>,
    /// Every client and the coordinator meet here once connected (and preloaded).
    pub ready: Arc<Barrier>,
    /// The coordinator publishes the measurement clock here after `ready`.
    pub shared: watch::Receiver<Option<Arc<Shared>>>,
    /// Keys preloaded so far (all clients).
    pub preloaded: Arc<AtomicU64>,
}

impl ClientCtx {
    pub async fn wait_start(&mut self) -> Arc<Shared> {
        self.ready.wait().await;
        let got = self.shared.wait_for(|s| s.is_some()).await;
        got.expect("coordinator alive").clone().expect("published")
    }

    /// The keys this client preloads: `id, id + clients, ...`.
    pub fn preload_keys(&self) -> impl Iterator<Item = u64> {
        let n = self.cfg.clients as u64;
        let keys = if self.cfg.preload { self.cfg.keys } else { 0 };
        (self.id as u64..keys).step_by(n as usize)
    }
}

pub struct ClientResult {
    pub rec: Recorder,
    pub verify: Option<VerifyResult>,
    pub preload_errors: u64,
    pub failovers: u64,
}
