//! Per-tenant in-flight counts with memory bounded by the limit.
//!
//! A tenant id is attacker-controlled: a client can send a million random
//! ids. The table therefore keeps an entry only while that tenant holds at
//! least one slot, so it never has more entries than the limit, and keys are
//! a keyed (per-process random) 64-bit hash, so no id string is stored and a
//! hostile client cannot aim a collision at another tenant.

use dashmap::DashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// A tenant's key: a keyed hash of its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantKey(u64);

/// In-flight counts of the tenants that hold slots.
#[derive(Debug)]
pub(crate) struct TenantTable {
    hasher: RandomState,
    inflight: DashMap<TenantKey, u32>,
}

impl TenantTable {
    pub(crate) fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            inflight: DashMap::new(),
        }
    }

    pub(crate) fn key(&self, tenant: &str) -> TenantKey {
        TenantKey(self.hasher.hash_one(tenant))
    }

    /// The slots `key` holds now.
    pub(crate) fn held(&self, key: TenantKey) -> usize {
        self.inflight.get(&key).map_or(0, |n| *n as usize)
    }

    /// Takes one slot for `key` unless that would exceed `cap`. `cap` is
    /// `None` when no cap applies right now.
    pub(crate) fn try_take(&self, key: TenantKey, cap: Option<usize>) -> bool {
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
    pub(crate) fn give_back(&self, key: TenantKey) {
        if let Some(mut n) = self.inflight.get_mut(&key) {
            *n = n.saturating_sub(1);
        }
        self.inflight.remove_if(&key, |_, n| *n == 0);
    }

    /// How many tenants hold at least one slot.
    pub(crate) fn active(&self) -> usize {
        self.inflight.len()
    }
}
