//! Deterministic simulation of whole clusters of the consensus core, with fault
//! injection and a linearizability checker. See [`cluster::Sim`].

pub mod cli;
pub mod cluster;
pub mod linearizability;
pub mod model;

pub use cluster::{Faults, Sim, SimConfig, SimReport};

/// Run one seed.
pub fn run_seed(cfg: SimConfig) -> SimReport {
    Sim::new(cfg).run()
}
