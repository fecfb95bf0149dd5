//! Connection handshake: wire messages, pure decoders and the acceptance policy.
//!
//! Every connection, in both directions, runs the same four fixed-size messages
//! before any frame is exchanged:
//!
//! ```text
//! dialer   -> acceptor  Hello     magic, version, flags, cluster id, from, to,
//!                                 channel index, channel count, dialer nonce
//! acceptor -> dialer    Challenge magic, version, cluster id, from, to,
//!                                 acceptor nonce, acceptor proof
//! dialer   -> acceptor  Auth      magic, dialer proof
//! acceptor -> dialer    Ack       magic, status
//! ```
//!
//! With a shared secret, `proof = HMAC-SHA256(secret, label || dialer nonce ||
//! acceptor nonce || cluster id || dialer id || acceptor id || channel)` with a
//! different label per direction, so each side proves knowledge of the secret over
//! a nonce chosen by the other (no replay, no reflection). Without a secret the
//! proofs are zero and ignored; a side with a secret refuses a peer without one.
//! An address alone is therefore not enough to join when a secret is configured.
//!
//! Everything here is pure (no I/O) so the decoders can be fuzzed.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::IpAddr;

use crate::NodeId;

/// "PS" — first two bytes of every handshake message.
pub const MAGIC: u16 = 0x5053;
/// Protocol version spoken by this build.
pub const VERSION: u8 = 1;
pub const NONCE_LEN: usize = 16;
pub const PROOF_LEN: usize = 32;
pub const HELLO_LEN: usize = 2 + 1 + 1 + 8 + 1 + 1 + 1 + 1 + NONCE_LEN;
pub const CHALLENGE_LEN: usize = 2 + 1 + 8 + 1 + 1 + NONCE_LEN + PROOF_LEN;
pub const AUTH_LEN: usize = 2 + PROOF_LEN;
pub const ACK_LEN: usize = 2 + 1;

const FLAG_AUTH: u8 = 1;
const LABEL_DIALER: &[u8] = b"paxosstore-rs/net/dialer/v1";
const LABEL_ACCEPTOR: &[u8] = b"paxosstore-rs/net/acceptor/v1";

/// Structural decode failure (before any policy check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message too short: {got} < {need}")]
    Short { got: usize, need: usize },
    #[error("bad magic {0:#06x}")]
    BadMagic(u16),
}

/// Why a handshake was refused or failed. Used as the stats / metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    BadMagic,
    BadVersion,
    WrongCluster,
    UnknownMember,
    SelfId,
    /// Hello addressed to a different server id than ours.
    WrongTarget,
    /// A peer with a larger id dialed us; only the smaller id dials.
    WrongDirection,
    /// Source IP is not the configured IP of the claimed member.
    SourceAddr,
    BadChannel,
    /// One side has a secret and the other does not.
    AuthMismatch,
    AuthFailed,
    Timeout,
    /// Peer closed (or half-closed) the socket mid-handshake.
    Truncated,
    Io,
    /// A plaintext handshake arrived on a port that requires TLS.
    TlsRequired,
    /// The TLS handshake failed (no certificate, one the CA did not sign, wrong
    /// server name, not TLS at all, ...).
    Tls,
}

