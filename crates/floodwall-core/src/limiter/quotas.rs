//! Caps on named tenants' slots, set from outside the limiter.
//!
//! A tenant with a configured quota (`[[routes.tenant.quotas]]` in the
//! gateway) holds at most its cap here, whatever the fairness rule of
//! `tenants.rs` says; the gateway's distributed mode sets each cap to this
//! replica's leased part of the tenant's global quota. Only tenants given a
//! cap have an entry, so the table's size is the configuration's, never
//! the clients' (an unknown id costs one lookup that finds nothing). Its
//! slots are counted exactly, always, contended or not: a quota is a hard
//! cap, not a share. Keys are the tenant table's keyed hashes, so no client
//! can aim a collision at a quota holder.

use super::tenants::{ByKey, TenantKey};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// One tenant's cap and what it holds now.
#[derive(Debug, Default)]
pub(super) struct Quota {
    cap: AtomicUsize,
    held: AtomicUsize,
    /// Admissions it refused, ever.
    refused: AtomicU64,
    /// The most it held since the last [`Quotas::observe`].
    peak: AtomicUsize,
}

/// A slot counted against a [`Quota`]; dropping it gives the slot back.
#[derive(Debug)]
pub(super) struct QuotaHold(Arc<Quota>);

impl Drop for QuotaHold {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The capped tenants.
#[derive(Debug, Default)]
pub(super) struct Quotas {
    any: AtomicBool,
    map: RwLock<HashMap<TenantKey, Arc<Quota>, ByKey>>,
}

/// What a capped tenant did, for whoever sets its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUse {
    /// Its cap now.
    pub cap: usize,
    /// Slots it holds now.
    pub held: usize,
    /// The most it held since the last look, this one included.
    pub peak: usize,
    /// Admissions its cap refused, ever.
    pub refused: u64,
}

impl Quotas {
    /// Whether any tenant is capped (so the tenant's key is needed).
    #[inline]
    pub(super) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Sets `key`'s cap, or removes it. Slots held stay counted until they
    /// are released.
    pub(super) fn set(&self, key: TenantKey, cap: Option<usize>) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        match cap {
            Some(cap) => map
                .entry(key)
                .or_default()
                .cap
                .store(cap, Ordering::Release),
            None => {
                map.remove(&key);
            }
        }
        self.any.store(!map.is_empty(), Ordering::Release);
    }

    fn get(&self, key: TenantKey) -> Option<Arc<Quota>> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(&key).cloned()
    }

    /// Takes a slot of `key`'s quota: `Ok(None)` if it has none, `Err` if
    /// it is full (counted as a refusal).
    #[inline]
    pub(super) fn take(&self, key: Option<TenantKey>) -> Result<Option<QuotaHold>, ()> {
        let Some(q) = key.filter(|_| self.any()).and_then(|k| self.get(k)) else {
            return Ok(None);
        };
        let cap = q.cap.load(Ordering::Acquire);
        let taken = q
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                (h < cap).then_some(h + 1)
            });
        match taken {
            Ok(before) => {
                q.peak.fetch_max(before + 1, Ordering::AcqRel);
                Ok(Some(QuotaHold(q)))
            }
            Err(_) => {
                q.refused.fetch_add(1, Ordering::Relaxed);
                Err(())
            }
        }
    }

    /// Whether `key` is capped and at its cap now.
    pub(super) fn full(&self, key: Option<TenantKey>) -> bool {
        key.filter(|_| self.any())
            .and_then(|k| self.get(k))
            .is_some_and(|q| q.held.load(Ordering::Acquire) >= q.cap.load(Ordering::Acquire))
    }

    /// What `key` did, and resets its peak to what it holds now.
    pub(super) fn observe(&self, key: TenantKey) -> Option<QuotaUse> {
        let q = self.get(key)?;
        let held = q.held.load(Ordering::Acquire);
        Some(QuotaUse {
            cap: q.cap.load(Ordering::Acquire),
            held,
            peak: q.peak.swap(held, Ordering::AcqRel).max(held),
            refused: q.refused.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_caps_its_tenant_and_gives_slots_back() {
        let q = Quotas::default();
        let k = TenantKey::for_test(7);
        assert!(q.take(Some(k)).unwrap().is_none(), "no quota: no hold");
        q.set(k, Some(2));
        let a = q.take(Some(k)).unwrap().unwrap();
        let _b = q.take(Some(k)).unwrap().unwrap();
        assert!(q.take(Some(k)).is_err());
        assert!(q.full(Some(k)));
        drop(a);
        assert!(!q.full(Some(k)));
        let u = q.observe(k).unwrap();
        assert_eq!((u.cap, u.held, u.peak, u.refused), (2, 1, 2, 1));
        assert_eq!(q.observe(k).unwrap().peak, 1, "peak reset to held");
        assert!(q.take(Some(TenantKey::for_test(8))).unwrap().is_none());
        q.set(k, None);
        assert!(!q.any());
    }
}
