//! Where an entity lives: its hash (which picks a shard and a peer connection) and
//! its home node (the one pre-authorised for entry 1, and where writes are forwarded).

use paxos::NodeId;

/// Stable hash of an entity. FNV-1a: the same across processes, builds and
/// machines, which every member relies on (they must agree on each entity's home).
pub fn route(entity: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in entity {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The entity's home among `n` members. Uses the hash's high half so that the home
/// is independent of the shard (`route % shards`, the low bits).
pub fn home(entity: &[u8], n: u8) -> NodeId {
    ((route(entity) >> 32) % n.max(1) as u64) as NodeId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homes_spread_over_members() {
        let mut count = [0usize; 3];
        for i in 0..3000 {
            count[home(format!("key:{i}").as_bytes(), 3) as usize] += 1;
        }
        assert!(count.iter().all(|&c| c > 800), "{count:?}");
    }

    #[test]
    fn route_is_fnv1a() {
        // Fixed values: members of one cluster must agree across builds.
        assert_eq!(route(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(route(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
