//! How big each replica's share is: pure arithmetic, no Redis, no clock.
//!
//! The renew loop feeds it what it observed (peak in flight, refusals) and
//! what time it is; it answers with a demand to publish and the share to
//! fall back to while Redis is unreachable. The fair shares themselves are
//! computed in Redis by `lease.lua`, at most once per [`fill_interval`],
//! with the arithmetic of [`water_fill`] (tests/store.rs checks the two
//! agree on random demands), and the script caps each grant atomically so
//! that the sum of what replicas may hold never exceeds the global limit.

use std::time::Duration;

use crate::config::StoreFailure;

/// Max-min fair split of `global` slots over `demands` (water-filling):
/// the reference for `lease.lua`'s fill, which must give the same answer
/// over the demands in id order.
///
/// Every member gets `min(demand, level)`, with `level` raised until the
/// slots run out; what is left once every demand is met is spread evenly,
/// so idle capacity is parked somewhere useful rather than nowhere. Ties
/// and remainders go to the lower index, so every replica computing this
/// from the same inputs gets the same answer. The result always sums to
/// `global` when there is at least one member.
pub fn water_fill(global: usize, demands: &[usize]) -> Vec<usize> {
    let n = demands.len();
    let mut out = vec![0; n];
    if n == 0 {
        return out;
    }
    let mut left = global;
    // Members whose demand is not met yet, in index order.
    let mut open: Vec<usize> = (0..n).collect();
    loop {
        if open.is_empty() || left == 0 {
            break;
        }
        let level = left / open.len();
        let (met, unmet): (Vec<usize>, Vec<usize>) =
            open.iter().partition(|&&i| demands[i] - out[i] <= level);
        if met.is_empty() {
            // Nobody can be satisfied: everyone gets the level, the
            // remainder goes one each to the first members.
            let extra = left - level * open.len();
            for (k, &i) in open.iter().enumerate() {
                out[i] += level + usize::from(k < extra);
            }
            left = 0;
            break;
        }
        for &i in &met {
            left -= demands[i] - out[i];
            out[i] = demands[i];
        }
        open = unmet;
    }
    if left > 0 {
        // Every demand is met: spread the rest evenly.
        let level = left / n;
        let extra = left % n;
        for (i, o) in out.iter_mut().enumerate() {
            *o += level + usize::from(i < extra);
        }
    }
    out
}

/// How often Redis recomputes the fair shares (`lease.lua`'s fill): half
/// the renew interval, so a changed demand is in the shares by the next
/// renewal of every replica, at least 10 ms.
///
/// Not on every call: a fill reads every member, so at every call the
/// route's cost grew with the square of its replicas (about 1 ms a call at
/// 1,000 members, saturating Redis at a 200 ms renewal); once per interval
/// it grows linearly (BENCHMARKS.md, "Lease protocol at 1,000 replicas").
pub fn fill_interval(renew_interval: Duration) -> Duration {
    (renew_interval / 2).max(Duration::from_millis(10))
}

/// What a replica asks for, from what it saw since its last renewal.
///
/// - Refused for lack of room (or queued): it could use everything its own
///   algorithm allows, capped at the global limit.
/// - Otherwise: its peak in flight with 25 % + 1 headroom, so that growing
///   load is seen before it is refused, and an idle replica (peak 0) still
///   asks for 1 and gives the rest back.
///
/// Then capped by the join ramp.
pub fn demand(
    peak_inflight: usize,
    refused: bool,
    algorithm_limit: usize,
    global: usize,
    ramp_cap: usize,
) -> usize {
    let want = if refused {
        algorithm_limit.max(peak_inflight + 1)
    } else {
        peak_inflight + peak_inflight.div_ceil(4) + 1
    };
    want.min(global).min(ramp_cap)
}

/// The most a replica that joined `since_join` ago may demand: the global
/// limit scaled by the elapsed fraction of `join_ramp`, at least 1. A joining
/// replica thus takes capacity from busy ones gradually (the "Cold Starts"
/// section of the Phoenix WIP-gate article); slots nobody wants are still
/// spread to it by [`water_fill`].
pub fn ramp_cap(global: usize, since_join: Duration, join_ramp: Duration) -> usize {
    if join_ramp.is_zero() || since_join >= join_ramp {
        return global;
    }
    let f = since_join.as_secs_f64() / join_ramp.as_secs_f64();
    ((global as f64 * f).ceil() as usize).clamp(1, global.max(1))
}

/// The share to use without Redis: the global limit ÷ the last known
/// replica count, at least 1 (a replica that cannot serve at all is the
/// self-inflicted outage the failure policy exists to avoid).
///
/// `None`: this replica has never had an answer, so it knows neither how
/// many replicas there are nor holds a lease anyone else counts. It then
/// serves 1 at a time, as a Doorman client without a lease serves no more
/// than its safe capacity: assuming it was alone let each of a scale-up's
/// new replicas whose first renewal timed out admit the whole global
/// limit on top of what the others hold.
pub fn fallback_share(global: usize, replicas: Option<usize>) -> usize {
    match replicas {
        Some(n) => (global / n.max(1)).max(1),
        None => 1,
    }
}

