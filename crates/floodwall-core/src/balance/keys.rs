//! Keys in flight, for the graceful drain of `balance = "hash"`: which
//! endpoints hold a request for a key right now.
//!
//! When membership changes, a key's ring owner may change while the old
//! owner still works on it (the pitfall of sharding by key: the same work
//! in flight on two instances, done twice). So a request for a key that is
//! in flight somewhere goes where it is in flight, until that endpoint has
//! none left for it or `drain_timeout` has passed since the move was first
//! seen; only then does the key move to its new owner.
//!
//! Only keys in flight have an entry: the last release removes it, so the
//! table's size is bounded by the requests in flight, not by how many
//! distinct keys were ever seen.

use crate::clock::Nanos;
use dashmap::DashMap;
use std::time::Duration;

#[derive(Debug, Default)]
struct Entry {
    /// (endpoint id, requests in flight for this key there); usually one.
    holders: Vec<(u64, u32)>,
    /// When a request first found the key held away from its owner, and
    /// which owner that was: a later change of owner starts a new drain.
    moved_at: Option<(Nanos, u64)>,
}

/// The keys in flight and where.
#[derive(Debug, Default)]
pub(super) struct KeyTable {
    map: DashMap<u64, Entry>,
}

impl KeyTable {
    /// Decides where a request for `key` goes and counts it there, in one
    /// step under the key's lock (so two requests for one key cannot both
    /// decide before either is counted). `owner` is the key's ring owner;
    /// `alive` says whether an endpoint id may still take requests (a
    /// member, or a leaving endpoint within its drain).
    pub(super) fn hold(
        &self,
        key: u64,
        owner: u64,
        now: Nanos,
        drain: Duration,
        alive: impl Fn(u64) -> bool,
    ) -> u64 {
        let mut e = self.map.entry(key).or_default();
        let held_by_owner = e.holders.iter().any(|(id, _)| *id == owner);
        let elsewhere = e
            .holders
            .iter()
            .filter(|(id, n)| *n > 0 && *id != owner && alive(*id))
            .map(|(id, _)| *id)
            .next();
        let chosen = match (held_by_owner, elsewhere) {
            (false, Some(old)) => {
                let since = match e.moved_at {
                    Some((at, to)) if to == owner => at,
                    _ => {
                        e.moved_at = Some((now, owner));
                        now
                    }
                };
                if now.since(since) < drain {
                    old
                } else {
                    owner
                }
            }
            _ => {
                // No move pending (nothing held away from the owner): a
                // later membership change starts its own drain. Keeping
                // the old mark while the key stayed in flight made the
                // next change move it at once, onto a second instance.
                if elsewhere.is_none() {
                    e.moved_at = None;
                }
                owner
            }
        };
        match e.holders.iter_mut().find(|(id, _)| *id == chosen) {
            Some((_, n)) => *n += 1,
            None => e.holders.push((chosen, 1)),
        }
        chosen
    }

    /// A request for `key` on `endpoint` finished.
    pub(super) fn release(&self, key: u64, endpoint: u64) {
        if let Some(mut e) = self.map.get_mut(&key) {
            if let Some(i) = e.holders.iter().position(|(id, _)| *id == endpoint) {
                e.holders[i].1 -= 1;
                if e.holders[i].1 == 0 {
                    e.holders.swap_remove(i);
                }
            }
        }
        self.map.remove_if(&key, |_, e| e.holders.is_empty());
    }

    /// Keys with a request in flight.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAIN: Duration = Duration::from_secs(10);

    #[test]
    fn a_key_stays_where_it_is_in_flight_until_it_drains() {
        let t = KeyTable::default();
        let now = Nanos(0);
        assert_eq!(t.hold(7, 1, now, DRAIN, |_| true), 1);
        // The owner changes to 2 while 1 still has the key.
        assert_eq!(t.hold(7, 2, now, DRAIN, |_| true), 1);
        t.release(7, 1);
        assert_eq!(t.hold(7, 2, now, DRAIN, |_| true), 1, "one still in flight");
        t.release(7, 1);
        t.release(7, 1);
        assert_eq!(t.len(), 0);
        assert_eq!(t.hold(7, 2, now, DRAIN, |_| true), 2, "drained: moves");
        t.release(7, 2);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn after_drain_timeout_the_key_moves_anyway() {
        let t = KeyTable::default();
        assert_eq!(t.hold(7, 1, Nanos(0), DRAIN, |_| true), 1);
        assert_eq!(t.hold(7, 2, Nanos(1), DRAIN, |_| true), 1);
        let late = Nanos(1).plus(DRAIN);
        assert_eq!(t.hold(7, 2, late, DRAIN, |_| true), 2);
        assert_eq!(
            t.hold(7, 2, late, DRAIN, |_| true),
            2,
            "the owner has it now"
        );
    }

    #[test]
    fn a_second_change_gets_a_drain_of_its_own() {
        let t = KeyTable::default();
        // Owner 1 to 2, and 1 never drains: the key moves at the timeout,
        // while 1 still has it.
        assert_eq!(t.hold(7, 1, Nanos(0), DRAIN, |_| true), 1);
        assert_eq!(t.hold(7, 2, Nanos(1), DRAIN, |_| true), 1);
        let moved = Nanos(1).plus(DRAIN);
        assert_eq!(t.hold(7, 2, moved, DRAIN, |_| true), 2);
        t.release(7, 1);
        t.release(7, 1);
        // The key stays in flight on 2 without a break, then the owner
        // changes to 3 long after: it stays on 2 for a drain of its own,
        // not moved at once on the first change's mark.
        let later = moved.plus(DRAIN).plus(DRAIN);
        assert_eq!(t.hold(7, 2, later, DRAIN, |_| true), 2);
        t.release(7, 2);
        assert_eq!(
            t.hold(7, 3, later, DRAIN, |_| true),
            2,
            "still in flight on 2"
        );
    }

    #[test]
    fn a_new_owner_starts_a_new_drain() {
        let t = KeyTable::default();
        assert_eq!(t.hold(7, 1, Nanos(0), DRAIN, |_| true), 1);
        // Owner 1 to 2, and 1 stays busy.
        assert_eq!(t.hold(7, 2, Nanos(1), DRAIN, |_| true), 1);
        // Long after, the owner changes again, to 3: the key still drains
        // on 1 instead of moving at once on the mark made for 2.
        let later = Nanos(1).plus(DRAIN).plus(DRAIN);
        assert_eq!(t.hold(7, 3, later, DRAIN, |_| true), 1);
        assert_eq!(t.hold(7, 3, later.plus(DRAIN), DRAIN, |_| true), 3);
    }

    #[test]
    fn a_gone_endpoint_holds_nothing() {
        let t = KeyTable::default();
        assert_eq!(t.hold(7, 1, Nanos(0), DRAIN, |_| true), 1);
        assert_eq!(t.hold(7, 2, Nanos(0), DRAIN, |id| id != 1), 2);
        t.release(7, 1);
        t.release(7, 2);
        t.release(7, 2); // an extra release is harmless
        assert_eq!(t.len(), 0);
    }
}
