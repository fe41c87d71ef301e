//! Per-tenant caps: one tenant may not crowd out the others.
//!
//! A tenant holding `floor(L × max_share)` slots or more is refused (429)
//! while someone under their share was refused or queued within the tenant
//! contention window *and* fewer than one share of slots is free: the cap
//! keeps a share free for the others, but never leaves the rest of the gate
//! idle. A tenant's own 429s do not count as contention.
//!
//! A tenant id is attacker-controlled: a client can send a million random
//! ids. The table therefore keeps an entry only while that tenant holds at
//! least one slot, so it never has more entries than the limit, and keys are
//! a keyed (per-process random) 64-bit hash, so no id string is stored and a
//! hostile client cannot aim a collision at another tenant.

use super::config::TenantSpec;
use crate::clock::{duration_nanos, Nanos, Stamp};
use dashmap::DashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// A tenant's key: a keyed hash of its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantKey(u64);

/// The tenants that hold slots, and the cap rule.
#[derive(Debug)]
pub(super) struct Tenants {
    hasher: RandomState,
    inflight: DashMap<TenantKey, u32>,
    max_share: f64,
    /// The contention window in nanoseconds.
    window: u64,
    /// When someone within their share was last refused or queued.
    last_entitled_refusal: Stamp,
}

impl Tenants {
    /// The tenant part of a limiter; `None` when caps are off
    /// (`max_share` 1.0), so a limiter without caps keeps no table.
    pub(super) fn new(spec: &TenantSpec) -> Option<Self> {
        (spec.max_share < 1.0).then(|| Self {
            hasher: RandomState::new(),
            inflight: DashMap::new(),
            max_share: spec.max_share,
            window: duration_nanos(spec.contention_window),
            last_entitled_refusal: Stamp::never(),
        })
    }

    /// The key of the tenant with this id.
    pub(super) fn key(&self, tenant: &str) -> TenantKey {
        TenantKey(self.hasher.hash_one(tenant))
    }

    /// The most slots one tenant may hold under contention at `limit`.
    pub(super) fn cap(&self, limit: usize) -> usize {
        ((limit as f64 * self.max_share) as usize).max(1)
    }

    /// Whether caps are enforced at `now`.
    pub(super) fn contended(&self, now: Nanos) -> bool {
        self.last_entitled_refusal.within(self.window, now)
    }

    /// The cap that applies to a new admission now, if any: only under
    /// contention, and only once the gate is within one share of full.
    /// Below that the tenant may still take free slots, so a cap never
    /// leaves capacity idle while one share stays free for the others.
    /// `inflight` (the gate's total) is read only under contention.
    #[inline]
    pub(super) fn cap_now(
        &self,
        limit: usize,
        inflight: impl FnOnce() -> usize,
        now: Nanos,
    ) -> Option<usize> {
        if !self.contended(now) {
            return None;
        }
        let cap = self.cap(limit);
        (inflight() + 1 + cap > limit).then_some(cap)
    }

    /// Whether `key` is at `cap`, when a cap applies.
    #[inline]
    pub(super) fn over_cap(&self, key: TenantKey, cap: Option<usize>) -> bool {
        cap.is_some_and(|cap| self.held(key) >= cap)
    }

    /// Someone is refused or queued at `limit`: if they are within their
    /// share (or carry no tenant), that is contention, and caps apply to
    /// the tenants above theirs.
    pub(super) fn note_waiting(&self, tenant: Option<TenantKey>, limit: usize, now: Nanos) {
        let cap = self.cap(limit);
        if tenant.is_none_or(|k| self.held(k) < cap) {
            self.last_entitled_refusal.set(now);
        }
    }

    /// The slots `key` holds now.
    pub(super) fn held(&self, key: TenantKey) -> usize {
        self.inflight.get(&key).map_or(0, |n| *n as usize)
    }

    /// Takes one slot for `key` unless that would exceed `cap`. `cap` is
    /// `None` when no cap applies right now.
    pub(super) fn try_take(&self, key: TenantKey, cap: Option<usize>) -> bool {
        let mut entry = self.inflight.entry(key).or_insert(0);
        if cap.is_some_and(|cap| *entry as usize >= cap) {
            let empty = *entry == 0;
            drop(entry);
            if empty {
                self.inflight.remove_if(&key, |_, n| *n == 0);
            }
            return false;
        }
        *entry += 1;
        true
    }

    /// Gives one slot of `key` back, removing the entry at zero.
    pub(super) fn give_back(&self, key: TenantKey) {
        if let Some(mut n) = self.inflight.get_mut(&key) {
            *n = n.saturating_sub(1);
        }
        self.inflight.remove_if(&key, |_, n| *n == 0);
    }

    /// How many tenants hold at least one slot.
    pub(super) fn active(&self) -> usize {
        self.inflight.len()
    }
}