impl RejectReason {
    pub const ALL: [RejectReason; 16] = [
        RejectReason::BadMagic,
        RejectReason::BadVersion,
        RejectReason::WrongCluster,
        RejectReason::UnknownMember,
        RejectReason::SelfId,
        RejectReason::WrongTarget,
        RejectReason::WrongDirection,
        RejectReason::SourceAddr,
        RejectReason::BadChannel,
        RejectReason::AuthMismatch,
        RejectReason::AuthFailed,
        RejectReason::Timeout,
        RejectReason::Truncated,
        RejectReason::Io,
        RejectReason::TlsRequired,
        RejectReason::Tls,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::BadMagic => "bad_magic",
            RejectReason::BadVersion => "bad_version",
            RejectReason::WrongCluster => "wrong_cluster",
            RejectReason::UnknownMember => "unknown_member",
            RejectReason::SelfId => "self_id",
            RejectReason::WrongTarget => "wrong_target",
            RejectReason::WrongDirection => "wrong_direction",
            RejectReason::SourceAddr => "source_addr",
            RejectReason::BadChannel => "bad_channel",
            RejectReason::AuthMismatch => "auth_mismatch",
            RejectReason::AuthFailed => "auth_failed",
            RejectReason::Timeout => "timeout",
            RejectReason::Truncated => "truncated",
            RejectReason::Io => "io",
            RejectReason::TlsRequired => "tls_required",
            RejectReason::Tls => "tls",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<DecodeError> for RejectReason {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Short { .. } => RejectReason::Truncated,
            DecodeError::BadMagic(_) => RejectReason::BadMagic,
        }
    }
}

fn check_magic(buf: &[u8], need: usize) -> Result<(), DecodeError> {
    if buf.len() < 2 {
        return Err(DecodeError::Short {
            got: buf.len(),
            need,
        });
    }
    let m = u16::from_be_bytes([buf[0], buf[1]]);
    if m != MAGIC {
        return Err(DecodeError::BadMagic(m));
    }
    if buf.len() < need {
        return Err(DecodeError::Short {
            got: buf.len(),
            need,
        });
    }
    Ok(())
}

fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    let n = s.len().min(N);
    a[..n].copy_from_slice(&s[..n]);
    a
}

/// First message, dialer to acceptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub version: u8,
    pub auth: bool,
    pub cluster_id: u64,
    pub from: NodeId,
    pub to: NodeId,
    pub channel: u8,
    pub channels: u8,
    pub nonce: [u8; NONCE_LEN],
}

impl Hello {
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[0..2].copy_from_slice(&MAGIC.to_be_bytes());
        b[2] = self.version;
        b[3] = if self.auth { FLAG_AUTH } else { 0 };
        b[4..12].copy_from_slice(&self.cluster_id.to_be_bytes());
        b[12] = self.from;
        b[13] = self.to;
        b[14] = self.channel;
        b[15] = self.channels;
        b[16..32].copy_from_slice(&self.nonce);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        check_magic(b, HELLO_LEN)?;
        Ok(Hello {
            version: b[2],
            auth: b[3] & FLAG_AUTH != 0,
            cluster_id: u64::from_be_bytes(arr(&b[4..12])),
            from: b[12],
            to: b[13],
            channel: b[14],
            channels: b[15],
            nonce: arr(&b[16..32]),
        })
    }
}

/// Second message, acceptor to dialer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    pub version: u8,
    pub cluster_id: u64,
    pub from: NodeId,
    pub to: NodeId,
    pub nonce: [u8; NONCE_LEN],
    pub proof: [u8; PROOF_LEN],
}

impl Challenge {
    pub fn encode(&self) -> [u8; CHALLENGE_LEN] {
        let mut b = [0u8; CHALLENGE_LEN];
        b[0..2].copy_from_slice(&MAGIC.to_be_bytes());
        b[2] = self.version;
        b[3..11].copy_from_slice(&self.cluster_id.to_be_bytes());
        b[11] = self.from;
        b[12] = self.to;
        b[13..29].copy_from_slice(&self.nonce);
        b[29..61].copy_from_slice(&self.proof);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        check_magic(b, CHALLENGE_LEN)?;
        Ok(Challenge {
            version: b[2],
            cluster_id: u64::from_be_bytes(arr(&b[3..11])),
            from: b[11],
            to: b[12],
            nonce: arr(&b[13..29]),
            proof: arr(&b[29..61]),
        })
    }
}

/// Third message, dialer to acceptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auth {
    pub proof: [u8; PROOF_LEN],
}

impl Auth {
    pub fn encode(&self) -> [u8; AUTH_LEN] {
        let mut b = [0u8; AUTH_LEN];
        b[0..2].copy_from_slice(&MAGIC.to_be_bytes());
        b[2..34].copy_from_slice(&self.proof);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        check_magic(b, AUTH_LEN)?;
        Ok(Auth {
            proof: arr(&b[2..34]),
        })
    }
}

