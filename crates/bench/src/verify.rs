//! Lost-write check: every key has one writer, which remembers its last
//! acknowledged value and the values whose outcome it does not know.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

#[derive(Default)]
struct KeyTrack {
    acked: Option<u64>,
    unsure: Vec<u64>,
}

#[derive(Default)]
pub struct Tracker {
    keys: HashMap<u64, KeyTrack>,
}

impl Tracker {
    pub fn sent(&mut self, key: u64, seq: u64) {
        self.keys.entry(key).or_default().unsure.push(seq);
    }

    pub fn acked(&mut self, key: u64, seq: u64) {
        let t = self.keys.entry(key).or_default();
        t.unsure.retain(|&s| s != seq);
        t.acked = Some(seq);
    }

    /// Keys to read back, in a stable order.
    pub fn keys(&self) -> Vec<u64> {
        let mut k: Vec<u64> = self.keys.keys().copied().collect();
        k.sort_unstable();
        k
    }

    /// Judges the value read back for `key` (`None`: the key is absent).
    pub fn check(&self, key: u64, read: Option<u64>, res: &mut VerifyResult) {
        let Some(t) = self.keys.get(&key) else { return };
        res.keys += 1;
        if t.acked.is_some() {
            res.acked_keys += 1;
        }
        let fine = match (t.acked, read) {
            (None, None) => true,
            (None, Some(s)) => t.unsure.contains(&s),
            (Some(_), None) => false,
            (Some(a), Some(s)) => s == a || t.unsure.contains(&s),
        };
        if fine {
            res.ok += 1;
        } else {
            res.lost += 1;
            if res.examples.len() < 5 {
                res.examples.push(format!(
                    "key {key}: last acknowledged write #{:?}, read {:?}",
                    t.acked, read
                ));
            }
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VerifyResult {
    /// Keys written by the run and read back.
    pub keys: u64,
    /// Keys with at least one acknowledged write.
    pub acked_keys: u64,
    /// Read back the last acknowledged value or a write whose outcome was unknown.
    pub ok: u64,
    /// Read back something older than the last acknowledged write, or nothing.
    pub lost: u64,
    /// Could not be read back at all (every address failed).
    pub unreadable: u64,
    pub examples: Vec<String>,
}

impl VerifyResult {
    pub fn merge(&mut self, o: VerifyResult) {
        self.keys += o.keys;
        self.acked_keys += o.acked_keys;
        self.ok += o.ok;
        self.lost += o.lost;
        self.unreadable += o.unreadable;
        for e in o.examples {
            if self.examples.len() < 5 {
                self.examples.push(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_reads() {
        let mut t = Tracker::default();
        t.sent(1, 10);
        t.acked(1, 10);
        t.sent(1, 11); // outcome unknown
        t.sent(2, 12);
        t.acked(2, 12);
        let mut r = VerifyResult::default();
        t.check(1, Some(11), &mut r);
        t.check(2, Some(12), &mut r);
        assert_eq!((r.ok, r.lost), (2, 0));
        t.check(2, None, &mut r);
        t.check(1, Some(9), &mut r);
        assert_eq!(r.lost, 2);
    }
}
