//! Who the arrivals are: named traffic groups by weight, each with its own
//! headers, split deterministically.

use std::{collections::HashSet, sync::Arc};

use anyhow::ensure;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Headers for arrival number `i` (counted from 0 over the whole run), added
/// after the arrival's group headers. The escape hatch for mixes that
/// [`Group`] cannot express.
pub type HeaderFn = Arc<dyn Fn(u64) -> Vec<(HeaderName, HeaderValue)> + Send + Sync>;

/// One named slice of the traffic: its share of the arrivals and the headers
/// that make a gate treat it differently (a priority class, a tenant).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// What the results call this group; unique within a mix.
    pub name: String,
    /// Relative share of the arrivals: weights 3 and 7 (or 0.3 and 0.7) give
    /// 30% and 70%. Zero is allowed and sends nothing.
    pub weight: f64,
    /// Sent with every request of the group.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// One header whose value rotates through a list, request by request
    /// within the group: twenty tenants sharing one group's weight equally.
    pub tenant_pool: Option<(HeaderName, Vec<HeaderValue>)>,
}

impl Group {
    /// A group with no headers, to build on with [`Group::header`] and
    /// [`Group::tenants`].
    pub fn new(name: impl Into<String>, weight: f64) -> Self {
        Self {
            name: name.into(),
            weight,
            headers: Vec::new(),
            tenant_pool: None,
        }
    }

    /// Adds a header sent with every request of the group.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Rotates header `name` through `values`, one per request of the group
    /// in turn, so each value gets an equal share of the group's arrivals.
    pub fn tenants(mut self, name: HeaderName, values: Vec<HeaderValue>) -> Self {
        self.tenant_pool = Some((name, values));
        self
    }
}

pub(super) fn validate_mix(mix: &[Group]) -> anyhow::Result<()> {
    let mut names = HashSet::new();
    for group in mix {
        ensure!(
            !group.name.is_empty(),
            "load mix group names must not be empty"
        );
        ensure!(
            names.insert(group.name.as_str()),
            "load mix group {:?} appears twice",
            group.name
        );
        ensure!(
            group.weight.is_finite() && group.weight >= 0.0,
            "load mix group {:?} weight must be a finite number >= 0, got {}",
            group.name,
            group.weight
        );
        if let Some((name, values)) = &group.tenant_pool {
            ensure!(
                !values.is_empty(),
                "load mix group {:?} tenant pool for {name} has no values",
                group.name
            );
        }
    }
    if !mix.is_empty() {
        let total: f64 = mix.iter().map(|g| g.weight).sum();
        ensure!(
            total > 0.0,
            "load mix weights must add up to more than zero"
        );
    }
    Ok(())
}

/// Smooth weighted round-robin: each pick, every group gains its weight and
/// the richest is chosen and pays the total. Over any stretch of the run each
/// group's count stays within one request of `share × picks`, and groups are
/// interleaved rather than sent in bursts.
#[derive(Debug, Clone)]
pub(super) struct Mixer {
    weights: Vec<f64>,
    total: f64,
    credit: Vec<f64>,
}

impl Mixer {
    pub(super) fn new(weights: Vec<f64>) -> Self {
        let total = weights.iter().sum();
        let credit = vec![0.0; weights.len()];
        Self {
            weights,
            total,
            credit,
        }
    }

    pub(super) fn next(&mut self) -> usize {
        let mut best = 0;
        for (i, weight) in self.weights.iter().enumerate() {
            self.credit[i] += weight;
            if self.credit[i] > self.credit[best] {
                best = i;
            }
        }
        self.credit[best] -= self.total;
        best
    }
}

/// The per-group header plan: fixed headers, plus a tenant rotation.
pub(super) struct GroupPlan {
    headers: HeaderMap,
    tenants: Option<(HeaderName, Vec<HeaderValue>)>,
    sent: usize,
}

impl GroupPlan {
    pub(super) fn new(group: &Group) -> Self {
        let mut headers = HeaderMap::new();
        for (name, value) in &group.headers {
            headers.append(name.clone(), value.clone());
        }
        Self {
            headers,
            tenants: group.tenant_pool.clone(),
            sent: 0,
        }
    }

    /// The headers for this group's next request.
    pub(super) fn next(&mut self) -> HeaderMap {
        let mut headers = self.headers.clone();
        if let Some((name, values)) = &self.tenants {
            headers.append(name.clone(), values[self.sent % values.len()].clone());
        }
        self.sent += 1;
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::RetryPolicy;

    fn counts(picks: impl Iterator<Item = usize>, groups: usize) -> Vec<usize> {
        let mut counts = vec![0; groups];
        for g in picks {
            counts[g] += 1;
        }
        counts
    }

    #[test]
    fn the_mixer_gives_every_group_its_share_at_every_point() {
        let mut mixer = Mixer::new(vec![0.3, 0.7]);
        let mut interactive = 0usize;
        for n in 1..=2000 {
            interactive += usize::from(mixer.next() == 0);
            let drift = interactive as f64 - 0.3 * n as f64;
            assert!(drift.abs() <= 1.0, "after {n}: {interactive}");
        }
        assert_eq!(interactive, 600);

        // One hot tenant with 80%, twenty sharing the other 20%.
        let mut weights = vec![80.0];
        weights.extend([1.0; 20]);
        let mut mixer = Mixer::new(weights);
        let got = counts((0..2000).map(|_| mixer.next()), 21);
        assert_eq!(got[0], 1600, "{got:?}");
        assert!(got[1..].iter().all(|&n| n == 20), "{got:?}");

        // Zero weight is never picked.
        let mut mixer = Mixer::new(vec![1.0, 0.0, 2.0]);
        let got = counts((0..300).map(|_| mixer.next()), 3);
        assert_eq!(got, vec![100, 0, 200]);
    }

    #[test]
    fn rejects_bad_mixes_and_policies_naming_the_group() {
        let cases = [
            (
                vec![Group::new("a", 1.0), Group::new("a", 1.0)],
                "\"a\" appears twice",
            ),
            (vec![Group::new("a", -1.0)], "\"a\" weight"),
            (vec![Group::new("a", f64::NAN)], "\"a\" weight"),
            (vec![Group::new("a", 0.0)], "add up to more than zero"),
            (vec![Group::new("", 1.0)], "must not be empty"),
            (
                vec![Group::new("t", 1.0).tenants(HeaderName::from_static("x-tenant"), vec![])],
                "\"t\" tenant pool",
            ),
        ];
        for (mix, mentions) in cases {
            let err = validate_mix(&mix).unwrap_err().to_string();
            assert!(err.contains(mentions), "{mix:?} gave {err}");
        }
        assert!(validate_mix(&[]).is_ok());
        let err = RetryPolicy::Immediate { max_attempts: 0 }
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_attempts"), "{err}");
    }
}
