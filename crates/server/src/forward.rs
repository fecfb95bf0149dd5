//! Write forwarding to an entity's home node.
//!
//! The pre-authorised fast path (no prepare round) belongs to the node that introduced
//! the entity's previous value, and for entry 1 to the entity's *home* (a hash of the
//! entity, [`node::route::home`]). When clients spread over every node, consecutive
//! writes to one entity arrive at different nodes and each would pay a prepare round:
//! two more fsyncs in sequence and twice the messages. So a node forwards a
//! single-command write to the entity's home while that peer is connected; the home
//! proposes on the fast path and sends the reply back.
//!
//! Forwarding is an optimisation, never a requirement for progress: when the home is
//! not connected, its link is busy, or too many forwards are in flight, the node
//! proposes itself (slow path, any node may). So it does when the home refuses a write
//! without proposing it: the home is rejoining after a disk wipe, or its persists are
//! failing (disk full). A forwarded write whose reply does not
//! come back in time is answered `TIMEOUT` (outcome unknown), exactly like a local one.
//!
//! When the link to the home closes (the home was killed, or the network cut), the
//! writes forwarded over it are answered `TIMEOUT` at once (outcome unknown), so the
//! client need not wait for the operation timeout. Proposing them again here is not
//! safe: the home may have applied one, or may yet, and an entity remembers only its
//! last [`node::kv::RECENT`] request ids, so on a hot entity a retried write could
//! apply twice.
//!
//! The home never forwards again, so a request crosses at most one link.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use node::shard::Request;
use paxos::NodeId;
use resp::Reply;
use tokio::sync::oneshot;

use crate::runtime::Shared;
use crate::shard_worker::route;

/// Peer frame: a client write for the receiver to propose.
pub const MSG_FORWARD: u8 = 2;
/// Peer frame: the reply to a forwarded write.
pub const MSG_FORWARD_REPLY: u8 = 3;

/// The home's answer when it cannot write to its disk: it proposed nothing, so the
/// origin proposes the write itself.
pub const REFUSED_DISK: &str = "TRYAGAIN the entity's home cannot write to its disk";

/// Deepest reply nesting accepted from a peer.
const MAX_DEPTH: usize = 8;

/// A write sent to the entity's home.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    /// The origin's id for matching the reply.
    pub id: u64,
    /// Client request id (REQID), 0 = none.
    pub request_id: u64,
    pub entity: Bytes,
    /// The command and its arguments, as the client sent them.
    pub argv: Vec<Bytes>,
}

/// A peer sent a forwarding frame that does not decode.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("malformed forwarding frame: {0}")]
pub struct DecodeError(&'static str);

impl Forward {
    pub fn encode(&self) -> Bytes {
        let len = 24 + self.entity.len() + self.argv.iter().map(|a| 4 + a.len()).sum::<usize>();
        let mut b = BytesMut::with_capacity(len);
        b.put_u64(self.id);
        b.put_u64(self.request_id);
        b.put_u32(self.entity.len() as u32);
        b.put_slice(&self.entity);
        b.put_u32(self.argv.len() as u32);
        for a in &self.argv {
            b.put_u32(a.len() as u32);
            b.put_slice(a);
        }
        b.freeze()
    }

    pub fn decode(mut b: Bytes) -> Result<Self, DecodeError> {
        let id = get_u64(&mut b)?;
        let request_id = get_u64(&mut b)?;
        let entity = get_bytes(&mut b)?;
        let argc = get_u32(&mut b)? as usize;
        // Each argument takes at least its 4-byte length: bounds the allocation.
        if argc == 0 || argc > b.remaining() / 4 {
            return Err(DecodeError("argument count"));
        }
        let mut argv = Vec::with_capacity(argc);
        for _ in 0..argc {
            argv.push(get_bytes(&mut b)?);
        }
        if b.has_remaining() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(Self {
            id,
            request_id,
            entity,
            argv,
        })
    }
}

/// Encode `(id, reply)` for [`MSG_FORWARD_REPLY`].
pub fn encode_reply(id: u64, reply: &Reply) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_u64(id);
    put_reply(&mut b, reply);
    b.freeze()
}

