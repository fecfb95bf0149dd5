//! What each client does: the op mix, the key distribution and the values.

use rand::Rng;
use rand_distr::{Distribution, Zipf};
use serde::Serialize;

/// One logical operation of the load generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// `SET k v` (etcd: put).
    Set,
    /// `GET k` (etcd: linearizable range get).
    Get,
    /// `INCR n` on a separate counter key space (RESP only).
    Incr,
    /// `MSET {k}:a v {k}:b v`: two keys of one entity (etcd: a txn of two puts).
    Mset,
    /// `VGET k` then `VSET k v version` (etcd: get then txn on mod_revision).
    Cas,
}

impl OpKind {
    pub const ALL: [OpKind; 5] = [
        OpKind::Set,
        OpKind::Get,
        OpKind::Incr,
        OpKind::Mset,
        OpKind::Cas,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Set => "set",
            OpKind::Get => "get",
            OpKind::Incr => "incr",
            OpKind::Mset => "mset",
            OpKind::Cas => "cas",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn is_write(self) -> bool {
        !matches!(self, OpKind::Get)
    }

    fn parse(s: &str) -> Option<OpKind> {
        OpKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
    }
}

/// Weighted op mix, e.g. `set=50,get=50`.
#[derive(Clone, Debug)]
pub struct Mix {
    entries: Vec<(OpKind, u32)>,
    total: u32,
}

impl Mix {
    pub fn parse(s: &str) -> Result<Mix, String> {
        let mut entries = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = match part.split_once('=') {
                Some((n, w)) => (
                    n.trim(),
                    w.trim()
                        .parse::<u32>()
                        .map_err(|_| format!("bad weight in mix entry '{part}'"))?,
                ),
                None => (part, 1),
            };
            let kind = OpKind::parse(name)
                .ok_or_else(|| format!("unknown op '{name}' (use set, get, incr, mset, cas)"))?;
            if weight > 0 {
                entries.push((kind, weight));
            }
        }
        let total: u32 = entries.iter().map(|e| e.1).sum();
        if total == 0 {
            return Err("the op mix is empty".into());
        }
        Ok(Mix { entries, total })
    }

    pub fn pick<R: Rng>(&self, rng: &mut R) -> OpKind {
        if self.entries.len() == 1 {
            return self.entries[0].0;
        }
        let mut x = rng.gen_range(0..self.total);
        for &(k, w) in &self.entries {
            if x < w {
                return k;
            }
            x -= w;
        }
        self.entries[self.entries.len() - 1].0
    }

    pub fn kinds(&self) -> impl Iterator<Item = OpKind> + '_ {
        self.entries.iter().map(|e| e.0)
    }

    pub fn describe(&self) -> String {
        self.entries
            .iter()
            .map(|(k, w)| format!("{}={}", k.name(), w))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn only(&self, kind: OpKind) -> bool {
        self.entries.iter().all(|e| e.0 == kind)
    }
}

/// Key index distribution over `0..keys`.
#[derive(Clone, Debug)]
pub enum KeyDist {
    Uniform(u64),
    /// Zipfian with skew `s`; index 0 is the hottest key.
    Zipf(Zipf<f64>, u64),
}

impl KeyDist {
    pub fn new(dist: &str, keys: u64, skew: f64) -> Result<KeyDist, String> {
        if keys == 0 {
            return Err("--keys must be at least 1".into());
        }
        match dist {
            "uniform" => Ok(KeyDist::Uniform(keys)),
            "zipf" | "zipfian" => Zipf::new(keys, skew)
                .map(|z| KeyDist::Zipf(z, keys))
                .map_err(|e| format!("bad zipf parameters: {e}")),
            other => Err(format!(
                "unknown key distribution '{other}' (uniform or zipf)"
            )),
        }
    }

    pub fn sample<R: Rng>(&self, rng: &mut R) -> u64 {
        match self {
            KeyDist::Uniform(n) => rng.gen_range(0..*n),
            KeyDist::Zipf(z, n) => {
                let v = z.sample(rng) as u64;
                v.saturating_sub(1).min(n - 1)
            }
        }
    }
}

/// Key names. Plain keys `k<i>`; counters `n<i>` (INCR needs integer values);
/// MSET pairs `{k<i>}:a {k<i>}:b` (same entity as `k<i>` via the hash tag);
/// verify-mode keys `v<client>:<i>` (one writer per key).
pub fn key(i: u64) -> String {
    format!("k{i}")
}

pub fn counter_key(i: u64) -> String {
    format!("n{i}")
}

pub fn mset_keys(i: u64) -> (String, String) {
    (format!("{{k{i}}}:a"), format!("{{k{i}}}:b"))
}

pub fn verify_key(client: usize, i: u64) -> String {
    format!("v{client}:{i}")
}

/// A value of `size` bytes that starts with `seq` in 16 hex digits (when it fits),
/// so a read-back can tell which write it came from.
pub fn value(seq: u64, size: usize) -> Vec<u8> {
    let mut v = format!("{seq:016x}").into_bytes();
    v.resize(size.max(1), b'x');
    v.truncate(size.max(1));
    v
}

/// The sequence number embedded by [`value`], if any.
pub fn value_seq(v: &[u8]) -> Option<u64> {
    if v.len() < 16 {
        return None;
    }
    std::str::from_utf8(&v[..16])
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn mix_parses_and_picks() {
        let m = Mix::parse("set=1,get=3").unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let gets = (0..10_000)
            .filter(|_| m.pick(&mut rng) == OpKind::Get)
            .count();
        assert!((7000..8000).contains(&gets), "{gets}");
        assert!(Mix::parse("bogus=1").is_err());
        assert!(Mix::parse("set=0").is_err());
        assert_eq!(Mix::parse("get").unwrap().describe(), "get=1");
    }

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let d = KeyDist::new("zipf", 1000, 0.99).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut hot = 0;
        for _ in 0..10_000 {
            let k = d.sample(&mut rng);
            assert!(k < 1000);
            if k < 10 {
                hot += 1;
            }
        }
        // With s=0.99 over 1000 keys the 10 hottest keys take about 39 % of draws.
        assert!(hot > 3000, "{hot}");
    }

    #[test]
    fn values_carry_seq() {
        let v = value(0xabc, 100);
        assert_eq!(v.len(), 100);
        assert_eq!(value_seq(&v), Some(0xabc));
        assert_eq!(value(1, 4).len(), 4);
    }
}
