//! A value alone on its cache line.
//!
//! The total in-flight count is written twice per request by every thread,
//! and the `Arc` header in front of the limiter (its reference count) is
//! written twice per request too. Sharing a 64-byte line with either makes
//! every read of the limit, the classes or the tenants table a cache miss
//! on the other core. 128 bytes, because x86's adjacent-line prefetcher
//! pulls lines in pairs (the same choice as crossbeam's `CachePadded`).

use std::ops::Deref;

/// `T` aligned to, and padded out to, 128 bytes.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> Deref for Padded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}