/// Decode a [`MSG_FORWARD_REPLY`] payload.
pub fn decode_reply(mut b: Bytes) -> Result<(u64, Reply), DecodeError> {
    let id = get_u64(&mut b)?;
    let r = get_reply(&mut b, 0)?;
    if b.has_remaining() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok((id, r))
}

fn put_reply(b: &mut BytesMut, r: &Reply) {
    let put_all = |b: &mut BytesMut, tag: u8, items: &[Reply]| {
        b.put_u8(tag);
        b.put_u32(items.len() as u32);
        for i in items {
            put_reply(b, i);
        }
    };
    match r {
        Reply::Simple(s) => {
            b.put_u8(0);
            put_bytes(b, s);
        }
        Reply::Error(e) => {
            b.put_u8(1);
            put_bytes(b, e.as_bytes());
        }
        Reply::Integer(i) => {
            b.put_u8(2);
            b.put_i64(*i);
        }
        Reply::Bulk(v) => {
            b.put_u8(3);
            put_bytes(b, v);
        }
        Reply::Null => b.put_u8(4),
        Reply::Array(v) => put_all(b, 5, v),
        Reply::NullArray => b.put_u8(6),
        Reply::Double(d) => {
            b.put_u8(7);
            b.put_u64(d.to_bits());
        }
        Reply::Map(kv) => {
            b.put_u8(8);
            b.put_u32(kv.len() as u32);
            for (k, v) in kv {
                put_reply(b, k);
                put_reply(b, v);
            }
        }
        Reply::Set(v) => put_all(b, 9, v),
        Reply::Bool(x) => {
            b.put_u8(10);
            b.put_u8(*x as u8);
        }
        Reply::Verbatim { format, text } => {
            b.put_u8(11);
            b.put_slice(format);
            put_bytes(b, text);
        }
        Reply::Push(v) => put_all(b, 12, v),
    }
}

fn get_reply(b: &mut Bytes, depth: usize) -> Result<Reply, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError("nesting too deep"));
    }
    let items = |b: &mut Bytes| -> Result<Vec<Reply>, DecodeError> {
        let n = get_u32(b)? as usize;
        // Every item takes at least its tag byte.
        if n > b.remaining() {
            return Err(DecodeError("item count"));
        }
        (0..n).map(|_| get_reply(b, depth + 1)).collect()
    };
    if !b.has_remaining() {
        return Err(DecodeError("truncated"));
    }
    Ok(match b.get_u8() {
        0 => Reply::Simple(get_bytes(b)?),
        1 => Reply::Error(
            String::from_utf8(get_bytes(b)?.to_vec()).map_err(|_| DecodeError("error text"))?,
        ),
        2 => Reply::Integer(get_u64(b)? as i64),
        3 => Reply::Bulk(get_bytes(b)?),
        4 => Reply::Null,
        5 => Reply::Array(items(b)?),
        6 => Reply::NullArray,
        7 => Reply::Double(f64::from_bits(get_u64(b)?)),
        8 => {
            let n = get_u32(b)? as usize;
            if n > b.remaining() / 2 {
                return Err(DecodeError("item count"));
            }
            let mut kv = Vec::with_capacity(n);
            for _ in 0..n {
                let k = get_reply(b, depth + 1)?;
                kv.push((k, get_reply(b, depth + 1)?));
            }
            Reply::Map(kv)
        }
        9 => Reply::Set(items(b)?),
        10 => Reply::Bool(get_u8(b)? != 0),
        11 => {
            if b.remaining() < 3 {
                return Err(DecodeError("truncated"));
            }
            let mut format = [0u8; 3];
            b.copy_to_slice(&mut format);
            Reply::Verbatim {
                format,
                text: get_bytes(b)?,
            }
        }
        12 => Reply::Push(items(b)?),
        _ => return Err(DecodeError("reply tag")),
    })
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_u32(v.len() as u32);
    b.put_slice(v);
}