/// Final message, acceptor to dialer. Status 0 = accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub status: u8,
}

impl Ack {
    pub fn encode(&self) -> [u8; ACK_LEN] {
        let m = MAGIC.to_be_bytes();
        [m[0], m[1], self.status]
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        check_magic(b, ACK_LEN)?;
        Ok(Ack { status: b[2] })
    }
}

/// Transcript bound into both proofs.
#[derive(Debug, Clone, Copy)]
pub struct Transcript {
    pub dialer_nonce: [u8; NONCE_LEN],
    pub acceptor_nonce: [u8; NONCE_LEN],
    pub cluster_id: u64,
    pub dialer: NodeId,
    pub acceptor: NodeId,
    pub channel: u8,
}

fn mac(secret: &[u8], label: &[u8], t: &Transcript) -> Hmac<Sha256> {
    // `new_from_slice` accepts keys of any length for HMAC; fall back to an empty
    // key rather than panicking if that ever changes.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
    m.update(label);
    m.update(&t.dialer_nonce);
    m.update(&t.acceptor_nonce);
    m.update(&t.cluster_id.to_be_bytes());
    m.update(&[t.dialer, t.acceptor, t.channel]);
    m
}

/// Proof the dialer sends in `Auth`.
pub fn dialer_proof(secret: &[u8], t: &Transcript) -> [u8; PROOF_LEN] {
    mac(secret, LABEL_DIALER, t).finalize().into_bytes().into()
}

/// Proof the acceptor sends in `Challenge`.
pub fn acceptor_proof(secret: &[u8], t: &Transcript) -> [u8; PROOF_LEN] {
    mac(secret, LABEL_ACCEPTOR, t)
        .finalize()
        .into_bytes()
        .into()
}

/// Constant-time verification of a dialer proof.
pub fn verify_dialer(secret: &[u8], t: &Transcript, proof: &[u8]) -> bool {
    mac(secret, LABEL_DIALER, t).verify_slice(proof).is_ok()
}

/// Constant-time verification of an acceptor proof.
pub fn verify_acceptor(secret: &[u8], t: &Transcript, proof: &[u8]) -> bool {
    mac(secret, LABEL_ACCEPTOR, t).verify_slice(proof).is_ok()
}

/// What the acceptor knows when judging a `Hello`.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub cluster_id: u64,
    pub self_id: NodeId,
    /// (id, configured IP) of every member, self included.
    pub members: &'a [(NodeId, IpAddr)],
    /// Source IP of the connection, when the inner-server check is enabled.
    pub source: Option<IpAddr>,
    pub channels: u8,
    pub has_secret: bool,
}

