//! Per-tenant fairness: one tenant may not crowd out the others.
//!
//! The rule is *virtual partitioning* (Borst & Mitra, "Virtual
//! partitioning for robust resource sharing", IEEE JSAC 1998): every
//! tenant has a nominal share of the limit `L`. One within its share is
//! admitted whenever the gate has room; one at or over its share only while
//! it leaves a *headroom* of free slots for the others (`headroom.rs`). So
//! the gate is shared max-min: a tenant asking for less than its share gets
//! all it asks for, the heavy tenants share what the light ones leave, and
//! nothing beyond the headroom is held idle for anyone. The rule applies
//! only while the tenants are *contended*: someone within their share (or
//! carrying no tenant) was refused or queued within the contention window,
//! or asked for a slot with the gate within one share of full (so a rule
//! that works, and leaves nobody within their share refused, does not
//! lapse and let the heavy tenant back in). A tenant's own refusals while
//! over its share are not contention, so a tenant alone gets the whole
//! limit.
//!
//! The share is set by `max_share`:
//!
//! - **auto** (the default; `1.0`, since a share of the whole limit would
//!   never bind): the equal share of the tenants holding slots and one
//!   newcomer, `s = L / (n + 1)`, the quantum every active party gets in
//!   max-min fair allocators such as Doorman's `FairShare` (YouTube's
//!   global rate limiter) and deficit round robin (Shreedhar & Varghese,
//!   1995). A tenant is over it once it holds `s + 2√s` slots: counts are
//!   instantaneous, and one that asks for `s` on average holds more at
//!   times (one averaging a single slot holds three 8 % of the time); two
//!   standard deviations of a Poisson count keep such a tenant light. Its
//!   headroom is sized to the others' slots in flight: 5 slots when they
//!   hold 40 % of the gate.
//! - **a fraction below 1.0**: share and headroom are both
//!   `floor(L × max_share)`, fixed, as before auto existed.
//!
//! In the simulated tenant flood (one tenant sending 80 % of twice the
//! capacity, twenty sharing the rest) auto serves the twenty 99.4–99.5 % of
//! what they send with the upstream at 0.98–1.0 of its capacity behind
//! AIMD; with no rule they got 49 %.
//!
//! **Counting.** Auto counts a tenant's slots only while the tenants are
//! contended or someone was refused within the contention window: while
//! nobody is refused, an admission does no table work at all. When a
//! refusal starts the counting, the slots already held were not counted,
//! so for two smoothed request durations (until those have mostly
//! finished) a tenant's refusal is not read as contention. A fixed share
//! counts every slot from the start.
//!
//! **Memory.** A tenant id is attacker-controlled: a client can send a
//! million random ids. The table keeps an entry only while that tenant holds
//! a counted slot, so it never has more entries than the limit, and keys are
//! a keyed (per-process random) 64-bit hash, so no id string is stored and a
//! hostile client cannot aim a collision at another tenant. (Ids invented
//! per request do buy their sender a share each: no per-id rule can tell
//! them from real tenants.)

use super::config::TenantSpec;
use super::headroom::headroom;
use crate::clock::{duration_nanos, Nanos, Stamp};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// A tenant's key: a keyed hash of its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantKey(u64);

#[cfg(test)]
impl TenantKey {
    /// A key with a chosen value, for tests of the tables keyed by it.
    pub(super) fn for_test(v: u64) -> Self {
        TenantKey(v)
    }
}

/// Hashes a [`TenantKey`] to itself. The key is already a keyed 64-bit
/// hash of the id, uniform and unknown to clients, so the table's default
/// hasher (SipHash again, on every lookup, insert and removal) bought
/// nothing and cost 30 % of an admission with a tenant cap (112 against
/// 78.5 ns: BENCHMARKS.md, "The tenant table's second hash").
#[derive(Default)]
pub(super) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn write(&mut self, bytes: &[u8]) {
        // `TenantKey`'s `Hash` writes one u64 (above); this is only for
        // completeness, and folds whatever it is given.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}

/// The hasher of every table keyed by [`TenantKey`].
pub(super) type ByKey = BuildHasherDefault<KeyHasher>;

/// How many smoothed request durations auto waits after counting starts
/// before it judges shares: the uncounted slots have mostly finished by
/// then.
const COUNT_SETTLE: u32 = 2;

/// How the share is set.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Share {
    /// The fair share of the tenants holding slots.
    Auto,
    /// This fraction of the limit.
    Fixed(f64),
}

/// The tenants that hold counted slots, and the sharing rule.
#[derive(Debug)]
pub(super) struct Tenants {
    hasher: RandomState,
    inflight: DashMap<TenantKey, u32, ByKey>,
    /// Entries in `inflight`, kept beside it: the map's own `len` locks
    /// every shard.
    holders: AtomicUsize,
    share: Share,
    /// The contention window in nanoseconds.
    window: u64,
    /// When someone within their share was last refused or queued, or
    /// asked for a slot with the gate within one share of full.
    last_contention: Stamp,
    /// When anyone was last refused or queued (auto counts while this is
    /// within the window).
    last_refusal: Stamp,
    /// From when auto's counts are complete enough to judge shares.
    settled_from: AtomicU64,
}

impl Tenants {
    /// The tenant part of a limiter.
    pub(super) fn new(spec: &TenantSpec) -> Self {
        Self {
            hasher: RandomState::new(),
            inflight: DashMap::default(),
            holders: AtomicUsize::new(0),
            share: if spec.max_share < 1.0 {
                Share::Fixed(spec.max_share)
            } else {
                Share::Auto
            },
            window: duration_nanos(spec.contention_window),
            last_contention: Stamp::never(),
            last_refusal: Stamp::never(),
            settled_from: AtomicU64::new(0),
        }
    }