fn get_u8(b: &mut Bytes) -> Result<u8, DecodeError> {
    if b.remaining() < 1 {
        return Err(DecodeError("truncated"));
    }
    Ok(b.get_u8())
}

fn get_u32(b: &mut Bytes) -> Result<u32, DecodeError> {
    if b.remaining() < 4 {
        return Err(DecodeError("truncated"));
    }
    Ok(b.get_u32())
}

fn get_u64(b: &mut Bytes) -> Result<u64, DecodeError> {
    if b.remaining() < 8 {
        return Err(DecodeError("truncated"));
    }
    Ok(b.get_u64())
}

fn get_bytes(b: &mut Bytes) -> Result<Bytes, DecodeError> {
    let n = get_u32(b)? as usize;
    if n > b.remaining() {
        return Err(DecodeError("length"));
    }
    Ok(b.split_to(n))
}

/// How a forwarded write ended, seen from the origin.
#[derive(Debug, PartialEq)]
pub enum ForwardOutcome {
    /// The home's reply.
    Reply(Reply),
    /// The link to the home closed before the reply came: the home may or may not
    /// propose the write, so the origin proposes it under the same request id.
    LinkLost,
}

struct InFlight {
    home: NodeId,
    tx: oneshot::Sender<ForwardOutcome>,
}

/// The origin's table of forwarded writes awaiting their reply. Bounded: beyond
/// `capacity` in flight, writes are proposed locally instead.
pub struct Forwarder {
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, InFlight>>,
    capacity: usize,
}

impl Forwarder {
    pub fn new(capacity: usize) -> Self {
        Self {
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Reserve an id for a forward to `home`; `None` when the table is full.
    pub fn register(&self, home: NodeId) -> Option<(u64, oneshot::Receiver<ForwardOutcome>)> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() >= self.capacity {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        p.insert(id, InFlight { home, tx });
        Some((id, rx))
    }

    /// Forget a forward (its send failed, or it timed out).
    pub fn cancel(&self, id: u64) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.remove(&id);
    }

    /// A reply arrived; unknown ids (late, after a timeout) are ignored.
    pub fn complete(&self, id: u64, reply: Reply) {
        let f = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.remove(&id)
        };
        if let Some(f) = f {
            let _ = f.tx.send(ForwardOutcome::Reply(reply));
        }
    }

