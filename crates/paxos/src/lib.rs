//! paxos (placeholder)
