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

/// The entity's home among `n` members: the owner of its Redis Cluster hash slot
/// ([`slot_owner`]), so that a cluster-aware Redis client, routing each key to the
/// node `CLUSTER SLOTS` names, sends every write to the node that can take the fast
/// path, and the write needs no forward. An entity is a key or the content of its
/// hash tag, which is exactly what Redis hashes, so `key_slot(key)` is the entity's
/// slot. (Before storage format 2 the home was FNV-based; a directory of format 1 is
/// refused, because two members disagreeing on a home would both skip prepare.)
pub fn home(entity: &[u8], n: u8) -> NodeId {
    slot_owner(resp::crc16(entity) % resp::SLOTS, n)
}

/// The member owning hash slot `slot` among `n`: the slots split into `n` contiguous
/// ranges of nearly equal size, in member order.
pub fn slot_owner(slot: u16, n: u8) -> NodeId {
    (u32::from(slot) * u32::from(n.max(1)) / u32::from(resp::SLOTS)) as NodeId
}

/// The first and last slot owned by `member` among `n` (for `CLUSTER SLOTS`); `None`
/// when it owns none (more members than slots cannot happen with `n: u8`).
pub fn slot_range(member: NodeId, n: u8) -> Option<(u16, u16)> {
    let n32 = u32::from(n.max(1));
    let m = u32::from(member);
    if m >= n32 {
        return None;
    }
    // The smallest slot s with s * n / SLOTS >= m, i.e. ceil(m * SLOTS / n).
    let first = (m * u32::from(resp::SLOTS)).div_ceil(n32);
    let next = ((m + 1) * u32::from(resp::SLOTS)).div_ceil(n32);
    (first < next).then(|| (first as u16, (next - 1) as u16))
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

    #[test]
    fn home_is_the_owner_of_the_redis_slot() {
        // Fixed values: members of one cluster must agree across builds, and a
        // cluster-aware client computes the same slot (`CLUSTER KEYSLOT foo` = 12182).
        assert_eq!(home(b"foo", 3), 2);
        assert_eq!(home(b"bar", 3), 0); // slot 5061
        assert_eq!(home(resp::entity_of(b"{bar}.x"), 3), 0);
        assert_eq!(home(b"foo", 1), 0);
    }

    #[test]
    fn slot_ranges_cover_every_slot_once_and_agree_with_the_owner() {
        for n in 1..=16u8 {
            let mut next = 0u32;
            for m in 0..n {
                let (first, last) = slot_range(m, n).expect("every member owns slots");
                assert_eq!(u32::from(first), next, "n={n} m={m}");
                assert!(first <= last);
                assert_eq!(slot_owner(first, n), m);
                assert_eq!(slot_owner(last, n), m);
                next = u32::from(last) + 1;
            }
            assert_eq!(next, u32::from(resp::SLOTS), "n={n}");
            assert_eq!(slot_range(n, n), None);
        }
    }
}