    /// A link to `home` closed: every write forwarded there ends as
    /// [`ForwardOutcome::LinkLost`]. Returns how many.
    pub fn fail_over(&self, home: NodeId) -> usize {
        let lost: Vec<InFlight> = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let ids: Vec<u64> = p
                .iter()
                .filter(|(_, f)| f.home == home)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| p.remove(id)).collect()
        };
        let n = lost.len();
        for f in lost {
            let _ = f.tx.send(ForwardOutcome::LinkLost);
        }
        n
    }

    pub fn in_flight(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Origin: send a single-command write on `entity` to its home, if that is another
/// node and the link takes it. `None`: propose locally instead.
pub fn try_forward(
    shared: &Arc<Shared>,
    entity: &Bytes,
    argv: &[Bytes],
    request_id: u64,
) -> Option<impl std::future::Future<Output = Reply> + Send + 'static> {
    if !shared.cfg.forward_writes {
        return None;
    }
    let home = node::route::home(entity, shared.cfg.members.len() as u8);
    if home == shared.cfg.id || !shared.peer_fully_connected(home) {
        return None;
    }
    // Only a client's own REQID travels: the home's shard names a write that has
    // none itself, and keeps such ids a shorter while than a client's, so that an
    // entity's state does not carry a long tail of them in every record.
    let (id, rx) = shared.forwarder.register(home)?;
    let payload = Forward {
        id,
        request_id,
        entity: entity.clone(),
        argv: argv.to_vec(),
    }
    .encode();
    if shared
        .transport
        .send(home, route(entity), MSG_FORWARD, payload)
        .is_err()
    {
        shared.forwarder.cancel(id);
        return None;
    }
    metrics::counter!("paxosstore_forwarded_total").increment(1);
    // The home answers TIMEOUT itself after op_timeout; the margin covers the link.
    let timeout = Duration::from_millis(shared.cfg.op_timeout_ms + 1_000);
    let shared = shared.clone();
    let entity = entity.clone();
    let argv = argv.to_vec();
    Some(async move {
        match tokio::time::timeout(timeout, rx).await {
            // The home refused without proposing (it is recovering this entity after
            // a disk wipe, or cannot write to its disk): propose here instead.
            Ok(Ok(ForwardOutcome::Reply(Reply::Error(e))))
                if e == node::shard::REJOINING || e == REFUSED_DISK =>
            {
                metrics::counter!("paxosstore_forward_fallbacks_total").increment(1);
                crate::client::propose_here(shared, entity, &argv, request_id).await
            }
            Ok(Ok(ForwardOutcome::Reply(r))) => r,
            // The link to the home closed: it may have applied the write, or may yet.
            // Answer at once, as an unknown outcome, so the client need not wait for
            // the operation timeout. Proposing it again here under its request id is
            // not safe: an entity remembers only its last 64 request ids, and on a hot
            // entity more writes than that can land in between, so the write would
            // apply twice (the fault tier found exactly that, seed 527166514).
            Ok(Ok(ForwardOutcome::LinkLost)) => {
                metrics::counter!("paxosstore_forward_link_lost_total").increment(1);
                Reply::error("TIMEOUT the write's outcome is unknown")
            }
            _ => {
                shared.forwarder.cancel(id);
                metrics::counter!("paxosstore_forward_timeouts_total").increment(1);
                Reply::error("TIMEOUT the write's outcome is unknown")
            }
        }
    })
}

/// Home: a peer forwarded a write. Check it, run it on the local shard, and send the
/// reply back. Anything malformed is counted and dropped (the origin times out).
pub fn on_forward(shared: &Arc<Shared>, from: NodeId, payload: Bytes) {
    let f = match Forward::decode(payload) {
        Ok(f) => f,
        Err(e) => {
            metrics::counter!("paxosstore_peer_bad_messages_total").increment(1);
            tracing::warn!(from, error = %e, "undecodable forwarded write");
            return;
        }
    };
    // A reply is sent as one (not bulk): the origin waits for it and nothing resends
    // it, and the entity's own Paxos messages, perhaps megabytes, share its channel.
    let reply_to = move |shared: &Arc<Shared>, id: u64, entity: &Bytes, r: &Reply| {
        if shared
            .transport
            .send_reply(from, route(entity), MSG_FORWARD_REPLY, encode_reply(id, r))
            .is_err()
        {
            metrics::counter!("paxosstore_forward_replies_dropped_total").increment(1);
        }
    };
    let cmd = match resp::parse_command(&f.argv) {
        Ok(c) => c,
        Err(e) => return reply_to(shared, f.id, &f.entity, &Reply::error(e.to_string())),
    };
    let same_entity = cmd
        .keys()
        .iter()
        .all(|k| resp::entity_of(k) == f.entity.as_ref());
    if !cmd.is_write() || !same_entity {
        let r = Reply::error("ERR internal: bad forwarded write");
        return reply_to(shared, f.id, &f.entity, &r);
    }
    if shared
        .disk_failing
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        // Refused before proposing: the origin may propose it instead. (After a failed
        // persist the outcome of that write is unknown, so refusing up front is what
        // keeps the fallback safe.)
        metrics::counter!("paxosstore_forward_refused_total").increment(1);
        return reply_to(shared, f.id, &f.entity, &Reply::error(REFUSED_DISK));
    }
    let req = Request {
        request_id: f.request_id,
        ..Request::single(cmd)
    };
    // Queued on the shard here, in frame order (one entity's frames share a link), so
    // the home runs one origin's writes to an entity in the order they were sent.
    let reply = crate::client::submit_forwarded(shared, f.entity.clone(), req);
    let shared = shared.clone();
    tokio::spawn(async move {
        let r = reply.await;
        reply_to(&shared, f.id, &f.entity, &r);
    });
}

