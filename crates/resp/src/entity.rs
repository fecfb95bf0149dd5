//! Key → entity mapping using Redis Cluster hash tags.
//!
//! PaxosStore replicates per *entity*: keys that share a hash tag (`{user1}.a`
//! and `{user1}.b`) belong to the same entity and can be updated together,
//! exactly like keys sharing a hash slot in Redis Cluster. We keep Redis's
//! rules bit-for-bit so applications designed for Redis Cluster co-locate
//! the same keys here. `crc16`/`key_slot` are provided for reference and
//! compatibility (e.g. `CLUSTER KEYSLOT`).

/// The part of `key` that determines its entity: the content of the first
/// `{...}` if the first `{` is followed by a `}` with at least one byte in
/// between; otherwise the whole key.
pub fn entity_of(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        let rest = &key[open + 1..];
        if let Some(close) = rest.iter().position(|&b| b == b'}') {
            if close > 0 {
                return &rest[..close];
            }
        }
    }
    key
}

/// CRC16-CCITT (XMODEM: polynomial 0x1021, init 0), as used by Redis Cluster.
/// Table-driven: a write's home is computed from it on every forwarded command.
pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// `CRC16_TABLE[i]`: the CRC of the byte `i` shifted through eight steps.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// Number of Redis Cluster hash slots.
pub const SLOTS: u16 = 16384;

/// The Redis Cluster hash slot (0..16384) of `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(entity_of(key)) & 0x3FFF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_check_value() {
        // The standard XMODEM check value.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn crc16_table_matches_the_bitwise_definition() {
        fn bitwise(data: &[u8]) -> u16 {
            data.iter().fold(0u16, |mut crc, &b| {
                crc ^= u16::from(b) << 8;
                for _ in 0..8 {
                    crc = if crc & 0x8000 != 0 {
                        (crc << 1) ^ 0x1021
                    } else {
                        crc << 1
                    };
                }
                crc
            })
        }
        let data: Vec<u8> = (0..2048u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for len in 0..64 {
            for start in (0..data.len() - len).step_by(97) {
                let d = &data[start..start + len];
                assert_eq!(crc16(d), bitwise(d), "{d:?}");
            }
        }
    }

    #[test]
    fn known_slots() {
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"hello"), 866);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn hash_tags() {
        assert_eq!(entity_of(b"{user1000}.following"), b"user1000");
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // Examples from the Redis Cluster specification.
        assert_eq!(entity_of(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(entity_of(b"foo{bar}{zap}"), b"bar");
        assert_eq!(entity_of(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(entity_of(b"{}"), b"{}");
        assert_eq!(entity_of(b"foo{bar"), b"foo{bar");
        assert_eq!(entity_of(b"foo}bar{"), b"foo}bar{");
        assert_eq!(entity_of(b"}{x}"), b"x");
    }
}
