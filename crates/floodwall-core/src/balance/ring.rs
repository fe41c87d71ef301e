//! A consistent-hash ring, ketama-compatible (libketama, Richard Jones,
//! last.fm, 2007; the scheme memcached clients and Twemproxy's `ketama`
//! distribution use).
//!
//! **The scheme.** Each endpoint, by its name, gets 160 points on a ring of
//! `u32`: for `i` in `0..40`, the MD5 digest of `"{name}-{i}"` gives four
//! little-endian `u32` points (bytes 0–3, 4–7, 8–11, 12–15), as libketama
//! does for equal weights. A key's point is the first four bytes of the MD5
//! of the key, little-endian (libketama's `ketama_hashi`); its owner is the
//! endpoint of the first point at or after it, wrapping at the top.
//! Adding one endpoint to `N` moves only the keys that fall on its new
//! points, about `1/(N+1)` of them, and moves them only *to* the new one.
//!
//! **Why our own 60 lines, not a crate.** Ketama is short and fully
//! specified by libketama's source, so the same names give the same owners
//! as any ketama client, and its hash (MD5) is stable everywhere, so two
//! replicas built apart agree on every owner (Rust's `DefaultHasher` is not
//! stable across releases). No survey of ring crates was made for this
//! change: one that states its scheme could replace this file behind the
//! same two functions.
//! MD5 here is a spreading function, not a security boundary.

use md5::{Digest, Md5};

/// Points per endpoint: 40 MD5 digests of four points each (libketama).
pub const POINTS_PER_ENDPOINT: usize = 160;

/// A key's hashes: the ring point and a 64-bit identity for tracking the
/// key while it is in flight (both from one MD5 of the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash {
    /// Where the key falls on the ring (libketama's `ketama_hashi`).
    pub point: u32,
    /// The key's identity in the in-flight table (digest bytes 0–7).
    pub id: u64,
}

impl KeyHash {
    /// The hashes of `key`.
    pub fn of(key: &[u8]) -> Self {
        let d = Md5::digest(key);
        let mut id = [0u8; 8];
        id.copy_from_slice(&d[..8]);
        Self {
            point: u32::from_le_bytes([d[0], d[1], d[2], d[3]]),
            id: u64::from_le_bytes(id),
        }
    }
}

/// A ketama ring over endpoints named by their index in the member list.
#[derive(Debug, Clone)]
pub struct Ring {
    /// (point, endpoint index), sorted by point then index.
    points: Vec<(u32, u32)>,
    endpoints: usize,
}

impl Ring {
    /// The ring of `names` (endpoint `i` is `names[i]`).
    pub fn new<S: AsRef<str>>(names: &[S]) -> Self {
        let mut points = Vec::with_capacity(names.len() * POINTS_PER_ENDPOINT);
        for (index, name) in names.iter().enumerate() {
            for i in 0..POINTS_PER_ENDPOINT / 4 {
                let d = Md5::digest(format!("{}-{i}", name.as_ref()).as_bytes());
                for h in 0..4 {
                    let p =
                        u32::from_le_bytes([d[h * 4], d[h * 4 + 1], d[h * 4 + 2], d[h * 4 + 3]]);
                    points.push((p, index as u32));
                }
            }
        }
        points.sort_unstable();
        Self {
            points,
            endpoints: names.len(),
        }
    }

    /// The owner of `point`: the endpoint of the first ring point at or
    /// after it (wrapping), skipping endpoints `usable` refuses (ejected
    /// ones) by walking on clockwise. `None` only for an empty ring; if no
    /// endpoint is usable, the first owner is returned anyway.
    pub fn owner(&self, point: u32, usable: impl Fn(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let start = self.points.partition_point(|(p, _)| *p < point);
        let n = self.points.len();
        let first = self.points[start % n].1 as usize;
        let mut tried = 0usize;
        let mut seen = vec![false; self.endpoints];
        for k in 0..n {
            let e = self.points[(start + k) % n].1 as usize;
            if seen[e] {
                continue;
            }
            if usable(e) {
                return Some(e);
            }
            seen[e] = true;
            tried += 1;
            if tried == self.endpoints {
                break;
            }
        }
        Some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{}:8080", i + 1)).collect()
    }

    #[test]
    fn adding_a_fifth_endpoint_moves_about_a_fifth_of_5000_keys_and_only_to_it() {
        let four = Ring::new(&names(4));
        let five = Ring::new(&names(5));
        let mut moved = 0;
        for k in 0..5000 {
            let h = KeyHash::of(format!("tenant-{k}").as_bytes());
            let a = four.owner(h.point, |_| true).unwrap();
            let b = five.owner(h.point, |_| true).unwrap();
            if a != b {
                assert_eq!(b, 4, "a moved key goes to the new endpoint only");
                moved += 1;
            }
        }
        let share = moved as f64 / 5000.0;
        eprintln!("ketama, 5,000 keys, 4 -> 5 endpoints: {moved} moved ({share:.4})");
        assert!((0.18..=0.22).contains(&share), "moved {share}");
    }

    #[test]
    fn an_unusable_owner_hands_its_keys_on_and_others_keep_theirs() {
        let ring = Ring::new(&names(4));
        for k in 0..1000 {
            let h = KeyHash::of(format!("k{k}").as_bytes());
            let owner = ring.owner(h.point, |_| true).unwrap();
            let without_2 = ring.owner(h.point, |e| e != 2).unwrap();
            if owner != 2 {
                assert_eq!(owner, without_2);
            } else {
                assert_ne!(without_2, 2);
            }
            assert_eq!(ring.owner(h.point, |_| false), Some(owner));
        }
        assert_eq!(Ring::new::<String>(&[]).owner(5, |_| true), None);
    }

    #[test]
    fn the_points_are_libketamas() {
        // libketama: the first point of server "a-0" is the little-endian
        // u32 of MD5("a-0")[0..4].
        let d = Md5::digest(b"a-0");
        let p = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        let ring = Ring::new(&["a"]);
        assert!(ring.points.iter().any(|(q, _)| *q == p));
        assert_eq!(ring.points.len(), POINTS_PER_ENDPOINT);
    }
}
