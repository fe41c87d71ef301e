//! The limiter's own settings, independent of any file format.

use std::fmt;
use std::time::Duration;

/// One priority class and its guaranteed slice of the limit.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassSpec {
    /// The class name, e.g. `"interactive"`; unique within a limiter.
    pub name: String,
    /// The fraction of the limit that only this class may use while it is
    /// active, in `0.0..=1.0`. The slots are `floor(limit * reserved)`.
    pub reserved: f64,
}

impl ClassSpec {
    /// A class with the given name and reserved fraction.
    pub fn new(name: impl Into<String>, reserved: f64) -> Self {
        Self {
            name: name.into(),
            reserved,
        }
    }
}

/// Per-tenant fairness (see the limiter's `tenants.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct TenantSpec {
    /// The share of the limit one tenant may hold, before it must leave a
    /// headroom for the others, while tenants contend. [`TenantSpec::AUTO`]
    /// (`1.0`, the default) is the max-min fair share of the tenants holding
    /// slots, with the headroom the others' slots say they need; a fraction
    /// below 1.0 fixes share and headroom at that part of the limit.
    pub max_share: f64,
    /// How long after a refusal of another party the rule stays enforced.
    pub contention_window: Duration,
}

impl TenantSpec {
    /// The automatic share. `1.0`, because a fixed share of the whole limit
    /// would never bind, so the value had no other use.
    pub const AUTO: f64 = 1.0;
}

impl Default for TenantSpec {
    fn default() -> Self {
        Self {
            max_share: Self::AUTO,
            contention_window: Duration::from_secs(1),
        }
    }
}

/// The order in which queued requests are admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueOrder {
    /// First come, first served.
    #[default]
    Fifo,
    /// FIFO while the queue is short; newest first once it reaches the
    /// threshold. Under a standing queue the oldest waiters are the likeliest
    /// to have been given up on by their clients, so serving the newest keeps
    /// goodput up (Facebook's "adaptive LIFO").
    AdaptiveLifo {
        /// The depth at which the order flips to LIFO.
        threshold: usize,
    },
}

/// The optional wait queue.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueueSpec {
    /// How many requests may wait at once; 0 disables the queue, so a full
    /// gate refuses at once.
    pub capacity: usize,
    /// The admission order.
    pub order: QueueOrder,
}

/// Everything a [`Limiter`](super::Limiter) needs besides its limit
/// algorithm and clock.
#[derive(Debug, Clone, PartialEq)]
pub struct LimiterConfig {
    /// Priority classes, highest priority first. At least one.
    pub classes: Vec<ClassSpec>,
    /// How long a class counts as active after its last arrival. An active
    /// class's unused reserved slots are held for it; an idle class lends
    /// them out.
    pub class_idle_window: Duration,
    /// Per-tenant fairness.
    pub tenant: TenantSpec,
    /// The wait queue.
    pub queue: QueueSpec,
    /// The largest `Retry-After` the limiter suggests.
    pub retry_after_max: Duration,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            classes: vec![
                ClassSpec::new("interactive", 0.5),
                ClassSpec::new("batch", 0.0),
            ],
            class_idle_window: Duration::from_secs(1),
            tenant: TenantSpec::default(),
            queue: QueueSpec::default(),
            retry_after_max: Duration::from_secs(30),
        }
    }
}

/// The most classes one limiter supports; a class id is a `u8` and the
/// admission check scans all classes.
pub const MAX_CLASSES: usize = 16;

/// Why a [`LimiterConfig`] was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct LimiterConfigError(pub String);

impl fmt::Display for LimiterConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LimiterConfigError {}

impl LimiterConfig {
    /// Checks the settings a limiter cannot work with.
    pub fn validate(&self) -> Result<(), LimiterConfigError> {
        let err = |m: String| Err(LimiterConfigError(m));
        if self.classes.is_empty() || self.classes.len() > MAX_CLASSES {
            return err(format!(
                "classes: need 1 to {MAX_CLASSES} classes, got {}",
                self.classes.len()
            ));
        }
        let mut sum = 0.0;
        for (i, c) in self.classes.iter().enumerate() {
            if !(0.0..=1.0).contains(&c.reserved) {
                return err(format!(
                    "classes[{i}].reserved: must be between 0 and 1 (got {})",
                    c.reserved
                ));
            }
            if self.classes[..i].iter().any(|o| o.name == c.name) {
                return err(format!("classes[{i}].name: duplicate class {:?}", c.name));
            }
            sum += c.reserved;
        }
        if sum > 1.0 + 1e-9 {
            return err(format!(
                "classes: reserved shares add up to {sum:.2}, must be at most 1.0"
            ));
        }
        if !(self.tenant.max_share > 0.0 && self.tenant.max_share <= 1.0) {
            return err(format!(
                "tenant.max_share: must be in (0, 1] (got {})",
                self.tenant.max_share
            ));
        }
        Ok(())
    }
}