/// The acceptor's admission rule for a `Hello` (everything except the proof,
/// which needs the next round trip).
pub fn check_hello(h: &Hello, p: &Policy<'_>) -> Result<(), RejectReason> {
    if h.version != VERSION {
        return Err(RejectReason::BadVersion);
    }
    if h.cluster_id != p.cluster_id {
        return Err(RejectReason::WrongCluster);
    }
    if h.from == p.self_id {
        return Err(RejectReason::SelfId);
    }
    let Some(&(_, ip)) = p.members.iter().find(|(id, _)| *id == h.from) else {
        return Err(RejectReason::UnknownMember);
    };
    if h.to != p.self_id {
        return Err(RejectReason::WrongTarget);
    }
    if h.from > p.self_id {
        return Err(RejectReason::WrongDirection);
    }
    if let Some(src) = p.source {
        if src.to_canonical() != ip.to_canonical() {
            return Err(RejectReason::SourceAddr);
        }
    }
    if h.channels != p.channels || h.channel >= p.channels {
        return Err(RejectReason::BadChannel);
    }
    if h.auth != p.has_secret {
        return Err(RejectReason::AuthMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hello() -> Hello {
        Hello {
            version: VERSION,
            auth: false,
            cluster_id: 42,
            from: 1,
            to: 2,
            channel: 0,
            channels: 2,
            nonce: [7; NONCE_LEN],
        }
    }

    fn members() -> Vec<(NodeId, IpAddr)> {
        vec![
            (1, "127.0.0.1".parse().unwrap()),
            (2, "127.0.0.1".parse().unwrap()),
            (3, "10.0.0.3".parse().unwrap()),
        ]
    }

    fn policy(m: &[(NodeId, IpAddr)]) -> Policy<'_> {
        Policy {
            cluster_id: 42,
            self_id: 2,
            members: m,
            source: Some("127.0.0.1".parse().unwrap()),
            channels: 2,
            has_secret: false,
        }
    }

    #[test]
    fn roundtrips() {
        let h = hello();
        assert_eq!(Hello::decode(&h.encode()), Ok(h));
        let c = Challenge {
            version: 1,
            cluster_id: 9,
            from: 2,
            to: 1,
            nonce: [3; 16],
            proof: [4; 32],
        };
        assert_eq!(Challenge::decode(&c.encode()), Ok(c));
        let a = Auth { proof: [5; 32] };
        assert_eq!(Auth::decode(&a.encode()), Ok(a));
        assert_eq!(
            Ack::decode(&Ack { status: 3 }.encode()),
            Ok(Ack { status: 3 })
        );
    }

    #[test]
    fn policy_rules() {
        let m = members();
        let p = policy(&m);
        assert_eq!(check_hello(&hello(), &p), Ok(()));
        let cases: Vec<(Hello, RejectReason)> = vec![
            (
                Hello {
                    version: 2,
                    ..hello()
                },
                RejectReason::BadVersion,
            ),
            (
                Hello {
                    cluster_id: 1,
                    ..hello()
                },
                RejectReason::WrongCluster,
            ),
            (Hello { from: 9, ..hello() }, RejectReason::UnknownMember),
            (Hello { from: 2, ..hello() }, RejectReason::SelfId),
            (Hello { to: 3, ..hello() }, RejectReason::WrongTarget),
            (Hello { from: 3, ..hello() }, RejectReason::WrongDirection),
            (
                Hello {
                    channel: 2,
                    ..hello()
                },
                RejectReason::BadChannel,
            ),
            (
                Hello {
                    channels: 3,
                    ..hello()
                },
                RejectReason::BadChannel,
            ),
            (
                Hello {
                    auth: true,
                    ..hello()
                },
                RejectReason::AuthMismatch,
            ),
        ];
        for (h, want) in cases {
            assert_eq!(check_hello(&h, &p), Err(want), "{h:?}");
        }
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let p2 = Policy {
            source: Some(other),
            ..p
        };
        assert_eq!(check_hello(&hello(), &p2), Err(RejectReason::SourceAddr));
        let p3 = Policy { source: None, ..p2 };
        assert_eq!(check_hello(&hello(), &p3), Ok(()));
    }

    #[test]
    fn proofs_bind_secret_direction_and_transcript() {
        let t = Transcript {
            dialer_nonce: [1; 16],
            acceptor_nonce: [2; 16],
            cluster_id: 5,
            dialer: 1,
            acceptor: 2,
            channel: 0,
        };
        let d = dialer_proof(b"s3cret", &t);
        assert!(verify_dialer(b"s3cret", &t, &d));
        assert!(!verify_dialer(b"other", &t, &d));
        assert!(!verify_acceptor(b"s3cret", &t, &d), "reflection refused");
        let t2 = Transcript {
            acceptor_nonce: [3; 16],
            ..t
        };
        assert!(
            !verify_dialer(b"s3cret", &t2, &d),
            "replay under a new nonce refused"
        );
        assert!(!verify_dialer(b"s3cret", &t, &d[..31]));
    }

    proptest! {
        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Hello::decode(&data);
            let _ = Challenge::decode(&data);
            let _ = Auth::decode(&data);
            let _ = Ack::decode(&data);
        }
    }
}