    /// The key of the tenant with this id.
    pub(super) fn key(&self, tenant: &str) -> TenantKey {
        TenantKey(self.hasher.hash_one(tenant))
    }

    /// Whether a slot taken now is counted against its tenant. Always with
    /// a fixed share; with auto, only while someone was refused within the
    /// window or the tenants are contended.
    #[inline]
    pub(super) fn counting(&self, now: Nanos) -> bool {
        match self.share {
            Share::Fixed(_) => true,
            Share::Auto => self.last_refusal.within(self.window, now) || self.contended(now),
        }
    }

    /// The count at which one tenant is over its share at `limit`: at
    /// least 1, at most `limit`. With auto, `s + 2√s` for the equal share
    /// `s = L / (n + 1)` (see the module doc).
    pub(super) fn cap(&self, limit: usize) -> usize {
        let cap = match self.share {
            Share::Fixed(f) => (limit as f64 * f) as usize,
            Share::Auto => {
                let fair = limit as f64 / (self.holders.load(Ordering::Relaxed) + 1) as f64;
                (fair + 2.0 * fair.sqrt()).ceil() as usize
            }
        };
        cap.clamp(1, limit.max(1))
    }

    /// The slots a tenant holding `held` of the `inflight` must leave free
    /// when at or over its cap at `limit` (see the module doc).
    pub(super) fn headroom(&self, limit: usize, held: usize, inflight: usize) -> usize {
        match self.share {
            Share::Fixed(_) => self.cap(limit),
            Share::Auto => headroom(inflight.saturating_sub(held), inflight, limit),
        }
    }

    /// Whether the rule applies at `now`.
    pub(super) fn contended(&self, now: Nanos) -> bool {
        self.last_contention.within(self.window, now)
    }

    /// The count at which `key` is refused now, if the rule applies to it:
    /// only under contention, and only once the gate is within `key`'s
    /// headroom of full. Below that a tenant over its share may still take
    /// free slots, so the rule never leaves more than the headroom idle.
    /// `inflight` (the gate's total) is read only under contention. A
    /// tenant within its share asking near full keeps contention alive.
    #[inline]
    pub(super) fn bound(
        &self,
        key: TenantKey,
        limit: usize,
        inflight: impl FnOnce() -> usize,
        now: Nanos,
    ) -> Option<usize> {
        if !self.contended(now) {
            return None;
        }
        let cap = self.cap(limit);
        let held = self.held(key);
        let inflight = inflight();
        if held < cap {
            // Within its share and near full: it is about to take a slot
            // the rule kept free, which is what contention means. Without
            // this, a rule that works (nobody within their share refused)
            // would lapse, and the heavy tenant fill the gate again.
            if inflight + 1 + cap > limit {
                self.last_contention.refresh(now, self.window / 8);
            }
            return Some(cap);
        }
        (inflight + 1 + self.headroom(limit, held, inflight) > limit).then_some(cap)
    }

    /// Whether `key` holds at least `bound`, when a bound applies.
    #[inline]
    pub(super) fn over(&self, key: TenantKey, bound: Option<usize>) -> bool {
        bound.is_some_and(|b| self.held(key) >= b)
    }

    /// Someone is refused or queued at `limit` (`rtt` the smoothed request
    /// duration): if they are within their share (or carry no tenant),
    /// that is contention, and the rule applies to the tenants over theirs.
    pub(super) fn note_waiting(
        &self,
        tenant: Option<TenantKey>,
        limit: usize,
        rtt: Duration,
        now: Nanos,
    ) {
        if self.share == Share::Auto {
            if !self.last_refusal.within(self.window, now) {
                let settle = duration_nanos(rtt.saturating_mul(COUNT_SETTLE));
                self.settled_from
                    .store(now.0.saturating_add(settle), Ordering::Relaxed);
            }
            // Refusals come in storms: skip the store while the mark is
            // fresh, as the classes' marks do.
            self.last_refusal.refresh(now, self.window / 8);
        }
        let entitled = match tenant {
            None => true,
            Some(k) => self.settled(now) && self.held(k) < self.cap(limit),
        };
        if entitled {
            self.last_contention.refresh(now, self.window / 8);
        }
    }

    /// Whether the counts cover (nearly) every slot held.
    fn settled(&self, now: Nanos) -> bool {
        now.0 >= self.settled_from.load(Ordering::Relaxed)
    }

    /// The counted slots `key` holds now.
    pub(super) fn held(&self, key: TenantKey) -> usize {
        self.inflight.get(&key).map_or(0, |n| *n as usize)
    }

    /// Counts one slot for `key` unless it already holds `bound`, which
    /// is `None` when no bound applies right now.
    pub(super) fn try_take(&self, key: TenantKey, bound: Option<usize>) -> bool {
        match self.inflight.entry(key) {
            Entry::Occupied(mut e) => {
                if bound.is_some_and(|b| *e.get() as usize >= b) {
                    return false;
                }
                *e.get_mut() += 1;
            }
            Entry::Vacant(e) => {
                e.insert(1);
                self.holders.fetch_add(1, Ordering::Relaxed);
            }
        }
        true
    }

    /// Gives one counted slot of `key` back, removing the entry at zero.
    pub(super) fn give_back(&self, key: TenantKey) {
        let removed = self.inflight.remove_if_mut(&key, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
        if removed.is_some() {
            self.holders.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// How many tenants hold at least one counted slot.
    pub(super) fn active(&self) -> usize {
        self.holders.load(Ordering::Relaxed)
    }
}
