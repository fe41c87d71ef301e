//! How many free slots a protected party needs kept for it.
//!
//! Two rules hold slots back for someone: a tenant over its share leaves
//! some free for the other tenants (`tenants.rs`), and a lower class
//! borrowing while a higher one is wanting leaves some free for it
//! (`classes.rs`). Both are *trunk reservation*, the classic admission rule
//! of loss networks (Key, "Optimal control and trunk reservation in loss
//! networks", 1990): the unprotected party is admitted only while more
//! than `h` slots are free. Without a queue a protected request that finds
//! no free slot is refused, so `h` decides how often that happens; and
//! every slot of `h` is one the gate may leave idle. Strict priority is
//! `h = L`: nothing is lost to the other party, and everything the
//! protected one does not use is wasted.
//!
//! [`headroom`] is the smaller of two estimates of the least `h` that
//! leaves the protected party without a free slot rarely (about 1 % of the
//! time):
//!
//! 1. **The free slots as a birth–death chain.** Once the unprotected party
//!    keeps the gate `h` from full, each protected arrival takes a free
//!    slot and each release gives one back. With `ρ` the protected party's
//!    arrivals over all releases, which by Little's law is its part of the
//!    slots in flight when requests take alike long, the chain has none
//!    free a fraction `ρ^h (1 − ρ) / (1 − ρ^(h+1))` of the time (a truncated
//!    geometric distribution), and [`headroom_for`] finds the least `h`
//!    that makes it at most [`HEADROOM_MISS`]: 5 slots at `ρ = 0.4`, small
//!    tenants holding 40 % of the slots. As `ρ` nears 1 this grows without
//!    bound, and a small error in `ρ` becomes a large one in `h`.
//! 2. **Square-root staffing** (Halfin & Whitt, "Heavy-traffic limits for
//!    queues with many exponential servers", 1981; the rule behind every
//!    call-centre staffing table): a Poisson load of `R` slots on average
//!    is served with little loss by `R + β√R` slots, because its count
//!    strays about `√R` from the mean. The protected party holds its `R`
//!    already, so `β√R` more are its headroom, with `β` = [`SPREAD`]. This
//!    is the tighter bound when the protected party is most of the traffic:
//!    15 slots for interactive at 45 (90 % of the capacity), where the chain
//!    asks for 23 and, with `ρ` read a few percent high, for the whole gate.
//!
//! In the simulated priority spike (interactive 30 % of three times the
//! capacity, at a fixed limit of 64 against 50 workers) a fixed `h` of 10
//! kept 97.0 % of interactive, 14 kept 98.7 %, 20 kept 99.1 % but left
//! batch a third less. Behind an adaptive limit the slots held back cost
//! little: they make the upstream faster, and the limit rises until it is
//! busy again.

/// The most often, as a fraction of the time, that the chain of the
/// module doc should find every slot held back taken.
pub(super) const HEADROOM_MISS: f64 = 0.01;

/// Standard deviations of the protected party's count that square-root
/// staffing keeps free: `β`. A Normal's tail beyond 2.2 is 1.4 %. Chosen
/// over ten seeds of the simulated priority spike behind the default AIMD,
/// worst interactive served and worst upstream use: 2.0 gave 97.9 % and
/// 0.964 of capacity, 2.2 98.6 % and 0.978, 2.5 98.9 % and 0.967 (more
/// held back lowers the limit AIMD finds, and with it the upstream's use).
const SPREAD: f64 = 2.2;

/// The headroom a party holding `protected` of the `inflight` slots needs
/// at `limit`: the smaller of the module doc's two estimates, at least 1.
/// Only called on a contended path.
pub(super) fn headroom(protected: usize, inflight: usize, limit: usize) -> usize {
    let spread = (SPREAD * (protected as f64).sqrt()).ceil() as usize;
    let part = protected as f64 / inflight.max(1) as f64;
    spread.min(headroom_for(part, limit)).max(1)
}

/// The least headroom `h` (at least 1, at most `limit`) at which a party
/// holding the fraction `rho` of the slots in flight finds none free at
/// most [`HEADROOM_MISS`] of the time: `ρ^h (1 − ρ) / (1 − ρ^(h+1)) ≤
/// HEADROOM_MISS`. Only called on a contended path, so the loop (a few
/// dozen steps at most for any `rho` below 0.99) does not matter.
pub(super) fn headroom_for(rho: f64, limit: usize) -> usize {
    if rho.is_nan() || rho <= 0.0 {
        return 1;
    }
    let rho = rho.min(1.0);
    let mut power = rho; // ρ^h
    for h in 1..limit {
        let miss = if rho < 1.0 {
            power * (1.0 - rho) / (1.0 - power * rho)
        } else {
            1.0 / (h as f64 + 1.0)
        };
        if miss <= HEADROOM_MISS {
            return h;
        }
        power *= rho;
    }
    limit.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headroom_grows_with_the_protected_part() {
        assert_eq!(headroom_for(0.0, 100), 1);
        assert_eq!(headroom_for(0.4, 100), 5);
        assert_eq!(headroom_for(0.9, 100), 23);
        assert_eq!(headroom_for(1.0, 100), 99);
        assert_eq!(headroom_for(0.99, 10), 10, "never more than the limit");
        assert_eq!(headroom_for(0.5, 0), 1);
    }

    #[test]
    fn the_smaller_estimate_wins() {
        // Small tenants at 20 of 50: the chain's 5 beats 2.2 √20 = 10.
        assert_eq!(headroom(20, 50, 50), 5);
        // Interactive at 45 of 50: 2.2 √45 = 15 beats the chain's 49.
        assert_eq!(headroom(45, 50, 64), 15);
        // A party with the gate to itself is not given all of it.
        assert_eq!(headroom(45, 45, 75), 15);
        assert_eq!(headroom(0, 0, 10), 1);
        assert_eq!(headroom(1, 1, 1), 1);
    }
}