/// The share to apply while Redis is unreachable, under `policy`.
///
/// `lease_left` is how long the last grant is still ours: Redis counts it
/// against the others until our lease expires there, so keeping it is
/// exact. `None` lifts the share (local limits only).
pub fn failure_share(
    policy: StoreFailure,
    last_grant: Option<usize>,
    lease_left: Duration,
    global: usize,
    last_replicas: Option<usize>,
) -> Option<usize> {
    match policy {
        StoreFailure::Open => None,
        StoreFailure::Closed => Some(0),
        StoreFailure::Local => match last_grant {
            Some(g) if !lease_left.is_zero() => Some(g),
            _ => Some(fallback_share(global, last_replicas)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn water_fill_meets_small_demands_and_splits_the_rest() {
        assert_eq!(water_fill(12, &[2, 12, 12]), vec![2, 5, 5]);
        assert_eq!(water_fill(12, &[12, 12, 12]), vec![4, 4, 4]);
        assert_eq!(water_fill(12, &[12, 12, 12, 12, 12]), vec![3, 3, 2, 2, 2]);
        // Everyone satisfied: the 4 left over are spread evenly.
        assert_eq!(water_fill(12, &[1, 3, 4]), vec![3, 4, 5]);
        assert_eq!(water_fill(12, &[0]), vec![12]);
        assert_eq!(water_fill(12, &[]), Vec::<usize>::new());
        assert_eq!(water_fill(2, &[5, 5, 5]), vec![1, 1, 0]);
    }

    #[test]
    fn demand_follows_load_and_refusals() {
        assert_eq!(demand(0, false, 12, 12, 12), 1, "idle gives back");
        assert_eq!(demand(4, false, 12, 12, 12), 6, "4 + 25 % + 1");
        assert_eq!(demand(4, true, 12, 12, 12), 12, "refused: wants all");
        assert_eq!(demand(4, true, 50, 12, 12), 12, "never above global");
        assert_eq!(demand(4, true, 12, 12, 3), 3, "ramp caps it");
    }

    #[test]
    fn ramp_rises_linearly_to_global() {
        let r = Duration::from_secs(4);
        assert_eq!(ramp_cap(12, Duration::ZERO, r), 1);
        assert_eq!(ramp_cap(12, Duration::from_secs(1), r), 3);
        assert_eq!(ramp_cap(12, Duration::from_secs(2), r), 6);
        assert_eq!(ramp_cap(12, Duration::from_secs(9), r), 12);
        assert_eq!(ramp_cap(12, Duration::from_secs(1), Duration::ZERO), 12);
    }

    #[test]
    fn failure_policies() {
        let s = Duration::from_secs(1);
        use StoreFailure::*;
        let three = Some(3);
        assert_eq!(failure_share(Local, Some(5), s, 12, three), Some(5));
        assert_eq!(
            failure_share(Local, Some(5), Duration::ZERO, 12, three),
            Some(4)
        );
        assert_eq!(failure_share(Local, None, s, 12, three), Some(4));
        assert_eq!(
            failure_share(Local, None, s, 2, three),
            Some(1),
            "at least 1"
        );
        assert_eq!(
            failure_share(Local, None, s, 12, None),
            Some(1),
            "never answered: not the whole global limit"
        );
        assert_eq!(failure_share(Open, Some(5), s, 12, three), None);
        assert_eq!(failure_share(Closed, Some(5), s, 12, three), Some(0));
    }

    proptest! {
        #[test]
        fn water_fill_is_fair_and_exact(
            global in 0usize..200,
            demands in proptest::collection::vec(0usize..100, 0..12),
        ) {
            let out = water_fill(global, &demands);
            prop_assert_eq!(out.len(), demands.len());
            if !demands.is_empty() {
                prop_assert_eq!(out.iter().sum::<usize>(), global);
            }
            let total: usize = demands.iter().sum();
            for (&o, &d) in out.iter().zip(&demands) {
                if total <= global {
                    prop_assert!(o >= d, "demand met when there is room");
                } else {
                    prop_assert!(o <= d, "nobody gets more than asked when short");
                    // Max-min: a member left short has at least as much as
                    // anyone else, less one for integer remainders.
                    if o < d {
                        prop_assert!(out.iter().all(|&x| x <= o + 1), "{:?} {:?}", out, demands);
                    }
                }
            }
        }

        #[test]
        fn demand_is_within_one_and_global(
            peak in 0usize..100, refused: bool, algo in 1usize..100,
            global in 1usize..100, ramp in 1usize..100,
        ) {
            let d = demand(peak, refused, algo, global, ramp);
            prop_assert!(d <= global && d <= ramp);
            prop_assert!(d >= 1);
        }
    }
}