/// Origin: the reply to a forwarded write arrived.
pub fn on_forward_reply(shared: &Shared, from: NodeId, payload: Bytes) {
    match decode_reply(payload) {
        Ok((id, r)) => shared.forwarder.complete(id, r),
        Err(e) => {
            metrics::counter!("paxosstore_peer_bad_messages_total").increment(1);
            tracing::warn!(from, error = %e, "undecodable forwarded reply");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_round_trips() {
        let f = Forward {
            id: 7,
            request_id: 9,
            entity: Bytes::from_static(b"user42"),
            argv: vec![
                Bytes::from_static(b"SET"),
                Bytes::from_static(b"{user42}:a"),
                Bytes::new(),
            ],
        };
        assert_eq!(Forward::decode(f.encode()), Ok(f));
    }

    #[test]
    fn replies_round_trip() {
        let r = Reply::Array(vec![
            Reply::ok(),
            Reply::error("ERR x"),
            Reply::Integer(-3),
            Reply::Bulk(Bytes::from_static(b"v")),
            Reply::Null,
            Reply::NullArray,
            Reply::Double(1.5),
            Reply::Map(vec![(Reply::Bool(true), Reply::Set(vec![]))]),
            Reply::Verbatim {
                format: *b"txt",
                text: Bytes::from_static(b"t"),
            },
            Reply::Push(vec![Reply::Integer(1)]),
        ]);
        assert_eq!(decode_reply(encode_reply(5, &r)), Ok((5, r)));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let f = Forward {
            id: 1,
            request_id: 0,
            entity: Bytes::from_static(b"k"),
            argv: vec![Bytes::from_static(b"INCR"), Bytes::from_static(b"k")],
        }
        .encode();
        for n in 0..f.len() {
            assert!(Forward::decode(f.slice(..n)).is_err(), "prefix {n}");
        }
        let r = encode_reply(
            1,
            &Reply::Array(vec![Reply::Bulk(Bytes::from_static(b"ab"))]),
        );
        for n in 0..r.len() {
            assert!(decode_reply(r.slice(..n)).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut r = Reply::Null;
        for _ in 0..20 {
            r = Reply::Array(vec![r]);
        }
        assert!(decode_reply(encode_reply(1, &r)).is_err());
    }

    #[test]
    fn forwarder_is_bounded_and_ignores_late_replies() {
        let f = Forwarder::new(2);
        let (a, mut ra) = f.register(1).expect("room");
        let (_b, _rb) = f.register(1).expect("room");
        assert!(f.register(1).is_none());
        f.complete(a, Reply::ok());
        assert_eq!(ra.try_recv().ok(), Some(ForwardOutcome::Reply(Reply::ok())));
        f.complete(a, Reply::ok()); // late duplicate: ignored
        assert_eq!(f.in_flight(), 1);
    }

    #[test]
    fn a_lost_link_fails_over_only_that_homes_forwards() {
        let f = Forwarder::new(8);
        let (_a, mut ra) = f.register(1).expect("room");
        let (b, mut rb) = f.register(2).expect("room");
        assert_eq!(f.fail_over(1), 1);
        assert_eq!(ra.try_recv().ok(), Some(ForwardOutcome::LinkLost));
        assert!(rb.try_recv().is_err(), "home 2's forward is still pending");
        f.complete(b, Reply::ok());
        assert_eq!(rb.try_recv().ok(), Some(ForwardOutcome::Reply(Reply::ok())));
        assert_eq!(f.in_flight(), 0);
    }
}
